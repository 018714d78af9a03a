//! An independent VMSAv8-64 translation table walk, 4 KiB granule.
//!
//! Written from the Arm ARM's description of the translation process (the
//! AArch64 "VMSAv8-64" chapter and its pseudocode), not from Warden's
//! engine. Only the two regimes Warden uses are modelled: the nVHE EL2
//! stage 1 (one VA range, TTBR0_EL2) and stage 2 (VTTBR_EL2/VTCR_EL2, or an
//! SMMU STE using the same format). 48-bit output addresses, no FEAT_LPA2,
//! no 16/64 KiB granules, no hardware Access flag or dirty-state updates.

use crate::mem::DescSource;

/// Output-address bits available without FEAT_LPA/LPA2 (PARange 48 bits).
const OA_BITS: u32 = 48;
/// Bits \[47:12\] of a table descriptor hold the next-level table address.
const ADDR_MASK_4K: u64 = ((1u64 << OA_BITS) - 1) & !0xfff;
/// Descriptor bits \[51:48\]: with a 48-bit output size and no LPA2 these must
/// be zero; if hardware sees an output address beyond the configured size it
/// reports an Address size fault, which is how this model treats them.
const OA_HIGH_MASK: u64 = 0xf << 48;

/// Level `level` resolves input-address bits `[shift + 8 : shift]`.
pub fn level_shift(level: u8) -> u32 {
    debug_assert!(level <= 3);
    12 + 9 * (3 - u32::from(level))
}

/// Size of the region one descriptor at `level` maps (4K/2M/1G/512G).
pub fn level_size(level: u8) -> u64 {
    1u64 << level_shift(level)
}

/// A translation regime, i.e. the register configuration of a walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Regime {
    /// EL2 stage 1, single VA range (nVHE): TTBR0_EL2, `TCR_EL2.T0SZ = 64 -
    /// va_bits`, 4 KiB granule, `HPD = 0` (hierarchical permissions apply);
    /// `mair` is the value of MAIR_EL2.
    El2Stage1 {
        /// Virtual-address bits (25..=48).
        va_bits: u8,
        /// MAIR_EL2.
        mair: u64,
    },
    /// Stage 2 (VTTBR_EL2/VTCR_EL2, or an SMMU STE): `T0SZ = 64 - ipa_bits`,
    /// start level as encoded by SL0, `fwb` = HCR_EL2.FWB (FEAT_S2FWB).
    Stage2 {
        /// IPA bits (25..=48).
        ipa_bits: u8,
        /// Initial lookup level (0..=2 for 4 KiB without FEAT_TTST).
        start_level: u8,
        /// Whether FEAT_S2FWB is enabled.
        fwb: bool,
    },
}

/// Why a [`Regime`] is not a configuration hardware would accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegimeError {
    /// T0SZ out of range: input size must be 25..=48 bits for 4 KiB without
    /// FEAT_TTST / FEAT_LPA2.
    InputSize(u8),
    /// Stage-2 start level not encodable by SL0 for 4 KiB (only 0..=2).
    StartLevel(u8),
    /// The start level cannot resolve this IPA size: it would need more than
    /// 16 concatenated root tables, or the initial level would decode no bit.
    InconsistentStartLevel {
        /// Configured IPA bits.
        ipa_bits: u8,
        /// Configured start level.
        start_level: u8,
    },
}

impl Regime {
    /// Check that the configuration is one hardware accepts.
    ///
    /// For stage 2 this follows the Arm ARM's rule for an inconsistent
    /// SL0/T0SZ pair: the initial level must decode at least one input bit,
    /// and at most 9 + 4 bits (a full table plus up to 2^4 = 16 concatenated
    /// tables). An inconsistent pair makes hardware report a level 0
    /// Translation fault, which [`walk`] does too.
    pub fn validate(&self) -> Result<(), RegimeError> {
        match *self {
            Regime::El2Stage1 { va_bits, .. } => {
                if !(25..=48).contains(&va_bits) {
                    return Err(RegimeError::InputSize(va_bits));
                }
                Ok(())
            }
            Regime::Stage2 {
                ipa_bits, start_level, ..
            } => {
                if !(25..=48).contains(&ipa_bits) {
                    return Err(RegimeError::InputSize(ipa_bits));
                }
                if start_level > 2 {
                    return Err(RegimeError::StartLevel(start_level));
                }
                let extra = i64::from(ipa_bits) - i64::from(level_shift(start_level));
                if !(1..=13).contains(&extra) {
                    return Err(RegimeError::InconsistentStartLevel { ipa_bits, start_level });
                }
                Ok(())
            }
        }
    }

    /// Input-address size in bits.
    pub fn ia_bits(&self) -> u8 {
        match *self {
            Regime::El2Stage1 { va_bits, .. } => va_bits,
            Regime::Stage2 { ipa_bits, .. } => ipa_bits,
        }
    }

    /// Initial lookup level. Stage 1 has no SL0 field: the walk starts at the
    /// level that decodes the most significant input-address bit.
    pub fn start_level(&self) -> u8 {
        match *self {
            Regime::El2Stage1 { va_bits, .. } => (0..=3).find(|&l| u32::from(va_bits) > level_shift(l)).unwrap_or(3),
            Regime::Stage2 { start_level, .. } => start_level,
        }
    }

    /// Number of descriptors in the (possibly concatenated, possibly partial)
    /// root table.
    pub fn root_entries(&self) -> u64 {
        let bits = u32::from(self.ia_bits()).saturating_sub(level_shift(self.start_level()));
        1u64 << bits.min(13)
    }

    /// Number of 4 KiB pages of the root table: more than one only for a
    /// concatenated stage-2 root (the root must then be aligned to its total
    /// size).
    pub fn root_pages(&self) -> usize {
        self.root_entries().div_ceil(512) as usize
    }

    /// Whether this is a stage-2 regime.
    pub fn is_stage2(&self) -> bool {
        matches!(self, Regime::Stage2 { .. })
    }
}

/// Memory type of a translation, as reported by the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MemType {
    /// Device-nGnRnE.
    DeviceNGnRnE,
    /// Device-nGnRE.
    DeviceNGnRE,
    /// Device-nGRE.
    DeviceNGRE,
    /// Device-GRE.
    DeviceGRE,
    /// Normal, non-cacheable (the weaker of inner/outer).
    NormalNc,
    /// Normal, write-through (the weaker of inner/outer).
    NormalWt,
    /// Normal, write-back.
    NormalWb,
    /// FWB: "the final attributes are stage 1's" (MemAttr 0b0111 with FWB).
    AsStage1,
    /// Reserved or unmodelled encoding: the MAIR byte (stage 1) or the
    /// MemAttr nibble (stage 2).
    Other(u8),
}

/// Architectural fault classes the model can report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultKind {
    /// Invalid descriptor, reserved encoding, or input address out of range.
    Translation,
    /// Output address (or table address) beyond the 48-bit output size.
    AddressSize,
    /// The leaf's AF is 0 (no hardware Access flag management).
    AccessFlag,
    /// The access is not permitted by the leaf's permissions.
    Permission,
}

/// A fault: its class and the lookup level that reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fault {
    /// Lookup level of the faulting descriptor (0 for input-range faults).
    pub level: u8,
    /// Class of fault.
    pub kind: FaultKind,
}

/// The result of a successful walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Translation {
    /// Output address of the input address (not of the block base).
    pub oa: u64,
    /// Level of the leaf descriptor.
    pub level: u8,
    /// Size of the region the leaf maps (4K / 2M / 1G).
    pub block_size: u64,
    /// Data reads permitted.
    pub read: bool,
    /// Data writes permitted.
    pub write: bool,
    /// Instruction fetch permitted (stage 2: the EL1 view of XN).
    pub exec: bool,
    /// Memory type.
    pub mem: MemType,
    /// SH\[1:0\], raw.
    pub shareability: u8,
    /// Access flag.
    pub af: bool,
    /// Software bits \[58:55\].
    pub sw: u8,
    /// Raw leaf descriptor.
    pub desc: u64,
}

/// Kind of access for [`check_access`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// Data read.
    Read,
    /// Data write.
    Write,
    /// Instruction fetch.
    Exec,
}

/// What a descriptor is at a given level, as the walk interprets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DescKind {
    /// Bit 0 clear, or a reserved encoding (bits\[1:0\] = 0b01 at level 0 or
    /// level 3): a Translation fault, never cached by a TLB.
    Invalid,
    /// Table descriptor (bits\[1:0\] = 0b11 at levels 0..=2).
    Table,
    /// Block (levels 1, 2) or page (level 3) descriptor.
    Leaf,
}

/// Classify `desc` found at `level` (4 KiB granule).
///
/// Bit 0 is the valid bit. At levels 0..=2, bit 1 set means "table"; clear
/// means "block", but the 4 KiB granule has no level-0 block, so that
/// encoding faults. At level 3, bits\[1:0\] = 0b11 is a page and 0b01 is
/// reserved, which also faults.
pub fn desc_kind(desc: u64, level: u8) -> DescKind {
    match (desc & 3, level) {
        (0 | 2, _) => DescKind::Invalid,
        (3, 0..=2) => DescKind::Table,
        (3, _) => DescKind::Leaf,
        (_, 1 | 2) => DescKind::Leaf,
        _ => DescKind::Invalid,
    }
}

/// Output-address field of a leaf at `level`: bits \[47:30\] for a level-1
/// block, \[47:21\] for a level-2 block, \[47:12\] for a page.
pub fn leaf_oa(desc: u64, level: u8) -> u64 {
    desc & ADDR_MASK_4K & !(level_size(level) - 1)
}

/// Next-level table address of a table descriptor: bits \[47:12\].
pub fn table_addr(desc: u64) -> u64 {
    desc & ADDR_MASK_4K
}

fn fault(level: u8, kind: FaultKind) -> Fault {
    Fault { level, kind }
}

/// Walk the tables rooted at `root` for input address `ia`.
///
/// Faults are reported as the Arm ARM prescribes for a walk: an inconsistent
/// configuration or an input address at or beyond 2^ia_bits gives a level-0
/// Translation fault; an invalid or reserved descriptor a Translation fault at
/// its level; descriptor output-address bits above bit 47 an Address size
/// fault. The Access flag and permissions are not checked here (a walk that
/// returns `Ok` may still fault on access): see [`check_access`].
///
/// A descriptor read outside the memory `mem` models panics ([`crate::PhysMem`]
/// treats it as a bug in the tables under test rather than an external abort).
pub fn walk(mem: &impl DescSource, root: u64, regime: &Regime, ia: u64) -> Result<Translation, Fault> {
    walk_from(mem, root, ADDR_MASK_4K, regime, ia)
}

/// Like [`walk`], but the root table is located the way an SMMU STE's
/// `S2TTB` (or a TTBR's BADDR) locates it: aligned to the root table's own
/// size, with a minimum of 64 bytes (a table of fewer than eight entries is
/// 64-byte aligned), instead of to 4 KiB. This matters only for a root table
/// smaller than a page (few IPA bits above the start level's shift) or a
/// concatenated root given with low address bits set: the address bits below
/// the alignment are treated as zero.
pub fn walk_root_aligned(mem: &impl DescSource, root: u64, regime: &Regime, ia: u64) -> Result<Translation, Fault> {
    if regime.validate().is_err() {
        return Err(fault(0, FaultKind::Translation));
    }
    let align = (regime.root_entries() * 8).max(64);
    walk_from(mem, root, ((1u64 << OA_BITS) - 1) & !(align - 1), regime, ia)
}

fn walk_from(mem: &impl DescSource, root: u64, root_mask: u64, regime: &Regime, ia: u64) -> Result<Translation, Fault> {
    if regime.validate().is_err() {
        return Err(fault(0, FaultKind::Translation));
    }
    let ia_bits = u32::from(regime.ia_bits());
    // There is only one VA range at nVHE EL2 (no TTBR1) and stage 2 has no
    // upper range either: any address bit at or above the input size faults.
    if ia >> ia_bits != 0 {
        return Err(fault(0, FaultKind::Translation));
    }
    if root & OA_HIGH_MASK != 0 {
        return Err(fault(regime.start_level(), FaultKind::AddressSize));
    }

    let mut level = regime.start_level();
    let mut table = root & root_mask;
    // The initial lookup indexes one (possibly concatenated) table with all
    // input bits above the level's shift; later levels take 9 bits each.
    let mut index = ia >> level_shift(level);
    // Hierarchical permission limits from stage-1 table descriptors.
    let mut no_write = false;
    let mut no_exec = false;
    loop {
        let desc = mem.read_desc(table + index * 8);
        match desc_kind(desc, level) {
            DescKind::Invalid => return Err(fault(level, FaultKind::Translation)),
            DescKind::Table => {
                if desc & OA_HIGH_MASK != 0 {
                    return Err(fault(level, FaultKind::AddressSize));
                }
                if !regime.is_stage2() {
                    // With HPD = 0, APTable[1] (bit 62) removes write
                    // permission and XNTable (bit 60) execute permission for
                    // everything below. APTable[0] and PXNTable are not
                    // meaningful in a single-EL regime. Stage-2 table
                    // descriptors carry no attributes.
                    no_write |= desc & (1 << 62) != 0;
                    no_exec |= desc & (1 << 60) != 0;
                }
                table = table_addr(desc);
                level += 1;
                index = (ia >> level_shift(level)) & 511;
            }
            DescKind::Leaf => {
                if desc & OA_HIGH_MASK != 0 {
                    return Err(fault(level, FaultKind::AddressSize));
                }
                let block_size = level_size(level);
                let oa = leaf_oa(desc, level) | (ia & (block_size - 1));
                let (read, mut write, mut exec, mem_type) = match *regime {
                    Regime::El2Stage1 { mair, .. } => {
                        let attr_idx = (desc >> 2) & 7;
                        let mair_byte = (mair >> (attr_idx * 8)) as u8;
                        // AP[2] (bit 7) set = read-only; data reads are always
                        // allowed in a single-EL regime. XN is bit 54.
                        (
                            true,
                            desc & (1 << 7) == 0,
                            desc & (1 << 54) == 0,
                            decode_mair(mair_byte),
                        )
                    }
                    Regime::Stage2 { fwb, .. } => {
                        let memattr = ((desc >> 2) & 0xf) as u8;
                        // S2AP: bit 6 grants reads, bit 7 writes. XN[1:0]
                        // (bits 54:53, FEAT_XNX) distinguish EL0/EL1 exec;
                        // the model reports the EL1 view conservatively:
                        // executable only when both bits are clear.
                        (
                            desc & (1 << 6) != 0,
                            desc & (1 << 7) != 0,
                            desc & (3 << 53) == 0,
                            decode_s2_memattr(memattr, fwb),
                        )
                    }
                };
                write &= !no_write;
                exec &= !no_exec;
                return Ok(Translation {
                    oa,
                    level,
                    block_size,
                    read,
                    write,
                    exec,
                    mem: mem_type,
                    shareability: ((desc >> 8) & 3) as u8,
                    af: desc & (1 << 10) != 0,
                    sw: ((desc >> 55) & 0xf) as u8,
                    desc,
                });
            }
        }
    }
}

/// Apply the Access flag and permission checks hardware would make for
/// `access` on a translation (no hardware Access flag update). The Access
/// flag fault takes priority over a Permission fault, as for a real walk.
pub fn check_access(t: &Translation, access: Access) -> Result<(), Fault> {
    if !t.af {
        return Err(fault(t.level, FaultKind::AccessFlag));
    }
    let allowed = match access {
        Access::Read => t.read,
        Access::Write => t.write,
        Access::Exec => t.exec,
    };
    if allowed {
        Ok(())
    } else {
        Err(fault(t.level, FaultKind::Permission))
    }
}

/// Cacheability class of one MAIR nibble, or a stage-2 inner/outer field,
/// ordered from weakest to strongest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Cache {
    Nc,
    Wt,
    Wb,
}

impl Cache {
    fn mem_type(self) -> MemType {
        match self {
            Cache::Nc => MemType::NormalNc,
            Cache::Wt => MemType::NormalWt,
            Cache::Wb => MemType::NormalWb,
        }
    }
}

/// One MAIR Normal-memory nibble: 0b0100 is non-cacheable; 0b00RW (RW != 0)
/// and 0b10RW are write-through (transient / non-transient); 0b01RW (RW != 0)
/// and 0b11RW are write-back. 0b0000 is not a Normal encoding.
fn mair_nibble(n: u8) -> Option<Cache> {
    match n {
        0b0100 => Some(Cache::Nc),
        0b0000 => None,
        0b0001..=0b0011 | 0b1000..=0b1011 => Some(Cache::Wt),
        _ => Some(Cache::Wb),
    }
}

/// Decode one MAIR_ELx attribute byte.
///
/// Upper nibble 0 means Device, with the type in bits \[3:2\] (bits \[1:0\] must
/// be 0). Otherwise the byte is Normal memory with outer policy in \[7:4\] and
/// inner in \[3:0\]; a byte whose inner and outer nibbles are of one class maps
/// to that class, a mixed byte is reported as `Other` so that tests notice
/// it. The FEAT_XS / FEAT_MTE forms with inner nibble 0 (0x40 NC, 0xa0 WT,
/// 0xf0 tagged WB) map to their class.
pub fn decode_mair(byte: u8) -> MemType {
    let (outer, inner) = (byte >> 4, byte & 0xf);
    if outer == 0 {
        return match inner {
            0x0 => MemType::DeviceNGnRnE,
            0x4 => MemType::DeviceNGnRE,
            0x8 => MemType::DeviceNGRE,
            0xc => MemType::DeviceGRE,
            _ => MemType::Other(byte),
        };
    }
    match byte {
        0x40 => return MemType::NormalNc,
        0xa0 => return MemType::NormalWt,
        0xf0 => return MemType::NormalWb,
        _ => {}
    }
    match (mair_nibble(outer), mair_nibble(inner)) {
        (Some(o), Some(i)) if o == i => o.mem_type(),
        _ => MemType::Other(byte),
    }
}

/// Decode a stage-2 MemAttr\[3:0\] (descriptor bits \[5:2\]).
///
/// Without FWB: MemAttr\[3:2\] = 0b00 is Device with the type in \[1:0\];
/// otherwise Normal with outer = \[3:2\] and inner = \[1:0\] (0b01 NC, 0b10 WT,
/// 0b11 WB; inner 0b00 with a Normal outer is reserved), reported as the
/// weaker of the two (stage 2 only ever weakens the stage-1 attribute).
/// With FWB (FEAT_S2FWB) stage 2 can force the final type: MemAttr\[2\] = 0
/// is Device with type \[1:0\]; MemAttr\[2\] = 1 is 0b01 Normal NC, 0b10 Normal
/// WB, 0b11 "use stage 1's attributes", 0b00 reserved. MemAttr\[3\] has no
/// defined meaning with FWB in this model, so encodings setting it are
/// reported as `Other`.
pub fn decode_s2_memattr(memattr: u8, fwb: bool) -> MemType {
    let memattr = memattr & 0xf;
    let device = |t: u8| match t & 3 {
        0 => MemType::DeviceNGnRnE,
        1 => MemType::DeviceNGnRE,
        2 => MemType::DeviceNGRE,
        _ => MemType::DeviceGRE,
    };
    if fwb {
        if memattr & 0b1000 != 0 {
            return MemType::Other(memattr);
        }
        if memattr & 0b100 == 0 {
            return device(memattr);
        }
        return match memattr & 3 {
            0b01 => MemType::NormalNc,
            0b10 => MemType::NormalWb,
            0b11 => MemType::AsStage1,
            _ => MemType::Other(memattr),
        };
    }
    let (outer, inner) = (memattr >> 2, memattr & 3);
    if outer == 0 {
        return device(inner);
    }
    let class = |f: u8| match f {
        1 => Some(Cache::Nc),
        2 => Some(Cache::Wt),
        3 => Some(Cache::Wb),
        _ => None,
    };
    match (class(outer), class(inner)) {
        (Some(o), Some(i)) => o.min(i).mem_type(),
        _ => MemType::Other(memattr),
    }
}
