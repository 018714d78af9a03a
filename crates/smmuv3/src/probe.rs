//! Probing: what the SMMU can do, from its ID registers, and whether
//! Warden can use it.

use warden_iommu::IommuError;

use crate::hw::Mmio;
use crate::regs::{self, idr0, idr1, idr5};

/// Largest queue the architecture allows (log2 entries).
const MAX_QUEUE_LOG2: u8 = 19;

/// What Warden uses of an SMMU, decoded from its ID registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Features {
    /// Stage-1 translation (not used; reported).
    pub stage1: bool,
    /// Accesses to tables and queues are coherent with the CPU caches.
    pub coherent: bool,
    /// Broadcast TLB maintenance (not used: Warden invalidates by command).
    pub btm: bool,
    /// 16-bit VMIDs.
    pub vmid16: bool,
    /// 2-level stream tables.
    pub two_level: bool,
    /// Range invalidation (TLBI with NUM/SCALE).
    pub ril: bool,
    /// Stream ID bits.
    pub sid_bits: u8,
    /// Largest command queue (log2 entries).
    pub cmdq_log2: u8,
    /// Largest event queue (log2 entries).
    pub evtq_log2: u8,
    /// Output address size in bits.
    pub oas_bits: u8,
    /// The IDR5.OAS encoding of `oas_bits` (STE.S2PS takes it).
    pub oas_enc: u8,
}

/// Read the ID registers and check that the SMMU has what Warden needs:
/// stage-2 translation of AArch64 little-endian tables with a 4 KiB
/// granule, programmable table and queue bases, sane sizes. Anything else
/// is refused with a reason, before any register is written.
pub fn probe<R: Mmio>(regs: &mut R) -> Result<Features, IommuError> {
    let i0 = regs.read32(regs::IDR0);
    let i1 = regs.read32(regs::IDR1);
    let i3 = regs.read32(regs::IDR3);
    let i5 = regs.read32(regs::IDR5);
    if i0 & idr0::S2P == 0 {
        return Err(IommuError::Unsupported("SMMU without stage-2 translation"));
    }
    if (i0 >> idr0::TTF_SHIFT) & 0b10 == 0 {
        return Err(IommuError::Unsupported("SMMU without AArch64 translation tables"));
    }
    match (i0 >> idr0::TTENDIAN_SHIFT) & 0b11 {
        0b00 | 0b10 => {}
        0b11 => return Err(IommuError::Unsupported("SMMU with big-endian tables only")),
        _ => return Err(IommuError::Hardware("IDR0.TTENDIAN reserved value")),
    }
    let two_level = match (i0 >> idr0::ST_LEVEL_SHIFT) & 0b11 {
        0b00 => false,
        0b01 => true,
        _ => return Err(IommuError::Hardware("IDR0.ST_LEVEL reserved value")),
    };
    if i1 & (idr1::TABLES_PRESET | idr1::QUEUES_PRESET) != 0 {
        return Err(IommuError::Unsupported("SMMU with fixed table or queue bases"));
    }
    let sid_bits = (i1 & idr1::SIDSIZE_MASK) as u8;
    let cmdq_log2 = ((i1 >> idr1::CMDQS_SHIFT) & 0x1f) as u8;
    let evtq_log2 = ((i1 >> idr1::EVENTQS_SHIFT) & 0x1f) as u8;
    if sid_bits > 32 {
        return Err(IommuError::Hardware("IDR1.SIDSIZE above 32"));
    }
    if cmdq_log2 > MAX_QUEUE_LOG2 || evtq_log2 > MAX_QUEUE_LOG2 {
        return Err(IommuError::Hardware("IDR1 queue size above 2^19"));
    }
    if cmdq_log2 < 1 {
        // One invalidation and its sync must fit.
        return Err(IommuError::Unsupported("command queue of one entry"));
    }
    if i5 & idr5::GRAN4K == 0 {
        return Err(IommuError::Unsupported("SMMU without the 4 KiB granule"));
    }
    let oas_enc = (i5 & idr5::OAS_MASK) as u8;
    let oas_bits = match oas_enc {
        0 => 32,
        1 => 36,
        2 => 40,
        3 => 42,
        4 => 44,
        5 => 48,
        6 => 52,
        _ => return Err(IommuError::Hardware("IDR5.OAS reserved value")),
    };
    Ok(Features {
        stage1: i0 & idr0::S1P != 0,
        coherent: i0 & idr0::COHACC != 0,
        btm: i0 & idr0::BTM != 0,
        vmid16: i0 & idr0::VMID16 != 0,
        two_level,
        ril: i3 & regs::IDR3_RIL != 0,
        sid_bits,
        cmdq_log2,
        evtq_log2,
        oas_bits,
        oas_enc,
    })
}

/// The STE.S2PS / VTCR.PS encoding of a physical address size.
pub const fn ps_encoding(bits: u8) -> Option<u8> {
    match bits {
        32 => Some(0),
        36 => Some(1),
        40 => Some(2),
        42 => Some(3),
        44 => Some(4),
        48 => Some(5),
        52 => Some(6),
        _ => None,
    }
}
