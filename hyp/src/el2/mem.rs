//! [`PhysMem`] at EL2: Warden's stage 1 is an identity map (and before the
//! MMU is on, addresses are physical anyway), so a physical address is
//! used directly as a pointer.

use core::sync::atomic::{AtomicU64, Ordering};

use warden_hyp::fixmap::DescAccess;
use warden_hyp::pool::PhysMem;
use warden_pgtable::PAGE_SIZE;

/// Physical memory of one region Warden owns (the page pool).
#[derive(Debug)]
pub struct IdentityMem {
    start: u64,
    end: u64,
}

impl IdentityMem {
    /// Access to `[start, end)`.
    ///
    /// # Safety
    /// The range must be RAM that Warden owns exclusively (no Rust object
    /// lives there; nothing else reads or writes it except the table
    /// walker), identity-mapped read-write or accessed with the MMU off,
    /// for as long as the returned value is used.
    pub unsafe fn new(start: u64, end: u64) -> Self {
        IdentityMem { start, end }
    }

    /// The 8-byte word at `pa`, checked to be inside the region.
    fn word(&self, pa: u64, len: u64) -> *mut u64 {
        assert!(
            pa.is_multiple_of(8) && pa >= self.start && pa.checked_add(len).is_some_and(|e| e <= self.end),
            "page-pool access at {pa:#x} outside the pool"
        );
        pa as *mut u64
    }
}

impl PhysMem for IdentityMem {
    fn zero_page(&mut self, pa: u64) {
        let p = self.word(pa, PAGE_SIZE);
        for i in 0..(PAGE_SIZE / 8) as usize {
            // SAFETY: the page lies inside the region (checked), which the
            // creator promised is exclusively Warden's RAM.
            unsafe { p.add(i).write_volatile(0) };
        }
    }

    fn read_u64(&self, pa: u64) -> u64 {
        let p = self.word(pa, 8);
        // SAFETY: aligned and inside the region (checked); the table walker
        // only reads it, so an atomic load sees a whole descriptor.
        unsafe { AtomicU64::from_ptr(p) }.load(Ordering::Relaxed)
    }

    fn write_u64_release(&mut self, pa: u64, val: u64) {
        let p = self.word(pa, 8);
        // SAFETY: aligned and inside the region (checked). A single-copy
        // atomic store-release: earlier writes (a new table's entries) are
        // visible before this descriptor is.
        unsafe { AtomicU64::from_ptr(p) }.store(val, Ordering::Release);
    }
}

/// The fixmap's descriptors live in the EL2 table's pool: an
/// `IdentityMem` over that pool reaches them (bounds-checked).
impl DescAccess for IdentityMem {
    fn read_entry(&self, pa: u64) -> u64 {
        self.read_u64(pa)
    }
    fn write_entry(&mut self, pa: u64, val: u64) {
        self.write_u64_release(pa, val)
    }
}
