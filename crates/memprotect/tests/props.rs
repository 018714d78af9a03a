//! Property tests: random sequences of every transition (host, hyp and
//! guests: creation, shares, donations, permission and age updates,
//! teardown, reclaim, force-reclaim) and host aborts, with hostile
//! arguments (zero, overflowing and huge counts, addresses past the
//! physical or IPA space, MMIO given as RAM and RAM as MMIO, ranges
//! crossing a region's end, misaligned blocks, wrong states, wrong and
//! stale handles), run on the implementation and on the executable spec.
//! After every step: the same result, the same abstract state for every
//! page either touched, the same guests (leaves, states, permissions, age,
//! poisoned entries), the same ownership-hook calls and poisoned pages, the
//! model's break-before-make checker silent; the host stage-2 (walked by
//! the model) grants the host nothing the spec says it may not reach, and
//! each guest stage-2, translated by a second CPU through its TLB, reaches
//! exactly the guest's own and shared pages with their permissions.

mod support;

use proptest::prelude::*;
use support::*;
use warden_memprotect::harness::{assert_guests_agree, replay, run, Op};
use warden_memprotect::spec::Spec;
use warden_memprotect::{Handle, HostAccess, Perms, BLOCK_PAGES, MAX_VMS};

/// Page numbers where things happen: a few pages in each RAM region and at
/// its ends, MMIO below and between the regions, the top of the physical
/// address space, and absurd values.
fn pfn() -> impl Strategy<Value = u64> {
    let r0 = RAM[0].base >> 12;
    let r0_end = RAM[0].end() >> 12;
    let r1 = RAM[1].base >> 12;
    let r1_end = RAM[1].end() >> 12;
    prop_oneof![
        10 => r0..r0 + 4,
        4 => r0 + 4..r0 + 24,
        2 => r0_end - 8..r0_end + 2,
        3 => r1..r1 + 600,
        1 => r1_end - 4..r1_end + 4,
        3 => MMIO_PFN..MMIO_PFN + 8,
        1 => r0_end..r0_end + 4,
        1 => (1u64 << 36) - 4..(1u64 << 36) + 4,
        1 => any::<u64>(),
    ]
}

fn nr() -> impl Strategy<Value = u64> {
    prop_oneof![10 => Just(1u64), 4 => 2..5u64, 1 => 500..1100u64, 1 => Just(0u64), 1 => any::<u64>()]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => pfn().prop_map(Op::ShareHyp),
        2 => pfn().prop_map(Op::UnshareHyp),
        2 => (pfn(), nr()).prop_map(|(p, n)| Op::Pin(p, n)),
        2 => (pfn(), nr()).prop_map(|(p, n)| Op::Unpin(p, n)),
        3 => (pfn(), nr()).prop_map(|(p, n)| Op::DonateHyp(p, n)),
        2 => (pfn(), nr()).prop_map(|(p, n)| Op::HypDonateHost(p, n)),
        2 => (pfn(), nr()).prop_map(|(p, n)| Op::DonateMmio(p, n)),
        2 => (pfn(), nr()).prop_map(|(p, n)| Op::ReclaimMmio(p, n)),
        4 => (pfn(), 0..4096u64).prop_map(|(p, off)| Op::Abort(p.wrapping_shl(12).wrapping_add(off))),
        16 => guest_op(),
    ]
}

/// Handles: mostly live slots, sometimes nothing.
fn handle() -> impl Strategy<Value = Handle> {
    prop_oneof![20 => 1..3 as Handle, 1 => Just(0), 1 => Just(MAX_VMS as Handle + 1), 1 => any::<Handle>()]
}

/// Guest frames: a few hot ones, block-aligned ones, the ends of the
/// 40-bit IPA space, absurd values.
fn gfn() -> impl Strategy<Value = u64> {
    prop_oneof![
        12 => 0..4u64,
        3 => (0..3u64).prop_map(|b| b * BLOCK_PAGES),
        1 => (1u64 << 28) - 2..(1u64 << 28) + 2,
        1 => any::<u64>(),
    ]
}

/// RAM pages for guests, 2 MiB-aligned ones included.
fn guest_pfn() -> impl Strategy<Value = u64> {
    let r0 = RAM[0].base >> 12;
    prop_oneof![
        8 => r0 + 32..r0 + 36,
        3 => (1..3u64).prop_map(move |b| r0 + b * BLOCK_PAGES),
        2 => pfn(),
    ]
}

fn guest_nr() -> impl Strategy<Value = u64> {
    prop_oneof![8 => Just(1u64), 3 => Just(BLOCK_PAGES), 1 => nr()]
}

fn perms() -> impl Strategy<Value = Perms> {
    (any::<bool>(), any::<bool>(), any::<bool>()).prop_map(|(r, w, x)| Perms::new(r, w, x))
}

fn guest_op() -> impl Strategy<Value = Op> {
    // Two groups: proptest's weighted unions take at most ten arms.
    prop_oneof![3 => guest_life_op(), 4 => guest_map_op()]
}

/// Creation, donation, sharing back, teardown, force-reclaim.
fn guest_life_op() -> impl Strategy<Value = Op> {
    let r1_end = RAM[1].end() >> 12;
    prop_oneof![
        4 => (any::<bool>(), prop_oneof![8 => Just(40u8), 1 => Just(48u8), 1 => 32..48u8], prop_oneof![8 => 1..4u16, 1 => 0..6u16], 1..4u64, 1..3u64)
            .prop_map(move |(protected, ipa_bits, vmid, back, nr)| Op::InitVm {
                protected,
                ipa_bits,
                vmid,
                pfn: r1_end - back * 2,
                nr,
            }),
        6 => (handle(), guest_pfn(), gfn()).prop_map(|(h, p, g)| Op::DonateGuest(h, p, g)),
        4 => (handle(), gfn()).prop_map(|(h, g)| Op::GuestShareHost(h, g)),
        3 => (handle(), gfn()).prop_map(|(h, g)| Op::GuestUnshareHost(h, g)),
        1 => handle().prop_map(Op::StartTeardown),
        5 => (handle(), gfn()).prop_map(|(h, g)| Op::ReclaimGuest(h, g)),
        2 => handle().prop_map(Op::FinalizeVm),
        2 => guest_pfn().prop_map(Op::ForceReclaim),
    ]
}

/// Host shares with np guests and their updates.
fn guest_map_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (handle(), guest_pfn(), gfn(), guest_nr(), perms())
            .prop_map(|(h, p, g, n, prot)| Op::ShareGuest(h, p, g, n, prot)),
        3 => (handle(), gfn(), guest_nr()).prop_map(|(h, g, n)| Op::UnshareGuest(h, g, n)),
        2 => (handle(), gfn(), perms()).prop_map(|(h, g, prot)| Op::RelaxGuest(h, g, prot)),
        2 => (handle(), gfn(), guest_nr()).prop_map(|(h, g, n)| Op::WrprotectGuest(h, g, n)),
        2 => (handle(), gfn(), guest_nr(), any::<bool>()).prop_map(|(h, g, n, o)| Op::YoungGuest(h, g, n, o)),
        1 => (handle(), gfn()).prop_map(|(h, g)| Op::MkyoungGuest(h, g)),
    ]
}

/// Pages whose state the op may have looked at or changed (clamped to a
/// sample for huge ranges), plus its neighbours.
fn op_pfns(op: &Op) -> Vec<u64> {
    let (p, n) = match *op {
        Op::ShareHyp(p) | Op::UnshareHyp(p) => (p, 1),
        Op::Pin(p, n)
        | Op::Unpin(p, n)
        | Op::DonateHyp(p, n)
        | Op::HypDonateHost(p, n)
        | Op::DonateMmio(p, n)
        | Op::ReclaimMmio(p, n) => (p, n),
        Op::Abort(pa) => (pa >> 12, 1),
        Op::InitVm { pfn, nr, .. } => (pfn, nr),
        Op::ShareGuest(_, p, _, n, _) => (p, n),
        Op::DonateGuest(_, p, _) | Op::ForceReclaim(p) => (p, 1),
        _ => return Vec::new(),
    };
    let n = n.clamp(1, 16);
    (0..n + 2)
        .map(|i| p.wrapping_add(i).wrapping_sub(1))
        .filter(|&p| p < 1 << 36)
        .collect()
}

fn check_page(w: &World, spec: &Spec, pfn: u64) {
    assert_eq!(
        w.abstract_page(pfn),
        World::spec_page(spec, pfn),
        "state of pfn {pfn:#x}"
    );
    // The host reaches nothing the spec says it may not, and RAM and MMIO
    // get their permissions.
    if let Some((r, wr, x)) = w.host_mapping(pfn) {
        match spec.host_access(pfn) {
            HostAccess::None => panic!("host maps pfn {pfn:#x}, which it may not reach"),
            HostAccess::Mem => assert_eq!((r, wr, x), (true, true, true), "RAM pfn {pfn:#x}"),
            HostAccess::Mmio => assert_eq!((r, wr, x), (true, true, false), "MMIO pfn {pfn:#x}"),
        }
    }
}

/// Each guest stage-2, walked by the model, reaches exactly what the spec
/// says at every gfn the spec knows of and at the gfns the op named: the
/// page it owns or was shared, with the leaf's permissions; nothing
/// elsewhere. CPU 1, through its TLB, never reaches more.
fn check_guests(w: &World, spec: &Spec, op: &Op) {
    let named = match *op {
        Op::ShareGuest(h, _, g, _, _)
        | Op::UnshareGuest(h, g, _)
        | Op::RelaxGuest(h, g, _)
        | Op::WrprotectGuest(h, g, _)
        | Op::YoungGuest(h, g, _, _)
        | Op::MkyoungGuest(h, g)
        | Op::DonateGuest(h, _, g)
        | Op::GuestShareHost(h, g)
        | Op::GuestUnshareHost(h, g)
        | Op::ReclaimGuest(h, g) => Some((h, g)),
        _ => None,
    };
    for h in 1..=MAX_VMS as Handle {
        let mut gfns = spec.guest_gfns(h);
        if let Some((_, g)) = named.filter(|&(nh, _)| nh == h) {
            let near = [g, g.wrapping_add(1), g.wrapping_add(BLOCK_PAGES - 1)];
            gfns.extend(near.into_iter().filter(|g| g >> 28 == 0));
        }
        for gfn in gfns {
            let want = spec.guest_leaf(h, gfn).map(|l| {
                let pa = (l.pfn + (gfn - l.gfn)) << 12;
                (pa, l.perms.r, l.perms.w, l.perms.x)
            });
            // A leaf without read, write or execute grants nothing: the
            // same as no leaf for what the guest reaches.
            let some = |t: &(u64, bool, bool, bool)| t.1 || t.2 || t.3;
            let want = want.filter(some);
            // The tables grant exactly that; a CPU's TLB never more (it may
            // hold a stricter entry after a relaxation, which KVM allows:
            // a spurious fault).
            let walked = w.guest_walk(h, gfn).filter(some);
            let cached = w.guest_access(1, h, gfn).filter(some);
            let within = match (cached, want) {
                (None, _) => true,
                (Some(c), Some(t)) => c.0 == t.0 && (!c.1 || t.1) && (!c.2 || t.2) && (!c.3 || t.3),
                (Some(_), None) => false,
            };
            if spec.vm(h).is_some() {
                assert_eq!(walked, want, "guest {h} at gfn {gfn:#x}");
                assert!(
                    within,
                    "CPU 1 reaches {cached:?} at gfn {gfn:#x} of guest {h}, the spec {want:?}"
                );
            }
        }
    }
}

fn run_sequence(ops: Vec<Op>) {
    let w = world(&RAM);
    let mut spec = Spec::new(&RAM, 48);
    let mut seen: Vec<u64> = Vec::new();
    let mut tables = WorldTables::new(&w);
    for op in &ops {
        let outcome = run(&w.mp, &mut tables, *op);
        assert_eq!(outcome, replay(&mut spec, *op), "result of {op:?}");
        w.assert_clean();
        let events: Vec<_> = w.events.borrow_mut().drain(..).collect();
        assert_eq!(events, spec.take_hook_events(), "hook calls of {op:?}");
        let poisoned: Vec<_> = w.poisoned.borrow_mut().drain(..).collect();
        assert_eq!(poisoned, spec.take_poisoned(), "pages poisoned by {op:?}");
        assert_guests_agree(&w.mp, &spec);
        check_guests(&w, &spec, op);
        seen.extend(op_pfns(op));
        seen.extend(spec.touched_pfns());
        seen.sort_unstable();
        seen.dedup();
        for &pfn in &seen {
            check_page(&w, &spec, pfn);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn transitions_match_the_spec(ops in prop::collection::vec(op(), 1..80)) {
        run_sequence(ops);
    }

    /// Mostly guests: lifecycles get far enough for teardown, reclaim and
    /// force-reclaim to succeed often.
    #[test]
    fn guests_match_the_spec(ops in prop::collection::vec(prop_oneof![8 => guest_op(), 1 => op()], 1..80)) {
        run_sequence(ops);
    }
}
