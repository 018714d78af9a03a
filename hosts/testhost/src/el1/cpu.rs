//! System registers, barriers, the generic timer and cache maintenance at
//! EL1. Thin wrappers: each one instruction (or a short sequence) whose
//! architectural effect is documented where it is used.

use core::arch::asm;

use warden_testhost::machine::MAX_CPUS;

/// Read a system register by name.
macro_rules! read_sysreg {
    ($reg:literal) => {{
        let v: u64;
        // SAFETY: reading this system register at EL1 has no side effect.
        unsafe { core::arch::asm!(concat!("mrs {}, ", $reg), out(reg) v, options(nomem, nostack, preserves_flags)) };
        v
    }};
}
pub(crate) use read_sysreg;

/// This CPU's index (0 = the boot CPU), which the entry code put in
/// TPIDR_EL1 before any Rust code ran.
pub fn index() -> usize {
    (read_sysreg!("tpidr_el1") as usize).min(MAX_CPUS - 1)
}

/// MPIDR_EL1's affinity fields.
pub fn mpidr() -> u64 {
    read_sysreg!("mpidr_el1") & warden_testhost::machine::MPIDR_AFFINITY_MASK
}

/// The virtual counter (CNTVCT_EL0), ordered after earlier instructions.
/// The virtual counter because EL2 may trap the physical one at EL1.
pub fn ticks() -> u64 {
    let v: u64;
    // SAFETY: ISB then reading the counter has no side effect.
    unsafe { asm!("isb", "mrs {}, cntvct_el0", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// Counter ticks per millisecond (CNTFRQ_EL0, set by firmware; QEMU sets
/// it, at least 1 so that deadlines stay finite).
pub fn ticks_per_ms() -> u64 {
    (read_sysreg!("cntfrq_el0") / 1000).max(1)
}

/// A point in time `ms` milliseconds from now.
pub fn deadline_ms(ms: u64) -> u64 {
    ticks().saturating_add(ms.saturating_mul(ticks_per_ms()))
}

/// Whether `deadline` has passed.
pub fn past(deadline: u64) -> bool {
    ticks() >= deadline
}

/// Milliseconds since `start` (a [`ticks`] value).
pub fn ms_since(start: u64) -> u64 {
    ticks().saturating_sub(start) / ticks_per_ms()
}

/// Wait for an event (another CPU's SEV), or not at all: WFE may wake
/// spuriously, so callers loop on their condition.
pub fn wfe() {
    // SAFETY: WFE only waits.
    unsafe { asm!("wfe", options(nomem, nostack, preserves_flags)) };
}

/// Wake every CPU waiting in WFE, after earlier stores are visible.
pub fn sev() {
    // SAFETY: a barrier then SEV only orders and signals.
    unsafe { asm!("dsb ish", "sev", options(nostack, preserves_flags)) };
}

/// Smallest data cache line (CTR_EL0.DminLine, log2 of words).
fn dcache_line() -> u64 {
    4 << ((read_sysreg!("ctr_el0") >> 16) & 0xf)
}

/// Invalidate the data cache lines of `[start, end)` to the point of
/// coherency (DC IVAC), for memory written with the MMU and caches off
/// that is about to be read through the cache: stale lines must go.
///
/// # Safety
/// Dirty data in the range is discarded: the range must hold nothing that
/// was written through the cache.
pub unsafe fn invalidate_dcache(start: u64, end: u64) {
    let line = dcache_line();
    let mut a = start & !(line - 1);
    while a < end {
        // SAFETY: the caller guarantees no cached writes live in the range.
        unsafe { asm!("dc ivac, {}", in(reg) a, options(nostack, preserves_flags)) };
        a += line;
    }
    // SAFETY: a barrier.
    unsafe { asm!("dsb sy", options(nostack, preserves_flags)) };
}

/// Unmask SError (PSTATE.A): an SError the hypervisor injects must be
/// reported, not left pending. IRQ and FIQ stay masked: nothing here uses
/// interrupts (the vectors still report one as a failure).
pub fn unmask_serror() {
    // SAFETY: the vectors are installed before this is called.
    unsafe { asm!("msr daifclr, #4", "isb", options(nomem, nostack, preserves_flags)) };
}
