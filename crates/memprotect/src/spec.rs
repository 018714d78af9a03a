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
//! # Guests
//!
//! Guests (VMs, `docs/memprotect.md`, "Guests") add, per slot of the VM
//! table ([`MAX_VMS`] slots, handle = slot + 1): the VM's parameters
//! ([`SpecVm`]), its valid stage-2 leaves by first gfn ([`SpecLeaf`]: page
//! or 2 MiB block, guest state, permissions, access flag) and its poisoned
//! gfns; per RAM page, [`SpecPage::guest_shares`]; host annotations with
//! owner [`owner::GUEST`]; and the ordered list of poisoned pfns. The
//! guest calls check, in this order (the first failure is the result):
//!
//! 1. static arguments, [`Error::Inval`]: a `pfn` range past the PA space
//!    (as above), `nr` neither 1 nor [`BLOCK_PAGES`], with a block `pfn`
//!    or `gfn` not block-aligned;
//! 2. the VM, [`Error::NoEnt`]: handle 0, past [`MAX_VMS`], an empty slot,
//!    a dying VM (except for reclaim/finalize, which see dying VMs and
//!    refuse live ones with [`Error::Perm`]);
//! 3. the kind of VM, [`Error::Perm`];
//! 4. the gfn range inside the IPA space, [`Error::Inval`] (every call
//!    taking a gfn, with `nr = 1` when it takes no `nr`);
//! 5. the pfn range inside one RAM region, [`Error::Perm`];
//! 6. page and mapping states, per call;
//! 7. table pages: the model has unlimited memory, so never
//!    [`Error::NoMem`] (only [`Spec::init_vm`] with no free slot).
//!
//! Where the document leaves a choice open, the decision is written in the
//! step function's doc comment under "Reading of the document".
//!
//! This module is test-only (feature `spec`) and never part of the EL2
//! build, so it uses `alloc` freely.

extern crate alloc;

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use warden_pgtable::Perms;

use crate::types::{
    guest_meta, guest_meta_decode, owner, AbortOutcome, Error, Handle, HostAccess, PageState, Region, BLOCK_PAGES,
    GUEST_MAX_IPA_BITS, GUEST_MIN_IPA_BITS, MAX_VMS, PAGE_SHIFT,
};

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
    /// How many non-protected guest leaves the host shared the page with
    /// (`PageMeta::guest_shares`): each maps it `SharedBorrowed`.
    pub guest_shares: u32,
}

impl Default for SpecPage {
    /// Every page starts host-owned, not the hypervisor's, unpinned, not
    /// shared with any guest.
    fn default() -> SpecPage {
        SpecPage {
            host: PageState::Owned,
            hyp: PageState::NoPage,
            pins: 0,
            guest_shares: 0,
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

/// The abstract parameters of a VM (live or dying).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpecVm {
    /// A protected VM (memory donated) rather than a non-protected one
    /// (memory shared by the host); fixed at creation.
    pub protected: bool,
    /// After [`Spec::start_teardown_vm`].
    pub dying: bool,
    /// The VMID of its stage-2 (non-zero, unique among the VMs in slots).
    pub vmid: u16,
    /// Width of its IPA space, [`GUEST_MIN_IPA_BITS`]..=[`GUEST_MAX_IPA_BITS`].
    pub ipa_bits: u8,
    /// First page of the VM metadata donated to the hypervisor at creation.
    pub meta_pfn: u64,
    /// Number of metadata pages.
    pub meta_nr: u64,
}

/// A valid leaf of a guest stage-2: a page or a 2 MiB block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpecLeaf {
    /// First gfn the leaf maps.
    pub gfn: u64,
    /// First pfn it maps to.
    pub pfn: u64,
    /// Pages it maps: 1 or [`BLOCK_PAGES`].
    pub nr: u64,
    /// The guest's state of the pages (never `NoPage`).
    pub state: PageState,
    /// Stage-2 permissions.
    pub perms: Perms,
    /// The access flag.
    pub young: bool,
}

impl SpecLeaf {
    /// Whether the leaf maps `gfn`.
    fn covers(&self, gfn: u64) -> bool {
        self.gfn <= gfn && gfn - self.gfn < self.nr
    }

    /// The pfns the leaf maps.
    fn pfns(&self) -> core::ops::Range<u64> {
        self.pfn..self.pfn + self.nr
    }
}

/// One VM slot's abstract state.
#[derive(Clone, Debug, PartialEq, Eq)]
struct SpecVmState {
    /// Its parameters.
    vm: SpecVm,
    /// Its valid stage-2 leaves, by first gfn (pairwise disjoint).
    leaves: BTreeMap<u64, SpecLeaf>,
    /// Its poisoned (force-reclaimed) gfns, never covered by a leaf.
    poisoned: BTreeSet<u64>,
}

impl SpecVmState {
    /// The valid leaf mapping `gfn`, if any.
    fn leaf(&self, gfn: u64) -> Option<&SpecLeaf> {
        self.leaves
            .range(..=gfn)
            .next_back()
            .map(|(_, l)| l)
            .filter(|l| l.covers(gfn))
    }

    /// Whether every entry of `[gfn, gfn + nr)` is empty: no leaf maps any
    /// of it and none is poisoned. `gfn + nr` must not overflow.
    fn entries_empty(&self, gfn: u64, nr: u64) -> bool {
        let end = gfn + nr;
        let mapped = self
            .leaves
            .range(..end)
            .next_back()
            .is_some_and(|(_, l)| l.gfn + l.nr > gfn);
        !mapped && self.poisoned.range(gfn..end).next().is_none()
    }

    /// One past the last gfn of the IPA space.
    fn gfn_limit(&self) -> u64 {
        1 << (u32::from(self.vm.ipa_bits) - PAGE_SHIFT)
    }
}

/// The annotation a donation to guest `h` at `gfn` writes.
const fn guest_annotation(h: Handle, gfn: u64) -> Annotation {
    Annotation {
        owner: owner::GUEST,
        meta: guest_meta(h, gfn),
    }
}

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
    /// The VM table: slot `i` holds the VM of handle `i + 1`.
    vms: [Option<SpecVmState>; MAX_VMS],
    /// Pfns poisoned and not yet taken, in order.
    poisoned: Vec<u64>,
}

impl Spec {
    /// The initial state: every RAM page host-owned, nothing annotated,
    /// nothing mapped at EL2, no VMs, no events, nothing poisoned.
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
            vms: Default::default(),
            poisoned: Vec::new(),
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
    /// * RAM: [`HostAccess::Mem`] if the host state is `Owned`,
    ///   `SharedOwned` or `SharedBorrowed` (a protected guest shared its page
    ///   back: the host stage-2 maps it), else ([`PageState::NoPage`])
    ///   [`HostAccess::None`];
    /// * MMIO: [`HostAccess::None`] if annotated, else [`HostAccess::Mmio`].
    pub fn host_access(&self, pfn: u64) -> HostAccess {
        if !self.pfn_in_pa_space(pfn) {
            return HostAccess::None;
        }
        if self.is_ram(pfn) {
            match self.page(pfn).host {
                PageState::Owned | PageState::SharedOwned | PageState::SharedBorrowed => HostAccess::Mem,
                PageState::NoPage => HostAccess::None,
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
    /// state including `guest_shares`, annotation, EL2 mapping, or mapped by
    /// a guest leaf), ascending, without duplicates.
    pub fn touched_pfns(&self) -> Vec<u64> {
        let mut all: BTreeSet<u64> = self.pages.keys().copied().collect();
        all.extend(self.annotations.keys().copied());
        all.extend(self.hyp_mapped.iter().copied());
        for v in self.vms.iter().flatten() {
            for l in v.leaves.values() {
                all.extend(l.pfns());
            }
        }
        all.into_iter().collect()
    }

    /// The ownership-change events `(base, size, access)` since the last
    /// call, oldest first: one per successful donation or reclaim, covering
    /// its whole range, as each step function documents. Host/hyp shares,
    /// pins, host-guest shares and their permission/age calls, teardown's
    /// start and aborts emit none.
    pub fn take_hook_events(&mut self) -> Vec<(u64, u64, HostAccess)> {
        core::mem::take(&mut self.events)
    }

    /// The pfns poisoned (zeroed before the host may touch them again) since
    /// the last call, in order: a reclaimed guest `Owned`/`SharedOwned`
    /// page, a force-reclaimed page, the metadata pages of a finalized VM
    /// (ascending).
    pub fn take_poisoned(&mut self) -> Vec<u64> {
        core::mem::take(&mut self.poisoned)
    }

    /// The VM of handle `h`, live or dying; `None` for a bad handle or an
    /// empty slot.
    pub fn vm(&self, h: Handle) -> Option<SpecVm> {
        self.vm_state(h).map(|v| v.vm)
    }

    /// The valid leaf of VM `h`'s stage-2 that maps `gfn` (a page, or the
    /// block containing it), if any. Poisoned entries are not leaves.
    pub fn guest_leaf(&self, h: Handle, gfn: u64) -> Option<SpecLeaf> {
        self.vm_state(h)?.leaf(gfn).copied()
    }

    /// Whether `gfn` of VM `h` is poisoned (force-reclaimed).
    pub fn guest_poisoned(&self, h: Handle, gfn: u64) -> bool {
        self.vm_state(h).is_some_and(|v| v.poisoned.contains(&gfn))
    }

    /// The first gfn of every leaf and every poisoned gfn of VM `h`,
    /// ascending (empty without a VM).
    pub fn guest_gfns(&self, h: Handle) -> Vec<u64> {
        let Some(v) = self.vm_state(h) else {
            return Vec::new();
        };
        let mut all: BTreeSet<u64> = v.leaves.keys().copied().collect();
        all.extend(v.poisoned.iter().copied());
        all.into_iter().collect()
    }

    /// Checks the model's own invariants (for property tests of the model and
    /// as a sanity net):
    ///
    /// * only RAM pages have page state, stored entries are not the default;
    /// * annotations lie in the PA space; an MMIO page can only carry the hyp
    ///   annotation; a RAM page the hyp annotation or a guest one;
    /// * `pins > 0` only on pages shared with the hyp, `pins <= MAX_PINS`;
    /// * a RAM page is mapped at EL2 iff `Y == Owned` or `pins > 0`; an MMIO
    ///   page iff annotated;
    /// * every VM: VMID non-zero and unique, IPA size in range; its leaves
    ///   pairwise disjoint, inside its IPA space, 1 or [`BLOCK_PAGES`] pages
    ///   (a block gfn- and pfn-aligned), mapping one RAM region; a
    ///   non-protected VM's leaves `SharedBorrowed`, a protected VM's single
    ///   pages `Owned` or `SharedOwned`, RWX; poisoned gfns only in protected
    ///   VMs, inside the IPA space, under no leaf;
    /// * per RAM page, with `G` the guest leaves (of live or dying VMs)
    ///   mapping it, `(H, Y)` is one of
    ///   * `(Owned, NoPage)`: no `G`, `guest_shares == 0`, no annotation;
    ///   * `(SharedOwned, SharedBorrowed)` (shared with the hyp): no `G`,
    ///     `guest_shares == 0`, no annotation;
    ///   * `(SharedOwned, NoPage)` (shared with guests): `guest_shares > 0`
    ///     leaves, all `SharedBorrowed`, no annotation;
    ///   * `(NoPage, Owned)`: the hyp annotation, no `G`, no shares;
    ///   * `(NoPage, NoPage)`: a guest annotation `(h, gfn)` and exactly one
    ///     `G`: VM `h`'s `Owned` leaf at `gfn`; no shares;
    ///   * `(SharedBorrowed, NoPage)`: no annotation, exactly one `G`, a
    ///     `SharedOwned` leaf (of a protected VM, by the per-VM rules).
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
            let ok = *a == HYP_ANNOTATION || (a.owner == owner::GUEST && self.is_ram(pfn));
            if !ok {
                return Err(format!("unexpected annotation {a:?} at {pfn:#x}"));
            }
        }
        for &pfn in &self.hyp_mapped {
            if !self.pfn_in_pa_space(pfn) {
                return Err(format!("EL2 mapping outside PA space at {pfn:#x}"));
            }
        }
        // Per VM, and the guest mappings of every pfn: (handle, gfn, state).
        let mut maps: BTreeMap<u64, Vec<(Handle, u64, PageState)>> = BTreeMap::new();
        for (i, v) in self.vms.iter().enumerate() {
            let Some(v) = v else { continue };
            let h = (i + 1) as Handle;
            self.check_vm_invariants(h, v)?;
            for l in v.leaves.values() {
                for (k, q) in l.pfns().enumerate() {
                    maps.entry(q).or_default().push((h, l.gfn + k as u64, l.state));
                }
            }
        }
        let mut all: BTreeSet<u64> = self.touched_pfns().into_iter().collect();
        all.extend(maps.keys().copied());
        for pfn in all {
            let mapped = self.hyp_mapped(pfn);
            let annotation = self.annotation(pfn);
            let g = maps.get(&pfn).map_or(&[][..], Vec::as_slice);
            if !self.is_ram(pfn) {
                if mapped != annotation.is_some() {
                    return Err(format!(
                        "MMIO pfn {pfn:#x}: hyp_mapped {mapped} but annotation {annotation:?}"
                    ));
                }
                if !g.is_empty() {
                    return Err(format!("MMIO pfn {pfn:#x} mapped by guests {g:?}"));
                }
                continue;
            }
            let p = self.page(pfn);
            if p.pins > 0 && p.hyp != PageState::SharedBorrowed {
                return Err(format!("pfn {pfn:#x}: pinned but not shared: {p:?}"));
            }
            if p.pins > MAX_PINS {
                return Err(format!("pfn {pfn:#x}: too many pins: {p:?}"));
            }
            if mapped != (p.hyp == PageState::Owned || p.pins > 0) {
                return Err(format!("pfn {pfn:#x}: hyp_mapped {mapped} but {p:?}"));
            }
            let only = |st: PageState| g.len() == 1 && g[0].2 == st;
            let why = match (p.host, p.hyp) {
                (PageState::Owned, PageState::NoPage) | (PageState::SharedOwned, PageState::SharedBorrowed) => {
                    if annotation.is_some() {
                        Some("annotated")
                    } else if p.guest_shares != 0 || !g.is_empty() {
                        Some("shared with or mapped by a guest")
                    } else {
                        None
                    }
                }
                (PageState::SharedOwned, PageState::NoPage) => {
                    if annotation.is_some() {
                        Some("annotated")
                    } else if p.guest_shares == 0
                        || g.len() != p.guest_shares as usize
                        || g.iter().any(|m| m.2 != PageState::SharedBorrowed)
                    {
                        Some("guest_shares is not the number of SharedBorrowed guest leaves")
                    } else {
                        None
                    }
                }
                (PageState::NoPage, PageState::Owned) => {
                    if annotation != Some(HYP_ANNOTATION) {
                        Some("hyp-owned without the hyp annotation")
                    } else if p.guest_shares != 0 || !g.is_empty() {
                        Some("hyp-owned but shared with or mapped by a guest")
                    } else {
                        None
                    }
                }
                (PageState::NoPage, PageState::NoPage) => match annotation {
                    Some(a) if a.owner == owner::GUEST => {
                        let (h, gfn) = guest_meta_decode(a.meta);
                        if p.guest_shares != 0 || g != [(h, gfn, PageState::Owned)] {
                            Some("guest annotation is not the one Owned guest leaf mapping the page")
                        } else {
                            None
                        }
                    }
                    _ => Some("host NoPage, hyp NoPage without a guest annotation"),
                },
                (PageState::SharedBorrowed, PageState::NoPage) => {
                    if annotation.is_some() {
                        Some("annotated")
                    } else if p.guest_shares != 0 || !only(PageState::SharedOwned) {
                        Some("not mapped by exactly one SharedOwned guest leaf")
                    } else {
                        None
                    }
                }
                _ => Some("impossible state pair"),
            };
            if let Some(why) = why {
                return Err(format!(
                    "pfn {pfn:#x}: {why}: {p:?}, annotation {annotation:?}, guest leaves {g:?}"
                ));
            }
        }
        Ok(())
    }

    /// The per-VM part of [`Spec::check_invariants`].
    fn check_vm_invariants(&self, h: Handle, v: &SpecVmState) -> Result<(), String> {
        let vm = v.vm;
        if vm.vmid == 0 {
            return Err(format!("VM {h}: VMID 0"));
        }
        if self.vms.iter().flatten().filter(|w| w.vm.vmid == vm.vmid).count() != 1 {
            return Err(format!("VM {h}: VMID {} not unique", vm.vmid));
        }
        if !(GUEST_MIN_IPA_BITS..=GUEST_MAX_IPA_BITS).contains(&vm.ipa_bits) {
            return Err(format!("VM {h}: IPA size {}", vm.ipa_bits));
        }
        let limit = v.gfn_limit();
        let aligned = |n: u64| n.is_multiple_of(BLOCK_PAGES);
        let mut prev_end = 0;
        for (&gfn, l) in &v.leaves {
            let bad = if l.gfn != gfn {
                Some("stored under another gfn")
            } else if gfn < prev_end {
                Some("overlaps the previous leaf")
            } else if !(l.nr == 1 || (l.nr == BLOCK_PAGES && aligned(gfn) && aligned(l.pfn))) {
                Some("bad size or alignment")
            } else if gfn.checked_add(l.nr).is_none_or(|e| e > limit) {
                Some("outside the IPA space")
            } else if self.check_ram_range(l.pfn, l.nr).is_err() {
                Some("not inside one RAM region")
            } else if vm.protected
                && !(l.nr == 1 && l.perms == Perms::RWX && matches!(l.state, PageState::Owned | PageState::SharedOwned))
            {
                Some("a protected VM's leaf must be one RWX page, Owned or SharedOwned")
            } else if !vm.protected && l.state != PageState::SharedBorrowed {
                Some("a non-protected VM's leaf must be SharedBorrowed")
            } else {
                None
            };
            if let Some(bad) = bad {
                return Err(format!("VM {h}: leaf {l:?}: {bad}"));
            }
            prev_end = gfn + l.nr;
        }
        for &gfn in &v.poisoned {
            if !vm.protected || gfn >= limit || v.leaf(gfn).is_some() {
                return Err(format!("VM {h} ({vm:?}): bad poisoned gfn {gfn:#x}"));
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
                ..p
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
        self.check_host_donate_hyp(pfn, nr)?;
        self.commit_host_donate_hyp(pfn, nr);
        Ok(())
    }

    /// The checks of [`Spec::host_donate_hyp`].
    fn check_host_donate_hyp(&self, pfn: u64, nr: u64) -> Result<(), Error> {
        self.check_ram_range(pfn, nr)?;
        if (pfn..pfn + nr).any(|q| {
            let p = self.page(q);
            p.host != PageState::Owned || p.hyp != PageState::NoPage
        }) {
            return Err(Error::Perm);
        }
        Ok(())
    }

    /// The effects of [`Spec::host_donate_hyp`], after its checks.
    fn commit_host_donate_hyp(&mut self, pfn: u64, nr: u64) {
        for q in pfn..pfn + nr {
            let p = self.page(q);
            self.set_page(
                q,
                SpecPage {
                    host: PageState::NoPage,
                    hyp: PageState::Owned,
                    ..p
                },
            );
            self.annotations.insert(q, HYP_ANNOTATION);
            self.hyp_mapped.insert(q);
        }
        self.event(pfn, nr, HostAccess::None);
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
        self.check_hyp_donate_host(pfn, nr)?;
        self.commit_hyp_donate_host(pfn, nr);
        Ok(())
    }

    /// The checks of [`Spec::hyp_donate_host`].
    fn check_hyp_donate_host(&self, pfn: u64, nr: u64) -> Result<(), Error> {
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
        Ok(())
    }

    /// The effects of [`Spec::hyp_donate_host`], after its checks.
    fn commit_hyp_donate_host(&mut self, pfn: u64, nr: u64) {
        for q in pfn..pfn + nr {
            self.set_page(q, SpecPage::default());
            self.annotations.remove(&q);
            self.hyp_mapped.remove(&q);
        }
        self.event(pfn, nr, HostAccess::Mem);
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

    // ---------------------------------------------------------------
    // Guests
    // ---------------------------------------------------------------

    /// The host creates a VM (`__pkvm_init_vm`): a stage-2 of `ipa_bits`
    /// with `vmid`, protected or not, with `meta_nr` pages of VM metadata at
    /// `meta_pfn` donated to the hypervisor.
    ///
    /// Checks, in order:
    /// 1. `ipa_bits` outside [`GUEST_MIN_IPA_BITS`]..=[`GUEST_MAX_IPA_BITS`]:
    ///    `Inval`; `vmid == 0` or used by a VM in a slot (live or dying):
    ///    `Inval`;
    /// 2. the metadata range as [`Spec::host_donate_hyp`]: arguments
    ///    (`meta_nr == 0`, overflow, PA space) `Inval`; not inside one RAM
    ///    region `Perm`; a page not `(Owned, NoPage)` `Perm`;
    /// 3. no free slot: `NoMem`.
    ///
    /// Effect: the metadata pages donated to the hypervisor exactly as
    /// [`Spec::host_donate_hyp`] (hyp annotation, mapped at EL2,
    /// `(NoPage, Owned)`, one hook event `(meta_pfn << 12, meta_nr << 12,
    /// None)`); the lowest free slot holds the VM, live, with an empty
    /// stage-2. Returns its handle (slot + 1).
    ///
    /// Reading of the document: the stage-2 argument is modelled by its IPA
    /// size and VMID ("stage 2" itself cannot fail here); a free slot is
    /// checked last, as listed, so a full table still reports metadata
    /// errors first; `meta_nr == 0` is `Inval` (the common argument check).
    pub fn init_vm(
        &mut self,
        ipa_bits: u8,
        vmid: u16,
        protected: bool,
        meta_pfn: u64,
        meta_nr: u64,
    ) -> Result<Handle, Error> {
        if !(GUEST_MIN_IPA_BITS..=GUEST_MAX_IPA_BITS).contains(&ipa_bits) {
            return Err(Error::Inval);
        }
        if vmid == 0 || self.vms.iter().flatten().any(|v| v.vm.vmid == vmid) {
            return Err(Error::Inval);
        }
        self.check_host_donate_hyp(meta_pfn, meta_nr)?;
        let slot = self.vms.iter().position(Option::is_none).ok_or(Error::NoMem)?;
        self.commit_host_donate_hyp(meta_pfn, meta_nr);
        self.vms[slot] = Some(SpecVmState {
            vm: SpecVm {
                protected,
                dying: false,
                vmid,
                ipa_bits,
                meta_pfn,
                meta_nr,
            },
            leaves: BTreeMap::new(),
            poisoned: BTreeSet::new(),
        });
        Ok((slot + 1) as Handle)
    }

    /// The host shares `nr` pages at `pfn` with non-protected VM `h` at
    /// `gfn` (`__pkvm_host_share_guest`): one page, or one block.
    ///
    /// Checks, in order:
    /// 1. `pfn + nr` overflowing or past the PA space, `nr` neither 1 nor
    ///    [`BLOCK_PAGES`], a block with `pfn` or `gfn` unaligned: `Inval`;
    /// 2. no live VM `h`: `NoEnt`;
    /// 3. a protected VM: `Perm`;
    /// 4. `[gfn, gfn + nr)` not inside the IPA space: `Inval`;
    /// 5. `[pfn, pfn + nr)` not inside one RAM region: `Perm`;
    /// 6. any guest entry of the gfn range not empty (a leaf maps part of
    ///    it, or it is poisoned): `Perm`; then page by page in order, the
    ///    first failing page giving the result: host `Owned` passes; host
    ///    `SharedOwned` with `guest_shares == u32::MAX` is `Busy`, with
    ///    `guest_shares` in `1..u32::MAX` passes; anything else is `Perm`.
    ///
    /// Effect: every page host `SharedOwned`, `guest_shares + 1` (hyp state
    /// unchanged: `NoPage`); one leaf `{gfn, pfn, nr, SharedBorrowed, prot,
    /// young: true}`. No hook event (a share).
    ///
    /// Reading of the document: any `prot`, `Perms::NONE` included, is
    /// accepted and recorded exactly (only bits outside RWX are refused in
    /// pKVM, and `Perms` has none); host `Owned` is enough whatever the hyp
    /// state (it is `NoPage` in every reachable state).
    pub fn host_share_guest(&mut self, h: Handle, pfn: u64, gfn: u64, nr: u64, prot: Perms) -> Result<(), Error> {
        self.check_args(pfn, nr)?;
        Self::check_guest_size(gfn, nr)?;
        if nr == BLOCK_PAGES && !pfn.is_multiple_of(BLOCK_PAGES) {
            return Err(Error::Inval);
        }
        let v = self.live_vm(h)?;
        Self::check_kind(v, false)?;
        Self::check_gfn_range(v, gfn, nr)?;
        self.check_ram_range(pfn, nr)?;
        if !v.entries_empty(gfn, nr) {
            return Err(Error::Perm);
        }
        for q in pfn..pfn + nr {
            let p = self.page(q);
            match (p.host, p.guest_shares) {
                (PageState::Owned, _) => {}
                (PageState::SharedOwned, u32::MAX) => return Err(Error::Busy),
                (PageState::SharedOwned, 1..) => {}
                _ => return Err(Error::Perm),
            }
        }
        for q in pfn..pfn + nr {
            let p = self.page(q);
            self.set_page(
                q,
                SpecPage {
                    host: PageState::SharedOwned,
                    guest_shares: p.guest_shares + 1,
                    ..p
                },
            );
        }
        self.vm_mut(h).leaves.insert(
            gfn,
            SpecLeaf {
                gfn,
                pfn,
                nr,
                state: PageState::SharedBorrowed,
                perms: prot,
                young: true,
            },
        );
        Ok(())
    }

    /// The host takes back the `nr` pages it shared with non-protected VM
    /// `h` at `gfn` (`__pkvm_host_unshare_guest`).
    ///
    /// Checks, in order:
    /// 1. `nr` neither 1 nor [`BLOCK_PAGES`], a block with `gfn` unaligned:
    ///    `Inval`;
    /// 2. no live VM `h`: `NoEnt`;
    /// 3. a protected VM: `Perm`;
    /// 4. `[gfn, gfn + nr)` not inside the IPA space: `Inval`;
    /// 5. no valid leaf maps `gfn`: `NoEnt`; the leaf's size is not `nr`
    ///    pages: `TooBig`; the leaf not `SharedBorrowed`: `Perm`; a page of
    ///    the leaf not host `SharedOwned` with `guest_shares > 0`: `Perm`
    ///    (the last two cannot fail in reachable states).
    ///
    /// Effect: the leaf removed; on each of its pages `guest_shares - 1`,
    /// and host `Owned` when that reaches 0. No hook event.
    ///
    /// Reading of the document: "a valid leaf at `gfn`" is the leaf whose
    /// range contains `gfn`, so `nr = 1` on a page inside a block (even its
    /// first) is `TooBig`, and so is `nr = 512` on a page leaf (any size
    /// other than `nr`, not only a larger one).
    pub fn host_unshare_guest(&mut self, h: Handle, gfn: u64, nr: u64) -> Result<(), Error> {
        let leaf = self.check_np_leaf_sized(h, gfn, nr)?;
        self.vm_mut(h).leaves.remove(&leaf.gfn);
        self.drop_guest_share(&leaf);
        Ok(())
    }

    /// The host adds `prot` to the permissions of the leaf of non-protected
    /// VM `h` mapping `gfn` (`__pkvm_host_relax_perms_guest`).
    ///
    /// Checks, in order: no live VM `h`: `NoEnt`; a protected VM: `Perm`;
    /// `gfn` outside the IPA space: `Inval`; no valid leaf maps `gfn`:
    /// `NoEnt`; the leaf not `SharedBorrowed`: `Perm`; a page of the leaf
    /// not host `SharedOwned` with `guest_shares > 0`: `Perm` ("the host
    /// really shared this", in every build).
    ///
    /// Effect: the leaf's permissions become `perms ∪ prot` (the access flag
    /// unchanged). No hook event.
    ///
    /// Reading of the document: a `gfn` inside a block acts on the whole
    /// block (the leaf is what has permissions); `Perms::NONE` succeeds and
    /// changes nothing.
    pub fn host_relax_perms_guest(&mut self, h: Handle, gfn: u64, prot: Perms) -> Result<(), Error> {
        let leaf = self.check_np_leaf(h, gfn)?;
        self.leaf_mut(h, leaf.gfn).perms = leaf.perms.union(prot);
        Ok(())
    }

    /// The host removes write permission from the leaf of non-protected VM
    /// `h` mapping `gfn` (`__pkvm_host_wrprotect_guest`).
    ///
    /// Checks: as [`Spec::host_unshare_guest`] (`Inval`, `NoEnt`, `Perm`,
    /// `Inval`, `NoEnt`, `TooBig`, `Perm`, `Perm`).
    ///
    /// Effect: the leaf's `w` cleared (`r`, `x`, access flag unchanged). No
    /// hook event.
    pub fn host_wrprotect_guest(&mut self, h: Handle, gfn: u64, nr: u64) -> Result<(), Error> {
        let leaf = self.check_np_leaf_sized(h, gfn, nr)?;
        self.leaf_mut(h, leaf.gfn).perms.w = false;
        Ok(())
    }

    /// The host reads, and with `mkold` clears, the access flag of the leaf
    /// of non-protected VM `h` mapping `gfn`
    /// (`__pkvm_host_test_clear_young_guest`).
    ///
    /// Checks: as [`Spec::host_unshare_guest`].
    ///
    /// Effect: returns the flag as it was; clears it if `mkold`. No hook
    /// event.
    pub fn host_test_clear_young_guest(&mut self, h: Handle, gfn: u64, nr: u64, mkold: bool) -> Result<bool, Error> {
        let leaf = self.check_np_leaf_sized(h, gfn, nr)?;
        if mkold {
            self.leaf_mut(h, leaf.gfn).young = false;
        }
        Ok(leaf.young)
    }

    /// The host sets the access flag of the leaf of non-protected VM `h`
    /// mapping `gfn` (`__pkvm_host_mkyoung_guest`).
    ///
    /// Checks: as [`Spec::host_relax_perms_guest`].
    ///
    /// Effect: the leaf's access flag set. No hook event.
    pub fn host_mkyoung_guest(&mut self, h: Handle, gfn: u64) -> Result<(), Error> {
        let leaf = self.check_np_leaf(h, gfn)?;
        self.leaf_mut(h, leaf.gfn).young = true;
        Ok(())
    }

    /// The host gives page `pfn` to protected VM `h` at `gfn`
    /// (`__pkvm_host_donate_guest`).
    ///
    /// Checks, in order:
    /// 1. `pfn + 1` overflowing or past the PA space: `Inval`;
    /// 2. no live VM `h`: `NoEnt`;
    /// 3. a non-protected VM: `Perm`;
    /// 4. `gfn` outside the IPA space: `Inval`;
    /// 5. the page not RAM: `Perm`;
    /// 6. host state not `Owned`: `Perm`; the guest entry at `gfn` not empty
    ///    (a leaf, or poisoned): `Perm`.
    ///
    /// Effect: host `NoPage`, annotation `{GUEST, guest_meta(h, gfn)}`; leaf
    /// `{gfn, pfn, 1, Owned, RWX, young: true}`. Hook event `(pfn << 12,
    /// 4096, None)`. Nothing is poisoned.
    pub fn host_donate_guest(&mut self, h: Handle, pfn: u64, gfn: u64) -> Result<(), Error> {
        self.check_args(pfn, 1)?;
        let v = self.live_vm(h)?;
        Self::check_kind(v, true)?;
        Self::check_gfn_range(v, gfn, 1)?;
        self.check_ram_range(pfn, 1)?;
        if self.page(pfn).host != PageState::Owned || !v.entries_empty(gfn, 1) {
            return Err(Error::Perm);
        }
        let p = self.page(pfn);
        self.set_page(
            pfn,
            SpecPage {
                host: PageState::NoPage,
                ..p
            },
        );
        self.annotations.insert(pfn, guest_annotation(h, gfn));
        self.vm_mut(h).leaves.insert(
            gfn,
            SpecLeaf {
                gfn,
                pfn,
                nr: 1,
                state: PageState::Owned,
                perms: Perms::RWX,
                young: true,
            },
        );
        self.event(pfn, 1, HostAccess::None);
        Ok(())
    }

    /// Protected VM `h` shares its page at `gfn` back with the host
    /// (`__pkvm_guest_share_host`).
    ///
    /// Checks, in order: no live VM `h`: `NoEnt`; a non-protected VM:
    /// `Perm`; `gfn` outside the IPA space: `Inval`; no valid leaf maps
    /// `gfn` (a poisoned entry included): `NoEnt`; the leaf not guest
    /// `Owned` or the page not host `NoPage`: `Perm`.
    ///
    /// Effect: the leaf `SharedOwned` (permissions, access flag unchanged);
    /// the guest annotation removed, host `SharedBorrowed` (the host may
    /// access it). Hook event `(pfn << 12, 4096, Mem)`.
    pub fn guest_share_host(&mut self, h: Handle, gfn: u64) -> Result<(), Error> {
        let leaf = self.check_protected_leaf(h, gfn)?;
        let p = self.page(leaf.pfn);
        if leaf.state != PageState::Owned || p.host != PageState::NoPage {
            return Err(Error::Perm);
        }
        self.leaf_mut(h, leaf.gfn).state = PageState::SharedOwned;
        self.annotations.remove(&leaf.pfn);
        self.set_page(
            leaf.pfn,
            SpecPage {
                host: PageState::SharedBorrowed,
                ..p
            },
        );
        self.event(leaf.pfn, 1, HostAccess::Mem);
        Ok(())
    }

    /// Protected VM `h` stops sharing its page at `gfn` with the host
    /// (`__pkvm_guest_unshare_host`).
    ///
    /// Checks, in order: no live VM `h`: `NoEnt`; a non-protected VM:
    /// `Perm`; `gfn` outside the IPA space: `Inval`; no valid leaf maps
    /// `gfn`: `NoEnt`; the leaf not guest `SharedOwned` or the page not host
    /// `SharedBorrowed`: `Perm`.
    ///
    /// Effect: the leaf `Owned`; host `NoPage` with the annotation
    /// `{GUEST, guest_meta(h, gfn)}` again. Hook event `(pfn << 12, 4096,
    /// None)`.
    pub fn guest_unshare_host(&mut self, h: Handle, gfn: u64) -> Result<(), Error> {
        let leaf = self.check_protected_leaf(h, gfn)?;
        let p = self.page(leaf.pfn);
        if leaf.state != PageState::SharedOwned || p.host != PageState::SharedBorrowed {
            return Err(Error::Perm);
        }
        self.leaf_mut(h, leaf.gfn).state = PageState::Owned;
        self.annotations.insert(leaf.pfn, guest_annotation(h, leaf.gfn));
        self.set_page(
            leaf.pfn,
            SpecPage {
                host: PageState::NoPage,
                ..p
            },
        );
        self.event(leaf.pfn, 1, HostAccess::None);
        Ok(())
    }

    /// The host starts tearing VM `h` down (`__pkvm_start_teardown_vm`).
    ///
    /// Checks: no live VM `h` (bad handle, empty slot, already dying):
    /// `NoEnt`.
    ///
    /// Effect: the VM is dying; only [`Spec::reclaim_dying_guest_page`],
    /// [`Spec::finalize_teardown_vm`] and [`Spec::force_reclaim_guest_page`]
    /// see it from now on. Its leaves, shares and annotations stay. No hook
    /// event.
    pub fn start_teardown_vm(&mut self, h: Handle) -> Result<(), Error> {
        self.live_vm(h)?;
        self.vm_mut(h).vm.dying = true;
        Ok(())
    }

    /// The host takes back the page of dying VM `h` mapped at `gfn`
    /// (`__pkvm_reclaim_dying_guest_page`).
    ///
    /// Checks, in order:
    /// 1. bad handle or empty slot: `NoEnt`; a live VM: `Perm`;
    /// 2. `gfn` outside the IPA space: `Inval`;
    /// 3. no valid leaf maps `gfn` (a poisoned entry included): `NoEnt`.
    ///
    /// Effect:
    /// * a guest `Owned` or `SharedOwned` page: the leaf removed, the page
    ///   **poisoned**, host `Owned` (annotation removed if it was `NoPage`).
    ///   Hook event `(pfn << 12, 4096, Mem)` only if the host state was
    ///   `NoPage` (a `SharedBorrowed` host already had access);
    /// * a `SharedBorrowed` leaf (the host's own memory): removed whole, as
    ///   [`Spec::host_unshare_guest`] (`guest_shares - 1` on each page, host
    ///   `Owned` at 0); not poisoned, no hook event.
    ///
    /// Reading of the document: a `gfn` inside a shared block reclaims the
    /// whole block; the `SharedBorrowed` case does not re-run unshare's
    /// host-state checks (they hold in every reachable state and the
    /// document lists none for it).
    pub fn reclaim_dying_guest_page(&mut self, h: Handle, gfn: u64) -> Result<(), Error> {
        let v = self.dying_vm(h)?;
        Self::check_gfn_range(v, gfn, 1)?;
        let leaf = *v.leaf(gfn).ok_or(Error::NoEnt)?;
        self.vm_mut(h).leaves.remove(&leaf.gfn);
        if leaf.state == PageState::SharedBorrowed {
            self.drop_guest_share(&leaf);
        } else {
            self.give_back_poisoned(leaf.pfn);
        }
        Ok(())
    }

    /// The host finishes tearing dying VM `h` down
    /// (`__pkvm_finalize_teardown_vm`).
    ///
    /// Checks, in order:
    /// 1. bad handle or empty slot: `NoEnt`; a live VM: `Perm`;
    /// 2. a valid leaf left in its stage-2: `Busy` (poisoned entries do not
    ///    count);
    /// 3. the metadata pages as [`Spec::hyp_donate_host`]: a page not
    ///    `(NoPage, Owned)` `Perm`, pinned `Busy` (see below).
    ///
    /// Effect: the metadata pages **poisoned** (ascending) and returned to
    /// the host exactly as [`Spec::hyp_donate_host`] (`(Owned, NoPage)`, no
    /// annotation, unmapped at EL2, one hook event `(meta_pfn << 12,
    /// meta_nr << 12, Mem)`); the slot is free (the VMID reusable), the
    /// VM's poisoned gfns gone with it.
    ///
    /// Reading of the document: the document lists no check on the
    /// metadata pages, but [`Spec::hyp_donate_host`] is itself a transition
    /// that can hand them back to the host while the VM lives; "returned to
    /// the host (as `hyp_donate_host`)" is read as including its checks,
    /// after the `Busy` one, so finalize is refused (`Perm`) rather than
    /// taking pages that are no longer the hypervisor's.
    pub fn finalize_teardown_vm(&mut self, h: Handle) -> Result<(), Error> {
        let v = self.dying_vm(h)?;
        if !v.leaves.is_empty() {
            return Err(Error::Busy);
        }
        let (meta_pfn, meta_nr) = (v.vm.meta_pfn, v.vm.meta_nr);
        self.check_hyp_donate_host(meta_pfn, meta_nr)?;
        self.poisoned.extend(meta_pfn..meta_pfn + meta_nr);
        self.commit_hyp_donate_host(meta_pfn, meta_nr);
        self.vms[usize::from(h) - 1] = None;
        Ok(())
    }

    /// The host takes back page `pfn` it donated to a guest, without the
    /// guest's consent (`__pkvm_force_reclaim_guest_page`).
    ///
    /// Checks, in order:
    /// 1. `pfn + 1` overflowing or past the PA space: `Inval`;
    /// 2. the page not RAM: `Perm`;
    /// 3. the host state not `NoPage`, or the annotation not a guest's:
    ///    `Perm`;
    /// 4. no VM (live or dying) with the annotation's handle: `NoEnt`;
    /// 5. its entry at the annotation's gfn not a valid `Owned` leaf mapping
    ///    `pfn`: `Perm`.
    ///
    /// (4 and 5 cannot fail in reachable states.)
    ///
    /// Effect: the leaf replaced by a poisoned entry at that gfn; the page
    /// **poisoned**; host `Owned`, annotation removed. Hook event `(pfn <<
    /// 12, 4096, Mem)`.
    ///
    /// Reading of the document: a guest `SharedOwned` page (host
    /// `SharedBorrowed`) is `Perm` by step 3, before the guest is looked at.
    pub fn force_reclaim_guest_page(&mut self, pfn: u64) -> Result<(), Error> {
        self.check_args(pfn, 1)?;
        if !self.is_ram(pfn) {
            return Err(Error::Perm);
        }
        let (h, gfn) = match self.annotation(pfn) {
            Some(a) if a.owner == owner::GUEST && self.page(pfn).host == PageState::NoPage => guest_meta_decode(a.meta),
            _ => return Err(Error::Perm),
        };
        let v = self.vm_state(h).ok_or(Error::NoEnt)?;
        let leaf = match v.leaf(gfn) {
            Some(l) if l.state == PageState::Owned && l.pfn + (gfn - l.gfn) == pfn => *l,
            _ => return Err(Error::Perm),
        };
        let vm = self.vm_mut(h);
        vm.leaves.remove(&leaf.gfn);
        vm.poisoned.insert(gfn);
        self.give_back_poisoned(pfn);
        Ok(())
    }

    /// The host's stage-2 faulted at physical address `pa` (any alignment).
    ///
    /// * `pa >= 1 << pa_bits`: `Inject`;
    /// * RAM: `Handled` if the host state is `Owned`, `SharedOwned` or
    ///   `SharedBorrowed` (a protected guest shared the page back), else
    ///   (`NoPage`) `Inject`;
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
            self.page(pfn).host != PageState::NoPage
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

    /// The VM of handle `h`, live or dying.
    fn vm_state(&self, h: Handle) -> Option<&SpecVmState> {
        let slot = usize::from(h).checked_sub(1)?;
        self.vms.get(slot)?.as_ref()
    }

    /// The VM of handle `h`, which the checks found.
    fn vm_mut(&mut self, h: Handle) -> &mut SpecVmState {
        self.vms[usize::from(h) - 1].as_mut().expect("the checks found the VM")
    }

    /// The leaf of VM `h` starting at `gfn`, which the checks found.
    fn leaf_mut(&mut self, h: Handle, gfn: u64) -> &mut SpecLeaf {
        self.vm_mut(h).leaves.get_mut(&gfn).expect("the checks found the leaf")
    }

    /// Step 2 for calls on live VMs: `NoEnt` for handle 0, past
    /// [`MAX_VMS`], an empty slot or a dying VM.
    fn live_vm(&self, h: Handle) -> Result<&SpecVmState, Error> {
        match self.vm_state(h) {
            Some(v) if !v.vm.dying => Ok(v),
            _ => Err(Error::NoEnt),
        }
    }

    /// Step 2 for reclaim and finalize: `NoEnt` for handle 0, past
    /// [`MAX_VMS`] or an empty slot, `Perm` for a live VM.
    fn dying_vm(&self, h: Handle) -> Result<&SpecVmState, Error> {
        match self.vm_state(h) {
            None => Err(Error::NoEnt),
            Some(v) if !v.vm.dying => Err(Error::Perm),
            Some(v) => Ok(v),
        }
    }

    /// Step 1 for a guest range: `Inval` unless `nr` is 1, or
    /// [`BLOCK_PAGES`] with `gfn` block-aligned.
    fn check_guest_size(gfn: u64, nr: u64) -> Result<(), Error> {
        match nr {
            1 => Ok(()),
            BLOCK_PAGES if gfn.is_multiple_of(BLOCK_PAGES) => Ok(()),
            _ => Err(Error::Inval),
        }
    }

    /// Step 3: `Perm` unless the VM is of the kind the call needs.
    fn check_kind(v: &SpecVmState, protected: bool) -> Result<(), Error> {
        if v.vm.protected == protected {
            Ok(())
        } else {
            Err(Error::Perm)
        }
    }

    /// Step 4: `Inval` unless `[gfn, gfn + nr)` lies in the IPA space.
    fn check_gfn_range(v: &SpecVmState, gfn: u64, nr: u64) -> Result<(), Error> {
        match gfn.checked_add(nr) {
            Some(end) if end <= v.gfn_limit() => Ok(()),
            _ => Err(Error::Inval),
        }
    }

    /// `Perm` unless the leaf is `SharedBorrowed` and every page of it host
    /// `SharedOwned` with `guest_shares > 0` ("the host really shared
    /// this").
    fn check_host_shared_leaf(&self, leaf: &SpecLeaf) -> Result<(), Error> {
        if leaf.state != PageState::SharedBorrowed {
            return Err(Error::Perm);
        }
        if leaf.pfns().any(|q| {
            let p = self.page(q);
            p.host != PageState::SharedOwned || p.guest_shares == 0
        }) {
            return Err(Error::Perm);
        }
        Ok(())
    }

    /// The checks of unshare, wrprotect and test-clear-young: size
    /// (`Inval`), live VM (`NoEnt`), non-protected (`Perm`), IPA space
    /// (`Inval`), a leaf maps `gfn` (`NoEnt`), of `nr` pages (`TooBig`),
    /// really shared by the host (`Perm`). The leaf.
    fn check_np_leaf_sized(&self, h: Handle, gfn: u64, nr: u64) -> Result<SpecLeaf, Error> {
        Self::check_guest_size(gfn, nr)?;
        let v = self.live_vm(h)?;
        Self::check_kind(v, false)?;
        Self::check_gfn_range(v, gfn, nr)?;
        let leaf = *v.leaf(gfn).ok_or(Error::NoEnt)?;
        if leaf.nr != nr {
            return Err(Error::TooBig);
        }
        self.check_host_shared_leaf(&leaf)?;
        Ok(leaf)
    }

    /// The checks of relax and mkyoung: live VM (`NoEnt`), non-protected
    /// (`Perm`), IPA space (`Inval`), a leaf maps `gfn` (`NoEnt`), really
    /// shared by the host (`Perm`). The leaf.
    fn check_np_leaf(&self, h: Handle, gfn: u64) -> Result<SpecLeaf, Error> {
        let v = self.live_vm(h)?;
        Self::check_kind(v, false)?;
        Self::check_gfn_range(v, gfn, 1)?;
        let leaf = *v.leaf(gfn).ok_or(Error::NoEnt)?;
        self.check_host_shared_leaf(&leaf)?;
        Ok(leaf)
    }

    /// The first checks of guest share/unshare host: live VM (`NoEnt`),
    /// protected (`Perm`), IPA space (`Inval`), a leaf maps `gfn` (`NoEnt`).
    /// The leaf (a single page: protected VMs have no blocks).
    fn check_protected_leaf(&self, h: Handle, gfn: u64) -> Result<SpecLeaf, Error> {
        let v = self.live_vm(h)?;
        Self::check_kind(v, true)?;
        Self::check_gfn_range(v, gfn, 1)?;
        v.leaf(gfn).copied().ok_or(Error::NoEnt)
    }

    /// One host share fewer on every page of `leaf` (just unmapped): host
    /// `Owned` at 0.
    fn drop_guest_share(&mut self, leaf: &SpecLeaf) {
        for q in leaf.pfns() {
            let mut p = self.page(q);
            p.guest_shares -= 1;
            if p.guest_shares == 0 {
                p.host = PageState::Owned;
            }
            self.set_page(q, p);
        }
    }

    /// A page a guest owned (just unmapped) is poisoned and goes back to the
    /// host: host `Owned`, no annotation; a hook event if the host had no
    /// access before (`NoPage`, not `SharedBorrowed`).
    fn give_back_poisoned(&mut self, pfn: u64) {
        let p = self.page(pfn);
        self.poisoned.push(pfn);
        self.annotations.remove(&pfn);
        self.set_page(
            pfn,
            SpecPage {
                host: PageState::Owned,
                ..p
            },
        );
        if p.host == PageState::NoPage {
            self.event(pfn, 1, HostAccess::Mem);
        }
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
        SpecPage {
            host,
            hyp,
            pins,
            guest_shares: 0,
        }
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

    // ----- Guests -----

    /// The IPA size of the test VMs and one past their last gfn.
    const IPA: u8 = 32;
    const GFN_LIMIT: u64 = 1 << (IPA as u32 - PAGE_SHIFT);
    /// Metadata pages of the test VMs (RAM0).
    const META: u64 = 0x4800_0000 >> PAGE_SHIFT;
    /// A block-aligned page of RAM0 (its block holds neither `P` nor `Q`).
    const B: u64 = 0x4040_0000 >> PAGE_SHIFT;
    /// Another page of RAM0, not block-aligned.
    const Q: u64 = 0x4030_0000 >> PAGE_SHIFT;
    /// A block-aligned gfn.
    const G: u64 = 0x1000;
    /// Handles of [`with_vms`]: non-protected, protected, dying
    /// (non-protected, sharing `Q + 8` at `G`); slots 4..=8 are empty.
    const NP: Handle = 1;
    const PV: Handle = 2;
    const DYING: Handle = 3;
    /// Handles that never name a VM in these tests, and an empty slot.
    const BAD_HANDLES: [Handle; 5] = [0, 4, 9, 0x100, u16::MAX];

    /// A spec with one VM (handle 1, VMID 1, metadata `META`, 2 pages).
    fn with_vm(protected: bool) -> Spec {
        let mut s = spec();
        assert_eq!(s.init_vm(IPA, 1, protected, META, 2), Ok(1));
        s.take_hook_events();
        s.check_invariants().unwrap();
        s
    }

    /// A spec with the VMs [`NP`], [`PV`] and [`DYING`].
    fn with_vms() -> Spec {
        let mut s = spec();
        assert_eq!(s.init_vm(IPA, 1, false, META, 1), Ok(NP));
        assert_eq!(s.init_vm(IPA, 2, true, META + 1, 1), Ok(PV));
        assert_eq!(s.init_vm(IPA, 3, false, META + 2, 1), Ok(DYING));
        s.host_share_guest(DYING, Q + 8, G, 1, Perms::RW).unwrap();
        s.start_teardown_vm(DYING).unwrap();
        s.take_hook_events();
        s.check_invariants().unwrap();
        s
    }

    /// Forces a page's share count (states the transitions take 4 billion
    /// calls to reach).
    fn set_shares(s: &mut Spec, pfn: u64, n: u32) {
        let mut p = s.page(pfn);
        p.guest_shares = n;
        s.pages.insert(pfn, p);
    }

    fn shared(n: u32) -> SpecPage {
        SpecPage {
            host: SharedOwned,
            hyp: NoPage,
            pins: 0,
            guest_shares: n,
        }
    }

    fn leaf(gfn: u64, pfn: u64, nr: u64, state: PageState, perms: Perms) -> SpecLeaf {
        SpecLeaf {
            gfn,
            pfn,
            nr,
            state,
            perms,
            young: true,
        }
    }

    /// Like [`refused`], naming the call on failure; also checks that no pfn
    /// was poisoned.
    fn refused_as(s: &mut Spec, want: Error, what: &str, f: impl FnOnce(&mut Spec) -> Result<(), Error>) {
        let before = s.clone();
        assert_eq!(f(s), Err(want), "{what}");
        assert_eq!(*s, before, "{what}: a refused call changed the state");
    }

    // ----- init_vm -----

    #[test]
    fn init_vm_success() {
        let mut s = spec();
        assert_eq!(s.init_vm(IPA, 7, false, META, 2), Ok(1));
        assert_eq!(
            s.vm(1),
            Some(SpecVm {
                protected: false,
                dying: false,
                vmid: 7,
                ipa_bits: IPA,
                meta_pfn: META,
                meta_nr: 2,
            })
        );
        for q in [META, META + 1] {
            assert_eq!(s.page(q), pg(NoPage, Owned, 0));
            assert_eq!(s.annotation(q), Some(HYP_ANNOTATION));
            assert!(s.hyp_mapped(q));
            assert_eq!(s.host_access(q), HostAccess::None);
        }
        assert_eq!(s.page(META + 2), SpecPage::default());
        assert_eq!(
            s.take_hook_events(),
            [(META << PAGE_SHIFT, 2 * PAGE_SIZE, HostAccess::None)]
        );
        s.check_invariants().unwrap();
        assert_eq!(s.init_vm(GUEST_MAX_IPA_BITS, 8, true, META + 2, 1), Ok(2));
        assert_eq!(
            s.vm(2),
            Some(SpecVm {
                protected: true,
                dying: false,
                vmid: 8,
                ipa_bits: GUEST_MAX_IPA_BITS,
                meta_pfn: META + 2,
                meta_nr: 1,
            })
        );
        for h in [0, 3, 8, 9, u16::MAX] {
            assert_eq!(s.vm(h), None);
            assert!(s.guest_gfns(h).is_empty());
            assert_eq!(s.guest_leaf(h, 0), None);
        }
        assert!(s.guest_gfns(1).is_empty());
        assert!(s.take_poisoned().is_empty());
        assert_eq!(s.touched_pfns(), [META, META + 1, META + 2]);
        s.check_invariants().unwrap();
    }

    #[test]
    fn init_vm_errors_in_order() {
        let mut s = with_vm(false);
        let init = |ipa, vmid, pfn, nr| move |s: &mut Spec| s.init_vm(ipa, vmid, false, pfn, nr).map(drop);
        // The table: IPA size, then the VMID, before the metadata range.
        for ipa in [
            0,
            PAGE_SHIFT as u8,
            GUEST_MIN_IPA_BITS - 1,
            GUEST_MAX_IPA_BITS + 1,
            64,
            u8::MAX,
        ] {
            refused_as(&mut s, Error::Inval, "ipa", init(ipa, 2, M, 0));
        }
        refused_as(&mut s, Error::Inval, "vmid 0", init(IPA, 0, M, 0));
        refused_as(&mut s, Error::Inval, "vmid in use", init(IPA, 1, META, 1));
        // Metadata arguments.
        for (pfn, nr) in [
            (P, 0),
            (u64::MAX, 1),
            (1, u64::MAX),
            (u64::MAX >> PAGE_SHIFT, 1),
            (PFN_LIMIT, 1),
            (PFN_LIMIT - 1, 2),
        ] {
            refused_as(&mut s, Error::Inval, "meta args", init(IPA, 2, pfn, nr));
        }
        // One RAM region.
        for (pfn, nr) in [(M, 1), (RAM0_LAST, 2), ((RAM0.base >> PAGE_SHIFT) - 1, 2)] {
            refused_as(&mut s, Error::Perm, "meta kind", init(IPA, 2, pfn, nr));
        }
        // Every page (Owned, NoPage).
        refused_as(&mut s, Error::Perm, "meta of another VM", init(IPA, 2, META + 1, 1));
        refused_as(&mut s, Error::Perm, "meta overlapping", init(IPA, 2, META - 1, 3));
        s.host_share_hyp(P).unwrap();
        refused_as(&mut s, Error::Perm, "hyp-shared", init(IPA, 2, P, 1));
        s.host_share_guest(1, Q, G, 1, Perms::R).unwrap();
        refused_as(&mut s, Error::Perm, "guest-shared", init(IPA, 2, Q, 1));
        s.check_invariants().unwrap();
        assert!(s.take_hook_events().is_empty());
    }

    #[test]
    fn init_vm_table_full_and_slot_reuse() {
        let mut s = spec();
        for i in 0..MAX_VMS as u16 {
            assert_eq!(s.init_vm(IPA, 10 + i, i % 2 == 0, META + u64::from(i), 1), Ok(i + 1));
        }
        s.take_hook_events();
        refused_as(&mut s, Error::NoMem, "full", |s| {
            s.init_vm(IPA, 100, false, P, 1).map(drop)
        });
        // The free slot is checked last.
        refused_as(&mut s, Error::Inval, "vmid", |s| {
            s.init_vm(IPA, 10, false, P, 1).map(drop)
        });
        refused_as(&mut s, Error::Inval, "meta nr", |s| {
            s.init_vm(IPA, 100, false, P, 0).map(drop)
        });
        refused_as(&mut s, Error::Perm, "meta MMIO", |s| {
            s.init_vm(IPA, 100, false, M, 1).map(drop)
        });
        refused_as(&mut s, Error::Perm, "meta taken", |s| {
            s.init_vm(IPA, 100, false, META, 1).map(drop)
        });
        // A dying VM keeps its slot and its VMID.
        s.start_teardown_vm(3).unwrap();
        refused_as(&mut s, Error::NoMem, "full", |s| {
            s.init_vm(IPA, 100, false, P, 1).map(drop)
        });
        refused_as(&mut s, Error::Inval, "dying vmid", |s| {
            s.init_vm(IPA, 12, false, P, 1).map(drop)
        });
        // Finalize frees both; the lowest free slot is taken.
        s.start_teardown_vm(6).unwrap();
        s.finalize_teardown_vm(6).unwrap();
        s.finalize_teardown_vm(3).unwrap();
        assert_eq!(s.take_poisoned(), [META + 5, META + 2]);
        assert_eq!(s.vm(3), None);
        assert_eq!(s.init_vm(IPA, 12, true, P, 1), Ok(3));
        assert_eq!(s.init_vm(IPA, 15, true, META + 2, 1), Ok(6));
        assert_eq!(s.vm(3).map(|v| (v.vmid, v.protected, v.meta_pfn)), Some((12, true, P)));
        s.check_invariants().unwrap();
    }

    // ----- host_share_guest -----

    #[test]
    fn share_guest_page_success() {
        let mut s = with_vm(false);
        s.host_share_guest(1, P, G + 3, 1, Perms::R).unwrap();
        assert_eq!(s.page(P), shared(1));
        assert_eq!(
            s.guest_leaf(1, G + 3),
            Some(leaf(G + 3, P, 1, SharedBorrowed, Perms::R))
        );
        assert_eq!(s.guest_leaf(1, G + 2), None);
        assert_eq!(s.guest_leaf(1, G + 4), None);
        assert_eq!(s.annotation(P), None);
        assert!(!s.hyp_mapped(P));
        assert_eq!(s.host_access(P), HostAccess::Mem);
        assert_eq!(s.host_abort(P << PAGE_SHIFT), AbortOutcome::Handled);
        assert!(s.take_hook_events().is_empty(), "a share is not an ownership change");
        assert!(s.take_poisoned().is_empty());
        assert_eq!(s.guest_gfns(1), [G + 3]);
        assert!(!s.guest_poisoned(1, G + 3));
        assert_eq!(s.touched_pfns(), [P, META, META + 1]);
        s.check_invariants().unwrap();
        // Any permissions are recorded exactly, none included; last gfn.
        s.host_share_guest(1, P + 1, GFN_LIMIT - 1, 1, Perms::NONE).unwrap();
        assert_eq!(s.guest_leaf(1, GFN_LIMIT - 1).unwrap().perms, Perms::NONE);
        s.check_invariants().unwrap();
    }

    #[test]
    fn share_guest_block_success() {
        let mut s = with_vm(false);
        s.host_share_guest(1, B, G, BLOCK_PAGES, Perms::RWX).unwrap();
        for q in B..B + BLOCK_PAGES {
            assert_eq!(s.page(q), shared(1));
        }
        assert_eq!(s.page(B - 1), SpecPage::default());
        assert_eq!(s.page(B + BLOCK_PAGES), SpecPage::default());
        let l = leaf(G, B, BLOCK_PAGES, SharedBorrowed, Perms::RWX);
        for gfn in [G, G + 1, G + 300, G + BLOCK_PAGES - 1] {
            assert_eq!(s.guest_leaf(1, gfn), Some(l));
        }
        assert_eq!(s.guest_leaf(1, G - 1), None);
        assert_eq!(s.guest_leaf(1, G + BLOCK_PAGES), None);
        assert_eq!(s.guest_gfns(1), [G]);
        assert!(s.take_hook_events().is_empty());
        // The last block of RAM0 at the last block of the IPA space.
        let last = RAM0_LAST + 1 - BLOCK_PAGES;
        s.host_share_guest(1, last, GFN_LIMIT - BLOCK_PAGES, BLOCK_PAGES, Perms::R)
            .unwrap();
        assert_eq!(s.guest_gfns(1), [G, GFN_LIMIT - BLOCK_PAGES]);
        assert_eq!(s.page(RAM0_LAST), shared(1));
        s.check_invariants().unwrap();
    }

    #[test]
    fn share_guest_errors_in_order() {
        let mut s = with_vms();
        let share = |h, pfn, gfn, nr| move |s: &mut Spec| s.host_share_guest(h, pfn, gfn, nr, Perms::R);
        // 1. Static arguments, before the VM, the gfn and the pfn's kind.
        for (pfn, gfn, nr) in [
            (P, G, 0),
            (P, G, 2),
            (P, G, BLOCK_PAGES - 1),
            (P, G, BLOCK_PAGES + 1),
            (P, G, BLOCK_PAGES * 2),
            (P, G, u64::MAX),
            (B + 1, G, BLOCK_PAGES),             // pfn not block-aligned
            (P, G, BLOCK_PAGES),                 // P is not either
            (B, G + 1, BLOCK_PAGES),             // gfn not block-aligned
            (B, G + 256, BLOCK_PAGES),           //
            (u64::MAX, G, 1),                    // pfn + 1 overflows
            (u64::MAX >> PAGE_SHIFT, G, 1),      // (pfn + 1) << 12 overflows
            (PFN_LIMIT, G, 1),                   // past the PA space
            (PFN_LIMIT, G, BLOCK_PAGES),         //
            (u64::MAX - 511, G, BLOCK_PAGES),    // aligned, pfn + nr overflows
            (PFN_LIMIT - BLOCK_PAGES, G + 1, 2), // bad nr and gfn
        ] {
            for h in [0, NP, PV, DYING, 9] {
                refused_as(&mut s, Error::Inval, "args", share(h, pfn, gfn, nr));
            }
        }
        // 2. The VM, before its kind, the gfn range and the pfn's kind.
        for h in BAD_HANDLES.into_iter().chain([DYING]) {
            refused_as(&mut s, Error::NoEnt, "handle", share(h, M, GFN_LIMIT, 1));
            refused_as(&mut s, Error::NoEnt, "handle", share(h, P, G + 1, 1));
        }
        // 3. The kind.
        refused_as(&mut s, Error::Perm, "protected", share(PV, M, GFN_LIMIT, 1));
        refused_as(&mut s, Error::Perm, "protected", share(PV, P, G, 1));
        // 4. The gfn range, before the pfn's kind.
        for (gfn, nr) in [
            (GFN_LIMIT, 1),
            (u64::MAX, 1),
            (GFN_LIMIT, BLOCK_PAGES),
            (u64::MAX - 511, BLOCK_PAGES),
        ] {
            refused_as(&mut s, Error::Inval, "gfn", share(NP, RAM0_LAST + 1, gfn, nr));
        }
        // 5. One RAM region.
        refused_as(&mut s, Error::Perm, "MMIO", share(NP, M, G, 1));
        refused_as(
            &mut s,
            Error::Perm,
            "MMIO block",
            share(NP, RAM0_LAST + 1, G, BLOCK_PAGES),
        );
        refused_as(&mut s, Error::Perm, "MMIO block", share(NP, 0, G, BLOCK_PAGES));
        // 6. Guest entries, before host states.
        s.host_share_guest(NP, P, G, 1, Perms::R).unwrap();
        s.host_share_guest(NP, B, G + BLOCK_PAGES, BLOCK_PAGES, Perms::R)
            .unwrap();
        refused_as(&mut s, Error::Perm, "same gfn", share(NP, Q, G, 1));
        refused_as(&mut s, Error::Perm, "same gfn, same page", share(NP, P, G, 1));
        refused_as(
            &mut s,
            Error::Perm,
            "block over a page",
            share(NP, B + 2 * BLOCK_PAGES, G, BLOCK_PAGES),
        );
        refused_as(
            &mut s,
            Error::Perm,
            "page in a block",
            share(NP, Q, G + BLOCK_PAGES + 7, 1),
        );
        refused_as(&mut s, Error::Perm, "entry before host", share(NP, META, G, 1));
        let mut t = s.clone(); // a poisoned entry (only protected VMs have them)
        t.vm_mut(NP).poisoned.insert(G + 2 * BLOCK_PAGES + 5);
        refused_as(
            &mut t,
            Error::Perm,
            "poisoned",
            share(NP, Q, G + 2 * BLOCK_PAGES + 5, 1),
        );
        let b2 = B + 2 * BLOCK_PAGES;
        refused_as(
            &mut t,
            Error::Perm,
            "poisoned in block",
            share(NP, b2, G + 2 * BLOCK_PAGES, BLOCK_PAGES),
        );
        // Host states.
        s.host_share_hyp(Q).unwrap();
        refused_as(&mut s, Error::Perm, "hyp-shared", share(NP, Q, G + 1, 1));
        s.hyp_pin_shared(Q, 1).unwrap();
        refused_as(&mut s, Error::Perm, "pinned", share(NP, Q, G + 1, 1));
        refused_as(&mut s, Error::Perm, "hyp-owned", share(NP, META, G + 1, 1));
        s.host_donate_guest(PV, Q + 1, G).unwrap();
        refused_as(&mut s, Error::Perm, "guest-owned", share(NP, Q + 1, G + 1, 1));
        s.host_donate_guest(PV, Q + 2, G + 1).unwrap();
        s.guest_share_host(PV, G + 1).unwrap();
        refused_as(&mut s, Error::Perm, "guest-shared back", share(NP, Q + 2, G + 1, 1));
        // A block with one bad page.
        refused_as(&mut s, Error::Perm, "block", share(NP, Q & !511, G + 1024, BLOCK_PAGES));
        s.check_invariants().unwrap();
    }

    #[test]
    fn share_guest_count_saturates_busy() {
        let mut s = with_vm(false);
        s.host_share_guest(1, P, G, 1, Perms::R).unwrap();
        set_shares(&mut s, P, u32::MAX - 1);
        s.host_share_guest(1, P, G + 1, 1, Perms::R).unwrap();
        assert_eq!(s.page(P), shared(u32::MAX));
        refused(&mut s, Error::Busy, |s| s.host_share_guest(1, P, G + 2, 1, Perms::R));
        // Every earlier check still wins.
        refused(&mut s, Error::NoEnt, |s| s.host_share_guest(2, P, G + 2, 1, Perms::R));
        refused(&mut s, Error::Perm, |s| s.host_share_guest(1, P, G, 1, Perms::R));
        refused(&mut s, Error::Inval, |s| {
            s.host_share_guest(1, P, GFN_LIMIT, 1, Perms::R)
        });
        s.host_unshare_guest(1, G + 1, 1).unwrap();
        assert_eq!(s.page(P), shared(u32::MAX - 1));
        s.host_share_guest(1, P, G + 1, 1, Perms::R).unwrap();

        // A block is checked page by page in order: the first bad page
        // gives the result.
        let mut a = with_vm(false);
        a.host_share_guest(1, B + 3, G + 3, 1, Perms::R).unwrap();
        set_shares(&mut a, B + 3, u32::MAX);
        a.host_share_hyp(B + 7).unwrap();
        refused(&mut a, Error::Busy, |s| {
            s.host_share_guest(1, B, G + 512, 512, Perms::R)
        });
        let mut b = with_vm(false);
        b.host_share_guest(1, B + 7, G + 7, 1, Perms::R).unwrap();
        set_shares(&mut b, B + 7, u32::MAX);
        b.host_share_hyp(B + 3).unwrap();
        refused(&mut b, Error::Perm, |s| {
            s.host_share_guest(1, B, G + 512, 512, Perms::R)
        });
    }

    #[test]
    fn multi_share_counts() {
        let mut s = spec();
        assert_eq!(s.init_vm(IPA, 1, false, META, 1), Ok(1));
        assert_eq!(s.init_vm(GUEST_MAX_IPA_BITS, 2, false, META + 1, 1), Ok(2));
        s.take_hook_events();
        s.host_share_guest(1, P, G, 1, Perms::R).unwrap();
        s.host_share_guest(2, P, G, 1, Perms::RW).unwrap(); // another VM, same gfn
        s.host_share_guest(1, P, G + 1, 1, Perms::RX).unwrap(); // same VM, another gfn
        assert_eq!(s.page(P), shared(3));
        // A block containing P on top.
        let b0 = P & !(BLOCK_PAGES - 1);
        s.host_share_guest(2, b0, G + BLOCK_PAGES, BLOCK_PAGES, Perms::R)
            .unwrap();
        assert_eq!(s.page(P), shared(4));
        assert_eq!(s.page(b0), shared(1));
        s.check_invariants().unwrap();
        s.host_unshare_guest(2, G + BLOCK_PAGES, BLOCK_PAGES).unwrap();
        assert_eq!(s.page(P), shared(3));
        assert_eq!(s.page(b0), SpecPage::default());
        s.host_unshare_guest(1, G, 1).unwrap();
        assert_eq!(s.page(P), shared(2));
        assert_eq!(s.guest_leaf(2, G).map(|l| l.perms), Some(Perms::RW));
        s.host_unshare_guest(2, G, 1).unwrap();
        assert_eq!(s.page(P), shared(1));
        s.check_invariants().unwrap();
        s.host_unshare_guest(1, G + 1, 1).unwrap();
        assert_eq!(s.page(P), SpecPage::default());
        assert_eq!(s.touched_pfns(), [META, META + 1]);
        assert!(s.take_hook_events().is_empty());
        assert!(s.take_poisoned().is_empty());
        s.check_invariants().unwrap();
    }

    /// Reference section 2.5, the guest lines of `pkvm_ownership_selftest`.
    #[test]
    fn reference_selftest_guest_lines() {
        let mut s = with_vm(false);
        refused(&mut s, Error::NoEnt, |s| s.host_unshare_guest(1, G, 1));
        s.host_share_guest(1, P, G, 1, Perms::RWX).unwrap();
        assert_eq!(s.page(P), shared(1));
        assert_eq!(s.guest_leaf(1, G).map(|l| l.state), Some(SharedBorrowed));
        s.check_invariants().unwrap();
        refused(&mut s, Error::Perm, |s| s.host_share_guest(1, P, G, 1, Perms::RWX));
        refused(&mut s, Error::Perm, |s| s.host_donate_hyp(P, 1));
        refused(&mut s, Error::Perm, |s| s.host_share_hyp(P));
        refused(&mut s, Error::Perm, |s| s.host_unshare_hyp(P));
        refused(&mut s, Error::Perm, |s| s.hyp_donate_host(P, 1));
        refused(&mut s, Error::Perm, |s| s.hyp_pin_shared(P, 1));
        s.host_share_guest(1, P, G + 1, 1, Perms::RWX).unwrap();
        assert_eq!(s.page(P).guest_shares, 2);
        s.check_invariants().unwrap();
        s.host_unshare_guest(1, G, 1).unwrap();
        assert_eq!(s.guest_leaf(1, G), None);
        assert_eq!(s.page(P), shared(1));
        s.check_invariants().unwrap();
        s.host_unshare_guest(1, G + 1, 1).unwrap();
        assert_eq!(s.page(P), pg(Owned, NoPage, 0));
        s.check_invariants().unwrap();
        s.host_donate_hyp(P, 1).unwrap();
        assert_eq!(s.page(P), pg(NoPage, Owned, 0));
        refused(&mut s, Error::Perm, |s| s.host_share_guest(1, P, G, 1, Perms::RWX));
        refused(&mut s, Error::NoEnt, |s| s.host_unshare_guest(1, G, 1));
        s.check_invariants().unwrap();
    }

    // ----- unshare / wrprotect / test_clear_young -----

    fn young(s: &mut Spec, h: Handle, gfn: u64, nr: u64) -> Result<(), Error> {
        s.host_test_clear_young_guest(h, gfn, nr, false).map(drop)
    }
    fn mkold(s: &mut Spec, h: Handle, gfn: u64, nr: u64) -> Result<(), Error> {
        s.host_test_clear_young_guest(h, gfn, nr, true).map(drop)
    }
    type Sized = fn(&mut Spec, Handle, u64, u64) -> Result<(), Error>;
    const SIZED: [(&str, Sized); 4] = [
        ("host_unshare_guest", Spec::host_unshare_guest),
        ("host_wrprotect_guest", Spec::host_wrprotect_guest),
        ("test_clear_young", young),
        ("test_clear_young(mkold)", mkold),
    ];

    #[test]
    fn sized_leaf_calls_errors_in_order() {
        for (name, f) in SIZED {
            let mut s = with_vms();
            s.host_share_guest(NP, P, G, 1, Perms::R).unwrap();
            s.host_share_guest(NP, B, G + BLOCK_PAGES, BLOCK_PAGES, Perms::R)
                .unwrap();
            s.host_donate_guest(PV, Q, G).unwrap();
            s.take_hook_events();
            let bg = G + BLOCK_PAGES;
            let cases: &[(Handle, u64, u64, Error)] = &[
                // 1. Size, before everything.
                (NP, G, 0, Error::Inval),
                (NP, G, 2, Error::Inval),
                (NP, G, BLOCK_PAGES - 1, Error::Inval),
                (NP, G, u64::MAX, Error::Inval),
                (NP, bg + 1, BLOCK_PAGES, Error::Inval),
                (0, G + 1, BLOCK_PAGES, Error::Inval),
                (9, G, 3, Error::Inval),
                (PV, GFN_LIMIT + 1, BLOCK_PAGES, Error::Inval),
                // 2. The VM.
                (0, G, 1, Error::NoEnt),
                (4, G, 1, Error::NoEnt),
                (9, G, 1, Error::NoEnt),
                (u16::MAX, GFN_LIMIT, 1, Error::NoEnt),
                (DYING, G, 1, Error::NoEnt),
                (0, u64::MAX - 511, BLOCK_PAGES, Error::NoEnt),
                // 3. The kind.
                (PV, G, 1, Error::Perm),
                (PV, GFN_LIMIT, 1, Error::Perm),
                // 4. The gfn range.
                (NP, GFN_LIMIT, 1, Error::Inval),
                (NP, u64::MAX, 1, Error::Inval),
                (NP, GFN_LIMIT, BLOCK_PAGES, Error::Inval),
                (NP, u64::MAX - 511, BLOCK_PAGES, Error::Inval),
                // 6. A leaf, of the size given.
                (NP, G + 1, 1, Error::NoEnt),
                (NP, GFN_LIMIT - 1, 1, Error::NoEnt),
                (NP, bg + BLOCK_PAGES, BLOCK_PAGES, Error::NoEnt),
                (NP, G, BLOCK_PAGES, Error::TooBig),
                (NP, bg, 1, Error::TooBig),
                (NP, bg + 9, 1, Error::TooBig),
                (NP, bg + BLOCK_PAGES - 1, 1, Error::TooBig),
            ];
            for &(h, gfn, nr, want) in cases {
                refused_as(&mut s, want, &format!("{name}({h}, {gfn:#x}, {nr})"), |s| {
                    f(s, h, gfn, nr)
                });
            }
            // States the transitions never reach: a leaf that is not
            // SharedBorrowed, pages the host did not share.
            let mut t = s.clone();
            t.leaf_mut(NP, G).state = Owned;
            refused_as(&mut t, Error::Perm, name, |s| f(s, NP, G, 1));
            let mut t = s.clone();
            set_shares(&mut t, B + 100, 0);
            refused_as(&mut t, Error::Perm, name, |s| f(s, NP, bg, BLOCK_PAGES));
            let mut t = s.clone();
            t.pages.insert(P, pg(SharedOwned, SharedBorrowed, 0));
            refused_as(&mut t, Error::Perm, name, |s| f(s, NP, G, 1));
            // Success on both sizes.
            f(&mut s, NP, G, 1).unwrap();
            f(&mut s, NP, bg, BLOCK_PAGES).unwrap();
            assert!(s.take_hook_events().is_empty(), "{name}");
            s.check_invariants().unwrap();
        }
    }

    #[test]
    fn unshare_guest_block() {
        let mut s = with_vm(false);
        s.host_share_guest(1, B, G, BLOCK_PAGES, Perms::RW).unwrap();
        s.host_share_guest(1, B + 5, G + BLOCK_PAGES + 1, 1, Perms::R).unwrap();
        s.host_unshare_guest(1, G, BLOCK_PAGES).unwrap();
        assert_eq!(s.guest_leaf(1, G + 5), None);
        assert_eq!(s.page(B), SpecPage::default());
        assert_eq!(s.page(B + 5), shared(1));
        assert_eq!(s.guest_gfns(1), [G + BLOCK_PAGES + 1]);
        s.check_invariants().unwrap();
    }

    // ----- relax / mkyoung -----

    fn relax_rw(s: &mut Spec, h: Handle, gfn: u64) -> Result<(), Error> {
        s.host_relax_perms_guest(h, gfn, Perms::RW)
    }
    type Unsized = fn(&mut Spec, Handle, u64) -> Result<(), Error>;
    const UNSIZED: [(&str, Unsized); 2] = [
        ("host_relax_perms_guest", relax_rw),
        ("host_mkyoung_guest", Spec::host_mkyoung_guest),
    ];

    #[test]
    fn relax_and_mkyoung_errors_in_order() {
        for (name, f) in UNSIZED {
            let mut s = with_vms();
            s.host_share_guest(NP, P, G, 1, Perms::R).unwrap();
            s.host_share_guest(NP, B, G + BLOCK_PAGES, BLOCK_PAGES, Perms::R)
                .unwrap();
            s.host_donate_guest(PV, Q, G).unwrap();
            s.take_hook_events();
            let cases: &[(Handle, u64, Error)] = &[
                (0, G, Error::NoEnt),
                (4, GFN_LIMIT, Error::NoEnt),
                (9, u64::MAX, Error::NoEnt),
                (u16::MAX, G, Error::NoEnt),
                (DYING, G, Error::NoEnt),
                (PV, G, Error::Perm),
                (PV, GFN_LIMIT, Error::Perm),
                (NP, GFN_LIMIT, Error::Inval),
                (NP, u64::MAX, Error::Inval),
                (NP, G + 1, Error::NoEnt),
                (NP, G + 2 * BLOCK_PAGES, Error::NoEnt),
            ];
            for &(h, gfn, want) in cases {
                refused_as(&mut s, want, &format!("{name}({h}, {gfn:#x})"), |s| f(s, h, gfn));
            }
            let mut t = s.clone();
            t.leaf_mut(NP, G).state = SharedOwned;
            refused_as(&mut t, Error::Perm, name, |s| f(s, NP, G));
            let mut t = s.clone();
            set_shares(&mut t, B + 511, 0);
            refused_as(&mut t, Error::Perm, name, |s| f(s, NP, G + BLOCK_PAGES));
            // Any gfn of a block reaches its leaf.
            f(&mut s, NP, G).unwrap();
            f(&mut s, NP, G + BLOCK_PAGES + 77).unwrap();
            assert!(s.take_hook_events().is_empty());
            s.check_invariants().unwrap();
        }
    }

    #[test]
    fn perms_and_access_flag() {
        let mut s = with_vm(false);
        s.host_share_guest(1, P, G, 1, Perms::R).unwrap();
        s.host_share_guest(1, B, G + BLOCK_PAGES, BLOCK_PAGES, Perms::RW)
            .unwrap();
        let bg = G + BLOCK_PAGES;
        let perms = |s: &Spec, gfn| s.guest_leaf(1, gfn).unwrap().perms;
        let is_young = |s: &Spec, gfn| s.guest_leaf(1, gfn).unwrap().young;
        // Relax: union.
        s.host_relax_perms_guest(1, G, Perms::RX).unwrap();
        assert_eq!(perms(&s, G), Perms::RX);
        s.host_relax_perms_guest(1, G, Perms::NONE).unwrap();
        assert_eq!(perms(&s, G), Perms::RX);
        s.host_relax_perms_guest(1, bg + 100, Perms::new(false, false, true))
            .unwrap();
        assert_eq!(perms(&s, bg), Perms::RWX);
        // Wrprotect: loses w only.
        s.host_wrprotect_guest(1, bg, BLOCK_PAGES).unwrap();
        assert_eq!(perms(&s, bg + 3), Perms::RX);
        s.host_wrprotect_guest(1, G, 1).unwrap();
        assert_eq!(perms(&s, G), Perms::RX);
        // Access flag.
        assert_eq!(s.host_test_clear_young_guest(1, G, 1, false), Ok(true));
        assert!(is_young(&s, G));
        assert_eq!(s.host_test_clear_young_guest(1, G, 1, true), Ok(true));
        assert!(!is_young(&s, G));
        assert_eq!(s.host_test_clear_young_guest(1, G, 1, true), Ok(false));
        assert_eq!(s.host_test_clear_young_guest(1, G, 1, false), Ok(false));
        // Relax and wrprotect leave the flag alone.
        s.host_relax_perms_guest(1, G, Perms::RWX).unwrap();
        s.host_wrprotect_guest(1, G, 1).unwrap();
        assert!(!is_young(&s, G));
        s.host_mkyoung_guest(1, G).unwrap();
        assert!(is_young(&s, G));
        assert_eq!(s.host_test_clear_young_guest(1, G, 1, false), Ok(true));
        // Blocks: the flag is the leaf's.
        assert_eq!(s.host_test_clear_young_guest(1, bg, BLOCK_PAGES, true), Ok(true));
        assert!(!is_young(&s, bg + 511));
        s.host_mkyoung_guest(1, bg + 511).unwrap();
        assert!(is_young(&s, bg));
        // The abstract host state never moved.
        assert_eq!(s.page(P), shared(1));
        assert_eq!(s.page(B + 7), shared(1));
        assert!(s.take_hook_events().is_empty());
        s.check_invariants().unwrap();
    }

    // ----- host_donate_guest -----

    #[test]
    fn donate_guest_success() {
        let mut s = with_vm(true);
        s.host_donate_guest(1, P, G).unwrap();
        assert_eq!(s.page(P), pg(NoPage, NoPage, 0));
        assert_eq!(
            s.annotation(P),
            Some(Annotation {
                owner: owner::GUEST,
                meta: guest_meta(1, G)
            })
        );
        assert_eq!(s.guest_leaf(1, G), Some(leaf(G, P, 1, Owned, Perms::RWX)));
        assert!(!s.hyp_mapped(P));
        assert_eq!(s.host_access(P), HostAccess::None);
        assert_eq!(s.host_abort((P << PAGE_SHIFT) + 8), AbortOutcome::Inject);
        assert_eq!(s.take_hook_events(), [(P << PAGE_SHIFT, PAGE_SIZE, HostAccess::None)]);
        assert!(s.take_poisoned().is_empty());
        s.check_invariants().unwrap();
        // The last gfn of a 47-bit IPA space: the annotation holds it.
        let last = (1u64 << (GUEST_MAX_IPA_BITS as u32 - PAGE_SHIFT)) - 1;
        assert_eq!(s.init_vm(GUEST_MAX_IPA_BITS, 2, true, META + 2, 1), Ok(2));
        s.host_donate_guest(2, RAM0_LAST, last).unwrap();
        assert_eq!(
            s.annotation(RAM0_LAST).map(|a| guest_meta_decode(a.meta)),
            Some((2, last))
        );
        refused(&mut s, Error::Inval, |s| s.host_donate_guest(2, Q, last + 1));
        assert_eq!(s.guest_gfns(2), [last]);
        s.check_invariants().unwrap();
        // The host-side transitions refuse a guest's page.
        refused(&mut s, Error::Perm, |s| s.host_share_hyp(P));
        refused(&mut s, Error::Perm, |s| s.host_unshare_hyp(P));
        refused(&mut s, Error::Perm, |s| s.hyp_pin_shared(P, 1));
        refused(&mut s, Error::Inval, |s| s.hyp_unpin_shared(P, 1));
        refused(&mut s, Error::Perm, |s| s.host_donate_hyp(P, 1));
        refused(&mut s, Error::Perm, |s| s.hyp_donate_host(P, 1));
        refused(&mut s, Error::Perm, |s| s.hyp_donate_host_mmio(P, 1));
    }

    #[test]
    fn donate_guest_errors_in_order() {
        let mut s = with_vms();
        let donate = |h, pfn, gfn| move |s: &mut Spec| s.host_donate_guest(h, pfn, gfn);
        // 1. The pfn.
        for pfn in [u64::MAX, u64::MAX >> PAGE_SHIFT, PFN_LIMIT, PFN_LIMIT + 1] {
            for h in [0, NP, PV, 9] {
                refused_as(&mut s, Error::Inval, "pfn", donate(h, pfn, GFN_LIMIT));
            }
        }
        // 2. The VM.
        for h in BAD_HANDLES.into_iter().chain([DYING]) {
            refused_as(&mut s, Error::NoEnt, "handle", donate(h, M, GFN_LIMIT));
        }
        // 3. The kind.
        refused_as(&mut s, Error::Perm, "np", donate(NP, M, GFN_LIMIT));
        refused_as(&mut s, Error::Perm, "np", donate(NP, P, G));
        // 4. The gfn.
        refused_as(&mut s, Error::Inval, "gfn", donate(PV, M, GFN_LIMIT));
        refused_as(&mut s, Error::Inval, "gfn", donate(PV, P, u64::MAX));
        // 5. RAM.
        refused_as(&mut s, Error::Perm, "MMIO", donate(PV, M, G));
        refused_as(&mut s, Error::Perm, "MMIO", donate(PV, RAM0_LAST + 1, G));
        refused_as(&mut s, Error::Perm, "MMIO", donate(PV, PFN_LIMIT - 1, G));
        // 6. Host Owned, the guest entry empty.
        s.host_donate_guest(PV, P, G).unwrap();
        refused_as(&mut s, Error::Perm, "donated", donate(PV, P, G + 1));
        refused_as(&mut s, Error::Perm, "gfn taken", donate(PV, Q, G));
        refused_as(&mut s, Error::Perm, "hyp-owned", donate(PV, META, G + 1));
        s.host_share_hyp(Q).unwrap();
        refused_as(&mut s, Error::Perm, "hyp-shared", donate(PV, Q, G + 1));
        s.host_share_guest(NP, Q + 1, G, 1, Perms::R).unwrap();
        refused_as(&mut s, Error::Perm, "np-shared", donate(PV, Q + 1, G + 1));
        refused_as(&mut s, Error::Perm, "dying's share", donate(PV, Q + 8, G + 1));
        s.host_donate_guest(PV, Q + 2, G + 2).unwrap();
        s.guest_share_host(PV, G + 2).unwrap();
        refused_as(&mut s, Error::Perm, "shared back", donate(PV, Q + 2, G + 3));
        s.force_reclaim_guest_page(P).unwrap();
        refused_as(&mut s, Error::Perm, "poisoned gfn", donate(PV, P, G));
        s.host_donate_guest(PV, P, G + 1).unwrap();
        s.check_invariants().unwrap();
    }

    // ----- guest_share_host / guest_unshare_host -----

    #[test]
    fn guest_share_unshare_host_success() {
        let mut s = with_vm(true);
        s.host_donate_guest(1, P, G).unwrap();
        s.take_hook_events();
        s.guest_share_host(1, G).unwrap();
        assert_eq!(s.page(P), pg(SharedBorrowed, NoPage, 0));
        assert_eq!(s.annotation(P), None);
        assert_eq!(s.guest_leaf(1, G), Some(leaf(G, P, 1, SharedOwned, Perms::RWX)));
        assert_eq!(s.host_access(P), HostAccess::Mem);
        assert_eq!(s.host_abort(P << PAGE_SHIFT), AbortOutcome::Handled);
        assert_eq!(s.take_hook_events(), [(P << PAGE_SHIFT, PAGE_SIZE, HostAccess::Mem)]);
        s.check_invariants().unwrap();
        refused(&mut s, Error::Perm, |s| s.guest_share_host(1, G));
        // Nothing else may take a borrowed page.
        refused(&mut s, Error::Perm, |s| s.host_share_hyp(P));
        refused(&mut s, Error::Perm, |s| s.host_donate_hyp(P, 1));
        refused(&mut s, Error::Perm, |s| s.hyp_donate_host(P, 1));
        refused(&mut s, Error::Perm, |s| s.hyp_pin_shared(P, 1));
        refused(&mut s, Error::Perm, |s| s.host_donate_guest(1, P, G + 1));
        refused(&mut s, Error::Perm, |s| s.force_reclaim_guest_page(P));
        s.guest_unshare_host(1, G).unwrap();
        assert_eq!(s.page(P), pg(NoPage, NoPage, 0));
        assert_eq!(
            s.annotation(P),
            Some(Annotation {
                owner: owner::GUEST,
                meta: guest_meta(1, G)
            })
        );
        assert_eq!(s.guest_leaf(1, G), Some(leaf(G, P, 1, Owned, Perms::RWX)));
        assert_eq!(s.host_abort(P << PAGE_SHIFT), AbortOutcome::Inject);
        assert_eq!(s.take_hook_events(), [(P << PAGE_SHIFT, PAGE_SIZE, HostAccess::None)]);
        refused(&mut s, Error::Perm, |s| s.guest_unshare_host(1, G));
        s.check_invariants().unwrap();
    }

    #[test]
    fn guest_share_unshare_host_errors_in_order() {
        type F = fn(&mut Spec, Handle, u64) -> Result<(), Error>;
        let calls: [(&str, F); 2] = [
            ("guest_share_host", Spec::guest_share_host),
            ("guest_unshare_host", Spec::guest_unshare_host),
        ];
        for (name, f) in calls {
            let mut s = with_vms();
            s.host_share_guest(NP, P, G, 1, Perms::R).unwrap();
            s.host_donate_guest(PV, Q, G).unwrap();
            s.host_donate_guest(PV, Q + 1, G + 1).unwrap();
            s.force_reclaim_guest_page(Q + 1).unwrap();
            s.take_hook_events();
            s.take_poisoned();
            for h in BAD_HANDLES.into_iter().chain([DYING]) {
                refused_as(&mut s, Error::NoEnt, name, |s| f(s, h, GFN_LIMIT));
            }
            refused_as(&mut s, Error::Perm, name, |s| f(s, NP, G));
            refused_as(&mut s, Error::Perm, name, |s| f(s, NP, GFN_LIMIT));
            refused_as(&mut s, Error::Inval, name, |s| f(s, PV, GFN_LIMIT));
            refused_as(&mut s, Error::Inval, name, |s| f(s, PV, u64::MAX));
            refused_as(&mut s, Error::NoEnt, name, |s| f(s, PV, G + 2));
            refused_as(&mut s, Error::NoEnt, name, |s| f(s, PV, G + 1)); // poisoned
        }
    }

    // ----- Teardown -----

    #[test]
    fn teardown_protected_vm() {
        let mut s = spec();
        let h = s.init_vm(IPA, 5, true, META, 2).unwrap();
        s.host_donate_guest(h, P, G).unwrap();
        s.host_donate_guest(h, P + 1, G + 1).unwrap();
        s.host_donate_guest(h, P + 2, G + 2).unwrap();
        s.guest_share_host(h, G + 1).unwrap();
        s.force_reclaim_guest_page(P + 2).unwrap();
        s.take_hook_events();
        assert_eq!(s.take_poisoned(), [P + 2]);
        // Reclaim and finalize want a dying VM.
        refused(&mut s, Error::Perm, |s| s.reclaim_dying_guest_page(h, G));
        refused(&mut s, Error::Perm, |s| s.reclaim_dying_guest_page(h, GFN_LIMIT));
        refused(&mut s, Error::Perm, |s| s.finalize_teardown_vm(h));
        for bad in BAD_HANDLES {
            refused(&mut s, Error::NoEnt, |s| s.start_teardown_vm(bad));
            refused(&mut s, Error::NoEnt, |s| s.reclaim_dying_guest_page(bad, GFN_LIMIT));
            refused(&mut s, Error::NoEnt, |s| s.finalize_teardown_vm(bad));
        }
        s.start_teardown_vm(h).unwrap();
        assert!(s.vm(h).unwrap().dying);
        assert!(s.take_hook_events().is_empty());
        s.check_invariants().unwrap();
        // A dying VM is gone for everything else.
        refused(&mut s, Error::NoEnt, |s| s.start_teardown_vm(h));
        refused(&mut s, Error::NoEnt, |s| s.host_donate_guest(h, Q, G + 3));
        refused(&mut s, Error::NoEnt, |s| s.guest_share_host(h, G));
        refused(&mut s, Error::NoEnt, |s| s.guest_unshare_host(h, G + 1));
        refused(&mut s, Error::NoEnt, |s| s.host_share_guest(h, Q, G + 3, 1, Perms::R));
        // Reclaim checks.
        refused(&mut s, Error::Busy, |s| s.finalize_teardown_vm(h));
        refused(&mut s, Error::Inval, |s| s.reclaim_dying_guest_page(h, GFN_LIMIT));
        refused(&mut s, Error::Inval, |s| s.reclaim_dying_guest_page(h, u64::MAX));
        refused(&mut s, Error::NoEnt, |s| s.reclaim_dying_guest_page(h, G + 3));
        refused(&mut s, Error::NoEnt, |s| s.reclaim_dying_guest_page(h, G + 2)); // poisoned

        // Guest Owned: poisoned, host Owned, hook.
        s.reclaim_dying_guest_page(h, G).unwrap();
        assert_eq!(s.guest_leaf(h, G), None);
        assert_eq!(s.page(P), SpecPage::default());
        assert_eq!(s.annotation(P), None);
        assert_eq!(s.take_hook_events(), [(P << PAGE_SHIFT, PAGE_SIZE, HostAccess::Mem)]);
        assert_eq!(s.take_poisoned(), [P]);
        s.check_invariants().unwrap();
        // Guest SharedOwned: poisoned, no hook (the host had access).
        s.reclaim_dying_guest_page(h, G + 1).unwrap();
        assert_eq!(s.page(P + 1), SpecPage::default());
        assert!(s.take_hook_events().is_empty());
        assert_eq!(s.take_poisoned(), [P + 1]);
        refused(&mut s, Error::NoEnt, |s| s.reclaim_dying_guest_page(h, G));
        assert_eq!(s.guest_gfns(h), [G + 2]);
        s.check_invariants().unwrap();
        // Finalize: poisoned entries do not count.
        s.finalize_teardown_vm(h).unwrap();
        assert_eq!(s.vm(h), None);
        assert!(s.guest_gfns(h).is_empty());
        assert!(!s.guest_poisoned(h, G + 2));
        assert_eq!(s.take_poisoned(), [META, META + 1]);
        assert_eq!(
            s.take_hook_events(),
            [(META << PAGE_SHIFT, 2 * PAGE_SIZE, HostAccess::Mem)]
        );
        assert!(!s.hyp_mapped(META));
        refused(&mut s, Error::NoEnt, |s| s.finalize_teardown_vm(h));
        refused(&mut s, Error::NoEnt, |s| s.reclaim_dying_guest_page(h, G));
        refused(&mut s, Error::NoEnt, |s| s.start_teardown_vm(h));
        s.check_invariants().unwrap();
        assert_eq!(s, spec());
    }

    #[test]
    fn teardown_np_vm() {
        let mut s = spec();
        assert_eq!(s.init_vm(IPA, 1, false, META, 1), Ok(1));
        assert_eq!(s.init_vm(IPA, 2, false, META + 1, 1), Ok(2));
        s.host_share_guest(1, P, G, 1, Perms::R).unwrap();
        s.host_share_guest(2, P, G, 1, Perms::R).unwrap();
        s.host_share_guest(1, B, G + BLOCK_PAGES, BLOCK_PAGES, Perms::R)
            .unwrap();
        s.take_hook_events();
        s.start_teardown_vm(1).unwrap();
        refused(&mut s, Error::Busy, |s| s.finalize_teardown_vm(1));
        refused(&mut s, Error::NoEnt, |s| s.host_unshare_guest(1, G, 1));
        // A gfn inside a block reclaims the block, as unshare, unpoisoned.
        s.reclaim_dying_guest_page(1, G + BLOCK_PAGES + 77).unwrap();
        assert_eq!(s.guest_leaf(1, G + BLOCK_PAGES), None);
        assert_eq!(s.page(B + 77), SpecPage::default());
        s.reclaim_dying_guest_page(1, G).unwrap();
        assert_eq!(s.page(P), shared(1));
        assert!(s.take_hook_events().is_empty());
        assert!(s.take_poisoned().is_empty());
        s.check_invariants().unwrap();
        s.finalize_teardown_vm(1).unwrap();
        assert_eq!(s.take_poisoned(), [META]);
        assert_eq!(s.take_hook_events(), [(META << PAGE_SHIFT, PAGE_SIZE, HostAccess::Mem)]);
        // The other VM is untouched.
        assert_eq!(s.guest_leaf(2, G).map(|l| l.pfn), Some(P));
        s.host_unshare_guest(2, G, 1).unwrap();
        assert_eq!(s.page(P), SpecPage::default());
        s.check_invariants().unwrap();
    }

    /// Decision: finalize returns the metadata "as `hyp_donate_host`", with
    /// its checks, so metadata the hypervisor already gave back refuses it.
    #[test]
    fn finalize_needs_the_metadata_still_hyps() {
        let mut s = with_vm(true);
        s.hyp_donate_host(META + 1, 1).unwrap();
        s.start_teardown_vm(1).unwrap();
        s.take_hook_events();
        refused(&mut s, Error::Perm, |s| s.finalize_teardown_vm(1));
        s.host_donate_hyp(META + 1, 1).unwrap();
        s.take_hook_events();
        s.finalize_teardown_vm(1).unwrap();
        assert_eq!(s.take_poisoned(), [META, META + 1]);
        s.check_invariants().unwrap();
    }

    // ----- force_reclaim_guest_page -----

    #[test]
    fn force_reclaim_success() {
        let mut s = with_vm(true);
        s.host_donate_guest(1, P, G).unwrap();
        s.take_hook_events();
        s.force_reclaim_guest_page(P).unwrap();
        assert_eq!(s.guest_leaf(1, G), None);
        assert!(s.guest_poisoned(1, G));
        assert_eq!(s.guest_gfns(1), [G]);
        assert_eq!(s.page(P), SpecPage::default());
        assert_eq!(s.annotation(P), None);
        assert_eq!(s.host_access(P), HostAccess::Mem);
        assert_eq!(s.take_hook_events(), [(P << PAGE_SHIFT, PAGE_SIZE, HostAccess::Mem)]);
        assert_eq!(s.take_poisoned(), [P]);
        assert!(s.take_poisoned().is_empty(), "taken once");
        s.check_invariants().unwrap();
        refused(&mut s, Error::Perm, |s| s.force_reclaim_guest_page(P));
        refused(&mut s, Error::Perm, |s| s.host_donate_guest(1, Q, G));
        refused(&mut s, Error::NoEnt, |s| s.guest_share_host(1, G));
        refused(&mut s, Error::NoEnt, |s| s.guest_unshare_host(1, G));
        // The page is the host's again: it may go to the same guest elsewhere.
        s.host_donate_guest(1, P, G + 1).unwrap();
        // On a dying VM too.
        s.host_donate_guest(1, Q, G + 2).unwrap();
        s.start_teardown_vm(1).unwrap();
        s.take_hook_events();
        s.force_reclaim_guest_page(Q).unwrap();
        assert_eq!(s.take_poisoned(), [Q]);
        assert_eq!(s.take_hook_events(), [(Q << PAGE_SHIFT, PAGE_SIZE, HostAccess::Mem)]);
        assert_eq!(s.guest_gfns(1), [G, G + 1, G + 2]);
        refused(&mut s, Error::NoEnt, |s| s.reclaim_dying_guest_page(1, G + 2));
        s.reclaim_dying_guest_page(1, G + 1).unwrap();
        s.finalize_teardown_vm(1).unwrap();
        assert_eq!(s.take_poisoned(), [P, META, META + 1]);
        s.check_invariants().unwrap();
    }

    #[test]
    fn force_reclaim_errors_in_order() {
        let mut s = with_vms();
        s.host_share_guest(NP, P, G, 1, Perms::R).unwrap();
        s.host_donate_guest(PV, Q, G).unwrap();
        s.guest_share_host(PV, G).unwrap();
        s.host_share_hyp(Q + 1).unwrap();
        s.host_donate_hyp_mmio(M, 1).unwrap();
        s.take_hook_events();
        for pfn in [u64::MAX, u64::MAX >> PAGE_SHIFT, PFN_LIMIT] {
            refused_as(&mut s, Error::Inval, "pfn", |s| s.force_reclaim_guest_page(pfn));
        }
        for (what, pfn) in [
            ("MMIO", M),
            ("MMIO", M + 1),
            ("MMIO", RAM0_LAST + 1),
            ("host owned", Q + 2),
            ("hyp owned", META),
            ("hyp shared", Q + 1),
            ("np shared", P),
            ("dying's share", Q + 8),
            ("shared back", Q),
        ] {
            refused_as(&mut s, Error::Perm, what, |s| s.force_reclaim_guest_page(pfn));
        }
        // States the transitions never reach: an annotation naming no VM,
        // or a gfn where the VM has no Owned leaf of this page.
        let mut t = s.clone();
        t.pages.insert(B, pg(NoPage, NoPage, 0));
        for h in BAD_HANDLES {
            t.annotations.insert(B, guest_annotation(h, G));
            refused_as(&mut t, Error::NoEnt, "no VM", |s| s.force_reclaim_guest_page(B));
        }
        for (h, gfn) in [(PV, G + 1), (PV, G), (NP, G), (DYING, G)] {
            t.annotations.insert(B, guest_annotation(h, gfn));
            refused_as(&mut t, Error::Perm, "no leaf", |s| s.force_reclaim_guest_page(B));
        }
        s.check_invariants().unwrap();
    }

    // ----- Model sanity with guests: random sequences -----

    /// Random guest, host and hyp calls on a few VMs, pages and gfns:
    /// invariants hold after every step, refusals change nothing, and
    /// successes emit the documented events and poison.
    #[test]
    fn random_guest_sequences_keep_invariants() {
        let mut rng = Rng(0x2545_F491_4F6C_DD1D);
        let pfns = [P, P + 1, B, B + 1, B + BLOCK_PAGES, M, RAM0_LAST + 1 - BLOCK_PAGES];
        let gfns = [0, 1, 2, BLOCK_PAGES, BLOCK_PAGES + 1, GFN_LIMIT - 1, GFN_LIMIT];
        let nrs = [0, 1, 1, 1, 2, BLOCK_PAGES, BLOCK_PAGES];
        // (operation number below, weight): mostly guest calls, teardown rare.
        let weights: [(u64, u64); 18] = [
            (0, 2),
            (1, 10),
            (3, 5),
            (4, 2),
            (5, 2),
            (6, 2),
            (7, 2),
            (8, 10),
            (10, 5),
            (11, 4),
            (12, 1),
            (13, 5),
            (14, 2),
            (15, 3),
            (16, 1),
            (17, 1),
            (18, 1),
            (19, 2),
        ];
        let total: u64 = weights.iter().map(|w| w.1).sum();
        for run in 0..60 {
            let mut s = spec();
            assert_eq!(s.init_vm(IPA, 1, false, META, 1), Ok(1));
            assert_eq!(s.init_vm(IPA, 2, true, META + 1, 1), Ok(2));
            assert_eq!(s.init_vm(IPA + 1, 3, run % 2 == 0, META + 2, 1), Ok(3));
            s.take_hook_events();
            for _ in 0..400 {
                let pick = |rng: &mut Rng, v: &[u64]| v[rng.below(v.len() as u64) as usize];
                let h = if rng.below(8) == 0 {
                    rng.below(10) as Handle
                } else {
                    1 + rng.below(3) as Handle
                };
                let pfn = pick(&mut rng, &pfns);
                let gfn = pick(&mut rng, &gfns);
                let nr = pick(&mut rng, &nrs);
                let prot = Perms::new(rng.below(2) == 0, rng.below(2) == 0, rng.below(2) == 0);
                let before = s.clone();
                let mut r = rng.below(total);
                let op = weights
                    .iter()
                    .find(|w| {
                        let hit = r < w.1;
                        r = r.saturating_sub(w.1);
                        hit
                    })
                    .unwrap()
                    .0;
                let r = match op {
                    0 => s
                        .init_vm(
                            IPA + rng.below(2) as u8,
                            rng.below(5) as u16,
                            rng.below(2) == 0,
                            META + rng.below(6),
                            1 + rng.below(2),
                        )
                        .map(drop),
                    1 => s.host_share_guest(h, pfn, gfn, nr, prot),
                    3 => s.host_unshare_guest(h, gfn, nr),
                    4 => s.host_relax_perms_guest(h, gfn, prot),
                    5 => s.host_wrprotect_guest(h, gfn, nr),
                    6 => s.host_test_clear_young_guest(h, gfn, nr, rng.below(2) == 0).map(drop),
                    7 => s.host_mkyoung_guest(h, gfn),
                    8 => s.host_donate_guest(h, pfn + rng.below(2), gfn),
                    10 => s.guest_share_host(h, gfn),
                    11 => s.guest_unshare_host(h, gfn),
                    12 => s.start_teardown_vm(h),
                    13 => s.reclaim_dying_guest_page(h, gfn),
                    14 => s.finalize_teardown_vm(h),
                    15 => s.force_reclaim_guest_page(pfn + rng.below(2)),
                    16 => s.host_share_hyp(pfn),
                    17 => s.host_donate_hyp(pfn, 1),
                    18 => s.hyp_donate_host(META + rng.below(6), 1),
                    _ => {
                        let pa = (pfn << PAGE_SHIFT) | rng.below(PAGE_SIZE);
                        s.host_abort(pa);
                        Ok(())
                    }
                };
                let events = s.take_hook_events();
                let poisoned = s.take_poisoned();
                match r {
                    Err(_) => {
                        assert!(events.is_empty() && poisoned.is_empty());
                        assert_eq!(s, before, "op {op} refused but changed state");
                    }
                    Ok(()) => match op {
                        1..=7 | 12 | 16 => assert!(events.is_empty() && poisoned.is_empty(), "op {op}"),
                        8 | 11 => {
                            assert!(poisoned.is_empty());
                            assert!(matches!(events[..], [(_, PAGE_SIZE, HostAccess::None)]));
                        }
                        10 => assert!(matches!(events[..], [(_, PAGE_SIZE, HostAccess::Mem)])),
                        19 => assert!(events.is_empty() && poisoned.is_empty()),
                        13 => match poisoned[..] {
                            [] => assert!(events.is_empty()),
                            [q] => {
                                let want = [(q << PAGE_SHIFT, PAGE_SIZE, HostAccess::Mem)];
                                let had_no_access = before.page(q).host == NoPage;
                                assert_eq!(events, want[..usize::from(had_no_access)]);
                            }
                            _ => panic!("reclaim poisoned {poisoned:?}"),
                        },
                        15 => {
                            assert_eq!(poisoned.len(), 1);
                            assert_eq!(events, [(poisoned[0] << PAGE_SHIFT, PAGE_SIZE, HostAccess::Mem)]);
                            assert_eq!(before.page(poisoned[0]).host, NoPage);
                        }
                        14 => {
                            let vm = before.vm(h).unwrap();
                            let metas: Vec<u64> = (vm.meta_pfn..vm.meta_pfn + vm.meta_nr).collect();
                            assert_eq!(poisoned, metas);
                            assert_eq!(
                                events,
                                [(vm.meta_pfn << PAGE_SHIFT, vm.meta_nr << PAGE_SHIFT, HostAccess::Mem)]
                            );
                        }
                        _ => assert_eq!(events.len(), 1, "op {op}"),
                    },
                }
                for q in s.touched_pfns() {
                    let want = if s.host_access(q) == HostAccess::None {
                        AbortOutcome::Inject
                    } else {
                        AbortOutcome::Handled
                    };
                    assert_eq!(s.host_abort(q << PAGE_SHIFT), want);
                }
                if let Err(e) = s.check_invariants() {
                    panic!("op {op} (h {h}, pfn {pfn:#x}, gfn {gfn:#x}, nr {nr}): {e}");
                }
            }
        }
    }
}
