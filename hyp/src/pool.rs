//! The page pool that feeds warden-pgtable: table pages carved out of a
//! physically contiguous region, each with a reference count.
//!
//! The bookkeeping is pure; touching the pages themselves (zeroing,
//! descriptor reads and writes) goes through [`PhysMem`], which is volatile
//! access at the physical address at EL2 (Warden's stage 1 is an identity
//! map) and a plain buffer in host tests.

use warden_pgtable::{MmOps, PAGE_SIZE};

/// Most pages a pool manages by default (2 MiB of tables); pools that need
/// more (the host stage-2's) say so with the `N` parameter.
pub const MAX_POOL_PAGES: usize = 512;

/// Access to physical memory by physical address.
pub trait PhysMem {
    /// Fill the 4 KiB page at `pa` with zeroes.
    fn zero_page(&mut self, pa: u64);
    /// Read the 8-byte-aligned u64 at `pa`.
    fn read_u64(&self, pa: u64) -> u64;
    /// Write the 8-byte-aligned u64 at `pa` with release ordering: every
    /// earlier write (e.g. a new table's entries) is visible before it.
    fn write_u64_release(&mut self, pa: u64, val: u64);
}

/// Counters for the summary.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Pages the pool manages.
    pub total: usize,
    /// Pages currently allocated.
    pub used: usize,
    /// Most pages allocated at once.
    pub peak: usize,
    /// Reference operations on pages that are not allocated pool pages
    /// (an engine bug if ever non-zero; ignored rather than fatal).
    pub bad_refs: usize,
}

/// A first-fit page allocator with per-page reference counts, managing at
/// most `N` pages.
pub struct PagePool<P: PhysMem, const N: usize = MAX_POOL_PAGES> {
    mem: P,
    base: u64,
    pages: usize,
    refcount: [u32; N],
    stats: PoolStats,
}

impl<P: PhysMem> PagePool<P> {
    /// A pool of at most [`MAX_POOL_PAGES`] over `[base, base + size)`
    /// (see [`Self::with_pages`]).
    pub fn new(mem: P, base: u64, size: u64) -> Self {
        Self::with_pages(mem, base, size)
    }
}

impl<P: PhysMem, const N: usize> PagePool<P, N> {
    /// A pool over the pages of `[base, base + size)`. `base` is rounded up
    /// and the end down to page boundaries; at most `N` are used.
    pub fn with_pages(mem: P, base: u64, size: u64) -> Self {
        let start = base.div_ceil(PAGE_SIZE).saturating_mul(PAGE_SIZE);
        let end = base.saturating_add(size) & !(PAGE_SIZE - 1);
        let pages = (end.saturating_sub(start) / PAGE_SIZE).min(N as u64) as usize;
        PagePool {
            mem,
            base: start,
            pages,
            refcount: [0; N],
            stats: PoolStats {
                total: pages,
                ..PoolStats::default()
            },
        }
    }

    /// First byte the pool manages.
    pub fn base(&self) -> u64 {
        self.base
    }

    /// Bytes the pool manages.
    pub fn size(&self) -> u64 {
        self.pages as u64 * PAGE_SIZE
    }

    /// Usage counters.
    pub fn stats(&self) -> PoolStats {
        self.stats
    }

    /// The physical memory accessor.
    pub fn mem(&self) -> &P {
        &self.mem
    }

    fn index(&self, pa: u64) -> Option<usize> {
        let off = pa.checked_sub(self.base)?;
        let i = (off / PAGE_SIZE) as usize;
        (off % PAGE_SIZE == 0 && i < self.pages).then_some(i)
    }

    /// The index of the allocated page holding `pa`, or `None` (counted as
    /// a bad reference).
    fn allocated(&mut self, pa: u64) -> Option<usize> {
        match self.index(pa & !(PAGE_SIZE - 1)) {
            Some(i) if self.refcount[i] > 0 => Some(i),
            _ => {
                self.stats.bad_refs += 1;
                None
            }
        }
    }
}

impl<P: PhysMem, const N: usize> MmOps for PagePool<P, N> {
    fn zalloc_pages(&mut self, count: usize) -> Option<u64> {
        if count == 0 || count > self.pages {
            return None;
        }
        let align = count.next_power_of_two() as u64 * PAGE_SIZE;
        let mut i = 0;
        while i + count <= self.pages {
            let pa = self.base + i as u64 * PAGE_SIZE;
            if !pa.is_multiple_of(align) {
                i += 1;
                continue;
            }
            match self.refcount[i..i + count].iter().rposition(|&c| c != 0) {
                // Skip past the last busy page of this window.
                Some(busy) => i += busy + 1,
                None => {
                    for j in 0..count {
                        self.refcount[i + j] = 1;
                        self.mem.zero_page(pa + j as u64 * PAGE_SIZE);
                    }
                    self.stats.used += count;
                    self.stats.peak = self.stats.peak.max(self.stats.used);
                    return Some(pa);
                }
            }
        }
        None
    }

    fn can_allocate(&self, pages: usize) -> bool {
        self.pages - self.stats.used >= pages
    }

    fn get_page(&mut self, pa: u64) {
        if let Some(i) = self.allocated(pa) {
            self.refcount[i] = self.refcount[i].saturating_add(1);
        }
    }

    fn put_page(&mut self, pa: u64) {
        if let Some(i) = self.allocated(pa) {
            self.refcount[i] -= 1;
            if self.refcount[i] == 0 {
                self.stats.used -= 1;
            }
        }
    }

    fn page_count(&self, pa: u64) -> u32 {
        self.index(pa & !(PAGE_SIZE - 1)).map_or(0, |i| self.refcount[i])
    }

    fn read_desc(&self, pa: u64) -> u64 {
        self.mem.read_u64(pa)
    }

    fn write_desc(&mut self, pa: u64, val: u64) {
        self.mem.write_u64_release(pa, val)
    }
}

/// A [`PhysMem`] over a heap buffer, for host tests.
#[cfg(test)]
pub(crate) mod fake {
    use super::*;

    /// Memory `[base, base + words * 8)` backed by a vector.
    pub struct FakeMem {
        pub base: u64,
        pub words: Vec<u64>,
    }

    impl FakeMem {
        pub fn new(base: u64, size: u64) -> Self {
            FakeMem {
                base,
                words: vec![0xdead_beef_dead_beef; (size / 8) as usize],
            }
        }

        fn idx(&self, pa: u64) -> usize {
            assert_eq!(pa % 8, 0, "unaligned access at {pa:#x}");
            ((pa - self.base) / 8) as usize
        }
    }

    impl PhysMem for FakeMem {
        fn zero_page(&mut self, pa: u64) {
            let i = self.idx(pa);
            self.words[i..i + 512].fill(0);
        }
        fn read_u64(&self, pa: u64) -> u64 {
            self.words[self.idx(pa)]
        }
        fn write_u64_release(&mut self, pa: u64, val: u64) {
            let i = self.idx(pa);
            self.words[i] = val;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fake::FakeMem;
    use super::*;

    const BASE: u64 = 0x4030_0000;

    fn pool(pages: u64) -> PagePool<FakeMem> {
        PagePool::new(FakeMem::new(BASE, pages * PAGE_SIZE), BASE, pages * PAGE_SIZE)
    }

    #[test]
    fn alloc_zeroes_and_counts() {
        let mut p = pool(4);
        let a = p.zalloc_pages(1).unwrap();
        assert_eq!(a, BASE);
        assert_eq!(p.page_count(a), 1);
        assert!((0..512).all(|i| p.read_desc(a + i * 8) == 0));
        p.write_desc(a + 8, 7);
        assert_eq!(p.read_desc(a + 8), 7);
        p.get_page(a);
        assert_eq!(p.page_count(a), 2);
        p.put_page(a);
        p.put_page(a);
        assert_eq!(p.page_count(a), 0);
        assert_eq!(p.stats().used, 0);
        assert_eq!(p.stats().peak, 1);
        // Freed pages are reused, zeroed again.
        let b = p.zalloc_pages(1).unwrap();
        assert_eq!(b, a);
        assert_eq!(p.read_desc(a + 8), 0);
    }

    #[test]
    fn exhaustion_and_alignment() {
        let mut p = pool(8);
        let one = p.zalloc_pages(1).unwrap();
        // Two pages aligned to two: skips the busy first pair.
        let two = p.zalloc_pages(2).unwrap();
        assert_eq!(two, BASE + 2 * PAGE_SIZE);
        let four = p.zalloc_pages(4).unwrap();
        assert_eq!(four, BASE + 4 * PAGE_SIZE);
        assert_eq!(p.zalloc_pages(4), None);
        assert_eq!(p.zalloc_pages(1), Some(BASE + PAGE_SIZE));
        assert_eq!(p.zalloc_pages(1), None);
        assert_eq!(p.zalloc_pages(0), None);
        assert_eq!(p.zalloc_pages(usize::MAX), None);
        assert_eq!(p.stats().used, 8);
        p.put_page(one);
        assert_eq!(p.stats().used, 7);
    }

    #[test]
    fn bad_refs_are_counted_not_fatal() {
        let mut p = pool(2);
        p.get_page(BASE);
        p.put_page(BASE + PAGE_SIZE);
        p.put_page(0);
        p.get_page(u64::MAX);
        assert_eq!(p.stats().bad_refs, 4);
        assert_eq!(p.page_count(0), 0);
    }

    #[test]
    fn unaligned_region_is_trimmed() {
        let p = PagePool::new(FakeMem::new(BASE, 4 * PAGE_SIZE), BASE - 8, 3 * PAGE_SIZE);
        assert_eq!(p.base(), BASE);
        assert_eq!(p.size(), 2 * PAGE_SIZE);
    }
}
