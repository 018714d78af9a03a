//! What a mapping grants: permissions, memory type and software bits.

/// Access permissions of a mapping.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Perms {
    /// Readable.
    pub r: bool,
    /// Writable.
    pub w: bool,
    /// Executable.
    pub x: bool,
}

impl Perms {
    /// No access.
    pub const NONE: Perms = Perms::new(false, false, false);
    /// Read-only.
    pub const R: Perms = Perms::new(true, false, false);
    /// Read and write.
    pub const RW: Perms = Perms::new(true, true, false);
    /// Read and execute.
    pub const RX: Perms = Perms::new(true, false, true);
    /// Read, write and execute.
    pub const RWX: Perms = Perms::new(true, true, true);

    /// Permissions from the three flags.
    pub const fn new(r: bool, w: bool, x: bool) -> Self {
        Perms { r, w, x }
    }

    /// The union of two permission sets.
    pub const fn union(self, other: Perms) -> Perms {
        Perms::new(self.r | other.r, self.w | other.w, self.x | other.x)
    }

    /// Whether every permission in `other` is also in `self`.
    pub const fn contains(self, other: Perms) -> bool {
        (self.r || !other.r) && (self.w || !other.w) && (self.x || !other.x)
    }
}

/// Memory type of a mapping. Stage 1 picks it through MAIR_EL2 (see
/// [`crate::desc::MAIR_EL2`]); stage 2 encodes it in MemAttr, with or
/// without FEAT_S2FWB.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MemType {
    /// Device-nGnRE: MMIO.
    Device = 0,
    /// Normal, non-cacheable.
    NormalNc = 1,
    /// Normal, inner and outer write-back cacheable.
    NormalWb = 2,
    /// Stage 2 only: the final attributes are those of stage 1. With FWB
    /// this is its own encoding; without FWB it is Normal-WB, the least
    /// restrictive stage-2 type, so that stage 1 wins the combination.
    /// (The discriminants index the stage-2 encoding table in `desc`.)
    AsStage1 = 3,
}

/// Everything a leaf mapping carries besides its output address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Attrs {
    /// Access permissions.
    pub perms: Perms,
    /// Memory type.
    pub mem: MemType,
    /// Software bits 58:55 (4 bits), free for the owner of the table.
    pub sw: u8,
}

impl Attrs {
    /// Attributes with the given permissions and memory type, no software bits.
    pub const fn new(perms: Perms, mem: MemType) -> Self {
        Attrs { perms, mem, sw: 0 }
    }
}

/// An ownership annotation: an invalid descriptor that records that the
/// page belongs to someone other than the table's owner (whose id is 0).
/// Generic unmap refuses to clear it; only an ownership transition may.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Annotation {
    /// Owner id, 1..=255 (0 is the table's own owner and cannot be recorded).
    pub owner: u8,
    /// Owner-defined metadata (e.g. a guest handle and gfn), below 2^51.
    pub meta: u64,
}

impl Annotation {
    /// Largest metadata value an annotation can hold.
    pub const META_MAX: u64 = (1 << 51) - 1;
}
