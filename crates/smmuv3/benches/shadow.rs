//! Cost of DMA isolation, side by side in one run: the shadow's snapshot
//! of a large host, and one donation with the SMMU shadow update against
//! the same donation with no IOMMU. The SMMU is "instant hardware" (a
//! register file that consumes commands as soon as they are published), so
//! the figures are the driver's and the engine's CPU cost plus the
//! commands issued; the hardware's own latency is QEMU's business (issue
//! 5's EL2 measurements).
//! `cargo bench -p warden-smmuv3 --bench shadow`.

use std::time::Instant;

use warden_iommu::{IommuDriver, IommuHook};
use warden_memprotect::*;
use warden_pgtable::testutil::{ArenaMm, CountingTlb};
use warden_pgtable::{PageTable, Regime};
use warden_smmuv3::{regs, CacheMaint, Mmio, Smmu, SmmuConfig, SmmuMem};

/// 16 GiB of RAM at 1 GiB in a 64 GiB physical address space.
const RAM: [Region; 1] = [Region {
    base: 1 << 30,
    size: 16 << 30,
}];
const PA_BITS: u8 = 36;

/// An SMMU register file that answers at once: CR0 acknowledged, GBPA
/// updates done, every published command consumed.
struct InstantSmmu {
    regs: std::collections::HashMap<u64, u64>,
}

impl InstantSmmu {
    fn new() -> Self {
        let mut regs = std::collections::HashMap::new();
        // Like QEMU's: S1+S2, AArch64 tables, coherent, VMID16, 2-level;
        // 16 stream bits, queues up to 2^19; RIL; 44-bit OAS, 4K.
        regs.insert(regs::IDR0, 0b11 | 0b10 << 2 | 1 << 4 | 1 << 18 | 1 << 27);
        regs.insert(regs::IDR1, 16 | 19 << 16 | 19 << 21);
        regs.insert(regs::IDR3, u64::from(regs::IDR3_RIL));
        regs.insert(regs::IDR5, 4 | 1 << 4);
        InstantSmmu { regs }
    }
}

impl Mmio for InstantSmmu {
    fn read32(&mut self, off: u64) -> u32 {
        self.regs.get(&off).copied().unwrap_or(0) as u32
    }
    fn write32(&mut self, off: u64, val: u32) {
        let val = u64::from(val);
        match off {
            regs::CR0 => {
                self.regs.insert(regs::CR0ACK, val);
            }
            regs::GBPA => {
                self.regs.insert(off, val & !u64::from(regs::gbpa::UPDATE));
                return;
            }
            regs::CMDQ_PROD => {
                self.regs.insert(regs::CMDQ_CONS, val);
            }
            _ => {}
        }
        self.regs.insert(off, val);
    }
    fn read64(&mut self, off: u64) -> u64 {
        self.regs.get(&off).copied().unwrap_or(0)
    }
    fn write64(&mut self, off: u64, val: u64) {
        self.regs.insert(off, val);
    }
}

/// Structure memory: a bump arena.
struct Arena {
    base: u64,
    words: Vec<u64>,
    next: u64,
}

impl CacheMaint for Arena {
    fn clean(&mut self, _: u64, _: u64) {}
    fn invalidate(&mut self, _: u64, _: u64) {}
}

impl SmmuMem for Arena {
    fn alloc(&mut self, pages: usize) -> Option<u64> {
        let bytes = pages as u64 * 4096;
        let pa = (self.base + self.next).next_multiple_of(bytes);
        let end = pa + bytes - self.base;
        if end > self.words.len() as u64 * 8 {
            return None;
        }
        self.next = end;
        Some(pa)
    }
    fn read64(&self, pa: u64) -> u64 {
        self.words[((pa - self.base) / 8) as usize]
    }
    fn write64(&mut self, pa: u64, val: u64) {
        self.words[((pa - self.base) / 8) as usize] = val;
    }
    fn publish(&mut self) {}
}

struct NoCache;

impl CacheMaint for NoCache {
    fn clean(&mut self, _: u64, _: u64) {}
    fn invalidate(&mut self, _: u64, _: u64) {}
}

type Driver = Smmu<InstantSmmu, Arena, ArenaMm, NoCache>;

fn driver() -> Driver {
    let mem = Arena {
        base: 0x7_0000_0000,
        words: vec![0; 64 * 512],
        next: 0,
    };
    let cfg = SmmuConfig {
        pa_bits: PA_BITS,
        streams: 256,
        vmid: 1,
        poll_limit: 1000,
    };
    Smmu::new(
        InstantSmmu::new(),
        mem,
        ArenaMm::new(0x8_0000_0000, 16384),
        NoCache,
        &RAM,
        cfg,
    )
    .unwrap()
}

struct NoClear;

impl Poison for NoClear {
    fn poison(&mut self, _: u64) {}
}

macro_rules! platform {
    ($name:ident, $hook:ty) => {
        struct $name;
        impl Platform for $name {
            type Lock = spin::mutex::SpinMutex<()>;
            type HostMm = ArenaMm;
            type HostTlb = CountingTlb;
            type HypMm = ArenaMm;
            type HypTlb = CountingTlb;
            type Hook = $hook;
            type GuestMm = ArenaMm;
            type GuestTlb = CountingTlb;
            type Poison = NoClear;
        }
    };
}

platform!(WithSmmu, IommuHook<Driver>);
platform!(NoIommu, ());

fn host<
    P: Platform<HostMm = ArenaMm, HostTlb = CountingTlb, HypMm = ArenaMm, HypTlb = CountingTlb, Poison = NoClear>,
>(
    meta: &[PageMeta],
    hook: P::Hook,
) -> MemProtect<'_, P> {
    let ram = RamMap::new(&RAM, meta, u32::from(PA_BITS)).unwrap();
    let s2 = Regime::Stage2 {
        ipa_bits: PA_BITS,
        vmid: 0,
        fwb: true,
    };
    let host_s2 = PageTable::new(s2, ArenaMm::new(0x100_0000_0000, 16384), CountingTlb::default()).unwrap();
    let s1 = Regime::El2Stage1 { va_bits: 48 };
    let hyp_s1 = PageTable::new(s1, ArenaMm::new(0x200_0000_0000, 16384), CountingTlb::default()).unwrap();
    MemProtect::new(ram, host_s2, hyp_s1, hook, NoClear)
}

fn median(mut t: Vec<f64>) -> f64 {
    t.sort_by(|a, b| a.partial_cmp(b).unwrap());
    t[t.len() / 2]
}

fn main() {
    let n = RamMap::pages_of(&RAM);
    // Per-page metadata is each host's own state.
    let metas: Vec<Vec<PageMeta>> = (0..3).map(|_| (0..n).map(|_| PageMeta::default()).collect()).collect();
    let base = RAM[0].base >> 12;
    println!("warden-smmuv3 shadow (instant SMMU registers, arena tables; 64 GiB PA space, 16 GiB RAM)");
    println!("{:<52} {:>12} {:>16}", "workload", "median", "per transition");

    // Snapshot: the host has mapped all its RAM lazily and given Warden a
    // 64 MiB carve-out plus 256 scattered pages.
    let mp = host::<WithSmmu>(&metas[0], IommuHook::new(driver()));
    let mut pa = RAM[0].base;
    while pa < RAM[0].end() {
        mp.host_abort(pa).unwrap();
        pa += 1 << 30;
    }
    mp.host_donate_hyp(base + (8 << 18), 64 << 8).unwrap();
    for i in 0..256 {
        mp.host_donate_hyp(base + 1000 + i * 8191, 1).unwrap();
    }
    let mut pages = 0;
    let t = median(
        (0..21)
            .map(|_| {
                let mut d = driver();
                let start = Instant::now();
                mp.with_host(|h| d.snapshot(&mut h.s2)).unwrap();
                let t = start.elapsed().as_nanos() as f64;
                pages = d.shadow().table().mm().inner().live_pages();
                t
            })
            .collect(),
    );
    println!(
        "{:<52} {:>9.1} us {:>16}",
        "snapshot (16 GiB RAM, 64 MiB + 256 pages donated)",
        t / 1e3,
        format!("{pages} table pages")
    );

    // One donation and its return, with the SMMU shadow and without an
    // IOMMU, on pages of an already split 2 MiB block.
    let with = host::<WithSmmu>(&metas[1], IommuHook::new(driver()));
    with.with_host(|h| {
        let d = h.hook.driver_mut();
        d.snapshot(&mut h.s2)?;
        d.init()
    })
    .unwrap();
    let without = host::<NoIommu>(&metas[2], ());
    with.host_abort(RAM[0].base).unwrap();
    without.host_abort(RAM[0].base).unwrap();
    // Split first (the first page out of a block costs a second batch).
    let before = with.with_host(|h| h.hook.driver().stats());
    with.host_donate_hyp(base + 600, 1).unwrap();
    let split = with.with_host(|h| h.hook.driver().stats());
    without.host_donate_hyp(base + 600, 1).unwrap();
    let rounds = 1000u64;
    let per_round = |f: &mut dyn FnMut(u64)| {
        median(
            (0..31)
                .map(|_| {
                    let start = Instant::now();
                    for i in 0..rounds {
                        f(base + 1 + (i % 500));
                    }
                    start.elapsed().as_nanos() as f64 / (2 * rounds) as f64
                })
                .collect(),
        )
    };
    let s0 = with.with_host(|h| h.hook.driver().stats());
    let t_with = per_round(&mut |p| {
        with.host_donate_hyp(p, 1).unwrap();
        with.hyp_donate_host(p, 1).unwrap();
    });
    let s1 = with.with_host(|h| h.hook.driver().stats());
    let t_without = per_round(&mut |p| {
        without.host_donate_hyp(p, 1).unwrap();
        without.hyp_donate_host(p, 1).unwrap();
    });
    let transitions = (2 * 31 * rounds) as f64;
    let per = |x: u64| x as f64 / transitions;
    println!(
        "{:<52} {:>12} {:>13.1} ns  ({:.2} TLBI + {:.2} SYNC each)",
        "donate_hyp / hyp_donate_host, 1 page, SMMU shadow",
        "",
        t_with,
        per(s1.tlbis - s0.tlbis),
        per(s1.syncs - s0.syncs)
    );
    println!(
        "{:<52} {:>12} {:>13.1} ns  ({:.2}x)",
        "donate_hyp / hyp_donate_host, 1 page, no IOMMU",
        "",
        t_without,
        t_with / t_without
    );
    println!(
        "{:<52} {:>12} {:>16}",
        "first page out of a 1 GiB block, SMMU shadow",
        "",
        format!(
            "{} TLBI + {} SYNC",
            split.tlbis - before.tlbis,
            split.syncs - before.syncs
        )
    );
}
