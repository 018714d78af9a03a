//! What happens on an exception taken to EL2: for now every exception is
//! unexpected, so it is reported and the machine powered off.

use core::sync::atomic::{AtomicBool, Ordering};

use warden_hyp::esr::Describe;

use super::console::println;
use super::{psci, sysreg};

/// Set on the first exception, so a fault while reporting one powers off
/// without recursing.
static IN_EXCEPTION: AtomicBool = AtomicBool::new(false);

/// Where an exception came from, by vector index (0..16).
fn origin(index: u64) -> (&'static str, &'static str) {
    let kind = match index % 4 {
        0 => "synchronous",
        1 => "IRQ",
        2 => "FIQ",
        _ => "SError",
    };
    let from = match index / 4 {
        0 => "current EL with SP_EL0",
        1 => "current EL with SP_EL2",
        2 => "lower EL (AArch64)",
        _ => "lower EL (AArch32)",
    };
    (kind, from)
}

/// Called by every entry of the vector table (src/el2/entry.rs) with the
/// entry's index, on a fresh stack.
#[no_mangle]
extern "C" fn warden_exception(index: u64) -> ! {
    if IN_EXCEPTION.load(Ordering::Relaxed) {
        psci::system_off();
    }
    IN_EXCEPTION.store(true, Ordering::Relaxed);
    let (esr, elr, far, spsr) = (
        sysreg::esr_el2(),
        sysreg::elr_el2(),
        sysreg::far_el2(),
        sysreg::spsr_el2(),
    );
    let (kind, from) = origin(index);
    println!(
        "WARDEN EXCEPTION: {kind} from {from}: ESR_EL2={esr:#x} ({}) ELR_EL2={elr:#x} FAR_EL2={far:#x} SPSR_EL2={spsr:#x}",
        Describe(esr)
    );
    println!("powering off after the exception (PSCI SYSTEM_OFF)");
    psci::system_off()
}
