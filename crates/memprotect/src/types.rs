//! The vocabulary shared by the transitions and the executable spec.

/// Size of a page.
pub const PAGE_SIZE: u64 = 4096;
/// log2 of [`PAGE_SIZE`].
pub const PAGE_SHIFT: u32 = 12;
/// Physical addresses Warden accepts: below 2^48.
pub const PA_BITS: u32 = 48;

/// A page's state from one component's point of view (pKVM's encoding).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PageState {
    /// Owned and exclusively accessible by the component.
    Owned = 0,
    /// Owned and accessible, and also accessible by another component.
    SharedOwned = 1,
    /// Accessible but owned by another component.
    SharedBorrowed = 2,
    /// Not accessible by the component.
    NoPage = 3,
}

impl PageState {
    /// The state encoded in the two low bits of `bits`.
    pub const fn from_bits(bits: u8) -> PageState {
        match bits & 3 {
            0 => PageState::Owned,
            1 => PageState::SharedOwned,
            2 => PageState::SharedBorrowed,
            _ => PageState::NoPage,
        }
    }
}

/// Why a transition was refused. Every refusal leaves all state unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Error {
    /// `-EPERM`: a page is not in the state the transition needs, or not
    /// the kind of memory (RAM or MMIO) it needs.
    Perm,
    /// `-EINVAL`: a malformed argument (zero or overflowing count, address
    /// outside the physical address space).
    Inval,
    /// `-EBUSY`: a page is pinned (or a counter would overflow).
    Busy,
    /// `-ENOENT`: nothing mapped where something must be.
    NoEnt,
    /// `-ENOMEM`: no table page for the update.
    NoMem,
    /// `-E2BIG`: the mapping is larger than the range given.
    TooBig,
}

impl Error {
    /// The Linux errno (negative), as hypercalls return it.
    pub const fn errno(self) -> i64 {
        match self {
            Error::Perm => -1,
            Error::NoEnt => -2,
            Error::NoMem => -12,
            Error::Busy => -16,
            Error::Inval => -22,
            Error::TooBig => -7,
        }
    }
}

/// A range of physical RAM (from the device tree).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Region {
    /// First byte, page-aligned.
    pub base: u64,
    /// Size in bytes, page-aligned, non-zero.
    pub size: u64,
}

impl Region {
    /// One past the last byte.
    pub const fn end(&self) -> u64 {
        self.base + self.size
    }

    /// Whether `pa` lies in the region.
    pub const fn contains(&self, pa: u64) -> bool {
        self.base <= pa && pa < self.end()
    }
}

/// Owner ids recorded in host stage-2 annotations (0 is the host itself).
pub mod owner {
    /// The hypervisor.
    pub const HYP: u8 = 1;
    /// A guest (metadata: [`super::guest_meta`] of its handle and gfn).
    pub const GUEST: u8 = 2;
    /// In a guest stage-2: the host force-reclaimed this page; the guest's
    /// next access faults.
    pub const GUEST_POISONED: u8 = 0xff;
}

/// A guest's handle: its slot in the VM table, plus one (1..=[`MAX_VMS`]).
pub type Handle = u16;

/// How many guests can exist at once.
pub const MAX_VMS: usize = 8;

/// Pages in the one block size a host share with a guest may use (2 MiB).
pub const BLOCK_PAGES: u64 = 512;

/// The largest guest IPA size: the gfn must fit the annotation metadata
/// next to the 16-bit handle.
pub const GUEST_MAX_IPA_BITS: u8 = 47;

/// The smallest guest IPA size.
pub const GUEST_MIN_IPA_BITS: u8 = 32;

/// Host stage-2 annotation metadata recording that guest `handle` holds a
/// donated page at `gfn`: the handle in bits 15:0, the gfn above.
pub const fn guest_meta(handle: Handle, gfn: u64) -> u64 {
    handle as u64 | gfn << 16
}

/// The handle and gfn recorded by [`guest_meta`].
pub const fn guest_meta_decode(meta: u64) -> (Handle, u64) {
    ((meta & 0xffff) as Handle, meta >> 16)
}

/// What the host may do with a range after an ownership change: what the
/// IOMMU layer mirrors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HostAccess {
    /// Nothing: the range belongs to someone else now.
    None,
    /// RAM the host owns again: read, write, execute, cacheable.
    Mem,
    /// MMIO the host owns again: read, write, device memory.
    Mmio,
}

/// Told of every ownership change of the host's memory (not of shares),
/// under the host lock, before the transition returns.
pub trait OwnershipHook {
    /// `[base, base + size)` now gives the host `access`.
    fn host_ownership_changed(&mut self, base: u64, size: u64, access: HostAccess);
}

/// A hook that does nothing.
impl OwnershipHook for () {
    fn host_ownership_changed(&mut self, _: u64, _: u64, _: HostAccess) {}
}

/// Clears a page that held a guest's data before the host may see it again
/// (at EL2: zero it through the fixmap and clean it to the point of
/// coherency). Called under the host lock.
pub trait Poison {
    /// Clear the page at `pa`.
    fn poison(&mut self, pa: u64);
}

/// What handling a host stage-2 abort decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AbortOutcome {
    /// The host may access the address now (mapped, or another CPU had
    /// mapped it already): return to the host and retry.
    Handled,
    /// The address is not the host's: inject an abort into the host.
    Inject,
}
