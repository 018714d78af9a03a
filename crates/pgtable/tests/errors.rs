//! Every error path of the engine, with the table checked unchanged after
//! each refusal.

use warden_pgtable::testutil::{ArenaMm, CountingTlb};
use warden_pgtable::{Annotation, Attrs, Error, MapPolicy, MemType, MmOps, PageTable, Perms, Regime};

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;

fn s2(ipa_bits: u8) -> PageTable<ArenaMm, CountingTlb> {
    let regime = Regime::Stage2 {
        ipa_bits,
        vmid: 1,
        fwb: true,
    };
    PageTable::new(regime, ArenaMm::new(0x8000_0000, 4096), CountingTlb::default()).unwrap()
}

fn s1() -> PageTable<ArenaMm, CountingTlb> {
    let regime = Regime::El2Stage1 { va_bits: 48 };
    PageTable::new(regime, ArenaMm::new(0x8000_0000, 4096), CountingTlb::default()).unwrap()
}

const RW: Attrs = Attrs::new(Perms::RW, MemType::NormalWb);

/// A cheap fingerprint of the whole translation of a few probe addresses.
fn snapshot(pt: &PageTable<ArenaMm, CountingTlb>, probes: &[u64]) -> Vec<(u64, u8)> {
    probes
        .iter()
        .map(|&a| pt.get_leaf(a).map(|(d, l)| (d.0, l)).unwrap())
        .collect()
}

#[test]
fn invalid_configs_are_refused() {
    for ipa_bits in [0, 31, 49, 64] {
        let r = Regime::Stage2 {
            ipa_bits,
            vmid: 0,
            fwb: false,
        };
        assert_eq!(r.geometry(), Err(Error::InvalidConfig), "ipa_bits {ipa_bits}");
    }
    for va_bits in [0, 24, 49] {
        let r = Regime::El2Stage1 { va_bits };
        assert_eq!(r.geometry(), Err(Error::InvalidConfig), "va_bits {va_bits}");
    }
    let r = Regime::Stage2 {
        ipa_bits: 20,
        vmid: 0,
        fwb: false,
    };
    let res = PageTable::new(r, ArenaMm::new(0, 16), CountingTlb::default());
    assert!(matches!(res, Err(Error::InvalidConfig)));
}

#[test]
fn root_allocation_failure_is_no_memory() {
    let mut mm = ArenaMm::new(0, 64);
    mm.set_limit(Some(8));
    // ipa 34 needs 16 concatenated root pages.
    let r = Regime::Stage2 {
        ipa_bits: 34,
        vmid: 0,
        fwb: false,
    };
    assert!(matches!(
        PageTable::new(r, mm, CountingTlb::default()),
        Err(Error::NoMemory)
    ));
}

#[test]
fn unaligned_arguments_are_refused() {
    let mut pt = s2(40);
    pt.map(0, 2 * MIB, 0, RW, MapPolicy::BLOCKS).unwrap();
    let probes = [0, MIB, 2 * MIB];
    let before = snapshot(&pt, &probes);
    assert_eq!(pt.map(1, 4096, 0, RW, MapPolicy::BLOCKS), Err(Error::Unaligned));
    assert_eq!(pt.map(0, 4095, 0, RW, MapPolicy::BLOCKS), Err(Error::Unaligned));
    assert_eq!(pt.map(0, 4096, 0x800, RW, MapPolicy::BLOCKS), Err(Error::Unaligned));
    assert_eq!(pt.unmap(0x10, 4096), Err(Error::Unaligned));
    assert_eq!(pt.unmap(0, 100), Err(Error::Unaligned));
    let ann = Annotation { owner: 1, meta: 0 };
    assert_eq!(pt.annotate(8, 4096, ann), Err(Error::Unaligned));
    assert_eq!(pt.wrprotect(1, 4096), Err(Error::Unaligned));
    assert_eq!(pt.relax_perms(0, 1, Perms::RWX), Err(Error::Unaligned));
    assert_eq!(pt.mkyoung(3, 4096), Err(Error::Unaligned));
    assert_eq!(pt.test_clear_young(3, 4096), Err(Error::Unaligned));
    assert_eq!(pt.split(0, 17), Err(Error::Unaligned));
    assert_eq!(snapshot(&pt, &probes), before);
}

#[test]
fn out_of_range_arguments_are_refused() {
    let mut pt = s2(40);
    let end = 1u64 << 40;
    pt.map(0, 4096, 0, RW, MapPolicy::BLOCKS).unwrap();
    let probes = [0, end - 4096];
    let before = snapshot(&pt, &probes);
    assert_eq!(pt.map(end, 4096, 0, RW, MapPolicy::BLOCKS), Err(Error::OutOfRange));
    assert_eq!(
        pt.map(end - 4096, 8192, 0, RW, MapPolicy::BLOCKS),
        Err(Error::OutOfRange)
    );
    // Wrapping sizes.
    assert_eq!(
        pt.map(4096, u64::MAX - 4095, 0, RW, MapPolicy::BLOCKS),
        Err(Error::OutOfRange)
    );
    assert_eq!(pt.unmap(4096, u64::MAX - 4095), Err(Error::OutOfRange));
    // Output beyond 48 bits.
    assert_eq!(pt.map(0, 4096, 1 << 48, RW, MapPolicy::BLOCKS), Err(Error::OutOfRange));
    assert_eq!(
        pt.map(0, 8192, (1 << 48) - 4096, RW, MapPolicy::BLOCKS),
        Err(Error::OutOfRange)
    );
    assert_eq!(pt.unmap(end, 4096), Err(Error::OutOfRange));
    assert_eq!(
        pt.annotate(end, 4096, Annotation { owner: 1, meta: 0 }),
        Err(Error::OutOfRange)
    );
    assert_eq!(pt.get_leaf(end), Err(Error::OutOfRange));
    assert_eq!(pt.wrprotect(end - 4096, 8192), Err(Error::OutOfRange));
    assert_eq!(pt.split(end, 4096), Err(Error::OutOfRange));
    assert_eq!(snapshot(&pt, &probes), before);
}

#[test]
fn forbidden_attributes_are_refused() {
    let mut pt = s1();
    let wx = Attrs::new(Perms::RWX, MemType::NormalWb);
    assert_eq!(pt.map(0, 4096, 0, wx, MapPolicy::BLOCKS), Err(Error::InvalidAttrs));
    let dev_x = Attrs::new(Perms::RX, MemType::Device);
    assert_eq!(pt.map(0, 4096, 0, dev_x, MapPolicy::BLOCKS), Err(Error::InvalidAttrs));
    let no_read = Attrs::new(Perms::NONE, MemType::NormalWb);
    assert_eq!(pt.map(0, 4096, 0, no_read, MapPolicy::BLOCKS), Err(Error::InvalidAttrs));
    let as_s1 = Attrs::new(Perms::R, MemType::AsStage1);
    assert_eq!(pt.map(0, 4096, 0, as_s1, MapPolicy::BLOCKS), Err(Error::InvalidAttrs));
    let bad_sw = Attrs { sw: 16, ..RW };
    assert_eq!(pt.map(0, 4096, 0, bad_sw, MapPolicy::BLOCKS), Err(Error::InvalidAttrs));
    // Relaxing an RX page to W+X at stage 1 is refused and changes nothing.
    pt.map(0, 4096, 0, Attrs::new(Perms::RX, MemType::NormalWb), MapPolicy::BLOCKS)
        .unwrap();
    let before = pt.get_leaf(0).unwrap();
    assert_eq!(pt.relax_perms(0, 4096, Perms::RW), Err(Error::InvalidAttrs));
    assert_eq!(pt.get_leaf(0).unwrap(), before);
    // Stage 2: executable device memory.
    let mut pt = s2(40);
    assert_eq!(pt.map(0, 4096, 0, dev_x, MapPolicy::BLOCKS), Err(Error::InvalidAttrs));
    pt.map(0, 4096, 0, Attrs::new(Perms::RW, MemType::Device), MapPolicy::BLOCKS)
        .unwrap();
    assert_eq!(pt.relax_perms(0, 4096, Perms::RWX), Err(Error::InvalidAttrs));
}

#[test]
fn annotations_are_refused_by_unmap_and_map() {
    let mut pt = s2(40);
    pt.map(0, GIB, 0, RW, MapPolicy::BLOCKS).unwrap();
    let ann = Annotation { owner: 3, meta: 0x1234 };
    pt.annotate(5 * 4096, 4096, ann).unwrap();
    let probes = [0, 4 * 4096, 5 * 4096, 6 * 4096, 2 * MIB, GIB - 4096];
    let before = snapshot(&pt, &probes);
    assert_eq!(pt.unmap(0, GIB), Err(Error::Annotated));
    assert_eq!(pt.unmap(5 * 4096, 4096), Err(Error::Annotated));
    assert_eq!(pt.map(0, 2 * MIB, 0, RW, MapPolicy::BLOCKS), Err(Error::Annotated));
    assert_eq!(snapshot(&pt, &probes), before);
    // An ownership transition may replace it.
    let policy = MapPolicy {
        replace_annotations: true,
        ..MapPolicy::BLOCKS
    };
    pt.map(0, 2 * MIB, 0, RW, policy).unwrap();
    assert_eq!(pt.get_leaf(5 * 4096).unwrap().1, 2, "remapped as one 2 MiB block");
    assert_eq!(pt.unmap(0, GIB), Ok(GIB));
}

#[test]
fn bad_annotations_are_refused() {
    let mut pt = s2(40);
    let zero_owner = Annotation { owner: 0, meta: 0 };
    assert_eq!(pt.annotate(0, 4096, zero_owner), Err(Error::InvalidAnnotation));
    let big_meta = Annotation {
        owner: 1,
        meta: 1 << 51,
    };
    assert_eq!(pt.annotate(0, 4096, big_meta), Err(Error::InvalidAnnotation));
    assert_eq!(pt.get_leaf(0).unwrap().0 .0, 0);
    let max = Annotation {
        owner: 255,
        meta: Annotation::META_MAX,
    };
    pt.annotate(0, 4096, max).unwrap();
    assert_eq!(pt.get_leaf(0).unwrap().0.annotation(), Some(max));
}

/// LOCKED entries exist only inside one operation (the engine has
/// exclusive access to its table); a forged one is refused wherever the
/// pre-change scan reads it: tables the range only partly covers, and
/// subtrees that may hold annotations.
#[test]
fn locked_entries_are_refused() {
    let mut pt = s2(40);
    pt.map(0, 2 * MIB, 0, RW, MapPolicy::PAGES).unwrap();
    let (_, level) = pt.get_leaf(3 * 4096).unwrap();
    assert_eq!(level, 3);
    let entry = find_entry(&pt, 3 * 4096);
    pt.mm_mut().write_desc(entry, warden_pgtable::desc::LOCKED);
    // Partly covered level-3 table: scanned entry by entry.
    assert_eq!(pt.unmap(0, 2 * MIB - 4096), Err(Error::Locked));
    assert_eq!(
        pt.map(0, 16 * 4096, 0x1000_0000, RW, MapPolicy::BLOCKS),
        Err(Error::Locked)
    );
    assert_eq!(
        pt.annotate(0, 8192 * 2, Annotation { owner: 1, meta: 0 }),
        Err(Error::Locked)
    );
    assert_eq!(pt.wrprotect(0, 2 * MIB), Err(Error::Locked));
    assert_eq!(pt.get_leaf(0).unwrap().0.attrs(pt.regime()).perms, Perms::RW);
    assert_eq!(pt.get_leaf(0).unwrap().0.oa(), 0);
    // A subtree marked as possibly annotated is scanned even when covered.
    pt.annotate(100 * 4096, 4096, Annotation { owner: 2, meta: 0 }).unwrap();
    assert_eq!(pt.unmap(0, 2 * MIB), Err(Error::Locked));
    assert_eq!(
        pt.map(
            0,
            2 * MIB,
            0,
            RW,
            MapPolicy {
                replace_annotations: true,
                ..MapPolicy::BLOCKS
            }
        ),
        Err(Error::Locked)
    );
    assert_eq!(pt.get_leaf(0).unwrap().1, 3);
}

#[test]
fn no_memory_leaves_translation_unchanged_for_unmap() {
    let mut pt = s2(40);
    pt.map(0, GIB, 0, RW, MapPolicy::BLOCKS).unwrap();
    pt.mm_mut().set_limit(Some(0));
    let probes = [0, 4096, GIB - 4096];
    let before = snapshot(&pt, &probes);
    // Unmapping one page out of a 1 GiB block needs two new tables.
    assert_eq!(pt.unmap(4096, 4096), Err(Error::NoMemory));
    assert_eq!(snapshot(&pt, &probes), before);
    assert_eq!(pt.map(4096, 4096, 0, RW, MapPolicy::BLOCKS), Err(Error::NoMemory));
    assert_eq!(pt.split(0, 4096), Err(Error::NoMemory));
    assert_eq!(snapshot(&pt, &probes), before);
    pt.mm_mut().set_limit(None);
    assert_eq!(pt.unmap(4096, 4096), Ok(4096));
}

/// Address of the level-3 entry for `ia` (walks with get_leaf's levels).
fn find_entry(pt: &PageTable<ArenaMm, CountingTlb>, ia: u64) -> u64 {
    let mut level = pt.geometry().start_level;
    let mut table = pt.root();
    loop {
        let shift = 12 + 9 * (3 - level as u32);
        let idx = if level == pt.geometry().start_level {
            ia >> shift
        } else {
            (ia >> shift) & 511
        };
        let entry = table + idx * 8;
        let d = pt.mm().read_desc(entry);
        if level == 3 {
            return entry;
        }
        table = d & 0x0000_ffff_ffff_f000;
        level += 1;
    }
}

#[test]
fn no_memory_leaves_translation_unchanged_for_annotate_and_map() {
    let mut pt = s2(40);
    // Two 2 MiB blocks; annotating both needs two level-3 tables.
    pt.map(0, 2 * MIB, 0x4000_0000, RW, MapPolicy::BLOCKS).unwrap();
    pt.map(2 * MIB, 2 * MIB, 0x6000_0000, RW, MapPolicy::BLOCKS).unwrap();
    let probes = [0, MIB, 2 * MIB, 3 * MIB, 4 * MIB];
    // What each probe translates to (a split block translates the same).
    let translate = |pt: &PageTable<ArenaMm, CountingTlb>| -> Vec<Option<(u64, Attrs)>> {
        probes
            .iter()
            .map(|&a| {
                let (d, level) = pt.get_leaf(a).unwrap();
                let size = 1u64 << (12 + 9 * (3 - level as u32));
                d.is_valid().then(|| (d.oa() + (a & (size - 1)), d.attrs(pt.regime())))
            })
            .collect()
    };
    let before = translate(&pt);
    let live = pt.mm().live_pages();
    pt.mm_mut().set_limit(Some(1));
    let ann = Annotation { owner: 4, meta: 9 };
    assert_eq!(pt.annotate(0, 4 * MIB, ann), Err(Error::NoMemory));
    // Page-granular mapping of fresh space needs a level-2 and level-3 table.
    assert_eq!(pt.map(GIB, 4 * MIB, 0, RW, MapPolicy::PAGES), Err(Error::NoMemory));
    assert_eq!(translate(&pt), before);
    assert_eq!(
        pt.get_leaf(GIB).unwrap(),
        (warden_pgtable::Desc::EMPTY, 1),
        "no empty table left linked"
    );
    // The blocks split by the failed annotate keep their translation and
    // use the one page allowed; nothing else was kept.
    assert!(pt.mm().live_pages() <= live + 1);
    pt.mm_mut().set_limit(None);
    pt.annotate(0, 4 * MIB, ann).unwrap();
    assert_eq!(pt.get_leaf(3 * MIB).unwrap().0.annotation(), Some(ann));
}

#[test]
fn splitting_an_empty_range_changes_nothing() {
    let mut pt = s2(40);
    pt.map(0, 2 * MIB, 0, RW, MapPolicy::BLOCKS).unwrap();
    pt.mm_mut().set_limit(Some(0));
    assert_eq!(pt.split(4096, 0), Ok(()));
    assert_eq!(pt.get_leaf(4096).unwrap().1, 2);
}

#[test]
fn set_sw_rewrites_only_software_bits() {
    let mut pt = s2(40);
    pt.map(0, 2 << 20, 0, RW, MapPolicy::BLOCKS).unwrap();
    let (before, level) = pt.get_leaf(0).unwrap();
    assert_eq!(level, 2);
    assert_eq!(pt.set_sw(0, 2 << 20, 16), Err(Error::InvalidAttrs));
    assert_eq!(pt.get_leaf(0).unwrap().0, before);
    pt.set_sw(0, 2 << 20, 0x9).unwrap();
    let (after, level) = pt.get_leaf(0).unwrap();
    assert_eq!(level, 2, "no split for a whole leaf");
    assert_eq!(after.attrs(pt.regime()).sw, 0x9);
    assert_eq!(after.oa(), before.oa());
    assert_eq!(
        after.attrs(pt.regime()).perms,
        before.attrs(pt.regime()).perms,
        "permissions kept"
    );
    // Empty entries stay empty.
    pt.set_sw(4 << 20, 4096, 3).unwrap();
    assert!(!pt.get_leaf(4 << 20).unwrap().0.is_valid());
}
