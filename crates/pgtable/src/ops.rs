//! The two contracts between the engine and whoever owns the memory and the
//! TLBs: [`MmOps`] (table pages and descriptor access) and [`TlbOps`]
//! (barriers and TLB maintenance).
//!
//! Descriptor reads and writes go through [`MmOps`] rather than through raw
//! pointers so that the test model (warden-archmodel) sees every single write
//! and can check break-before-make; at EL2 the implementation is a volatile
//! access at `phys_to_virt(pa)`, which folds the phys<->virt conversion of
//! kvm_pgtable_mm_ops into the accessors.

/// Memory operations: allocation, reference counting and descriptor access
/// for table pages. The analogue of `kvm_pgtable_mm_ops`.
///
/// Table pages are identified by their physical address. The engine keeps
/// each table page's count at 1 + the number of non-zero entries in it.
pub trait MmOps {
    /// Allocate `count` physically contiguous zeroed pages aligned to
    /// `count` pages (concatenated stage-2 roots need up to 16), each with a
    /// reference count of 1. `None` when out of memory.
    fn zalloc_pages(&mut self, count: usize) -> Option<u64>;
    /// Whether `pages` more single-page allocations would succeed now. The
    /// ownership layer checks this before its first change (pKVM's
    /// memcache top-up check), so that the table updates of a commit
    /// cannot run out of memory.
    fn can_allocate(&self, pages: usize) -> bool;
    /// Take a reference on the table page at `pa`.
    fn get_page(&mut self, pa: u64);
    /// Drop a reference on the table page at `pa`; at zero the page is freed.
    fn put_page(&mut self, pa: u64);
    /// Take `n` references at once (a run of new entries in one table).
    fn get_pages(&mut self, pa: u64, n: u32) {
        for _ in 0..n {
            self.get_page(pa);
        }
    }
    /// Drop `n` references at once; at zero the page is freed.
    fn put_pages(&mut self, pa: u64, n: u32) {
        for _ in 0..n {
            self.put_page(pa);
        }
    }
    /// The current reference count of the table page at `pa`.
    fn page_count(&self, pa: u64) -> u32;
    /// Read the descriptor at physical address `pa` (8-byte aligned).
    fn read_desc(&self, pa: u64) -> u64;
    /// Read `out.len()` consecutive descriptors starting at `pa` (all in one
    /// table page). For scans of whole tables; the default reads one by one.
    fn read_descs(&self, pa: u64, out: &mut [u64]) {
        for (i, d) in out.iter_mut().enumerate() {
            *d = self.read_desc(pa + i as u64 * 8);
        }
    }
    /// Write the descriptor at physical address `pa` with release ordering,
    /// so that a new table's contents are visible before the table is.
    fn write_desc(&mut self, pa: u64, val: u64);
}

/// Who a TLB invalidation must reach.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Only the calling CPU (`TLBI ...` without IS, completed by `DSB NSH`).
    Local,
    /// Every CPU in the inner-shareable domain (`TLBI ...IS`, `DSB ISH`).
    Broadcast,
}

/// A barrier the engine asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Barrier {
    /// `DSB ISHST`: earlier descriptor stores are visible to table walkers.
    DsbIshSt,
    /// `DSB ISH`: completes broadcast TLB maintenance.
    DsbIsh,
    /// `DSB NSH`: completes local TLB maintenance.
    DsbNsh,
    /// `ISB`: context synchronisation.
    Isb,
}

/// A TLB invalidation. The VMID is that of the table's configuration;
/// stage-1 EL2 tables have none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tlbi {
    /// Stage 2 by IPA (`TLBI IPAS2[L]E1[IS]`, then `TLBI VMALLE1[IS]` since
    /// combined stage-1+2 entries have no IPA). `level` is the TTL hint of
    /// the entry that was broken; `last_level` selects the leaf-only form.
    Stage2Ipa {
        /// VMID of the table.
        vmid: u16,
        /// Input address inside the broken entry's range.
        ipa: u64,
        /// Level of the broken entry (TTL hint).
        level: u8,
        /// Only leaf entries need invalidating (no walk-cache entries).
        last_level: bool,
        /// Local or broadcast.
        scope: Scope,
    },
    /// All stage-1 and stage-2 entries of one VMID (`TLBI VMALLS12E1[IS]`),
    /// used when a table entry covering many pages is broken.
    Stage2Vmid {
        /// VMID of the table.
        vmid: u16,
        /// Local or broadcast.
        scope: Scope,
    },
    /// EL2 stage 1 by VA (`TLBI VA[L]E2[IS]`).
    El2Va {
        /// Virtual address inside the broken entry's range.
        va: u64,
        /// Level of the broken entry (TTL hint).
        level: u8,
        /// Only leaf entries need invalidating.
        last_level: bool,
        /// Local or broadcast.
        scope: Scope,
    },
    /// All EL2 stage-1 entries (`TLBI ALLE2[IS]`).
    El2All {
        /// Local or broadcast.
        scope: Scope,
    },
}

/// Barriers and TLB maintenance, implemented with real instructions at EL2
/// and by the architecture model in tests.
pub trait TlbOps {
    /// Execute a barrier.
    fn barrier(&mut self, barrier: Barrier);
    /// Issue a TLB invalidation (without a completing DSB: the engine asks
    /// for that barrier explicitly).
    fn tlbi(&mut self, op: Tlbi);
}
