//! Translation regimes and their geometry for the 4 KiB granule.

use crate::Error;

/// Size of a translation granule and of a table page.
pub const PAGE_SIZE: u64 = 4096;
/// log2 of [`PAGE_SIZE`].
pub const PAGE_SHIFT: u32 = 12;
/// Descriptors per table page.
pub const ENTRIES_PER_TABLE: usize = 512;
/// The deepest level (pages).
pub const LAST_LEVEL: u8 = 3;
/// Largest number of concatenated root pages a stage-2 table may use.
pub const MAX_CONCAT_PAGES: usize = 16;

/// log2 of the size of the region one entry at `level` covers.
pub const fn level_shift(level: u8) -> u32 {
    PAGE_SHIFT + 9 * (LAST_LEVEL - level) as u32
}

/// Size of the region one entry at `level` covers.
pub const fn level_size(level: u8) -> u64 {
    1 << level_shift(level)
}

/// Which translation regime a table serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Regime {
    /// EL2 stage 1 (single VA range, as used by a non-VHE hypervisor).
    El2Stage1 {
        /// Width of the virtual address space, 25..=48 bits.
        va_bits: u8,
    },
    /// Stage 2 (a VM's or the host's IPA space; the SMMU uses the same format).
    Stage2 {
        /// Width of the intermediate physical address space, 32..=48 bits.
        ipa_bits: u8,
        /// The VMID used for TLB maintenance.
        vmid: u16,
        /// Encode memory attributes for FEAT_S2FWB (HCR_EL2.FWB set).
        fwb: bool,
    },
}

/// The validated geometry of a regime: start level and root size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// Input address bits.
    pub ia_bits: u8,
    /// Level of the root table.
    pub start_level: u8,
    /// Number of concatenated root pages (1 for stage 1).
    pub root_pages: usize,
}

impl Regime {
    /// Validate the regime and compute its geometry.
    ///
    /// Stage 2 starts at the deepest level whose root fits in at most 16
    /// concatenated pages (fewer levels means shorter walks); stage 1 cannot
    /// concatenate and starts where the root fits in one page.
    pub fn geometry(&self) -> Result<Geometry, Error> {
        let (ia_bits, max_pages) = match *self {
            Regime::El2Stage1 { va_bits } if (25..=48).contains(&va_bits) => (va_bits, 1),
            Regime::Stage2 { ipa_bits, .. } if (32..=48).contains(&ipa_bits) => (ipa_bits, MAX_CONCAT_PAGES as u64),
            _ => return Err(Error::InvalidConfig),
        };
        // Level 3 cannot be a 4 KiB-granule start level without FEAT_TTST.
        let mut start_level = 2;
        loop {
            // Entries the root needs at this level, in pages of 512.
            let entries = 1u64 << (ia_bits as u32).saturating_sub(level_shift(start_level));
            let pages = entries.div_ceil(ENTRIES_PER_TABLE as u64);
            if pages <= max_pages {
                return Ok(Geometry {
                    ia_bits,
                    start_level,
                    root_pages: pages as usize,
                });
            }
            if start_level == 0 {
                return Err(Error::InvalidConfig);
            }
            start_level -= 1;
        }
    }

    /// Whether this is a stage-2 regime.
    pub fn is_stage2(&self) -> bool {
        matches!(self, Regime::Stage2 { .. })
    }
}

impl Geometry {
    /// One past the highest input address.
    pub fn ia_end(&self) -> u64 {
        1u64 << self.ia_bits
    }

    /// VTCR_EL2.SL0 encoding of the start level (4 KiB granule).
    pub fn vtcr_sl0(&self) -> u64 {
        2 - self.start_level as u64
    }

    /// T0SZ for TCR_EL2 / VTCR_EL2.
    pub fn t0sz(&self) -> u64 {
        64 - self.ia_bits as u64
    }
}
