//! warden-smmuv3: Warden's driver for the Arm SMMUv3 (IHI 0070).
//!
//! Warden owns the SMMU (its MMIO is donated to the hypervisor) and makes
//! every stream the host's devices use translate through one stage-2
//! table, warden-iommu's host stage-2 shadow, so DMA reaches exactly what
//! the host may reach. The driver:
//!
//! * probes the ID registers and refuses an SMMU it cannot use (no
//!   stage 2, no AArch64 tables, no 4 KiB granule, fixed bases, reserved
//!   values) before writing anything ([`probe`]);
//! * takes over with global bypass set to abort, a linear or 2-level
//!   stream table sized to the streams in use, command and event queues
//!   in Warden's memory, and invalidates whatever was cached before
//!   enabling ([`Smmu`]);
//! * turns the shadow's TLB maintenance into commands: invalidations are
//!   gathered while the engine updates the table and issued at its
//!   completing barrier as one batch (range-form TLBI_S2_IPA where the SMMU
//!   has RIL, a VMALL past a threshold) followed by one CMD_SYNC, whose
//!   completion is polled with a bound ([`SmmuHw`]);
//! * cleans what the SMMU reads when it is not coherent ([`WalkMm`],
//!   [`StreamTable`], [`CmdQueue`]);
//! * decodes the event queue ([`Event`]);
//! * fails closed: a command error or a sync timeout is an error, and if
//!   an ownership update cannot complete all DMA is blocked by register
//!   writes alone.
//!
//! Registers go through [`Mmio`] and structures through [`SmmuMem`], so
//! the same code drives QEMU's SMMUv3 at EL2 and warden-archmodel's model
//! in tests.
#![no_std]

pub mod cmd;
pub mod event;
pub mod hw;
pub mod probe;
pub mod queue;
pub mod regs;
pub mod smmu;
pub mod ste;
pub mod walkmm;

pub use cmd::Cmd;
pub use event::{Event, EventKind, EventQueue};
pub use hw::{alloc_structure, CacheMaint, Mmio, SmmuMem};
pub use probe::{probe, Features};
pub use queue::{CmdQueue, CmdStats};
pub use smmu::{Smmu, SmmuConfig, SmmuHw};
pub use ste::{S2Config, StreamCfg, StreamTable};
pub use walkmm::WalkMm;
