//! The hostile test host.
//!
//! Built for `aarch64-unknown-none` it is a small EL1 kernel that Warden
//! boots instead of Linux (see the `el1` module); it attacks Warden's
//! isolation and prints one `RESULT` line per scenario. Built for the host
//! (as `cargo test --workspace` does) it is a stub that says how to run
//! the real thing.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
mod el1;

#[cfg(not(target_os = "none"))]
fn main() {
    println!(
        "warden-testhost is an EL1 image for aarch64-unknown-none; boot it under Warden with `cargo xtask run` \
         (or alone with `cargo xtask testhost-standalone`); scenarios: {}",
        warden_testhost::scenario::ALL.join(", ")
    );
}
