//! Turning on the EL2 stage-1 MMU with a table built by warden-pgtable.

use core::arch::asm;

use warden_pgtable::{desc, Geometry};

use super::sysreg;

/// SCTLR_EL2 bits (non-VHE layout).
const SCTLR_M: u64 = 1 << 0;
const SCTLR_A: u64 = 1 << 1;
const SCTLR_C: u64 = 1 << 2;
const SCTLR_SA: u64 = 1 << 3;
const SCTLR_I: u64 = 1 << 12;
const SCTLR_WXN: u64 = 1 << 19;
const SCTLR_EE: u64 = 1 << 25;
/// Bits that are RES1 in SCTLR_EL2 when HCR_EL2.E2H is 0.
const SCTLR_RES1: u64 =
    (1 << 4) | (1 << 5) | (1 << 11) | (1 << 16) | (1 << 18) | (1 << 22) | (1 << 23) | (1 << 28) | (1 << 29);

/// TCR_EL2 (non-VHE): RES1 bits 31 and 23.
const TCR_RES1: u64 = (1 << 31) | (1 << 23);
/// Inner and outer write-back read/write-allocate walks, inner shareable.
const TCR_WALK_ATTRS: u64 = (0b01 << 8) | (0b01 << 10) | (0b11 << 12);
/// TG0 = 4 KiB (0b00).
const TCR_TG0_4K: u64 = 0;

/// The TCR_EL2 value for a table of geometry `geo` and a PA size encoding.
pub fn tcr_value(geo: &Geometry, ps: u64) -> u64 {
    TCR_RES1 | (ps << 16) | TCR_TG0_4K | TCR_WALK_ATTRS | geo.t0sz()
}

/// The SCTLR_EL2 value with the MMU, caches, SP alignment checks and WXN on.
pub fn sctlr_value(current: u64) -> u64 {
    (current | SCTLR_RES1 | SCTLR_M | SCTLR_C | SCTLR_I | SCTLR_SA | SCTLR_WXN) & !(SCTLR_A | SCTLR_EE)
}

/// Program MAIR_EL2, TCR_EL2 and TTBR0_EL2 for the table at `root`, and
/// turn on the MMU and caches.
///
/// # Safety
/// The table at `root` must identity-map, with the memory types of
/// [`desc::MAIR_EL2`], everything the CPU touches from here on: the code
/// running (executable), its stack, data, the table pages and the console
/// (writable), and stay valid while it is in use. `[inval_start,
/// inval_end)` must hold no dirty cache lines whose data matters (it is
/// invalidated so that data written with the caches off is not shadowed by
/// stale lines).
pub unsafe fn enable(root: u64, geo: &Geometry, ps: u64, inval_start: u64, inval_end: u64) -> u64 {
    let tcr = tcr_value(geo, ps);
    let sctlr = sctlr_value(sysreg::sctlr_el2());
    // SAFETY: with the MMU still off these registers do not affect the
    // running code; they take effect when SCTLR_EL2.M is set below.
    unsafe {
        asm!(
            "msr mair_el2, {mair}",
            "msr tcr_el2, {tcr}",
            "msr ttbr0_el2, {ttbr}",
            "isb",
            mair = in(reg) desc::MAIR_EL2,
            tcr = in(reg) tcr,
            ttbr = in(reg) root,
            options(nostack, preserves_flags)
        )
    };
    // SAFETY: the caller promised the range has no dirty lines that matter.
    unsafe { sysreg::dcache_invalidate_poc(inval_start, inval_end) };
    // SAFETY: drops stale EL2 translations (there should be none) and, since
    // instruction fetches are about to become cacheable, stale I-cache
    // lines, before SCTLR_EL2.I is set; the MMU is off, so nothing depends
    // on either.
    unsafe {
        asm!(
            "tlbi alle2",
            "ic iallu",
            "dsb nsh",
            "isb",
            options(nostack, preserves_flags)
        )
    };
    sysreg::dsb_ish();
    // SAFETY: the caller promised the table identity-maps the code, stack
    // and data in use with suitable permissions, so execution continues at
    // the next instruction with the same addresses; the ISB makes the new
    // translation regime apply to what follows.
    unsafe { asm!("msr sctlr_el2, {}", "isb", in(reg) sctlr, options(nostack, preserves_flags)) };
    sysreg::sctlr_el2()
}
