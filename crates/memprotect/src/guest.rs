//! Guests: their stage-2 tables and every transition between the host and
//! a guest, each split into a check and a commit like the host/hyp ones.
//!
//! A guest lives in one of [`MAX_VMS`] slots, each behind its own lock,
//! taken after the host lock (and after the hyp lock where both are
//! needed). Its pages' states live in the software bits of its stage-2
//! leaves; the host's side lives in the per-page metadata (`guest_shares`
//! counts np-guest leaves of a page) and, for donated pages, in a host
//! stage-2 annotation naming the guest and the gfn. The checks and their
//! order are those of `docs/memprotect.md`, section "Guests".

use core::marker::PhantomData;

use lock_api::{MappedMutexGuard, Mutex, MutexGuard};
use warden_pgtable::config::level_size;
use warden_pgtable::{
    Annotation, Attrs, Barrier, Ctx, Desc, Error as PgError, Kind, MapPolicy, MemType, MmOps, PageTable, Perms, Regime,
    Scope, TlbOps, Tlbi, WalkFlags,
};

use crate::host::{tables_needed, HOST_MEM};
use crate::protect::{HostGuard, HypGuard, MemProtect, Platform};
use crate::ram::{PageMeta, PfnRange};
use crate::transition::{checked_step, GIVE_BACK};
use crate::types::{
    guest_meta, guest_meta_decode, owner, Error, Handle, HostAccess, OwnershipHook, PageState, Poison, BLOCK_PAGES,
    GUEST_MAX_IPA_BITS, GUEST_MIN_IPA_BITS, MAX_VMS, PAGE_SHIFT, PAGE_SIZE,
};

/// The guest stage-2 entry left where the host force-reclaimed a page: the
/// guest's next access faults instead of reaching whatever the page holds
/// now.
pub const GUEST_POISONED: Annotation = Annotation {
    owner: owner::GUEST_POISONED,
    meta: 0,
};

/// One guest (VM).
pub struct Guest<P: Platform> {
    /// Its stage-2 (IPA to PA), with its own VMID.
    pub s2: PageTable<P::GuestMm, P::GuestTlb>,
    /// A protected guest gets memory by donation; a non-protected one by
    /// host shares.
    pub protected: bool,
    /// Teardown has started: only reclaim, finalize and force-reclaim see
    /// the guest.
    pub dying: bool,
    /// The VM metadata pages the host donated at creation.
    pub meta: PfnRange,
}

/// A guest slot's lock, held, with a guest in it.
pub type GuestGuard<'a, P> = MappedMutexGuard<'a, <P as Platform>::Lock, Guest<P>>;

/// A valid leaf of a guest stage-2, or the one a transition will create.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Leaf {
    /// First IPA it covers.
    pub ia: u64,
    /// Bytes it covers (4 KiB or 2 MiB).
    pub size: u64,
    /// First physical address.
    pub pa: u64,
    /// The guest's state of its pages.
    pub state: PageState,
}

impl Leaf {
    /// The physical pages of the leaf.
    pub fn pages(&self) -> PfnRange {
        PfnRange {
            pfn: self.pa >> PAGE_SHIFT,
            nr: self.size >> PAGE_SHIFT,
        }
    }
}

/// The host shares a page or a 2 MiB block with a non-protected guest.
pub struct ShareGuest;
/// The host takes back a page or block it shared with a guest.
pub struct UnshareGuest;
/// The host grants more permissions on a leaf it shared.
pub struct RelaxGuest;
/// The host removes write permission from a leaf it shared.
pub struct WrprotectGuest;
/// The host reads (and maybe clears) a shared leaf's access flag.
pub struct YoungGuest;
/// The host sets a shared leaf's access flag.
pub struct MkyoungGuest;
/// The host gives a page to a protected guest.
pub struct DonateGuest;
/// A protected guest shares one of its pages with the host.
pub struct GuestShareHost;
/// A protected guest takes back a page it shared with the host.
pub struct GuestUnshareHost;
/// The host takes back a page of a dying guest.
pub struct ReclaimGuest;
/// The host takes back a page of a live guest, poisoning the guest's entry.
pub struct ForceReclaim;

/// Proof that guest transition `K` passed every check, holding the locks
/// it was checked under (host, then the guest). Only `commit` consumes it.
#[must_use = "a checked transition does nothing until committed"]
pub struct GuestChecked<'a, 'm, P: Platform, K> {
    mp: &'a MemProtect<'m, P>,
    host: HostGuard<'a, P>,
    guest: GuestGuard<'a, P>,
    handle: Handle,
    leaf: Leaf,
    prot: Perms,
    mkold: bool,
    kind: PhantomData<K>,
}

impl<P: Platform, K> GuestChecked<'_, '_, P, K> {
    /// The leaf the transition acts on (or creates).
    pub fn leaf(&self) -> Leaf {
        self.leaf
    }
}

/// Which guests a call may see.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Want {
    /// Live guests only (a dying one is `NoEnt`).
    Live,
    /// Dying guests only (a live one is `Perm`).
    Dying,
    /// Any guest in its slot.
    Any,
}

/// Which kind of guest a call needs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Needs {
    NonProtected,
    Protected,
}

/// The annotation recording that guest `h` holds a donated page at `gfn`.
fn guest_owned(h: Handle, gfn: u64) -> Annotation {
    Annotation {
        owner: owner::GUEST,
        meta: guest_meta(h, gfn),
    }
}

/// Guest RAM mappings: Normal write-back, the guest's state in the
/// software bits.
fn guest_attrs(perms: Perms, state: PageState) -> Attrs {
    Attrs {
        perms,
        mem: MemType::NormalWb,
        sw: state as u8,
    }
}

/// `nr` must be one page or one block, and a block aligned in both spaces.
fn check_shape(pfn: Option<u64>, gfn: u64, nr: u64) -> Result<(), Error> {
    let aligned = |x: u64| x.is_multiple_of(BLOCK_PAGES);
    match nr {
        1 => Ok(()),
        BLOCK_PAGES if aligned(gfn) && pfn.is_none_or(aligned) => Ok(()),
        _ => Err(Error::Inval),
    }
}

impl<P: Platform> Guest<P> {
    /// The guest's IPA size in bits.
    pub fn ipa_bits(&self) -> u32 {
        self.s2.geometry().ia_bits as u32
    }

    /// `[gfn, gfn + nr)` as a byte range, if it lies in the IPA space.
    fn gfn_range(&self, gfn: u64, nr: u64) -> Result<(u64, u64), Error> {
        let end = gfn.checked_add(nr).ok_or(Error::Inval)?;
        match end <= 1u64 << (self.ipa_bits() - PAGE_SHIFT) {
            true => Ok((gfn << PAGE_SHIFT, nr << PAGE_SHIFT)),
            false => Err(Error::Inval),
        }
    }

    /// The valid leaf covering `ia`.
    pub fn leaf_at(&self, ia: u64) -> Option<Leaf> {
        let (d, level) = self.s2.get_leaf(ia).ok()?;
        if d.kind(level) != Kind::Leaf {
            return None;
        }
        let size = level_size(level);
        Some(Leaf {
            ia: ia & !(size - 1),
            size,
            pa: d.oa() & !(size - 1),
            state: PageState::from_bits(d.attrs(self.s2.regime()).sw),
        })
    }

    /// Whether every entry of the range is empty (no mapping, no poison).
    fn is_empty(&mut self, ia: u64, size: u64) -> bool {
        self.s2
            .walk(
                ia,
                size,
                WalkFlags::LEAF,
                &mut |_, c: &Ctx, _| match c.old == Desc::EMPTY {
                    true => Ok(()),
                    false => Err(PgError::Annotated),
                },
            )
            .is_ok()
    }

    /// Whether any valid leaf is left in the whole IPA space.
    fn has_mappings(&mut self) -> bool {
        let size = 1u64 << self.ipa_bits();
        self.s2
            .walk(0, size, WalkFlags::LEAF, &mut |_, c: &Ctx, _| match c.old.is_valid() {
                true => Err(PgError::Annotated),
                false => Ok(()),
            })
            .is_err()
    }

    fn can_allocate(&self, size: u64) -> bool {
        self.s2.mm().can_allocate(tables_needed(self.s2.geometry(), size))
    }
}

impl<'m, P: Platform> MemProtect<'m, P> {
    /// The slot of handle `h`, if the handle names one.
    fn slot(&self, h: Handle) -> Option<&Mutex<P::Lock, Option<Guest<P>>>> {
        (h as usize).checked_sub(1).and_then(|i| self.vms.get(i))
    }

    /// Lock guest `h`'s slot (the caller holds the host lock) and check it
    /// holds a guest `want` can see.
    fn lock_vm(&self, h: Handle, want: Want) -> Result<GuestGuard<'_, P>, Error> {
        let slot = self.slot(h).ok_or(Error::NoEnt)?;
        let guest = MutexGuard::try_map(slot.lock(), |g| g.as_mut()).map_err(|_| Error::NoEnt)?;
        match (want, guest.dying) {
            (Want::Live, true) => Err(Error::NoEnt),
            (Want::Dying, false) => Err(Error::Perm),
            _ => Ok(guest),
        }
    }

    /// Lock the host, then guest `h`, and check the guest's kind.
    fn begin_guest(&self, h: Handle, needs: Needs) -> Result<(HostGuard<'_, P>, GuestGuard<'_, P>), Error> {
        let host = self.host.lock();
        let guest = self.lock_vm(h, Want::Live)?;
        if guest.protected != (needs == Needs::Protected) {
            return Err(Error::Perm);
        }
        Ok((host, guest))
    }

    fn guest_checked<'a, K>(
        &'a self,
        host: HostGuard<'a, P>,
        guest: GuestGuard<'a, P>,
        handle: Handle,
        leaf: Leaf,
    ) -> GuestChecked<'a, 'm, P, K> {
        GuestChecked {
            mp: self,
            host,
            guest,
            handle,
            leaf,
            prot: Perms::NONE,
            mkold: false,
            kind: PhantomData,
        }
    }

    /// The metadata of a leaf the host shared: every page host SharedOwned
    /// with a guest share counted (`Perm` otherwise). This is the "host
    /// really shared this" check, on in every build.
    fn host_shared(&self, leaf: &Leaf) -> Result<&'m [PageMeta], Error> {
        let metas = self.ram_range(leaf.pages())?;
        match metas
            .iter()
            .all(|m| m.host() == PageState::SharedOwned && m.guest_shares() > 0)
        {
            true => Ok(metas),
            false => Err(Error::Perm),
        }
    }

    /// The leaf at `gfn` of a guest, shared by the host: valid (`NoEnt`),
    /// exactly `nr` pages if given (`TooBig`), SharedBorrowed and really
    /// shared (`Perm`).
    fn shared_leaf(&self, guest: &Guest<P>, gfn: u64, nr: Option<u64>) -> Result<Leaf, Error> {
        let (ia, _) = guest.gfn_range(gfn, nr.unwrap_or(1))?;
        let leaf = guest.leaf_at(ia).ok_or(Error::NoEnt)?;
        if nr.is_some_and(|nr| leaf.size != nr << PAGE_SHIFT || leaf.ia != ia) {
            return Err(Error::TooBig);
        }
        if leaf.state != PageState::SharedBorrowed {
            return Err(Error::Perm);
        }
        self.host_shared(&leaf)?;
        Ok(leaf)
    }

    /// Check [`ShareGuest`] of `nr` pages (1 or 512) from `pfn` at `gfn`
    /// of non-protected guest `h`, with permissions `prot`.
    pub fn check_share_guest(
        &self,
        h: Handle,
        pfn: u64,
        gfn: u64,
        nr: u64,
        prot: Perms,
    ) -> Result<GuestChecked<'_, 'm, P, ShareGuest>, Error> {
        let range = self.range(pfn, nr)?;
        check_shape(Some(pfn), gfn, nr)?;
        let (host, mut guest) = self.begin_guest(h, Needs::NonProtected)?;
        let (ia, size) = guest.gfn_range(gfn, nr)?;
        let metas = self.ram_range(range)?;
        if !guest.is_empty(ia, size) {
            return Err(Error::Perm);
        }
        for m in metas {
            match (m.host(), m.guest_shares()) {
                (PageState::Owned, _) => {}
                (PageState::SharedOwned, u32::MAX) => return Err(Error::Busy),
                (PageState::SharedOwned, n) if n > 0 => {}
                _ => return Err(Error::Perm),
            }
        }
        if !guest.can_allocate(size) {
            return Err(Error::NoMem);
        }
        let leaf = Leaf {
            ia,
            size,
            pa: range.base(),
            state: PageState::SharedBorrowed,
        };
        let mut c = self.guest_checked(host, guest, h, leaf);
        c.prot = prot;
        Ok(c)
    }

    /// Check [`UnshareGuest`] of the `nr`-page leaf at `gfn` of guest `h`.
    pub fn check_unshare_guest(
        &self,
        h: Handle,
        gfn: u64,
        nr: u64,
    ) -> Result<GuestChecked<'_, 'm, P, UnshareGuest>, Error> {
        self.check_shared_op(h, gfn, Some(nr))
    }

    /// Check [`RelaxGuest`] of the leaf covering `gfn`.
    pub fn check_relax_perms_guest(
        &self,
        h: Handle,
        gfn: u64,
        prot: Perms,
    ) -> Result<GuestChecked<'_, 'm, P, RelaxGuest>, Error> {
        let mut c = self.check_shared_op(h, gfn, None)?;
        c.prot = prot;
        Ok(c)
    }

    /// Check [`WrprotectGuest`] of the `nr`-page leaf at `gfn`.
    pub fn check_wrprotect_guest(
        &self,
        h: Handle,
        gfn: u64,
        nr: u64,
    ) -> Result<GuestChecked<'_, 'm, P, WrprotectGuest>, Error> {
        self.check_shared_op(h, gfn, Some(nr))
    }

    /// Check [`YoungGuest`] of the `nr`-page leaf at `gfn`.
    pub fn check_test_clear_young_guest(
        &self,
        h: Handle,
        gfn: u64,
        nr: u64,
        mkold: bool,
    ) -> Result<GuestChecked<'_, 'm, P, YoungGuest>, Error> {
        let mut c = self.check_shared_op(h, gfn, Some(nr))?;
        c.mkold = mkold;
        Ok(c)
    }

    /// Check [`MkyoungGuest`] of the leaf covering `gfn`.
    pub fn check_mkyoung_guest(&self, h: Handle, gfn: u64) -> Result<GuestChecked<'_, 'm, P, MkyoungGuest>, Error> {
        self.check_shared_op(h, gfn, None)
    }

    /// The checks every operation on a host-shared leaf makes.
    fn check_shared_op<K>(&self, h: Handle, gfn: u64, nr: Option<u64>) -> Result<GuestChecked<'_, 'm, P, K>, Error> {
        if let Some(nr) = nr {
            check_shape(None, gfn, nr)?;
        }
        let (host, guest) = self.begin_guest(h, Needs::NonProtected)?;
        let leaf = self.shared_leaf(&guest, gfn, nr)?;
        Ok(self.guest_checked(host, guest, h, leaf))
    }

    /// Check [`DonateGuest`] of page `pfn` to protected guest `h` at `gfn`.
    pub fn check_donate_guest(
        &self,
        h: Handle,
        pfn: u64,
        gfn: u64,
    ) -> Result<GuestChecked<'_, 'm, P, DonateGuest>, Error> {
        let range = self.range(pfn, 1)?;
        let (mut host, mut guest) = self.begin_guest(h, Needs::Protected)?;
        let (ia, size) = guest.gfn_range(gfn, 1)?;
        let m = &self.ram_range(range)?[0];
        if m.host() != PageState::Owned || !guest.is_empty(ia, size) {
            return Err(Error::Perm);
        }
        if !guest.can_allocate(size) {
            return Err(Error::NoMem);
        }
        let geo = *host.s2.geometry();
        host.reserve_tables(&self.ram, self.pa_bits, tables_needed(&geo, size))?;
        let leaf = Leaf {
            ia,
            size,
            pa: range.base(),
            state: PageState::Owned,
        };
        Ok(self.guest_checked(host, guest, h, leaf))
    }

    /// The page at `gfn` of protected guest `h`, in guest state `guest`
    /// and host state `host_state`, with host table pages reserved.
    fn check_guest_page<K>(
        &self,
        h: Handle,
        gfn: u64,
        guest_state: PageState,
        host_state: PageState,
    ) -> Result<GuestChecked<'_, 'm, P, K>, Error> {
        let (mut host, guest) = self.begin_guest(h, Needs::Protected)?;
        let (ia, _) = guest.gfn_range(gfn, 1)?;
        let leaf = guest.leaf_at(ia).ok_or(Error::NoEnt)?;
        let meta = self.ram.meta(leaf.pa >> PAGE_SHIFT);
        if leaf.state != guest_state || leaf.size != PAGE_SIZE || meta.is_none_or(|m| m.host() != host_state) {
            return Err(Error::Perm);
        }
        let geo = *host.s2.geometry();
        host.reserve_tables(&self.ram, self.pa_bits, tables_needed(&geo, PAGE_SIZE))?;
        Ok(self.guest_checked(host, guest, h, leaf))
    }

    /// Check [`GuestShareHost`] of the page at `gfn` of protected guest `h`.
    pub fn check_guest_share_host(
        &self,
        h: Handle,
        gfn: u64,
    ) -> Result<GuestChecked<'_, 'm, P, GuestShareHost>, Error> {
        self.check_guest_page(h, gfn, PageState::Owned, PageState::NoPage)
    }

    /// Check [`GuestUnshareHost`] of the page at `gfn` of protected guest `h`.
    pub fn check_guest_unshare_host(
        &self,
        h: Handle,
        gfn: u64,
    ) -> Result<GuestChecked<'_, 'm, P, GuestUnshareHost>, Error> {
        self.check_guest_page(h, gfn, PageState::SharedOwned, PageState::SharedBorrowed)
    }

    /// Check [`ReclaimGuest`] of the leaf at `gfn` of dying guest `h`.
    pub fn check_reclaim_dying_guest_page(
        &self,
        h: Handle,
        gfn: u64,
    ) -> Result<GuestChecked<'_, 'm, P, ReclaimGuest>, Error> {
        let mut host = self.host.lock();
        let guest = self.lock_vm(h, Want::Dying)?;
        let (ia, _) = guest.gfn_range(gfn, 1)?;
        let leaf = guest.leaf_at(ia).ok_or(Error::NoEnt)?;
        match leaf.state {
            PageState::SharedBorrowed => {
                self.host_shared(&leaf)?;
            }
            _ => {
                let m = self.ram_range(leaf.pages())?;
                let host_state = match leaf.state {
                    PageState::Owned => PageState::NoPage,
                    _ => PageState::SharedBorrowed,
                };
                if leaf.size != PAGE_SIZE || m[0].host() != host_state {
                    return Err(Error::Perm);
                }
                if host_state == PageState::NoPage {
                    let geo = *host.s2.geometry();
                    host.reserve_tables(&self.ram, self.pa_bits, tables_needed(&geo, PAGE_SIZE))?;
                }
            }
        }
        Ok(self.guest_checked(host, guest, h, leaf))
    }

    /// Check [`ForceReclaim`] of page `pfn`, donated to a guest.
    pub fn check_force_reclaim_guest_page(&self, pfn: u64) -> Result<GuestChecked<'_, 'm, P, ForceReclaim>, Error> {
        let range = self.range(pfn, 1)?;
        let mut host = self.host.lock();
        let m = &self.ram_range(range)?[0];
        let annotation = host.s2.get_leaf(range.base()).ok().and_then(|(d, _)| d.annotation());
        let (h, gfn) = match annotation {
            Some(a) if m.host() == PageState::NoPage && a.owner == owner::GUEST => guest_meta_decode(a.meta),
            _ => return Err(Error::Perm),
        };
        let guest = self.lock_vm(h, Want::Any)?;
        let leaf = guest
            .gfn_range(gfn, 1)
            .ok()
            .and_then(|(ia, _)| guest.leaf_at(ia))
            .filter(|l| l.state == PageState::Owned && l.size == PAGE_SIZE && l.pa == range.base())
            .ok_or(Error::Perm)?;
        let geo = *host.s2.geometry();
        host.reserve_tables(&self.ram, self.pa_bits, tables_needed(&geo, PAGE_SIZE))?;
        Ok(self.guest_checked(host, guest, h, leaf))
    }

    /// The host shares `nr` pages (1 or 512) from `pfn` with guest `h` at
    /// `gfn`.
    pub fn host_share_guest(&self, h: Handle, pfn: u64, gfn: u64, nr: u64, prot: Perms) -> Result<(), Error> {
        self.check_share_guest(h, pfn, gfn, nr, prot).map(|c| c.commit())
    }

    /// The host takes back the `nr`-page leaf it shared at `gfn`.
    pub fn host_unshare_guest(&self, h: Handle, gfn: u64, nr: u64) -> Result<(), Error> {
        self.check_unshare_guest(h, gfn, nr).map(|c| c.commit())
    }

    /// The host grants `prot` on the shared leaf covering `gfn`.
    pub fn host_relax_perms_guest(&self, h: Handle, gfn: u64, prot: Perms) -> Result<(), Error> {
        self.check_relax_perms_guest(h, gfn, prot).map(|c| c.commit())
    }

    /// The host write-protects the shared `nr`-page leaf at `gfn`.
    pub fn host_wrprotect_guest(&self, h: Handle, gfn: u64, nr: u64) -> Result<(), Error> {
        self.check_wrprotect_guest(h, gfn, nr).map(|c| c.commit())
    }

    /// Whether the shared `nr`-page leaf at `gfn` was accessed; clear the
    /// access flag if `mkold`.
    pub fn host_test_clear_young_guest(&self, h: Handle, gfn: u64, nr: u64, mkold: bool) -> Result<bool, Error> {
        self.check_test_clear_young_guest(h, gfn, nr, mkold).map(|c| c.commit())
    }

    /// Set the access flag of the shared leaf covering `gfn`.
    pub fn host_mkyoung_guest(&self, h: Handle, gfn: u64) -> Result<(), Error> {
        self.check_mkyoung_guest(h, gfn).map(|c| c.commit())
    }

    /// The host gives page `pfn` to protected guest `h` at `gfn`.
    pub fn host_donate_guest(&self, h: Handle, pfn: u64, gfn: u64) -> Result<(), Error> {
        self.check_donate_guest(h, pfn, gfn).map(|c| c.commit())
    }

    /// Protected guest `h` shares its page at `gfn` with the host.
    pub fn guest_share_host(&self, h: Handle, gfn: u64) -> Result<(), Error> {
        self.check_guest_share_host(h, gfn).map(|c| c.commit())
    }

    /// Protected guest `h` takes back its page at `gfn` from the host.
    pub fn guest_unshare_host(&self, h: Handle, gfn: u64) -> Result<(), Error> {
        self.check_guest_unshare_host(h, gfn).map(|c| c.commit())
    }

    /// The host takes back the page (or shared leaf) at `gfn` of dying
    /// guest `h`; a guest's own page is poisoned first.
    pub fn reclaim_dying_guest_page(&self, h: Handle, gfn: u64) -> Result<(), Error> {
        self.check_reclaim_dying_guest_page(h, gfn).map(|c| c.commit())
    }

    /// The host takes back page `pfn` from the live guest it was donated
    /// to: the page is poisoned and the guest's entry left poisoned.
    pub fn force_reclaim_guest_page(&self, pfn: u64) -> Result<(), Error> {
        self.check_force_reclaim_guest_page(pfn).map(|c| c.commit())
    }

    /// Create a guest with stage-2 `s2` (its VMID and IPA size), protected
    /// or not, from the `meta_nr` pages at `meta_pfn` that the host donates
    /// as its metadata. Returns its handle. On refusal, `s2` is destroyed
    /// (its pages go back to its pool) and nothing else changes.
    pub fn init_vm(
        &self,
        s2: PageTable<P::GuestMm, P::GuestTlb>,
        protected: bool,
        meta_pfn: u64,
        meta_nr: u64,
    ) -> Result<Handle, Error> {
        match self.check_init_vm(&s2, meta_pfn, meta_nr) {
            Ok((mut host, mut hyp, mut slot, index, range)) => {
                // Commit: the metadata pages become the hyp's, as a donation.
                self.commit_host_to_hyp(&mut host, &mut hyp, range);
                *slot = Some(Guest {
                    s2,
                    protected,
                    dying: false,
                    meta: range,
                });
                Ok(index as Handle + 1)
            }
            Err(e) => {
                drop(s2.destroy());
                Err(e)
            }
        }
    }

    /// Every check of [`Self::init_vm`]; on success the locks, the free
    /// slot (locked), its index and the metadata range.
    #[allow(clippy::type_complexity)]
    fn check_init_vm(
        &self,
        s2: &PageTable<P::GuestMm, P::GuestTlb>,
        meta_pfn: u64,
        meta_nr: u64,
    ) -> Result<
        (
            HostGuard<'_, P>,
            HypGuard<'_, P>,
            MutexGuard<'_, P::Lock, Option<Guest<P>>>,
            usize,
            PfnRange,
        ),
        Error,
    > {
        let vmid = match *s2.regime() {
            Regime::Stage2 { ipa_bits, vmid, .. }
                if (GUEST_MIN_IPA_BITS..=GUEST_MAX_IPA_BITS).contains(&ipa_bits) && vmid != 0 =>
            {
                vmid
            }
            _ => return Err(Error::Inval),
        };
        let mut host = self.host.lock();
        let hyp = self.hyp.lock();
        // The host lock keeps the table's membership stable: one slot lock
        // at a time is enough.
        let vmid_used = self.vms.iter().any(|slot| {
            slot.lock()
                .as_ref()
                .is_some_and(|g| matches!(*g.s2.regime(), Regime::Stage2 { vmid: v, .. } if v == vmid))
        });
        if vmid_used {
            return Err(Error::Inval);
        }
        let range = self.range(meta_pfn, meta_nr)?;
        self.check_host_to_hyp(&mut host, &hyp, range)?;
        for (index, slot) in self.vms.iter().enumerate() {
            let slot = slot.lock();
            if slot.is_none() {
                return Ok((host, hyp, slot, index, range));
            }
        }
        Err(Error::NoMem)
    }

    /// Start tearing down guest `h`: from now on only reclaim, finalize
    /// and force-reclaim see it.
    pub fn start_teardown_vm(&self, h: Handle) -> Result<(), Error> {
        let _host = self.host.lock();
        let mut guest = self.lock_vm(h, Want::Live)?;
        guest.dying = true;
        Ok(())
    }

    /// Finish tearing down dying guest `h` once the host reclaimed every
    /// page: its stage-2 is destroyed and its memory and TLB operations
    /// returned (so the caller can give the table pages back), the VM
    /// metadata pages are poisoned and given back to the host, and the slot
    /// is free.
    pub fn finalize_teardown_vm(&self, h: Handle) -> Result<(P::GuestMm, P::GuestTlb), Error> {
        let mut host = self.host.lock();
        let mut hyp = self.hyp.lock();
        let mut slot = self.slot(h).ok_or(Error::NoEnt)?.lock();
        let guest = slot.as_mut().ok_or(Error::NoEnt)?;
        if !guest.dying {
            return Err(Error::Perm);
        }
        if guest.has_mappings() {
            return Err(Error::Busy);
        }
        // The metadata must still be the hyp's (hyp_donate_host's checks:
        // Warden's own code could have handed it back early).
        let range = guest.meta;
        self.check_hyp_to_host(&mut host, range)?;
        // Commit.
        let Some(mut guest) = slot.take() else {
            return Err(Error::NoEnt);
        };
        let vmid = match *guest.s2.regime() {
            Regime::Stage2 { vmid, .. } => vmid,
            Regime::El2Stage1 { .. } => 0,
        };
        // Nothing of the VMID may stay cached once its table pages are
        // free: invalidate, and wait for it to complete everywhere.
        let tlb = guest.s2.tlb_mut();
        tlb.tlbi(Tlbi::Stage2Vmid {
            vmid,
            scope: Scope::Broadcast,
        });
        tlb.barrier(Barrier::DsbIsh);
        let (mm, tlb) = guest.s2.destroy();
        for pfn in range.pfns() {
            host.poison.poison(pfn << PAGE_SHIFT);
        }
        self.commit_hyp_to_host(&mut host, &mut hyp, range);
        Ok((mm, tlb))
    }

    /// Whether guest `h` exists (live or dying), with its protection and
    /// dying flags.
    pub fn vm_info(&self, h: Handle) -> Option<(bool, bool)> {
        let slot = self.slot(h)?;
        slot.lock().as_ref().map(|g| (g.protected, g.dying))
    }

    /// Run `f` on guest `h` (tests, diagnostics).
    pub fn with_guest<R>(&self, h: Handle, f: impl FnOnce(&mut Guest<P>) -> R) -> Option<R> {
        let slot = self.slot(h)?;
        slot.lock().as_mut().map(f)
    }
}

impl<'m, P: Platform, K> GuestChecked<'_, 'm, P, K> {
    fn metas(&self) -> &'m [PageMeta] {
        self.mp.ram.metas(self.leaf.pages())
    }
}

impl<P: Platform> GuestChecked<'_, '_, P, ShareGuest> {
    /// Host SharedOwned and one more guest share per page; the guest maps
    /// the page or block SharedBorrowed with the permissions asked for.
    pub fn commit(mut self) {
        for m in self.metas() {
            m.set_host(PageState::SharedOwned);
            m.set_guest_shares(m.guest_shares() + 1);
        }
        let Leaf { ia, size, pa, .. } = self.leaf;
        let attrs = guest_attrs(self.prot, PageState::SharedBorrowed);
        checked_step(
            self.guest.s2.map(ia, size, pa, attrs, MapPolicy::BLOCKS),
            "guest stage-2 map of a shared page",
        );
    }
}

impl<P: Platform> GuestChecked<'_, '_, P, UnshareGuest> {
    /// Unmap the leaf (broadcast invalidation); one guest share less per
    /// page; host Owned again when none is left.
    pub fn commit(mut self) {
        unshare_leaf(&mut self.guest, self.mp.ram.metas(self.leaf.pages()), self.leaf);
    }
}

/// Unmap a host-shared leaf and drop its guest shares.
fn unshare_leaf<P: Platform>(guest: &mut Guest<P>, metas: &[PageMeta], leaf: Leaf) {
    checked_step(
        guest.s2.unmap(leaf.ia, leaf.size),
        "guest stage-2 unmap of a shared leaf",
    );
    for m in metas {
        let left = m.guest_shares() - 1;
        m.set_guest_shares(left);
        if left == 0 {
            m.set_host(PageState::Owned);
        }
    }
}

impl<P: Platform> GuestChecked<'_, '_, P, RelaxGuest> {
    /// The leaf gains the permissions (local invalidation suffices).
    pub fn commit(mut self) {
        let Leaf { ia, size, .. } = self.leaf;
        checked_step(self.guest.s2.relax_perms(ia, size, self.prot), "guest relax_perms");
    }
}

impl<P: Platform> GuestChecked<'_, '_, P, WrprotectGuest> {
    /// The leaf loses write permission (broadcast invalidation).
    pub fn commit(mut self) {
        let Leaf { ia, size, .. } = self.leaf;
        checked_step(self.guest.s2.wrprotect(ia, size), "guest wrprotect");
    }
}

impl<P: Platform> GuestChecked<'_, '_, P, YoungGuest> {
    /// The leaf's access flag, cleared if asked.
    pub fn commit(mut self) -> bool {
        let Leaf { ia, size, .. } = self.leaf;
        match self.mkold {
            true => checked_step(self.guest.s2.test_clear_young(ia, size), "guest test_clear_young"),
            false => self.guest.s2.get_leaf(ia).is_ok_and(|(d, _)| d.af()),
        }
    }
}

impl<P: Platform> GuestChecked<'_, '_, P, MkyoungGuest> {
    /// Set the leaf's access flag.
    pub fn commit(mut self) {
        let Leaf { ia, size, .. } = self.leaf;
        checked_step(self.guest.s2.mkyoung(ia, size), "guest mkyoung");
    }
}

impl<P: Platform> GuestChecked<'_, '_, P, DonateGuest> {
    /// Record the guest (handle, gfn) as owner in the host stage-2 (host
    /// mappings removed, broadcast invalidation), host NoPage; map the page
    /// RWX Owned in the guest; tell the hook.
    pub fn commit(mut self) {
        let Leaf { ia, pa, .. } = self.leaf;
        let owned = guest_owned(self.handle, ia >> PAGE_SHIFT);
        checked_step(self.host.s2.annotate(pa, PAGE_SIZE, owned), "host stage-2 annotation");
        checked_step(
            self.guest.s2.map(
                ia,
                PAGE_SIZE,
                pa,
                guest_attrs(Perms::RWX, PageState::Owned),
                MapPolicy::PAGES,
            ),
            "guest stage-2 map of a donated page",
        );
        for m in self.metas() {
            m.set_host(PageState::NoPage);
        }
        self.host.hook.host_ownership_changed(pa, PAGE_SIZE, HostAccess::None);
    }
}

impl<P: Platform> GuestChecked<'_, '_, P, GuestShareHost> {
    /// Guest SharedOwned; the host maps the page in place of the
    /// annotation, host SharedBorrowed; tell the hook.
    pub fn commit(mut self) {
        let Leaf { ia, pa, .. } = self.leaf;
        checked_step(
            self.guest.s2.set_sw(ia, PAGE_SIZE, PageState::SharedOwned as u8),
            "guest state update",
        );
        checked_step(
            self.host.s2.map(pa, PAGE_SIZE, pa, HOST_MEM, GIVE_BACK),
            "host stage-2 map of a guest-shared page",
        );
        for m in self.metas() {
            m.set_host(PageState::SharedBorrowed);
        }
        self.host.hook.host_ownership_changed(pa, PAGE_SIZE, HostAccess::Mem);
    }
}

impl<P: Platform> GuestChecked<'_, '_, P, GuestUnshareHost> {
    /// The host stage-2 records the guest as owner again (broadcast
    /// invalidation), host NoPage; guest Owned; tell the hook.
    pub fn commit(mut self) {
        let Leaf { ia, pa, .. } = self.leaf;
        let owned = guest_owned(self.handle, ia >> PAGE_SHIFT);
        checked_step(self.host.s2.annotate(pa, PAGE_SIZE, owned), "host stage-2 annotation");
        checked_step(
            self.guest.s2.set_sw(ia, PAGE_SIZE, PageState::Owned as u8),
            "guest state update",
        );
        for m in self.metas() {
            m.set_host(PageState::NoPage);
        }
        self.host.hook.host_ownership_changed(pa, PAGE_SIZE, HostAccess::None);
    }
}

impl<P: Platform> GuestChecked<'_, '_, P, ReclaimGuest> {
    /// A host-shared leaf: unshared. A guest's page: unmapped from the
    /// guest, poisoned, host Owned (mapped back if the host had lost it;
    /// then the hook hears of it).
    pub fn commit(mut self) {
        let leaf = self.leaf;
        if leaf.state == PageState::SharedBorrowed {
            let metas = self.mp.ram.metas(leaf.pages());
            return unshare_leaf(&mut self.guest, metas, leaf);
        }
        checked_step(
            self.guest.s2.unmap(leaf.ia, PAGE_SIZE),
            "guest stage-2 unmap of a reclaimed page",
        );
        self.host.poison.poison(leaf.pa);
        let m = &self.metas()[0];
        if m.host() == PageState::NoPage {
            checked_step(
                self.host.s2.map(leaf.pa, PAGE_SIZE, leaf.pa, HOST_MEM, GIVE_BACK),
                "host stage-2 map of a reclaimed page",
            );
            self.host
                .hook
                .host_ownership_changed(leaf.pa, PAGE_SIZE, HostAccess::Mem);
        }
        m.set_host(PageState::Owned);
    }
}

impl<P: Platform> GuestChecked<'_, '_, P, ForceReclaim> {
    /// Poison the guest's entry (broadcast invalidation), clear the page,
    /// give it back to the host; tell the hook.
    pub fn commit(mut self) {
        let Leaf { ia, pa, .. } = self.leaf;
        checked_step(
            self.guest.s2.annotate(ia, PAGE_SIZE, GUEST_POISONED),
            "guest stage-2 poisoning",
        );
        self.host.poison.poison(pa);
        checked_step(
            self.host.s2.map(pa, PAGE_SIZE, pa, HOST_MEM, GIVE_BACK),
            "host stage-2 map of a force-reclaimed page",
        );
        for m in self.metas() {
            m.set_host(PageState::Owned);
        }
        self.host.hook.host_ownership_changed(pa, PAGE_SIZE, HostAccess::Mem);
    }
}

// Handles are slot indices plus one, as a u16.
const _: () = assert!(MAX_VMS < u16::MAX as usize);
