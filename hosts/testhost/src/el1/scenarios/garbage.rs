//! `garbage-hypercalls`: every CPU at once throws random hypercalls at
//! Warden (warden_testhost::garbage picks them). Warden must answer each
//! (no hang: every CPU finishes), say SMCCC_NOT_SUPPORTED for function IDs
//! it does not define, return a listed errno for those it does, preserve
//! x4..x17 as SMCCC 1.1 requires, and end with page ownership exactly as it
//! began: the states of a sample of pages are compared before and after
//! (the generator's rare successes, shares and donations of the calling
//! CPU's scratch pages, are undone at once).

use core::sync::atomic::{AtomicU64, Ordering};

use warden_abi::{self as abi, counter};
use warden_testhost::garbage::{self as gen, Kind, PfnRange, Targets, Undo};
use warden_testhost::machine::{MAX_CPUS, QEMU_VIRT_SMMU};
use warden_testhost::pages::PAGE;
use warden_testhost::rng::XorShift;
use warden_testhost::scenario::is_abi_errno;

use super::super::cpu;
use super::super::report::{Checks, Outcome};
use super::super::smccc;
use super::super::smp::{self, Work};
use super::{no_pages, pfn, standalone, Ctx, SCRATCH_PAGES};

/// Calls per CPU.
const CALLS: u64 = 2000;
/// How long the CPUs get to finish (a few seconds is normal; xtask gives
/// the whole run 60 s, and a hang must be reported by this scenario, not
/// only by xtask's timeout).
const TIMEOUT_MS: u64 = 20_000;
/// Most pages sampled for the before/after comparison.
const MAX_SAMPLES: usize = 8192;

/// What one CPU's run found (indices into `Stats::v`).
mod stat {
    pub const CALLS: usize = 0;
    /// Calls that faulted (no hypervisor).
    pub const FAULTS: usize = 1;
    /// Unknown IDs answered with something other than NOT_SUPPORTED.
    pub const BAD_UNKNOWN: usize = 2;
    /// Known IDs answered with x0 != 0 or an x1 outside the ABI's errnos.
    pub const BAD_KNOWN: usize = 3;
    /// Calls after which x4..x17 had changed.
    pub const CLOBBERED: usize = 4;
    /// Successes undone, and undo calls that failed.
    pub const UNDONE: usize = 5;
    pub const UNDO_FAILED: usize = 6;
    /// Successes that should not have been possible.
    pub const ANOMALIES: usize = 7;
    /// The first offending call: x0, and what came back in x0/x1.
    pub const FIRST_FID: usize = 8;
    pub const FIRST_X0: usize = 9;
    pub const FIRST_X1: usize = 10;
    pub const COUNT: usize = 11;
}

struct Stats {
    v: [AtomicU64; stat::COUNT],
}

impl Stats {
    const fn new() -> Self {
        Stats {
            v: [const { AtomicU64::new(0) }; stat::COUNT],
        }
    }
    fn get(&self, i: usize) -> u64 {
        self.v[i].load(Ordering::Relaxed)
    }
}

/// Per-CPU results, written by that CPU, read by the boot CPU after the
/// work's completion was published (smp.rs's Release/Acquire).
static STATS: [Stats; MAX_CPUS] = [const { Stats::new() }; MAX_CPUS];
/// Per-CPU targets: own scratch base/pages, RAM base/pages, gap, uart,
/// smmu (written by the boot CPU before the work is posted).
static TARGETS: [[AtomicU64; 7]; MAX_CPUS] = [const { [const { AtomicU64::new(0) }; 7] }; MAX_CPUS];

fn targets_of(cpu: usize) -> Targets {
    let t = &TARGETS[cpu];
    let g = |i: usize| t[i].load(Ordering::Relaxed);
    Targets {
        own: PfnRange {
            base: g(0),
            pages: g(1),
        },
        ram: PfnRange {
            base: g(2),
            pages: g(3),
        },
        gap: Some(g(4)).filter(|&p| p != 0),
        uart: g(5),
        smmu: g(6),
    }
}

/// This CPU's share of the calls (run on every CPU at once).
pub fn run_on_this_cpu(index: usize) {
    let t = targets_of(index);
    let s = &STATS[index];
    for v in &s.v {
        v.store(0, Ordering::Relaxed);
    }
    let mut rng = XorShift::new(0x5741_5244_454e_0000 ^ (index as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let bump = |i: usize| s.v[i].store(s.v[i].load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    let offend = |i: usize, x0: u64, r: &[u64; 18]| {
        if s.get(stat::BAD_UNKNOWN) + s.get(stat::BAD_KNOWN) + s.get(stat::CLOBBERED) + s.get(stat::ANOMALIES) == 0 {
            s.v[stat::FIRST_FID].store(x0, Ordering::Relaxed);
            s.v[stat::FIRST_X0].store(r[0], Ordering::Relaxed);
            s.v[stat::FIRST_X1].store(r[1], Ordering::Relaxed);
        }
        bump(i);
    };
    for _ in 0..CALLS {
        let x = gen::random_call(&mut rng, &t);
        let mut r = [0u64; 18];
        r[..7].copy_from_slice(&x);
        // x7..x17: recognisable values that must come back unchanged.
        for (i, v) in r.iter_mut().enumerate().skip(7) {
            *v = 0x6761_7262_0000_0000 | (index as u64) << 16 | i as u64;
        }
        let sent = r;
        bump(stat::CALLS);
        if smccc::hvc_all(&mut r).is_some() {
            bump(stat::FAULTS);
            continue;
        }
        let fid = x[0] as u32;
        if r[4..] != sent[4..] {
            offend(stat::CLOBBERED, x[0], &r);
        }
        // Warden reads w0 only; whether it ignores x0's upper half is
        // SMCCC's business, so only unknown IDs are judged then (they are
        // unknown either way).
        let upper = x[0] >> 32 != 0;
        match gen::kind(fid) {
            Kind::Unknown => {
                if r[0] as i64 != abi::SMCCC_NOT_SUPPORTED {
                    offend(stat::BAD_UNKNOWN, x[0], &r)
                }
            }
            Kind::Other => {}
            _ if upper || fid == abi::FN_CALL_UID || fid == abi::FN_VERSION => {}
            _ => {
                if r[0] != 0 || (r[1] != 0 && !is_abi_errno(r[1] as i64)) {
                    offend(stat::BAD_KNOWN, x[0], &r)
                }
            }
        }
        match gen::undo(&x, [r[0], r[1]]) {
            Undo::Nothing => {}
            Undo::Anomaly => offend(stat::ANOMALIES, x[0], &r),
            Undo::Unshare(p) => {
                bump(stat::UNDONE);
                if smccc::result(abi::FN_HOST_UNSHARE_HYP, &[p]) != Some(0) {
                    bump(stat::UNDO_FAILED);
                }
            }
            Undo::Reclaim(p, n) => {
                bump(stat::UNDONE);
                if smccc::result(abi::FN_HOST_RECLAIM_HYP, &[p, n]) != Some(0) {
                    bump(stat::UNDO_FAILED);
                }
            }
        }
    }
}

/// The pages whose state is compared: every 64th page of RAM (more
/// sparsely if RAM is large), the test pages, Warden's gap, the UART, the
/// SMMU.
fn for_each_sample(ctx: &Ctx, mut f: impl FnMut(u64)) {
    let ram_pages: u64 = ctx.machine.memory().iter().map(|r| r.size / PAGE).sum();
    let stride = (ram_pages / (MAX_SAMPLES as u64 - 64)).max(64);
    for r in ctx.machine.memory() {
        let mut p = pfn(r.base);
        while p < pfn(r.end()) {
            f(p);
            p += stride;
        }
    }
    if let Some(pages) = ctx.pages {
        for a in [
            pages.share,
            pages.kept,
            pages.donate,
            pages.dma[0],
            pages.dma[1],
            pages.dma[2],
        ] {
            f(pfn(a));
        }
        for s in pages.scratch {
            for i in 0..SCRATCH_PAGES {
                f(pfn(s) + i);
            }
        }
    }
    if let Some(g) = ctx.gap {
        f(pfn(g.base));
    }
    f(pfn(ctx.machine.platform.uart.base));
    f(pfn(QEMU_VIRT_SMMU));
}

/// PAGE_STATE of `p` packed in one word (`u64::MAX`: no answer).
fn packed_state(p: u64) -> u64 {
    match smccc::page_state(p) {
        Some((x1, s, pins)) => (x1 as u64 & 0xffff) | (s & 0xffff) << 16 | (pins & 0xffff_ffff) << 32,
        None => u64::MAX,
    }
}

/// The scenario.
pub fn garbage_hypercalls(ctx: &Ctx) -> Outcome {
    let mut c = Checks::new();
    let Some(pages) = ctx.pages else { return no_pages() };
    let ram_lo = ctx.machine.memory().iter().map(|r| r.base).min().unwrap_or(0);
    let ram_hi = ctx.machine.memory().iter().map(|r| r.end()).max().unwrap_or(0);
    for (cpu, t) in TARGETS.iter().enumerate() {
        let v = [
            pfn(pages.scratch[cpu]),
            SCRATCH_PAGES,
            pfn(ram_lo),
            pfn(ram_hi) - pfn(ram_lo),
            ctx.gap.map_or(0, |g| pfn(g.base)),
            pfn(ctx.machine.platform.uart.base),
            pfn(QEMU_VIRT_SMMU),
        ];
        for (a, v) in t.iter().zip(v) {
            a.store(v, Ordering::Relaxed);
        }
    }

    // The sample before.
    static BEFORE: [AtomicU64; MAX_SAMPLES] = [const { AtomicU64::new(0) }; MAX_SAMPLES];
    let mut n = 0;
    for_each_sample(ctx, |p| {
        if n < MAX_SAMPLES {
            BEFORE[n].store(packed_state(p), Ordering::Relaxed);
            n += 1;
        }
    });
    let hypercalls_before = smccc::counter(counter::HYPERCALLS);

    let start = cpu::ticks();
    let finished = smp::run_everywhere(Work::Garbage, TIMEOUT_MS);
    let ms = cpu::ms_since(start);
    let cpus: usize = (0..MAX_CPUS).filter(|&i| i == 0 || smp::online(i)).count();
    let done = finished.iter().filter(|&&f| f).count();
    c.check(
        done == cpus,
        format_args!("only {done} of {cpus} CPUs finished within {TIMEOUT_MS} ms (a hypercall hung?)"),
    );
    let sum = |i: usize| {
        (0..MAX_CPUS)
            .filter(|&k| finished[k])
            .map(|k| STATS[k].get(i))
            .sum::<u64>()
    };
    let calls = sum(stat::CALLS);
    c.note(format_args!("{calls} random hypercalls on {done} CPUs in {ms} ms"));
    if !smccc::under_warden() {
        return standalone(
            c,
            format_args!("no Warden: {} HVCs faulted, the rest QEMU answered", sum(stat::FAULTS)),
        );
    }
    c.check(
        sum(stat::FAULTS) == 0,
        format_args!("{} calls faulted", sum(stat::FAULTS)),
    );
    let first = (0..MAX_CPUS).filter(|&k| finished[k]).map(|k| &STATS[k]).find(|s| {
        s.get(stat::BAD_UNKNOWN) + s.get(stat::BAD_KNOWN) + s.get(stat::CLOBBERED) + s.get(stat::ANOMALIES) > 0
    });
    let problems = [
        (stat::BAD_UNKNOWN, "unknown IDs not answered NOT_SUPPORTED"),
        (
            stat::BAD_KNOWN,
            "known IDs with x0 != 0 or an x1 outside the ABI errnos",
        ),
        (stat::CLOBBERED, "calls clobbered x4..x17"),
        (
            stat::ANOMALIES,
            "unshare/reclaim/guest calls succeeded with nothing to act on",
        ),
        (stat::UNDO_FAILED, "undos of a random success failed"),
    ];
    for (i, what) in problems {
        c.check(sum(i) == 0, format_args!("{} {what}", sum(i)));
    }
    if let Some(s) = first {
        c.note(format_args!(
            "first offender: x0 {:#x} -> x0 {:#x} x1 {:#x}",
            s.get(stat::FIRST_FID),
            s.get(stat::FIRST_X0),
            s.get(stat::FIRST_X1)
        ));
    }
    c.note(format_args!("{} random successes undone", sum(stat::UNDONE)));

    // The sample after.
    let mut i = 0;
    let mut changed = 0;
    let mut first_changed = None;
    for_each_sample(ctx, |p| {
        if i < MAX_SAMPLES {
            let was = BEFORE[i].load(Ordering::Relaxed);
            let now = packed_state(p);
            if was != now {
                changed += 1;
                first_changed.get_or_insert((p, was, now));
            }
            i += 1;
        }
    });
    c.check(
        changed == 0,
        format_args!("{changed} of {n} sampled page states changed, first {first_changed:x?} (pfn, before, after)"),
    );
    c.note(format_args!("{n} sampled page states unchanged"));
    let hypercalls_after = smccc::counter(counter::HYPERCALLS);
    if let (Some(b), Some(a)) = (hypercalls_before, hypercalls_after) {
        c.check(
            a.wrapping_sub(b) >= calls,
            format_args!("HYPERCALLS +{} for {calls} calls", a.wrapping_sub(b)),
        );
    }
    c.outcome()
}
