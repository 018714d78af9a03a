//! System registers, barriers and cache maintenance used at EL2.
//!
//! Reads are safe functions. Writes that change translation or exception
//! routing are `unsafe` and live next to the code that owns that state
//! (`mmu`); this module only offers the instructions.

use core::arch::asm;

macro_rules! read_sysreg {
    ($(#[$doc:meta])* $name:ident, $reg:literal) => {
        $(#[$doc])*
        pub fn $name() -> u64 {
            let v: u64;
            // SAFETY: reading this system register at EL2 has no side
            // effects and touches no memory.
            unsafe { asm!(concat!("mrs {}, ", $reg), out(reg) v, options(nomem, nostack, preserves_flags)) };
            v
        }
    };
}

read_sysreg!(
    /// CurrentEL (the exception level is bits 3:2).
    current_el_raw, "CurrentEL");
read_sysreg!(
    /// ID_AA64MMFR0_EL1: PARange in bits 3:0.
    id_aa64mmfr0, "id_aa64mmfr0_el1");
read_sysreg!(
    /// ID_AA64MMFR2_EL1: TTL (TLBI level hints) in bits 51:48.
    id_aa64mmfr2, "id_aa64mmfr2_el1");
read_sysreg!(
    /// SCTLR_EL2.
    sctlr_el2, "sctlr_el2");
read_sysreg!(
    /// TCR_EL2.
    tcr_el2, "tcr_el2");
read_sysreg!(
    /// ESR_EL2: syndrome of the last exception taken to EL2.
    esr_el2, "esr_el2");
read_sysreg!(
    /// ELR_EL2: return address of the last exception taken to EL2.
    elr_el2, "elr_el2");
read_sysreg!(
    /// FAR_EL2: faulting address of the last abort taken to EL2.
    far_el2, "far_el2");
read_sysreg!(
    /// SPSR_EL2: saved state of the last exception taken to EL2.
    spsr_el2, "spsr_el2");
read_sysreg!(
    /// CTR_EL0: cache line sizes (DminLine in bits 19:16).
    ctr_el0, "ctr_el0");
read_sysreg!(
    /// PAR_EL1: result of the last address translation instruction.
    par_el1, "par_el1");

/// The current exception level, 0..=3.
pub fn current_el() -> u64 {
    (current_el_raw() >> 2) & 3
}

/// Physical address size in bits from ID_AA64MMFR0_EL1.PARange, capped at
/// 48 (52-bit PAs need LPA2 descriptors, which warden-pgtable does not use),
/// and the matching TCR_EL2.PS encoding.
pub fn pa_bits() -> (u8, u64) {
    match id_aa64mmfr0() & 0xf {
        0 => (32, 0),
        1 => (36, 1),
        2 => (40, 2),
        3 => (42, 3),
        4 => (44, 4),
        _ => (48, 5),
    }
}

/// `DSB ISHST`.
pub fn dsb_ishst() {
    // SAFETY: a barrier only orders memory accesses.
    unsafe { asm!("dsb ishst", options(nostack, preserves_flags)) };
}

/// `DSB ISH`.
pub fn dsb_ish() {
    // SAFETY: a barrier only orders memory accesses.
    unsafe { asm!("dsb ish", options(nostack, preserves_flags)) };
}

/// `DSB NSH`.
pub fn dsb_nsh() {
    // SAFETY: a barrier only orders memory accesses.
    unsafe { asm!("dsb nsh", options(nostack, preserves_flags)) };
}

/// `DSB SY`.
pub fn dsb_sy() {
    // SAFETY: a barrier only orders memory accesses.
    unsafe { asm!("dsb sy", options(nostack, preserves_flags)) };
}

/// `ISB`.
pub fn isb() {
    // SAFETY: a context synchronisation event has no memory effects.
    unsafe { asm!("isb", options(nostack, preserves_flags)) };
}

/// Translate `va` as an EL2 stage-1 read (`AT S1E2R`) and return the
/// physical address, or `None` if the translation faults.
pub fn translate_el2_read(va: u64) -> Option<u64> {
    // SAFETY: AT only writes PAR_EL1 (read right after, nothing else relies
    // on it) and never faults; the ISB makes the result visible.
    unsafe { asm!("at s1e2r, {}", "isb", in(reg) va, options(nostack, preserves_flags)) };
    let par = par_el1();
    if par & 1 != 0 {
        None
    } else {
        Some((par & 0x0000_ffff_ffff_f000) | (va & 0xfff))
    }
}

/// Invalidate the data cache to the point of coherency, by VA, over
/// `[start, end)`.
///
/// # Safety
/// Lines in the range are discarded, not written back: the range must hold
/// no dirty data that matters (e.g. memory only written with the data cache
/// off, or cleaned by the loader).
pub unsafe fn dcache_invalidate_poc(start: u64, end: u64) {
    for_each_line(start, end, |addr| {
        // SAFETY: the caller promised the range has no dirty data to lose;
        // DC IVAC at EL2 is permitted and faults only on unmapped VAs, and
        // the range is RAM identity-mapped (or the MMU is off).
        unsafe { asm!("dc ivac, {}", in(reg) addr, options(nostack, preserves_flags)) };
    });
}

/// Clean `[start, end)` to the point of coherency (`DC CVAC` per line, then
/// `DSB SY`), so that a non-coherent observer (an SMMU without COHACC)
/// reads what the CPU wrote.
pub fn dcache_clean_poc(start: u64, end: u64) {
    for_each_line(start, end, |addr| {
        // SAFETY: cleaning writes dirty lines back and loses nothing; DC
        // CVAC at EL2 faults only on an unmapped VA, and callers pass
        // Warden's own identity-mapped RAM.
        unsafe { asm!("dc cvac, {}", in(reg) addr, options(nostack, preserves_flags)) };
    });
}

/// Run `op` on every data cache line of `[start, end)` (line size from
/// CTR_EL0.DminLine), then `DSB SY` so the maintenance has completed.
fn for_each_line(start: u64, end: u64, mut op: impl FnMut(u64)) {
    let line = 4u64 << ((ctr_el0() >> 16) & 0xf);
    let mut addr = start & !(line - 1);
    while addr < end {
        op(addr);
        addr += line;
    }
    dsb_sy();
}

read_sysreg!(
    /// HPFAR_EL2: the faulting IPA of a stage-2 abort (FIPA in bits 43:4).
    hpfar_el2, "hpfar_el2");
read_sysreg!(
    /// VBAR_EL1: the host's vector base.
    vbar_el1, "vbar_el1");
read_sysreg!(
    /// SCTLR_EL1: the host's system control (SPAN in bit 23).
    sctlr_el1, "sctlr_el1");
read_sysreg!(
    /// MPIDR_EL1: this CPU's affinity.
    mpidr_el1, "mpidr_el1");
read_sysreg!(
    /// MIDR_EL1: this CPU's identification.
    midr_el1, "midr_el1");
read_sysreg!(
    /// PMCR_EL0: N (event counters) in bits 15:11.
    pmcr_el0, "pmcr_el0");
read_sysreg!(
    /// ID_AA64PFR0_EL1: GIC system registers in bits 27:24.
    id_aa64pfr0, "id_aa64pfr0_el1");
read_sysreg!(
    /// ID_AA64ISAR1_EL1: address authentication in APA/API (7:4, 11:8).
    id_aa64isar1, "id_aa64isar1_el1");
read_sysreg!(
    /// ID_AA64ISAR2_EL1: address authentication APA3 in bits 15:12.
    id_aa64isar2, "id_aa64isar2_el1");
read_sysreg!(
    /// TPIDR_EL2: Warden keeps the CPU's index here.
    tpidr_el2, "tpidr_el2");
read_sysreg!(
    /// CNTVCT_EL0: the virtual counter (boot timing).
    cntvct_el0, "cntvct_el0");
read_sysreg!(
    /// CNTFRQ_EL0: the counter's frequency.
    cntfrq_el0, "cntfrq_el0");

/// Set the host's exception state for an injected exception: ESR_EL1,
/// FAR_EL1, ELR_EL1 and SPSR_EL1.
///
/// # Safety
/// Only while handling a trap from the host, about to return to its
/// vector: the host's previous values are overwritten as the architecture
/// does when it takes an exception to EL1.
pub unsafe fn set_el1_exception(esr: u64, far: u64, elr: u64, spsr: u64) {
    // SAFETY: the caller is injecting an exception into the host; these
    // EL1 registers are not used by Warden itself.
    unsafe {
        asm!(
            "msr esr_el1, {esr}",
            "msr far_el1, {far}",
            "msr elr_el1, {elr}",
            "msr spsr_el1, {spsr}",
            esr = in(reg) esr,
            far = in(reg) far,
            elr = in(reg) elr,
            spsr = in(reg) spsr,
            options(nostack, preserves_flags)
        )
    };
}
