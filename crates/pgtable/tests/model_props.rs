//! Property tests: random sequences of map / unmap / annotate / attribute
//! changes / split, over random ranges, regimes and IPA sizes, checked after
//! every step against a plain reference model by translating sampled and
//! boundary addresses through warden-archmodel's independent walker, with
//! its break-before-make checker on throughout, and with zero table pages
//! left after destroy.

mod support;

use proptest::prelude::*;
use support::reference::{Content, Reference};
use support::*;
use warden_archmodel::walk::{FaultKind, MemType as MMem};
use warden_pgtable::{Annotation, Attrs, Error, MapPolicy, MemType, MmOps, Perms, Regime};

const MIB2: u64 = 2 << 20;
const GIB: u64 = 1 << 30;

#[derive(Clone, Debug)]
enum Op {
    Map {
        ia: u64,
        size: u64,
        oa: u64,
        attrs: Attrs,
        policy: MapPolicy,
    },
    Unmap {
        ia: u64,
        size: u64,
    },
    Annotate {
        ia: u64,
        size: u64,
        ann: Annotation,
    },
    Relax {
        ia: u64,
        size: u64,
        perms: Perms,
    },
    Wrprotect {
        ia: u64,
        size: u64,
    },
    Mkyoung {
        ia: u64,
        size: u64,
    },
    TestClearYoung {
        ia: u64,
        size: u64,
    },
    Split {
        ia: u64,
        size: u64,
    },
    /// Allow only this many more table pages from now on (`None`: no limit).
    Budget(Option<u8>),
}

/// A range: mostly page-aligned inside an 8 GiB window, sized at page,
/// 2 MiB or 1 GiB granularity, sometimes deliberately unaligned.
fn range(max_size: u64) -> impl Strategy<Value = (u64, u64)> {
    let window = 8 * GIB;
    prop_oneof![
        6 => (0..window / 4096, 1..=1024u64).prop_map(|(p, n)| (p * 4096, n * 4096)),
        4 => (0..window / MIB2, 1..=8u64, 0..3u64).prop_map(|(b, n, skew)| (b * MIB2 + skew * 4096, n * MIB2)),
        2 => (0..8u64, 1..=2u64).prop_map(|(g, n)| (g * GIB, n * GIB)),
        1 => (0..window, 0..(4 * MIB2)),
    ]
    .prop_map(move |(ia, size)| (ia, size.min(max_size)))
}

fn attrs(stage2: bool) -> impl Strategy<Value = Attrs> {
    let perms = if stage2 {
        (any::<bool>(), any::<bool>(), any::<bool>())
            .prop_map(|(r, w, x)| Perms::new(r, w, x))
            .boxed()
    } else {
        prop_oneof![Just(Perms::R), Just(Perms::RW), Just(Perms::RX)].boxed()
    };
    let mem = if stage2 {
        prop_oneof![
            Just(MemType::Device),
            Just(MemType::NormalNc),
            Just(MemType::NormalWb),
            Just(MemType::AsStage1)
        ]
        .boxed()
    } else {
        prop_oneof![Just(MemType::Device), Just(MemType::NormalNc), Just(MemType::NormalWb)].boxed()
    };
    (perms, mem, 0..16u8).prop_map(|(mut perms, mem, sw)| {
        if mem == MemType::Device {
            perms.x = false;
        }
        Attrs { perms, mem, sw }
    })
}

fn op(stage2: bool) -> impl Strategy<Value = Op> {
    let policy = (
        prop_oneof![Just(MapPolicy::BLOCKS), Just(MapPolicy::MAX_2M), Just(MapPolicy::PAGES)],
        prop::bool::weighted(0.2),
    )
        .prop_map(|(p, replace_annotations)| MapPolicy {
            replace_annotations,
            ..p
        });
    let perms = (any::<bool>(), any::<bool>(), any::<bool>()).prop_map(|(r, w, x)| Perms::new(r, w, x));
    prop_oneof![
        6 => (range(4 * GIB), 0..(16 * GIB / MIB2), 0..512u64, attrs(stage2), policy).prop_map(
            |((ia, size), oa_blk, oa_pg, attrs, policy)| {
                // Page policy maps are capped so that a case stays quick.
                let size = if policy.min_leaf_level == 3 { size.min(2 * MIB2) } else { size };
                let oa = oa_blk * MIB2 + if oa_pg % 4 == 0 { 0 } else { oa_pg * 4096 };
                let oa = if ia % GIB == 0 && oa_pg % 8 == 1 { ia } else { oa };
                Op::Map { ia, size, oa, attrs, policy }
            }
        ),
        3 => range(16 * GIB).prop_map(|(ia, size)| Op::Unmap { ia, size }),
        2 => (range(MIB2), 1..=255u8, any::<u64>()).prop_map(|((ia, size), owner, meta)| Op::Annotate {
            ia,
            size,
            ann: Annotation { owner, meta: meta & Annotation::META_MAX },
        }),
        1 => (range(4 * GIB), perms).prop_map(|((ia, size), perms)| Op::Relax { ia, size, perms }),
        1 => range(4 * GIB).prop_map(|(ia, size)| Op::Wrprotect { ia, size }),
        1 => range(4 * GIB).prop_map(|(ia, size)| Op::Mkyoung { ia, size }),
        1 => range(4 * GIB).prop_map(|(ia, size)| Op::TestClearYoung { ia, size }),
        1 => range(2 * MIB2).prop_map(|(ia, size)| Op::Split { ia, size }),
        1 => prop::option::weighted(0.7, 0..8u8).prop_map(Op::Budget),
    ]
}

fn regime() -> impl Strategy<Value = Regime> {
    prop_oneof![
        3 => (32..=48u8, any::<u16>(), any::<bool>()).prop_map(|(ipa_bits, vmid, fwb)| Regime::Stage2 { ipa_bits, vmid, fwb }),
        1 => (25..=48u8).prop_map(|va_bits| Regime::El2Stage1 { va_bits }),
    ]
}

fn check_range(ia: u64, size: u64, end_limit: u64) -> Result<u64, Error> {
    if !ia.is_multiple_of(4096) || !size.is_multiple_of(4096) {
        return Err(Error::Unaligned);
    }
    match ia.checked_add(size) {
        Some(end) if end <= end_limit => Ok(end),
        _ => Err(Error::OutOfRange),
    }
}

/// What the reference says each operation returns, applying it if it
/// succeeds. `Ok(Some(x))` carries a value result (bytes, young).
fn apply(r: &mut Reference, op: &Op, regime: &Regime, ia_end: u64) -> Result<Option<u64>, Error> {
    let stage1 = !regime.is_stage2();
    match *op {
        Op::Map {
            ia,
            size,
            oa,
            attrs,
            policy,
        } => {
            let end = check_range(ia, size, ia_end)?;
            if oa % 4096 != 0 {
                return Err(Error::Unaligned);
            }
            if oa.checked_add(size).is_none_or(|e| e > 1 << 48) {
                return Err(Error::OutOfRange);
            }
            if size > 0 && !policy.replace_annotations && r.any_annotated(ia, end) {
                return Err(Error::Annotated);
            }
            if size > 0 {
                r.set(
                    ia,
                    end,
                    Content::Mapped {
                        oa_base: oa,
                        attrs,
                        af: true,
                    },
                );
            }
            Ok(None)
        }
        Op::Unmap { ia, size } => {
            let end = check_range(ia, size, ia_end)?;
            if r.any_annotated(ia, end) {
                return Err(Error::Annotated);
            }
            let bytes = r.mapped_bytes(ia, end);
            r.clear(ia, end);
            Ok(Some(bytes))
        }
        Op::Annotate { ia, size, ann } => {
            let end = check_range(ia, size, ia_end)?;
            if size > 0 {
                r.set(ia, end, Content::Annotated(ann));
            }
            Ok(None)
        }
        Op::Relax { ia, size, perms } => {
            let end = check_range(ia, size, ia_end)?;
            let mut bad = false;
            let mut probe = r.clone();
            probe.update(ia, end, |a, _| {
                let mut p = a.perms.union(perms);
                if stage1 {
                    // Stage-1 leaves are always readable.
                    p.r = true;
                }
                if (p.x && a.mem == MemType::Device) || (stage1 && p.w && p.x) {
                    bad = true;
                }
                a.perms = p;
            });
            if bad {
                return Err(Error::InvalidAttrs);
            }
            *r = probe;
            Ok(None)
        }
        Op::Wrprotect { ia, size } => {
            let end = check_range(ia, size, ia_end)?;
            r.update(ia, end, |a, _| a.perms.w = false);
            Ok(None)
        }
        Op::Mkyoung { ia, size } => {
            let end = check_range(ia, size, ia_end)?;
            r.update(ia, end, |_, af| *af = true);
            Ok(None)
        }
        Op::TestClearYoung { ia, size } => {
            let end = check_range(ia, size, ia_end)?;
            let young = r.any_young(ia, end);
            r.update(ia, end, |_, af| *af = false);
            Ok(Some(young as u64))
        }
        Op::Split { ia, size } => {
            check_range(ia, size, ia_end)?;
            Ok(None)
        }
        Op::Budget(_) => Ok(None),
    }
}

fn run(pt: &mut ModelTable, op: &Op) -> Result<Option<u64>, Error> {
    match *op {
        Op::Map {
            ia,
            size,
            oa,
            attrs,
            policy,
        } => pt.map(ia, size, oa, attrs, policy).map(|()| None),
        Op::Unmap { ia, size } => pt.unmap(ia, size).map(Some),
        Op::Annotate { ia, size, ann } => pt.annotate(ia, size, ann).map(|()| None),
        Op::Relax { ia, size, perms } => pt.relax_perms(ia, size, perms).map(|()| None),
        Op::Wrprotect { ia, size } => pt.wrprotect(ia, size).map(|()| None),
        Op::Mkyoung { ia, size } => pt.mkyoung(ia, size).map(|()| None),
        Op::TestClearYoung { ia, size } => pt.test_clear_young(ia, size).map(|y| Some(y as u64)),
        Op::Split { ia, size } => pt.split(ia, size).map(|()| None),
        Op::Budget(extra) => {
            let m = pt.mm().m.clone();
            let mut m = m.borrow_mut();
            let limit = extra.map(|e| m.mem.allocated_pages() + e as usize);
            m.mem.set_alloc_limit(limit);
            Ok(None)
        }
    }
}

fn expected_mem(m: MemType, fwb: bool, stage2: bool) -> MMem {
    match m {
        MemType::Device => MMem::DeviceNGnRE,
        MemType::NormalNc => MMem::NormalNc,
        MemType::NormalWb => MMem::NormalWb,
        MemType::AsStage1 if stage2 && fwb => MMem::AsStage1,
        MemType::AsStage1 => MMem::NormalWb,
    }
}

fn op_range(op: &Op) -> (u64, u64) {
    match *op {
        Op::Map { ia, size, .. }
        | Op::Unmap { ia, size }
        | Op::Annotate { ia, size, .. }
        | Op::Relax { ia, size, .. }
        | Op::Wrprotect { ia, size }
        | Op::Mkyoung { ia, size }
        | Op::TestClearYoung { ia, size }
        | Op::Split { ia, size } => (ia, size),
        Op::Budget(_) => (0, 0),
    }
}

/// Compare the engine's tables, through the model's walk and through CPU
/// 1's TLB, with the reference at `a`.
fn check_addr(m: &Shared, id: warden_archmodel::machine::TableId, pt: &ModelTable, r: &Reference, a: u64) {
    let regime = *pt.regime();
    let (stage2, fwb) = match regime {
        Regime::Stage2 { fwb, .. } => (true, fwb),
        Regime::El2Stage1 { .. } => (false, false),
    };
    let walked = m.borrow().walk(id, a);
    match r.get(a) {
        Some((start, Content::Mapped { oa_base, attrs, af })) => {
            let t = walked.unwrap_or_else(|f| panic!("{a:#x} should be mapped: {f:?}"));
            assert_eq!(t.oa, oa_base + (a - start), "output address of {a:#x}");
            let want_r = if stage2 { attrs.perms.r } else { true };
            assert_eq!(
                (t.read, t.write, t.exec),
                (want_r, attrs.perms.w, attrs.perms.x),
                "perms of {a:#x}"
            );
            assert_eq!(t.mem, expected_mem(attrs.mem, fwb, stage2), "memory type of {a:#x}");
            assert_eq!(t.sw, attrs.sw, "software bits of {a:#x}");
            assert_eq!(t.af, af, "access flag of {a:#x}");
        }
        other => {
            let f = walked.expect_err("unmapped address translated");
            assert_eq!(f.kind, FaultKind::Translation, "{a:#x}");
            let (d, _) = pt.get_leaf(a).unwrap();
            let want = match other {
                Some((_, Content::Annotated(ann))) => Some(ann),
                _ => None,
            };
            assert_eq!(d.annotation(), want, "annotation at {a:#x}");
        }
    }
    // CPU 1 never ran an operation: anything its TLB still holds must be
    // no more permissive than the truth (relaxation may be lazy, nothing
    // else may).
    if let Ok(t) = m.borrow_mut().translate(1, id, a) {
        let (oa, attrs, _) = r
            .translate(a)
            .unwrap_or_else(|| panic!("CPU 1 still translates {a:#x}"));
        assert_eq!(t.oa, oa, "CPU 1's TLB has a stale output address for {a:#x}");
        assert_eq!(t.mem, expected_mem(attrs.mem, fwb, stage2));
        assert!(!t.write || attrs.perms.w, "CPU 1's TLB still allows writing {a:#x}");
        assert!(!t.exec || attrs.perms.x, "CPU 1's TLB still allows executing {a:#x}");
        assert!(
            !stage2 || !t.read || attrs.perms.r,
            "CPU 1's TLB still allows reading {a:#x}"
        );
    }
}

/// The level at which `a` must be mapped right after `map(ia, size, oa, _, policy)`:
/// the largest block that lies inside the range with an aligned output.
fn expected_level(a: u64, ia: u64, size: u64, oa: u64, policy: MapPolicy, start_level: u8) -> u8 {
    for level in policy.min_leaf_level.max(1).max(start_level)..=3u8 {
        let bs = 1u64 << (12 + 9 * (3 - level as u32));
        let start = a & !(bs - 1);
        if start >= ia && start + bs <= ia + size && (oa + (start - ia)).is_multiple_of(bs) {
            return level;
        }
    }
    3
}

fn run_sequence(regime: Regime, ops: Vec<Op>, samples: Vec<u64>) {
    let m = machine(2);
    let (mut pt, id) = new_table(&m, regime);
    let ia_end = pt.geometry().ia_end();
    let mut r = Reference::default();
    for op in &ops {
        let before = r.clone();
        let expect = apply(&mut r, op, &regime, ia_end);
        let got = run(&mut pt, op);
        if got == Err(Error::NoMemory) && m.borrow().mem.alloc_limit().is_some() {
            // Out of table pages: refused, and the translation must be
            // exactly as before (checked below against the old reference).
            r = before;
        } else {
            assert_eq!(got, expect, "result of {op:?}");
        }
        assert_no_violations(&m);
        assert_eq!(
            m.borrow().unclean_count(),
            0,
            "an entry is left awaiting invalidation after {op:?}"
        );
        let pages = assert_refcounts(&pt);
        assert_eq!(pages, pt.mm().refs.len(), "table pages reachable vs allocated (leak)");

        // Sample the op's boundaries, some random points, run boundaries.
        let (ia, size) = op_range(op);
        let mut points: Vec<u64> = [
            ia,
            ia.wrapping_sub(4096),
            ia.wrapping_add(size),
            ia.wrapping_add(size).wrapping_sub(4096),
        ]
        .into_iter()
        .chain(samples.iter().map(|s| s % ia_end.min(16 * GIB)))
        .chain(r.boundaries().into_iter().flat_map(|b| [b, b.wrapping_sub(4096)]))
        .map(|p| p & !4095)
        .filter(|p| *p < ia_end)
        .collect();
        points.sort_unstable();
        points.dedup();
        for &a in &points {
            check_addr(&m, id, &pt, &r, a);
        }
        if let (
            Op::Map {
                ia, size, oa, policy, ..
            },
            Ok(_),
        ) = (op, &got)
        {
            for &a in points.iter().filter(|&&a| a >= *ia && a < ia + size) {
                let t = m.borrow().walk(id, a).unwrap();
                assert_eq!(
                    t.level,
                    expected_level(a, *ia, *size, *oa, *policy, pt.geometry().start_level),
                    "block size at {a:#x} after {op:?}"
                );
            }
        }
    }
    m.borrow_mut().unregister_table(id);
    let (mm, _) = pt.destroy();
    assert!(
        mm.refs.is_empty(),
        "table pages still referenced after destroy: {:?}",
        mm.refs
    );
    assert_eq!(m.borrow().mem.allocated_pages(), 0, "table pages leaked");
    let _ = mm.page_count(0);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn stage2_and_el2_sequences_match_the_reference(
        (regime, ops) in regime().prop_flat_map(|r| (Just(r), prop::collection::vec(op(r.is_stage2()), 1..24))),
        samples in prop::collection::vec(any::<u64>(), 8),
    ) {
        run_sequence(regime, ops, samples);
    }
}
