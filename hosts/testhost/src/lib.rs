//! warden-testhost's pure logic: everything the test host decides that does
//! not touch hardware, built for both the aarch64 target and the host so
//! that `cargo test -p warden-testhost` runs it.
//!
//! * [`machine`]: what the test host reads from its (Warden-patched) device
//!   tree: RAM, CPUs, the PCIe host bridge, reservations, Warden's gap.
//! * [`pages`]: the host's free RAM as page runs, and a top-down allocator
//!   for the pages the scenarios share, donate and DMA into.
//! * [`garbage`]: the random hypercalls of `garbage-hypercalls`.
//! * [`rng`]: a small deterministic PRNG.
//! * [`text`]: a fixed-size line buffer (no allocation at EL1).
//! * [`scenario`]: the scenario names, verdicts and the console protocol
//!   (`RESULT ...`, `TESTHOST DONE ...`) that xtask parses.
//!
//! The hardware side (entry, vectors, MMU, console, PSCI, hypercalls, PCI,
//! the scenarios themselves) lives in the binary's `el1` module, built only
//! for `target_os = "none"`.
#![cfg_attr(not(test), no_std)]

pub mod garbage;
pub mod machine;
pub mod pages;
pub mod rng;
pub mod scenario;
pub mod text;
