//! The descriptor codec: named fields of VMSAv8-64 descriptors (4 KiB
//! granule), for EL2 stage 1 and for stage 2.
//!
//! Invalid descriptors (bit 0 clear) are free for software. Warden gives
//! them a type in bits 63:60, as pKVM 7.1 does: 0 is an empty entry, 1 the
//! LOCKED marker of a break-before-make in progress, 2 an ownership
//! annotation with an owner id in bits 59:52 and metadata in bits 51:1.

use crate::attrs::{Annotation, Attrs, MemType, Perms};
use crate::config::{Regime, LAST_LEVEL};
use crate::Error;

/// Bit 0: the descriptor is valid.
pub const VALID: u64 = 1 << 0;
/// Bit 1: table (levels 0-2) or page (level 3) rather than block.
pub const TABLE_OR_PAGE: u64 = 1 << 1;
/// Bits 47:12: output address (or next-level table address).
pub const OA_MASK: u64 = 0x0000_ffff_ffff_f000;
/// Bits 5:2: stage-2 MemAttr.
pub const S2_MEMATTR_MASK: u64 = 0xf << 2;
/// Bits 4:2: stage-1 AttrIndx.
pub const S1_ATTRINDX_MASK: u64 = 0x7 << 2;
/// Bit 6: stage-2 S2AP read.
pub const S2AP_R: u64 = 1 << 6;
/// Bit 7: stage-2 S2AP write.
pub const S2AP_W: u64 = 1 << 7;
/// Bit 6: stage-1 AP[1]; RES1 in the single-range EL2 regime.
pub const S1_AP1: u64 = 1 << 6;
/// Bit 7: stage-1 AP[2], read-only.
pub const S1_AP2_RO: u64 = 1 << 7;
/// Bits 9:8: shareability.
pub const SH_MASK: u64 = 0x3 << 8;
/// Inner shareable.
pub const SH_INNER: u64 = 0x3 << 8;
/// Bit 10: access flag.
pub const AF: u64 = 1 << 10;
/// Bit 54: XN (stage 1), XN[1] (stage 2: no execution at EL1 and EL0).
pub const XN: u64 = 1 << 54;
/// Bits 58:55: software bits.
pub const SW_MASK: u64 = 0xf << 55;
/// Shift of the software bits.
pub const SW_SHIFT: u32 = 55;
/// Bit 55 of a *table* descriptor (ignored by the hardware): some entry in
/// the subtree below may hold an ownership annotation. Set on the way down
/// by `annotate`, never cleared while the table lives, so that scans for
/// annotations (and wholesale unmaps) can skip subtrees without it.
pub const TABLE_MAY_ANNOTATE: u64 = 1 << 55;
/// Bits that a permission or access-flag change may touch without
/// break-before-make.
pub const PERM_MASK: u64 = S2AP_R | S2AP_W | XN | AF | SW_MASK;

const TYPE_SHIFT: u32 = 60;
const TYPE_LOCKED: u64 = 1;
const TYPE_ANNOTATION: u64 = 2;
const OWNER_SHIFT: u32 = 52;

/// The LOCKED marker written while a break-before-make is in progress.
pub const LOCKED: u64 = TYPE_LOCKED << TYPE_SHIFT;

/// MAIR_EL2 value the stage-1 encodings assume: index 0 Normal-WB
/// (inner/outer write-back, read/write-allocate), 1 Device-nGnRE,
/// 2 Normal-NC.
pub const MAIR_EL2: u64 = 0xff | (0x04 << 8) | (0x44 << 16);
const S1_IDX_NORMAL_WB: u64 = 0;
const S1_IDX_DEVICE: u64 = 1;
const S1_IDX_NORMAL_NC: u64 = 2;

// Stage-2 MemAttr encodings (bits 5:2), without and with FEAT_S2FWB.
const S2_DEVICE_NGNRE: u64 = 0b0001;
const S2_NORMAL_NC: u64 = 0b0101;
const S2_NORMAL_WB: u64 = 0b1111;
const S2_FWB_NORMAL_WB: u64 = 0b0110;
const S2_FWB_AS_S1: u64 = 0b0111;

/// A raw descriptor with named accessors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Desc(pub u64);

/// What a descriptor is, as the engine sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Zero: nothing mapped, nothing recorded.
    Empty,
    /// A break-before-make is in progress on this entry.
    Locked,
    /// An ownership annotation.
    Annotation(Annotation),
    /// Any other invalid value (never written by the engine).
    InvalidOther,
    /// A pointer to the next-level table.
    Table,
    /// A block or page mapping.
    Leaf,
}

impl Desc {
    /// The empty descriptor.
    pub const EMPTY: Desc = Desc(0);

    /// Classify the descriptor found at `level`.
    #[inline]
    pub fn kind(self, level: u8) -> Kind {
        let v = self.0;
        if v & VALID == 0 {
            return match v >> TYPE_SHIFT {
                _ if v == 0 => Kind::Empty,
                TYPE_LOCKED if v == LOCKED => Kind::Locked,
                TYPE_ANNOTATION => match self.annotation() {
                    Some(a) => Kind::Annotation(a),
                    None => Kind::InvalidOther,
                },
                _ => Kind::InvalidOther,
            };
        }
        if level == LAST_LEVEL {
            // Bits 1:0 = 0b01 at level 3 is reserved: the hardware treats it
            // as invalid, so the engine never writes it.
            if v & TABLE_OR_PAGE != 0 {
                Kind::Leaf
            } else {
                Kind::InvalidOther
            }
        } else if v & TABLE_OR_PAGE != 0 {
            Kind::Table
        } else if level == 0 {
            // No level-0 blocks with the 4 KiB granule (without LPA2).
            Kind::InvalidOther
        } else {
            Kind::Leaf
        }
    }

    /// For a table descriptor: whether its subtree may hold annotations.
    pub fn may_annotate(self) -> bool {
        self.0 & TABLE_MAY_ANNOTATE != 0
    }

    /// Whether bit 0 is set.
    pub fn is_valid(self) -> bool {
        self.0 & VALID != 0
    }

    /// Whether the entry counts towards its table page's refcount: every
    /// non-zero entry except the transient LOCKED marker.
    pub fn is_counted(self) -> bool {
        self.0 != 0 && self.0 != LOCKED
    }

    /// Output address (leaf) or next-level table address (table).
    #[inline]
    pub fn oa(self) -> u64 {
        self.0 & OA_MASK
    }

    /// A table descriptor pointing at `table_pa`.
    pub fn table(table_pa: u64) -> Desc {
        Desc((table_pa & OA_MASK) | TABLE_OR_PAGE | VALID)
    }

    /// An annotation descriptor; `None` if owner is 0 or meta too large.
    pub fn annotated(a: Annotation) -> Option<Desc> {
        if a.owner == 0 || a.meta > Annotation::META_MAX {
            return None;
        }
        Some(Desc(
            (TYPE_ANNOTATION << TYPE_SHIFT) | ((a.owner as u64) << OWNER_SHIFT) | (a.meta << 1),
        ))
    }

    /// The annotation this invalid descriptor records, if any.
    pub fn annotation(self) -> Option<Annotation> {
        let v = self.0;
        if v & VALID != 0 || v >> TYPE_SHIFT != TYPE_ANNOTATION {
            return None;
        }
        let owner = ((v >> OWNER_SHIFT) & 0xff) as u8;
        if owner == 0 {
            return None;
        }
        Some(Annotation {
            owner,
            meta: (v >> 1) & Annotation::META_MAX,
        })
    }

    /// A leaf (block or page) descriptor for `regime` at `level`.
    ///
    /// Refuses what the architecture or Warden's rules forbid: stage-1
    /// write+execute or no-read mappings, executable device memory, and
    /// "as stage 1" at stage 1.
    pub fn leaf(regime: &Regime, level: u8, oa: u64, attrs: Attrs) -> Result<Desc, Error> {
        let Attrs { perms, mem, sw } = attrs;
        if sw > 0xf || oa & !OA_MASK != 0 || (perms.x && mem == MemType::Device) {
            return Err(Error::InvalidAttrs);
        }
        let page = if level == LAST_LEVEL { TABLE_OR_PAGE } else { 0 };
        let xn = if perms.x { 0 } else { XN };
        let mut v = VALID | AF | SH_INNER | oa | ((sw as u64) << SW_SHIFT) | page | xn;
        match *regime {
            Regime::El2Stage1 { .. } => {
                if !perms.r || (perms.w && perms.x) {
                    return Err(Error::InvalidAttrs);
                }
                let idx = match mem {
                    MemType::NormalWb => S1_IDX_NORMAL_WB,
                    MemType::Device => S1_IDX_DEVICE,
                    MemType::NormalNc => S1_IDX_NORMAL_NC,
                    MemType::AsStage1 => return Err(Error::InvalidAttrs),
                };
                let ro = if perms.w { 0 } else { S1_AP2_RO };
                v |= (idx << 2) | S1_AP1 | ro;
            }
            Regime::Stage2 { fwb, .. } => {
                // Indexed by memory type, then FWB.
                const MEMATTR: [[u64; 2]; 4] = [
                    [S2_DEVICE_NGNRE, S2_DEVICE_NGNRE],
                    [S2_NORMAL_NC, S2_NORMAL_NC],
                    [S2_NORMAL_WB, S2_FWB_NORMAL_WB],
                    [S2_NORMAL_WB, S2_FWB_AS_S1],
                ];
                let memattr = MEMATTR[mem as usize][fwb as usize];
                v |= (memattr << 2) | ((perms.r as u64) << 6) | ((perms.w as u64) << 7);
            }
        }
        Ok(Desc(v))
    }

    /// Decode a leaf descriptor's attributes for `regime`. Stage-2 Normal-WB
    /// without FWB decodes as [`MemType::NormalWb`] (it is also how "as
    /// stage 1" is encoded there).
    pub fn attrs(self, regime: &Regime) -> Attrs {
        let v = self.0;
        let sw = ((v & SW_MASK) >> SW_SHIFT) as u8;
        let x = v & XN == 0;
        match *regime {
            Regime::El2Stage1 { .. } => {
                let mem = match (v & S1_ATTRINDX_MASK) >> 2 {
                    S1_IDX_DEVICE => MemType::Device,
                    S1_IDX_NORMAL_NC => MemType::NormalNc,
                    _ => MemType::NormalWb,
                };
                let perms = Perms::new(true, v & S1_AP2_RO == 0, x);
                Attrs { perms, mem, sw }
            }
            Regime::Stage2 { fwb, .. } => {
                let mem = match ((v & S2_MEMATTR_MASK) >> 2, fwb) {
                    (S2_NORMAL_NC, _) => MemType::NormalNc,
                    (S2_FWB_NORMAL_WB, true) | (S2_NORMAL_WB, false) => MemType::NormalWb,
                    (S2_FWB_AS_S1, true) => MemType::AsStage1,
                    _ => MemType::Device,
                };
                let perms = Perms::new(v & S2AP_R != 0, v & S2AP_W != 0, x);
                Attrs { perms, mem, sw }
            }
        }
    }

    /// The access flag.
    pub fn af(self) -> bool {
        self.0 & AF != 0
    }

    /// Whether replacing `self` by `new` (both valid leaves) changes only
    /// permissions, the access flag or software bits, so that no
    /// break-before-make is needed.
    pub fn only_perms_differ(self, new: Desc) -> bool {
        (self.0 ^ new.0) & !PERM_MASK == 0
    }

    /// The stage-2 permission bits set here, as a mask of descriptor bits.
    pub(crate) fn perm_bits(regime: &Regime, perms: Perms) -> (u64, u64) {
        // (bits to set, bits to clear) to grant `perms` on top of a leaf.
        match regime {
            Regime::Stage2 { .. } => {
                let mut set = 0;
                let mut clear = 0;
                if perms.r {
                    set |= S2AP_R;
                }
                if perms.w {
                    set |= S2AP_W;
                }
                if perms.x {
                    clear |= XN;
                }
                (set, clear)
            }
            Regime::El2Stage1 { .. } => {
                let mut clear = 0;
                if perms.w {
                    clear |= S1_AP2_RO;
                }
                if perms.x {
                    clear |= XN;
                }
                (0, clear)
            }
        }
    }
}
