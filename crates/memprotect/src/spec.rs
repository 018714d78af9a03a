//! The executable specification of page ownership: a pure model of every
//! transition, used as the test oracle for the concrete implementation.
//!
//! The abstract state is a handful of finite maps:
//!
//! * per RAM page, the host state `H`, the hyp state `Y` and the pin count
//!   ([`SpecPage`]; untouched pages are `(Owned, NoPage, 0)`);
//! * per page (RAM or MMIO), the host stage-2 annotation recording who owns
//!   what the host lost ([`Annotation`]);
//! * the set of pages mapped at EL2 *by a transition* (pinned shared pages,
//!   donated RAM, donated MMIO);
//! * the ordered list of ownership-change events the IOMMU hook would see.
//!
//! Each transition is one step function. It first runs every check, in a
//! fixed order, and returns the first error; only then does it change the
//! state. A refused call therefore leaves the whole model (including the
//! event list) exactly as it was, and refuses a multi-page range as a whole.
//!
//! Check order, common to every transition:
//!
//! 1. Argument validation, [`Error::Inval`]: `nr == 0`; `pfn + nr`
//!    overflows; `(pfn + nr) << 12` overflows or exceeds `1 << pa_bits`.
//!    Single-page transitions use `nr = 1`.
//! 2. Kind of memory, [`Error::Perm`]: RAM transitions need the whole range
//!    inside *one* RAM region; MMIO transitions need no page of the range to
//!    be RAM.
//! 3. Per-page state checks, in the order each transition documents; a
//!    failure on any page refuses the whole range.
//!
//! Host stage-2 mappings made lazily on aborts are not part of the abstract
//! state: [`Spec::host_abort`] only decides, it changes nothing.
//!
//! This module is test-only (feature `spec`) and never part of the EL2
//! build, so it uses `alloc` freely.

extern crate alloc;

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use crate::types::{owner, AbortOutcome, Error, HostAccess, PageState, Region, PAGE_SHIFT};

/// The most pins a page can hold (pKVM keeps them in the `u16` refcount of
/// `struct hyp_page`); pinning a page at this count is refused with
/// [`Error::Busy`].
pub const MAX_PINS: u32 = u16::MAX as u32;

/// The abstract state of one RAM page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpecPage {
    /// The host's view of the page.
    pub host: PageState,
    /// The hypervisor's view of the page.
    pub hyp: PageState,
    /// How many times the hypervisor has pinned the (shared) page.
    pub pins: u32,
}

impl Default for SpecPage {
    /// Every page starts host-owned, not the hypervisor's, unpinned.
    fn default() -> SpecPage {
        SpecPage {
            host: PageState::Owned,
            hyp: PageState::NoPage,
            pins: 0,
        }
    }
}

/// A host stage-2 annotation: the page is not the host's, and this is whose
/// it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Annotation {
    /// The owner id (see [`crate::types::owner`]).
    pub owner: u8,
    /// Owner-specific metadata (0 for the hypervisor).
    pub meta: u64,
}

/// The annotation every donation to the hypervisor writes.
const HYP_ANNOTATION: Annotation = Annotation {
    owner: owner::HYP,
    meta: 0,
};

/// The executable specification: abstract ownership state and one step
/// function per transition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spec {
    /// RAM regions, as given to [`Spec::new`].
    ram: Vec<Region>,
    /// Width of the physical address space.
    pa_bits: u32,
    /// RAM pages whose state differs from [`SpecPage::default`].
    pages: BTreeMap<u64, SpecPage>,
    /// Host stage-2 annotations, by pfn (RAM or MMIO).
    annotations: BTreeMap<u64, Annotation>,
    /// Pages mapped at EL2 by a transition.
    hyp_mapped: BTreeSet<u64>,
    /// Ownership-change events not yet taken.
    events: Vec<(u64, u64, HostAccess)>,
}

impl Spec {
    /// The initial state: every RAM page host-owned, nothing annotated,
    /// nothing mapped at EL2, no events.
    ///
    /// `ram` lists the RAM regions (any order); everything else in the
    /// physical address space `[0, 1 << pa_bits)` is MMIO.
    ///
    /// # Panics
    ///
    /// On a malformed configuration (this is a test oracle): `pa_bits` not
    /// in `13..=64`, a region that is empty, not page-aligned, reaches past
    /// the physical address space, or overlaps another region.
    pub fn new(ram: &[Region], pa_bits: u32) -> Spec {
        assert!(
            (PAGE_SHIFT + 1..=64).contains(&pa_bits),
            "pa_bits {pa_bits} out of range"
        );
        let limit = 1u128 << pa_bits;
        let page_mask = (1u64 << PAGE_SHIFT) - 1;
        for (i, r) in ram.iter().enumerate() {
            assert!(r.size != 0, "empty RAM region {r:?}");
            assert!(
                r.base & page_mask == 0 && r.size & page_mask == 0,
                "unaligned RAM region {r:?}"
            );
            assert!(
                u128::from(r.base) + u128::from(r.size) <= limit,
                "RAM region {r:?} outside the PA space"
            );
            for s in &ram[..i] {
                assert!(
                    r.end() <= s.base || s.end() <= r.base,
                    "RAM regions {s:?} and {r:?} overlap"
                );
            }
        }
        Spec {
            ram: ram.to_vec(),
            pa_bits,
            pages: BTreeMap::new(),
            annotations: BTreeMap::new(),
            hyp_mapped: BTreeSet::new(),
            events: Vec::new(),
        }
    }

    // ---------------------------------------------------------------
    // Abstract state accessors
    // ---------------------------------------------------------------

    /// The state of RAM page `pfn`: [`SpecPage::default`] when untouched.
    /// Not-RAM pages have no page state (pKVM has no `hyp_page` for them)
    /// and also read as the default.
    pub fn page(&self, pfn: u64) -> SpecPage {
        self.pages.get(&pfn).cloned().unwrap_or_default()
    }

    /// The host stage-2 annotation of page `pfn` (RAM or MMIO), if any.
    pub fn annotation(&self, pfn: u64) -> Option<Annotation> {
        self.annotations.get(&pfn).copied()
    }

    /// Whether page `pfn` is mapped at EL2 by a transition: a shared page
    /// while pinned, donated RAM, donated MMIO. (Shared but unpinned pages
    /// are not mapped: pKVM 6.15+ maps on the first pin.)
    pub fn hyp_mapped(&self, pfn: u64) -> bool {
        self.hyp_mapped.contains(&pfn)
    }

    /// What the host may reach at page `pfn`:
    ///
    /// * outside the physical address space: [`HostAccess::None`];
    /// * RAM: [`HostAccess::Mem`] if the host state is `Owned` or
    ///   `SharedOwned`, else [`HostAccess::None`] (`NoPage`; `SharedBorrowed`
    ///   cannot arise yet and is treated like `NoPage`, matching
    ///   [`Spec::host_abort`]);
    /// * MMIO: [`HostAccess::None`] if annotated, else [`HostAccess::Mmio`].
    pub fn host_access(&self, pfn: u64) -> HostAccess {
        if !self.pfn_in_pa_space(pfn) {
            return HostAccess::None;
        }
        if self.is_ram(pfn) {
            match self.page(pfn).host {
                PageState::Owned | PageState::SharedOwned => HostAccess::Mem,
                PageState::SharedBorrowed | PageState::NoPage => HostAccess::None,
            }
        } else if self.annotations.contains_key(&pfn) {
            HostAccess::None
        } else {
            HostAccess::Mmio
        }
    }

    /// Whether page `pfn` lies in one of the RAM regions.
    pub fn is_ram(&self, pfn: u64) -> bool {
        match pfn.checked_mul(1 << PAGE_SHIFT) {
            Some(pa) => self.ram.iter().any(|r| r.contains(pa)),
            None => false,
        }
    }

    /// Every pfn whose abstract state differs from the initial one (page
    /// state, annotation or EL2 mapping), ascending, without duplicates.
    pub fn touched_pfns(&self) -> Vec<u64> {
        let mut all: BTreeSet<u64> = self.pages.keys().copied().collect();
        all.extend(self.annotations.keys().copied());
        all.extend(self.hyp_mapped.iter().copied());
        all.into_iter().collect()
    }

    /// The ownership-change events `(base, size, access)` since the last
    /// call, oldest first (one per successful donation or reclaim, covering
    /// its whole range; shares, pins and aborts emit none).
    pub fn take_hook_events(&mut self) -> Vec<(u64, u64, HostAccess)> {
        core::mem::take(&mut self.events)
    }

    /// Checks the model's own invariants (for property tests of the model and
    /// as a sanity net). With hosts and the hypervisor as the only components:
    ///
    /// * only RAM pages have page state, stored entries are not the default;
    /// * `(H, Y)` is one of `(Owned, NoPage)`, `(SharedOwned, SharedBorrowed)`,
    ///   `(NoPage, Owned)`;
    /// * `pins > 0` only on shared pages, `pins <= MAX_PINS`;
    /// * a RAM page is annotated iff `H == NoPage`, with the hyp annotation;
    /// * a RAM page is mapped at EL2 iff `Y == Owned` or `pins > 0`;
    /// * an MMIO page is mapped at EL2 iff annotated, with the hyp annotation;
    /// * everything lies in the physical address space.
    pub fn check_invariants(&self) -> Result<(), String> {
        for (&pfn, p) in &self.pages {
            if !self.is_ram(pfn) {
                return Err(format!("page state on non-RAM pfn {pfn:#x}"));
            }
            if *p == SpecPage::default() {
                return Err(format!("default page stored for pfn {pfn:#x}"));
            }
        }
        for (&pfn, a) in &self.annotations {
            if !self.pfn_in_pa_space(pfn) {
                return Err(format!("annotation outside PA space at {pfn:#x}"));
            }
            if *a != HYP_ANNOTATION {
                return Err(format!("unexpected annotation {a:?} at {pfn:#x}"));
            }
        }
        for &pfn in &self.hyp_mapped {
            if !self.pfn_in_pa_space(pfn) {
                return Err(format!("EL2 mapping outside PA space at {pfn:#x}"));
            }
        }
        for pfn in self.touched_pfns() {
            let mapped = self.hyp_mapped(pfn);
            let annotated = self.annotation(pfn).is_some();
            if self.is_ram(pfn) {
                let p = self.page(pfn);
                let pair_ok = matches!(
                    (p.host, p.hyp),
                    (PageState::Owned, PageState::NoPage)
                        | (PageState::SharedOwned, PageState::SharedBorrowed)
                        | (PageState::NoPage, PageState::Owned)
                );
                if !pair_ok {
                    return Err(format!("pfn {pfn:#x}: impossible state pair {p:?}"));
                }
                if p.pins > 0 && p.hyp != PageState::SharedBorrowed {
                    return Err(format!("pfn {pfn:#x}: pinned but not shared: {p:?}"));
                }
                if p.pins > MAX_PINS {
                    return Err(format!("pfn {pfn:#x}: too many pins: {p:?}"));
                }
                if annotated != (p.host == PageState::NoPage) {
                    return Err(format!("pfn {pfn:#x}: annotated {annotated} but host {:?}", p.host));
                }
                if mapped != (p.hyp == PageState::Owned || p.pins > 0) {
                    return Err(format!("pfn {pfn:#x}: hyp_mapped {mapped} but {p:?}"));
                }
            } else if mapped != annotated {
                return Err(format!(
                    "MMIO pfn {pfn:#x}: hyp_mapped {mapped} but annotated {annotated}"
                ));
            }
        }
        Ok(())
    }

    // ---------------------------------------------------------------
    // Transitions
    // ---------------------------------------------------------------

    /// The host shares page `pfn` with the hypervisor (`__pkvm_host_share_hyp`).
    ///
    /// Checks, in order:
    /// 1. `pfn + 1` overflows, or the page lies outside the PA space: `Inval`;
    /// 2. the page is not RAM: `Perm`;
    /// 3. `H != Owned`: `Perm`; `Y != NoPage`: `Perm`.
    ///
    /// Effect: `H = SharedOwned`, `Y = SharedBorrowed`. No EL2 mapping (made
    /// on the first pin, as in pKVM 6.15+), no annotation, no hook event (a
    /// share is not an ownership change).
    pub fn host_share_hyp(&mut self, pfn: u64) -> Result<(), Error> {
        self.check_ram_range(pfn, 1)?;
        let p = self.page(pfn);
        if p.host != PageState::Owned || p.hyp != PageState::NoPage {
            return Err(Error::Perm);
        }
        self.set_page(
            pfn,
            SpecPage {
                host: PageState::SharedOwned,
                hyp: PageState::SharedBorrowed,
                pins: p.pins,
            },
        );
        Ok(())
    }

    /// The host takes back a page it shared with the hypervisor
    /// (`__pkvm_host_unshare_hyp`).
    ///
    /// Checks, in order:
    /// 1. `pfn + 1` overflows, or the page lies outside the PA space: `Inval`;
    /// 2. the page is not RAM: `Perm`;
    /// 3. `H != SharedOwned` or `Y != SharedBorrowed`: `Perm`;
    /// 4. `pins > 0`: `Busy`.
    ///
    /// Effect: `H = Owned`, `Y = NoPage`. No hook event.
    pub fn host_unshare_hyp(&mut self, pfn: u64) -> Result<(), Error> {
        self.check_ram_range(pfn, 1)?;
        let p = self.page(pfn);
        if p.host != PageState::SharedOwned || p.hyp != PageState::SharedBorrowed {
            return Err(Error::Perm);
        }
        if p.pins > 0 {
            return Err(Error::Busy);
        }
        self.set_page(pfn, SpecPage::default());
        Ok(())
    }

    /// The hypervisor pins `nr` pages the host shared with it, starting at
    /// `pfn` (`hyp_pin_shared_mem`).
    ///
    /// Checks, in order:
    /// 1. argument validation (`nr == 0`, overflow, PA space): `Inval`;
    /// 2. the range is not inside one RAM region: `Perm`;
    /// 3. any page with `H != SharedOwned` or `Y != SharedBorrowed`: `Perm`
    ///    (checked over the whole range first);
    /// 4. any page with `pins == MAX_PINS`: `Busy`.
    ///
    /// Effect: `pins += 1` on every page; every page is mapped at EL2 (while
    /// `pins > 0`). No hook event.
    pub fn hyp_pin_shared(&mut self, pfn: u64, nr: u64) -> Result<(), Error> {
        self.check_ram_range(pfn, nr)?;
        let range = pfn..pfn + nr;
        if range.clone().any(|q| !self.is_shared_with_hyp(q)) {
            return Err(Error::Perm);
        }
        if range.clone().any(|q| self.page(q).pins >= MAX_PINS) {
            return Err(Error::Busy);
        }
        for q in range {
            let mut p = self.page(q);
            p.pins += 1;
            self.set_page(q, p);
            self.hyp_mapped.insert(q);
        }
        Ok(())
    }

    /// The hypervisor drops one pin on each of `nr` pages starting at `pfn`
    /// (`hyp_unpin_shared_mem`).
    ///
    /// Checks, in order:
    /// 1. argument validation (`nr == 0`, overflow, PA space): `Inval`;
    /// 2. the range is not inside one RAM region: `Perm`;
    /// 3. any page with `H != SharedOwned`, `Y != SharedBorrowed` or
    ///    `pins == 0`: `Inval` (unpinning what is not pinned is a malformed
    ///    request, not a permission matter).
    ///
    /// Effect: `pins -= 1` on every page; a page whose count reaches 0 is
    /// unmapped from EL2. No hook event.
    pub fn hyp_unpin_shared(&mut self, pfn: u64, nr: u64) -> Result<(), Error> {
        self.check_ram_range(pfn, nr)?;
        let range = pfn..pfn + nr;
        if range
            .clone()
            .any(|q| !self.is_shared_with_hyp(q) || self.page(q).pins == 0)
        {
            return Err(Error::Inval);
        }
        for q in range {
            let mut p = self.page(q);
            p.pins -= 1;
            if p.pins == 0 {
                self.hyp_mapped.remove(&q);
            }
            self.set_page(q, p);
        }
        Ok(())
    }

    /// The host gives `nr` RAM pages starting at `pfn` to the hypervisor
    /// (`__pkvm_host_donate_hyp`).
    ///
    /// Checks, in order:
    /// 1. argument validation (`nr == 0`, overflow, PA space): `Inval`;
    /// 2. the range is not inside one RAM region: `Perm`;
    /// 3. any page with `H != Owned` or `Y != NoPage`: `Perm`.
    ///
    /// Effect on every page: `H = NoPage`, `Y = Owned`, annotation
    /// `{owner: HYP, meta: 0}`, mapped at EL2. One hook event
    /// `(pfn << 12, nr << 12, HostAccess::None)`.
    pub fn host_donate_hyp(&mut self, pfn: u64, nr: u64) -> Result<(), Error> {
        self.check_ram_range(pfn, nr)?;
        let range = pfn..pfn + nr;
        if range.clone().any(|q| {
            let p = self.page(q);
            p.host != PageState::Owned || p.hyp != PageState::NoPage
        }) {
            return Err(Error::Perm);
        }
        for q in range {
            let pins = self.page(q).pins;
            self.set_page(
                q,
                SpecPage {
                    host: PageState::NoPage,
                    hyp: PageState::Owned,
                    pins,
                },
            );
            self.annotations.insert(q, HYP_ANNOTATION);
            self.hyp_mapped.insert(q);
        }
        self.event(pfn, nr, HostAccess::None);
        Ok(())
    }

    /// The hypervisor gives `nr` RAM pages starting at `pfn` back to the host
    /// (`__pkvm_hyp_donate_host`).
    ///
    /// Checks, in order:
    /// 1. argument validation (`nr == 0`, overflow, PA space): `Inval`;
    /// 2. the range is not inside one RAM region: `Perm`;
    /// 3. any page with `Y != Owned` or `H != NoPage`: `Perm` (checked over
    ///    the whole range first);
    /// 4. any page with `pins > 0`: `Busy` (unreachable through the
    ///    transitions, which pin only shared pages; kept as pKVM keeps it).
    ///
    /// Effect on every page: `Y = NoPage`, `H = Owned`, annotation removed,
    /// unmapped from EL2. One hook event `(pfn << 12, nr << 12,
    /// HostAccess::Mem)`.
    pub fn hyp_donate_host(&mut self, pfn: u64, nr: u64) -> Result<(), Error> {
        self.check_ram_range(pfn, nr)?;
        let range = pfn..pfn + nr;
        if range.clone().any(|q| {
            let p = self.page(q);
            p.hyp != PageState::Owned || p.host != PageState::NoPage
        }) {
            return Err(Error::Perm);
        }
        if range.clone().any(|q| self.page(q).pins > 0) {
            return Err(Error::Busy);
        }
        for q in range {
            self.set_page(q, SpecPage::default());
            self.annotations.remove(&q);
            self.hyp_mapped.remove(&q);
        }
        self.event(pfn, nr, HostAccess::Mem);
        Ok(())
    }

    /// The host gives `nr` pages of MMIO starting at `pfn` to the hypervisor
    /// (`__pkvm_host_donate_hyp_mmio`, SMMU series).
    ///
    /// Checks, in order:
    /// 1. argument validation (`nr == 0`, overflow, PA space): `Inval`;
    /// 2. any page of the range is RAM: `Perm`;
    /// 3. any page already annotated: `Perm`;
    /// 4. any page already mapped at EL2: `Perm`.
    ///
    /// Effect on every page: annotation `{owner: HYP, meta: 0}`, mapped at
    /// EL2 (Warden maps the device registers it owns). One hook event
    /// `(pfn << 12, nr << 12, HostAccess::None)`.
    pub fn host_donate_hyp_mmio(&mut self, pfn: u64, nr: u64) -> Result<(), Error> {
        self.check_mmio_range(pfn, nr)?;
        let range = pfn..pfn + nr;
        if range.clone().any(|q| self.annotations.contains_key(&q)) {
            return Err(Error::Perm);
        }
        if range.clone().any(|q| self.hyp_mapped.contains(&q)) {
            return Err(Error::Perm);
        }
        for q in range {
            self.annotations.insert(q, HYP_ANNOTATION);
            self.hyp_mapped.insert(q);
        }
        self.event(pfn, nr, HostAccess::None);
        Ok(())
    }

    /// The hypervisor gives `nr` pages of MMIO starting at `pfn` back to the
    /// host (`__pkvm_hyp_donate_host_mmio`, SMMU series).
    ///
    /// Checks, in order:
    /// 1. argument validation (`nr == 0`, overflow, PA space): `Inval`;
    /// 2. any page of the range is RAM: `Perm`;
    /// 3. any page not annotated with owner `HYP`: `Perm` (an annotated page
    ///    is never mapped by the host, so this also covers "not mapped by the
    ///    host").
    ///
    /// Effect on every page: annotation removed, unmapped from EL2. One hook
    /// event `(pfn << 12, nr << 12, HostAccess::Mmio)`.
    pub fn hyp_donate_host_mmio(&mut self, pfn: u64, nr: u64) -> Result<(), Error> {
        self.check_mmio_range(pfn, nr)?;
        let range = pfn..pfn + nr;
        if range
            .clone()
            .any(|q| self.annotation(q).map(|a| a.owner) != Some(owner::HYP))
        {
            return Err(Error::Perm);
        }
        for q in range {
            self.annotations.remove(&q);
            self.hyp_mapped.remove(&q);
        }
        self.event(pfn, nr, HostAccess::Mmio);
        Ok(())
    }

    /// The host's stage-2 faulted at physical address `pa` (any alignment).
    ///
    /// * `pa >= 1 << pa_bits`: `Inject`;
    /// * RAM: `Handled` if the host state is `Owned` or `SharedOwned`, else
    ///   `Inject`;
    /// * not RAM: `Inject` if annotated, else `Handled`.
    ///
    /// Changes no abstract state (the lazy host mapping is not part of it)
    /// and emits no hook event. Always agrees with [`Spec::host_access`]:
    /// `Handled` exactly when the host may access the page.
    pub fn host_abort(&mut self, pa: u64) -> AbortOutcome {
        if u128::from(pa) >= self.pa_limit() {
            return AbortOutcome::Inject;
        }
        let pfn = pa >> PAGE_SHIFT;
        let handled = if self.is_ram(pfn) {
            matches!(self.page(pfn).host, PageState::Owned | PageState::SharedOwned)
        } else {
            !self.annotations.contains_key(&pfn)
        };
        if handled {
            AbortOutcome::Handled
        } else {
            AbortOutcome::Inject
        }
    }

    // ---------------------------------------------------------------
    // Helpers
    // ---------------------------------------------------------------

    /// `1 << pa_bits`, which may be `1 << 64`.
    fn pa_limit(&self) -> u128 {
        1u128 << self.pa_bits
    }

    /// Whether page `pfn` lies wholly inside the PA space.
    fn pfn_in_pa_space(&self, pfn: u64) -> bool {
        u128::from(pfn) < self.pa_limit() >> PAGE_SHIFT
    }

    /// Argument validation: `Inval` if `nr == 0`, `pfn + nr` overflows,
    /// `(pfn + nr) << 12` overflows, or exceeds `1 << pa_bits`. On success,
    /// the byte range `[pfn << 12, (pfn + nr) << 12)`.
    fn check_args(&self, pfn: u64, nr: u64) -> Result<(u64, u64), Error> {
        if nr == 0 {
            return Err(Error::Inval);
        }
        let end = pfn.checked_add(nr).ok_or(Error::Inval)?;
        if end > u64::MAX >> PAGE_SHIFT {
            return Err(Error::Inval);
        }
        let end_pa = end << PAGE_SHIFT;
        if u128::from(end_pa) > self.pa_limit() {
            return Err(Error::Inval);
        }
        Ok((pfn << PAGE_SHIFT, end_pa))
    }

    /// Validation for RAM transitions: arguments, then the whole range
    /// inside one RAM region (`Perm` otherwise).
    fn check_ram_range(&self, pfn: u64, nr: u64) -> Result<(), Error> {
        let (base, end) = self.check_args(pfn, nr)?;
        if self.ram.iter().any(|r| r.base <= base && end <= r.end()) {
            Ok(())
        } else {
            Err(Error::Perm)
        }
    }

    /// Validation for MMIO transitions: arguments, then no page of the range
    /// in RAM (`Perm` otherwise).
    fn check_mmio_range(&self, pfn: u64, nr: u64) -> Result<(), Error> {
        let (base, end) = self.check_args(pfn, nr)?;
        if self.ram.iter().any(|r| r.base < end && base < r.end()) {
            Err(Error::Perm)
        } else {
            Ok(())
        }
    }

    /// Whether the page is shared by the host with the hypervisor.
    fn is_shared_with_hyp(&self, pfn: u64) -> bool {
        let p = self.page(pfn);
        p.host == PageState::SharedOwned && p.hyp == PageState::SharedBorrowed
    }

    /// Stores a page's state, keeping only non-default entries.
    fn set_page(&mut self, pfn: u64, p: SpecPage) {
        if p == SpecPage::default() {
            self.pages.remove(&pfn);
        } else {
            self.pages.insert(pfn, p);
        }
    }

    /// Records an ownership-change event for `nr` pages at `pfn`.
    fn event(&mut self, pfn: u64, nr: u64, access: HostAccess) {
        self.events.push((pfn << PAGE_SHIFT, nr << PAGE_SHIFT, access));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{PAGE_SIZE, PA_BITS};

    const RAM0: Region = Region {
        base: 0x4000_0000,
        size: 256 << 20,
    };
    const RAM1: Region = Region {
        base: 0x8000_0000,
        size: 64 << 20,
    };
    /// A page in the middle of RAM0.
    const P: u64 = 0x4010_0000 >> PAGE_SHIFT;
    /// The first page of MMIO (a UART-like device).
    const M: u64 = 0x0900_0000 >> PAGE_SHIFT;
    /// The last page of RAM0.
    const RAM0_LAST: u64 = (0x4000_0000 + (256 << 20)) / PAGE_SIZE - 1;
    /// One past the last pfn of the 48-bit PA space.
    const PFN_LIMIT: u64 = 1 << (PA_BITS - PAGE_SHIFT);

    fn spec() -> Spec {
        Spec::new(&[RAM0, RAM1], PA_BITS)
    }

    fn pg(host: PageState, hyp: PageState, pins: u32) -> SpecPage {
        SpecPage { host, hyp, pins }
    }

    use PageState::{NoPage, Owned, SharedBorrowed, SharedOwned};

    /// Runs `f`, which must fail with `want`, and checks nothing changed.
    fn refused(s: &mut Spec, want: Error, f: impl FnOnce(&mut Spec) -> Result<(), Error>) {
        let before = s.clone();
        assert_eq!(f(s), Err(want));
        assert_eq!(*s, before, "a refused transition changed the state");
    }

    /// A spec where `P` is shared and pinned `n` times.
    fn pinned(n: u32) -> Spec {
        let mut s = spec();
        s.host_share_hyp(P).unwrap();
        for _ in 0..n {
            s.hyp_pin_shared(P, 1).unwrap();
        }
        s
    }

    // ----- Initial state and accessors -----

    #[test]
    fn initial_state() {
        let mut s = spec();
        assert_eq!(s.page(P), pg(Owned, NoPage, 0));
        assert_eq!(s.page(M), SpecPage::default());
        assert!(s.touched_pfns().is_empty());
        assert!(s.take_hook_events().is_empty());
        assert!(s.is_ram(P) && s.is_ram(RAM0_LAST) && !s.is_ram(RAM0_LAST + 1));
        assert!(!s.is_ram(M) && !s.is_ram(u64::MAX));
        assert_eq!(s.host_access(P), HostAccess::Mem);
        assert_eq!(s.host_access(M), HostAccess::Mmio);
        assert_eq!(s.host_access(PFN_LIMIT - 1), HostAccess::Mmio);
        assert_eq!(s.host_access(PFN_LIMIT), HostAccess::None);
        assert_eq!(s.host_access(u64::MAX), HostAccess::None);
        assert_eq!(s.annotation(P), None);
        assert!(!s.hyp_mapped(P));
        s.check_invariants().unwrap();
    }

    #[test]
    #[should_panic]
    fn overlapping_regions_are_refused() {
        let _ = Spec::new(
            &[
                RAM0,
                Region {
                    base: RAM0.base + PAGE_SIZE,
                    size: PAGE_SIZE,
                },
            ],
            PA_BITS,
        );
    }

    #[test]
    #[should_panic]
    fn region_beyond_pa_space_is_refused() {
        let _ = Spec::new(
            &[Region {
                base: (1 << 40) - PAGE_SIZE,
                size: 2 * PAGE_SIZE,
            }],
            40,
        );
    }

    // ----- Argument validation (every transition) -----

    type Multi = fn(&mut Spec, u64, u64) -> Result<(), Error>;
    const MULTI: [(&str, Multi); 6] = [
        ("hyp_pin_shared", Spec::hyp_pin_shared),
        ("hyp_unpin_shared", Spec::hyp_unpin_shared),
        ("host_donate_hyp", Spec::host_donate_hyp),
        ("hyp_donate_host", Spec::hyp_donate_host),
        ("host_donate_hyp_mmio", Spec::host_donate_hyp_mmio),
        ("hyp_donate_host_mmio", Spec::hyp_donate_host_mmio),
    ];
    type Single = fn(&mut Spec, u64) -> Result<(), Error>;
    const SINGLE: [(&str, Single); 2] = [
        ("host_share_hyp", Spec::host_share_hyp),
        ("host_unshare_hyp", Spec::host_unshare_hyp),
    ];

    #[test]
    fn hostile_arguments_are_inval() {
        let bad: [(u64, u64); 8] = [
            (P, 0),
            (M, 0),
            (u64::MAX, 1),
            (1, u64::MAX),
            (u64::MAX >> PAGE_SHIFT, 1),       // (pfn + nr) << 12 overflows
            ((u64::MAX >> PAGE_SHIFT) - 1, 1), // exactly 2^64: overflows too
            (PFN_LIMIT, 1),                    // first page beyond PA space
            (PFN_LIMIT - 1, 2),                // crosses the end of PA space
        ];
        for (name, f) in MULTI {
            for (pfn, nr) in bad {
                let mut s = pinned(1);
                s.host_donate_hyp(RAM0_LAST, 1).unwrap();
                let before = s.clone();
                assert_eq!(f(&mut s, pfn, nr), Err(Error::Inval), "{name}({pfn:#x}, {nr})");
                assert_eq!(s, before);
            }
        }
        for (name, f) in SINGLE {
            for pfn in [u64::MAX, u64::MAX >> PAGE_SHIFT, PFN_LIMIT, PFN_LIMIT + 5] {
                let mut s = spec();
                assert_eq!(f(&mut s, pfn), Err(Error::Inval), "{name}({pfn:#x})");
                assert_eq!(s, spec());
            }
        }
    }

    #[test]
    fn inval_comes_before_kind_and_state() {
        // nr == 0 on a range that would also be the wrong kind and state.
        let mut s = spec();
        refused(&mut s, Error::Inval, |s| s.hyp_unpin_shared(M, 0));
        refused(&mut s, Error::Inval, |s| s.host_donate_hyp_mmio(P, 0));
        refused(&mut s, Error::Inval, |s| s.hyp_donate_host(M, 0));
    }

    #[test]
    fn last_page_of_pa_space_is_valid() {
        let mut s = spec();
        s.host_donate_hyp_mmio(PFN_LIMIT - 1, 1).unwrap();
        assert_eq!(s.host_access(PFN_LIMIT - 1), HostAccess::None);
        assert_eq!(s.host_abort((PFN_LIMIT << PAGE_SHIFT) - 1), AbortOutcome::Inject);
        // RAM transitions on it are Perm (not RAM), not Inval.
        refused(&mut s, Error::Perm, |s| s.host_share_hyp(PFN_LIMIT - 1));
        s.hyp_donate_host_mmio(PFN_LIMIT - 1, 1).unwrap();
        s.check_invariants().unwrap();
    }

    #[test]
    fn full_64_bit_pa_space() {
        let mut s = Spec::new(&[RAM0], 64);
        let last = u64::MAX >> PAGE_SHIFT;
        // (last + 1) << 12 == 2^64 overflows u64: Inval even with 64 PA bits.
        refused(&mut s, Error::Inval, |s| s.host_donate_hyp_mmio(last, 1));
        s.host_donate_hyp_mmio(last - 1, 1).unwrap();
        assert_eq!(s.host_abort(u64::MAX), AbortOutcome::Handled);
    }

    // ----- Kind of memory -----

    #[test]
    fn ram_transitions_refuse_mmio_and_crossing_ranges() {
        for (name, f) in MULTI[..4].iter().copied() {
            for (pfn, nr) in [
                (M, 1),
                (RAM0_LAST, 2),                     // crosses the end of RAM0
                ((RAM0.base >> PAGE_SHIFT) - 1, 2), // crosses the start of RAM0
                (RAM0.base >> PAGE_SHIFT, 1 << 20), // RAM0 through the gap and RAM1
            ] {
                let mut s = spec();
                let before = s.clone();
                assert_eq!(f(&mut s, pfn, nr), Err(Error::Perm), "{name}({pfn:#x}, {nr})");
                assert_eq!(s, before);
            }
        }
        for (_, f) in SINGLE {
            let mut s = spec();
            refused(&mut s, Error::Perm, |s| f(s, M));
            refused(&mut s, Error::Perm, |s| f(s, RAM0_LAST + 1));
        }
    }

    #[test]
    fn adjacent_ram_regions_are_not_one_region() {
        let a = Region {
            base: 0x4000_0000,
            size: 0x10_0000,
        };
        let b = Region {
            base: 0x4010_0000,
            size: 0x10_0000,
        };
        let mut s = Spec::new(&[a, b], PA_BITS);
        let last_a = (a.end() >> PAGE_SHIFT) - 1;
        refused(&mut s, Error::Perm, |s| s.host_donate_hyp(last_a, 2));
        // Each side alone is fine.
        s.host_donate_hyp(last_a, 1).unwrap();
        s.host_donate_hyp(last_a + 1, 1).unwrap();
        refused(&mut s, Error::Perm, |s| s.hyp_donate_host(last_a, 2));
        // Not MMIO either.
        refused(&mut s, Error::Perm, |s| s.host_donate_hyp_mmio(last_a, 2));
    }

    #[test]
    fn mmio_transitions_refuse_any_ram_page() {
        for (pfn, nr) in [
            (P, 1),
            ((RAM0.base >> PAGE_SHIFT) - 1, 2), // MMIO then first RAM page
            (RAM0_LAST, 2),                     // last RAM page then MMIO
            (0, 1 << 24),                       // everything up to 64 GiB
        ] {
            let mut s = spec();
            refused(&mut s, Error::Perm, |s| s.host_donate_hyp_mmio(pfn, nr));
            refused(&mut s, Error::Perm, |s| s.hyp_donate_host_mmio(pfn, nr));
        }
        // Even a RAM page donated to hyp (so hyp-owned and annotated).
        let mut s = spec();
        s.host_donate_hyp(P, 1).unwrap();
        s.take_hook_events();
        refused(&mut s, Error::Perm, |s| s.hyp_donate_host_mmio(P, 1));
    }

    // ----- host_share_hyp -----

    #[test]
    fn share_hyp_success() {
        let mut s = spec();
        s.host_share_hyp(P).unwrap();
        assert_eq!(s.page(P), pg(SharedOwned, SharedBorrowed, 0));
        assert!(!s.hyp_mapped(P), "shares are mapped at the first pin");
        assert_eq!(s.annotation(P), None);
        assert_eq!(s.host_access(P), HostAccess::Mem);
        assert_eq!(s.host_abort(P << PAGE_SHIFT), AbortOutcome::Handled);
        assert!(s.take_hook_events().is_empty());
        assert_eq!(s.touched_pfns(), [P]);
        s.check_invariants().unwrap();
    }

    #[test]
    fn share_hyp_errors() {
        let mut s = spec();
        s.host_share_hyp(P).unwrap();
        refused(&mut s, Error::Perm, |s| s.host_share_hyp(P)); // H SharedOwned
        let mut s = spec();
        s.host_donate_hyp(P, 1).unwrap();
        refused(&mut s, Error::Perm, |s| s.host_share_hyp(P)); // H NoPage
                                                               // H Owned but Y not NoPage: unreachable through transitions.
        let mut s = spec();
        s.pages.insert(P, pg(Owned, SharedBorrowed, 0));
        refused(&mut s, Error::Perm, |s| s.host_share_hyp(P));
    }

    // ----- host_unshare_hyp -----

    #[test]
    fn unshare_hyp_success() {
        let mut s = spec();
        s.host_share_hyp(P).unwrap();
        s.host_unshare_hyp(P).unwrap();
        assert_eq!(s.page(P), SpecPage::default());
        assert!(s.touched_pfns().is_empty());
        assert!(s.take_hook_events().is_empty());
        assert_eq!(s, spec());
    }

    #[test]
    fn unshare_hyp_errors() {
        let mut s = spec();
        refused(&mut s, Error::Perm, |s| s.host_unshare_hyp(P)); // not shared
        s.host_donate_hyp(P, 1).unwrap();
        refused(&mut s, Error::Perm, |s| s.host_unshare_hyp(P)); // donated
        let mut s = pinned(1);
        refused(&mut s, Error::Busy, |s| s.host_unshare_hyp(P));
        s.hyp_unpin_shared(P, 1).unwrap();
        s.host_unshare_hyp(P).unwrap();
        // Perm comes before Busy: a pinned count on a non-shared page (not
        // reachable through transitions) is still Perm.
        let mut s = spec();
        s.pages.insert(P, pg(NoPage, Owned, 3));
        refused(&mut s, Error::Perm, |s| s.host_unshare_hyp(P));
    }

    // ----- hyp_pin_shared / hyp_unpin_shared -----

    #[test]
    fn pin_unpin_success() {
        let mut s = spec();
        for q in P..P + 3 {
            s.host_share_hyp(q).unwrap();
        }
        s.hyp_pin_shared(P, 3).unwrap();
        s.hyp_pin_shared(P + 1, 1).unwrap();
        for q in P..P + 3 {
            assert!(s.hyp_mapped(q));
        }
        assert_eq!(s.page(P + 1), pg(SharedOwned, SharedBorrowed, 2));
        s.check_invariants().unwrap();
        s.hyp_unpin_shared(P, 3).unwrap();
        assert!(!s.hyp_mapped(P) && !s.hyp_mapped(P + 2));
        assert!(s.hyp_mapped(P + 1));
        assert_eq!(s.page(P), pg(SharedOwned, SharedBorrowed, 0));
        assert_eq!(s.page(P + 1), pg(SharedOwned, SharedBorrowed, 1));
        s.check_invariants().unwrap();
        s.hyp_unpin_shared(P + 1, 1).unwrap();
        assert!(!s.hyp_mapped(P + 1));
        assert!(s.take_hook_events().is_empty());
        for q in P..P + 3 {
            s.host_unshare_hyp(q).unwrap();
        }
        assert_eq!(s, spec());
    }

    #[test]
    fn pin_errors() {
        let mut s = spec();
        refused(&mut s, Error::Perm, |s| s.hyp_pin_shared(P, 1)); // host owned
        s.host_donate_hyp(P, 1).unwrap();
        refused(&mut s, Error::Perm, |s| s.hyp_pin_shared(P, 1)); // hyp owned
                                                                  // One unshared page in the range refuses it all.
        let mut s = spec();
        s.host_share_hyp(P).unwrap();
        s.host_share_hyp(P + 2).unwrap();
        refused(&mut s, Error::Perm, |s| s.hyp_pin_shared(P, 3));
    }

    #[test]
    fn pin_count_saturates_busy() {
        let mut s = pinned(MAX_PINS);
        assert_eq!(s.page(P).pins, MAX_PINS);
        refused(&mut s, Error::Busy, |s| s.hyp_pin_shared(P, 1));
        // A saturated page refuses a range; the others are not pinned.
        s.host_share_hyp(P + 1).unwrap();
        refused(&mut s, Error::Busy, |s| s.hyp_pin_shared(P, 2));
        assert_eq!(s.page(P + 1).pins, 0);
        // Perm is checked over the whole range before Busy.
        refused(&mut s, Error::Perm, |s| s.hyp_pin_shared(P, 3));
        s.hyp_unpin_shared(P, 1).unwrap();
        s.hyp_pin_shared(P, 2).unwrap();
        s.check_invariants().unwrap();
    }

    #[test]
    fn unpin_errors_are_inval() {
        let mut s = spec();
        refused(&mut s, Error::Inval, |s| s.hyp_unpin_shared(P, 1)); // not shared
        s.host_share_hyp(P).unwrap();
        refused(&mut s, Error::Inval, |s| s.hyp_unpin_shared(P, 1)); // not pinned
        s.hyp_pin_shared(P, 1).unwrap();
        s.host_share_hyp(P + 1).unwrap();
        refused(&mut s, Error::Inval, |s| s.hyp_unpin_shared(P, 2)); // P+1 unpinned
        let mut d = spec();
        d.host_donate_hyp(P, 1).unwrap();
        refused(&mut d, Error::Inval, |s| s.hyp_unpin_shared(P, 1)); // donated
                                                                     // Kind still comes before state: MMIO is Perm.
        refused(&mut s, Error::Perm, |s| s.hyp_unpin_shared(M, 1));
    }

    // ----- host_donate_hyp -----

    #[test]
    fn donate_hyp_success() {
        let mut s = spec();
        s.host_donate_hyp(P, 4).unwrap();
        for q in P..P + 4 {
            assert_eq!(s.page(q), pg(NoPage, Owned, 0));
            assert_eq!(
                s.annotation(q),
                Some(Annotation {
                    owner: owner::HYP,
                    meta: 0
                })
            );
            assert!(s.hyp_mapped(q));
            assert_eq!(s.host_access(q), HostAccess::None);
            assert_eq!(s.host_abort((q << PAGE_SHIFT) + 0x123), AbortOutcome::Inject);
        }
        assert_eq!(s.page(P + 4), SpecPage::default());
        assert_eq!(
            s.take_hook_events(),
            [(P << PAGE_SHIFT, 4 * PAGE_SIZE, HostAccess::None)]
        );
        assert!(s.take_hook_events().is_empty(), "events are taken once");
        assert_eq!(s.touched_pfns(), [P, P + 1, P + 2, P + 3]);
        s.check_invariants().unwrap();
        // A whole region at once, at its very end.
        let mut s = spec();
        s.host_donate_hyp(RAM1.base >> PAGE_SHIFT, RAM1.size >> PAGE_SHIFT)
            .unwrap();
        assert_eq!(s.take_hook_events(), [(RAM1.base, RAM1.size, HostAccess::None)]);
    }

    #[test]
    fn donate_hyp_errors() {
        let mut s = spec();
        s.host_donate_hyp(P + 2, 1).unwrap();
        s.take_hook_events();
        refused(&mut s, Error::Perm, |s| s.host_donate_hyp(P + 2, 1)); // again
        refused(&mut s, Error::Perm, |s| s.host_donate_hyp(P, 4)); // one page taken
        s.host_share_hyp(P).unwrap();
        refused(&mut s, Error::Perm, |s| s.host_donate_hyp(P, 1)); // shared
        s.hyp_pin_shared(P, 1).unwrap();
        refused(&mut s, Error::Perm, |s| s.host_donate_hyp(P, 1)); // pinned
        assert!(s.take_hook_events().is_empty());
    }

    // ----- hyp_donate_host -----

    #[test]
    fn hyp_donate_host_success() {
        let mut s = spec();
        s.host_donate_hyp(P, 4).unwrap();
        s.hyp_donate_host(P + 1, 2).unwrap();
        assert_eq!(s.page(P), pg(NoPage, Owned, 0));
        assert_eq!(s.page(P + 1), SpecPage::default());
        assert_eq!(s.annotation(P + 1), None);
        assert!(!s.hyp_mapped(P + 2));
        assert_eq!(s.host_abort((P + 1) << PAGE_SHIFT), AbortOutcome::Handled);
        assert_eq!(
            s.take_hook_events(),
            [
                (P << PAGE_SHIFT, 4 * PAGE_SIZE, HostAccess::None),
                ((P + 1) << PAGE_SHIFT, 2 * PAGE_SIZE, HostAccess::Mem),
            ]
        );
        assert_eq!(s.touched_pfns(), [P, P + 3]);
        s.check_invariants().unwrap();
        s.hyp_donate_host(P, 1).unwrap();
        s.hyp_donate_host(P + 3, 1).unwrap();
        s.take_hook_events();
        assert_eq!(s, spec());
    }

    #[test]
    fn hyp_donate_host_errors() {
        let mut s = spec();
        refused(&mut s, Error::Perm, |s| s.hyp_donate_host(P, 1)); // host owned
        s.host_share_hyp(P).unwrap();
        refused(&mut s, Error::Perm, |s| s.hyp_donate_host(P, 1)); // shared
        s.hyp_pin_shared(P, 1).unwrap();
        refused(&mut s, Error::Perm, |s| s.hyp_donate_host(P, 1)); // pinned share
        s.host_donate_hyp(P + 1, 1).unwrap();
        s.take_hook_events();
        refused(&mut s, Error::Perm, |s| s.hyp_donate_host(P + 1, 2)); // P+2 host's
                                                                       // Busy: a hyp-owned page with pins (not reachable through the
                                                                       // transitions) is refused, and Perm anywhere wins over Busy.
        let mut s = spec();
        s.host_donate_hyp(P, 2).unwrap();
        s.take_hook_events();
        s.pages.insert(P + 1, pg(NoPage, Owned, 1));
        refused(&mut s, Error::Busy, |s| s.hyp_donate_host(P, 2));
        refused(&mut s, Error::Perm, |s| s.hyp_donate_host(P, 3));
    }

    // ----- MMIO -----

    #[test]
    fn mmio_donate_reclaim_success() {
        let mut s = spec();
        assert_eq!(s.host_abort(M << PAGE_SHIFT), AbortOutcome::Handled);
        s.host_donate_hyp_mmio(M, 2).unwrap();
        for q in [M, M + 1] {
            assert_eq!(
                s.annotation(q),
                Some(Annotation {
                    owner: owner::HYP,
                    meta: 0
                })
            );
            assert!(s.hyp_mapped(q));
            assert_eq!(s.host_access(q), HostAccess::None);
            assert_eq!(s.host_abort((q << PAGE_SHIFT) | 0xff8), AbortOutcome::Inject);
            assert_eq!(s.page(q), SpecPage::default(), "MMIO has no page state");
        }
        assert_eq!(s.host_access(M + 2), HostAccess::Mmio);
        s.check_invariants().unwrap();
        s.hyp_donate_host_mmio(M + 1, 1).unwrap();
        assert_eq!(s.host_abort((M + 1) << PAGE_SHIFT), AbortOutcome::Handled);
        assert!(!s.hyp_mapped(M + 1));
        assert_eq!(s.annotation(M + 1), None);
        assert_eq!(s.touched_pfns(), [M]);
        assert_eq!(
            s.take_hook_events(),
            [
                (M << PAGE_SHIFT, 2 * PAGE_SIZE, HostAccess::None),
                ((M + 1) << PAGE_SHIFT, PAGE_SIZE, HostAccess::Mmio),
            ]
        );
        s.hyp_donate_host_mmio(M, 1).unwrap();
        s.take_hook_events();
        assert_eq!(s, spec());
    }

    #[test]
    fn mmio_donate_errors() {
        let mut s = spec();
        s.host_donate_hyp_mmio(M + 1, 1).unwrap();
        s.take_hook_events();
        refused(&mut s, Error::Perm, |s| s.host_donate_hyp_mmio(M + 1, 1)); // again
        refused(&mut s, Error::Perm, |s| s.host_donate_hyp_mmio(M, 3)); // overlaps
        refused(&mut s, Error::Perm, |s| s.host_donate_hyp_mmio(P, 1)); // RAM
                                                                        // Mapped at EL2 without annotation (not reachable through the
                                                                        // transitions): still Perm.
        let mut s = spec();
        s.hyp_mapped.insert(M);
        refused(&mut s, Error::Perm, |s| s.host_donate_hyp_mmio(M, 1));
        // Annotated for another owner: Perm.
        let mut s = spec();
        s.annotations.insert(
            M,
            Annotation {
                owner: owner::GUEST,
                meta: 7,
            },
        );
        refused(&mut s, Error::Perm, |s| s.host_donate_hyp_mmio(M, 1));
    }

    #[test]
    fn mmio_reclaim_errors() {
        let mut s = spec();
        refused(&mut s, Error::Perm, |s| s.hyp_donate_host_mmio(M, 1)); // not donated
        s.host_donate_hyp_mmio(M, 1).unwrap();
        s.take_hook_events();
        refused(&mut s, Error::Perm, |s| s.hyp_donate_host_mmio(M, 2)); // M+1 not
        refused(&mut s, Error::Perm, |s| s.hyp_donate_host(M, 1)); // RAM op on MMIO
                                                                   // Annotated for another owner: Perm.
        let mut s = spec();
        s.annotations.insert(
            M,
            Annotation {
                owner: owner::GUEST,
                meta: 7,
            },
        );
        refused(&mut s, Error::Perm, |s| s.hyp_donate_host_mmio(M, 1));
    }

    // ----- host_abort -----

    #[test]
    fn host_abort_outcomes() {
        let mut s = spec();
        assert_eq!(s.host_abort(0), AbortOutcome::Handled);
        assert_eq!(s.host_abort(RAM0.base), AbortOutcome::Handled);
        assert_eq!(s.host_abort(RAM0.end() - 1), AbortOutcome::Handled);
        assert_eq!(s.host_abort((1 << PA_BITS) - 1), AbortOutcome::Handled);
        assert_eq!(s.host_abort(1 << PA_BITS), AbortOutcome::Inject);
        assert_eq!(s.host_abort(u64::MAX), AbortOutcome::Inject);
        s.host_share_hyp(P).unwrap();
        s.hyp_pin_shared(P, 1).unwrap();
        assert_eq!(s.host_abort(P << PAGE_SHIFT), AbortOutcome::Handled);
        s.host_donate_hyp(P + 1, 1).unwrap();
        s.take_hook_events();
        let before = s.clone();
        assert_eq!(s.host_abort((P + 1) << PAGE_SHIFT), AbortOutcome::Inject);
        assert_eq!(s, before, "aborts change nothing");
    }

    // ----- Model sanity: random sequences -----

    /// xorshift64*: a tiny deterministic generator (no dependencies).
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// Random calls on a small window of pages: invariants hold after every
    /// step, refusals change nothing, successes emit exactly the documented
    /// events, and `host_abort` agrees with `host_access`.
    #[test]
    fn random_sequences_keep_invariants() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let starts = [P, RAM0_LAST - 2, M, (RAM0.base >> PAGE_SHIFT) - 2, PFN_LIMIT - 2];
        for _ in 0..200 {
            let mut s = spec();
            for _ in 0..200 {
                let pfn = starts[rng.below(starts.len() as u64) as usize] + rng.below(5);
                let nr = rng.below(4);
                let before = s.clone();
                let op = rng.below(9);
                let r = match op {
                    0 => s.host_share_hyp(pfn),
                    1 => s.host_unshare_hyp(pfn),
                    2 => s.hyp_pin_shared(pfn, nr),
                    3 => s.hyp_unpin_shared(pfn, nr),
                    4 => s.host_donate_hyp(pfn, nr),
                    5 => s.hyp_donate_host(pfn, nr),
                    6 => s.host_donate_hyp_mmio(pfn, nr),
                    7 => s.hyp_donate_host_mmio(pfn, nr),
                    _ => {
                        let pa = (pfn << PAGE_SHIFT) | rng.below(PAGE_SIZE);
                        let want = if s.host_access(pfn) == HostAccess::None {
                            AbortOutcome::Inject
                        } else {
                            AbortOutcome::Handled
                        };
                        assert_eq!(s.host_abort(pa), want);
                        Ok(())
                    }
                };
                let events = s.take_hook_events();
                match r {
                    Err(_) => {
                        assert!(events.is_empty());
                        assert_eq!(s, before, "op {op} ({pfn:#x}, {nr}) refused but changed state");
                    }
                    Ok(()) => {
                        let want = match op {
                            4 | 6 => Some(HostAccess::None),
                            5 => Some(HostAccess::Mem),
                            7 => Some(HostAccess::Mmio),
                            _ => None,
                        };
                        match want {
                            Some(a) => assert_eq!(events, [(pfn << PAGE_SHIFT, nr << PAGE_SHIFT, a)]),
                            None => assert!(events.is_empty()),
                        }
                    }
                }
                s.check_invariants().unwrap();
            }
        }
    }
}
