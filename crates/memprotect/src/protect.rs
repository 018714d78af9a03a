//! The ownership state of the machine: the RAM map with its metadata, the
//! host component (its stage-2, the ownership hook and page poisoning), the
//! hyp component (its stage-1) and the guests (a fixed table of slots), each
//! behind its own lock.

use lock_api::{Mutex, MutexGuard, RawMutex};
use warden_pgtable::{Desc, MmOps, PageTable, TlbOps};

use crate::guest::Guest;
use crate::ram::{PfnRange, RamMap};
use crate::types::{Error, OwnershipHook, PageState, Poison, MAX_VMS, PAGE_SHIFT, PA_BITS};

/// What the platform provides: the lock type, table memory and TLB
/// maintenance for each table, and the ownership hook.
pub trait Platform {
    /// The raw lock behind each component (a ticket lock at EL2, a
    /// std-backed or spin lock in tests).
    type Lock: RawMutex;
    /// Table pages of the host stage-2 (the host's pool).
    type HostMm: MmOps;
    /// TLB maintenance for the host stage-2 (VMID 0).
    type HostTlb: TlbOps;
    /// Table pages of the hypervisor's stage-1.
    type HypMm: MmOps;
    /// TLB maintenance for the hypervisor's stage-1.
    type HypTlb: TlbOps;
    /// Told of every change of the host's ownership.
    type Hook: OwnershipHook;
    /// Table pages of a guest stage-2 (the guest's pool).
    type GuestMm: MmOps;
    /// TLB maintenance for a guest stage-2 (the guest's VMID).
    type GuestTlb: TlbOps;
    /// Clears pages a guest owned before the host gets them back.
    type Poison: Poison;
}

/// The host component: its stage-2 (an identity map, filled lazily) and
/// the hook that mirrors ownership changes (the IOMMU layer).
pub struct Host<P: Platform> {
    /// The host stage-2.
    pub s2: PageTable<P::HostMm, P::HostTlb>,
    /// The ownership-change hook.
    pub hook: P::Hook,
    /// Clears guest pages before the host gets them back.
    pub poison: P::Poison,
    /// How many times MMIO mappings were recycled to free table pages.
    pub recycles: u64,
}

/// The hypervisor component: its stage-1 (Warden's EL2 identity map).
pub struct Hyp<P: Platform> {
    /// The EL2 stage-1.
    pub s1: PageTable<P::HypMm, P::HypTlb>,
}

/// Page ownership for the whole machine.
pub struct MemProtect<'m, P: Platform> {
    pub(crate) ram: RamMap<'m>,
    pub(crate) pa_bits: u32,
    pub(crate) host: Mutex<P::Lock, Host<P>>,
    pub(crate) hyp: Mutex<P::Lock, Hyp<P>>,
    /// Guest slots: handle `h` lives in `vms[h - 1]`. Membership changes
    /// only under the host lock.
    pub(crate) vms: [Mutex<P::Lock, Option<Guest<P>>>; MAX_VMS],
}

/// The host lock, held.
pub type HostGuard<'a, P> = MutexGuard<'a, <P as Platform>::Lock, Host<P>>;
/// The hyp lock, held.
pub type HypGuard<'a, P> = MutexGuard<'a, <P as Platform>::Lock, Hyp<P>>;
/// A guest slot's lock, held.
pub type SlotGuard<'a, P> = MutexGuard<'a, <P as Platform>::Lock, Option<Guest<P>>>;

impl<'m, P: Platform> MemProtect<'m, P> {
    /// Take over `ram` (with its metadata), the host stage-2, the EL2
    /// stage-1, the hook and the poisoner. The host stage-2 must be an identity stage-2
    /// covering the physical address space (`ipa_bits` = 48 or the CPU's
    /// PA size), empty: the host maps lazily through [`Self::host_abort`].
    pub fn new(
        ram: RamMap<'m>,
        host_s2: PageTable<P::HostMm, P::HostTlb>,
        hyp_s1: PageTable<P::HypMm, P::HypTlb>,
        hook: P::Hook,
        poison: P::Poison,
    ) -> Self {
        let pa_bits = (host_s2.geometry().ia_bits as u32).min(PA_BITS);
        MemProtect {
            ram,
            pa_bits,
            host: Mutex::new(Host {
                s2: host_s2,
                hook,
                poison,
                recycles: 0,
            }),
            hyp: Mutex::new(Hyp { s1: hyp_s1 }),
            vms: core::array::from_fn(|_| Mutex::new(None)),
        }
    }

    /// The RAM map.
    pub fn ram(&self) -> &RamMap<'m> {
        &self.ram
    }

    /// Width of the physical address space Warden manages.
    pub fn pa_bits(&self) -> u32 {
        self.pa_bits
    }

    /// Validate a range of pages (`Inval` if empty, overflowing, or past
    /// the physical address space).
    pub fn range(&self, pfn: u64, nr: u64) -> Result<PfnRange, Error> {
        PfnRange::new(pfn, nr, self.pa_bits)
    }

    /// Lock the host component.
    pub fn lock_host(&self) -> HostGuard<'_, P> {
        self.host.lock()
    }

    /// Lock the hyp component. Where both are needed, the host lock comes
    /// first ([`Self::lock_host`], then this).
    pub fn lock_hyp(&self) -> HypGuard<'_, P> {
        self.hyp.lock()
    }

    /// The host's state of RAM page `pfn` (`None` if not RAM).
    pub fn host_state(&self, pfn: u64) -> Option<PageState> {
        self.ram.meta(pfn).map(|m| m.host())
    }

    /// The hypervisor's state of RAM page `pfn` (`None` if not RAM).
    pub fn hyp_state(&self, pfn: u64) -> Option<PageState> {
        self.ram.meta(pfn).map(|m| m.hyp())
    }

    /// How many times RAM page `pfn` is pinned (`None` if not RAM).
    pub fn pins(&self, pfn: u64) -> Option<u16> {
        self.ram.meta(pfn).map(|m| m.pins())
    }

    /// The host stage-2 entry for page `pfn` and its level (for tests and
    /// diagnostics).
    pub fn host_s2_entry(&self, pfn: u64) -> Option<(Desc, u8)> {
        self.host.lock().s2.get_leaf(pfn << PAGE_SHIFT).ok()
    }

    /// Whether page `pfn` is mapped in the EL2 stage-1.
    pub fn hyp_mapped(&self, pfn: u64) -> bool {
        self.hyp
            .lock()
            .s1
            .get_leaf(pfn << PAGE_SHIFT)
            .is_ok_and(|(d, _)| d.is_valid())
    }

    /// Run `f` on the host stage-2 (tests, diagnostics, the IOMMU snapshot).
    pub fn with_host<R>(&self, f: impl FnOnce(&mut Host<P>) -> R) -> R {
        f(&mut self.host.lock())
    }

    /// Run `f` on the EL2 stage-1.
    pub fn with_hyp<R>(&self, f: impl FnOnce(&mut Hyp<P>) -> R) -> R {
        f(&mut self.hyp.lock())
    }
}
