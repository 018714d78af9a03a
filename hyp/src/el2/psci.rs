//! PSCI (Arm DEN 0022) through SMC, the conduit QEMU's virt machine names
//! when it runs the guest at EL2 without EL3 firmware: Warden's own calls
//! and the host's, relayed (see warden_hyp::psci_relay for which).
//!
//! HVC cannot be a conduit from EL2: it would trap to Warden itself.

use core::arch::asm;

use warden_hyp::psci_relay::fid;

/// Issue an SMC fast call with `x0..=x3` and return `x0..=x3`.
///
/// Only PSCI and SMCCC architecture calls reach here (Warden's own, and
/// the host's the relay forwards): they take no memory arguments Warden
/// has not checked, and the firmware touches none of Warden's memory.
pub fn smc(x: [u64; 4]) -> [u64; 4] {
    let (r0, r1, r2, r3);
    // SAFETY: see above. SMCCC lets the firmware clobber x0-x17 (all
    // declared); SP and the callee-saved registers are kept.
    unsafe {
        asm!(
            "smc #0",
            inout("x0") x[0] => r0,
            inout("x1") x[1] => r1,
            inout("x2") x[2] => r2,
            inout("x3") x[3] => r3,
            out("x4") _, out("x5") _, out("x6") _, out("x7") _,
            out("x8") _, out("x9") _, out("x10") _, out("x11") _,
            out("x12") _, out("x13") _, out("x14") _, out("x15") _,
            out("x16") _, out("x17") _,
            options(nostack)
        )
    };
    [r0, r1, r2, r3]
}

/// The PSCI version as (major, minor).
pub fn version() -> (u16, u16) {
    let v = smc([fid::VERSION as u64, 0, 0, 0])[0] as u32;
    ((v >> 16) as u16, v as u16)
}

/// Start the CPU with affinity `mpidr` at physical address `entry` (in
/// Warden) with `context` in x0; the PSCI result.
pub fn cpu_on(mpidr: u64, entry: u64, context: u64) -> i64 {
    smc([fid::CPU_ON_64 as u64, mpidr, entry, context])[0] as i64
}

/// Turn the calling CPU off; returns only if the firmware refused (the
/// PSCI result).
pub fn cpu_off() -> i64 {
    smc([fid::CPU_OFF as u64, 0, 0, 0])[0] as i64
}

/// Reset the system. If the firmware refuses, park the CPU.
pub fn system_reset() -> ! {
    super::console::flush();
    smc([fid::SYSTEM_RESET as u64, 0, 0, 0]);
    park()
}

/// Power the system off. If the firmware refuses, park the CPU.
pub fn system_off() -> ! {
    super::console::flush();
    smc([fid::SYSTEM_OFF as u64, 0, 0, 0]);
    park()
}

/// Wait forever.
pub fn park() -> ! {
    loop {
        // SAFETY: WFE only waits for an event.
        unsafe { asm!("wfe", options(nomem, nostack, preserves_flags)) };
    }
}
