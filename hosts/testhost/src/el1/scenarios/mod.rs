//! The scenarios, in the order they run (`scenario::ALL`), and what they
//! share: the machine, the free RAM, and the pages set aside for them.
//!
//! Pages come from the top of the host's highest RAM run (pages.rs), far
//! from the test host's image: the share, donation and DMA pages, and a few
//! scratch pages per CPU for `garbage-hypercalls`. Each scenario leaves
//! ownership as it found it, except the page `donate-reclaim` keeps donated
//! for `dma-edu`, which reclaims it.

mod abi;
mod cpus;
mod dma;
pub mod garbage;
mod memory;

use warden_abi as abi_crate;
use warden_hyp::platform::Range;
use warden_testhost::machine::{Machine, MAX_CPUS, QEMU_VIRT_RAM_BASE};
use warden_testhost::pages::{FreeRuns, PAGE};
use warden_testhost::scenario;

use super::console::println;
use super::report::{self, Checks, Outcome};
use super::smccc;

/// Scratch pages per CPU for the random hypercalls.
pub const SCRATCH_PAGES: u64 = 4;

/// The pages the scenarios own (physical = virtual addresses).
#[derive(Clone, Copy, Debug, Default)]
pub struct TestPages {
    /// `share-hyp`'s page.
    pub share: u64,
    /// `donate-reclaim`'s four pages.
    pub donate: u64,
    /// The page kept donated for `dma-edu`.
    pub kept: u64,
    /// DMA source, destination and second destination.
    pub dma: [u64; 3],
    /// Each CPU's scratch pages.
    pub scratch: [u64; MAX_CPUS],
}

/// Everything the scenarios share (boot CPU only).
pub struct Ctx {
    /// The machine from the device tree.
    pub machine: Machine,
    /// Free RAM before any page was set aside (what `lazy-map` touches).
    pub free: FreeRuns,
    /// The pages set aside, or `None` if RAM ran out.
    pub pages: Option<TestPages>,
    /// Warden's memory as the host's memory map shows it (the first gap).
    pub gap: Option<Range>,
    /// Whether the kept page is still donated.
    pub kept_donated: bool,
    /// Fill pattern of the kept page (before donation).
    pub kept_fill: u64,
}

impl Ctx {
    /// Lay out the free RAM and set the scenarios' pages aside.
    pub fn new(machine: Machine, image: Range) -> Self {
        let mut exclude = [Range::default(); 2 + warden_testhost::machine::MAX_RESERVED];
        exclude[0] = image;
        exclude[1] = machine.dtb;
        for (d, r) in exclude[2..].iter_mut().zip(machine.reserved()) {
            *d = *r;
        }
        let free = FreeRuns::new(machine.memory(), &exclude);
        let mut alloc = free;
        let mut take = |n: u64| alloc.alloc_top(n);
        let mut pages = || -> Option<TestPages> {
            let mut p = TestPages {
                share: take(1)?,
                donate: take(4)?,
                kept: take(1)?,
                ..TestPages::default()
            };
            for d in &mut p.dma {
                *d = take(1)?;
            }
            for s in &mut p.scratch {
                *s = take(SCRATCH_PAGES)?;
            }
            Some(p)
        };
        let pages = pages();
        Ctx {
            gap: machine.warden_gap(),
            machine,
            free,
            pages,
            kept_donated: false,
            kept_fill: 0,
        }
    }

    /// Print the machine as the test host sees it.
    pub fn describe(&self) {
        for r in self.machine.memory() {
            println!(
                "testhost: RAM {:#011x}..{:#011x} ({} MiB)",
                r.base,
                r.end(),
                r.size >> 20
            );
        }
        match self.gap {
            Some(g) => println!(
                "testhost: Warden's gap {:#011x}..{:#011x} ({} KiB)",
                g.base,
                g.end(),
                g.size >> 10
            ),
            None => println!("testhost: no gap in RAM above {QEMU_VIRT_RAM_BASE:#x}: Warden's memory is not visible"),
        }
        println!(
            "testhost: {} CPU(s) in the tree, MPIDRs {:x?}; PSCI via {}",
            self.machine.platform.cpus,
            self.machine.mpidrs(),
            self.machine.platform.psci.as_str()
        );
        if let Some(p) = self.machine.pci {
            println!(
                "testhost: PCIe ECAM {:#x} ({} MiB), 32-bit window {:x?}",
                p.ecam.base,
                p.ecam.size >> 20,
                p.mmio32
            );
        }
        println!(
            "testhost: {} free pages in {} runs; test pages {:x?}",
            self.free.pages(),
            self.free.runs().len(),
            self.pages
        );
    }

    /// The address of a page of Warden's memory to attack: the gap's first
    /// page, or (standalone, no gap) where Warden would be on `virt`.
    pub fn warden_page(&self) -> u64 {
        self.gap.map_or(QEMU_VIRT_RAM_BASE + (2 << 20), |g| g.base)
    }
}

/// Run every scenario in order.
pub fn run_all(mut ctx: Ctx) {
    use scenario::*;
    let all = scenario::ALL;
    let idx = |name: &str| all.iter().position(|&n| n == name).unwrap_or(0);
    report::run(idx(ABI_VERSION), abi::abi_version);
    // Cost figures (only with `testhost.bench`), before other CPUs run and
    // before `lazy-map` maps all RAM.
    super::bench::run(&ctx);
    report::run(idx(SECONDARIES), || cpus::secondaries(&ctx));
    report::run(idx(LAZY_MAP), || memory::lazy_map(&ctx));
    report::run(idx(SHARE_HYP), || memory::share_hyp(&ctx));
    report::run(idx(DONATE_RECLAIM), || memory::donate_reclaim(&mut ctx));
    report::run(idx(WARDEN_MEMORY), || memory::warden_memory(&ctx));
    report::run(idx(SMMU_MMIO), || memory::smmu_mmio(&ctx));
    report::run(idx(GARBAGE_HYPERCALLS), || garbage::garbage_hypercalls(&ctx));
    report::run(idx(DMA_EDU), || dma::dma_edu(&mut ctx));
}

/// A scenario that cannot start because the pages could not be set aside.
fn no_pages() -> Outcome {
    let mut c = Checks::new();
    c.check(false, format_args!("not enough free RAM for the test pages"));
    c.outcome()
}

/// The pfn of an address.
pub fn pfn(addr: u64) -> u64 {
    addr / PAGE
}

/// FN_HOST_PAGE_STATE's state of `addr`'s page, or `None` (no Warden, or
/// an error).
pub fn state_of(addr: u64) -> Option<u64> {
    match smccc::page_state(pfn(addr)) {
        Some((0, s, _)) => Some(s),
        _ => None,
    }
}

/// A page state's name.
pub fn state_name(s: Option<u64>) -> &'static str {
    use abi_crate::page_state::*;
    match s {
        Some(OWNED) => "OWNED",
        Some(SHARED_OWNED) => "SHARED_OWNED",
        Some(SHARED_BORROWED) => "SHARED_BORROWED",
        Some(NO_PAGE) => "NO_PAGE",
        Some(_) => "an unknown state",
        None => "no answer",
    }
}

/// The standard outcome when Warden is absent and the scenario could only
/// observe: `checks` plus a SKIP note.
fn standalone(mut c: Checks, what: core::fmt::Arguments) -> Outcome {
    c.skip(what);
    c.outcome()
}

/// Fill `pages` pages at `addr` with `pattern ^ address` per word.
///
/// # Safety
/// The pages must be the host's, hold no Rust object, and be accessible.
pub unsafe fn fill(addr: u64, pages: u64, pattern: u64) {
    for a in (addr..addr + pages * PAGE).step_by(8) {
        // SAFETY: the caller guarantees the pages are ours and unused.
        unsafe { (a as *mut u64).write_volatile(pattern ^ a) };
    }
}

/// How many words of `pages` pages at `addr` differ from `pattern ^
/// address`.
///
/// # Safety
/// As for [`fill`].
pub unsafe fn mismatches(addr: u64, pages: u64, pattern: u64) -> u64 {
    (addr..addr + pages * PAGE)
        .step_by(8)
        // SAFETY: the caller guarantees the pages are ours and accessible.
        .filter(|&a| unsafe { (a as *const u64).read_volatile() } != pattern ^ a)
        .count() as u64
}

/// Whether every word of the page at `addr` is zero.
///
/// # Safety
/// As for [`fill`].
pub unsafe fn is_zero(addr: u64) -> bool {
    // SAFETY: the caller guarantees the page is ours and accessible.
    (addr..addr + PAGE)
        .step_by(8)
        .all(|a| unsafe { (a as *const u64).read_volatile() } == 0)
}

/// Verdict helper for the detail of a hypercall result.
pub fn errno(v: Option<i64>) -> &'static str {
    v.map_or("no answer", scenario::errno_name)
}
