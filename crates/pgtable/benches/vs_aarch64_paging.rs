//! Side-by-side benchmark: warden-pgtable against aarch64-paging 0.12, both
//! building stage-2 tables (39-bit IPA, level-1 root, one root page) in host
//! memory.
//!
//! Run with `cargo bench -p warden-pgtable --bench vs_aarch64_paging`.
//! Arguments after `--`: a substring filter on workload names, and
//! `--quick` (one timed run per side, no warm-up: for `valgrind --tool=callgrind`).
//!
//! Fairness rules (see BENCHMARKS.md):
//! * Every timed run starts from a fresh, empty table (or, for unmap, a
//!   freshly mapped one); creation, the untimed setup mapping and
//!   destruction are outside the timed region.
//! * warden's table pages come from `LeanMm` (below), which accesses
//!   descriptors directly at their address as the EL2 MmOps does, zeroes
//!   pages on allocation, keeps a refcount per page and is recycled
//!   between runs (its pages are already faulted in). Its [`TlbOps`] only
//!   counts with integers. aarch64-paging allocates with the global
//!   allocator (`IdMap`), whose freed pages malloc likewise reuses. Both
//!   zero every table page they allocate. Extra columns: warden on
//!   test-util's [`ArenaMm`], and aarch64-paging with its table marked
//!   active (`--no-extra` hides them).
//! * On x86 aarch64-paging compiles its TLBI/DSB asm out; warden's barriers
//!   and TLBIs go to the counting no-op. Both are pure memory work.
//! * warden is configured without FWB so that both libraries write
//!   bit-identical descriptors; the run starts by checking that both built
//!   the same tree.

use std::collections::BTreeSet;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aarch64_paging::descriptor::Stage2Attributes as S2;
use aarch64_paging::idmap::IdMap;
use aarch64_paging::paging::{Constraints, MemoryRegion, Stage2};
use warden_pgtable::config::level_shift;
use warden_pgtable::testutil::ArenaMm;
use warden_pgtable::{
    Attrs, Barrier, Kind, MapPolicy, MemType, MmOps, PageTable, Perms, Regime, TlbOps, Tlbi, WalkFlags,
};

const KIB4: u64 = 4096;
const MIB2: u64 = 2 << 20;
const GIB: u64 = 1 << 30;
/// Start of every mapped range (identity: output = input).
const BASE: u64 = GIB;
const IPA_BITS: u8 = 39;
const ROOT_LEVEL: usize = 1;
const REGIME: Regime = Regime::Stage2 {
    ipa_bits: IPA_BITS,
    vmid: 1,
    fwb: false,
};
const ATTRS: Attrs = Attrs::new(Perms::RWX, MemType::NormalWb);
/// Table pages per warden arena: 1 GiB of pages needs 1 + 1 + 512.
const ARENA_PAGES: usize = 1024;
const ARENA_BASE: u64 = 0x80_0000_0000;

fn a64_attrs() -> S2 {
    S2::VALID
        | S2::ACCESS_FLAG
        | S2::S2AP_ACCESS_RW
        | S2::SH_INNER
        | S2::MEMATTR_NORMAL_INNER_WB
        | S2::MEMATTR_NORMAL_OUTER_WB
}

/// TLB operations that only count, with integers (no allocation).
#[derive(Default)]
struct NopTlb {
    barriers: u64,
    tlbis: u64,
}

impl TlbOps for NopTlb {
    #[inline]
    fn barrier(&mut self, _: Barrier) {
        self.barriers += 1;
    }

    #[inline]
    fn tlbi(&mut self, _: Tlbi) {
        self.tlbis += 1;
    }
}

/// A table-page pool as warden's EL2 MmOps sees memory: descriptors are
/// accessed directly at their address (`phys_to_virt` is the identity
/// here), with acquire loads and release stores, exactly as aarch64-paging
/// accesses its descriptors. Pages are zeroed on allocation and carry a
/// real reference count; the free list recycles them.
struct LeanMm {
    pages: Vec<Page>,
    base: u64,
    refs: Vec<u32>,
    free: Vec<u32>,
    next: usize,
    live: usize,
}

#[repr(C, align(4096))]
struct Page([u64; 512]);

impl LeanMm {
    fn new(n: usize) -> Self {
        // Touch every page now so no page fault lands in a timed region.
        let mut pages = Vec::with_capacity(n);
        pages.resize_with(n, || Page([0; 512]));
        let base = pages.as_ptr() as u64;
        LeanMm {
            pages,
            base,
            refs: vec![0; n],
            free: Vec::new(),
            next: 0,
            live: 0,
        }
    }

    #[inline]
    fn index(&self, pa: u64) -> usize {
        ((pa - self.base) >> 12) as usize
    }

    #[inline]
    fn desc(&self, pa: u64) -> &AtomicU64 {
        debug_assert!(pa >= self.base && pa < self.base + (self.pages.len() as u64) * KIB4 && pa.is_multiple_of(8));
        // SAFETY: the engine only passes descriptor addresses inside pages
        // this pool handed out (checked in debug builds); they are 8-byte
        // aligned, live as long as `self`, and only accessed atomically.
        unsafe { &*(pa as *const AtomicU64) }
    }
}

impl MmOps for LeanMm {
    fn zalloc_pages(&mut self, count: usize) -> Option<u64> {
        let first = if count == 1 && !self.free.is_empty() {
            self.free.pop()? as usize
        } else {
            let first = self.next.next_multiple_of(count);
            if first + count > self.pages.len() {
                return None;
            }
            self.next = first + count;
            first
        };
        for p in first..first + count {
            self.pages[p].0.fill(0);
            self.refs[p] = 1;
        }
        self.live += count;
        Some(self.base + first as u64 * KIB4)
    }

    fn can_allocate(&self, pages: usize) -> bool {
        self.free.len() + (self.pages.len() - self.next) >= pages
    }

    #[inline]
    fn get_page(&mut self, pa: u64) {
        let i = self.index(pa);
        debug_assert!(self.refs[i] > 0);
        self.refs[i] += 1;
    }

    #[inline]
    fn put_page(&mut self, pa: u64) {
        let i = self.index(pa);
        debug_assert!(self.refs[i] > 0);
        self.refs[i] -= 1;
        if self.refs[i] == 0 {
            self.free.push(i as u32);
            self.live -= 1;
        }
    }

    fn get_pages(&mut self, pa: u64, n: u32) {
        let i = self.index(pa);
        self.refs[i] += n;
    }

    fn put_pages(&mut self, pa: u64, n: u32) {
        let i = self.index(pa);
        assert!(self.refs[i] >= n, "put_pages below zero on {pa:#x}");
        self.refs[i] -= n;
        if n > 0 && self.refs[i] == 0 {
            self.free.push(i as _);
            self.live -= 1;
        }
    }

    #[inline]
    fn page_count(&self, pa: u64) -> u32 {
        self.refs[self.index(pa)]
    }

    #[inline]
    fn read_desc(&self, pa: u64) -> u64 {
        self.desc(pa).load(Ordering::Acquire)
    }

    fn read_descs(&self, pa: u64, out: &mut [u64]) {
        debug_assert!(pa >= self.base && pa + out.len() as u64 * 8 <= self.base + (self.pages.len() as u64) * KIB4);
        // SAFETY: as in `desc`: the range lies in pages this pool owns, is
        // 8-byte aligned and does not overlap `out` (a stack buffer); table
        // scans run with exclusive access to the table, like the engine.
        unsafe { core::ptr::copy_nonoverlapping(pa as *const u64, out.as_mut_ptr(), out.len()) }
    }

    #[inline]
    fn write_desc(&mut self, pa: u64, val: u64) {
        self.desc(pa).store(val, Ordering::Release)
    }
}

/// What the benchmark needs from a warden MmOps besides the trait.
trait BenchMm: MmOps + Sized {
    fn fresh() -> Self;
    fn live(&self) -> usize;
}

impl BenchMm for LeanMm {
    fn fresh() -> Self {
        LeanMm::new(ARENA_PAGES)
    }
    fn live(&self) -> usize {
        self.live
    }
}

impl BenchMm for ArenaMm {
    fn fresh() -> Self {
        ArenaMm::new(ARENA_BASE, ARENA_PAGES)
    }
    fn live(&self) -> usize {
        self.live_pages()
    }
}

type Wpt<M = LeanMm> = PageTable<M, NopTlb>;
type A64 = IdMap<Stage2>;

/// Recycled warden page pools.
struct Pool<M>(Vec<M>);

impl<M: BenchMm> Pool<M> {
    fn table(&mut self) -> Wpt<M> {
        let mm = self.0.pop().unwrap_or_else(M::fresh);
        PageTable::new(REGIME, mm, NopTlb::default()).unwrap()
    }

    fn recycle(&mut self, pt: Wpt<M>) {
        let (mm, tlb) = pt.destroy();
        black_box(tlb.barriers + tlb.tlbis);
        assert_eq!(mm.live(), 0);
        self.0.push(mm);
    }
}

fn a64_table() -> A64 {
    IdMap::new(ROOT_LEVEL, Stage2)
}

/// An `IdMap` marked active, as if loaded in VTTBR_EL2: `map_range` then
/// checks break-before-make first and walks the range again for TLB
/// maintenance (the TLBIs themselves are compiled out on x86).
fn a64_live() -> A64 {
    let mut t = a64_table();
    t.mark_active();
    t
}

fn a64_drop_live(mut t: A64) {
    t.mark_inactive();
}

// ---- the workloads, one function per library and operation ---------------

#[derive(Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// 4 KiB pages only.
    Pages,
    /// Largest blocks allowed (1 GiB).
    Blocks,
    /// At most 2 MiB blocks.
    Max2M,
}

#[inline(never)]
fn w_map<M: MmOps>(pt: &mut Wpt<M>, size: u64, layout: Layout) {
    let policy = match layout {
        Layout::Pages => MapPolicy::PAGES,
        Layout::Blocks => MapPolicy::BLOCKS,
        Layout::Max2M => MapPolicy::MAX_2M,
    };
    pt.map(BASE, size, BASE, ATTRS, policy).unwrap();
}

#[inline(never)]
fn a64_map(t: &mut A64, size: u64, layout: Layout) {
    match layout {
        Layout::Pages => t
            .map_range_with_constraints(
                &MemoryRegion::new(BASE as usize, (BASE + size) as usize),
                a64_attrs(),
                Constraints::NO_BLOCK_MAPPINGS,
            )
            .unwrap(),
        Layout::Blocks => t
            .map_range(&MemoryRegion::new(BASE as usize, (BASE + size) as usize), a64_attrs())
            .unwrap(),
        Layout::Max2M => {
            // aarch64-paging has no "at most 2 MiB" constraint. A range that
            // does not cover a whole 1 GiB entry is mapped with 2 MiB blocks,
            // so map in 1 GiB chunks staggered by 2 MiB: [B, B+2M),
            // [B+2M, B+1G+2M), ..., [B+size-1G+2M, B+size). Every chunk is
            // only partly covering the two level-1 entries it touches.
            let end = BASE + size;
            let mut start = BASE;
            let mut stop = BASE + MIB2;
            while start < end {
                t.map_range(&MemoryRegion::new(start as usize, stop as usize), a64_attrs())
                    .unwrap();
                start = stop;
                stop = (stop + GIB).min(end);
            }
        }
    }
}

#[inline(never)]
fn w_unmap<M: MmOps>(pt: &mut Wpt<M>, size: u64) {
    let n = pt.unmap(BASE, size).unwrap();
    debug_assert_eq!(n, size);
}

/// aarch64-paging's documented way to unmap: `map_range` with attributes
/// lacking VALID. Whole covered subtables are unlinked and freed.
#[inline(never)]
fn a64_unmap(t: &mut A64, size: u64) {
    t.map_range(&MemoryRegion::new(BASE as usize, (BASE + size) as usize), S2::empty())
        .unwrap();
}

#[inline(never)]
fn w_map_singles<M: MmOps>(pt: &mut Wpt<M>, pages: u64) {
    for i in 0..pages {
        let a = BASE + i * KIB4;
        pt.map(a, KIB4, a, ATTRS, MapPolicy::PAGES).unwrap();
    }
}

#[inline(never)]
fn a64_map_singles(t: &mut A64, pages: u64) {
    for i in 0..pages {
        let a = (BASE + i * KIB4) as usize;
        t.map_range_with_constraints(
            &MemoryRegion::new(a, a + KIB4 as usize),
            a64_attrs(),
            Constraints::NO_BLOCK_MAPPINGS,
        )
        .unwrap();
    }
}

// ---- equivalence check ------------------------------------------------------

/// Every entry a leaf walk of the whole input space visits (leaves and
/// invalid entries, at their level) as (first address, level, descriptor).
/// Equal sets mean equal descriptors and the same table shape.
type Entries = BTreeSet<(u64, u8, u64)>;

fn w_entries<M: MmOps>(pt: &mut Wpt<M>) -> Entries {
    let mut set = Entries::new();
    pt.walk(0, 1 << IPA_BITS, WalkFlags::LEAF, &mut |_, ctx, _| {
        assert_ne!(ctx.old.kind(ctx.level), Kind::Table);
        set.insert((ctx.entry_start, ctx.level, ctx.old.0));
        Ok(())
    })
    .unwrap();
    set
}

fn a64_entries(t: &A64) -> Entries {
    let mut set = Entries::new();
    t.walk_range(&MemoryRegion::new(0, 1 << IPA_BITS), &mut |mr, d, level| {
        let bits = d.flags().bits() | d.output_address().0;
        set.insert((mr.start().0 as u64, level as u8, bits as u64));
        Ok(())
    })
    .unwrap();
    set
}

/// Table pages implied by the entries: the root plus, per level below it,
/// one table per distinct parent entry holding entries at that level or
/// deeper.
fn tables_of(set: &Entries) -> usize {
    let mut n = 1;
    for level in (ROOT_LEVEL as u8 + 1)..=3 {
        let parents: BTreeSet<u64> = set
            .iter()
            .filter(|e| e.1 >= level)
            .map(|e| e.0 >> level_shift(level - 1))
            .collect();
        n += parents.len();
    }
    n
}

fn check_same<M: BenchMm>(name: &str, pt: &mut Wpt<M>, t: &A64) {
    let w = w_entries(pt);
    let a = a64_entries(t);
    let mut levels = [0usize; 4];
    for e in w.iter().filter(|e| e.2 & 1 != 0) {
        levels[e.1 as usize] += 1;
    }
    assert!(
        w == a,
        "{name}: trees differ: {} entries only in warden, {} only in aarch64-paging; first: {:x?} / {:x?}",
        w.difference(&a).count(),
        a.difference(&w).count(),
        w.difference(&a).next(),
        a.difference(&w).next()
    );
    assert_eq!(pt.mm().live(), tables_of(&w), "{name}: warden's live table pages");
    println!(
        "  {name:<30} identical: {:>6} valid leaves (L1 {} / L2 {} / L3 {}), {:>3} table pages",
        levels.iter().sum::<usize>(),
        levels[1],
        levels[2],
        levels[3],
        tables_of(&w)
    );
}

fn sanity<M: BenchMm>(pool: &mut Pool<M>, opts: &Opts) {
    println!("Equivalence check (both 512 GiB spaces walked, every entry compared bit for bit):");
    let maps: [(&str, u64, Layout); 3] = [
        ("1 GiB, 4 KiB pages", GIB, Layout::Pages),
        ("64 GiB, blocks (1 GiB)", 64 * GIB, Layout::Blocks),
        ("64 GiB, max 2 MiB", 64 * GIB, Layout::Max2M),
    ];
    for (name, size, layout) in maps {
        if !opts.wants(&format!("map {name}")) && !opts.wants(&format!("unmap {name}")) {
            continue;
        }
        let mut pt = pool.table();
        let mut t = a64_table();
        w_map(&mut pt, size, layout);
        a64_map(&mut t, size, layout);
        check_same(&format!("map {name}"), &mut pt, &t);
        w_unmap(&mut pt, size);
        a64_unmap(&mut t, size);
        check_same("  then unmap", &mut pt, &t);
        pool.recycle(pt);
    }
    if opts.wants(SINGLES) {
        let mut pt = pool.table();
        let mut t = a64_table();
        w_map_singles(&mut pt, PAGES_1G);
        a64_map_singles(&mut t, PAGES_1G);
        check_same(SINGLES, &mut pt, &t);
        pool.recycle(pt);
    }
    println!();
}

// ---- harness ---------------------------------------------------------------

const PAGES_1G: u64 = GIB / KIB4;
const SINGLES: &str = "262144 single-page maps";

/// One sample: build `batch` states untimed, time `op` over all of them,
/// tear them down untimed. Returns the time per state.
fn sample<E, S>(
    env: &mut E,
    batch: usize,
    setup: &impl Fn(&mut E) -> S,
    op: &impl Fn(&mut S),
    teardown: &impl Fn(&mut E, S),
) -> Duration {
    let mut states: Vec<S> = (0..batch).map(|_| setup(env)).collect();
    let t0 = Instant::now();
    for s in states.iter_mut() {
        op(black_box(s));
    }
    let d = t0.elapsed();
    for s in states {
        teardown(env, s);
    }
    d / batch as u32
}

struct Opts {
    filter: String,
    quick: bool,
    extra: bool,
}

impl Opts {
    fn wants(&self, name: &str) -> bool {
        name.contains(self.filter.as_str())
    }
}

#[derive(Clone, Copy)]
struct Stats {
    median: Duration,
    min: Duration,
}

fn stats(v: &mut [Duration]) -> Stats {
    v.sort();
    Stats {
        median: v[v.len() / 2],
        min: v[0],
    }
}

/// The sides of one workload. The first two are the headline comparison
/// (warden on its direct-access MmOps, aarch64-paging as an inactive
/// `IdMap`); the optional others are warden on test-util's `ArenaMm` and
/// aarch64-paging marked active (it then checks break-before-make and walks
/// the range again for TLB maintenance, as warden always does).
type Side<'a> = Box<dyn FnMut() -> Duration + 'a>;

struct Row {
    name: String,
    pages: Option<u64>,
    stats: Vec<Stats>,
    samples: usize,
}

/// Measure every side of a workload, interleaving their samples so that
/// drift (frequency, neighbours' load) hits all of them alike.
fn compare(opts: &Opts, name: &str, pages: Option<u64>, mut sides: Vec<Side<'_>>) -> Option<Row> {
    if !opts.wants(name) {
        return None;
    }
    if !opts.extra {
        sides.truncate(2);
    }
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); sides.len()];
    if opts.quick {
        for (side, t) in sides.iter_mut().zip(times.iter_mut()) {
            t.push(side());
        }
    } else {
        // Warm-up: fault in page pools and malloc's heap, train predictors.
        for _ in 0..3 {
            for side in sides.iter_mut() {
                side();
            }
        }
        let budget = Duration::from_millis(1500 * sides.len() as u64);
        let t0 = Instant::now();
        while times[0].len() < 11 || (t0.elapsed() < budget && times[0].len() < 301) {
            for (side, t) in sides.iter_mut().zip(times.iter_mut()) {
                t.push(side());
            }
        }
    }
    let samples = times[0].len();
    let row = Row {
        name: name.to_string(),
        pages,
        stats: times.iter_mut().map(|t| stats(t)).collect(),
        samples,
    };
    print_row(&row, |s| s.median);
    Some(row)
}

fn fmt_d(d: Duration) -> String {
    let ns = d.as_nanos() as f64;
    if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.1} us", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

fn print_header(extra: bool) {
    print!(
        "{:<30} {:>10} {:>10} {:>6} {:>9} {:>9}",
        "workload", "warden", "a64-paging", "ratio", "w/page", "a/page"
    );
    if extra {
        print!(" | {:>12} {:>10} {:>6}", "warden+Arena", "a64p live", "ratio");
    }
    println!();
}

fn print_row(r: &Row, pick: impl Fn(&Stats) -> Duration) {
    let t: Vec<Duration> = r.stats.iter().map(&pick).collect();
    let ratio = |a: Duration, w: Duration| a.as_secs_f64() / w.as_secs_f64();
    let per_page = |d: Duration| match r.pages {
        Some(n) => format!("{:.2} ns", d.as_nanos() as f64 / n as f64),
        None => "-".into(),
    };
    print!(
        "{:<30} {:>10} {:>10} {:>5.2}x {:>9} {:>9}",
        r.name,
        fmt_d(t[0]),
        fmt_d(t[1]),
        ratio(t[1], t[0]),
        per_page(t[0]),
        per_page(t[1])
    );
    if t.len() == 4 {
        print!(" | {:>12} {:>10} {:>5.2}x", fmt_d(t[2]), fmt_d(t[3]), ratio(t[3], t[0]));
    }
    println!("  [{}]", r.samples);
}

fn main() {
    let mut opts = Opts {
        filter: String::new(),
        quick: false,
        extra: true,
    };
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--quick" => opts.quick = true,
            "--no-extra" => opts.extra = false,
            a if a.starts_with("--") => {} // cargo bench passes --bench
            a => opts.filter = a.to_string(),
        }
    }
    println!(
        "warden-pgtable vs aarch64-paging 0.12: stage 2, {IPA_BITS}-bit IPA, level-1 root, identity map at {BASE:#x}"
    );
    println!("ratio = aarch64-paging / warden (above 1: warden faster); times are medians, [n] samples per side\n");

    let mut lean: Pool<LeanMm> = Pool(Vec::new());
    let mut arena: Pool<ArenaMm> = Pool(Vec::new());
    if !opts.quick {
        sanity(&mut lean, &opts);
    }
    print_header(opts.extra);

    let mut rows = Vec::new();
    let layouts: [(&str, u64, Layout, usize, Option<u64>); 3] = [
        ("1 GiB, 4 KiB pages", GIB, Layout::Pages, 1, Some(PAGES_1G)),
        ("64 GiB, blocks (1 GiB)", 64 * GIB, Layout::Blocks, 64, None),
        ("64 GiB, max 2 MiB", 64 * GIB, Layout::Max2M, 1, None),
    ];

    // Map: fresh empty table, time the map.
    for (name, size, layout, batch, pages) in layouts {
        let sides: Vec<Side> = vec![
            Box::new(|| {
                sample(
                    &mut lean,
                    batch,
                    &|p| p.table(),
                    &|pt| w_map(pt, size, layout),
                    &|p, pt| p.recycle(pt),
                )
            }),
            Box::new(move || {
                sample(
                    &mut (),
                    batch,
                    &|_| a64_table(),
                    &|t| a64_map(t, size, layout),
                    &|_, t| drop(t),
                )
            }),
            Box::new(|| {
                sample(
                    &mut arena,
                    batch,
                    &|p| p.table(),
                    &|pt| w_map(pt, size, layout),
                    &|p, pt| p.recycle(pt),
                )
            }),
            Box::new(move || {
                sample(
                    &mut (),
                    batch,
                    &|_| a64_live(),
                    &|t| a64_map(t, size, layout),
                    &|_, t| a64_drop_live(t),
                )
            }),
        ];
        rows.extend(compare(&opts, &format!("map {name}"), pages, sides));
    }

    // Unmap: table mapped untimed, time the unmap.
    for (name, size, layout, batch, pages) in layouts {
        let w_setup = |p: &mut Pool<LeanMm>| {
            let mut pt = p.table();
            w_map(&mut pt, size, layout);
            pt
        };
        let wa_setup = |p: &mut Pool<ArenaMm>| {
            let mut pt = p.table();
            w_map(&mut pt, size, layout);
            pt
        };
        let a_setup = move |live: bool| {
            let mut t = if live { a64_live() } else { a64_table() };
            a64_map(&mut t, size, layout);
            t
        };
        let sides: Vec<Side> = vec![
            Box::new(|| {
                sample(&mut lean, batch, &w_setup, &|pt| w_unmap(pt, size), &|p, pt| {
                    p.recycle(pt)
                })
            }),
            Box::new(move || {
                sample(&mut (), batch, &|_| a_setup(false), &|t| a64_unmap(t, size), &|_, t| {
                    drop(t)
                })
            }),
            Box::new(|| {
                sample(&mut arena, batch, &wa_setup, &|pt| w_unmap(pt, size), &|p, pt| {
                    p.recycle(pt)
                })
            }),
            Box::new(move || {
                sample(&mut (), batch, &|_| a_setup(true), &|t| a64_unmap(t, size), &|_, t| {
                    a64_drop_live(t)
                })
            }),
        ];
        rows.extend(compare(&opts, &format!("unmap {name}"), pages, sides));
    }

    // One call per page.
    {
        let n = PAGES_1G;
        let sides: Vec<Side> = vec![
            Box::new(|| {
                sample(&mut lean, 1, &|p| p.table(), &|pt| w_map_singles(pt, n), &|p, pt| {
                    p.recycle(pt)
                })
            }),
            Box::new(|| {
                sample(&mut (), 1, &|_| a64_table(), &|t| a64_map_singles(t, n), &|_, t| {
                    drop(t)
                })
            }),
            Box::new(|| {
                sample(&mut arena, 1, &|p| p.table(), &|pt| w_map_singles(pt, n), &|p, pt| {
                    p.recycle(pt)
                })
            }),
            Box::new(|| {
                sample(&mut (), 1, &|_| a64_live(), &|t| a64_map_singles(t, n), &|_, t| {
                    a64_drop_live(t)
                })
            }),
        ];
        rows.extend(compare(&opts, SINGLES, Some(n), sides));
    }

    if rows.is_empty() {
        println!("(no workload matches {:?})", opts.filter);
    } else if !opts.quick {
        println!("\nSame runs, fastest sample of each side (less sensitive to other load on the machine):");
        print_header(opts.extra);
        for r in &rows {
            print_row(r, |s| s.min);
        }
    }
}
