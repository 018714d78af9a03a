//! The host stage-2 shadow: the identity stage-2 every IOMMU translates
//! the host's DMA through.
//!
//! The host stage-2 is filled lazily, on CPU faults; IOMMU faults are not
//! handled (a device cannot retry), so the shadow maps up front everything
//! the host *may* reach: every RAM region and MMIO gap, minus what is
//! recorded in the host stage-2 as someone else's (annotations). RAM maps
//! as Normal write-back, MMIO as Device-nGnRE, both read/write and never
//! executable. Large ranges map as blocks; taking one page out of a block
//! splits it (break-before-make and invalidation through the table's TLB
//! operations: the IOMMU's command queue).

use warden_memprotect::ram::MAX_REGIONS;
use warden_memprotect::Region;
use warden_pgtable::{Ctx, Error as PgError, MapPolicy, MmOps, PageTable, Regime, TlbOps, WalkFlags};

use crate::driver::{IommuDriver, IommuError};
use crate::prot::IommuProt;

/// The host stage-2 shadow.
pub struct HostShadow<M: MmOps, T: TlbOps> {
    s2: PageTable<M, T>,
    ram: [Region; MAX_REGIONS],
    regions: usize,
    pa_bits: u32,
}

impl<M: MmOps, T: TlbOps> HostShadow<M, T> {
    /// A shadow over table `s2` (an empty stage-2 whose input space covers
    /// the `pa_bits` physical address space) for the machine whose RAM is
    /// `ram` (sorted, as warden-memprotect's `RamMap` checks it). It grants
    /// nothing until [`Self::snapshot`].
    pub fn new(s2: PageTable<M, T>, ram: &[Region], pa_bits: u32) -> Result<Self, IommuError> {
        let ia_bits = match *s2.regime() {
            Regime::Stage2 { ipa_bits, .. } => ipa_bits as u32,
            Regime::El2Stage1 { .. } => return Err(IommuError::Inval),
        };
        if ram.len() > MAX_REGIONS || ia_bits < pa_bits {
            return Err(IommuError::Inval);
        }
        let mut regions = [Region { base: 0, size: 0 }; MAX_REGIONS];
        regions[..ram.len()].copy_from_slice(ram);
        Ok(HostShadow {
            s2,
            ram: regions,
            regions: ram.len(),
            pa_bits,
        })
    }

    /// The shadow's table (its root is what the IOMMU's stream table
    /// entries point at).
    pub fn table(&self) -> &PageTable<M, T> {
        &self.s2
    }

    /// The shadow's table, mutably (tests, diagnostics).
    pub fn table_mut(&mut self) -> &mut PageTable<M, T> {
        &mut self.s2
    }

    /// Map everything the host may reach now or lazily: every RAM region
    /// (cacheable) and MMIO gap (device), as blocks where alignment
    /// allows, then take out every range the host stage-2 records as
    /// someone else's. Costs what the host stage-2 holds, not the size of
    /// the address space. `NoMem` if the shadow's pool runs out (it must be
    /// sized like the host stage-2's).
    pub fn snapshot<HM: MmOps, HT: TlbOps>(&mut self, host_s2: &mut PageTable<HM, HT>) -> Result<(), IommuError> {
        self.map_everything()?;
        let top = 1u64 << self.pa_bits;
        // Runs of annotated pages, unmapped one run at a time.
        let shadow = &mut self.s2;
        let mut run: Option<(u64, u64)> = None;
        host_s2
            .walk(0, top, WalkFlags::LEAF, &mut |_, c: &Ctx, _| {
                if c.old.annotation().is_none() {
                    return Ok(());
                }
                let (s, e) = (c.entry_start, c.entry_start + c.entry_size());
                match run {
                    Some((rs, re)) if re == s => run = Some((rs, e)),
                    Some((rs, re)) => {
                        run = Some((s, e));
                        shadow.unmap(rs, re - rs)?;
                    }
                    None => run = Some((s, e)),
                }
                Ok(())
            })
            .map_err(pg)?;
        if let Some((rs, re)) = run {
            shadow.unmap(rs, re - rs).map_err(pg)?;
        }
        Ok(())
    }

    /// The first half of [`Self::snapshot`]: every RAM region (cacheable)
    /// and MMIO gap (device) mapped, as blocks where alignment allows,
    /// nothing taken out. For a platform that has no host stage-2 yet and
    /// takes its own ranges out with [`Self::map`].
    pub fn map_everything(&mut self) -> Result<(), IommuError> {
        let top = 1u64 << self.pa_bits;
        let mut start = 0;
        for i in 0..=self.regions {
            let end = if i == self.regions { top } else { self.ram[i].base };
            if start < end {
                self.map(start, end - start, IommuProt::MMIO)?;
            }
            if i < self.regions {
                let r = self.ram[i];
                self.map(r.base, r.size, IommuProt::MEM)?;
                start = r.end();
            }
        }
        Ok(())
    }

    /// Make `[base, base + size)` grant `prot` (unmapped for
    /// [`IommuProt::NONE`]).
    pub fn map(&mut self, base: u64, size: u64, prot: IommuProt) -> Result<(), IommuError> {
        let r = match prot.is_none() {
            true => self.s2.unmap(base, size).map(|_| ()),
            false => self.s2.map(base, size, base, prot.attrs(), MapPolicy::BLOCKS),
        };
        r.map_err(pg)
    }
}

impl<M: MmOps, T: TlbOps> HostShadow<M, T> {
    /// Grant nothing: unmap the whole input space. Unmapping whole
    /// root-level entries never splits a block, so this needs no memory
    /// and cannot fail; it is the shadow's way to fail closed.
    pub fn block_all(&mut self) {
        let top = 1u64 << self.pa_bits;
        // Only a LOCKED entry could refuse, and the engine never leaves one
        // behind between operations; annotations are never made here.
        let _ = self.s2.unmap(0, top);
    }
}

fn pg(e: PgError) -> IommuError {
    match e {
        PgError::NoMemory => IommuError::NoMem,
        _ => IommuError::Inval,
    }
}

/// The shadow alone is a driver for an IOMMU whose hardware side lives in
/// its TLB operations (the tests' model; the SMMUv3 driver wraps it).
impl<M: MmOps, T: TlbOps> IommuDriver for HostShadow<M, T> {
    fn init(&mut self) -> Result<(), IommuError> {
        Ok(())
    }

    fn idmap(&mut self, base: u64, size: u64, prot: IommuProt) -> Result<(), IommuError> {
        self.map(base, size, prot)
    }

    fn block_all(&mut self) {
        self.block_all();
    }
}
