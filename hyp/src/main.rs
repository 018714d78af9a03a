//! The Warden EL2 image.
//!
//! Built for `aarch64-unknown-none` it is the hypervisor: see the `el2`
//! module for the boot path. Built for the host (as `cargo test
//! --workspace` does) it is a stub that says how to run the real thing.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
mod el2;

#[cfg(not(target_os = "none"))]
fn main() {
    println!(
        "warden-hyp {} is an EL2 image for aarch64-unknown-none; build and boot it with `cargo xtask run`",
        warden_hyp::VERSION
    );
}
