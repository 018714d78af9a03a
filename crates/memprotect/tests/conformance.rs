//! Conformance table for page-ownership transitions.
//!
//! The checklist of pKVM's `pkvm_ownership_selftest()` (reference section
//! 2.5), restricted to the host/hyp transitions Warden has today, extended
//! with MMIO donation and reclaim and with hostile arguments. The tables are
//! written against the small [`Transitions`] trait so the same lines run
//! against the executable spec and against the concrete implementation:
//! implement the trait for a new backend and call [`conformance`] with a
//! constructor of fresh instances over [`RAM`] and [`PA_BITS`].
//!
//! Every table starts from a fresh instance (all RAM host-owned, no MMIO
//! donated). After every refused call the runner also checks that nothing
//! observable changed on a set of watched pages (page states of RAM pages,
//! abort outcomes of MMIO pages).
//!
//! The guest lines of the checklist run in [`SELFTEST`] against a
//! non-protected VM; [`PROTECTED`] covers the 7.1 extensions (donation to a
//! protected guest, guest share/unshare host, force-reclaim with
//! poisoning, two-phase teardown with reclaim) and [`GUESTS_HOSTILE`] the
//! hostile guest arguments. Left out: FF-A (not planned): `share_ffa` /
//! `unshare_ffa` in every block.

mod support;

use warden_memprotect::spec::Spec;
use warden_memprotect::{AbortOutcome, Error, Handle, PageState, Perms, Region, BLOCK_PAGES, PAGE_SHIFT};

/// The transitions under test and just enough state to observe them.
trait Transitions {
    /// `__pkvm_host_share_hyp`.
    fn host_share_hyp(&mut self, pfn: u64) -> Result<(), Error>;
    /// `__pkvm_host_unshare_hyp`.
    fn host_unshare_hyp(&mut self, pfn: u64) -> Result<(), Error>;
    /// `hyp_pin_shared_mem`.
    fn hyp_pin_shared(&mut self, pfn: u64, nr: u64) -> Result<(), Error>;
    /// `hyp_unpin_shared_mem`.
    fn hyp_unpin_shared(&mut self, pfn: u64, nr: u64) -> Result<(), Error>;
    /// `__pkvm_host_donate_hyp`.
    fn host_donate_hyp(&mut self, pfn: u64, nr: u64) -> Result<(), Error>;
    /// `__pkvm_hyp_donate_host`.
    fn hyp_donate_host(&mut self, pfn: u64, nr: u64) -> Result<(), Error>;
    /// `__pkvm_host_donate_hyp_mmio`.
    fn host_donate_hyp_mmio(&mut self, pfn: u64, nr: u64) -> Result<(), Error>;
    /// `__pkvm_hyp_donate_host_mmio`.
    fn hyp_donate_host_mmio(&mut self, pfn: u64, nr: u64) -> Result<(), Error>;
    /// A host stage-2 abort at `pa`.
    fn host_abort(&mut self, pa: u64) -> AbortOutcome;
    /// The host's state of RAM page `pfn`.
    fn host_state(&mut self, pfn: u64) -> PageState;
    /// The hypervisor's state of RAM page `pfn`.
    fn hyp_state(&mut self, pfn: u64) -> PageState;
    /// The pin count of RAM page `pfn`.
    fn pins(&mut self, pfn: u64) -> u32;
    /// `__pkvm_init_vm` (40-bit IPA space).
    fn init_vm(&mut self, protected: bool, vmid: u16, meta_pfn: u64, meta_nr: u64) -> Result<Handle, Error>;
    /// Apply a guest transition.
    fn guest(&mut self, op: GuestOp) -> Result<(), Error>;
    /// `__pkvm_host_test_clear_young_guest`.
    fn young(&mut self, h: Handle, gfn: u64, nr: u64, mkold: bool) -> Result<bool, Error>;
    /// How many guests the host shared RAM page `pfn` with.
    fn guest_shares(&mut self, pfn: u64) -> u32;
    /// Guest `h`'s state of its page at `gfn` and where it points (`None`:
    /// nothing mapped), and whether the entry is poisoned.
    fn guest_page(&mut self, h: Handle, gfn: u64) -> (Option<(PageState, u64)>, bool);
    /// Pages poisoned since the last call.
    fn take_poisoned(&mut self) -> Vec<u64>;
}

/// The guest transitions, as the tables name them.
#[derive(Clone, Copy, Debug)]
enum GuestOp {
    Share(Handle, u64, u64, u64, Perms),
    Unshare(Handle, u64, u64),
    Relax(Handle, u64, Perms),
    Wrprotect(Handle, u64, u64),
    Mkyoung(Handle, u64),
    Donate(Handle, u64, u64),
    ShareHost(Handle, u64),
    UnshareHost(Handle, u64),
    StartTeardown(Handle),
    Reclaim(Handle, u64),
    Finalize(Handle),
    ForceReclaim(u64),
}

impl Transitions for Spec {
    fn host_share_hyp(&mut self, pfn: u64) -> Result<(), Error> {
        Spec::host_share_hyp(self, pfn)
    }
    fn host_unshare_hyp(&mut self, pfn: u64) -> Result<(), Error> {
        Spec::host_unshare_hyp(self, pfn)
    }
    fn hyp_pin_shared(&mut self, pfn: u64, nr: u64) -> Result<(), Error> {
        Spec::hyp_pin_shared(self, pfn, nr)
    }
    fn hyp_unpin_shared(&mut self, pfn: u64, nr: u64) -> Result<(), Error> {
        Spec::hyp_unpin_shared(self, pfn, nr)
    }
    fn host_donate_hyp(&mut self, pfn: u64, nr: u64) -> Result<(), Error> {
        Spec::host_donate_hyp(self, pfn, nr)
    }
    fn hyp_donate_host(&mut self, pfn: u64, nr: u64) -> Result<(), Error> {
        Spec::hyp_donate_host(self, pfn, nr)
    }
    fn host_donate_hyp_mmio(&mut self, pfn: u64, nr: u64) -> Result<(), Error> {
        Spec::host_donate_hyp_mmio(self, pfn, nr)
    }
    fn hyp_donate_host_mmio(&mut self, pfn: u64, nr: u64) -> Result<(), Error> {
        Spec::hyp_donate_host_mmio(self, pfn, nr)
    }
    fn host_abort(&mut self, pa: u64) -> AbortOutcome {
        Spec::host_abort(self, pa)
    }
    fn host_state(&mut self, pfn: u64) -> PageState {
        self.page(pfn).host
    }
    fn hyp_state(&mut self, pfn: u64) -> PageState {
        self.page(pfn).hyp
    }
    fn pins(&mut self, pfn: u64) -> u32 {
        self.page(pfn).pins
    }
    fn init_vm(&mut self, protected: bool, vmid: u16, meta_pfn: u64, meta_nr: u64) -> Result<Handle, Error> {
        Spec::init_vm(self, 40, vmid, protected, meta_pfn, meta_nr)
    }
    fn guest(&mut self, op: GuestOp) -> Result<(), Error> {
        match op {
            GuestOp::Share(h, p, g, n, prot) => self.host_share_guest(h, p, g, n, prot),
            GuestOp::Unshare(h, g, n) => self.host_unshare_guest(h, g, n),
            GuestOp::Relax(h, g, prot) => self.host_relax_perms_guest(h, g, prot),
            GuestOp::Wrprotect(h, g, n) => self.host_wrprotect_guest(h, g, n),
            GuestOp::Mkyoung(h, g) => self.host_mkyoung_guest(h, g),
            GuestOp::Donate(h, p, g) => self.host_donate_guest(h, p, g),
            GuestOp::ShareHost(h, g) => Spec::guest_share_host(self, h, g),
            GuestOp::UnshareHost(h, g) => Spec::guest_unshare_host(self, h, g),
            GuestOp::StartTeardown(h) => self.start_teardown_vm(h),
            GuestOp::Reclaim(h, g) => self.reclaim_dying_guest_page(h, g),
            GuestOp::Finalize(h) => self.finalize_teardown_vm(h),
            GuestOp::ForceReclaim(p) => self.force_reclaim_guest_page(p),
        }
    }
    fn young(&mut self, h: Handle, gfn: u64, nr: u64, mkold: bool) -> Result<bool, Error> {
        self.host_test_clear_young_guest(h, gfn, nr, mkold)
    }
    fn guest_shares(&mut self, pfn: u64) -> u32 {
        self.page(pfn).guest_shares
    }
    fn guest_page(&mut self, h: Handle, gfn: u64) -> (Option<(PageState, u64)>, bool) {
        let leaf = self.guest_leaf(h, gfn).map(|l| (l.state, l.pfn + (gfn - l.gfn)));
        (leaf, self.guest_poisoned(h, gfn))
    }
    fn take_poisoned(&mut self) -> Vec<u64> {
        Spec::take_poisoned(self)
    }
}

// ---------------------------------------------------------------------------
// Layout
// ---------------------------------------------------------------------------

/// Width of the physical address space every backend is built with.
const PA_BITS: u32 = 48;
/// Two RAM regions with a gap between them; MMIO everywhere else.
const RAM: [Region; 2] = [
    Region {
        base: 0x4000_0000,
        size: 256 << 20,
    },
    Region {
        base: 0x8000_0000,
        size: 64 << 20,
    },
];
/// The page walked through the reference checklist (inside RAM[0]).
const P: u64 = 0x4010_0000 >> PAGE_SHIFT;
/// First and last pages of RAM[0], last page of RAM[1].
const RAM0_FIRST: u64 = 0x4000_0000 >> PAGE_SHIFT;
const RAM0_LAST: u64 = ((0x4000_0000 + (256 << 20)) >> PAGE_SHIFT) - 1;
const RAM1_LAST: u64 = ((0x8000_0000 + (64 << 20)) >> PAGE_SHIFT) - 1;
/// A device (the virt machine's UART), MMIO.
const M: u64 = 0x0900_0000 >> PAGE_SHIFT;
/// One past the last pfn of the PA space.
const PFN_LIMIT: u64 = 1 << (PA_BITS - PAGE_SHIFT);

/// RAM pages whose (H, Y, pins) must not change on a refusal.
const WATCHED_RAM: [u64; 9] = [
    P - 1,
    P,
    P + 1,
    P + 2,
    RAM0_FIRST,
    RAM0_LAST - 1,
    RAM0_LAST,
    RAM1_LAST - 1,
    RAM1_LAST,
];
/// MMIO pages whose abort outcome must not change on a refusal.
const WATCHED_MMIO: [u64; 5] = [M, M + 1, M + 2, RAM0_FIRST - 1, PFN_LIMIT - 1];

const fn pa(pfn: u64) -> u64 {
    pfn << PAGE_SHIFT
}

// ---------------------------------------------------------------------------
// Table vocabulary
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum Op {
    ShareHyp(u64),
    UnshareHyp(u64),
    Pin(u64, u64),
    Unpin(u64, u64),
    DonateHyp(u64, u64),
    HypDonateHost(u64, u64),
    DonateMmio(u64, u64),
    ReclaimMmio(u64, u64),
}

impl Op {
    fn apply<T: Transitions>(self, t: &mut T) -> Result<(), Error> {
        match self {
            Op::ShareHyp(pfn) => t.host_share_hyp(pfn),
            Op::UnshareHyp(pfn) => t.host_unshare_hyp(pfn),
            Op::Pin(pfn, nr) => t.hyp_pin_shared(pfn, nr),
            Op::Unpin(pfn, nr) => t.hyp_unpin_shared(pfn, nr),
            Op::DonateHyp(pfn, nr) => t.host_donate_hyp(pfn, nr),
            Op::HypDonateHost(pfn, nr) => t.hyp_donate_host(pfn, nr),
            Op::DonateMmio(pfn, nr) => t.host_donate_hyp_mmio(pfn, nr),
            Op::ReclaimMmio(pfn, nr) => t.hyp_donate_host_mmio(pfn, nr),
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Step {
    /// Call a transition; expect this result.
    Call(Op, Result<(), Error>),
    /// Host abort at a physical address; expect this outcome.
    Abort(u64, AbortOutcome),
    /// RAM page `pfn` is in state (H, Y, pins).
    Expect(u64, PageState, PageState, u32),
    /// Create a VM (protected, VMID, metadata pfn, pages); expect this.
    Vm(bool, u16, u64, u64, Result<Handle, Error>),
    /// Call a guest transition; expect this result.
    G(GuestOp, Result<(), Error>),
    /// Test (and maybe clear) a guest leaf's access flag; expect this.
    Young(Handle, u64, u64, bool, Result<bool, Error>),
    /// RAM page `pfn` is shared with this many guests.
    Shares(u64, u32),
    /// Guest `h` at `gfn`: state and page (`None`: nothing), poisoned.
    GuestAt(Handle, u64, Option<(PageState, u64)>, bool),
    /// The pages poisoned since the last check, in order.
    PoisonedPages(&'static [u64]),
}

type Line = (&'static str, Step);

use AbortOutcome::{Handled, Inject};
use GuestOp::{
    Donate, Finalize, ForceReclaim, Mkyoung, Reclaim, Relax, Share, ShareHost, StartTeardown, Unshare, UnshareHost,
    Wrprotect,
};
use Op::*;
use PageState::{NoPage, Owned, SharedBorrowed, SharedOwned};
use Step::{Abort, Call, Expect, GuestAt, PoisonedPages, Shares, Vm, Young, G};

const OK: Result<(), Error> = Ok(());
const PERM: Result<(), Error> = Err(Error::Perm);
const INVAL: Result<(), Error> = Err(Error::Inval);
const BUSY: Result<(), Error> = Err(Error::Busy);
const NOENT: Result<(), Error> = Err(Error::NoEnt);
const TOOBIG: Result<(), Error> = Err(Error::TooBig);

/// The metadata pages of the VMs the tables create (end of RAM[1]).
const VM_META: u64 = RAM1_LAST - 3;
/// The gfn the reference checklist uses, and its neighbour.
const GFN: u64 = 0x10;
/// A 2 MiB-aligned page of RAM[0], and a 2 MiB-aligned gfn.
const BLOCK: u64 = RAM0_FIRST + 4 * BLOCK_PAGES;
const GBLOCK: u64 = 2 * BLOCK_PAGES;

// ---------------------------------------------------------------------------
// Tables
// ---------------------------------------------------------------------------

/// `pkvm_ownership_selftest()` for host and hyp, line by line. Lines marked
/// "extra" are not in the reference.
const SELFTEST: &[Line] = &[
    // The reference's guest is a non-protected VM.
    ("setup: init np VM", Vm(false, 1, VM_META, 2, Ok(1))),
    // The reference starts from a page allocated from the hyp pool.
    ("setup: donate_hyp", Call(DonateHyp(P, 1), OK)),
    ("start: H NOPAGE / Y OWNED", Expect(P, NoPage, Owned, 0)),
    // Y owned.
    ("Y owned: donate_hyp", Call(DonateHyp(P, 1), PERM)),
    ("Y owned: share_hyp", Call(ShareHyp(P), PERM)),
    ("Y owned: unshare_hyp", Call(UnshareHyp(P), PERM)),
    ("Y owned: pin", Call(Pin(P, 1), PERM)),
    ("Y owned: share_guest", G(Share(1, P, GFN, 1, Perms::RWX), PERM)),
    ("Y owned: unshare_guest", G(Unshare(1, GFN, 1), NOENT)),
    ("Y owned: unpin (extra)", Call(Unpin(P, 1), INVAL)),
    ("Y owned: host abort injects (extra)", Abort(pa(P), Inject)),
    ("Y owned: still H NOPAGE / Y OWNED", Expect(P, NoPage, Owned, 0)),
    // hyp_donate_host.
    ("hyp_donate_host", Call(HypDonateHost(P, 1), OK)),
    ("-> H OWNED / Y NOPAGE", Expect(P, Owned, NoPage, 0)),
    ("hyp_donate_host again", Call(HypDonateHost(P, 1), PERM)),
    ("host owned: unshare_hyp", Call(UnshareHyp(P), PERM)),
    ("host owned: pin", Call(Pin(P, 1), PERM)),
    ("host owned: unshare_guest", G(Unshare(1, GFN, 1), NOENT)),
    ("host owned: unpin (extra)", Call(Unpin(P, 1), INVAL)),
    ("host owned: host abort handled (extra)", Abort(pa(P) + 0x40, Handled)),
    // share_hyp.
    ("share_hyp", Call(ShareHyp(P), OK)),
    (
        "-> H SHARED_OWNED / Y SHARED_BORROWED",
        Expect(P, SharedOwned, SharedBorrowed, 0),
    ),
    ("shared: share_hyp again", Call(ShareHyp(P), PERM)),
    ("shared: donate_hyp", Call(DonateHyp(P, 1), PERM)),
    ("shared: hyp_donate_host", Call(HypDonateHost(P, 1), PERM)),
    ("shared: share_guest", G(Share(1, P, GFN, 1, Perms::RWX), PERM)),
    ("shared: unshare_guest", G(Unshare(1, GFN, 1), NOENT)),
    ("shared: unpin unpinned (extra)", Call(Unpin(P, 1), INVAL)),
    ("shared: host abort handled (extra)", Abort(pa(P), Handled)),
    // pin; pin; unpin.
    ("pin", Call(Pin(P, 1), OK)),
    ("pin", Call(Pin(P, 1), OK)),
    ("-> refcount 2 (extra)", Expect(P, SharedOwned, SharedBorrowed, 2)),
    ("unpin", Call(Unpin(P, 1), OK)),
    ("-> refcount 1", Expect(P, SharedOwned, SharedBorrowed, 1)),
    ("pinned: unshare_hyp busy", Call(UnshareHyp(P), BUSY)),
    ("pinned: share_hyp", Call(ShareHyp(P), PERM)),
    ("pinned: donate_hyp", Call(DonateHyp(P, 1), PERM)),
    ("pinned: hyp_donate_host", Call(HypDonateHost(P, 1), PERM)),
    ("pinned: share_guest", G(Share(1, P, GFN, 1, Perms::RWX), PERM)),
    ("pinned: host abort handled (extra)", Abort(pa(P), Handled)),
    ("unpin", Call(Unpin(P, 1), OK)),
    ("-> refcount 0", Expect(P, SharedOwned, SharedBorrowed, 0)),
    ("unpin once too often (extra)", Call(Unpin(P, 1), INVAL)),
    // unshare_hyp.
    ("unshare_hyp", Call(UnshareHyp(P), OK)),
    ("-> H OWNED / Y NOPAGE", Expect(P, Owned, NoPage, 0)),
    ("unshare_hyp again (extra)", Call(UnshareHyp(P), PERM)),
    // (FF-A: see the module comment.)
    // share_guest.
    ("share_guest(gfn)", G(Share(1, P, GFN, 1, Perms::RWX), OK)),
    ("-> H SHARED_OWNED", Expect(P, SharedOwned, NoPage, 0)),
    (
        "-> G[gfn] SHARED_BORROWED",
        GuestAt(1, GFN, Some((SharedBorrowed, P)), false),
    ),
    ("share_guest(gfn) again", G(Share(1, P, GFN, 1, Perms::RWX), PERM)),
    ("guest shared: donate_hyp", Call(DonateHyp(P, 1), PERM)),
    ("guest shared: share_hyp", Call(ShareHyp(P), PERM)),
    ("guest shared: unshare_hyp", Call(UnshareHyp(P), PERM)),
    ("guest shared: hyp_donate_host", Call(HypDonateHost(P, 1), PERM)),
    ("guest shared: pin", Call(Pin(P, 1), PERM)),
    ("guest shared: host abort handled (extra)", Abort(pa(P), Handled)),
    ("share_guest(gfn + 1)", G(Share(1, P, GFN + 1, 1, Perms::RWX), OK)),
    ("-> count == 2", Shares(P, 2)),
    ("unshare_guest(gfn)", G(Unshare(1, GFN, 1), OK)),
    ("-> G[gfn] NOPAGE", GuestAt(1, GFN, None, false)),
    ("-> H still SHARED_OWNED", Expect(P, SharedOwned, NoPage, 0)),
    ("-> count == 1 (extra)", Shares(P, 1)),
    ("unshare_guest(gfn + 1)", G(Unshare(1, GFN + 1, 1), OK)),
    ("-> H OWNED", Expect(P, Owned, NoPage, 0)),
    ("-> count == 0 (extra)", Shares(P, 0)),
    // donate_hyp.
    ("donate_hyp", Call(DonateHyp(P, 1), OK)),
    ("-> H NOPAGE / Y OWNED", Expect(P, NoPage, Owned, 0)),
    ("give it back (extra)", Call(HypDonateHost(P, 1), OK)),
    ("-> H OWNED / Y NOPAGE", Expect(P, Owned, NoPage, 0)),
    ("teardown: start (extra)", G(StartTeardown(1), OK)),
    ("teardown: finalize (extra)", G(Finalize(1), OK)),
    (
        "-> metadata back to the host (extra)",
        Expect(VM_META, Owned, NoPage, 0),
    ),
    ("-> metadata poisoned (extra)", PoisonedPages(&[VM_META, VM_META + 1])),
];

/// Donation to a protected guest, sharing back, force-reclaim, teardown
/// (the reference's 7.1 extensions), plus an np-VM's block share.
const PROTECTED: &[Line] = &[
    ("init protected VM", Vm(true, 1, VM_META, 2, Ok(1))),
    ("init np VM", Vm(false, 2, VM_META + 2, 2, Ok(2))),
    ("same VMID again", Vm(true, 2, RAM0_LAST, 1, Err(Error::Inval))),
    ("metadata taken", Vm(true, 3, VM_META, 1, Err(Error::Perm))),
    ("-> metadata is the hyp's", Expect(VM_META, NoPage, Owned, 0)),
    ("donate_guest", G(Donate(1, P, GFN), OK)),
    ("-> H NOPAGE", Expect(P, NoPage, NoPage, 0)),
    ("-> G OWNED", GuestAt(1, GFN, Some((Owned, P)), false)),
    ("host abort injects", Abort(pa(P), Inject)),
    ("donate_guest again", G(Donate(1, P, GFN + 1), PERM)),
    ("donate_guest over a mapped gfn", G(Donate(1, P + 1, GFN), PERM)),
    ("donate_guest to an np VM", G(Donate(2, P + 1, GFN), PERM)),
    (
        "share_guest to a protected VM",
        G(Share(1, P + 1, GFN + 1, 1, Perms::RW), PERM),
    ),
    ("guest owned: share_hyp", Call(ShareHyp(P), PERM)),
    ("guest owned: donate_hyp", Call(DonateHyp(P, 1), PERM)),
    ("guest owned: hyp_donate_host", Call(HypDonateHost(P, 1), PERM)),
    ("guest owned: share_guest", G(Share(2, P, GFN, 1, Perms::RW), PERM)),
    ("guest owned: unshare_host", G(UnshareHost(1, GFN), PERM)),
    ("guest_share_host", G(ShareHost(1, GFN), OK)),
    ("-> H SHARED_BORROWED", Expect(P, SharedBorrowed, NoPage, 0)),
    ("-> G SHARED_OWNED", GuestAt(1, GFN, Some((SharedOwned, P)), false)),
    ("host abort handled", Abort(pa(P), Handled)),
    ("guest_share_host again", G(ShareHost(1, GFN), PERM)),
    ("borrowed: force_reclaim", G(ForceReclaim(P), PERM)),
    ("borrowed: share_hyp", Call(ShareHyp(P), PERM)),
    ("borrowed: donate_guest", G(Donate(1, P, GFN + 2), PERM)),
    ("guest_unshare_host", G(UnshareHost(1, GFN), OK)),
    ("-> H NOPAGE again", Expect(P, NoPage, NoPage, 0)),
    ("host abort injects again", Abort(pa(P), Inject)),
    ("guest_share_host of nothing", G(ShareHost(1, GFN + 1), NOENT)),
    ("force_reclaim", G(ForceReclaim(P), OK)),
    ("-> page poisoned", PoisonedPages(&[P])),
    ("-> H OWNED", Expect(P, Owned, NoPage, 0)),
    ("-> G poisoned", GuestAt(1, GFN, None, true)),
    ("force_reclaim again", G(ForceReclaim(P), PERM)),
    ("poisoned: guest_share_host", G(ShareHost(1, GFN), NOENT)),
    ("poisoned: donate_guest", G(Donate(1, P + 1, GFN), PERM)),
    ("host abort handled after force-reclaim", Abort(pa(P), Handled)),
    // The np VM gets a block; permission and age updates.
    ("share a block", G(Share(2, BLOCK, GBLOCK, BLOCK_PAGES, Perms::R), OK)),
    ("-> block page 7 shared", Shares(BLOCK + 7, 1)),
    (
        "-> G maps it",
        GuestAt(2, GBLOCK + 7, Some((SharedBorrowed, BLOCK + 7)), false),
    ),
    ("unshare one page of it", G(Unshare(2, GBLOCK, 1), TOOBIG)),
    ("relax inside it", G(Relax(2, GBLOCK + 9, Perms::RW), OK)),
    ("wrprotect the block", G(Wrprotect(2, GBLOCK, BLOCK_PAGES), OK)),
    ("young", Young(2, GBLOCK, BLOCK_PAGES, true, Ok(true))),
    ("old", Young(2, GBLOCK, BLOCK_PAGES, false, Ok(false))),
    ("mkyoung", G(Mkyoung(2, GBLOCK + 1), OK)),
    ("young again", Young(2, GBLOCK, BLOCK_PAGES, false, Ok(true))),
    // Teardown.
    ("donate another page", G(Donate(1, P + 1, GFN + 1), OK)),
    ("share it back", G(ShareHost(1, GFN + 1), OK)),
    ("donate a third", G(Donate(1, P + 2, GFN + 2), OK)),
    ("reclaim while live", G(Reclaim(1, GFN + 1), PERM)),
    ("finalize while live", G(Finalize(1), PERM)),
    ("start teardown", G(StartTeardown(1), OK)),
    ("start again", G(StartTeardown(1), NOENT)),
    ("dying: donate_guest", G(Donate(1, P + 3, GFN + 3), NOENT)),
    ("dying: guest_share_host", G(ShareHost(1, GFN + 2), NOENT)),
    ("finalize with pages left", G(Finalize(1), BUSY)),
    ("reclaim the shared-back page", G(Reclaim(1, GFN + 1), OK)),
    ("-> H OWNED", Expect(P + 1, Owned, NoPage, 0)),
    ("reclaim the owned page", G(Reclaim(1, GFN + 2), OK)),
    ("-> H OWNED, mapped lazily", Abort(pa(P + 2), Handled)),
    ("-> both poisoned", PoisonedPages(&[P + 1, P + 2])),
    ("reclaim again", G(Reclaim(1, GFN + 2), NOENT)),
    ("reclaim the poisoned gfn", G(Reclaim(1, GFN), NOENT)),
    ("finalize", G(Finalize(1), OK)),
    ("-> VM metadata poisoned", PoisonedPages(&[VM_META, VM_META + 1])),
    ("-> VM metadata host's", Expect(VM_META + 1, Owned, NoPage, 0)),
    ("finalize again", G(Finalize(1), NOENT)),
    ("the np VM: start", G(StartTeardown(2), OK)),
    ("its block comes back whole", G(Reclaim(2, GBLOCK + 3), OK)),
    ("-> block page 7 host-owned", Expect(BLOCK + 7, Owned, NoPage, 0)),
    ("-> nothing poisoned: it was the host's", PoisonedPages(&[])),
    ("finalize the np VM", G(Finalize(2), OK)),
    ("slot 1 is free again", Vm(false, 1, VM_META, 1, Ok(1))),
    ("and goes again", G(StartTeardown(1), OK)),
    ("gone", G(Finalize(1), OK)),
    (
        "-> all metadata back",
        PoisonedPages(&[VM_META + 2, VM_META + 3, VM_META]),
    ),
];

/// Hostile guest arguments.
const GUESTS_HOSTILE: &[Line] = &[
    ("init: IPA 40, VMID 0", Vm(false, 0, VM_META, 1, Err(Error::Inval))),
    ("init: metadata nr 0", Vm(false, 1, VM_META, 0, Err(Error::Inval))),
    ("init: metadata MMIO", Vm(false, 1, M, 1, Err(Error::Perm))),
    (
        "init: metadata across RAM[1]'s end",
        Vm(false, 1, RAM1_LAST, 2, Err(Error::Perm)),
    ),
    ("init np", Vm(false, 1, VM_META, 1, Ok(1))),
    ("init protected", Vm(true, 2, VM_META + 1, 1, Ok(2))),
    ("handle 0", G(Share(0, P, 0, 1, Perms::RW), NOENT)),
    ("handle 3 (empty)", G(Unshare(3, 0, 1), NOENT)),
    ("handle 9 (past the table)", G(Donate(9, P, 0), NOENT)),
    ("handle u16::MAX", G(StartTeardown(u16::MAX), NOENT)),
    ("share nr 0", G(Share(1, P, 0, 0, Perms::RW), INVAL)),
    ("share nr 2", G(Share(1, P, 0, 2, Perms::RW), INVAL)),
    ("share nr u64::MAX", G(Share(1, P, 0, u64::MAX, Perms::RW), INVAL)),
    (
        "share a misaligned block (pfn)",
        G(Share(1, BLOCK + 1, GBLOCK, BLOCK_PAGES, Perms::RW), INVAL),
    ),
    (
        "share a misaligned block (gfn)",
        G(Share(1, BLOCK, GBLOCK + 1, BLOCK_PAGES, Perms::RW), INVAL),
    ),
    ("share pfn u64::MAX", G(Share(1, u64::MAX, 0, 1, Perms::RW), INVAL)),
    (
        "share past the PA space",
        G(Share(1, PFN_LIMIT, 0, 1, Perms::RW), INVAL),
    ),
    (
        "share gfn past the IPA space",
        G(Share(1, P, 1 << 28, 1, Perms::RW), INVAL),
    ),
    ("share gfn u64::MAX", G(Share(1, P, u64::MAX, 1, Perms::RW), INVAL)),
    (
        "share a block crossing the IPA end",
        G(
            Share(1, BLOCK, (1 << 28) - BLOCK_PAGES / 2, BLOCK_PAGES, Perms::RW),
            INVAL,
        ),
    ),
    ("share MMIO", G(Share(1, M, 0, 1, Perms::RW), PERM)),
    (
        "share the last page of RAM[0]",
        G(Share(1, RAM0_LAST, 0, 1, Perms::RW), OK),
    ),
    ("unshare it", G(Unshare(1, 0, 1), OK)),
    ("unshare gfn past the IPA space", G(Unshare(1, 1 << 28, 1), INVAL)),
    ("unshare a misaligned block", G(Unshare(1, 1, BLOCK_PAGES), INVAL)),
    ("unshare nothing", G(Unshare(1, 5, 1), NOENT)),
    ("relax nothing", G(Relax(1, 5, Perms::RWX), NOENT)),
    ("wrprotect nr 3", G(Wrprotect(1, 5, 3), INVAL)),
    ("young of nothing", Young(1, 5, 1, true, Err(Error::NoEnt))),
    (
        "young past the IPA space",
        Young(1, u64::MAX, 1, true, Err(Error::Inval)),
    ),
    ("mkyoung on a protected VM", G(Mkyoung(2, 5), PERM)),
    ("donate MMIO", G(Donate(2, M, 0), PERM)),
    ("donate past the IPA space", G(Donate(2, P, 1 << 28), INVAL)),
    ("donate pfn u64::MAX", G(Donate(2, u64::MAX, 0), INVAL)),
    ("donate the np VM's metadata", G(Donate(2, VM_META, 0), PERM)),
    ("share_host past the IPA space", G(ShareHost(2, u64::MAX), INVAL)),
    ("force_reclaim a host page", G(ForceReclaim(P), PERM)),
    ("force_reclaim a hyp page", G(ForceReclaim(VM_META), PERM)),
    ("force_reclaim MMIO", G(ForceReclaim(M), PERM)),
    ("force_reclaim u64::MAX", G(ForceReclaim(u64::MAX), INVAL)),
    ("-> P untouched", Expect(P, Owned, NoPage, 0)),
    ("-> nothing shared", Shares(P, 0)),
    ("teardown np", G(StartTeardown(1), OK)),
    ("dying: share", G(Share(1, P, 0, 1, Perms::RW), NOENT)),
    ("reclaim gfn past the IPA space", G(Reclaim(1, 1 << 28), INVAL)),
    ("finalize np", G(Finalize(1), OK)),
    ("teardown protected", G(StartTeardown(2), OK)),
    ("finalize protected", G(Finalize(2), OK)),
    ("-> metadata poisoned", PoisonedPages(&[VM_META, VM_META + 1])),
];

/// Multi-page ranges: all or nothing.
const RANGES: &[Line] = &[
    ("share P", Call(ShareHyp(P), OK)),
    ("share P+2", Call(ShareHyp(P + 2), OK)),
    ("pin P..P+3 with P+1 unshared", Call(Pin(P, 3), PERM)),
    ("-> P not pinned", Expect(P, SharedOwned, SharedBorrowed, 0)),
    ("share P+1", Call(ShareHyp(P + 1), OK)),
    ("pin P..P+3", Call(Pin(P, 3), OK)),
    ("pin P+1", Call(Pin(P + 1, 1), OK)),
    ("-> P pinned once", Expect(P, SharedOwned, SharedBorrowed, 1)),
    ("-> P+1 pinned twice", Expect(P + 1, SharedOwned, SharedBorrowed, 2)),
    ("-> P+2 pinned once", Expect(P + 2, SharedOwned, SharedBorrowed, 1)),
    ("unpin P..P+3", Call(Unpin(P, 3), OK)),
    ("unpin P..P+2 with P unpinned", Call(Unpin(P, 2), INVAL)),
    (
        "-> P+1 still pinned once",
        Expect(P + 1, SharedOwned, SharedBorrowed, 1),
    ),
    ("unshare P+1 while pinned", Call(UnshareHyp(P + 1), BUSY)),
    ("unpin P+1", Call(Unpin(P + 1, 1), OK)),
    ("unshare P", Call(UnshareHyp(P), OK)),
    ("unshare P+1", Call(UnshareHyp(P + 1), OK)),
    ("donate P-1..P+3 with P+2 shared", Call(DonateHyp(P - 1, 4), PERM)),
    ("-> P-1 untouched", Expect(P - 1, Owned, NoPage, 0)),
    ("unshare P+2", Call(UnshareHyp(P + 2), OK)),
    ("donate P-1..P+3", Call(DonateHyp(P - 1, 4), OK)),
    ("-> P-1 donated", Expect(P - 1, NoPage, Owned, 0)),
    ("-> P+2 donated", Expect(P + 2, NoPage, Owned, 0)),
    ("host abort on P+2", Abort(pa(P + 2) + 0xff8, Inject)),
    ("return P+1, P+2", Call(HypDonateHost(P + 1, 2), OK)),
    ("return P..P+2 with P+1 host's", Call(HypDonateHost(P, 2), PERM)),
    ("-> P still donated", Expect(P, NoPage, Owned, 0)),
    ("return P-1..P+1", Call(HypDonateHost(P - 1, 2), OK)),
    ("-> P host's", Expect(P, Owned, NoPage, 0)),
    ("-> P+2 host's", Expect(P + 2, Owned, NoPage, 0)),
    (
        "donate the last two pages of RAM[1]",
        Call(DonateHyp(RAM1_LAST - 1, 2), OK),
    ),
    ("return them", Call(HypDonateHost(RAM1_LAST - 1, 2), OK)),
];

/// MMIO donation and reclaim.
const MMIO: &[Line] = &[
    ("MMIO: host abort handled before donation", Abort(pa(M), Handled)),
    ("donate MMIO", Call(DonateMmio(M, 2), OK)),
    ("donate MMIO again", Call(DonateMmio(M, 2), PERM)),
    ("donate overlapping MMIO", Call(DonateMmio(M + 1, 2), PERM)),
    ("host abort on donated MMIO", Abort(pa(M), Inject)),
    ("host abort on donated MMIO, 2nd page", Abort(pa(M + 1) + 0x18, Inject)),
    ("host abort next to donated MMIO", Abort(pa(M + 2), Handled)),
    ("donate RAM as MMIO", Call(DonateMmio(P, 1), PERM)),
    ("donate MMIO+RAM as MMIO", Call(DonateMmio(RAM0_FIRST - 1, 2), PERM)),
    ("donate RAM to hyp (for the next line)", Call(DonateHyp(P, 1), OK)),
    ("reclaim hyp-owned RAM as MMIO", Call(ReclaimMmio(P, 1), PERM)),
    ("-> RAM still hyp's", Expect(P, NoPage, Owned, 0)),
    ("reclaim not-donated MMIO", Call(ReclaimMmio(M + 2, 1), PERM)),
    ("reclaim partly donated MMIO", Call(ReclaimMmio(M + 1, 2), PERM)),
    ("hyp_donate_host on donated MMIO", Call(HypDonateHost(M, 1), PERM)),
    ("share_hyp on donated MMIO", Call(ShareHyp(M), PERM)),
    ("still injected after refusals", Abort(pa(M + 1), Inject)),
    ("reclaim MMIO", Call(ReclaimMmio(M, 2), OK)),
    ("host abort after reclaim", Abort(pa(M), Handled)),
    ("host abort after reclaim, 2nd page", Abort(pa(M + 1), Handled)),
    ("reclaim again", Call(ReclaimMmio(M, 1), PERM)),
    ("donate MMIO once more", Call(DonateMmio(M + 1, 1), OK)),
    ("reclaim it", Call(ReclaimMmio(M + 1, 1), OK)),
    (
        "donate the last page of the PA space",
        Call(DonateMmio(PFN_LIMIT - 1, 1), OK),
    ),
    ("host abort on it", Abort(pa(PFN_LIMIT) - 8, Inject)),
    ("reclaim it", Call(ReclaimMmio(PFN_LIMIT - 1, 1), OK)),
    ("return the RAM", Call(HypDonateHost(P, 1), OK)),
];

/// Hostile arguments.
const HOSTILE: &[Line] = &[
    // nr == 0.
    ("pin nr 0", Call(Pin(P, 0), INVAL)),
    ("unpin nr 0", Call(Unpin(P, 0), INVAL)),
    ("donate_hyp nr 0", Call(DonateHyp(P, 0), INVAL)),
    ("hyp_donate_host nr 0", Call(HypDonateHost(P, 0), INVAL)),
    ("donate MMIO nr 0", Call(DonateMmio(M, 0), INVAL)),
    ("reclaim MMIO nr 0", Call(ReclaimMmio(M, 0), INVAL)),
    ("donate_hyp MMIO nr 0: Inval before Perm", Call(DonateHyp(M, 0), INVAL)),
    // pfn + nr overflows.
    ("share_hyp pfn u64::MAX", Call(ShareHyp(u64::MAX), INVAL)),
    ("unshare_hyp pfn u64::MAX", Call(UnshareHyp(u64::MAX), INVAL)),
    ("donate_hyp pfn u64::MAX", Call(DonateHyp(u64::MAX, 1), INVAL)),
    ("donate_hyp nr u64::MAX", Call(DonateHyp(P, u64::MAX), INVAL)),
    ("pin pfn + nr wraps to 0", Call(Pin(2, u64::MAX - 1), INVAL)),
    ("unpin pfn + nr wraps", Call(Unpin(P, u64::MAX - 2), INVAL)),
    (
        "hyp_donate_host pfn + nr wraps",
        Call(HypDonateHost(u64::MAX - 1, 3), INVAL),
    ),
    (
        "donate MMIO pfn + nr wraps",
        Call(DonateMmio(M, u64::MAX - M + 1), INVAL),
    ),
    ("reclaim MMIO pfn + nr wraps", Call(ReclaimMmio(u64::MAX, 1), INVAL)),
    // (pfn + nr) << 12 overflows.
    (
        "donate_hyp end << 12 overflows",
        Call(DonateHyp(u64::MAX >> PAGE_SHIFT, 1), INVAL),
    ),
    (
        "donate MMIO end << 12 == 2^64",
        Call(DonateMmio((u64::MAX >> PAGE_SHIFT) - 1, 1), INVAL),
    ),
    ("pin huge nr from 0", Call(Pin(0, 1 << 60), INVAL)),
    // Beyond the PA space.
    ("share_hyp first pfn beyond PA", Call(ShareHyp(PFN_LIMIT), INVAL)),
    ("unshare_hyp beyond PA", Call(UnshareHyp(PFN_LIMIT + 1), INVAL)),
    ("donate_hyp beyond PA", Call(DonateHyp(PFN_LIMIT, 1), INVAL)),
    ("donate MMIO beyond PA", Call(DonateMmio(PFN_LIMIT, 1), INVAL)),
    (
        "donate MMIO crossing the end of PA",
        Call(DonateMmio(PFN_LIMIT - 1, 2), INVAL),
    ),
    ("reclaim MMIO beyond PA", Call(ReclaimMmio(PFN_LIMIT + 7, 1), INVAL)),
    ("host abort at 2^48", Abort(1 << PA_BITS, Inject)),
    ("host abort at u64::MAX", Abort(u64::MAX, Inject)),
    ("host abort at the last byte of PA", Abort((1 << PA_BITS) - 1, Handled)),
    ("share_hyp last pfn of PA (MMIO)", Call(ShareHyp(PFN_LIMIT - 1), PERM)),
    // Ranges crossing the end (or start) of a RAM region.
    (
        "donate_hyp across the end of RAM[0]",
        Call(DonateHyp(RAM0_LAST, 2), PERM),
    ),
    ("-> last page of RAM[0] untouched", Expect(RAM0_LAST, Owned, NoPage, 0)),
    (
        "donate_hyp across the start of RAM[0]",
        Call(DonateHyp(RAM0_FIRST - 1, 2), PERM),
    ),
    (
        "donate_hyp across the end of RAM[1]",
        Call(DonateHyp(RAM1_LAST, 2), PERM),
    ),
    (
        "donate_hyp RAM[0] through RAM[1]",
        Call(DonateHyp(RAM0_FIRST, 0x4_4000), PERM),
    ),
    ("share last page of RAM[0]", Call(ShareHyp(RAM0_LAST), OK)),
    ("share the page after it", Call(ShareHyp(RAM0_LAST + 1), PERM)),
    ("pin across the end of RAM[0]", Call(Pin(RAM0_LAST, 2), PERM)),
    ("-> not pinned", Expect(RAM0_LAST, SharedOwned, SharedBorrowed, 0)),
    ("pin the last page of RAM[0]", Call(Pin(RAM0_LAST, 1), OK)),
    ("unpin across the end of RAM[0]", Call(Unpin(RAM0_LAST, 2), PERM)),
    ("-> still pinned", Expect(RAM0_LAST, SharedOwned, SharedBorrowed, 1)),
    ("unpin the last page of RAM[0]", Call(Unpin(RAM0_LAST, 1), OK)),
    ("unshare it", Call(UnshareHyp(RAM0_LAST), OK)),
    ("donate the last page of RAM[0]", Call(DonateHyp(RAM0_LAST, 1), OK)),
    (
        "return across the end of RAM[0]",
        Call(HypDonateHost(RAM0_LAST, 2), PERM),
    ),
    ("-> still hyp's", Expect(RAM0_LAST, NoPage, Owned, 0)),
    ("return it", Call(HypDonateHost(RAM0_LAST, 1), OK)),
    // MMIO given to RAM transitions.
    ("share_hyp MMIO", Call(ShareHyp(M), PERM)),
    ("unshare_hyp MMIO", Call(UnshareHyp(M), PERM)),
    ("pin MMIO", Call(Pin(M, 1), PERM)),
    ("unpin MMIO", Call(Unpin(M, 1), PERM)),
    ("donate_hyp MMIO", Call(DonateHyp(M, 1), PERM)),
    ("hyp_donate_host MMIO", Call(HypDonateHost(M, 1), PERM)),
    ("host abort on MMIO after all that", Abort(pa(M), Handled)),
    ("-> P untouched", Expect(P, Owned, NoPage, 0)),
];

/// Every table, by name.
const TABLES: &[(&str, &[Line])] = &[
    ("selftest", SELFTEST),
    ("ranges", RANGES),
    ("mmio", MMIO),
    ("hostile", HOSTILE),
    ("protected", PROTECTED),
    ("guests-hostile", GUESTS_HOSTILE),
];

// ---------------------------------------------------------------------------
// Runner
// ---------------------------------------------------------------------------

/// What a refusal must not change.
#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    ram: Vec<(u64, PageState, PageState, u32, u32)>,
    mmio: Vec<(u64, AbortOutcome)>,
}

fn snapshot<T: Transitions>(t: &mut T) -> Snapshot {
    Snapshot {
        ram: WATCHED_RAM
            .iter()
            .map(|&q| (q, t.host_state(q), t.hyp_state(q), t.pins(q), t.guest_shares(q)))
            .collect(),
        mmio: WATCHED_MMIO.iter().map(|&q| (q, t.host_abort(pa(q)))).collect(),
    }
}

/// Runs one table on `t`, panicking with the table name, line number and
/// label of the first line that fails.
fn run_table<T: Transitions>(name: &str, table: &[Line], t: &mut T) {
    for (i, (what, step)) in table.iter().enumerate() {
        let at = format!("{name}[{i}] `{what}`");
        match *step {
            Call(op, want) => {
                let before = snapshot(t);
                let got = op.apply(t);
                assert_eq!(got, want, "{at}: {op:?}");
                if got.is_err() {
                    assert_eq!(snapshot(t), before, "{at}: refused {op:?} changed state");
                }
            }
            Abort(addr, want) => {
                assert_eq!(t.host_abort(addr), want, "{at}: host_abort({addr:#x})");
            }
            Expect(pfn, host, hyp, pins) => {
                let got = (t.host_state(pfn), t.hyp_state(pfn), t.pins(pfn));
                assert_eq!(got, (host, hyp, pins), "{at}: state of pfn {pfn:#x}");
            }
            Vm(protected, vmid, pfn, nr, want) => {
                let before = snapshot(t);
                let got = t.init_vm(protected, vmid, pfn, nr);
                assert_eq!(got, want, "{at}: init_vm");
                if got.is_err() {
                    assert_eq!(snapshot(t), before, "{at}: refused init_vm changed state");
                }
            }
            G(op, want) => {
                let before = snapshot(t);
                let got = t.guest(op);
                assert_eq!(got, want, "{at}: {op:?}");
                if got.is_err() {
                    assert_eq!(snapshot(t), before, "{at}: refused {op:?} changed state");
                }
            }
            Young(h, gfn, nr, mkold, want) => {
                assert_eq!(t.young(h, gfn, nr, mkold), want, "{at}: young");
            }
            Shares(pfn, n) => assert_eq!(t.guest_shares(pfn), n, "{at}: shares of pfn {pfn:#x}"),
            GuestAt(h, gfn, leaf, poisoned) => {
                assert_eq!(t.guest_page(h, gfn), (leaf, poisoned), "{at}: guest {h} at {gfn:#x}");
            }
            PoisonedPages(want) => assert_eq!(t.take_poisoned(), want, "{at}: poisoned pages"),
        }
    }
}

/// Runs every table, each on a fresh backend from `fresh`.
fn conformance<T: Transitions>(mut fresh: impl FnMut() -> T) {
    for (name, table) in TABLES {
        let mut t = fresh();
        run_table(name, table, &mut t);
    }
}

#[test]
fn spec_conforms() {
    conformance(|| Spec::new(&RAM, PA_BITS));
}

/// The implementation, on the architecture model, against the same tables.
impl Transitions for support::World {
    fn host_share_hyp(&mut self, pfn: u64) -> Result<(), Error> {
        self.mp.host_share_hyp(pfn)
    }
    fn host_unshare_hyp(&mut self, pfn: u64) -> Result<(), Error> {
        self.mp.host_unshare_hyp(pfn)
    }
    fn hyp_pin_shared(&mut self, pfn: u64, nr: u64) -> Result<(), Error> {
        self.mp.hyp_pin_shared(pfn, nr)
    }
    fn hyp_unpin_shared(&mut self, pfn: u64, nr: u64) -> Result<(), Error> {
        self.mp.hyp_unpin_shared(pfn, nr)
    }
    fn host_donate_hyp(&mut self, pfn: u64, nr: u64) -> Result<(), Error> {
        self.mp.host_donate_hyp(pfn, nr)
    }
    fn hyp_donate_host(&mut self, pfn: u64, nr: u64) -> Result<(), Error> {
        self.mp.hyp_donate_host(pfn, nr)
    }
    fn host_donate_hyp_mmio(&mut self, pfn: u64, nr: u64) -> Result<(), Error> {
        self.mp.host_donate_hyp_mmio(pfn, nr)
    }
    fn hyp_donate_host_mmio(&mut self, pfn: u64, nr: u64) -> Result<(), Error> {
        self.mp.hyp_donate_host_mmio(pfn, nr)
    }
    fn host_abort(&mut self, pa: u64) -> AbortOutcome {
        let outcome = self.mp.host_abort(pa).expect("tables for the abort");
        self.assert_clean();
        outcome
    }
    fn host_state(&mut self, pfn: u64) -> PageState {
        self.mp.host_state(pfn).unwrap_or(PageState::Owned)
    }
    fn hyp_state(&mut self, pfn: u64) -> PageState {
        self.mp.hyp_state(pfn).unwrap_or(PageState::NoPage)
    }
    fn pins(&mut self, pfn: u64) -> u32 {
        self.mp.pins(pfn).unwrap_or(0) as u32
    }
    fn init_vm(&mut self, protected: bool, vmid: u16, meta_pfn: u64, meta_nr: u64) -> Result<Handle, Error> {
        support::World::init_vm(self, protected, vmid, meta_pfn, meta_nr)
    }
    fn guest(&mut self, op: GuestOp) -> Result<(), Error> {
        let mp = &self.mp;
        let r = match op {
            GuestOp::Share(h, p, g, n, prot) => mp.host_share_guest(h, p, g, n, prot),
            GuestOp::Unshare(h, g, n) => mp.host_unshare_guest(h, g, n),
            GuestOp::Relax(h, g, prot) => mp.host_relax_perms_guest(h, g, prot),
            GuestOp::Wrprotect(h, g, n) => mp.host_wrprotect_guest(h, g, n),
            GuestOp::Mkyoung(h, g) => mp.host_mkyoung_guest(h, g),
            GuestOp::Donate(h, p, g) => mp.host_donate_guest(h, p, g),
            GuestOp::ShareHost(h, g) => mp.guest_share_host(h, g),
            GuestOp::UnshareHost(h, g) => mp.guest_unshare_host(h, g),
            GuestOp::StartTeardown(h) => mp.start_teardown_vm(h),
            GuestOp::Reclaim(h, g) => mp.reclaim_dying_guest_page(h, g),
            GuestOp::Finalize(h) => self.finalize(h).map(|_| ()),
            GuestOp::ForceReclaim(p) => mp.force_reclaim_guest_page(p),
        };
        self.assert_clean();
        r
    }
    fn young(&mut self, h: Handle, gfn: u64, nr: u64, mkold: bool) -> Result<bool, Error> {
        self.mp.host_test_clear_young_guest(h, gfn, nr, mkold)
    }
    fn guest_shares(&mut self, pfn: u64) -> u32 {
        self.mp.ram().meta(pfn).map_or(0, |m| m.guest_shares())
    }
    fn guest_page(&mut self, h: Handle, gfn: u64) -> (Option<(PageState, u64)>, bool) {
        self.mp
            .with_guest(h, |g| {
                let leaf = g
                    .leaf_at(gfn << PAGE_SHIFT)
                    .map(|l| (l.state, (l.pa >> PAGE_SHIFT) + gfn - (l.ia >> PAGE_SHIFT)));
                let entry = g.s2.get_leaf(gfn << PAGE_SHIFT).ok().and_then(|(d, _)| d.annotation());
                (leaf, entry == Some(warden_memprotect::guest::GUEST_POISONED))
            })
            .unwrap_or((None, false))
    }
    fn take_poisoned(&mut self) -> Vec<u64> {
        self.poisoned.borrow_mut().drain(..).collect()
    }
}

#[test]
fn impl_conforms() {
    assert_eq!(
        support::RAM,
        RAM,
        "the test platform and the tables use the same layout"
    );
    conformance(|| support::world(&RAM));
}

/// The spec also ends each table back in its initial state (every table
/// undoes what it did), and emits exactly one hook event per successful
/// donation or reclaim.
#[test]
fn spec_tables_are_closed() {
    for (name, table) in TABLES {
        let mut s = Spec::new(&RAM, PA_BITS);
        run_table(name, table, &mut s);
        assert!(s.touched_pfns().is_empty(), "{name}: left {:x?}", s.touched_pfns());
        s.check_invariants().unwrap();
        if table.iter().any(|(_, step)| matches!(step, Vm(..) | G(..))) {
            // Guest tables: reclaim tells the hook only of pages the host
            // could not reach; they are counted in the spec's own tests.
            continue;
        }
        let changes = table
            .iter()
            .filter(|(_, step)| {
                matches!(
                    step,
                    Call(
                        DonateHyp(..) | HypDonateHost(..) | DonateMmio(..) | ReclaimMmio(..),
                        Ok(())
                    )
                )
            })
            .count();
        assert_eq!(s.take_hook_events().len(), changes, "{name}: hook events");
    }
}
