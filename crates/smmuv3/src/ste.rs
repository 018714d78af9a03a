//! Stream table entries (IHI 0070, 5.2) and the stream table, linear or
//! 2-level.

use warden_iommu::IommuError;

use crate::hw::{alloc_structure, SmmuMem};
use crate::regs::strtab_cfg;

/// Bytes per stream table entry.
pub const STE_BYTES: u64 = 64;
/// 2-level split: each level-2 table covers 2^8 streams (16 KiB).
pub const SPLIT: u8 = 8;
/// Linear tables are used up to this many stream ID bits (16 KiB).
pub const LINEAR_MAX_BITS: u8 = 8;

const V: u64 = 1;
const CONFIG_SHIFT: u32 = 1;
const CONFIG_ABORT: u64 = 0b000;
const CONFIG_S2: u64 = 0b110;
/// STE word 1: SHCFG \[45:44\] = 0b01, shareability as incoming.
const SHCFG_INCOMING: u64 = 1 << 44;

/// The stage-2 configuration every translating stream gets: the shadow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct S2Config {
    /// VMID tagging the shadow's TLB entries.
    pub vmid: u16,
    /// Root of the table (concatenated roots included).
    pub root: u64,
    /// Input address bits (S2T0SZ = 64 - this).
    pub ia_bits: u8,
    /// Level the walk starts at (0..=2 for 4 KiB).
    pub start_level: u8,
    /// S2PS: output size encoding.
    pub ps_enc: u8,
    /// Table walks are cacheable and inner shareable (coherent SMMU), or
    /// non-cacheable and outer shareable.
    pub coherent: bool,
}

/// What a stream does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamCfg {
    /// Every transaction aborts (no event).
    Abort,
    /// Stage-2 translation through the given table.
    Translate(S2Config),
}

impl StreamCfg {
    /// The entry's eight words.
    pub fn encode(self) -> [u64; 8] {
        let mut w = [0u64; 8];
        match self {
            StreamCfg::Abort => w[0] = V | CONFIG_ABORT << CONFIG_SHIFT,
            StreamCfg::Translate(c) => {
                w[0] = V | CONFIG_S2 << CONFIG_SHIFT;
                w[1] = SHCFG_INCOMING;
                let sl0 = u64::from(2 - c.start_level.min(2));
                let (cache, sh) = if c.coherent { (0b01u64, 0b11u64) } else { (0b00, 0b10) };
                w[2] = u64::from(c.vmid)
                    | u64::from(64 - c.ia_bits) << 32
                    | sl0 << 38
                    | cache << 40
                    | cache << 42
                    | sh << 44
                    // S2TG = 0b00 (4 KiB) at [47:46].
                    | u64::from(c.ps_enc & 7) << 48
                    | 1 << 51 // S2AA64
                    | 1 << 58; // S2R: record faults
                w[3] = c.root & ((1 << 52) - 1) & !0xf;
            }
        }
        w
    }
}

/// The stream table in Warden's memory.
#[derive(Debug)]
pub struct StreamTable {
    base: u64,
    /// Stream ID bits the table covers (STRTAB_BASE_CFG.LOG2SIZE).
    log2size: u8,
    two_level: bool,
    coherent: bool,
}

impl StreamTable {
    /// Allocate a table covering `log2size` stream ID bits: linear if small
    /// or if 2-level is not supported, else a level-1 table whose level-2
    /// tables come with the first stream configured in their span. All
    /// streams abort until configured.
    pub fn new<D: SmmuMem>(mem: &mut D, log2size: u8, two_level: bool, coherent: bool) -> Result<Self, IommuError> {
        let two_level = two_level && log2size > LINEAR_MAX_BITS;
        let bytes = if two_level {
            8u64 << (log2size - SPLIT)
        } else {
            STE_BYTES << log2size
        };
        let base = alloc_structure(mem, bytes, coherent)?;
        let t = StreamTable {
            base,
            log2size,
            two_level,
            coherent,
        };
        if !t.two_level {
            // Zeroed STEs have V = 0: C_BAD_STE, which aborts too, but an
            // explicit abort config records nothing.
            for sid in 0..1u64 << log2size {
                t.write_ste(mem, base + sid * STE_BYTES, StreamCfg::Abort);
            }
        }
        Ok(t)
    }

    /// STRTAB_BASE (read-allocate when coherent).
    pub fn base_reg(&self) -> u64 {
        let ra = if self.coherent { crate::regs::BASE_RA } else { 0 };
        ra | (self.base & crate::regs::BASE_ADDR_MASK)
    }

    /// STRTAB_BASE_CFG.
    pub fn cfg_reg(&self) -> u32 {
        let mut v = u32::from(self.log2size) << strtab_cfg::LOG2SIZE_SHIFT;
        if self.two_level {
            v |= strtab_cfg::FMT_2LVL << strtab_cfg::FMT_SHIFT | u32::from(SPLIT) << strtab_cfg::SPLIT_SHIFT;
        }
        v
    }

    /// Stream ID bits covered.
    pub fn log2size(&self) -> u8 {
        self.log2size
    }

    /// Whether the table is 2-level.
    pub fn two_level(&self) -> bool {
        self.two_level
    }

    /// Where `sid`'s entry lives, allocating its level-2 table (all
    /// streams aborting) if needed. `Inval` beyond the table.
    pub fn ste_addr<D: SmmuMem>(&mut self, mem: &mut D, sid: u32) -> Result<u64, IommuError> {
        if u64::from(sid) >> self.log2size != 0 {
            return Err(IommuError::Inval);
        }
        if !self.two_level {
            return Ok(self.base + u64::from(sid) * STE_BYTES);
        }
        let l1 = self.base + u64::from(sid >> SPLIT) * 8;
        let desc = mem.read64(l1);
        let l2 = match desc & ((1 << 52) - 1) & !0x3f {
            0 => {
                let l2 = alloc_structure(mem, STE_BYTES << SPLIT, self.coherent)?;
                for i in 0..1u64 << SPLIT {
                    self.write_ste(mem, l2 + i * STE_BYTES, StreamCfg::Abort);
                }
                mem.publish();
                // SPAN = SPLIT + 1 at [4:0], L2Ptr at [51:6].
                mem.write64(l1, l2 | u64::from(SPLIT + 1));
                if !self.coherent {
                    mem.clean(l1, 8);
                }
                l2
            }
            l2 => l2,
        };
        Ok(l2 + u64::from(sid & ((1 << SPLIT) - 1)) * STE_BYTES)
    }

    /// Write an entry that the SMMU does not use or has been told to stop
    /// using: words 1..7 first, word 0 (valid, config) last.
    pub fn write_ste<D: SmmuMem>(&self, mem: &mut D, at: u64, cfg: StreamCfg) {
        let w = cfg.encode();
        for (i, v) in w.iter().enumerate().skip(1) {
            mem.write64(at + 8 * i as u64, *v);
        }
        mem.publish();
        mem.write64(at, w[0]);
        if !self.coherent {
            mem.clean(at, STE_BYTES);
        }
    }
}

/// Whether word 0 of an STE translates (valid, config not abort).
pub fn translating(word0: u64) -> bool {
    word0 & V != 0 && (word0 >> CONFIG_SHIFT) & 7 != CONFIG_ABORT
}
