//! The differential harness behind the fuzz target (feature `spec`): bytes
//! decode into a sequence of transitions and host aborts with hostile
//! arguments, which run on the implementation (tables in an arena) and on
//! the executable spec; any difference in results, hook calls or final
//! state panics.

extern crate alloc;

use alloc::vec::Vec;

use warden_pgtable::testutil::{ArenaMm, CountingTlb};
use warden_pgtable::{Ctx, Kind, PageTable, Perms, Regime, WalkFlags};

use crate::guest::GUEST_POISONED;

use crate::protect::{MemProtect, Platform};
use crate::ram::{PageMeta, RamMap};
use crate::spec::Spec;
use crate::types::{AbortOutcome, Error, Handle, HostAccess, OwnershipHook, PageState, Poison, Region, MAX_VMS};

/// RAM of the harness: two regions with MMIO between and around them.
pub const RAM: [Region; 2] = [
    Region {
        base: 0x4000_0000,
        size: 32 << 20,
    },
    Region {
        base: 0x8000_0000,
        size: 8 << 20,
    },
];

struct Hook(Vec<(u64, u64, HostAccess)>);

impl OwnershipHook for Hook {
    fn host_ownership_changed(&mut self, base: u64, size: u64, access: HostAccess) {
        self.0.push((base, size, access));
    }
}

/// Records the pages poisoned, in order.
struct Poisoned(Vec<u64>);

impl Poison for Poisoned {
    fn poison(&mut self, pa: u64) {
        self.0.push(pa >> 12);
    }
}

struct Arena;

impl Platform for Arena {
    type Lock = spin::mutex::SpinMutex<()>;
    type HostMm = ArenaMm;
    type HostTlb = CountingTlb;
    type HypMm = ArenaMm;
    type HypTlb = CountingTlb;
    type Hook = Hook;
    type GuestMm = ArenaMm;
    type GuestTlb = CountingTlb;
    type Poison = Poisoned;
}

/// One call the harnesses and tests make, on either side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `host_share_hyp(pfn)`.
    ShareHyp(u64),
    /// `host_unshare_hyp(pfn)`.
    UnshareHyp(u64),
    /// `hyp_pin_shared(pfn, nr)`.
    Pin(u64, u64),
    /// `hyp_unpin_shared(pfn, nr)`.
    Unpin(u64, u64),
    /// `host_donate_hyp(pfn, nr)`.
    DonateHyp(u64, u64),
    /// `hyp_donate_host(pfn, nr)`.
    HypDonateHost(u64, u64),
    /// `host_donate_hyp_mmio(pfn, nr)`.
    DonateMmio(u64, u64),
    /// `hyp_donate_host_mmio(pfn, nr)`.
    ReclaimMmio(u64, u64),
    /// `host_abort(pa)`.
    Abort(u64),
    /// `init_vm` with a fresh stage-2 of `ipa_bits` (32..=48) and `vmid`.
    InitVm {
        /// A protected guest.
        protected: bool,
        /// IPA size of its stage-2.
        ipa_bits: u8,
        /// VMID of its stage-2.
        vmid: u16,
        /// First metadata page.
        pfn: u64,
        /// Metadata pages.
        nr: u64,
    },
    /// `host_share_guest(h, pfn, gfn, nr, prot)`.
    ShareGuest(Handle, u64, u64, u64, Perms),
    /// `host_unshare_guest(h, gfn, nr)`.
    UnshareGuest(Handle, u64, u64),
    /// `host_relax_perms_guest(h, gfn, prot)`.
    RelaxGuest(Handle, u64, Perms),
    /// `host_wrprotect_guest(h, gfn, nr)`.
    WrprotectGuest(Handle, u64, u64),
    /// `host_test_clear_young_guest(h, gfn, nr, mkold)`.
    YoungGuest(Handle, u64, u64, bool),
    /// `host_mkyoung_guest(h, gfn)`.
    MkyoungGuest(Handle, u64),
    /// `host_donate_guest(h, pfn, gfn)`.
    DonateGuest(Handle, u64, u64),
    /// `guest_share_host(h, gfn)`.
    GuestShareHost(Handle, u64),
    /// `guest_unshare_host(h, gfn)`.
    GuestUnshareHost(Handle, u64),
    /// `start_teardown_vm(h)`.
    StartTeardown(Handle),
    /// `reclaim_dying_guest_page(h, gfn)`.
    ReclaimGuest(Handle, u64),
    /// `finalize_teardown_vm(h)`.
    FinalizeVm(Handle),
    /// `force_reclaim_guest_page(pfn)`.
    ForceReclaim(u64),
}

/// What a call returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A transition's result.
    Done(Result<(), Error>),
    /// A host abort's outcome (`None`: the implementation ran out of table
    /// pages, which the spec does not model).
    Abort(Option<AbortOutcome>),
    /// `init_vm`'s handle.
    Vm(Result<Handle, Error>),
    /// `host_test_clear_young_guest`'s answer.
    Young(Result<bool, Error>),
}

/// Makes the guest stage-2 tables `Op::InitVm` needs, and hears what
/// becomes of them.
pub trait GuestTables<P: Platform> {
    /// A fresh, empty stage-2 (`ipa_bits` in 32..=48).
    fn new_s2(&mut self, ipa_bits: u8, vmid: u16) -> PageTable<P::GuestMm, P::GuestTlb>;
    /// `init_vm` accepted the last table as guest `h`.
    fn created(&mut self, _h: Handle) {}
    /// `init_vm` refused (and destroyed) the last table.
    fn refused(&mut self) {}
    /// Guest `h` was finalized; its table memory is back.
    fn finalized(&mut self, _h: Handle, _mm: P::GuestMm) {}
}

/// Make `op` on the implementation.
pub fn run<P: Platform>(mp: &MemProtect<'_, P>, tables: &mut impl GuestTables<P>, op: Op) -> Outcome {
    let done = Outcome::Done;
    match op {
        Op::ShareHyp(p) => done(mp.host_share_hyp(p)),
        Op::UnshareHyp(p) => done(mp.host_unshare_hyp(p)),
        Op::Pin(p, n) => done(mp.hyp_pin_shared(p, n)),
        Op::Unpin(p, n) => done(mp.hyp_unpin_shared(p, n)),
        Op::DonateHyp(p, n) => done(mp.host_donate_hyp(p, n)),
        Op::HypDonateHost(p, n) => done(mp.hyp_donate_host(p, n)),
        Op::DonateMmio(p, n) => done(mp.host_donate_hyp_mmio(p, n)),
        Op::ReclaimMmio(p, n) => done(mp.hyp_donate_host_mmio(p, n)),
        Op::Abort(pa) => Outcome::Abort(mp.host_abort(pa).ok()),
        Op::InitVm {
            protected,
            ipa_bits,
            vmid,
            pfn,
            nr,
        } => {
            let r = mp.init_vm(tables.new_s2(ipa_bits, vmid), protected, pfn, nr);
            match r {
                Ok(h) => tables.created(h),
                Err(_) => tables.refused(),
            }
            Outcome::Vm(r)
        }
        Op::ShareGuest(h, p, g, n, prot) => done(mp.host_share_guest(h, p, g, n, prot)),
        Op::UnshareGuest(h, g, n) => done(mp.host_unshare_guest(h, g, n)),
        Op::RelaxGuest(h, g, prot) => done(mp.host_relax_perms_guest(h, g, prot)),
        Op::WrprotectGuest(h, g, n) => done(mp.host_wrprotect_guest(h, g, n)),
        Op::YoungGuest(h, g, n, mkold) => Outcome::Young(mp.host_test_clear_young_guest(h, g, n, mkold)),
        Op::MkyoungGuest(h, g) => done(mp.host_mkyoung_guest(h, g)),
        Op::DonateGuest(h, p, g) => done(mp.host_donate_guest(h, p, g)),
        Op::GuestShareHost(h, g) => done(mp.guest_share_host(h, g)),
        Op::GuestUnshareHost(h, g) => done(mp.guest_unshare_host(h, g)),
        Op::StartTeardown(h) => done(mp.start_teardown_vm(h)),
        Op::ReclaimGuest(h, g) => done(mp.reclaim_dying_guest_page(h, g)),
        Op::FinalizeVm(h) => done(mp.finalize_teardown_vm(h).map(|(mm, _)| tables.finalized(h, mm))),
        Op::ForceReclaim(p) => done(mp.force_reclaim_guest_page(p)),
    }
}

/// Make `op` on the spec.
pub fn replay(s: &mut Spec, op: Op) -> Outcome {
    let done = Outcome::Done;
    match op {
        Op::ShareHyp(p) => done(s.host_share_hyp(p)),
        Op::UnshareHyp(p) => done(s.host_unshare_hyp(p)),
        Op::Pin(p, n) => done(s.hyp_pin_shared(p, n)),
        Op::Unpin(p, n) => done(s.hyp_unpin_shared(p, n)),
        Op::DonateHyp(p, n) => done(s.host_donate_hyp(p, n)),
        Op::HypDonateHost(p, n) => done(s.hyp_donate_host(p, n)),
        Op::DonateMmio(p, n) => done(s.host_donate_hyp_mmio(p, n)),
        Op::ReclaimMmio(p, n) => done(s.hyp_donate_host_mmio(p, n)),
        Op::Abort(pa) => Outcome::Abort(Some(s.host_abort(pa))),
        Op::InitVm {
            protected,
            ipa_bits,
            vmid,
            pfn,
            nr,
        } => Outcome::Vm(s.init_vm(ipa_bits, vmid, protected, pfn, nr)),
        Op::ShareGuest(h, p, g, n, prot) => done(s.host_share_guest(h, p, g, n, prot)),
        Op::UnshareGuest(h, g, n) => done(s.host_unshare_guest(h, g, n)),
        Op::RelaxGuest(h, g, prot) => done(s.host_relax_perms_guest(h, g, prot)),
        Op::WrprotectGuest(h, g, n) => done(s.host_wrprotect_guest(h, g, n)),
        Op::YoungGuest(h, g, n, mkold) => Outcome::Young(s.host_test_clear_young_guest(h, g, n, mkold)),
        Op::MkyoungGuest(h, g) => done(s.host_mkyoung_guest(h, g)),
        Op::DonateGuest(h, p, g) => done(s.host_donate_guest(h, p, g)),
        Op::GuestShareHost(h, g) => done(s.guest_share_host(h, g)),
        Op::GuestUnshareHost(h, g) => done(s.guest_unshare_host(h, g)),
        Op::StartTeardown(h) => done(s.start_teardown_vm(h)),
        Op::ReclaimGuest(h, g) => done(s.reclaim_dying_guest_page(h, g)),
        Op::FinalizeVm(h) => done(s.finalize_teardown_vm(h)),
        Op::ForceReclaim(p) => done(s.force_reclaim_guest_page(p)),
    }
}

/// One guest as both sides can describe it: protected, dying, its valid
/// leaves `(gfn, pfn, pages, state, perms, young)` and its poisoned gfns,
/// in IPA order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestView {
    /// Protected guest.
    pub protected: bool,
    /// Teardown started.
    pub dying: bool,
    /// Valid leaves.
    pub leaves: Vec<(u64, u64, u64, PageState, Perms, bool)>,
    /// Poisoned gfns.
    pub poisoned: Vec<u64>,
}

/// The abstraction function for guests: read guest `h`'s stage-2 back.
pub fn guest_view<P: Platform>(mp: &MemProtect<'_, P>, h: Handle) -> Option<GuestView> {
    mp.with_guest(h, |g| {
        let regime = *g.s2.regime();
        let mut view = GuestView {
            protected: g.protected,
            dying: g.dying,
            leaves: Vec::new(),
            poisoned: Vec::new(),
        };
        let size = 1u64 << g.ipa_bits();
        let walked = g.s2.walk(0, size, WalkFlags::LEAF, &mut |_, c: &Ctx, _| {
            let gfn = c.entry_start >> 12;
            if c.old.kind(c.level) == Kind::Leaf {
                let a = c.old.attrs(&regime);
                let pages = c.entry_size() >> 12;
                let state = PageState::from_bits(a.sw);
                view.leaves
                    .push((gfn, c.old.oa() >> 12, pages, state, a.perms, c.old.af()));
            } else if c.old.annotation() == Some(GUEST_POISONED) {
                view.poisoned.push(gfn);
            }
            Ok(())
        });
        assert!(walked.is_ok(), "guest stage-2 walk");
        view
    })
}

/// The spec's view of guest `h`.
pub fn spec_guest_view(s: &Spec, h: Handle) -> Option<GuestView> {
    let vm = s.vm(h)?;
    let mut view = GuestView {
        protected: vm.protected,
        dying: vm.dying,
        leaves: Vec::new(),
        poisoned: Vec::new(),
    };
    for gfn in s.guest_gfns(h) {
        if s.guest_poisoned(h, gfn) {
            view.poisoned.push(gfn);
        } else if let Some(l) = s.guest_leaf(h, gfn) {
            view.leaves.push((l.gfn, l.pfn, l.nr, l.state, l.perms, l.young));
        }
    }
    Some(view)
}

/// Compare every guest of both sides.
pub fn assert_guests_agree<P: Platform>(mp: &MemProtect<'_, P>, s: &Spec) {
    for h in 0..=MAX_VMS as Handle + 1 {
        assert_eq!(guest_view(mp, h), spec_guest_view(s, h), "guest {h}");
    }
}

/// Pages worth probing after `op` in a `pa_bits` physical address space:
/// every page the spec has seen touched, both sides of every RAM
/// region's edges and of its first 2 MiB boundary, MMIO low, in the
/// middle and at the top, and the op's first pages.
pub fn probe_pfns(spec: &Spec, op: Option<&Op>, pa_bits: u32) -> Vec<u64> {
    let mut v = spec.touched_pfns();
    for r in RAM {
        let (s, e) = (r.base >> 12, r.end() >> 12);
        v.extend([s - 1, s, s + 1, e - 1, e, s + 511, s + 512]);
    }
    v.extend([0, 0x0905_0000 >> 12, (1 << (pa_bits - 12)) - 1]);
    if let Some(op) = op {
        let p = match *op {
            Op::ShareHyp(p) | Op::UnshareHyp(p) | Op::ForceReclaim(p) => p,
            Op::Pin(p, _) | Op::Unpin(p, _) | Op::DonateHyp(p, _) | Op::HypDonateHost(p, _) => p,
            Op::DonateMmio(p, _) | Op::ReclaimMmio(p, _) | Op::DonateGuest(_, p, _) => p,
            Op::Abort(pa) => pa >> 12,
            _ => 0,
        };
        v.extend((0..4).map(|i| p.wrapping_add(i)).filter(|&p| p < 1 << (pa_bits - 12)));
    }
    v.sort_unstable();
    v.dedup();
    v
}

/// Decode fuzzer input into calls, 10 bytes each (a trailing partial step
/// is ignored). Other crates' differential tests (the IOMMU shadow) drive
/// the same hostile sequences through it.
pub fn decode_ops(data: &[u8]) -> Vec<Op> {
    data.chunks_exact(10).map(decode).collect()
}

/// Decode one 10-byte step of fuzzer input.
fn decode(step: &[u8]) -> Op {
    let (p, n) = (pfn(&step[1..]), nr(step[9]));
    let h = handle(step[8]);
    let g = gfn(step[7], &step[1..9]);
    let gn = match step[9] % 4 {
        0 | 1 => 1,
        2 => crate::types::BLOCK_PAGES,
        _ => n,
    };
    let prot = Perms::new(step[5] & 1 != 0, step[5] & 2 != 0, step[5] & 4 != 0);
    match step[0] % 23 {
        0 => Op::ShareHyp(p),
        1 => Op::UnshareHyp(p),
        2 => Op::Pin(p, n),
        3 => Op::Unpin(p, n),
        4 => Op::DonateHyp(p, n),
        5 => Op::HypDonateHost(p, n),
        6 => Op::DonateMmio(p, n),
        7 => Op::ReclaimMmio(p, n),
        8 => Op::Abort(p.wrapping_shl(12) | step[9] as u64),
        9 => Op::InitVm {
            protected: step[9] & 1 == 1,
            ipa_bits: [40, 40, 40, 40, 36, 32, 47, 48][(step[5] % 8) as usize],
            vmid: (step[6] % 5) as u16,
            pfn: (RAM[1].end() >> 12) - 1 - (step[2] % 8) as u64,
            nr: 1 + (step[3] % 2) as u64,
        },
        10 | 11 => Op::ShareGuest(h, p, g, gn, prot),
        12 => Op::UnshareGuest(h, g, gn),
        13 => Op::RelaxGuest(h, g, prot),
        14 => Op::WrprotectGuest(h, g, gn),
        15 => Op::YoungGuest(h, g, gn, step[5] & 8 != 0),
        16 => Op::MkyoungGuest(h, g),
        17 => Op::DonateGuest(h, p, g),
        18 => Op::GuestShareHost(h, g),
        19 => Op::GuestUnshareHost(h, g),
        20 => match step[9] % 2 {
            0 => Op::StartTeardown(h),
            _ => Op::FinalizeVm(h),
        },
        21 => Op::ReclaimGuest(h, g),
        _ => Op::ForceReclaim(p),
    }
}

/// Bytes to page numbers: mostly a few hot RAM pages (some 2 MiB-aligned),
/// region edges and MMIO, sometimes anything.
fn pfn(b: &[u8]) -> u64 {
    let r0 = RAM[0].base >> 12;
    let r1_end = RAM[1].end() >> 12;
    match b[0] % 9 {
        0..=3 => r0 + (b[1] % 8) as u64,
        4 => (RAM[0].end() >> 12) - 2 + (b[1] % 4) as u64,
        5 => r1_end - 2 + (b[1] % 4) as u64,
        6 => (0x0905_0000 >> 12) + (b[1] % 4) as u64,
        7 => r0 + 512 * (b[1] % 4) as u64,
        _ => u64::from_le_bytes([b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8]]),
    }
}

/// A guest handle: mostly the first few slots, sometimes none.
fn handle(b: u8) -> Handle {
    match b % 8 {
        0..=5 => 1 + (b / 8 % 3) as Handle,
        6 => 0,
        _ => (b as Handle).wrapping_mul(37),
    }
}

/// A guest frame number: a few hot ones, block-aligned ones, the top of a
/// 40-bit IPA space, sometimes anything.
fn gfn(sel: u8, b: &[u8]) -> u64 {
    match sel % 8 {
        0..=3 => (sel / 8 % 8) as u64,
        4 => 512 * (sel / 8 % 3) as u64,
        5 => (1 << 28) - 1,
        6 => 1 << 28,
        _ => u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]),
    }
}

fn nr(b: u8) -> u64 {
    match b % 16 {
        0 => 0,
        1 => u64::MAX,
        2 => 600,
        n => (n % 4) as u64,
    }
}

/// Guest tables in arenas of their own (each at a fresh 4 GiB window from
/// 0x30_0000_0000), for any platform whose guests use arenas.
pub struct ArenaTables(pub u64);

impl<P: Platform<GuestMm = ArenaMm, GuestTlb = CountingTlb>> GuestTables<P> for ArenaTables {
    fn new_s2(&mut self, ipa_bits: u8, vmid: u16) -> PageTable<ArenaMm, CountingTlb> {
        self.0 += 1;
        let s2 = Regime::Stage2 {
            ipa_bits,
            vmid,
            fwb: true,
        };
        let arena = ArenaMm::new(0x30_0000_0000 + (self.0 << 32), 1024);
        let Ok(t) = PageTable::new(s2, arena, CountingTlb::default()) else {
            unreachable!("a fresh arena has a root page")
        };
        t
    }
}

/// Run the sequence `data` encodes (10 bytes per step) on both sides and
/// panic on the first difference.
pub fn run_bytes(data: &[u8]) {
    let n = RamMap::pages_of(&RAM);
    let meta: Vec<PageMeta> = (0..n).map(|_| PageMeta::default()).collect();
    let ram = RamMap::new(&RAM, &meta, 48).expect("harness RAM");
    let s2 = Regime::Stage2 {
        ipa_bits: 48,
        vmid: 0,
        fwb: true,
    };
    let Ok(host_s2) = PageTable::new(s2, ArenaMm::new(0x10_0000_0000, 2048), CountingTlb::default()) else {
        unreachable!("a fresh arena has a root page")
    };
    let s1 = Regime::El2Stage1 { va_bits: 48 };
    let Ok(hyp_s1) = PageTable::new(s1, ArenaMm::new(0x20_0000_0000, 2048), CountingTlb::default()) else {
        unreachable!("a fresh arena has a root page")
    };
    let mp: MemProtect<'_, Arena> = MemProtect::new(ram, host_s2, hyp_s1, Hook(Vec::new()), Poisoned(Vec::new()));
    let mut spec = Spec::new(&RAM, 48);
    let mut tables = ArenaTables(0);
    for step in data.chunks_exact(10) {
        let op = decode(step);
        assert_eq!(run(&mp, &mut tables, op), replay(&mut spec, op), "{op:?}");
        let (events, poisoned) = mp.with_host(|h| (core::mem::take(&mut h.hook.0), core::mem::take(&mut h.poison.0)));
        assert_eq!(events, spec.take_hook_events(), "hook calls of {op:?}");
        assert_eq!(poisoned, spec.take_poisoned(), "pages poisoned by {op:?}");
    }
    for pfn in spec.touched_pfns() {
        if let Some(page) = spec.is_ram(pfn).then(|| spec.page(pfn)) {
            assert_eq!(mp.host_state(pfn), Some(page.host), "host state of {pfn:#x}");
            assert_eq!(mp.hyp_state(pfn), Some(page.hyp), "hyp state of {pfn:#x}");
            assert_eq!(mp.pins(pfn).map(u32::from), Some(page.pins), "pins of {pfn:#x}");
            let shares = mp.ram().meta(pfn).map(|m| m.guest_shares());
            assert_eq!(shares, Some(page.guest_shares), "guest shares of {pfn:#x}");
        }
        let annotated = mp
            .host_s2_entry(pfn)
            .and_then(|(d, _)| d.annotation())
            .map(|a| (a.owner, a.meta));
        assert_eq!(
            annotated,
            spec.annotation(pfn).map(|a| (a.owner, a.meta)),
            "annotation of {pfn:#x}"
        );
        assert_eq!(mp.hyp_mapped(pfn), spec.hyp_mapped(pfn), "EL2 mapping of {pfn:#x}");
    }
    assert_guests_agree(&mp, &spec);
}
