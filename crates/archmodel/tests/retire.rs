//! Retired table pages: a table page unlinked from a live table may not be
//! written, linked again or freed until the invalidation of the entry that
//! pointed at it has completed.
//!
//! Descriptor values are raw numbers (see tests/walk.rs for the bit layout).

use warden_archmodel::*;

const TABLE: u64 = 0b11;
/// Stage-2 page, Normal WB, RW, inner shareable, AF.
const S2_PAGE: u64 = 0x7ff;
/// Stage-2 block, same attributes.
const S2_BLOCK: u64 = 0x7fd;

const VMID: u16 = 1;
/// IPA 1 GiB: root index 1, L2 index 0, L3 index 0.
const IPA: u64 = 0x4000_0000;
const OA_A: u64 = 0x5000_0000;
const OA_B: u64 = 0x5000_1000;

struct S2 {
    m: Machine,
    t: TableId,
    root: u64,
    l2: u64,
    l3: u64,
}

fn s2_regime() -> Regime {
    Regime::Stage2 {
        ipa_bits: 40,
        start_level: 1,
        fwb: false,
    }
}

/// Stage 2, ipa 40, start level 1, with IPA -> OA_A mapped by a page through
/// root entry 1 -> L2 entry 0 -> L3 entry 0, published without violation.
fn s2(cpus: usize) -> S2 {
    let mut mem = PhysMem::new(0x4000_0000, 16 << 20);
    let root = mem.alloc_pages(2, 2).unwrap();
    let l2 = mem.alloc_pages(1, 1).unwrap();
    let l3 = mem.alloc_pages(1, 1).unwrap();
    let mut m = Machine::new(mem, cpus);
    let t = m.register_table(root, s2_regime(), Some(VMID));
    m.write_desc(0, l3, OA_A | S2_PAGE);
    m.write_desc(0, l2, l3 | TABLE);
    m.dsb(0, Dsb::IshSt);
    m.write_desc(0, root + 8, l2 | TABLE);
    assert!(m.violations().is_empty());
    S2 { m, t, root, l2, l3 }
}

fn vmid_all(broadcast: bool) -> Tlbi {
    Tlbi::Stage2Vmid { vmid: VMID, broadcast }
}

/// The one violation in `v`, which must be a FreedBeforeInvalidation; returns
/// (cpu, page, reuse, parent_pa, level, ia, stage, unclean_cpus).
#[allow(clippy::type_complexity)]
fn one_reuse(v: &[Violation]) -> (Option<usize>, u64, Reuse, u64, u8, u64, CleanStage, Vec<usize>) {
    match v {
        [Violation::FreedBeforeInvalidation {
            cpu,
            page,
            reuse,
            parent_pa,
            level,
            ia,
            stage,
            unclean_cpus,
            ..
        }] => (
            *cpu,
            *page,
            *reuse,
            *parent_pa,
            *level,
            *ia,
            *stage,
            unclean_cpus.clone(),
        ),
        other => panic!("expected one FreedBeforeInvalidation, got {other:?}"),
    }
}

/// (a) The sequence from review: clear the L2 entry pointing at the L3 table
/// without any TLBI, rewrite the L3 page, link it under another L2 entry,
/// DSB. Both the rewrite and the relink are caught.
#[test]
fn unlink_without_tlbi_then_rewrite_is_caught() {
    let mut s = s2(2);
    assert_eq!(s.m.translate(1, s.t, IPA).unwrap().oa, OA_A);
    s.m.write_desc(0, s.l2, 0);
    assert!(s.m.is_retired(s.l3) && s.m.is_retired(s.l3 + 0xff8));
    assert!(!s.m.is_tracked(s.l3));
    assert_eq!(s.m.retired_pages(), vec![s.l3]);

    s.m.write_desc(1, s.l3 + 8, OA_B | S2_PAGE);
    let (cpu, page, reuse, parent_pa, level, ia, stage, unclean) = one_reuse(&s.m.take_violations());
    assert_eq!((cpu, page, parent_pa, level, ia), (Some(1), s.l3, s.l2, 2, IPA));
    assert_eq!(
        reuse,
        Reuse::Write {
            pa: s.l3 + 8,
            old: 0,
            new: OA_B | S2_PAGE
        }
    );
    assert_eq!(stage, CleanStage::NeedsDsb);
    assert_eq!(unclean, vec![0, 1]);

    // Link it under L2 entry 1: caught again, as a link this time.
    s.m.write_desc(0, s.l2 + 8, s.l3 | TABLE);
    let (cpu, page, reuse, parent_pa, ..) = one_reuse(&s.m.take_violations());
    assert_eq!((cpu, page, parent_pa), (Some(0), s.l3, s.l2));
    assert_eq!(
        reuse,
        Reuse::Link {
            pa: s.l2 + 8,
            new: s.l3 | TABLE
        }
    );
    s.m.dsb(0, Dsb::Ish);
    assert_eq!(s.m.violations(), &[]);
    // Still retired: only a covering TLBI can end it.
    assert!(s.m.is_retired(s.l3));
    assert!(s.m.is_tracked(s.l3 + 8), "the relinked page is live all the same");
    s.m.tlbi(0, vmid_all(true));
    s.m.dsb(0, Dsb::Ish);
    assert!(!s.m.is_retired(s.l3));
    assert_eq!(s.m.unclean_count(), 0);
}

/// (b) Unlink, DSB but no TLBI, free through the machine.
#[test]
fn unlink_without_tlbi_then_free_is_caught() {
    let mut s = s2(1);
    s.m.write_desc(0, s.l2, 0);
    s.m.dsb(0, Dsb::Ish);
    s.m.free_pages(s.l3, 1);
    let (cpu, page, reuse, parent_pa, level, ia, stage, unclean) = one_reuse(&s.m.take_violations());
    assert_eq!((cpu, page, reuse), (None, s.l3, Reuse::Free));
    assert_eq!((parent_pa, level, ia), (s.l2, 2, IPA));
    assert_eq!((stage, unclean), (CleanStage::NeedsTlbi, vec![0]));
    assert!(!s.m.mem.is_allocated(s.l3));
    // Reported once: the page is no longer retired after the free.
    assert!(!s.m.is_retired(s.l3));
    assert_eq!(s.m.events().last(), Some(&Event::Free { pa: s.l3, count: 1 }));
    // Reallocating and filling it is not reported a second time.
    assert_eq!(s.m.alloc_pages(1, 1), Some(s.l3));
    s.m.write_desc(0, s.l3, OA_B | S2_PAGE);
    assert_eq!(s.m.violations(), &[]);
}

/// A multi-page free reports each retired page it covers, and only those.
#[test]
fn multi_page_free_reports_each_retired_page() {
    let mut s = s2(1);
    // Allocate two more L3 tables next to each other, link them, unlink both.
    let pair = s.m.alloc_pages(2, 2).unwrap();
    for k in 0..2u64 {
        s.m.write_desc(0, s.l2 + (1 + k) * 8, (pair + k * PAGE_SIZE) | TABLE);
    }
    for k in 0..2u64 {
        s.m.write_desc(0, s.l2 + (1 + k) * 8, 0);
    }
    assert_eq!(s.m.retired_pages(), vec![pair, pair + PAGE_SIZE]);
    s.m.free_pages(pair, 2);
    let v = s.m.take_violations();
    let pages: Vec<u64> = v
        .iter()
        .map(|v| match v {
            Violation::FreedBeforeInvalidation {
                page,
                reuse: Reuse::Free,
                ..
            } => *page,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(pages, vec![pair, pair + PAGE_SIZE]);
}

/// (c) A TLBI by IPA does not cover a table entry's whole range, so the page
/// stays retired and linking it elsewhere is caught.
#[test]
fn tlbi_by_ipa_does_not_release_and_relink_elsewhere_is_caught() {
    let mut s = s2(2);
    s.m.write_desc(0, s.l2, 0);
    s.m.dsb(0, Dsb::Ish);
    for op in [
        Tlbi::Stage2Ipa {
            vmid: VMID,
            ipa: IPA,
            level: None,
            last_level: false,
            broadcast: true,
        },
        Tlbi::Stage2Ipa {
            vmid: VMID,
            ipa: IPA,
            level: Some(2),
            last_level: false,
            broadcast: true,
        },
        // Half of the 2 MiB range.
        Tlbi::Stage2Range {
            vmid: VMID,
            ipa: IPA,
            size: 1 << 20,
            broadcast: true,
        },
        // Another VMID.
        Tlbi::Stage2Vmid {
            vmid: VMID + 1,
            broadcast: true,
        },
    ] {
        s.m.tlbi(0, op);
        s.m.dsb(0, Dsb::Ish);
        assert!(s.m.is_retired(s.l3), "{op:?}");
    }
    s.m.write_desc(0, s.l2 + 8, s.l3 | TABLE);
    let (cpu, page, reuse, parent_pa, level, ia, stage, unclean) = one_reuse(&s.m.take_violations());
    assert_eq!((cpu, page, parent_pa, level, ia), (Some(0), s.l3, s.l2, 2, IPA));
    assert!(matches!(reuse, Reuse::Link { pa, .. } if pa == s.l2 + 8));
    assert_eq!((stage, unclean), (CleanStage::NeedsTlbi, vec![0, 1]));
}

/// (d) With two CPUs a local TLBI cleans only the issuing CPU: the page
/// stays retired and freeing it is caught. With one CPU the local form is
/// enough.
#[test]
fn local_tlbi_with_two_cpus_does_not_release() {
    let mut s = s2(2);
    s.m.write_desc(0, s.l2, 0);
    s.m.dsb(0, Dsb::Ish);
    s.m.tlbi(0, vmid_all(false));
    s.m.dsb(0, Dsb::Ish);
    assert!(s.m.is_retired(s.l3));
    s.m.free_pages(s.l3, 1);
    let (cpu, page, reuse, .., stage, unclean) = one_reuse(&s.m.take_violations());
    assert_eq!((cpu, page, reuse), (None, s.l3, Reuse::Free));
    assert_eq!((stage, unclean), (CleanStage::NeedsTlbi, vec![1]));

    let mut s = s2(1);
    s.m.write_desc(0, s.l2, 0);
    s.m.dsb(0, Dsb::Ish);
    s.m.tlbi(0, vmid_all(false));
    s.m.dsb(0, Dsb::Nsh);
    assert!(!s.m.is_retired(s.l3));
    s.m.free_pages(s.l3, 1);
    assert_eq!(s.m.violations(), &[]);
}

/// The cleaning steps must come in order and from the unlinking CPU.
#[test]
fn incomplete_sequences_leave_the_page_retired() {
    // TLBI before the DSB that publishes the unlink.
    let mut s = s2(2);
    s.m.write_desc(0, s.l2, 0);
    s.m.tlbi(0, vmid_all(true));
    s.m.dsb(0, Dsb::Ish);
    assert!(s.m.is_retired(s.l3));
    // No DSB completing the TLBI.
    let mut s = s2(2);
    s.m.write_desc(0, s.l2, 0);
    s.m.dsb(0, Dsb::IshSt);
    s.m.tlbi(0, vmid_all(true));
    s.m.write_desc(0, s.l3 + 16, OA_B | S2_PAGE);
    let (.., stage, _) = one_reuse(&s.m.take_violations());
    assert_eq!(stage, CleanStage::NeedsDsbAfterTlbi);
    // Broadcast TLBI completed only by DSB NSH.
    s.m.dsb(0, Dsb::Nsh);
    assert!(s.m.is_retired(s.l3));
    // TLBI from a CPU other than the unlinking one.
    let mut s = s2(2);
    s.m.write_desc(0, s.l2, 0);
    s.m.dsb(0, Dsb::Ish);
    s.m.tlbi(1, vmid_all(true));
    s.m.dsb(1, Dsb::Ish);
    assert!(s.m.is_retired(s.l3));
}

/// (e) The correct sequence: clear the table entry, DSB, broadcast TLBI
/// covering the whole range, DSB ISH, then free and reuse. No violation, for
/// each covering form and with several CPUs.
#[test]
fn correct_sequence_then_free_and_reuse_is_clean() {
    for cpus in [1, 2, 4] {
        for (i, op) in [
            vmid_all(true),
            Tlbi::Stage2Range {
                vmid: VMID,
                ipa: IPA,
                size: 2 << 20,
                broadcast: true,
            },
            Tlbi::Stage2Range {
                vmid: VMID,
                ipa: 0,
                size: 1 << 40,
                broadcast: true,
            },
        ]
        .into_iter()
        .enumerate()
        {
            let mut s = s2(cpus);
            let cpu = cpus - 1;
            for c in 0..cpus {
                s.m.translate(c, s.t, IPA).unwrap();
            }
            s.m.write_desc(cpu, s.l2, 0);
            s.m.dsb(cpu, if i % 2 == 0 { Dsb::IshSt } else { Dsb::Ish });
            s.m.tlbi(cpu, op);
            assert!(s.m.is_retired(s.l3));
            s.m.dsb(cpu, Dsb::Ish);
            assert!(s.m.retired_pages().is_empty(), "{cpus} cpus, {op:?}");
            s.m.free_pages(s.l3, 1);
            // Reuse: the allocator hands the same page back; fill it and link
            // it under another entry.
            let p = s.m.alloc_pages(1, 1).unwrap();
            assert_eq!(p, s.l3);
            s.m.write_desc(cpu, p, OA_B | S2_PAGE);
            s.m.dsb(cpu, Dsb::IshSt);
            s.m.write_desc(cpu, s.l2 + 8, p | TABLE);
            assert_eq!(s.m.violations(), &[], "{cpus} cpus, {op:?}");
            assert_eq!(s.m.unclean_count(), 0);
            for c in 0..cpus {
                assert!(s.m.translate(c, s.t, IPA).is_err(), "cpu {c} stale");
                assert_eq!(s.m.translate(c, s.t, IPA + (2 << 20)).unwrap().oa, OA_B);
            }
        }
    }
}

/// The same for the EL2 stage-1 regime with TLBI ALLE2IS.
#[test]
fn el2_correct_sequence_is_clean_and_local_alle2_is_not() {
    for broadcast in [true, false] {
        let mut mem = PhysMem::new(0x8000_0000, 1 << 20);
        let root = mem.alloc_pages(1, 1).unwrap();
        let l2 = mem.alloc_pages(1, 1).unwrap();
        mem.write_u64(root, l2 | TABLE);
        mem.write_u64(l2 + 8, 0x20_0000 | 0x701);
        let mut m = Machine::new(mem, 2);
        m.register_table(
            root,
            Regime::El2Stage1 {
                va_bits: 39,
                mair: 0xff,
            },
            None,
        );
        m.write_desc(1, root, 0);
        m.dsb(1, Dsb::IshSt);
        m.tlbi(1, Tlbi::El2All { broadcast });
        m.dsb(1, Dsb::Ish);
        m.free_pages(l2, 1);
        assert_eq!(m.violations().len(), usize::from(!broadcast), "broadcast {broadcast}");
    }
}

/// (f) Unlinking a level-1 entry whose L2 table points at two L3 tables
/// retires all three pages, pending the level-1 entry.
#[test]
fn nested_unlink_retires_the_whole_subtree() {
    let mut s = s2(2);
    let l3b = s.m.alloc_pages(1, 1).unwrap();
    s.m.write_desc(0, l3b, OA_B | S2_PAGE);
    s.m.dsb(0, Dsb::IshSt);
    s.m.write_desc(0, s.l2 + 8, l3b | TABLE);
    // A block entry below the L2 table retires nothing extra.
    s.m.write_desc(0, s.l2 + 16, 0x6000_0000 | S2_BLOCK);
    let re = s.root + 8;
    s.m.write_desc(0, re, 0);
    assert_eq!(s.m.retired_pages(), {
        let mut v = vec![s.l2, s.l3, l3b];
        v.sort_unstable();
        v
    });
    // Writing into the deepest page names the level-1 entry as the one
    // pending.
    s.m.write_desc(0, l3b + 8, OA_A | S2_PAGE);
    let (_, page, _, parent_pa, level, ia, ..) = one_reuse(&s.m.take_violations());
    assert_eq!((page, parent_pa, level, ia), (l3b, re, 1, IPA));
    // Cleaning the L2 range only (not the 1 GiB level-1 range) is not enough.
    s.m.dsb(0, Dsb::Ish);
    s.m.tlbi(
        0,
        Tlbi::Stage2Range {
            vmid: VMID,
            ipa: IPA,
            size: 2 << 20,
            broadcast: true,
        },
    );
    s.m.dsb(0, Dsb::Ish);
    assert_eq!(s.m.retired_pages().len(), 3);
    s.m.tlbi(
        0,
        Tlbi::Stage2Range {
            vmid: VMID,
            ipa: IPA,
            size: 1 << 30,
            broadcast: true,
        },
    );
    s.m.dsb(0, Dsb::Ish);
    assert!(s.m.retired_pages().is_empty());
    for p in [s.l3, l3b, s.l2] {
        s.m.free_pages(p, 1);
    }
    assert_eq!(s.m.violations(), &[]);
}

/// Putting the same table back where it was unlinked from is not a reuse (a
/// stale walk-cache entry would point at the same page); the location's own
/// check still reports the missing invalidation. The whole subtree is
/// released, nested pages included.
#[test]
fn relinking_at_the_same_entry_releases_the_subtree() {
    let mut s = s2(2);
    let re = s.root + 8;
    s.m.write_desc(0, re, 0);
    s.m.dsb(0, Dsb::Ish);
    assert_eq!(s.m.retired_pages().len(), 2);
    s.m.write_desc(0, re, s.l2 | TABLE);
    assert!(
        matches!(
            s.m.take_violations()[..],
            [Violation::InvalidUncleanToValid { level: 1, .. }]
        ),
        "only the location's own violation"
    );
    assert!(s.m.retired_pages().is_empty());
    // Live again: ordinary break-before-make applies, no retirement check.
    s.m.write_desc(0, s.l3 + 8, OA_B | S2_PAGE);
    assert_eq!(s.m.violations(), &[]);
}

/// Rewriting the unlinked entry before its invalidation completes (itself a
/// violation) does not release the old table: walk caches may still hold the
/// old pointer, so the page keeps waiting for a covering TLBI.
#[test]
fn rewriting_the_entry_early_keeps_the_old_table_retired() {
    let mut s = s2(2);
    s.m.write_desc(0, s.l2, 0);
    s.m.dsb(0, Dsb::Ish);
    s.m.write_desc(0, s.l2, 0x6000_0000 | S2_BLOCK);
    assert!(matches!(
        s.m.take_violations()[..],
        [Violation::InvalidUncleanToValid { .. }]
    ));
    assert!(!s.m.is_unclean(s.l2));
    assert!(s.m.is_retired(s.l3));
    s.m.free_pages(s.l3, 1);
    assert_eq!(one_reuse(&s.m.take_violations()).2, Reuse::Free);
}

/// A table replaced valid-to-valid (itself a violation) retires the old table
/// too, and the retirement runs its own cleaning sequence.
#[test]
fn valid_to_valid_table_replacement_retires_the_old_table() {
    let mut s = s2(2);
    s.m.write_desc(1, s.l2, 0x6000_0000 | S2_BLOCK);
    assert!(matches!(s.m.take_violations()[..], [Violation::ValidToValid { .. }]));
    assert!(s.m.is_retired(s.l3));
    s.m.dsb(1, Dsb::IshSt);
    s.m.tlbi(1, vmid_all(true));
    s.m.dsb(1, Dsb::Ish);
    assert!(!s.m.is_retired(s.l3));
    s.m.free_pages(s.l3, 1);
    assert_eq!(s.m.violations(), &[]);
}

/// A table shared by two stage-2 tables (two VMIDs) must be invalidated in
/// both before its pages are free.
#[test]
fn shared_subtree_needs_invalidation_in_every_table() {
    let mut s = s2(1);
    let t2 = s.m.register_table(s.root, s2_regime(), Some(7));
    s.m.write_desc(0, s.l2, 0);
    s.m.dsb(0, Dsb::Ish);
    s.m.tlbi(0, vmid_all(true));
    s.m.dsb(0, Dsb::Ish);
    assert!(s.m.is_retired(s.l3), "VMID 7 may still walk through it");
    s.m.tlbi(
        0,
        Tlbi::Stage2Vmid {
            vmid: 7,
            broadcast: true,
        },
    );
    s.m.dsb(0, Dsb::Ish);
    assert!(!s.m.is_retired(s.l3));
    // Relinking at the same entry in both tables releases both retirements.
    let mut s = s2(1);
    s.m.register_table(s.root, s2_regime(), Some(7));
    s.m.write_desc(0, s.l2, 0);
    s.m.write_desc(0, s.l2, s.l3 | TABLE);
    assert!(s.m.retired_pages().is_empty());
    assert!(s
        .m
        .take_violations()
        .iter()
        .all(|v| matches!(v, Violation::InvalidUncleanToValid { .. })));
    let _ = t2;
}

/// Unregistering a table (its VMID retired) drops its retirements.
#[test]
fn unregister_drops_retirements() {
    let mut s = s2(2);
    s.m.write_desc(0, s.l2, 0);
    assert!(s.m.is_retired(s.l3));
    s.m.unregister_table(s.t);
    assert!(!s.m.is_retired(s.l3));
    s.m.free_pages(s.l3, 1);
    assert_eq!(s.m.violations(), &[]);
}
