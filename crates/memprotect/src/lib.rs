//! warden-memprotect: who owns each physical page, and who may touch it.
//!
//! Three components own memory: the host, the hypervisor, and (later)
//! guests. Each RAM page has a state per component (pKVM's Owned,
//! SharedOwned, SharedBorrowed, NoPage), kept in a per-page metadata array
//! for the host and the hypervisor; what the host lost is recorded as an
//! annotation in its stage-2 table. Transitions move pages between
//! components: every one validates everything under the component locks
//! (taken host, then hyp), yielding a [`transition::Checked`] token; only
//! the token's `commit` changes state, and nothing it does can fail (table
//! pages are checked for first). A refused transition leaves every state
//! exactly as it was.
//!
//! The crate is `no_std` and runs at EL2; its tests run it on x86 against
//! warden-archmodel and against the executable specification in [`spec`]
//! (feature `spec`).
#![no_std]

pub mod guest;
#[cfg(feature = "spec")]
pub mod harness;
pub mod host;
pub mod protect;
pub mod ram;
#[cfg(feature = "spec")]
pub mod spec;
pub mod transition;
pub mod types;

pub use protect::{MemProtect, Platform};
pub use ram::{PageMeta, PfnRange, RamMap};
pub use types::*;
pub use warden_pgtable::Perms;
