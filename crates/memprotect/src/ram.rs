//! Where RAM is, and the per-page metadata that records the host's and the
//! hypervisor's view of each RAM page.
//!
//! The metadata array is all zeroes at start, which means "host Owned, hyp
//! NoPage" for every page (the hyp state is stored complemented), so no
//! initialisation pass is needed. Fields are atomics only so that the array
//! can be shared between CPUs in safe code: each field is guarded by a
//! component lock (host state by the host lock; hyp state and pins by the
//! hyp lock; guest shares by the host lock) and accessed with relaxed
//! ordering under it.

use core::sync::atomic::{AtomicU16, AtomicU32, AtomicU8, Ordering::Relaxed};

use crate::types::{Error, PageState, Region, PAGE_SHIFT, PAGE_SIZE};

/// The most RAM regions Warden tracks.
pub const MAX_REGIONS: usize = 16;

/// Metadata of one RAM page: 8 bytes.
#[derive(Debug, Default)]
pub struct PageMeta {
    host: AtomicU8,
    hyp_comp: AtomicU8,
    pins: AtomicU16,
    guest_shares: AtomicU32,
}

impl PageMeta {
    /// The host's state.
    pub fn host(&self) -> PageState {
        PageState::from_bits(self.host.load(Relaxed))
    }

    /// The hypervisor's state (stored complemented: zero is NoPage).
    pub fn hyp(&self) -> PageState {
        PageState::from_bits(self.hyp_comp.load(Relaxed) ^ 3)
    }

    /// How many times the hypervisor pinned this shared page.
    pub fn pins(&self) -> u16 {
        self.pins.load(Relaxed)
    }

    /// How many guests the host shared this page with.
    pub fn guest_shares(&self) -> u32 {
        self.guest_shares.load(Relaxed)
    }

    pub(crate) fn set_host(&self, s: PageState) {
        self.host.store(s as u8, Relaxed);
    }

    pub(crate) fn set_hyp(&self, s: PageState) {
        self.hyp_comp.store(s as u8 ^ 3, Relaxed);
    }

    pub(crate) fn set_pins(&self, n: u16) {
        self.pins.store(n, Relaxed);
    }

    pub(crate) fn set_guest_shares(&self, n: u32) {
        self.guest_shares.store(n, Relaxed);
    }
}

/// A range of pages, validated to lie inside the physical address space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PfnRange {
    /// First page frame number.
    pub pfn: u64,
    /// Number of pages, at least 1.
    pub nr: u64,
}

impl PfnRange {
    /// Validate `nr` pages from `pfn` against a `pa_bits` physical address
    /// space: `Inval` for an empty range, an overflow, or a range past the
    /// end of the space.
    pub fn new(pfn: u64, nr: u64, pa_bits: u32) -> Result<PfnRange, Error> {
        let end = pfn.checked_add(nr).ok_or(Error::Inval)?;
        if nr == 0 || end > 1u64 << (pa_bits - PAGE_SHIFT) {
            return Err(Error::Inval);
        }
        Ok(PfnRange { pfn, nr })
    }

    /// First byte.
    pub fn base(&self) -> u64 {
        self.pfn << PAGE_SHIFT
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.nr << PAGE_SHIFT
    }

    /// One past the last byte.
    pub fn end(&self) -> u64 {
        self.base() + self.size()
    }

    /// The page frame numbers.
    pub fn pfns(&self) -> core::ops::Range<u64> {
        self.pfn..self.pfn + self.nr
    }
}

/// RAM regions and their metadata.
pub struct RamMap<'m> {
    regions: [Region; MAX_REGIONS],
    /// Index in `meta` of each region's first page.
    first: [usize; MAX_REGIONS],
    len: usize,
    meta: &'m [PageMeta],
}

impl<'m> RamMap<'m> {
    /// Pages of metadata `regions` need.
    pub fn pages_of(regions: &[Region]) -> usize {
        regions.iter().map(|r| (r.size >> PAGE_SHIFT) as usize).sum()
    }

    /// Check `regions` (at most [`MAX_REGIONS`], page-aligned, non-empty,
    /// sorted, not overlapping, below `1 << pa_bits`) and attach `meta`,
    /// which must hold at least [`Self::pages_of`] entries.
    pub fn new(regions: &[Region], meta: &'m [PageMeta], pa_bits: u32) -> Result<Self, Error> {
        if regions.len() > MAX_REGIONS || meta.len() < Self::pages_of(regions) {
            return Err(Error::Inval);
        }
        let mut map = RamMap {
            regions: [Region { base: 0, size: 0 }; MAX_REGIONS],
            first: [0; MAX_REGIONS],
            len: regions.len(),
            meta,
        };
        let mut next_free = 0u64;
        let mut index = 0usize;
        for (i, r) in regions.iter().enumerate() {
            let aligned = r.base.is_multiple_of(PAGE_SIZE) && r.size.is_multiple_of(PAGE_SIZE);
            let fits = r.base.checked_add(r.size).is_some_and(|e| e <= 1u64 << pa_bits);
            if !aligned || r.size == 0 || !fits || r.base < next_free {
                return Err(Error::Inval);
            }
            next_free = r.end();
            map.regions[i] = *r;
            map.first[i] = index;
            index += (r.size >> PAGE_SHIFT) as usize;
        }
        Ok(map)
    }

    /// The RAM regions.
    pub fn regions(&self) -> &[Region] {
        &self.regions[..self.len]
    }

    /// The region holding `pa`, with its index.
    pub fn region_of(&self, pa: u64) -> Option<(usize, Region)> {
        let i = self.regions().partition_point(|r| r.end() <= pa);
        self.regions().get(i).filter(|r| r.contains(pa)).map(|r| (i, *r))
    }

    /// Whether `pa` is RAM.
    pub fn is_ram(&self, pa: u64) -> bool {
        self.region_of(pa).is_some()
    }

    /// Whether the whole range lies inside one RAM region.
    pub fn in_one_region(&self, r: PfnRange) -> bool {
        self.region_of(r.base()).is_some_and(|(_, reg)| r.end() <= reg.end())
    }

    /// Whether any page of the range is RAM.
    pub fn any_ram(&self, r: PfnRange) -> bool {
        self.regions()
            .iter()
            .any(|reg| reg.base < r.end() && r.base() < reg.end())
    }

    /// The metadata of RAM page `pfn`.
    pub fn meta(&self, pfn: u64) -> Option<&'m PageMeta> {
        let pa = pfn.checked_shl(PAGE_SHIFT).filter(|pa| pa >> PAGE_SHIFT == pfn)?;
        let (i, reg) = self.region_of(pa)?;
        self.meta.get(self.first[i] + ((pa - reg.base) >> PAGE_SHIFT) as usize)
    }

    /// The metadata of every page of a range inside one region (checked
    /// by the caller with [`Self::in_one_region`]).
    pub fn metas(&self, r: PfnRange) -> &'m [PageMeta] {
        match self.region_of(r.base()) {
            Some((i, reg)) if r.end() <= reg.end() => {
                let first = self.first[i] + ((r.base() - reg.base) >> PAGE_SHIFT) as usize;
                &self.meta[first..first + r.nr as usize]
            }
            _ => &[],
        }
    }

    /// The stretch of address space around `pa` that holds it and no other
    /// kind of memory: its RAM region, or the MMIO gap between regions
    /// (bounded by the physical address space).
    pub fn span_around(&self, pa: u64, pa_bits: u32) -> (u64, u64) {
        if let Some((_, reg)) = self.region_of(pa) {
            return (reg.base, reg.end());
        }
        let i = self.regions().partition_point(|r| r.end() <= pa);
        let start = if i == 0 { 0 } else { self.regions[i - 1].end() };
        let end = self.regions().get(i).map_or(1u64 << pa_bits, |r| r.base);
        (start, end)
    }

    /// The MMIO gaps of the physical address space, in order.
    pub fn mmio_gaps(&self, pa_bits: u32) -> impl Iterator<Item = (u64, u64)> + '_ {
        let top = 1u64 << pa_bits;
        (0..=self.len).filter_map(move |i| {
            let start = if i == 0 { 0 } else { self.regions[i - 1].end() };
            let end = if i == self.len { top } else { self.regions[i].base };
            (start < end).then_some((start, end))
        })
    }
}
