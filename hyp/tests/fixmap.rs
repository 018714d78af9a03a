//! The per-CPU fixmap and fixblock on warden-archmodel, with the
//! break-before-make checker on: slots translate to what was mapped with
//! the right attributes and fault once unmapped, no CPU keeps a stale
//! translation after an unmap (and a local TLBI, seed 002's bug, is
//! caught), refcounts hold and the rest of the table is untouched, reuse
//! allocates nothing, `zero_page` writes exactly its page, and bad
//! arguments are refused without a change.

use std::collections::HashMap;

use warden_archmodel::machine::{TableId, Violation};
use warden_archmodel::{check_access, Access, FaultKind, MemType as MMemType, Translation};
use warden_hyp::fixmap::{
    self, annotation, DescAccess, Error, Fixmap, SlotKind, SlotMem, BLOCK_SIZE, MAX_CPUS, PAGE_SIZE,
};
use warden_pgtable::testutil::model::*;
use warden_pgtable::{
    Annotation, Attrs, Barrier, Desc, Kind, MapPolicy, MemType, MmOps, Perms, Regime, Scope, TlbOps, Tlbi,
};

/// Physical addresses of the model fit in 39 bits (its window is
/// `[MEM_BASE, MEM_BASE + 4 GiB)` with `MEM_BASE` = 256 GiB), so the EL2 VA
/// space is 40 bits and the fixmap goes in its upper half.
const VA_BITS: u8 = 40;
const EL2: Regime = Regime::El2Stage1 { va_bits: VA_BITS };
const BASE: u64 = 1 << (VA_BITS - 1);
const GIB: u64 = 1 << 30;
/// Data pages and blocks the slots map, far above the table pages the
/// model allocates from the bottom of its window.
const DATA: u64 = MEM_BASE + 3 * GIB;
const RW: Attrs = Attrs::new(Perms::RW, MemType::NormalWb);

/// The identity map Warden would have before creating its fixmap: RAM as
/// a 1 GiB block, 2 MiB blocks and pages, and an MMIO page.
const IDENTITY: [(u64, u64, Attrs, MapPolicy); 4] = [
    (MEM_BASE, GIB, RW, MapPolicy::BLOCKS),
    (MEM_BASE + GIB, 4 * BLOCK_SIZE, RW, MapPolicy::MAX_2M),
    (
        MEM_BASE + 2 * GIB + 0x1000,
        0x7000,
        Attrs::new(Perms::R, MemType::NormalWb),
        MapPolicy::PAGES,
    ),
    (
        0x0900_0000,
        0x1000,
        Attrs::new(Perms::RW, MemType::Device),
        MapPolicy::PAGES,
    ),
];

struct World {
    m: Shared,
    pt: ModelTable,
    id: TableId,
}

fn world(cpus: usize) -> World {
    let m = machine(cpus);
    let (mut pt, id) = new_table(&m, EL2);
    for (pa, size, attrs, policy) in IDENTITY {
        pt.map(pa, size, pa, attrs, policy).unwrap();
    }
    World { m, pt, id }
}

/// A CPU's own descriptor access and TLB operations, as each CPU at EL2
/// would have them: no page pool, no lock.
fn cpu_ops(m: &Shared, cpu: usize) -> (ModelMm, ModelTlb) {
    (
        ModelMm {
            m: m.clone(),
            refs: HashMap::new(),
            cpu,
        },
        ModelTlb { m: m.clone(), cpu },
    )
}

/// Descriptor access shaped like the EL2 one: loads and stores by physical
/// address and nothing else (not an `MmOps`, no pool behind it).
struct RawDesc {
    m: Shared,
    cpu: usize,
}

impl DescAccess for RawDesc {
    fn read_entry(&self, pa: u64) -> u64 {
        self.m.borrow().read_desc(pa)
    }
    fn write_entry(&mut self, pa: u64, val: u64) {
        self.m.borrow_mut().write_desc(self.cpu, pa, val)
    }
}

/// The model's view of every table entry reachable from the root.
fn dump(pt: &ModelTable) -> Vec<(u64, u64)> {
    fn visit(pt: &ModelTable, page: u64, level: u8, out: &mut Vec<(u64, u64)>) {
        for i in 0..512 {
            let pa = page + i * 8;
            let d = pt.mm().read_desc(pa);
            if d != 0 {
                out.push((pa, d));
            }
            if level < 3 && Desc(d).kind(level) == Kind::Table {
                visit(pt, Desc(d).oa(), level + 1, out);
            }
        }
    }
    let mut out = Vec::new();
    visit(pt, pt.root(), pt.geometry().start_level, &mut out);
    out
}

/// Addresses inside and around each identity mapping.
fn identity_probes() -> Vec<u64> {
    IDENTITY
        .iter()
        .flat_map(|&(pa, size, _, _)| [pa, pa + size / 2, pa + size - 8, pa + size])
        .collect()
}

fn walk(w: &World, va: u64) -> Result<Translation, warden_archmodel::Fault> {
    w.m.borrow().walk(w.id, va)
}

fn translate(w: &World, cpu: usize, va: u64) -> Result<Translation, warden_archmodel::Fault> {
    w.m.borrow_mut().translate(cpu, w.id, va)
}

/// What every slot mapping must be: normal write-back memory, read-write,
/// never executable, inner shareable, at the slot's level.
fn assert_slot_translation(t: &Translation, pa: u64, block_size: u64) {
    assert_eq!(t.oa, pa);
    assert_eq!(t.block_size, block_size);
    assert_eq!(t.mem, MMemType::NormalWb);
    assert!(t.read && t.write && !t.exec, "{t:?}");
    assert_eq!(t.shareability, 0b11, "inner shareable");
    assert!(t.af);
    assert!(check_access(t, Access::Write).is_ok());
    assert!(check_access(t, Access::Exec).is_err());
}

fn assert_faults(w: &World, va: u64) {
    let f = walk(w, va).expect_err("slot still mapped");
    assert_eq!(f.kind, FaultKind::Translation);
}

/// The model's checker found nothing and every break is complete.
fn assert_clean(w: &World) {
    assert_no_violations(&w.m);
    assert_eq!(w.m.borrow().unclean_count(), 0, "an invalidation did not complete");
    assert_refcounts(&w.pt);
}

/// TLB operations that turn every broadcast TLBI into a local one: the
/// first posted version of pKVM's fixmap.
struct LocalOnly(ModelTlb);

impl TlbOps for LocalOnly {
    fn barrier(&mut self, b: Barrier) {
        self.0.barrier(b)
    }
    fn tlbi(&mut self, op: Tlbi) {
        let op = match op {
            Tlbi::El2Va {
                va, level, last_level, ..
            } => Tlbi::El2Va {
                va,
                level,
                last_level,
                scope: Scope::Local,
            },
            other => other,
        };
        self.0.tlbi(op)
    }
}

/// Slot memory for tests: every access is translated through the CPU's
/// TLB and the model's walk, so a write can only land where the slot
/// really points. Records the physical addresses written.
struct ModelSlotMem {
    m: Shared,
    id: TableId,
    cpu: usize,
    written: Vec<u64>,
    cleaned: Vec<(u64, u64)>,
}

impl ModelSlotMem {
    fn new(w: &World, cpu: usize) -> Self {
        ModelSlotMem {
            m: w.m.clone(),
            id: w.id,
            cpu,
            written: Vec::new(),
            cleaned: Vec::new(),
        }
    }
}

impl SlotMem for ModelSlotMem {
    fn write_u64(&mut self, va: u64, val: u64) {
        let mut m = self.m.borrow_mut();
        let t = m.translate(self.cpu, self.id, va).expect("slot VA translates");
        check_access(&t, Access::Write).expect("slot writable");
        m.mem.write_u64(t.oa, val);
        self.written.push(t.oa);
    }
    fn clean_to_poc(&mut self, va: u64, len: u64) {
        let mut m = self.m.borrow_mut();
        let first = m.translate(self.cpu, self.id, va).expect("slot VA translates");
        let last = m
            .translate(self.cpu, self.id, va + len - 1)
            .expect("slot VA translates");
        assert_eq!(last.oa - first.oa, len - 1, "clean range contiguous");
        m.mem.clean(first.oa, len);
        self.cleaned.push((first.oa, len));
    }
}

#[test]
fn page_slots_translate_per_cpu_and_fault_after_unmap() {
    let cpus = 4;
    let mut w = world(cpus);
    let fm = Fixmap::init(&mut w.pt, BASE, cpus).unwrap();
    assert_eq!((fm.base(), fm.cpus(), fm.size()), (BASE, cpus, fixmap::size(cpus)));
    let mut ops: Vec<_> = (0..cpus).map(|c| cpu_ops(&w.m, c)).collect();
    for (cpu, (mm, tlb)) in ops.iter_mut().enumerate() {
        let pa = DATA + cpu as u64 * 0x10_000;
        let va = fm.map_page(cpu, pa, mm, tlb).unwrap();
        assert_eq!(Some(va), fm.page_va(cpu));
        assert_eq!(va, BASE + cpu as u64 * PAGE_SIZE);
    }
    // All slots at once, each to its own page; the guard pages stay holes.
    for cpu in 0..cpus {
        let va = fm.page_va(cpu).unwrap();
        let pa = DATA + cpu as u64 * 0x10_000;
        assert_slot_translation(&walk(&w, va + 0x18).unwrap(), pa + 0x18, PAGE_SIZE);
        assert_slot_translation(&translate(&w, cpu, va).unwrap(), pa, PAGE_SIZE);
    }
    assert_faults(&w, BASE + cpus as u64 * PAGE_SIZE);
    assert_faults(&w, BASE + BLOCK_SIZE - PAGE_SIZE);
    assert_clean(&w);
    for (cpu, (mm, tlb)) in ops.iter_mut().enumerate() {
        fm.unmap_page(cpu, mm, tlb).unwrap();
        assert_faults(&w, fm.page_va(cpu).unwrap());
        assert!(translate(&w, cpu, fm.page_va(cpu).unwrap()).is_err(), "own TLB flushed");
    }
    // The free slot holds its annotation again, as init left it.
    let (d, level) = w.pt.get_leaf(fm.page_va(2).unwrap()).unwrap();
    assert_eq!(
        (d.kind(level), level),
        (Kind::Annotation(annotation(SlotKind::Page, 2)), 3)
    );
    assert_clean(&w);
}

#[test]
fn page_unmap_invalidates_every_cpus_tlb() {
    let mut w = world(2);
    let fm = Fixmap::init(&mut w.pt, BASE, 2).unwrap();
    let (mut mm, mut tlb) = cpu_ops(&w.m, 0);
    let va = fm.map_page(0, DATA, &mut mm, &mut tlb).unwrap();
    // CPU 1 caches CPU 0's slot (a speculative walk would do the same).
    assert_eq!(translate(&w, 1, va + 8).unwrap().oa, DATA + 8);
    w.m.borrow_mut().reset_stats();
    fm.unmap_page(0, &mut mm, &mut tlb).unwrap();
    let st = w.m.borrow().stats();
    assert_eq!((st.tlbi_broadcast, st.tlbi_local, st.dsb_ish), (1, 0, 1));
    assert!(translate(&w, 1, va).is_err(), "CPU 1 still translates the slot");
    assert!(!w.m.borrow().is_unclean(fm.page_entry(0).unwrap()));
    // The slot can point elsewhere at once, and CPU 1 sees only the new page.
    fm.map_page(0, DATA + 0x5000, &mut mm, &mut tlb).unwrap();
    assert_eq!(translate(&w, 1, va).unwrap().oa, DATA + 0x5000);
    fm.unmap_page(0, &mut mm, &mut tlb).unwrap();
    assert_clean(&w);
}

#[test]
fn local_tlbi_on_page_unmap_is_caught() {
    let mut w = world(2);
    let fm = Fixmap::init(&mut w.pt, BASE, 2).unwrap();
    let (mut mm, tlb) = cpu_ops(&w.m, 0);
    let mut broken = LocalOnly(tlb);
    let va = fm.map_page(0, DATA, &mut mm, &mut broken).unwrap();
    assert_eq!(translate(&w, 1, va).unwrap().oa, DATA);
    fm.unmap_page(0, &mut mm, &mut broken).unwrap();
    // CPU 1 keeps the old page: the walk says unmapped, its TLB disagrees.
    assert_faults(&w, va);
    assert_eq!(translate(&w, 1, va).unwrap().oa, DATA, "stale entry expected");
    assert!(w.m.borrow().is_unclean(fm.page_entry(0).unwrap()));
    // Reusing the slot for another page is the break-before-make violation.
    fm.map_page(0, DATA + 0x7000, &mut mm, &mut broken).unwrap();
    let v = w.m.borrow_mut().take_violations();
    assert!(
        matches!(&v[..], [Violation::InvalidUncleanToValid { unclean_cpus, pa, level: 3, .. }]
            if unclean_cpus == &vec![1] && *pa == fm.page_entry(0).unwrap()),
        "{v:#?}"
    );
}

#[test]
fn block_slots_map_2mib_and_invalidate_everywhere() {
    let cpus = 3;
    let mut w = world(cpus);
    let fm = Fixmap::init(&mut w.pt, BASE, cpus).unwrap();
    let mut ops: Vec<_> = (0..cpus).map(|c| cpu_ops(&w.m, c)).collect();
    for (cpu, (mm, tlb)) in ops.iter_mut().enumerate() {
        let pa = DATA + cpu as u64 * BLOCK_SIZE;
        let va = fm.map_block(cpu, pa, mm, tlb).unwrap();
        assert_eq!(va, BASE + BLOCK_SIZE * (1 + cpu as u64));
        assert_eq!(Some(va), fm.block_va(cpu));
        // One level-2 block entry, not 512 pages.
        let (d, level) = w.pt.get_leaf(va).unwrap();
        assert_eq!((d.kind(level), level), (Kind::Leaf, 2));
    }
    assert_clean(&w);
    for cpu in 0..cpus {
        let va = fm.block_va(cpu).unwrap();
        let pa = DATA + cpu as u64 * BLOCK_SIZE;
        for off in [0, 0x1_2348, BLOCK_SIZE - 8] {
            assert_slot_translation(&walk(&w, va + off).unwrap(), pa + off, BLOCK_SIZE);
        }
        // Every other CPU caches the block.
        for other in 0..cpus {
            assert_eq!(translate(&w, other, va + 0x3000).unwrap().oa, pa + 0x3000);
        }
    }
    // The page region's free slots are unaffected.
    assert_faults(&w, fm.page_va(0).unwrap());
    for (cpu, (mm, tlb)) in ops.iter_mut().enumerate() {
        fm.unmap_block(cpu, mm, tlb).unwrap();
        let va = fm.block_va(cpu).unwrap();
        assert_faults(&w, va);
        for other in 0..cpus {
            assert!(
                translate(&w, other, va + 0x3000).is_err(),
                "CPU {other} kept block {cpu}"
            );
        }
        let (d, level) = w.pt.get_leaf(va).unwrap();
        assert_eq!(
            (d.kind(level), level),
            (Kind::Annotation(annotation(SlotKind::Block, cpu)), 2)
        );
    }
    assert_clean(&w);
}

#[test]
fn local_tlbi_on_block_unmap_is_caught() {
    let mut w = world(2);
    let fm = Fixmap::init(&mut w.pt, BASE, 2).unwrap();
    let (mut mm, tlb) = cpu_ops(&w.m, 1);
    let mut broken = LocalOnly(tlb);
    let va = fm.map_block(1, DATA, &mut mm, &mut broken).unwrap();
    assert_eq!(translate(&w, 0, va + 0x1000).unwrap().oa, DATA + 0x1000);
    fm.unmap_block(1, &mut mm, &mut broken).unwrap();
    assert_eq!(translate(&w, 0, va).unwrap().oa, DATA, "stale entry expected on CPU 0");
    fm.map_block(1, DATA + BLOCK_SIZE, &mut mm, &mut broken).unwrap();
    let v = w.m.borrow_mut().take_violations();
    assert!(
        matches!(&v[..], [Violation::InvalidUncleanToValid { unclean_cpus, level: 2, .. }] if unclean_cpus == &vec![0]),
        "{v:#?}"
    );
}

#[test]
fn init_keeps_refcounts_and_the_rest_of_the_table() {
    let cpus = MAX_CPUS;
    let mut w = world(cpus);
    let probes = identity_probes();
    let before: Vec<_> = probes.iter().map(|&a| walk(&w, a)).collect();
    let old_entries = dump(&w.pt);
    let fm = Fixmap::init(&mut w.pt, BASE, cpus).unwrap();
    assert_clean(&w);
    let after: Vec<_> = probes.iter().map(|&a| walk(&w, a)).collect();
    assert_eq!(before, after, "identity map changed");
    // Only the fixmap's entries and the tables on its path are new.
    let new_entries: HashMap<u64, u64> = dump(&w.pt).into_iter().collect();
    for (pa, d) in &old_entries {
        assert_eq!(new_entries.get(pa), Some(d), "entry {pa:#x} changed");
    }
    // Every slot entry is non-zero and recorded where the table has it.
    for cpu in 0..cpus {
        let (pe, be) = (fm.page_entry(cpu).unwrap(), fm.block_entry(cpu).unwrap());
        let page = Desc(new_entries[&pe]);
        let block = Desc(new_entries[&be]);
        assert_eq!(page.kind(3), Kind::Annotation(annotation(SlotKind::Page, cpu)));
        assert_eq!(block.kind(2), Kind::Annotation(annotation(SlotKind::Block, cpu)));
        assert_eq!(page.annotation().unwrap().owner, 1, "owner HYP");
    }
    // Every slot mapped at once: counts unchanged, still the rule.
    let pages = assert_refcounts(&w.pt);
    let mut ops: Vec<_> = (0..cpus).map(|c| cpu_ops(&w.m, c)).collect();
    for (cpu, (mm, tlb)) in ops.iter_mut().enumerate() {
        fm.map_page(cpu, DATA + cpu as u64 * PAGE_SIZE, mm, tlb).unwrap();
        fm.map_block(cpu, DATA + GIB / 2 + cpu as u64 * BLOCK_SIZE, mm, tlb)
            .unwrap();
    }
    assert_eq!(assert_refcounts(&w.pt), pages);
    assert_clean(&w);
    // The engine keeps off the fixmap: the guard pages refuse an unmap of
    // the whole range even now, and a free slot refuses a map.
    let snapshot = dump(&w.pt);
    assert_eq!(
        w.pt.unmap(BASE, fixmap::size(cpus)),
        Err(warden_pgtable::Error::Annotated)
    );
    assert_eq!(dump(&w.pt), snapshot);
    let (mm3, tlb3) = &mut ops[3];
    fm.unmap_page(3, mm3, tlb3).unwrap();
    let snapshot = dump(&w.pt);
    assert_eq!(
        w.pt.map(fm.page_va(3).unwrap(), PAGE_SIZE, DATA, RW, MapPolicy::PAGES),
        Err(warden_pgtable::Error::Annotated)
    );
    assert_eq!(dump(&w.pt), snapshot);
    for (cpu, (mm, tlb)) in ops.iter_mut().enumerate() {
        fm.unmap_page(cpu, mm, tlb).unwrap();
        fm.unmap_block(cpu, mm, tlb).unwrap();
    }
    assert_eq!(assert_refcounts(&w.pt), pages);
    assert_clean(&w);
    assert_eq!(after, probes.iter().map(|&a| walk(&w, a)).collect::<Vec<_>>());
}

#[test]
fn remapping_a_slot_a_thousand_times_allocates_nothing() {
    let mut w = world(2);
    let fm = Fixmap::init(&mut w.pt, BASE, 2).unwrap();
    let (allocs, live) = {
        let m = w.m.borrow();
        (m.mem.total_allocs(), m.mem.allocated_pages())
    };
    let pages = assert_refcounts(&w.pt);
    let (mut mm, mut tlb) = cpu_ops(&w.m, 1);
    let va = fm.page_va(1).unwrap();
    for i in 0..1000u64 {
        let pa = DATA + i * PAGE_SIZE;
        assert_eq!(fm.map_page(1, pa, &mut mm, &mut tlb), Ok(va));
        // Both CPUs cache the current page, so a missed invalidation
        // would show as a stale translation next round.
        assert_eq!(translate(&w, 0, va + 0x10).unwrap().oa, pa + 0x10, "round {i}");
        assert_eq!(translate(&w, 1, va).unwrap().oa, pa, "round {i}");
        fm.unmap_page(1, &mut mm, &mut tlb).unwrap();
    }
    let bva = fm.block_va(1).unwrap();
    for i in 0..100u64 {
        let pa = DATA + (i % 64) * BLOCK_SIZE;
        assert_eq!(fm.map_block(1, pa, &mut mm, &mut tlb), Ok(bva));
        assert_eq!(translate(&w, 0, bva + 0x2000).unwrap().oa, pa + 0x2000, "round {i}");
        fm.unmap_block(1, &mut mm, &mut tlb).unwrap();
    }
    {
        let m = w.m.borrow();
        assert_eq!(m.mem.total_allocs(), allocs, "a table page was allocated after init");
        assert_eq!(m.mem.allocated_pages(), live);
    }
    assert_eq!(assert_refcounts(&w.pt), pages);
    assert_clean(&w);
}

#[test]
fn zero_page_writes_exactly_the_target_page() {
    let mut w = world(2);
    let fm = Fixmap::init(&mut w.pt, BASE, 2).unwrap();
    let target = DATA + 0x4_2000;
    let pattern = |pa: u64| 0xa5a5_0000_0000_0000 | pa;
    {
        let mut m = w.m.borrow_mut();
        for pa in (target - PAGE_SIZE..target + 2 * PAGE_SIZE).step_by(8) {
            m.mem.write_u64(pa, pattern(pa));
        }
        // Dirty lines from here on mean "written and not cleaned".
        m.mem.set_track_dirty(true);
    }
    let (_, mut tlb) = cpu_ops(&w.m, 1);
    let mut mm = RawDesc { m: w.m.clone(), cpu: 1 };
    let mut out = ModelSlotMem::new(&w, 1);
    fm.zero_page(1, target, &mut mm, &mut tlb, &mut out).unwrap();
    // Every write went through the slot to the target, each word once.
    let expected: Vec<u64> = (target..target + PAGE_SIZE).step_by(8).collect();
    assert_eq!(out.written, expected);
    assert_eq!(out.cleaned, vec![(target, PAGE_SIZE)]);
    let m = w.m.borrow();
    for pa in (target..target + PAGE_SIZE).step_by(8) {
        assert_eq!(m.mem.read_u64(pa), 0, "{pa:#x} not zeroed");
        assert!(!m.mem.is_dirty(pa), "{pa:#x} not cleaned to the PoC");
    }
    for pa in (target - PAGE_SIZE..target)
        .chain(target + PAGE_SIZE..target + 2 * PAGE_SIZE)
        .step_by(8)
    {
        assert_eq!(m.mem.read_u64(pa), pattern(pa), "neighbour {pa:#x} touched");
    }
    drop(m);
    // The slot is free again and nobody translates it.
    assert_faults(&w, fm.page_va(1).unwrap());
    assert!(translate(&w, 1, fm.page_va(1).unwrap()).is_err());
    assert_clean(&w);
}

#[test]
fn scoped_use_leaves_the_slot_free() {
    let mut w = world(2);
    let fm = Fixmap::init(&mut w.pt, BASE, 2).unwrap();
    let (mut mm, mut tlb) = cpu_ops(&w.m, 0);
    let seen = fm
        .with_page(0, DATA + 0x3000, &mut mm, &mut tlb, |va| walk(&w, va).map(|t| t.oa))
        .unwrap();
    assert_eq!(seen, Ok(DATA + 0x3000));
    assert_faults(&w, fm.page_va(0).unwrap());
    let seen = fm
        .with_block(0, DATA + BLOCK_SIZE, &mut mm, &mut tlb, |va| {
            walk(&w, va + 0x10).map(|t| t.oa)
        })
        .unwrap();
    assert_eq!(seen, Ok(DATA + BLOCK_SIZE + 0x10));
    assert_faults(&w, fm.block_va(0).unwrap());
    assert_clean(&w);
}

#[test]
fn map_refuses_misuse_without_writing() {
    let mut w = world(2);
    let fm = Fixmap::init(&mut w.pt, BASE, 2).unwrap();
    let (mut mm, mut tlb) = cpu_ops(&w.m, 0);
    w.m.borrow_mut().reset_stats();
    assert_eq!(fm.map_page(2, DATA, &mut mm, &mut tlb), Err(Error::NoSuchCpu));
    assert_eq!(fm.unmap_block(usize::MAX, &mut mm, &mut tlb), Err(Error::NoSuchCpu));
    assert_eq!(fm.map_page(0, DATA + 8, &mut mm, &mut tlb), Err(Error::Unaligned));
    assert_eq!(
        fm.map_block(0, DATA + PAGE_SIZE, &mut mm, &mut tlb),
        Err(Error::Unaligned)
    );
    assert_eq!(fm.map_page(0, 1 << 48, &mut mm, &mut tlb), Err(Error::OutOfRange));
    assert_eq!(fm.map_block(0, 1 << 48, &mut mm, &mut tlb), Err(Error::OutOfRange));
    // Unmapping a free slot needs nothing.
    fm.unmap_page(0, &mut mm, &mut tlb).unwrap();
    fm.unmap_block(1, &mut mm, &mut tlb).unwrap();
    assert_eq!(fm.page_va(2), None);
    assert_eq!(fm.block_entry(2), None);
    let st = w.m.borrow().stats();
    assert_eq!((st.writes, st.tlbi), (0, 0));
    // A second map of a busy slot would be a valid-to-valid change.
    fm.map_page(0, DATA, &mut mm, &mut tlb).unwrap();
    assert_eq!(fm.map_page(0, DATA + PAGE_SIZE, &mut mm, &mut tlb), Err(Error::Busy));
    assert_eq!(walk(&w, fm.page_va(0).unwrap()).unwrap().oa, DATA);
    fm.unmap_page(0, &mut mm, &mut tlb).unwrap();
    assert_clean(&w);
    // An entry someone else overwrote is reported, not used.
    let entry = fm.block_entry(1).unwrap();
    let stray = Desc::annotated(Annotation { owner: 7, meta: 1 }).unwrap().0;
    w.m.borrow_mut().write_desc(0, entry, stray);
    assert_eq!(fm.map_block(1, DATA, &mut mm, &mut tlb), Err(Error::Clobbered));
    assert_eq!(fm.unmap_block(1, &mut mm, &mut tlb), Err(Error::Clobbered));
    assert_eq!(w.m.borrow().read_desc(entry), stray);
    assert_no_violations(&w.m);
}

#[test]
fn init_refuses_bad_arguments_without_changes() {
    let mut w = world(2);
    // Something in the way, set up before the snapshot: a page in the
    // third fixblock slot of a fixmap at BASE + 1 GiB, an annotation in the
    // page region of one at BASE + 2 GiB.
    let busy_block = BASE + GIB;
    w.pt.map(
        busy_block + 3 * BLOCK_SIZE + 0x5000,
        PAGE_SIZE,
        DATA,
        RW,
        MapPolicy::PAGES,
    )
    .unwrap();
    let busy_page = BASE + 2 * GIB;
    w.pt.annotate(busy_page + 0x10_0000, PAGE_SIZE, Annotation { owner: 2, meta: 3 })
        .unwrap();
    let snapshot = dump(&w.pt);
    let live = w.m.borrow().mem.allocated_pages();
    let end = 1u64 << VA_BITS;
    let cases: [(u64, usize, Error); 10] = [
        (BASE, 0, Error::Cpus),
        (BASE, MAX_CPUS + 1, Error::Cpus),
        (BASE + PAGE_SIZE, 1, Error::Unaligned),
        (BASE + 1, 1, Error::Unaligned),
        // The lower half is the identity map's.
        (MEM_BASE, 1, Error::OutOfRange),
        (end - BLOCK_SIZE, 1, Error::OutOfRange),
        (u64::MAX - BLOCK_SIZE + 1, 1, Error::OutOfRange),
        // Across a 1 GiB boundary: the fixblocks would need two level-2 tables.
        (BASE + GIB - 2 * BLOCK_SIZE, 2, Error::OutOfRange),
        (busy_block, 3, Error::Occupied),
        (busy_page, 1, Error::Occupied),
    ];
    for (base, cpus, err) in cases {
        assert_eq!(
            Fixmap::init(&mut w.pt, base, cpus),
            Err(err),
            "base {base:#x}, {cpus} CPUs"
        );
        assert_eq!(dump(&w.pt), snapshot, "table changed by refused init at {base:#x}");
        assert_eq!(w.m.borrow().mem.allocated_pages(), live);
    }
    // Just short of the busy fixblock slot, and the last fit at the top.
    Fixmap::init(&mut w.pt, busy_block, 2).unwrap();
    Fixmap::init(&mut w.pt, end - fixmap::size(MAX_CPUS), MAX_CPUS).unwrap();
    // A second fixmap over the first.
    let snapshot = dump(&w.pt);
    assert_eq!(Fixmap::init(&mut w.pt, busy_block, 1), Err(Error::Occupied));
    assert_eq!(dump(&w.pt), snapshot);
    assert_clean(&w);
}

#[test]
fn init_out_of_memory_and_wrong_regime_change_nothing() {
    let mut w = world(1);
    let snapshot = dump(&w.pt);
    let live = w.m.borrow().mem.allocated_pages();
    // The upper half is empty: the fixmap needs a level-1, a level-2 and a
    // level-3 table.
    for spare in 0..3 {
        w.m.borrow_mut().mem.set_alloc_limit(Some(live + spare));
        assert_eq!(
            Fixmap::init(&mut w.pt, BASE, 1),
            Err(Error::Table(warden_pgtable::Error::NoMemory)),
            "{spare} spare pages"
        );
        assert_eq!(dump(&w.pt), snapshot);
        assert_eq!(w.m.borrow().mem.allocated_pages(), live);
        assert_refcounts(&w.pt);
    }
    w.m.borrow_mut().mem.set_alloc_limit(Some(live + 3));
    Fixmap::init(&mut w.pt, BASE, 1).unwrap();
    assert_clean(&w);
    w.m.borrow_mut().mem.set_alloc_limit(None);

    let (mut s2, _) = new_table(
        &w.m,
        Regime::Stage2 {
            ipa_bits: 40,
            vmid: 1,
            fwb: true,
        },
    );
    assert_eq!(Fixmap::init(&mut s2, BASE, 1), Err(Error::Regime));
}
