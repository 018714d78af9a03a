//! Table memory the SMMU walks: the shadow's page tables, with the cache
//! maintenance a non-coherent SMMU needs (Will Deacon's point in the pKVM
//! SMMUv3 review: a non-coherent walker reads memory, not the CPU's
//! caches, so every table write, and every new table page, is cleaned to
//! the point of coherency before the SMMU may walk it).

use warden_pgtable::MmOps;

use crate::hw::CacheMaint;

/// `MmOps` wrapper that cleans what the engine writes when the SMMU is not
/// coherent.
pub struct WalkMm<M: MmOps, C: CacheMaint> {
    inner: M,
    cache: C,
    coherent: bool,
}

impl<M: MmOps, C: CacheMaint> WalkMm<M, C> {
    /// Wrap `inner`; `coherent` is IDR0.COHACC.
    pub fn new(inner: M, cache: C, coherent: bool) -> Self {
        WalkMm { inner, cache, coherent }
    }

    /// The wrapped operations.
    pub fn inner(&self) -> &M {
        &self.inner
    }
}

impl<M: MmOps, C: CacheMaint> MmOps for WalkMm<M, C> {
    fn zalloc_pages(&mut self, count: usize) -> Option<u64> {
        let pa = self.inner.zalloc_pages(count)?;
        if !self.coherent {
            // The zeroes may still sit in the CPU's cache.
            self.cache.clean(pa, count as u64 * 4096);
        }
        Some(pa)
    }
    fn can_allocate(&self, pages: usize) -> bool {
        self.inner.can_allocate(pages)
    }
    fn get_page(&mut self, pa: u64) {
        self.inner.get_page(pa)
    }
    fn put_page(&mut self, pa: u64) {
        self.inner.put_page(pa)
    }
    fn get_pages(&mut self, pa: u64, n: u32) {
        self.inner.get_pages(pa, n)
    }
    fn put_pages(&mut self, pa: u64, n: u32) {
        self.inner.put_pages(pa, n)
    }
    fn page_count(&self, pa: u64) -> u32 {
        self.inner.page_count(pa)
    }
    fn read_desc(&self, pa: u64) -> u64 {
        self.inner.read_desc(pa)
    }
    fn read_descs(&self, pa: u64, out: &mut [u64]) {
        self.inner.read_descs(pa, out)
    }
    fn write_desc(&mut self, pa: u64, val: u64) {
        self.inner.write_desc(pa, val);
        if !self.coherent {
            self.cache.clean(pa, 8);
        }
    }
}
