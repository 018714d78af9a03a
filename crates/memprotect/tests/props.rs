//! Property tests: random sequences of every host/hyp transition and host
//! aborts, with hostile arguments (zero, overflowing and huge counts,
//! addresses past the physical address space, MMIO given as RAM and RAM as
//! MMIO, ranges crossing a region's end, wrong states), run on the
//! implementation and on the executable spec. After every step: the same
//! result, the same abstract state for every page either touched, the same
//! ownership-hook calls, the model's break-before-make checker silent, and
//! the host stage-2 (walked by the model) granting the host nothing the
//! spec says it may not reach.

mod support;

use proptest::prelude::*;
use support::*;
use warden_memprotect::harness::{replay, run, Op};
use warden_memprotect::spec::Spec;
use warden_memprotect::HostAccess;

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

fn run_sequence(ops: Vec<Op>) {
    let w = world(&RAM);
    let mut spec = Spec::new(&RAM, 48);
    let mut seen: Vec<u64> = Vec::new();
    for op in &ops {
        assert_eq!(run(&w.mp, *op), replay(&mut spec, *op), "result of {op:?}");
        w.assert_clean();
        let events: Vec<_> = w.events.borrow_mut().drain(..).collect();
        assert_eq!(events, spec.take_hook_events(), "hook calls of {op:?}");
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
}
