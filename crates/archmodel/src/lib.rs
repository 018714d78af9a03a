//! A test-only model of what Arm hardware sees, used as an independent
//! oracle for Warden's page-table engine.
//!
//! # What it models
//!
//! * [`mem`]: physical memory as a window of sparse 4 KiB pages with a page
//!   allocator (zeroed, aligned runs; an optional limit to provoke
//!   out-of-memory).
//! * [`mod@walk`]: the VMSAv8-64 translation table walk for a 4 KiB granule, for
//!   the nVHE EL2 stage-1 regime (one VA range, MAIR_EL2 attributes, AP/XN
//!   and hierarchical APTable/XNTable) and the stage-2 regime (IPA size,
//!   start level, concatenated roots of up to 16 pages, S2AP/XN, MemAttr with
//!   and without FEAT_S2FWB). Faults: Translation, Address size, Access flag,
//!   Permission, with the level that reports them.
//! * [`machine`]: several CPUs sharing the registered ("live") tables, each
//!   with a TLB of leaf translations, and a break-before-make checker in the
//!   spirit of Cambridge's Casemate: every descriptor write, DSB and TLBI goes
//!   through the [`machine::Machine`], which tracks each live descriptor
//!   location as valid, invalid-unclean or invalid-clean and records
//!   [`machine::Violation`]s instead of panicking.
//! * Table-page reuse: when a live table descriptor is removed (made
//!   invalid, or replaced), the table page it pointed at, and every table
//!   page below it, becomes *retired* until the removed entry is clean by the
//!   same rule as above (DSB, TLBI covering the entry's whole range, DSB on
//!   the unlinking CPU; broadcast if other CPUs share the table). Until then
//!   a walk cache may still lead into the page, so writing into it, linking
//!   it again as a table, or freeing it through
//!   [`machine::Machine::free_pages`] is a
//!   [`machine::Violation::FreedBeforeInvalidation`] (the pKVM rule that a
//!   detached table is freed only after the TLBI covering it has completed).
//!   Linking a subtree back at the very entry it came from is not counted as
//!   reuse.
//! * [`mem`] can also track which 64-byte lines the CPU wrote and has not
//!   cleaned to the point of coherency ([`PhysMem::set_track_dirty`],
//!   [`PhysMem::clean`], [`PhysMem::is_dirty`]; off by default), for
//!   non-coherent device models.
//! * [`smmu`]: an Arm SMMUv3 (IHI 0070) as seen by a stage-2-only driver:
//!   ID registers from a [`SmmuConfig`], `CR0`/`CR0ACK`, `GBPA`, `GERROR`/
//!   `GERRORN`, linear and 2-level Stream tables, the Command queue
//!   (`CMD_CFGI_*`, `CMD_TLBI_*` including range invalidation, `CMD_SYNC`,
//!   `CERROR_ILL`/`CERROR_ABT` and recovery), the Event queue with overflow,
//!   STE validity, stage-2 translation through [`mod@walk`] with the
//!   architectural fault events, an STE cache and a VMID-tagged TLB whose
//!   invalidations complete only at a `CMD_SYNC` (so a missing SYNC shows up
//!   as a stale translation, see [`Smmu::stale_entries`]), reads of
//!   uncleaned lines by a non-coherent SMMU, and injected command-queue
//!   stalls and errors. Driver misuse is recorded as [`SmmuViolation`]s.
//!
//! # What it does not model
//!
//! * Hardware Access flag or dirty-state updates (FEAT_HAFDBS): AF = 0 always
//!   faults, and such entries are never cached.
//! * Walk caches and speculative walks: TLBs fill only when
//!   [`machine::Machine::translate`] is called, and only with leaf entries.
//!   Stale intermediate entries are caught by the checker's rules for table
//!   descriptors instead (only whole-range invalidation cleans them, and
//!   pages they point at stay retired until then).
//! * Relaxed memory ordering beyond the DSB/TLBI/DSB sequence: writes are
//!   visible at once; a TLBI removes TLB entries at once (the checker still
//!   insists on the completing DSB).
//! * Combined stage-1+2 entries, ASIDs, VHE (EL2&0), the contiguous hint as a
//!   TLB optimisation, FEAT_BBM levels 1 and 2, 16/64 KiB granules, 52-bit
//!   addresses, memory-type combination of stages.
//! * In the SMMU: stage 1 (CDs; stage-1 STEs are `C_BAD_STE`), ATS/PRI, MSIs,
//!   stalls, broadcast TLB maintenance, HTTU, Secure/Realm interfaces, ECMDQ,
//!   walk caches, attribute overrides, event merging, and whether a driver
//!   invalidates its cache before reading event records. Register updates
//!   with an acknowledge (`CR0ACK`, `IRQ_CTRLACK`, `GBPA.Update`) complete at
//!   once.
//!
//! # Independence rule
//!
//! This crate is an oracle: it must not depend on, or share code with,
//! `warden-pgtable` or any other crate it checks. Its descriptor decoding is
//! written from the Arm Architecture Reference Manual, and its tests build
//! tables from raw bit values worked out from the manual. A shared bug
//! would make both sides agree on the wrong answer.

pub mod machine;
pub mod mem;
pub mod smmu;
pub mod walk;

pub use machine::{CleanStage, Dsb, Event, Machine, Reuse, Stats, TableId, Tlbi, Violation};
pub use mem::{DescSource, PhysMem, LINE_SIZE, PAGE_SIZE};
pub use smmu::{DmaDir, DmaErr, DmaOk, Smmu, SmmuConfig, SmmuEvent, SmmuInject, SmmuStats, SmmuViolation, Stale};
pub use walk::{check_access, walk, Access, Fault, FaultKind, MemType, Regime, RegimeError, Translation};
