//! The result lines, the scenario runner's bookkeeping, and the ways the
//! test host ends: `TESTHOST DONE p/t` and PSCI SYSTEM_OFF, also after a
//! fatal exception or a panic (which first fail the running scenario), so
//! that a run always ends with a verdict and never hangs silently.

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use warden_testhost::scenario::{self, Verdict, DONE_PREFIX, RESULT_PREFIX};
use warden_testhost::text::Line;

use super::console::{self, println};
use super::cpu;
use super::exception;
use super::smccc::{self, psci};

/// Longest detail kept on a RESULT line.
pub const DETAIL: usize = 480;
/// A RESULT line's detail.
pub type Detail = Line<DETAIL>;

/// Index into `scenario::ALL` of the running scenario (`usize::MAX`:
/// none).
static CURRENT: AtomicUsize = AtomicUsize::new(usize::MAX);
static PASSED: AtomicUsize = AtomicUsize::new(0);
/// Set by the first CPU that ends the run; others park.
static ENDING: AtomicBool = AtomicBool::new(false);

/// A scenario's outcome: its verdict and the detail for its line.
pub struct Outcome {
    /// The verdict.
    pub verdict: Verdict,
    /// What was checked and seen (or what failed).
    pub detail: Detail,
}

/// Collects a scenario's checks: failures go first into the detail, so a
/// long line never cuts off why it failed.
pub struct Checks {
    failures: Detail,
    notes: Detail,
    failed: bool,
    skipped: bool,
}

impl Checks {
    /// No checks yet.
    pub fn new() -> Self {
        Checks {
            failures: Detail::new(),
            notes: Detail::new(),
            failed: false,
            skipped: false,
        }
    }

    /// Record a check: when `ok` is false, `what` explains the failure.
    pub fn check(&mut self, ok: bool, what: fmt::Arguments) -> bool {
        if !ok {
            self.failed = true;
            self.failures.push_item(what);
        }
        ok
    }

    /// A fact for the detail (counts, addresses).
    pub fn note(&mut self, what: fmt::Arguments) {
        self.notes.push_item(what);
    }

    /// A check that needs Warden could not run (standalone).
    pub fn skip(&mut self, what: fmt::Arguments) {
        self.skipped = true;
        self.notes.push_item(what);
    }

    /// Whether a check failed so far.
    pub fn failed(&self) -> bool {
        self.failed
    }

    /// The verdict and detail: FAIL if a check failed, else SKIP if a
    /// check could not run, else PASS.
    pub fn outcome(self) -> Outcome {
        let mut detail = Detail::new();
        let verdict = if self.failed {
            let _ = write!(detail, "{}", self.failures);
            if !self.notes.is_empty() {
                let _ = write!(detail, " | {}", self.notes);
            }
            Verdict::Fail
        } else {
            let _ = write!(detail, "{}", self.notes);
            if self.skipped {
                Verdict::Skip
            } else {
                Verdict::Pass
            }
        };
        Outcome { verdict, detail }
    }
}

/// Run scenario `index` of `scenario::ALL` and print its line. A scenario
/// during which any CPU took an unexpected exception fails.
pub fn run(index: usize, f: impl FnOnce() -> Outcome) {
    let name = scenario::ALL[index];
    CURRENT.store(index, Ordering::SeqCst);
    let before = unexpected_total();
    let start = cpu::ticks();
    let mut out = f();
    let after = unexpected_total();
    if after.0 != before.0 {
        let f = after.1;
        let mut d = Detail::new();
        let _ = write!(
            d,
            "{} unexpected exception(s), first ESR {:#x} (EC {:#x}) FAR {:#x} ELR {:#x} | {}",
            after.0 - before.0,
            f.esr,
            f.esr >> 26,
            f.far,
            f.elr,
            out.detail
        );
        out = Outcome {
            verdict: Verdict::Fail,
            detail: d,
        };
    }
    if out.verdict == Verdict::Pass {
        PASSED.fetch_add(1, Ordering::SeqCst);
    }
    println!(
        "{RESULT_PREFIX} {name} {} {} ({} ms)",
        out.verdict.as_str(),
        out.detail,
        cpu::ms_since(start)
    );
    CURRENT.store(usize::MAX, Ordering::SeqCst);
}

/// Unexpected exceptions on all CPUs, and the first one of the lowest CPU
/// that has any.
fn unexpected_total() -> (u64, exception::Fault) {
    let mut total = 0;
    let mut first = None;
    for cpu in 0..warden_testhost::machine::MAX_CPUS {
        let (n, f) = exception::unexpected_on(cpu);
        total += n;
        if n > 0 && first.is_none() {
            first = Some(f);
        }
    }
    (total, first.unwrap_or(exception::Fault { esr: 0, far: 0, elr: 0 }))
}

/// Print the final line and power off.
pub fn done() -> ! {
    if ENDING.swap(true, Ordering::SeqCst) {
        park();
    }
    println!(
        "{DONE_PREFIX} {}/{}",
        PASSED.load(Ordering::SeqCst),
        scenario::ALL.len()
    );
    power_off()
}

/// A fatal error on any CPU: fail the running scenario with `why` (or
/// report it outside any scenario), print the final line and power off.
pub fn fatal(why: fmt::Arguments) -> ! {
    if ENDING.swap(true, Ordering::SeqCst) {
        park();
    }
    let current = CURRENT.load(Ordering::SeqCst);
    match scenario::ALL.get(current) {
        Some(name) => console::print_line_forced(format_args!("{RESULT_PREFIX} {name} FAIL {why}")),
        None => console::print_line_forced(format_args!("TESTHOST FATAL: {why}")),
    }
    console::print_line_forced(format_args!(
        "{DONE_PREFIX} {}/{}",
        PASSED.load(Ordering::SeqCst),
        scenario::ALL.len()
    ));
    power_off()
}

/// PSCI SYSTEM_OFF; if it returns (or faults), park.
pub fn power_off() -> ! {
    console::flush();
    let r = smccc::psci_call(psci::SYSTEM_OFF, 0, 0, 0);
    console::print_line_forced(format_args!("TESTHOST: SYSTEM_OFF returned {r:?}; parking"));
    park()
}

/// Stop this CPU for good.
pub fn park() -> ! {
    loop {
        cpu::wfe();
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    fatal(format_args!("panic on CPU {}: {info}", cpu::index()))
}
