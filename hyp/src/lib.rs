//! warden-hyp's pure logic: everything the EL2 image decides that does not
//! touch hardware, built for both the aarch64 target and the host so that
//! `cargo test -p warden-hyp` runs it.
//!
//! * [`esr`]: exception syndrome decoding for fault reports.
//! * [`fdt`]: a bounds-checked device tree reader.
//! * [`fixmap`]: the per-CPU fixmap and fixblock slots of the EL2 stage 1.
//! * [`dtb`]: the device tree handed to the host (Warden's RAM and the SMMU
//!   taken out).
//! * [`platform`]: the machine as the device tree describes it.
//! * [`pool`]: the page pool that backs warden-pgtable's `MmOps`.
//! * [`layout`]: the EL2 identity map plan and its construction/verification.
//! * [`report`]: the boot summary text.
//! * [`hostcall`]: the host's hypercalls, decoded and run in memprotect.
//! * [`psci_relay`]: which host SMCs are relayed, and CPU_ON's state.
//! * [`sync`]: the ticket lock and write-once cell.
//!
//! The hardware side (entry, vectors, UART, system registers, TLB
//! maintenance, PSCI) lives in the binary's `el2` module, built only for
//! `target_os = "none"`.
#![cfg_attr(not(test), no_std)]

pub mod dtb;
pub mod esr;
pub mod fdt;
pub mod fixmap;
pub mod hostcall;
pub mod layout;
pub mod platform;
pub mod pool;
pub mod psci_relay;
pub mod report;
pub mod sync;

/// The banner's version string.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
