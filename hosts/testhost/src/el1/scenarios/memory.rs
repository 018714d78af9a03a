//! The memory scenarios: lazy mapping of the host's RAM, sharing and
//! donating pages (with hostile variants, each with its exact errno where
//! the ABI fixes one), and attacks on memory that is not the host's:
//! Warden's own, and the SMMU's registers.

use warden_abi::{self as abi, counter, page_state, Errno};
use warden_testhost::machine::QEMU_VIRT_SMMU;
use warden_testhost::pages::{block_fault_bound, PAGE};

use super::super::exception::{self, ec, Fault};
use super::super::report::{Checks, Outcome};
use super::super::smccc;
use super::{errno, fill, is_zero, mismatches, no_pages, pfn, standalone, state_name, state_of, Ctx};

/// The 2 MiB block Warden maps per fault, at most.
const BLOCK: u64 = 2 << 20;
/// Faults allowed beyond one per 2 MiB (blocks straddling runs, other
/// CPUs' and the test host's own activity).
const FAULT_SLACK: u64 = 16;
/// The pattern `lazy-map` writes (xor the address).
const LAZY_PATTERN: u64 = 0x1a27_3a90_0000_0001;
/// `donate-reclaim`'s fill patterns.
const DONATE_FILL: u64 = 0xd0d0_0000_0000_0000;
const KEPT_FILL: u64 = 0x4b45_5054_0000_0000;

fn hyp(fid: u32, args: &[u64]) -> Option<i64> {
    smccc::result(fid, args)
}

fn describe(f: Option<Fault>) -> FaultText {
    FaultText(f)
}

/// A fault for a detail: "no abort" or "EC .. FAR ..".
struct FaultText(Option<Fault>);

impl core::fmt::Display for FaultText {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.0 {
            None => write!(f, "no abort"),
            Some(x) => write!(f, "EC {:#x} FAR {:#x} (ESR {:#x})", x.ec(), x.far, x.esr),
        }
    }
}

/// Check that `fault` is the abort Warden must inject for `addr`: an
/// abort of class `class` from the current EL, a synchronous external
/// abort (docs/abi.md), reporting `addr`.
fn expect_abort(c: &mut Checks, what: &str, addr: u64, fault: Option<Fault>, class: u64) -> bool {
    c.check(
        fault.is_some_and(|f| f.is_abort_at(class, addr) && f.fsc() == ec::FSC_EXTERNAL),
        format_args!(
            "{what} {addr:#x}: {}, want EC {class:#x} FSC {:#x} FAR {addr:#x}",
            describe(fault),
            ec::FSC_EXTERNAL
        ),
    )
}

/// `lazy-map`: every free page of the host's RAM is readable and
/// writable, and Warden maps it in blocks (one fault per 2 MiB at most).
pub fn lazy_map(ctx: &Ctx) -> Outcome {
    let mut c = Checks::new();
    let before = smccc::counter(counter::HOST_FAULTS_MAPPED);
    let mut pages = 0u64;
    let mut bad = 0u64;
    for run in ctx.free.runs() {
        for a in (run.base..run.end()).step_by(PAGE as usize) {
            // One word per page: the first touch of each block faults it in.
            // SAFETY: free RAM of the host's (not the image, the tree or a
            // reservation): no Rust object lives there, and the pages set
            // aside for later scenarios are not in use yet.
            unsafe {
                let p = a as *mut u64;
                p.write_volatile(LAZY_PATTERN ^ a);
                if p.read_volatile() != LAZY_PATTERN ^ a {
                    bad += 1;
                }
            }
            pages += 1;
        }
    }
    let after = smccc::counter(counter::HOST_FAULTS_MAPPED);
    c.check(bad == 0, format_args!("{bad} pages read back wrong"));
    c.check(pages > 0, format_args!("no free RAM to touch"));
    let bytes = pages * PAGE;
    // One fault per 2 MiB block, except at the unaligned ends of the
    // host's RAM regions, where only pages fit (next to Warden's memory,
    // if Warden's carve-out is not 2 MiB aligned).
    let (blocks, edge_pages) = block_fault_bound(ctx.machine.memory());
    let bound = (blocks + edge_pages).min(bytes / BLOCK + edge_pages) + FAULT_SLACK;
    c.note(format_args!(
        "{pages} pages ({} MiB) in {} runs read and written",
        bytes >> 20,
        ctx.free.runs().len()
    ));
    match (before, after) {
        (Some(b), Some(a)) => {
            let faults = a.wrapping_sub(b);
            c.check(faults > 0, format_args!("HOST_FAULTS_MAPPED did not move ({b})"));
            c.check(
                faults <= bound,
                format_args!("{faults} stage-2 faults for {pages} pages, more than {bound}: not mapped in blocks"),
            );
            c.note(format_args!(
                "{faults} faults mapped (bound {bound}: {blocks} 2 MiB blocks + {edge_pages} pages at unaligned \
                 region ends + {FAULT_SLACK})"
            ));
        }
        _ => c.skip(format_args!("HOST_FAULTS_MAPPED not readable (no Warden)")),
    }
    c.outcome()
}

/// `share-hyp`: share and unshare one page, then the hostile variants.
pub fn share_hyp(ctx: &Ctx) -> Outcome {
    let mut c = Checks::new();
    let Some(pages) = ctx.pages else { return no_pages() };
    let page = pages.share;
    let p = pfn(page);
    let Some(initial) = state_of(page) else {
        return standalone(c, format_args!("FN_HOST_PAGE_STATE not answered (no Warden)"));
    };
    c.check(
        initial == page_state::OWNED,
        format_args!("page {page:#x} starts {}, want OWNED", state_name(Some(initial))),
    );

    let r = hyp(abi::FN_HOST_SHARE_HYP, &[p]);
    c.check(r == Some(0), format_args!("share {page:#x} = {}, want 0", errno(r)));
    let s = state_of(page);
    c.check(
        s == Some(page_state::SHARED_OWNED),
        format_args!("after share: {}, want SHARED_OWNED", state_name(s)),
    );
    let r = hyp(abi::FN_HOST_SHARE_HYP, &[p]);
    c.check(
        r == Some(Errno::Perm as i64),
        format_args!("double share = {}, want -EPERM", errno(r)),
    );
    let r = hyp(abi::FN_HOST_UNSHARE_HYP, &[p]);
    c.check(r == Some(0), format_args!("unshare = {}, want 0", errno(r)));
    let s = state_of(page);
    c.check(
        s == Some(page_state::OWNED),
        format_args!("after unshare: {}, want OWNED", state_name(s)),
    );
    let r = hyp(abi::FN_HOST_UNSHARE_HYP, &[p]);
    c.check(
        r == Some(Errno::Perm as i64),
        format_args!("unshare of a page not shared = {}, want -EPERM", errno(r)),
    );
    c.note(format_args!(
        "share/unshare {page:#x} ok, double share and stray unshare -EPERM"
    ));

    // Past the physical address space (2^52 bytes and beyond, past any
    // PA size): -EINVAL (docs/abi.md), nothing changes.
    for bogus in [u64::MAX, 1 << 40, u64::MAX >> 12] {
        let r = hyp(abi::FN_HOST_SHARE_HYP, &[bogus]);
        c.check(
            r == Some(Errno::Inval as i64),
            format_args!("share of pfn {bogus:#x} = {}, want -EINVAL", errno(r)),
        );
        let r = hyp(abi::FN_HOST_UNSHARE_HYP, &[bogus]);
        c.check(
            r == Some(Errno::Inval as i64),
            format_args!("unshare of pfn {bogus:#x} = {}, want -EINVAL", errno(r)),
        );
    }
    c.note(format_args!("pfns past the PA space -EINVAL"));

    // Warden's own page.
    match ctx.gap {
        Some(g) => {
            let r = hyp(abi::FN_HOST_SHARE_HYP, &[pfn(g.base)]);
            c.check(
                r == Some(Errno::Perm as i64),
                format_args!("share of Warden's page {:#x} = {}, want -EPERM", g.base, errno(r)),
            );
            let s = state_of(g.base);
            c.check(
                s == Some(page_state::NO_PAGE),
                format_args!(
                    "Warden's page {:#x} is {} to the host, want NO_PAGE",
                    g.base,
                    state_name(s)
                ),
            );
            c.note(format_args!("Warden's page {:#x}: NO_PAGE, share -EPERM", g.base));
        }
        None => {
            c.check(
                false,
                format_args!("no gap in the host's RAM: Warden's memory not hidden"),
            );
        }
    }
    // MMIO: the UART (the host may map it, but it is not RAM to share).
    let uart = ctx.machine.platform.uart.base;
    let r = hyp(abi::FN_HOST_SHARE_HYP, &[pfn(uart)]);
    c.check(
        r == Some(Errno::Perm as i64),
        format_args!("share of the UART {uart:#x} = {}, want -EPERM", errno(r)),
    );
    let s = smccc::page_state(pfn(uart)).map(|s| s.0);
    c.check(
        s == Some(Errno::NoEnt as i64),
        format_args!("PAGE_STATE of the UART = {}, want -ENOENT", errno(s)),
    );
    c.note(format_args!(
        "UART share -EPERM; unshare-while-pinned not reachable from the host (Warden pins)"
    ));
    let s = state_of(page);
    c.check(
        s == Some(page_state::OWNED),
        format_args!("page {page:#x} ends {}, want OWNED", state_name(s)),
    );
    c.outcome()
}

/// `donate-reclaim`: donate four pages, find them gone, fail to reclaim
/// them wrongly, reclaim them exactly; keep one more page donated for
/// `dma-edu`.
pub fn donate_reclaim(ctx: &mut Ctx) -> Outcome {
    let mut c = Checks::new();
    let Some(pages) = ctx.pages else { return no_pages() };
    let q = pages.donate;
    let qp = pfn(q);
    // SAFETY: the scenario's own pages, unused by anything else.
    unsafe { fill(q, 4, DONATE_FILL) };
    if state_of(q).is_none() {
        return standalone(c, format_args!("FN_HOST_PAGE_STATE not answered (no Warden)"));
    }
    let r = hyp(abi::FN_HOST_DONATE_HYP, &[qp, 4]);
    c.check(r == Some(0), format_args!("donate {q:#x} x4 = {}, want 0", errno(r)));
    for i in 0..4 {
        let s = state_of(q + i * PAGE);
        c.check(
            s == Some(page_state::NO_PAGE),
            format_args!("donated page {:#x} is {}, want NO_PAGE", q + i * PAGE, state_name(s)),
        );
    }
    let probe = q + PAGE + 0x18;
    expect_abort(
        &mut c,
        "read of donated",
        probe,
        exception::probe_read(probe),
        ec::DABT_CUR,
    );
    let probe_w = q + 2 * PAGE;
    // SAFETY: the scenario's own page; it is donated, so the store must
    // abort, and if it does not it lands in our own page.
    let f = unsafe { exception::probe_write(probe_w, 0xbad) };
    expect_abort(&mut c, "write of donated", probe_w, f, ec::DABT_CUR);

    let hostile: [(&str, u32, [u64; 2]); 7] = [
        ("share of a donated page", abi::FN_HOST_SHARE_HYP, [qp, 0]),
        ("donating it again", abi::FN_HOST_DONATE_HYP, [qp, 4]),
        ("donating an overlapping range", abi::FN_HOST_DONATE_HYP, [qp + 3, 2]),
        ("reclaim with count 3", abi::FN_HOST_RECLAIM_HYP, [qp, 3]),
        ("reclaim with count 5", abi::FN_HOST_RECLAIM_HYP, [qp, 5]),
        ("reclaim from the second page", abi::FN_HOST_RECLAIM_HYP, [qp + 1, 3]),
        (
            "reclaim of a page never donated",
            abi::FN_HOST_RECLAIM_HYP,
            [pfn(pages.share), 1],
        ),
    ];
    for (what, fid, args) in hostile {
        let r = hyp(fid, &args);
        c.check(
            r == Some(Errno::Perm as i64),
            format_args!("{what} = {}, want -EPERM", errno(r)),
        );
    }
    for (what, args) in [("donate count 0", [qp, 0]), ("donate count u64::MAX", [qp, u64::MAX])] {
        let r = hyp(abi::FN_HOST_DONATE_HYP, &args);
        c.check(
            r == Some(Errno::Inval as i64),
            format_args!("{what} = {}, want -EINVAL", errno(r)),
        );
    }
    c.note(format_args!(
        "wrong reclaims, re-donation and share of donated pages -EPERM"
    ));

    let r = hyp(abi::FN_HOST_RECLAIM_HYP, &[qp, 4]);
    c.check(r == Some(0), format_args!("exact reclaim = {}, want 0", errno(r)));
    for i in 0..4 {
        let s = state_of(q + i * PAGE);
        c.check(
            s == Some(page_state::OWNED),
            format_args!("reclaimed page {:#x} is {}, want OWNED", q + i * PAGE, state_name(s)),
        );
    }
    let f = exception::probe_read(probe);
    c.check(
        f.is_none(),
        format_args!("reclaimed page still aborts: {}", describe(f)),
    );
    if f.is_none() {
        // SAFETY: our page again, accessible.
        let (kept, zero) = unsafe {
            (
                mismatches(q, 4, DONATE_FILL) == 0,
                (0..4).all(|i| is_zero(q + i * PAGE)),
            )
        };
        c.check(
            kept || zero,
            format_args!("reclaimed pages hold neither the fill nor zeros"),
        );
        c.note(format_args!(
            "reclaimed pages {}",
            if kept {
                "kept their contents"
            } else {
                "came back zeroed"
            }
        ));
    }
    let r = hyp(abi::FN_HOST_RECLAIM_HYP, &[qp, 4]);
    c.check(
        r == Some(Errno::Perm as i64),
        format_args!("second reclaim = {}, want -EPERM", errno(r)),
    );

    // One page stays donated for dma-edu.
    let k = pages.kept;
    ctx.kept_fill = KEPT_FILL;
    // SAFETY: the scenario's own page, unused by anything else.
    unsafe { fill(k, 1, KEPT_FILL) };
    let r = hyp(abi::FN_HOST_DONATE_HYP, &[pfn(k), 1]);
    ctx.kept_donated = r == Some(0);
    c.check(
        r == Some(0),
        format_args!("donate {k:#x} (kept for dma-edu) = {}, want 0", errno(r)),
    );
    c.note(format_args!("{k:#x} stays donated for dma-edu"));
    c.outcome()
}

/// `warden-memory`: reads, a write and an instruction fetch in Warden's
/// memory (the gap in the host's RAM) each get an injected abort.
pub fn warden_memory(ctx: &Ctx) -> Outcome {
    let mut c = Checks::new();
    let before = smccc::counter(counter::ABORTS_INJECTED);
    let page = ctx.warden_page();
    let (last, mid) = match ctx.gap {
        Some(g) => (g.end() - PAGE, g.base + ((g.size / 2) & !(PAGE - 1))),
        None => (page, page),
    };
    let mut aborts = 0;
    let mut count = |ok: bool| {
        if ok {
            aborts += 1;
        }
        ok
    };
    // The Image header's res4 field: if Warden fails to stop the write,
    // the damage is to a word nothing reads.
    let word = page + 0x30;
    let r1 = exception::probe_read(page);
    let r2 = exception::probe_read(mid + 8);
    let r3 = exception::probe_read(last + PAGE - 8);
    // SAFETY: not the host's memory: the store must abort. If Warden lets
    // it through it lands on an unused header word of Warden's image (or,
    // standalone, in RAM nobody uses).
    let w = unsafe { exception::probe_write(word, 0x5741_5244_454e_2121) };
    if ctx.gap.is_none() || !smccc::under_warden() {
        c.note(format_args!(
            "probed {page:#x}: read {}, write {}",
            describe(r1),
            describe(w)
        ));
        if ctx.gap.is_none() {
            c.check(
                !smccc::under_warden(),
                format_args!("no gap in the host's RAM: Warden's memory not hidden"),
            );
        }
        return standalone(c, format_args!("no Warden: its memory is ordinary RAM here"));
    }
    let ok_r1 = count(expect_abort(&mut c, "read of Warden's", page, r1, ec::DABT_CUR));
    count(expect_abort(&mut c, "read of Warden's", mid + 8, r2, ec::DABT_CUR));
    count(expect_abort(
        &mut c,
        "read of Warden's",
        last + PAGE - 8,
        r3,
        ec::DABT_CUR,
    ));
    let ok_w = count(expect_abort(&mut c, "write to Warden's", word, w, ec::DABT_CUR));
    // Branch there only when both the read and the write were refused:
    // the memory is then certainly not ours, and whatever is there cannot
    // have been put there by us.
    if ok_r1 && ok_w {
        // SAFETY: Warden's memory, which the host cannot write (checked
        // just above); the fetch must abort, and the handler returns here.
        let x = unsafe { exception::probe_exec(page) };
        count(expect_abort(
            &mut c,
            "instruction fetch from Warden's",
            page,
            x,
            ec::IABT_CUR,
        ));
    } else {
        c.note(format_args!("instruction fetch not tried"));
    }
    let after = smccc::counter(counter::ABORTS_INJECTED);
    if let (Some(b), Some(a)) = (before, after) {
        c.check(
            a.wrapping_sub(b) >= aborts,
            format_args!("ABORTS_INJECTED +{} for {aborts} aborts seen", a.wrapping_sub(b)),
        );
    }
    c.note(format_args!(
        "{aborts} injected aborts at {page:#x}, {mid:#x}, {last:#x} (read, write, fetch); test host carried on"
    ));
    c.outcome()
}

/// `smmu-mmio`: the SMMU is not in the host's tree, and reading its
/// registers gets an injected abort.
pub fn smmu_mmio(ctx: &Ctx) -> Outcome {
    let mut c = Checks::new();
    let smmu = ctx.machine.platform.smmu.map_or(QEMU_VIRT_SMMU, |r| r.base);
    let idr0 = exception::probe_read(smmu);
    let page1 = exception::probe_read(smmu + 0x1_0000);
    if !smccc::under_warden() {
        c.note(format_args!("read of IDR0 at {smmu:#x}: {}", describe(idr0)));
        return standalone(c, format_args!("no Warden: the SMMU belongs to the host here"));
    }
    c.check(
        ctx.machine.platform.smmu.is_none(),
        format_args!("the host's device tree still shows the SMMU at {smmu:#x}"),
    );
    expect_abort(&mut c, "read of SMMU IDR0", smmu, idr0, ec::DABT_CUR);
    expect_abort(&mut c, "read of SMMU page 1", smmu + 0x1_0000, page1, ec::DABT_CUR);
    c.note(format_args!(
        "SMMU at {smmu:#x} hidden from the tree; IDR0 and page 1 reads aborted"
    ));
    c.outcome()
}
