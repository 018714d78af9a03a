//! The host stage-2 policy: an identity map filled lazily on host aborts
//! with the largest block inside the RAM region or MMIO gap around the
//! fault, and the recycling of MMIO mappings when table pages run out.

use warden_pgtable::config::{level_shift, level_size};
use warden_pgtable::{Attrs, Desc, Geometry, MapPolicy, MemType, MmOps, Perms};

use crate::protect::{Host, MemProtect, Platform};
use crate::ram::RamMap;
use crate::types::{AbortOutcome, Error, PageState, PAGE_SIZE};

/// Host stage-2 attributes for RAM: RWX; the host's stage 1 decides the
/// memory type ("as stage 1", or Normal-WB without FWB).
pub const HOST_MEM: Attrs = Attrs::new(Perms::RWX, MemType::AsStage1);
/// Host stage-2 attributes for MMIO: RW, never executable.
pub const HOST_MMIO: Attrs = Attrs::new(Perms::RW, MemType::AsStage1);

/// An upper bound on the table pages that mapping or annotating
/// `[base, base + size)` page by page can need in a table of geometry
/// `geo`: at each level below the root, the tables the range spans plus one
/// at each end (a block split at a boundary).
pub fn tables_needed(geo: &Geometry, size: u64) -> usize {
    let size = size.max(PAGE_SIZE);
    (geo.start_level + 1..=3)
        .map(|level| (((size - 1) >> level_shift(level - 1)) + 2) as usize)
        .sum()
}

impl<P: Platform> Host<P> {
    /// Make sure `pages` table pages can be allocated for the host
    /// stage-2: if the pool is short, give back the tables that only hold
    /// MMIO mappings (they are refaulted lazily; annotations are never
    /// touched) and check again. `NoMem` if still short.
    pub fn reserve_tables(&mut self, ram: &RamMap<'_>, pa_bits: u32, pages: usize) -> Result<(), Error> {
        if self.s2.mm().can_allocate(pages) {
            return Ok(());
        }
        self.recycle_mmio(ram, pa_bits);
        match self.s2.mm().can_allocate(pages) {
            true => Ok(()),
            false => Err(Error::NoMem),
        }
    }

    /// Unmap every valid host stage-2 leaf in the MMIO gaps. Each leaf is
    /// unmapped whole, so nothing needs splitting (no allocation), and
    /// annotations are left alone.
    pub fn recycle_mmio(&mut self, ram: &RamMap<'_>, pa_bits: u32) {
        self.recycles += 1;
        for (start, end) in ram.mmio_gaps(pa_bits) {
            let mut addr = start;
            while addr < end {
                let Ok((d, level)) = self.s2.get_leaf(addr) else { break };
                let size = level_size(level);
                let leaf = addr & !(size - 1);
                if d.is_valid() {
                    // A whole leaf: no split, so no allocation and no error.
                    let _ = self.s2.unmap(leaf, size);
                }
                addr = leaf + size;
            }
        }
    }
}

impl<P: Platform> MemProtect<'_, P> {
    /// Handle a host stage-2 abort at physical address `pa`.
    ///
    /// If the page is the host's (RAM it owns, shares, or borrows from a
    /// guest, or MMIO nobody took) and not mapped, map the largest block around it that lies in
    /// its RAM region or MMIO gap and has nothing mapped or recorded in it
    /// (RAM RWX, MMIO RW, memory type as the host's stage 1 says). If
    /// another CPU mapped it meanwhile, nothing changes. Either way the
    /// host retries: [`AbortOutcome::Handled`]. If the page belongs to
    /// someone else, [`AbortOutcome::Inject`]. `NoMem` only if the table
    /// pool is exhausted even after recycling MMIO mappings (the pool is
    /// sized so that this cannot happen for RAM).
    pub fn host_abort(&self, pa: u64) -> Result<AbortOutcome, Error> {
        if pa >> self.pa_bits != 0 {
            return Ok(AbortOutcome::Inject);
        }
        let page = pa & !(PAGE_SIZE - 1);
        let mut host = self.host.lock();
        if let Some(meta) = self.ram.meta(page >> 12) {
            if meta.host() == PageState::NoPage {
                return Ok(AbortOutcome::Inject);
            }
        }
        let Ok((d, level)) = host.s2.get_leaf(page) else {
            return Ok(AbortOutcome::Inject);
        };
        if d.is_valid() {
            return Ok(AbortOutcome::Handled);
        }
        if d != Desc::EMPTY {
            // An annotation (someone else's page) or a break in progress.
            return Ok(AbortOutcome::Inject);
        }
        // The empty entry at `level` covers nothing mapped or recorded;
        // take the largest block inside it that stays in the span.
        let (span_start, span_end) = self.ram.span_around(page, self.pa_bits);
        let mut l = level.max(1);
        let (start, size) = loop {
            let size = level_size(l);
            let start = page & !(size - 1);
            if (start >= span_start && start + size <= span_end) || l == 3 {
                break (start, size);
            }
            l += 1;
        };
        let attrs = if self.ram.is_ram(page) { HOST_MEM } else { HOST_MMIO };
        // One new table per level between the empty entry and the block.
        host.reserve_tables(&self.ram, self.pa_bits, l.saturating_sub(level) as usize)?;
        host.s2
            .map(start, size, start, attrs, MapPolicy::BLOCKS)
            .map_err(|_| Error::NoMem)?;
        Ok(AbortOutcome::Handled)
    }
}
