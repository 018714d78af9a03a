//! Simulated physical memory.
//!
//! A [`PhysMem`] is a window `[base, base + size)` of physical address space
//! with a page allocator on top. Storage is sparse: only pages that have been
//! written hold a buffer, everything else reads as zero. The allocator hands
//! out zeroed, naturally aligned runs of 4 KiB pages, so it can back both
//! ordinary table pages and concatenated stage-2 roots (which must be aligned
//! to their total size).
//!
//! Optionally (off by default, see [`PhysMem::set_track_dirty`]) it tracks
//! which 64-byte cache lines the CPU has written but not yet cleaned to the
//! point of coherency, so that a model of a non-coherent device (the SMMU
//! model in [`crate::smmu`]) can tell when it reads memory the CPU may still
//! hold only in its caches.

use std::collections::{BTreeSet, HashMap, HashSet};

/// Size of a translation granule page (4 KiB).
pub const PAGE_SIZE: u64 = 4096;
const WORDS_PER_PAGE: usize = (PAGE_SIZE / 8) as usize;
/// Size of a cache line for dirty tracking (64 bytes).
pub const LINE_SIZE: u64 = 64;

/// Simulated physical memory: a window `[base, base + size)`, sparse page
/// storage, and a page allocator with an optional limit.
///
/// Misuse that can only be a bug in a test or in the code under test
/// (accesses outside the window, unaligned 64-bit accesses, double frees)
/// panics with a message rather than being silently tolerated.
#[derive(Debug, Clone)]
pub struct PhysMem {
    base: u64,
    size: u64,
    /// Page frame number -> contents. Absent pages read as zero.
    pages: HashMap<u64, Box<[u64; WORDS_PER_PAGE]>>,
    /// Page frame numbers currently allocated.
    allocated: BTreeSet<u64>,
    limit: Option<usize>,
    total_allocs: u64,
    failed_allocs: u64,
    /// Whether CPU writes mark their cache line dirty.
    track_dirty: bool,
    /// Line numbers (`pa / LINE_SIZE`) written by the CPU and not cleaned.
    dirty: HashSet<u64>,
}

impl PhysMem {
    /// Create a window of physical memory `[base, base + size)`.
    ///
    /// Panics if `base` or `size` is not page aligned or the window is empty
    /// or wraps.
    pub fn new(base: u64, size: u64) -> Self {
        assert!(base & (PAGE_SIZE - 1) == 0, "PhysMem base {base:#x} not page aligned");
        assert!(
            size & (PAGE_SIZE - 1) == 0 && size > 0,
            "PhysMem size {size:#x} not a non-zero page multiple"
        );
        assert!(base.checked_add(size).is_some(), "PhysMem window wraps");
        PhysMem {
            base,
            size,
            pages: HashMap::new(),
            allocated: BTreeSet::new(),
            limit: None,
            total_allocs: 0,
            failed_allocs: 0,
            track_dirty: false,
            dirty: HashSet::new(),
        }
    }

    /// First physical address of the window.
    pub fn base(&self) -> u64 {
        self.base
    }

    /// Size of the window in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Whether `pa` lies inside the window.
    pub fn contains(&self, pa: u64) -> bool {
        pa >= self.base && pa - self.base < self.size
    }

    /// Limit the number of pages that may be allocated at the same time
    /// (`None`: no limit other than the window). Lets tests provoke
    /// out-of-memory at a chosen point. Lowering the limit below the current
    /// allocation count does not free anything; it only makes further
    /// allocations fail.
    pub fn set_alloc_limit(&mut self, limit: Option<usize>) {
        self.limit = limit;
    }

    /// The current allocation limit, if any.
    pub fn alloc_limit(&self) -> Option<usize> {
        self.limit
    }

    /// Allocate `count` contiguous zeroed 4 KiB pages whose base is aligned to
    /// `align_pages` pages (as an absolute physical address; 0 is treated as
    /// 1). Returns `None` if `count` is 0, the limit would be exceeded, or no
    /// suitable free run exists (first fit, lowest address).
    pub fn alloc_pages(&mut self, count: usize, align_pages: usize) -> Option<u64> {
        let found = self.find_free_run(count, align_pages);
        match found {
            Some(first_pfn) => {
                for pfn in first_pfn..first_pfn + count as u64 {
                    self.allocated.insert(pfn);
                    // Hand out zeroed memory whatever the page held before.
                    self.pages.remove(&pfn);
                }
                self.total_allocs += 1;
                Some(first_pfn * PAGE_SIZE)
            }
            None => {
                self.failed_allocs += 1;
                None
            }
        }
    }

    fn find_free_run(&self, count: usize, align_pages: usize) -> Option<u64> {
        if count == 0 {
            return None;
        }
        if let Some(limit) = self.limit {
            if self.allocated.len().checked_add(count)? > limit {
                return None;
            }
        }
        let align = align_pages.max(1) as u64;
        let count = count as u64;
        let first = self.base / PAGE_SIZE;
        let end = (self.base + self.size) / PAGE_SIZE; // exclusive
        let mut cand = first.div_ceil(align) * align;
        while cand.checked_add(count)? <= end {
            // Jump past the first allocated page inside the candidate run.
            match self.allocated.range(cand..cand + count).next() {
                None => return Some(cand),
                Some(&used) => cand = (used + 1).div_ceil(align) * align,
            }
        }
        None
    }

    /// Free `count` pages starting at `pa`. Panics if any of them is not
    /// currently allocated (double free, or freeing memory never allocated):
    /// that is a bug in the caller.
    pub fn free_pages(&mut self, pa: u64, count: usize) {
        assert!(pa & (PAGE_SIZE - 1) == 0, "free_pages: {pa:#x} not page aligned");
        for i in 0..count as u64 {
            let page = pa + i * PAGE_SIZE;
            assert!(self.contains(page), "free_pages: {page:#x} outside physical memory");
            let pfn = page / PAGE_SIZE;
            assert!(
                self.allocated.remove(&pfn),
                "free_pages: page {page:#x} is not allocated (double free?)"
            );
        }
    }

    /// Number of pages currently allocated (for leak checks).
    pub fn allocated_pages(&self) -> usize {
        self.allocated.len()
    }

    /// Whether the page containing `pa` is currently allocated.
    pub fn is_allocated(&self, pa: u64) -> bool {
        self.allocated.contains(&(pa / PAGE_SIZE))
    }

    /// Number of successful `alloc_pages` calls so far.
    pub fn total_allocs(&self) -> u64 {
        self.total_allocs
    }

    /// Number of `alloc_pages` calls that returned `None` so far.
    pub fn failed_allocs(&self) -> u64 {
        self.failed_allocs
    }

    fn check_word(&self, pa: u64, what: &str) {
        assert!(pa & 7 == 0, "{what}: {pa:#x} not 8-byte aligned");
        assert!(
            self.contains(pa),
            "{what}: {pa:#x} outside physical memory [{:#x}, {:#x})",
            self.base,
            self.base + self.size
        );
    }

    /// Read the 64-bit little-endian word at `pa` (8-byte aligned). Pages
    /// never written read as zero, allocated or not. Panics outside the
    /// window.
    pub fn read_u64(&self, pa: u64) -> u64 {
        self.check_word(pa, "read_u64");
        let idx = ((pa % PAGE_SIZE) / 8) as usize;
        self.pages.get(&(pa / PAGE_SIZE)).map_or(0, |p| p[idx])
    }

    /// Write the 64-bit word at `pa` (8-byte aligned), as the CPU does: with
    /// dirty tracking on, the word's 64-byte line becomes dirty. Writes to
    /// pages that are not allocated are allowed (e.g. images loaded at fixed
    /// addresses). Panics outside the window.
    pub fn write_u64(&mut self, pa: u64, val: u64) {
        self.check_word(pa, "write_u64");
        if self.track_dirty {
            self.dirty.insert(pa / LINE_SIZE);
        }
        self.store(pa, val);
    }

    /// Write the 64-bit word at `pa` (8-byte aligned) as a device does, to
    /// memory directly: the line's dirty state is left as it is. Panics
    /// outside the window.
    pub fn device_write_u64(&mut self, pa: u64, val: u64) {
        self.check_word(pa, "device_write_u64");
        self.store(pa, val);
    }

    /// Turn cache-line dirty tracking on or off (off by default). While on,
    /// every [`PhysMem::write_u64`] (and so [`PhysMem::load_bytes`]) marks its
    /// 64-byte line dirty until [`PhysMem::clean`] covers it. Turning
    /// tracking off forgets all dirty marks.
    pub fn set_track_dirty(&mut self, on: bool) {
        self.track_dirty = on;
        if !on {
            self.dirty.clear();
        }
    }

    /// Whether dirty tracking is on.
    pub fn track_dirty(&self) -> bool {
        self.track_dirty
    }

    /// Clean `[pa, pa + len)` to the point of coherency: every 64-byte line
    /// the range touches is no longer dirty. Any range is accepted (it need
    /// not lie in the window; a range running past the top of the address
    /// space stops there); `len == 0` cleans nothing.
    pub fn clean(&mut self, pa: u64, len: u64) {
        if len == 0 || self.dirty.is_empty() {
            return;
        }
        let first = pa / LINE_SIZE;
        let last = pa.saturating_add(len - 1) / LINE_SIZE;
        if last - first >= self.dirty.len() as u64 {
            self.dirty.retain(|&l| l < first || l > last);
        } else {
            for line in first..=last {
                self.dirty.remove(&line);
            }
        }
    }

    /// Whether the 64-byte line containing `pa` has been written by the CPU
    /// (with tracking on) and not cleaned since. Never panics.
    pub fn is_dirty(&self, pa: u64) -> bool {
        self.dirty.contains(&(pa / LINE_SIZE))
    }

    fn store(&mut self, pa: u64, val: u64) {
        let idx = ((pa % PAGE_SIZE) / 8) as usize;
        let page = self
            .pages
            .entry(pa / PAGE_SIZE)
            .or_insert_with(|| Box::new([0; WORDS_PER_PAGE]));
        page[idx] = val;
    }

    /// Copy `bytes` into memory at `pa` (any alignment), e.g. to load another
    /// library's table image. Panics if any byte falls outside the window.
    pub fn load_bytes(&mut self, pa: u64, bytes: &[u8]) {
        for (i, &b) in bytes.iter().enumerate() {
            let addr = pa + i as u64;
            let word_pa = addr & !7;
            let shift = (addr & 7) * 8;
            let w = self.read_u64(word_pa);
            self.write_u64(word_pa, (w & !(0xff << shift)) | (u64::from(b) << shift));
        }
    }

    /// Read `len` bytes starting at `pa` (any alignment).
    pub fn read_bytes(&self, pa: u64, len: usize) -> Vec<u8> {
        (0..len as u64)
            .map(|i| {
                let addr = pa + i;
                (self.read_u64(addr & !7) >> ((addr & 7) * 8)) as u8
            })
            .collect()
    }
}

/// Anything a translation walk can read descriptors from.
pub trait DescSource {
    /// Read the 64-bit descriptor at physical address `pa` (8-byte aligned).
    fn read_desc(&self, pa: u64) -> u64;
}

impl DescSource for PhysMem {
    fn read_desc(&self, pa: u64) -> u64 {
        self.read_u64(pa)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alloc_is_aligned_zeroed_and_limited() {
        let mut m = PhysMem::new(0x4000_0000, 64 * PAGE_SIZE);
        let a = m.alloc_pages(1, 1).unwrap();
        assert_eq!(a, 0x4000_0000);
        m.write_u64(a + 8, 0xdead);
        let b = m.alloc_pages(4, 4).unwrap();
        assert_eq!(b % (4 * PAGE_SIZE), 0);
        assert!(b > a);
        assert_eq!(m.allocated_pages(), 5);
        m.free_pages(a, 1);
        let c = m.alloc_pages(1, 1).unwrap();
        assert_eq!(c, a);
        assert_eq!(m.read_u64(c + 8), 0, "reallocated page must be zeroed");
        m.set_alloc_limit(Some(6));
        assert!(m.alloc_pages(1, 1).is_some());
        assert!(m.alloc_pages(1, 1).is_none());
        m.set_alloc_limit(None);
        assert!(m.alloc_pages(1, 1).is_some());
        assert_eq!(m.failed_allocs(), 1);
    }

    #[test]
    fn alloc_exhaustion_and_large_alignment() {
        let mut m = PhysMem::new(0x1000, 16 * PAGE_SIZE);
        // 16-page alignment: 0x10000 is the only candidate, and the window
        // ends at 0x11000, so one page fits but two do not.
        assert_eq!(m.alloc_pages(1, 16), Some(0x10000));
        assert_eq!(m.alloc_pages(2, 16), None);
        assert_eq!(m.alloc_pages(15, 1), Some(0x1000));
        assert_eq!(m.alloc_pages(1, 1), None);
        assert_eq!(m.alloc_pages(0, 1), None);
    }

    #[test]
    #[should_panic(expected = "not allocated")]
    fn double_free_panics() {
        let mut m = PhysMem::new(0, 4 * PAGE_SIZE);
        let a = m.alloc_pages(1, 1).unwrap();
        m.free_pages(a, 1);
        m.free_pages(a, 1);
    }

    #[test]
    fn bytes_round_trip() {
        let mut m = PhysMem::new(0, 4 * PAGE_SIZE);
        m.load_bytes(0xffd, &[1, 2, 3, 4, 5, 6]);
        assert_eq!(m.read_bytes(0xffd, 6), vec![1, 2, 3, 4, 5, 6]);
        assert_eq!(m.read_u64(0x1000), 0x0006_0504);
        m.load_bytes(0x2000, &0x1122_3344_5566_7788u64.to_le_bytes());
        assert_eq!(m.read_desc(0x2000), 0x1122_3344_5566_7788);
    }

    #[test]
    #[should_panic(expected = "outside physical memory")]
    fn out_of_window_read_panics() {
        let m = PhysMem::new(0x1000, PAGE_SIZE);
        m.read_u64(0x2000);
    }
}
