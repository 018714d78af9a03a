//! Break-before-make checker and TLB model tests.
//!
//! Descriptor values are raw numbers (see tests/walk.rs for the bit layout).

use warden_archmodel::*;

const TABLE: u64 = 0b11;
/// Stage-2 page, Normal WB, RW, inner shareable, AF.
const S2_PAGE: u64 = 0x7ff;
/// Stage-2 block, same attributes.
const S2_BLOCK: u64 = 0x7fd;
/// EL2 stage-1 page, AttrIndx 0, RW, inner shareable, AF.
const S1_PAGE: u64 = 0x703;

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

impl S2 {
    fn leaf(&self) -> u64 {
        self.l3
    }
}

/// Stage 2, ipa 40, start level 1 (two concatenated root pages), with
/// IPA -> OA_A mapped by a page; published through the checker in the
/// correct order (children first), so no violation.
fn s2(cpus: usize) -> S2 {
    let mut mem = PhysMem::new(0x4000_0000, 16 << 20);
    let root = mem.alloc_pages(2, 2).unwrap();
    let l2 = mem.alloc_pages(1, 1).unwrap();
    let l3 = mem.alloc_pages(1, 1).unwrap();
    let mut m = Machine::new(mem, cpus);
    let t = m.register_table(
        root,
        Regime::Stage2 {
            ipa_bits: 40,
            start_level: 1,
            fwb: false,
        },
        Some(VMID),
    );
    assert!(m.is_tracked(root) && m.is_tracked(root + 8191 - 7));
    assert!(!m.is_tracked(l2));
    m.write_desc(0, l3, OA_A | S2_PAGE);
    m.write_desc(0, l2, l3 | TABLE);
    m.dsb(0, Dsb::IshSt);
    m.write_desc(0, root + 8, l2 | TABLE);
    assert!(m.is_tracked(l2) && m.is_tracked(l3 + 511 * 8));
    assert!(m.violations().is_empty());
    S2 { m, t, root, l2, l3 }
}

fn tlbi_ipa(ipa: u64, level: Option<u8>, broadcast: bool) -> Tlbi {
    Tlbi::Stage2Ipa {
        vmid: VMID,
        ipa,
        level,
        last_level: true,
        broadcast,
    }
}

#[test]
fn correct_bbm_sequence_cleans_every_cpu() {
    let mut s = s2(4);
    for cpu in 0..4 {
        assert_eq!(s.m.translate(cpu, s.t, IPA + 0x123).unwrap().oa, OA_A + 0x123);
    }
    s.m.reset_stats();
    let loc = s.leaf();
    s.m.write_desc(0, loc, 0);
    assert!(s.m.is_unclean(loc));
    s.m.dsb(0, Dsb::Ish);
    s.m.tlbi(0, tlbi_ipa(IPA, Some(3), true));
    s.m.dsb(0, Dsb::Ish);
    assert!(!s.m.is_unclean(loc));
    assert_eq!(s.m.unclean_count(), 0);
    s.m.write_desc(0, loc, OA_B | S2_PAGE);
    assert_eq!(s.m.violations(), &[]);
    for cpu in 0..4 {
        assert_eq!(
            s.m.translate(cpu, s.t, IPA + 0x123).unwrap().oa,
            OA_B + 0x123,
            "cpu {cpu} stale"
        );
    }
    let st = s.m.stats();
    assert_eq!(
        (st.tlbi, st.tlbi_broadcast, st.tlbi_s2_ipa, st.dsb_ish, st.writes),
        (1, 1, 1, 2, 2)
    );
    assert_eq!(st.tlb_misses, 4);
}

#[test]
fn missing_tlbi_is_caught_and_leaves_stale_tlb() {
    let mut s = s2(2);
    assert_eq!(s.m.translate(1, s.t, IPA).unwrap().oa, OA_A);
    let loc = s.leaf();
    s.m.write_desc(0, loc, 0);
    s.m.dsb(0, Dsb::Ish);
    s.m.dsb(0, Dsb::Ish);
    s.m.write_desc(0, loc, OA_B | S2_PAGE);
    let v = s.m.take_violations();
    assert_eq!(v.len(), 1);
    match &v[0] {
        Violation::InvalidUncleanToValid {
            pa,
            old_valid,
            new,
            stage,
            unclean_cpus,
            level,
            ia,
            ..
        } => {
            assert_eq!(
                (*pa, *old_valid, *new, *level, *ia),
                (loc, OA_A | S2_PAGE, OA_B | S2_PAGE, 3, IPA)
            );
            assert_eq!(*stage, CleanStage::NeedsTlbi);
            assert_eq!(unclean_cpus, &vec![0, 1]);
        }
        other => panic!("unexpected {other:?}"),
    }
    // CPU 1 still uses the old translation; memory says otherwise.
    assert_eq!(s.m.translate(1, s.t, IPA + 8).unwrap().oa, OA_A + 8);
    assert_eq!(s.m.walk(s.t, IPA + 8).unwrap().oa, OA_B + 8);
    assert_eq!(s.m.translate(0, s.t, IPA + 8).unwrap().oa, OA_B + 8);
}

/// The EL2 fixmap bug from seed 002: local invalidation of an entry in a
/// stage-1 table shared by all CPUs.
#[test]
fn local_tlbi_with_several_cpus_is_caught() {
    let mut mem = PhysMem::new(0, 1 << 20);
    let pages: Vec<u64> = (0..4).map(|_| mem.alloc_pages(1, 1).unwrap()).collect();
    let (l0, l1, l2, l3) = (pages[0], pages[1], pages[2], pages[3]);
    mem.write_u64(l0, l1 | TABLE);
    mem.write_u64(l1, l2 | TABLE);
    mem.write_u64(l2, l3 | TABLE);
    let slot_va = 0x5000u64;
    let slot = l3 + 5 * 8;
    mem.write_u64(slot, 0x8_0000 | S1_PAGE);
    let mut m = Machine::new(mem, 2);
    let t = m.register_table(
        l0,
        Regime::El2Stage1 {
            va_bits: 48,
            mair: 0xff,
        },
        None,
    );
    assert!(m.is_tracked(slot));
    assert_eq!(m.translate(1, t, slot_va).unwrap().oa, 0x8_0000);

    // fixmap_clear_slot as first posted: local maintenance only.
    m.write_desc(0, slot, (0x8_0000 | S1_PAGE) & !1);
    m.dsb(0, Dsb::IshSt);
    m.tlbi(
        0,
        Tlbi::El2Va {
            va: slot_va,
            level: Some(3),
            last_level: true,
            broadcast: false,
        },
    );
    m.dsb(0, Dsb::Nsh);
    m.isb(0);
    // CPU 1 can still use the old slot mapping.
    assert_eq!(m.translate(1, t, slot_va).unwrap().oa, 0x8_0000);
    assert!(m.is_unclean(slot));
    m.write_desc(0, slot, 0x9_0000 | S1_PAGE);
    let v = m.take_violations();
    assert_eq!(v.len(), 1);
    match &v[0] {
        Violation::InvalidUncleanToValid {
            unclean_cpus, stage, ..
        } => {
            assert_eq!(unclean_cpus, &vec![1]);
            assert_eq!(*stage, CleanStage::NeedsTlbi);
        }
        other => panic!("unexpected {other:?}"),
    }

    // The fixed sequence: broadcast TLBI and DSB ISH.
    m.write_desc(0, slot, 0);
    m.dsb(0, Dsb::IshSt);
    m.tlbi(
        0,
        Tlbi::El2Va {
            va: slot_va,
            level: Some(3),
            last_level: true,
            broadcast: true,
        },
    );
    m.dsb(0, Dsb::Ish);
    m.isb(0);
    m.write_desc(0, slot, 0xa_0000 | S1_PAGE);
    assert_eq!(m.violations(), &[]);
    assert_eq!(m.translate(1, t, slot_va).unwrap().oa, 0xa_0000);
}

#[test]
fn local_tlbi_with_one_cpu_is_enough() {
    let mut s = s2(1);
    let loc = s.leaf();
    s.m.write_desc(0, loc, 0);
    s.m.dsb(0, Dsb::IshSt);
    s.m.tlbi(0, tlbi_ipa(IPA, Some(3), false));
    s.m.dsb(0, Dsb::Nsh);
    s.m.write_desc(0, loc, OA_B | S2_PAGE);
    assert_eq!(s.m.violations(), &[]);
}

#[test]
fn broadcast_tlbi_completed_by_dsb_nsh_is_not_enough() {
    let mut s = s2(2);
    let loc = s.leaf();
    s.m.write_desc(0, loc, 0);
    s.m.dsb(0, Dsb::Ish);
    s.m.tlbi(0, tlbi_ipa(IPA, Some(3), true));
    s.m.dsb(0, Dsb::Nsh);
    s.m.write_desc(0, loc, OA_B | S2_PAGE);
    assert!(matches!(
        s.m.take_violations()[..],
        [Violation::InvalidUncleanToValid {
            stage: CleanStage::NeedsDsbAfterTlbi,
            ..
        }]
    ));
}

#[test]
fn missing_dsb_between_invalidation_and_tlbi_is_caught() {
    let mut s = s2(2);
    let loc = s.leaf();
    s.m.write_desc(0, loc, 0);
    s.m.tlbi(0, tlbi_ipa(IPA, Some(3), true));
    s.m.dsb(0, Dsb::Ish);
    s.m.write_desc(0, loc, OA_B | S2_PAGE);
    assert!(matches!(
        s.m.take_violations()[..],
        [Violation::InvalidUncleanToValid { .. }]
    ));
}

#[test]
fn missing_dsb_after_tlbi_is_caught() {
    let mut s = s2(2);
    let loc = s.leaf();
    s.m.write_desc(0, loc, 0);
    s.m.dsb(0, Dsb::Ish);
    s.m.tlbi(0, tlbi_ipa(IPA, Some(3), true));
    s.m.write_desc(0, loc, OA_B | S2_PAGE);
    assert!(matches!(
        s.m.take_violations()[..],
        [Violation::InvalidUncleanToValid {
            stage: CleanStage::NeedsDsbAfterTlbi,
            ..
        }]
    ));
}

#[test]
fn tlbi_wrong_address_level_or_vmid_is_caught() {
    let wrong = [
        tlbi_ipa(IPA + 0x1000, Some(3), true), // next page
        tlbi_ipa(IPA, Some(2), true),          // wrong TTL hint
        Tlbi::Stage2Vmid {
            vmid: VMID + 1,
            broadcast: true,
        }, // other VMID
        Tlbi::El2All { broadcast: true },      // other regime
        Tlbi::Stage2Range {
            vmid: VMID,
            ipa: IPA + 0x1000,
            size: 0x10000,
            broadcast: true,
        },
    ];
    for op in wrong {
        let mut s = s2(2);
        s.m.translate(1, s.t, IPA).unwrap();
        let loc = s.leaf();
        s.m.write_desc(0, loc, 0);
        s.m.dsb(0, Dsb::Ish);
        s.m.tlbi(0, op);
        s.m.dsb(0, Dsb::Ish);
        s.m.write_desc(0, loc, OA_B | S2_PAGE);
        assert_eq!(s.m.take_violations().len(), 1, "{op:?} should not clean");
        assert_eq!(
            s.m.translate(1, s.t, IPA).unwrap().oa,
            OA_A,
            "{op:?} should leave CPU 1 stale"
        );
    }
    let right = [
        tlbi_ipa(IPA + 0xfff, None, true),
        Tlbi::Stage2Ipa {
            vmid: VMID,
            ipa: IPA,
            level: Some(3),
            last_level: false,
            broadcast: true,
        },
        Tlbi::Stage2Vmid {
            vmid: VMID,
            broadcast: true,
        },
        Tlbi::Stage2Range {
            vmid: VMID,
            ipa: IPA - 0x1000,
            size: 0x2000,
            broadcast: true,
        },
    ];
    for op in right {
        let mut s = s2(2);
        s.m.translate(1, s.t, IPA).unwrap();
        let loc = s.leaf();
        s.m.write_desc(0, loc, 0);
        s.m.dsb(0, Dsb::Ish);
        s.m.tlbi(0, op);
        s.m.dsb(0, Dsb::Ish);
        s.m.write_desc(0, loc, OA_B | S2_PAGE);
        assert_eq!(s.m.violations(), &[], "{op:?} should clean");
        assert_eq!(s.m.translate(1, s.t, IPA).unwrap().oa, OA_B);
    }
}

#[test]
fn tlbi_from_another_cpu_does_not_count() {
    let mut s = s2(2);
    let loc = s.leaf();
    s.m.write_desc(0, loc, 0);
    s.m.dsb(0, Dsb::Ish);
    s.m.tlbi(1, tlbi_ipa(IPA, Some(3), true));
    s.m.dsb(1, Dsb::Ish);
    s.m.write_desc(0, loc, OA_B | S2_PAGE);
    assert_eq!(s.m.take_violations().len(), 1);
}

#[test]
fn valid_to_valid_changes() {
    let mut s = s2(2);
    let loc = s.leaf();
    let old = OA_A | S2_PAGE;
    // Allowed in place: permissions (S2AP, XN), AF, software bits.
    for new in [
        old & !(1 << 7),             // drop write
        old | (1 << 54) | (1 << 53), // XN
        old & !(1 << 10),            // AF clear
        old | (0b1111 << 55),        // software bits
    ] {
        s.m.write_desc(0, loc, new);
        s.m.write_desc(0, loc, old);
    }
    assert_eq!(s.m.violations(), &[]);
    // Needs break-before-make: OA, MemAttr, SH, contiguous.
    for new in [
        OA_B | S2_PAGE,
        old & !(0xf << 2) | (0b0001 << 2),
        old & !(3 << 8),
        old | (1 << 52),
    ] {
        s.m.write_desc(1, loc, new);
        let v = s.m.take_violations();
        assert_eq!(v.len(), 1, "{new:#x}");
        match &v[0] {
            Violation::ValidToValid {
                cpu,
                pa,
                old: o,
                new: n,
                ..
            } => {
                assert_eq!((*cpu, *pa, *o, *n), (1, loc, old, new));
            }
            other => panic!("unexpected {other:?}"),
        }
        s.m.write_desc(1, loc, old);
        s.m.take_violations();
    }
}

#[test]
fn invalid_to_invalid_and_untracked_writes_are_fine() {
    let mut s = s2(2);
    let loc = s.leaf();
    // Annotation in an invalid entry (bit 0 clear), changed freely.
    s.m.write_desc(0, loc + 8, 0xabc0_0000_0000_0000);
    s.m.write_desc(0, loc + 8, 0x1234_0000_0000_0400);
    s.m.write_desc(0, loc + 8, 0);
    // Write into a page no live table reaches.
    let spare = s.m.mem.alloc_pages(1, 1).unwrap();
    s.m.write_desc(0, spare, OA_A | S2_PAGE);
    s.m.write_desc(0, spare, OA_B | S2_PAGE);
    assert_eq!(s.m.violations(), &[]);
    // An invalid-to-invalid write (a "locked" marker) over an unclean entry
    // keeps it unclean.
    s.m.write_desc(0, loc, 0);
    s.m.write_desc(0, loc, 1 << 10);
    assert!(s.m.is_unclean(loc));
    s.m.dsb(0, Dsb::Ish);
    s.m.tlbi(0, tlbi_ipa(IPA, Some(3), true));
    s.m.dsb(0, Dsb::Ish);
    assert!(!s.m.is_unclean(loc));
    // Five here plus the publishing root write in s2().
    assert_eq!(s.m.stats().tracked_writes, 6);
}

#[test]
fn block_replaced_by_table_without_bbm_is_caught() {
    let mut s = s2(2);
    // A 2 MiB block at IPA + 2 MiB (L2 index 1).
    let l2e = s.l2 + 8;
    s.m.write_desc(0, l2e, 0x6000_0000 | S2_BLOCK);
    assert_eq!(s.m.translate(1, s.t, IPA + 0x20_0000 + 0x5000).unwrap().oa, 0x6000_5000);
    let new_l3 = s.m.mem.alloc_pages(1, 1).unwrap();
    for i in 0..512u64 {
        s.m.write_desc(0, new_l3 + i * 8, (0x6000_0000 + i * 0x1000) | S2_PAGE);
    }
    assert!(s.m.violations().is_empty());
    s.m.write_desc(0, l2e, new_l3 | TABLE);
    assert!(matches!(
        s.m.take_violations()[..],
        [Violation::ValidToValid {
            level: 2,
            ia: 0x4020_0000,
            ..
        }]
    ));
    // The new table is now live.
    assert!(s.m.is_tracked(new_l3 + 0x100));

    // The correct split: break, clean the whole 2 MiB range, make.
    let l2e2 = s.l2 + 16;
    s.m.write_desc(0, l2e2, 0x6020_0000 | S2_BLOCK);
    let l3b = s.m.mem.alloc_pages(1, 1).unwrap();
    for i in 0..512u64 {
        s.m.write_desc(0, l3b + i * 8, (0x6020_0000 + i * 0x1000) | S2_PAGE);
    }
    s.m.write_desc(0, l2e2, 0);
    s.m.dsb(0, Dsb::Ish);
    s.m.tlbi(0, tlbi_ipa(IPA + 0x40_0000, Some(2), true));
    s.m.dsb(0, Dsb::Ish);
    s.m.write_desc(0, l2e2, l3b | TABLE);
    assert_eq!(s.m.violations(), &[]);
}

#[test]
fn table_unlink_needs_whole_range_invalidation() {
    // Unlink the L2 table (root entry 1, covering 1 GiB), invalidate by IPA
    // only, relink: caught.
    let mut s = s2(2);
    s.m.translate(1, s.t, IPA).unwrap();
    let re = s.root + 8;
    s.m.write_desc(0, re, 0);
    assert!(!s.m.is_tracked(s.l2), "detached subtree is no longer tracked");
    assert!(!s.m.is_tracked(s.l3));
    s.m.dsb(0, Dsb::Ish);
    s.m.tlbi(
        0,
        Tlbi::Stage2Ipa {
            vmid: VMID,
            ipa: IPA,
            level: None,
            last_level: false,
            broadcast: true,
        },
    );
    s.m.dsb(0, Dsb::Ish);
    s.m.write_desc(0, re, s.l2 | TABLE);
    let v = s.m.take_violations();
    assert!(
        matches!(
            v[..],
            [Violation::InvalidUncleanToValid {
                level: 1,
                ia: IPA,
                stage: CleanStage::NeedsTlbi,
                ..
            }]
        ),
        "{v:?}"
    );
    assert!(s.m.is_tracked(s.l3), "relinked subtree is tracked again");

    // A last-level TLBI by IPA does not cover a table entry either, nor does
    // a range covering only part of it.
    for op in [
        tlbi_ipa(IPA, None, true),
        Tlbi::Stage2Range {
            vmid: VMID,
            ipa: IPA,
            size: 0x2000_0000,
            broadcast: true,
        },
    ] {
        s.m.write_desc(0, re, 0);
        s.m.dsb(0, Dsb::Ish);
        s.m.tlbi(0, op);
        s.m.dsb(0, Dsb::Ish);
        s.m.write_desc(0, re, s.l2 | TABLE);
        assert_eq!(s.m.take_violations().len(), 1, "{op:?}");
    }

    // Whole-VMID or whole-range invalidation is fine.
    for op in [
        Tlbi::Stage2Vmid {
            vmid: VMID,
            broadcast: true,
        },
        Tlbi::Stage2Range {
            vmid: VMID,
            ipa: IPA,
            size: 0x4000_0000,
            broadcast: true,
        },
    ] {
        s.m.write_desc(0, re, 0);
        s.m.dsb(0, Dsb::Ish);
        s.m.tlbi(0, op);
        s.m.dsb(0, Dsb::Ish);
        s.m.write_desc(0, re, s.l2 | TABLE);
        assert_eq!(s.m.violations(), &[], "{op:?}");
    }
}

#[test]
fn detached_subtree_writes_are_unchecked_and_reattach_reads_current_state() {
    let mut s = s2(2);
    let re = s.root + 8;
    s.m.write_desc(0, re, 0);
    s.m.dsb(0, Dsb::Ish);
    s.m.tlbi(
        0,
        Tlbi::Stage2Vmid {
            vmid: VMID,
            broadcast: true,
        },
    );
    s.m.dsb(0, Dsb::Ish);
    // Rewrite the detached leaf valid-to-valid: not live, not checked.
    s.m.write_desc(0, s.l3, OA_B | S2_PAGE);
    assert_eq!(s.m.violations(), &[]);
    s.m.write_desc(0, re, s.l2 | TABLE);
    assert_eq!(s.m.violations(), &[]);
    assert_eq!(s.m.translate(1, s.t, IPA).unwrap().oa, OA_B);
    // And it is live again: a valid-to-valid change is now caught.
    s.m.write_desc(0, s.l3, OA_A | S2_PAGE);
    assert_eq!(s.m.take_violations().len(), 1);
}

#[test]
fn tlb_staleness_and_af() {
    let mut s = s2(2);
    assert_eq!(s.m.tlb_len(1), 0);
    assert_eq!(s.m.translate(1, s.t, IPA + 0x10).unwrap().oa, OA_A + 0x10);
    assert_eq!(s.m.tlb_len(1), 1);
    // Change the mapping with BBM but without any TLBI: cpu 1 is stale.
    s.m.write_desc(0, s.l3, 0);
    s.m.dsb(0, Dsb::Ish);
    s.m.write_desc(0, s.l3, OA_B | S2_PAGE);
    assert_eq!(s.m.translate(1, s.t, IPA + 0x10).unwrap().oa, OA_A + 0x10);
    assert_eq!(s.m.stats().tlb_hits, 1);
    assert_eq!(s.m.walk(s.t, IPA + 0x10).unwrap().oa, OA_B + 0x10);
    // A local TLBI on CPU 0 does not help CPU 1.
    s.m.tlbi(0, tlbi_ipa(IPA, Some(3), false));
    assert_eq!(s.m.translate(1, s.t, IPA).unwrap().oa, OA_A);
    s.m.tlbi(0, tlbi_ipa(IPA, Some(3), true));
    assert_eq!(s.m.translate(1, s.t, IPA).unwrap().oa, OA_B);
    // Entries with AF = 0 or faulting are never cached.
    s.m.write_desc(0, s.l3 + 8, 0x7000_0000 | (S2_PAGE & !(1 << 10)));
    let t = s.m.translate(1, s.t, IPA + 0x1000).unwrap();
    assert!(!t.af);
    assert_eq!(
        check_access(&t, Access::Read),
        Err(Fault {
            level: 3,
            kind: FaultKind::AccessFlag
        })
    );
    assert!(s.m.translate(1, s.t, IPA + 0x2000).is_err());
    assert_eq!(s.m.tlb_len(1), 1);
    // Blocks are cached whole.
    s.m.write_desc(0, s.l2 + 8, 0x6000_0000 | S2_BLOCK);
    s.m.translate(1, s.t, IPA + 0x20_0000).unwrap();
    let before = s.m.stats().tlb_hits;
    assert_eq!(s.m.translate(1, s.t, IPA + 0x3f_f008).unwrap().oa, 0x601f_f008);
    assert_eq!(s.m.stats().tlb_hits, before + 1);
}

#[test]
fn el2_all_and_unregister() {
    let mut mem = PhysMem::new(0x8000_0000, 1 << 20);
    let root = mem.alloc_pages(1, 1).unwrap();
    let l2 = mem.alloc_pages(1, 1).unwrap();
    // va_bits 39: root at level 1.
    mem.write_u64(root, l2 | TABLE);
    mem.write_u64(l2 + 8, 0x20_0000 | 0x701);
    let mut m = Machine::new(mem, 3);
    let t = m.register_table(
        root,
        Regime::El2Stage1 {
            va_bits: 39,
            mair: 0xff,
        },
        None,
    );
    assert!(m.is_tracked(root + 511 * 8) && m.is_tracked(l2 + 8));
    for cpu in 0..3 {
        m.translate(cpu, t, 0x20_1234).unwrap();
    }
    // Unlink the level-1 table entry; ALLE2IS cleans it.
    m.write_desc(2, root, 0);
    m.dsb(2, Dsb::Ish);
    m.tlbi(2, Tlbi::El2All { broadcast: true });
    m.dsb(2, Dsb::Ish);
    assert_eq!(m.unclean_count(), 0);
    assert!((0..3).all(|c| m.tlb_len(c) == 0));
    m.write_desc(2, root, l2 | TABLE);
    assert_eq!(m.violations(), &[]);
    m.unregister_table(t);
    assert!(!m.is_tracked(root) && !m.is_tracked(l2));
    // Writes are now unchecked.
    m.write_desc(0, l2 + 8, 0x40_0000 | 0x701);
    assert_eq!(m.violations(), &[]);
    // 3 writes, 2 DSBs, 1 TLBI (translations are not logged).
    assert_eq!(m.events().len(), 6);
}

#[test]
fn shared_location_in_two_tables_needs_cleaning_in_both() {
    // An SMMU-style second stage-2 (other VMID) sharing the same root.
    let mut s = s2(1);
    let t2 = s.m.register_table(
        s.root,
        Regime::Stage2 {
            ipa_bits: 40,
            start_level: 1,
            fwb: false,
        },
        Some(7),
    );
    s.m.write_desc(0, s.l3, 0);
    s.m.dsb(0, Dsb::Ish);
    s.m.tlbi(0, tlbi_ipa(IPA, Some(3), true));
    s.m.dsb(0, Dsb::Ish);
    assert!(s.m.is_unclean(s.l3));
    s.m.tlbi(
        0,
        Tlbi::Stage2Vmid {
            vmid: 7,
            broadcast: true,
        },
    );
    s.m.dsb(0, Dsb::Ish);
    assert!(!s.m.is_unclean(s.l3));
    s.m.write_desc(0, s.l3, OA_B | S2_PAGE);
    assert_eq!(s.m.violations(), &[]);
    assert_eq!(s.m.translate(0, t2, IPA).unwrap().oa, OA_B);
}

/// Tiny deterministic PRNG (xorshift64*), so the randomized test needs no
/// dependency and is reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Random remapping under the correct discipline, with a random covering
/// TLBI each time: never a violation, everything ends clean, and every CPU's
/// TLB agrees with memory after each step.
#[test]
fn random_correct_sequences_are_clean_and_coherent() {
    for seed in 1..=8u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let cpus = 3;
        let mut s = s2(cpus);
        let l2 = s.l2;
        // L2 entries 1..8 cover IPA + 2 MiB * i.
        let mut l3_of: Vec<Option<u64>> = vec![None; 8];
        for step in 0..300 {
            let cpu = rng.below(cpus as u64) as usize;
            let i = 1 + rng.below(7);
            let loc = l2 + i * 8;
            let base = IPA + (i << 21);
            let old = s.m.read_desc(loc);
            let was_table = old & 3 == 3;
            // Either edit a page inside an existing L3 table, or replace the L2 entry.
            if was_table && rng.below(2) == 0 {
                let l3 = l3_of[i as usize].unwrap();
                let j = rng.below(512);
                let ploc = l3 + j * 8;
                if s.m.read_desc(ploc) & 1 == 1 {
                    s.m.write_desc(cpu, ploc, 0);
                    s.m.dsb(cpu, Dsb::IshSt);
                    let op = match rng.below(3) {
                        0 => tlbi_ipa(base + (j << 12) + rng.below(0x1000), Some(3), true),
                        1 => Tlbi::Stage2Range {
                            vmid: VMID,
                            ipa: base + (j << 12),
                            size: 0x1000,
                            broadcast: true,
                        },
                        _ => Tlbi::Stage2Vmid {
                            vmid: VMID,
                            broadcast: true,
                        },
                    };
                    s.m.tlbi(cpu, op);
                    s.m.dsb(cpu, Dsb::Ish);
                }
                if rng.below(3) != 0 {
                    s.m.write_desc(cpu, ploc, (0x7000_0000 + rng.below(0x1000) * 0x1000) | S2_PAGE);
                }
            } else {
                if old & 1 == 1 {
                    s.m.write_desc(cpu, loc, 0);
                    s.m.dsb(cpu, Dsb::Ish);
                    let op = if was_table {
                        match rng.below(2) {
                            0 => Tlbi::Stage2Range {
                                vmid: VMID,
                                ipa: base,
                                size: 2 << 20,
                                broadcast: true,
                            },
                            _ => Tlbi::Stage2Vmid {
                                vmid: VMID,
                                broadcast: true,
                            },
                        }
                    } else {
                        tlbi_ipa(
                            base + rng.below(2 << 20),
                            if rng.below(2) == 0 { Some(2) } else { None },
                            true,
                        )
                    };
                    s.m.tlbi(cpu, op);
                    s.m.dsb(cpu, Dsb::Ish);
                    if let Some(p) = l3_of[i as usize].take() {
                        s.m.mem.free_pages(p, 1);
                    }
                }
                match rng.below(3) {
                    0 => {}
                    1 => {
                        s.m.write_desc(cpu, loc, (0x6000_0000 + (rng.below(64) << 21)) | S2_BLOCK)
                    }
                    _ => {
                        let p = s.m.mem.alloc_pages(1, 1).unwrap();
                        for j in 0..512u64 {
                            if rng.below(2) == 0 {
                                s.m.write_desc(cpu, p + j * 8, (0x7000_0000 + j * 0x1000) | S2_PAGE);
                            }
                        }
                        s.m.dsb(cpu, Dsb::IshSt);
                        s.m.write_desc(cpu, loc, p | TABLE);
                        l3_of[i as usize] = Some(p);
                    }
                }
            }
            assert_eq!(s.m.violations(), &[], "seed {seed} step {step}");
            assert_eq!(s.m.unclean_count(), 0, "seed {seed} step {step}");
            for _ in 0..8 {
                let ia = IPA + (1 << 21) + rng.below(7 << 21);
                let c = rng.below(cpus as u64) as usize;
                assert_eq!(
                    s.m.translate(c, s.t, ia),
                    s.m.walk(s.t, ia),
                    "seed {seed} step {step} cpu {c} ia {ia:#x}"
                );
            }
        }
    }
}
