//! `dma-edu`: DMA isolation with QEMU's edu device behind the SMMU.
//!
//! (a) edu can DMA to and from the host's own RAM (a pattern goes RAM ->
//! device -> another RAM page); (b) it cannot write Warden's memory, nor
//! read it back out; (c) it cannot write a page the host donated
//! (`donate-reclaim` kept one), whose bytes are intact (or zeroed by
//! Warden) when reclaimed; (d) it cannot write the SMMU's own registers.
//! The host cannot see into Warden's memory or the SMMU, so the evidence
//! for (b)-(d) is Warden's SMMU_FAULTS counter (reading it drains the
//! event queue) going up for each refused transfer.

use warden_abi::{self as abi, counter};
use warden_testhost::machine::QEMU_VIRT_SMMU;
use warden_testhost::pages::PAGE;

use super::super::pci::{self, Dma, Edu, EDU_BUF_SIZE, EDU_ID};
use super::super::report::{Checks, Outcome};
use super::super::smccc;
use super::{errno, fill, is_zero, mismatches, pfn, Ctx};

const PATTERN_A: u64 = 0xd3a0_0000_0000_00a1;
const PATTERN_B: u64 = 0xd3a0_0000_0000_00b2;
/// What a page is filled with before a transfer must overwrite it.
const STALE: u64 = 0x5757_5757_5757_5757;
/// The arm64 Image header's magic, at 0x38 of Warden's first page.
const IMAGE_MAGIC: u32 = 0x644d_5241;

/// SMMU_FAULTS before and after `f`, if Warden answers.
fn faults_during(f: impl FnOnce() -> Dma) -> (Dma, Option<u64>) {
    let before = smccc::counter(counter::SMMU_FAULTS);
    let d = f();
    let after = smccc::counter(counter::SMMU_FAULTS);
    (d, before.zip(after).map(|(b, a)| a.wrapping_sub(b)))
}

/// Whether the page at `dst` holds a copy of the page at `src` as filled
/// with `pattern` (each word `pattern ^ its source address`).
///
/// # Safety
/// `dst` must be one of the scenario's own pages.
unsafe fn holds_copy(dst: u64, src: u64, pattern: u64, len: u64) -> bool {
    (0..len).step_by(8).all(|o| {
        // SAFETY: the caller's page.
        unsafe { ((dst + o) as *const u64).read_volatile() == pattern ^ (src + o) }
    })
}

/// Check a refused transfer: it completed (start bit cleared) and the
/// SMMU reported a fault.
fn refused(c: &mut Checks, what: &str, r: (Dma, Option<u64>)) -> u64 {
    c.check(r.0 == Dma::Done, format_args!("DMA {what}: {:?}", r.0));
    let n = r.1.unwrap_or(0);
    c.check(
        n > 0,
        format_args!(
            "DMA {what}: SMMU_FAULTS {}",
            r.1.map_or("unreadable", |_| "did not move")
        ),
    );
    n
}

/// The scenario.
pub fn dma_edu(ctx: &mut Ctx) -> Outcome {
    let mut c = Checks::new();
    run(ctx, &mut c);
    // Whatever happened, the kept page goes back to the host.
    if ctx.kept_donated {
        if let Some(p) = ctx.pages {
            let r = smccc::result(abi::FN_HOST_RECLAIM_HYP, &[pfn(p.kept), 1]);
            ctx.kept_donated = r != Some(0);
            c.check(r == Some(0), format_args!("reclaim of the kept page = {}", errno(r)));
        }
    }
    c.outcome()
}

fn run(ctx: &mut Ctx, c: &mut Checks) {
    let Some(pages) = ctx.pages else {
        c.check(false, format_args!("no test pages"));
        return;
    };
    let Some(host) = ctx.machine.pci else {
        c.check(false, format_args!("no pci-host-ecam-generic node in the device tree"));
        return;
    };
    let Some(window) = host.mmio32 else {
        c.check(false, format_args!("the PCIe host has no 32-bit memory window"));
        return;
    };
    let Some(f) = pci::find(&host, EDU_ID) else {
        c.check(
            false,
            format_args!("no edu device (1234:11e8) on bus {}", host.first_bus),
        );
        return;
    };
    let bar = match pci::enable(&f, &window) {
        Ok(b) => b,
        Err(e) => {
            c.check(false, format_args!("edu BAR0: {e}"));
            return;
        }
    };
    let edu = match Edu::new(bar) {
        Ok(e) => e,
        Err(v) => {
            c.check(false, format_args!("BAR0 at {:#x} reads {v:#x}, not edu", bar.cpu));
            return;
        }
    };
    c.check(edu.alive(), format_args!("edu's liveness register does not invert"));
    let (b, d, fun) = f.bdf;
    c.note(format_args!(
        "edu {b:02x}:{d:02x}.{fun} requester ID {:#06x} -> stream {:#x} ({}), BAR0 {:#x} ({} KiB)",
        f.rid(),
        host.stream_id(f.rid()),
        if host.iommu_map.is_some() {
            "iommu-map"
        } else {
            "no iommu-map: RID"
        },
        bar.cpu,
        bar.size >> 10
    ));

    // (a) RAM -> edu -> RAM, the host's own pages.
    let [src, dst, dst2] = pages.dma;
    // SAFETY: the scenario's own pages, used for nothing else.
    unsafe {
        fill(src, 1, PATTERN_A);
        fill(dst, 1, STALE);
    }
    let a1 = edu.ram_to_device(src, EDU_BUF_SIZE);
    let a2 = edu.device_to_ram(dst, EDU_BUF_SIZE);
    // SAFETY: as above.
    let copied = unsafe { holds_copy(dst, src, PATTERN_A, PAGE) };
    c.check(
        a1 == Dma::Done && a2 == Dma::Done && copied,
        format_args!(
            "DMA within host RAM: {a1:?}/{a2:?}, copy {}",
            if copied { "ok" } else { "wrong" }
        ),
    );
    if !copied {
        return;
    }
    c.note(format_args!("(a) {src:#x} -> edu -> {dst:#x} ok"));

    if !smccc::under_warden() {
        c.skip(format_args!("(b)-(d) need Warden's SMMU_FAULTS"));
        return;
    }

    // (b) Warden's memory: write, then read back out.
    let total = match ctx.gap {
        Some(g) => {
            let w = faults_during(|| edu.device_to_ram(g.base, 64));
            let mut n = refused(c, "edu -> Warden's memory", w);
            // SAFETY: the scenario's own page.
            unsafe { fill(dst2, 1, STALE) };
            let r = faults_during(|| edu.ram_to_device(g.base, 64));
            n += refused(c, "Warden's memory -> edu", r);
            let out = edu.device_to_ram(dst2, 64);
            // SAFETY: the scenario's own page.
            let magic = unsafe { ((dst2 + 0x38) as *const u32).read_volatile() };
            c.check(
                out == Dma::Done && magic != IMAGE_MAGIC,
                format_args!("Warden's image header leaked through edu ({out:?})"),
            );
            c.note(format_args!("(b) Warden's {:#x} not written nor read", g.base));
            n
        }
        None => {
            c.check(false, format_args!("no gap in the host's RAM to aim at"));
            0
        }
    };

    // Reload the device buffer with a second pattern (the refused read
    // may have left it zeroed): the pattern (c) must not find.
    // SAFETY: the scenario's own pages.
    unsafe {
        fill(src, 1, PATTERN_B);
        fill(dst, 1, STALE);
    }
    edu.ram_to_device(src, EDU_BUF_SIZE);
    edu.device_to_ram(dst, EDU_BUF_SIZE);
    // SAFETY: as above.
    let reloaded = unsafe { holds_copy(dst, src, PATTERN_B, PAGE) };
    c.check(reloaded, format_args!("reloading edu's buffer failed"));

    // (c) the donated page.
    let k = pages.kept;
    let mut total = total;
    if ctx.kept_donated {
        let r = faults_during(|| edu.device_to_ram(k, EDU_BUF_SIZE));
        total += refused(c, "edu -> donated page", r);
        let back = smccc::result(abi::FN_HOST_RECLAIM_HYP, &[pfn(k), 1]);
        ctx.kept_donated = back != Some(0);
        c.check(back == Some(0), format_args!("reclaim of {k:#x} = {}", errno(back)));
        if back == Some(0) {
            // SAFETY: our page again.
            let (intact, zero, hit) = unsafe {
                (
                    mismatches(k, 1, ctx.kept_fill) == 0,
                    is_zero(k),
                    holds_copy(k, src, PATTERN_B, 64),
                )
            };
            c.check(
                !hit && (intact || zero),
                format_args!("the donated page {k:#x} was written by DMA"),
            );
            c.note(format_args!(
                "(c) donated {k:#x} untouched ({})",
                if intact { "fill intact" } else { "zeroed on reclaim" }
            ));
        }
    } else {
        c.check(false, format_args!("no donated page from donate-reclaim to aim at"));
    }

    // (d) the SMMU's registers (IDR0/IDR1: read-only, in case it lands).
    let r = faults_during(|| edu.device_to_ram(QEMU_VIRT_SMMU, 8));
    total += refused(c, "edu -> SMMU registers", r);
    c.note(format_args!(
        "(d) SMMU {QEMU_VIRT_SMMU:#x} not written; SMMU_FAULTS +{total}"
    ));
}
