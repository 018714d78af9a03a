//! The host/hyp transitions, each split into a check and a commit.
//!
//! `check_*` takes the component locks (host, then hyp), validates the
//! arguments, the kind of memory, every page's state, and that the tables
//! it will update can get the pages they need; it returns a [`Checked`]
//! token holding the locks. Only `Checked::commit` changes anything, and
//! nothing it does can fail: a refused transition has changed nothing.
//! The one-call forms (`host_share_hyp`, ...) do both.

use core::marker::PhantomData;

use warden_pgtable::{Annotation, Attrs, Ctx, Error as PgError, MapPolicy, MemType, MmOps, Perms, WalkFlags};

use crate::host::{tables_needed, HOST_MEM, HOST_MMIO};
use crate::protect::{Host, HostGuard, Hyp, HypGuard, MemProtect, Platform};
use crate::ram::{PageMeta, PfnRange};
use crate::types::{owner, Error, HostAccess, OwnershipHook, PageState};

/// EL2 mapping of RAM the hypervisor owns or pinned.
pub(crate) const HYP_MEM: Attrs = Attrs::new(Perms::RW, MemType::NormalWb);
/// EL2 mapping of MMIO the hypervisor owns.
const HYP_MMIO: Attrs = Attrs::new(Perms::RW, MemType::Device);
/// Mapping memory back into the host stage-2 in place of its annotation,
/// as blocks where alignment allows.
pub(crate) const GIVE_BACK: MapPolicy = MapPolicy {
    replace_annotations: true,
    ..MapPolicy::BLOCKS
};
/// The annotation recording that the hypervisor owns a page.
pub(crate) const HYP_OWNED: Annotation = Annotation {
    owner: owner::HYP,
    meta: 0,
};

/// The host shares a page with the hypervisor.
pub struct ShareHyp;
/// At boot: the hypervisor claims memory its EL2 stage-1 already maps.
pub struct ClaimHyp;
/// The host takes back a page it shared with the hypervisor.
pub struct UnshareHyp;
/// The hypervisor pins (and maps) pages the host shared with it.
pub struct PinShared;
/// The hypervisor unpins pages.
pub struct UnpinShared;
/// The host gives pages to the hypervisor.
pub struct DonateHyp;
/// The hypervisor gives pages back to the host.
pub struct HypDonateHost;
/// The host gives MMIO pages (a device's registers) to the hypervisor.
pub struct DonateMmio;
/// The hypervisor gives MMIO pages back to the host.
pub struct ReclaimMmio;

/// Proof that transition `K` passed every check for `range`, holding the
/// locks it was checked under. Only this module makes one; `commit`
/// consumes it.
#[must_use = "a checked transition does nothing until committed"]
pub struct Checked<'a, 'm, P: Platform, K> {
    mp: &'a MemProtect<'m, P>,
    host: HostGuard<'a, P>,
    hyp: HypGuard<'a, P>,
    range: PfnRange,
    kind: PhantomData<K>,
}

impl<'a, 'm, P: Platform, K> Checked<'a, 'm, P, K> {
    /// The range the transition applies to.
    pub fn range(&self) -> PfnRange {
        self.range
    }

    fn metas(&self) -> &'m [PageMeta] {
        self.mp.ram.metas(self.range)
    }
}

impl<'m, P: Platform> MemProtect<'m, P> {
    /// Lock host then hyp, and validate the range.
    fn begin(&self, pfn: u64, nr: u64) -> Result<(PfnRange, HostGuard<'_, P>, HypGuard<'_, P>), Error> {
        let range = self.range(pfn, nr)?;
        let host = self.host.lock();
        let hyp = self.hyp.lock();
        Ok((range, host, hyp))
    }

    /// The metadata of a RAM range, which must lie in one region (`Perm`
    /// otherwise: MMIO given as RAM, or a range crossing a region's end).
    pub(crate) fn ram_range(&self, range: PfnRange) -> Result<&'m [PageMeta], Error> {
        match self.ram.in_one_region(range) {
            true => Ok(self.ram.metas(range)),
            false => Err(Error::Perm),
        }
    }

    fn checked<'a, K>(
        &'a self,
        range: PfnRange,
        host: HostGuard<'a, P>,
        hyp: HypGuard<'a, P>,
    ) -> Checked<'a, 'm, P, K> {
        Checked {
            mp: self,
            host,
            hyp,
            range,
            kind: PhantomData,
        }
    }

    /// Check [`ShareHyp`]: RAM, host Owned, hyp NoPage (`Perm` otherwise).
    pub fn check_share_hyp(&self, pfn: u64) -> Result<Checked<'_, 'm, P, ShareHyp>, Error> {
        let (range, host, hyp) = self.begin(pfn, 1)?;
        let m = &self.ram_range(range)?[0];
        if m.host() != PageState::Owned || m.hyp() != PageState::NoPage {
            return Err(Error::Perm);
        }
        Ok(self.checked(range, host, hyp))
    }

    /// Check [`UnshareHyp`]: RAM, host SharedOwned and hyp SharedBorrowed
    /// (`Perm`), not pinned (`Busy`).
    pub fn check_unshare_hyp(&self, pfn: u64) -> Result<Checked<'_, 'm, P, UnshareHyp>, Error> {
        let (range, host, hyp) = self.begin(pfn, 1)?;
        let m = &self.ram_range(range)?[0];
        if !is_shared_with_hyp(m) {
            return Err(Error::Perm);
        }
        if m.pins() != 0 {
            return Err(Error::Busy);
        }
        Ok(self.checked(range, host, hyp))
    }

    /// Check [`PinShared`]: every page shared with the hyp (`Perm`), none
    /// pinned `u16::MAX` times (`Busy`), EL2 table pages for the mapping
    /// (`NoMem`).
    pub fn check_pin_shared(&self, pfn: u64, nr: u64) -> Result<Checked<'_, 'm, P, PinShared>, Error> {
        let (range, host, hyp) = self.begin(pfn, nr)?;
        let metas = self.ram_range(range)?;
        if !metas.iter().all(is_shared_with_hyp) {
            return Err(Error::Perm);
        }
        if metas.iter().any(|m| m.pins() == u16::MAX) {
            return Err(Error::Busy);
        }
        if !hyp.s1.mm().can_allocate(tables_needed(hyp.s1.geometry(), range.size())) {
            return Err(Error::NoMem);
        }
        Ok(self.checked(range, host, hyp))
    }

    /// Check [`UnpinShared`]: every page shared with the hyp and pinned
    /// (`Inval`: unpinning what is not pinned is a malformed request).
    pub fn check_unpin_shared(&self, pfn: u64, nr: u64) -> Result<Checked<'_, 'm, P, UnpinShared>, Error> {
        let (range, host, hyp) = self.begin(pfn, nr)?;
        let metas = self.ram_range(range)?;
        if !metas.iter().all(|m| is_shared_with_hyp(m) && m.pins() > 0) {
            return Err(Error::Inval);
        }
        Ok(self.checked(range, host, hyp))
    }

    /// Check [`DonateHyp`]: RAM in one region, every page host Owned and
    /// hyp NoPage (`Perm`), table pages for the host annotation and the EL2
    /// mapping (`NoMem`, after recycling MMIO mappings).
    pub fn check_donate_hyp(&self, pfn: u64, nr: u64) -> Result<Checked<'_, 'm, P, DonateHyp>, Error> {
        let (range, mut host, hyp) = self.begin(pfn, nr)?;
        self.check_host_to_hyp(&mut host, &hyp, range)?;
        Ok(self.checked(range, host, hyp))
    }

    /// Check [`HypDonateHost`]: RAM in one region, every page hyp Owned and
    /// host NoPage (`Perm`), none pinned (`Busy`), table pages for the host
    /// mapping (`NoMem`).
    pub fn check_hyp_donate_host(&self, pfn: u64, nr: u64) -> Result<Checked<'_, 'm, P, HypDonateHost>, Error> {
        let (range, mut host, hyp) = self.begin(pfn, nr)?;
        self.check_hyp_to_host(&mut host, range)?;
        Ok(self.checked(range, host, hyp))
    }

    /// The checks of a donation of `range` from the host to the hyp, under
    /// both locks (also VM creation's, for the VM metadata).
    pub(crate) fn check_host_to_hyp(
        &self,
        host: &mut HostGuard<'_, P>,
        hyp: &HypGuard<'_, P>,
        range: PfnRange,
    ) -> Result<(), Error> {
        let metas = self.ram_range(range)?;
        if !metas
            .iter()
            .all(|m| m.host() == PageState::Owned && m.hyp() == PageState::NoPage)
        {
            return Err(Error::Perm);
        }
        self.reserve_both(host, hyp, range)
    }

    /// The checks of a return of `range` from the hyp to the host, under the
    /// host lock (also VM finalization's, for the VM metadata).
    pub(crate) fn check_hyp_to_host(&self, host: &mut HostGuard<'_, P>, range: PfnRange) -> Result<(), Error> {
        let metas = self.ram_range(range)?;
        if !metas
            .iter()
            .all(|m| m.hyp() == PageState::Owned && m.host() == PageState::NoPage)
        {
            return Err(Error::Perm);
        }
        if metas.iter().any(|m| m.pins() != 0) {
            return Err(Error::Busy);
        }
        let geo = *host.s2.geometry();
        host.reserve_tables(&self.ram, self.pa_bits, tables_needed(&geo, range.size()))
    }

    /// Commit a donation checked by [`Self::check_host_to_hyp`]: record the
    /// hypervisor as owner in the host stage-2 (the host's mappings go, with
    /// broadcast invalidation), map the pages at EL2, host NoPage, hyp
    /// Owned; tell the hook.
    pub(crate) fn commit_host_to_hyp(&self, host: &mut Host<P>, hyp: &mut Hyp<P>, range: PfnRange) {
        let (base, size) = (range.base(), range.size());
        checked_step(host.s2.annotate(base, size, HYP_OWNED), "host stage-2 annotation");
        checked_step(
            hyp.s1.map(base, size, base, HYP_MEM, MapPolicy::PAGES),
            "EL2 map of donated pages",
        );
        for m in self.ram.metas(range) {
            m.set_host(PageState::NoPage);
            m.set_hyp(PageState::Owned);
        }
        host.hook.host_ownership_changed(base, size, HostAccess::None);
    }

    /// Commit a return checked by [`Self::check_hyp_to_host`]: unmap the
    /// pages at EL2, map them back into the host stage-2 in place of the
    /// annotation, host Owned, hyp NoPage; tell the hook.
    pub(crate) fn commit_hyp_to_host(&self, host: &mut Host<P>, hyp: &mut Hyp<P>, range: PfnRange) {
        let (base, size) = (range.base(), range.size());
        checked_step(hyp.s1.unmap(base, size), "EL2 unmap of returned pages");
        checked_step(
            host.s2.map(base, size, base, HOST_MEM, GIVE_BACK),
            "host stage-2 map of returned pages",
        );
        for m in self.ram.metas(range) {
            m.set_host(PageState::Owned);
            m.set_hyp(PageState::NoPage);
        }
        host.hook.host_ownership_changed(base, size, HostAccess::Mem);
    }

    /// Check [`ClaimHyp`]: at boot, before the host runs, the hypervisor
    /// takes `nr` pages from `pfn` that its EL2 stage-1 already maps (its
    /// image, pools, per-page metadata: pKVM's "fix host ownership"). The
    /// range must be RAM inside one region (`Perm`), every page host Owned
    /// and hyp NoPage (`Perm`), and every page mapped at EL2 (`Perm`: the
    /// hypervisor owns only what it can reach); table pages (`NoMem`).
    pub fn check_claim_hyp(&self, pfn: u64, nr: u64) -> Result<Checked<'_, 'm, P, ClaimHyp>, Error> {
        let (range, mut host, mut hyp) = self.begin(pfn, nr)?;
        let metas = self.ram_range(range)?;
        if !metas
            .iter()
            .all(|m| m.host() == PageState::Owned && m.hyp() == PageState::NoPage)
        {
            return Err(Error::Perm);
        }
        // A walk of the EL2 table: every page of the range under a valid
        // leaf (a gap at any level is a leaf-less stretch the walk reports
        // as an invalid entry).
        let mut mapped = 0u64;
        let walked = hyp.s1.walk(
            range.base(),
            range.size(),
            WalkFlags::LEAF,
            &mut |_, c: &Ctx, _| match c.old.is_valid() {
                true => {
                    mapped += 1;
                    Ok(())
                }
                false => Err(PgError::Annotated),
            },
        );
        if walked.is_err() || mapped == 0 {
            return Err(Error::Perm);
        }
        let geo = *host.s2.geometry();
        host.reserve_tables(&self.ram, self.pa_bits, tables_needed(&geo, range.size()))?;
        Ok(self.checked(range, host, hyp))
    }

    /// Check [`DonateMmio`] (seed 000): no page is RAM, none carries an
    /// annotation (someone already owns it), none is mapped at EL2
    /// (`Perm`); table pages (`NoMem`).
    pub fn check_donate_mmio(&self, pfn: u64, nr: u64) -> Result<Checked<'_, 'm, P, DonateMmio>, Error> {
        let (range, mut host, mut hyp) = self.begin(pfn, nr)?;
        if self.ram.any_ram(range) {
            return Err(Error::Perm);
        }
        // Table walks, not page-by-page lookups: a hostile range of billions
        // of pages costs what the tables hold, not its length.
        let (base, size) = (range.base(), range.size());
        let annotated = host.s2.walk(
            base,
            size,
            WalkFlags::LEAF,
            &mut |_, c: &Ctx, _| match c.old.annotation() {
                Some(_) => Err(PgError::Annotated),
                None => Ok(()),
            },
        );
        let mapped = hyp.s1.walk(
            base,
            size,
            WalkFlags::LEAF,
            &mut |_, c: &Ctx, _| match c.old.is_valid() {
                true => Err(PgError::Annotated),
                false => Ok(()),
            },
        );
        if annotated.is_err() || mapped.is_err() {
            return Err(Error::Perm);
        }
        self.reserve_both(&mut host, &hyp, range)?;
        Ok(self.checked(range, host, hyp))
    }

    /// Check [`ReclaimMmio`]: no page is RAM, every page is recorded as the
    /// hypervisor's in the host stage-2 (so the host cannot have it mapped)
    /// (`Perm`); table pages (`NoMem`).
    pub fn check_reclaim_mmio(&self, pfn: u64, nr: u64) -> Result<Checked<'_, 'm, P, ReclaimMmio>, Error> {
        let (range, mut host, hyp) = self.begin(pfn, nr)?;
        if self.ram.any_ram(range) {
            return Err(Error::Perm);
        }
        // Every page-level entry must be the hyp's annotation; an entry the
        // walk meets above level 3 (empty, or a block) covers pages that
        // are not. A walk, so a huge range costs what the tables hold.
        let ours = host.s2.walk(
            range.base(),
            range.size(),
            WalkFlags::LEAF,
            &mut |_, c: &Ctx, _| match c.level == 3 && c.old.annotation() == Some(HYP_OWNED) {
                true => Ok(()),
                false => Err(PgError::Annotated),
            },
        );
        if ours.is_err() {
            return Err(Error::Perm);
        }
        let geo = *host.s2.geometry();
        host.reserve_tables(&self.ram, self.pa_bits, tables_needed(&geo, range.size()))?;
        Ok(self.checked(range, host, hyp))
    }

    /// Table pages for a host annotation and an EL2 mapping of `range`.
    pub(crate) fn reserve_both(
        &self,
        host: &mut HostGuard<'_, P>,
        hyp: &HypGuard<'_, P>,
        range: PfnRange,
    ) -> Result<(), Error> {
        let geo = *host.s2.geometry();
        host.reserve_tables(&self.ram, self.pa_bits, tables_needed(&geo, range.size()))?;
        match hyp.s1.mm().can_allocate(tables_needed(hyp.s1.geometry(), range.size())) {
            true => Ok(()),
            false => Err(Error::NoMem),
        }
    }

    /// The hypervisor claims `nr` pages from `pfn` at boot ([`ClaimHyp`]).
    pub fn hyp_claim_boot(&self, pfn: u64, nr: u64) -> Result<(), Error> {
        self.check_claim_hyp(pfn, nr).map(|c| c.commit())
    }

    /// The host shares page `pfn` with the hypervisor.
    pub fn host_share_hyp(&self, pfn: u64) -> Result<(), Error> {
        self.check_share_hyp(pfn).map(|c| c.commit())
    }

    /// The host takes back page `pfn` from the hypervisor.
    pub fn host_unshare_hyp(&self, pfn: u64) -> Result<(), Error> {
        self.check_unshare_hyp(pfn).map(|c| c.commit())
    }

    /// The hypervisor pins `nr` shared pages from `pfn`.
    pub fn hyp_pin_shared(&self, pfn: u64, nr: u64) -> Result<(), Error> {
        self.check_pin_shared(pfn, nr).map(|c| c.commit())
    }

    /// The hypervisor unpins `nr` pages from `pfn`.
    pub fn hyp_unpin_shared(&self, pfn: u64, nr: u64) -> Result<(), Error> {
        self.check_unpin_shared(pfn, nr).map(|c| c.commit())
    }

    /// The host gives `nr` pages from `pfn` to the hypervisor.
    pub fn host_donate_hyp(&self, pfn: u64, nr: u64) -> Result<(), Error> {
        self.check_donate_hyp(pfn, nr).map(|c| c.commit())
    }

    /// The hypervisor gives `nr` pages from `pfn` back to the host. The
    /// caller has cleared them.
    pub fn hyp_donate_host(&self, pfn: u64, nr: u64) -> Result<(), Error> {
        self.check_hyp_donate_host(pfn, nr).map(|c| c.commit())
    }

    /// The host gives `nr` MMIO pages from `pfn` to the hypervisor.
    pub fn host_donate_hyp_mmio(&self, pfn: u64, nr: u64) -> Result<(), Error> {
        self.check_donate_mmio(pfn, nr).map(|c| c.commit())
    }

    /// The hypervisor gives `nr` MMIO pages from `pfn` back to the host.
    pub fn hyp_donate_host_mmio(&self, pfn: u64, nr: u64) -> Result<(), Error> {
        self.check_reclaim_mmio(pfn, nr).map(|c| c.commit())
    }
}

fn is_shared_with_hyp(m: &PageMeta) -> bool {
    m.host() == PageState::SharedOwned && m.hyp() == PageState::SharedBorrowed
}

/// A commit step that the check guaranteed: failing it means Warden's own
/// bookkeeping is wrong, which stops the machine.
pub(crate) fn checked_step<T, E: core::fmt::Debug>(r: Result<T, E>, what: &str) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("ownership invariant broken: {what} failed after its check ({e:?})"),
    }
}

impl<P: Platform> Checked<'_, '_, P, ShareHyp> {
    /// Host SharedOwned, hyp SharedBorrowed. No EL2 mapping until pinned.
    pub fn commit(self) {
        for m in self.metas() {
            m.set_host(PageState::SharedOwned);
            m.set_hyp(PageState::SharedBorrowed);
        }
    }
}

impl<P: Platform> Checked<'_, '_, P, UnshareHyp> {
    /// Host Owned, hyp NoPage.
    pub fn commit(self) {
        for m in self.metas() {
            m.set_host(PageState::Owned);
            m.set_hyp(PageState::NoPage);
        }
    }
}

impl<P: Platform> Checked<'_, '_, P, PinShared> {
    /// One more pin per page; the first maps the page at EL2.
    pub fn commit(mut self) {
        for (pfn, m) in self.range.pfns().zip(self.metas()) {
            if m.pins() == 0 {
                let pa = pfn << 12;
                checked_step(
                    self.hyp.s1.map(pa, 4096, pa, HYP_MEM, MapPolicy::PAGES),
                    "EL2 map of a pinned page",
                );
            }
            m.set_pins(m.pins() + 1);
        }
    }
}

impl<P: Platform> Checked<'_, '_, P, UnpinShared> {
    /// One pin less per page; the last unmaps the page at EL2.
    pub fn commit(mut self) {
        for (pfn, m) in self.range.pfns().zip(self.metas()) {
            m.set_pins(m.pins() - 1);
            if m.pins() == 0 {
                checked_step(self.hyp.s1.unmap(pfn << 12, 4096), "EL2 unmap of an unpinned page");
            }
        }
    }
}

impl<P: Platform> Checked<'_, '_, P, DonateHyp> {
    /// Record the hypervisor as owner in the host stage-2 (the host's
    /// mappings go, with broadcast invalidation), map the pages at EL2,
    /// host NoPage, hyp Owned; tell the hook.
    pub fn commit(mut self) {
        self.mp.commit_host_to_hyp(&mut self.host, &mut self.hyp, self.range);
    }
}

impl<P: Platform> Checked<'_, '_, P, HypDonateHost> {
    /// Unmap the pages at EL2, map them back into the host stage-2 (in
    /// place of the annotation), host Owned, hyp NoPage; tell the hook.
    pub fn commit(mut self) {
        self.mp.commit_hyp_to_host(&mut self.host, &mut self.hyp, self.range);
    }
}

impl<P: Platform> Checked<'_, '_, P, ClaimHyp> {
    /// Record the hypervisor as owner in the host stage-2, host NoPage, hyp
    /// Owned (the EL2 mapping exists already); tell the hook.
    pub fn commit(mut self) {
        let (base, size) = (self.range.base(), self.range.size());
        checked_step(
            self.host.s2.annotate(base, size, HYP_OWNED),
            "host stage-2 annotation of claimed memory",
        );
        for m in self.mp.ram.metas(self.range) {
            m.set_host(PageState::NoPage);
            m.set_hyp(PageState::Owned);
        }
        self.host.hook.host_ownership_changed(base, size, HostAccess::None);
    }
}

impl<P: Platform> Checked<'_, '_, P, DonateMmio> {
    /// Record the hypervisor as owner in the host stage-2 (unmapping the
    /// host's mappings), map the registers at EL2 as device memory; tell
    /// the hook.
    pub fn commit(mut self) {
        let (base, size) = (self.range.base(), self.range.size());
        checked_step(
            self.host.s2.annotate(base, size, HYP_OWNED),
            "host stage-2 annotation of MMIO",
        );
        checked_step(
            self.hyp.s1.map(base, size, base, HYP_MMIO, MapPolicy::PAGES),
            "EL2 map of donated MMIO",
        );
        self.host.hook.host_ownership_changed(base, size, HostAccess::None);
    }
}

impl<P: Platform> Checked<'_, '_, P, ReclaimMmio> {
    /// Unmap the registers at EL2 and give them back to the host stage-2;
    /// tell the hook.
    pub fn commit(mut self) {
        let (base, size) = (self.range.base(), self.range.size());
        checked_step(self.hyp.s1.unmap(base, size), "EL2 unmap of returned MMIO");
        checked_step(
            self.host.s2.map(base, size, base, HOST_MMIO, GIVE_BACK),
            "host stage-2 map of returned MMIO",
        );
        self.host.hook.host_ownership_changed(base, size, HostAccess::Mmio);
    }
}
