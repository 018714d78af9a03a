//! warden-pgtable: VMSAv8-64 translation tables for Warden's EL2 stage 1
//! and for stage 2 (the CPU's and the SMMU's), 4 KiB granule.
//!
//! The engine knows nothing of owners. It maps, unmaps, annotates, changes
//! attributes, splits and destroys, keeping three promises:
//!
//! * **Break-before-make.** Every valid-to-valid change of output address,
//!   block size or memory type writes the LOCKED marker, makes it visible
//!   (`DSB ISHST`), invalidates with a *broadcast* TLBI at the entry's level,
//!   completes it (`DSB ISH`) and only then writes the new descriptor. Only
//!   permission relaxation may use local invalidation.
//! * **Refcounted table pages.** A table page's count is 1 plus its non-zero
//!   entries; a table that empties is unlinked and freed; `destroy` returns
//!   every page.
//! * **Errors are values.** Bad arguments give an [`Error`] and leave the
//!   translation unchanged; nothing panics on them.
//!
//! All memory and TLB access goes through [`MmOps`] and [`TlbOps`], so the
//! same code runs at EL2 and against warden-archmodel in tests.
#![no_std]

pub mod attrs;
pub mod config;
pub mod desc;
mod map;
pub mod ops;
mod table;
#[cfg(feature = "test-util")]
pub mod testutil;
mod unmap;
pub mod walk;

pub use attrs::{Annotation, Attrs, MemType, Perms};
pub use config::{Geometry, Regime, PAGE_SIZE};
pub use desc::{Desc, Kind};
pub use ops::{Barrier, MmOps, Scope, TlbOps, Tlbi};
pub use table::{MapPolicy, PageTable};
pub use walk::{Ctx, Visit, WalkFlags};

/// Why an operation was refused. Every refusal leaves the translation the
/// table provides exactly as it was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// An address or size is not page-aligned.
    Unaligned,
    /// The range is empty where a range is required, wraps, or leaves the
    /// input (or output) address space.
    OutOfRange,
    /// No table page could be allocated.
    NoMemory,
    /// The range holds an ownership annotation, which only an ownership
    /// transition may clear.
    Annotated,
    /// An entry is LOCKED by a break-before-make in progress.
    Locked,
    /// The regime's parameters are not supported.
    InvalidConfig,
    /// The attributes are not allowed (e.g. W+X at stage 1, executable
    /// device memory).
    InvalidAttrs,
    /// The annotation cannot be encoded (owner 0, or metadata too large).
    InvalidAnnotation,
}
