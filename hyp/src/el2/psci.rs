//! PSCI (Arm DEN 0022) through SMC, the conduit QEMU's virt machine names
//! when it runs the guest at EL2 without EL3 firmware.
//!
//! HVC cannot be a conduit from EL2: it would trap to Warden itself.

use core::arch::asm;

/// PSCI_VERSION (SMC32).
const PSCI_VERSION: u64 = 0x8400_0000;
/// SYSTEM_OFF (SMC32).
const SYSTEM_OFF: u64 = 0x8400_0008;

/// Issue an SMC32 fast call with no arguments and return x0.
fn smc(function: u64) -> u64 {
    let ret: u64;
    // SAFETY: PSCI_VERSION and SYSTEM_OFF take no memory arguments; the
    // firmware touches none of Warden's memory. SMCCC 1.0 lets it clobber
    // x0-x17, all declared; SP and the callee-saved registers are kept.
    unsafe {
        asm!(
            "smc #0",
            inout("x0") function => ret,
            inout("x1") 0u64 => _,
            inout("x2") 0u64 => _,
            inout("x3") 0u64 => _,
            out("x4") _, out("x5") _, out("x6") _, out("x7") _,
            out("x8") _, out("x9") _, out("x10") _, out("x11") _,
            out("x12") _, out("x13") _, out("x14") _, out("x15") _,
            out("x16") _, out("x17") _,
            options(nostack)
        )
    };
    ret
}

/// The PSCI version as (major, minor).
pub fn version() -> (u16, u16) {
    let v = smc(PSCI_VERSION) as u32;
    ((v >> 16) as u16, v as u16)
}

/// Power the system off. If the firmware refuses, park the CPU.
pub fn system_off() -> ! {
    super::console::flush();
    smc(SYSTEM_OFF);
    loop {
        // SAFETY: WFE only waits for an event.
        unsafe { asm!("wfe", options(nomem, nostack, preserves_flags)) };
    }
}
