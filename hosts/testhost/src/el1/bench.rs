//! Cost figures for BENCHMARKS.md (`cargo xtask bench`): how many
//! instructions a host operation costs, Warden's EL2 work included.
//!
//! `cargo xtask bench` runs QEMU with `-icount shift=0`: the virtual clock
//! then advances exactly one nanosecond per instruction executed, so the
//! 1 GHz virtual counter (CNTVCT_EL0) read before and after an operation
//! counts its instructions, on any machine, the same on every run. The
//! counter is read with an ISB in front; a baseline (two reads back to
//! back) is subtracted. Runs only with `testhost.bench` on the command line
//! and under Warden; prints `BENCH <name> first=<n> min=<n> runs=<k>`, then
//! `BENCH done` and powers off (the scenarios' DMA timers and multi-CPU
//! runs are slow under `-icount`, and a bench run is not a test run).

use core::arch::asm;

use warden_abi as abi;

use super::console::println;
use super::cpu;
use super::scenarios::Ctx;
use super::smccc;

/// Repetitions per operation.
const RUNS: usize = 8;

/// `HVC #0` with `x0..=x2`; returns `x1` (the call's result). No fault
/// catching here: only implemented functions with valid arguments are
/// measured, and the catching code would be measured too.
fn hvc(fid: u32, a1: u64, a2: u64) -> i64 {
    let r1: u64;
    // SAFETY: an SMCCC call to Warden, which changes only x0-x17 (declared
    // clobbered) and no memory of ours.
    unsafe {
        asm!(
            "hvc #0",
            inout("x0") fid as u64 => _,
            inout("x1") a1 => r1,
            inout("x2") a2 => _,
            out("x3") _, out("x4") _, out("x5") _, out("x6") _, out("x7") _,
            out("x8") _, out("x9") _, out("x10") _, out("x11") _,
            out("x12") _, out("x13") _, out("x14") _, out("x15") _,
            out("x16") _, out("x17") _,
            options(nostack),
        )
    };
    r1 as i64
}

/// Counter ticks `f` takes (instructions under `-icount shift=0`).
fn measure(f: impl FnOnce()) -> u64 {
    let t0 = cpu::ticks();
    f();
    cpu::ticks().wrapping_sub(t0)
}

/// First and smallest of `RUNS` measurements of `f(i)`, minus `base`.
fn series(name: &str, base: u64, mut f: impl FnMut(usize) -> u64) {
    let mut first = 0;
    let mut min = u64::MAX;
    for i in 0..RUNS {
        let t = f(i).saturating_sub(base);
        if i == 0 {
            first = t;
        }
        min = min.min(t);
    }
    println!("BENCH {name} first={first} min={min} runs={RUNS}");
}

/// Measure, if asked to and under Warden. Runs on the boot CPU before the
/// secondaries start and before `lazy-map` touches RAM, so that the
/// stage-2 faults it measures are first touches of unmapped 2 MiB blocks.
pub fn run(ctx: &Ctx) {
    if !ctx.machine.platform.has_bootarg("testhost.bench") || !smccc::under_warden() {
        return;
    }
    let Some(pages) = ctx.pages else {
        println!("BENCH warning: no test pages; nothing measured");
        super::report::power_off()
    };
    let base = (0..RUNS).map(|_| measure(|| {})).min().unwrap_or(0);
    println!("BENCH baseline ticks={base} (subtracted below)");
    series("hvc-version", base, |_| {
        measure(|| {
            let _ = hvc(abi::FN_VERSION, 0, 0);
        })
    });
    let pfn = pages.share / 4096;
    // Fault the page in first: shares do not touch the stage 2, but the
    // page's block must be mapped for the host to use it at all.
    // SAFETY: the share page is the test host's own RAM.
    unsafe { (pages.share as *const u64).read_volatile() };
    let mut ok = true;
    series("share-hyp", base, |_| {
        let t = measure(|| ok &= hvc(abi::FN_HOST_SHARE_HYP, pfn, 0) == 0);
        ok &= hvc(abi::FN_HOST_UNSHARE_HYP, pfn, 0) == 0;
        t
    });
    series("unshare-hyp", base, |_| {
        ok &= hvc(abi::FN_HOST_SHARE_HYP, pfn, 0) == 0;
        measure(|| ok &= hvc(abi::FN_HOST_UNSHARE_HYP, pfn, 0) == 0)
    });
    // A donation unmaps the page from the host stage-2 (splitting the
    // block the first time) and from the SMMU's shadow (one TLBI and one
    // CMD_SYNC); the reclaim maps it back.
    let dpfn = pages.donate / 4096;
    series("donate-hyp (with SMMU update)", base, |_| {
        let t = measure(|| ok &= hvc(abi::FN_HOST_DONATE_HYP, dpfn, 1) == 0);
        ok &= hvc(abi::FN_HOST_RECLAIM_HYP, dpfn, 1) == 0;
        t
    });
    series("reclaim-hyp (with SMMU update)", base, |_| {
        ok &= hvc(abi::FN_HOST_DONATE_HYP, dpfn, 1) == 0;
        measure(|| ok &= hvc(abi::FN_HOST_RECLAIM_HYP, dpfn, 1) == 0)
    });
    // Stage-2 faults: first touches of 2 MiB blocks below the test pages
    // (the top of the highest free run), each mapped whole by Warden.
    let top = ctx.free.runs().last().map_or(0, |r| r.end());
    let first_block = (top & !((2 << 20) - 1)).saturating_sub(32 << 20);
    let inside = ctx
        .free
        .runs()
        .iter()
        .any(|r| r.base <= first_block && first_block + (RUNS as u64) * (2 << 20) <= r.end());
    if inside {
        series("stage2-fault (2 MiB block mapped)", base, |i| {
            let addr = first_block + i as u64 * (2 << 20);
            measure(|| {
                // SAFETY: free RAM of the test host's, never touched
                // before: the read faults to Warden, which maps the block.
                let _ = unsafe { (addr as *const u64).read_volatile() };
            })
        });
    }
    if !ok {
        println!("BENCH warning: a measured call failed; the figures above are not valid");
    }
    println!("BENCH done");
    super::report::power_off()
}
