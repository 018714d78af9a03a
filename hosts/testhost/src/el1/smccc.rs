//! SMCCC calls: PSCI through the conduit the device tree names, and
//! Warden's hypercalls through `HVC #0` (the ABI is `warden-abi`).
//!
//! Every call is made with this CPU's fault slot armed: without a
//! hypervisor an HVC may be an undefined instruction (QEMU 10 with the HVC
//! PSCI conduit answers every HVC itself, NOT_SUPPORTED for what is not
//! PSCI, but other setups need not), and so is an SMC that nobody traps;
//! the call then returns `Err` with the fault instead of killing the test
//! host. Whether Warden is there is decided by its UID, not by a fault.

use core::arch::asm;
use core::sync::atomic::{AtomicBool, AtomicU8, Ordering};

use warden_abi as abi;
use warden_hyp::platform::PsciConduit;

use super::exception::{catching, Fault};

/// PSCI function IDs and return codes (Arm DEN 0022).
pub mod psci {
    /// PSCI_VERSION.
    pub const VERSION: u32 = 0x8400_0000;
    /// CPU_ON, SMC64 form.
    pub const CPU_ON: u32 = 0xC400_0003;
    /// SYSTEM_OFF.
    pub const SYSTEM_OFF: u32 = 0x8400_0008;
    /// The call succeeded.
    pub const SUCCESS: i64 = 0;
    /// INVALID_PARAMETERS.
    pub const INVALID_PARAMETERS: i64 = -2;
    /// ALREADY_ON.
    pub const ALREADY_ON: i64 = -4;
}

/// All of `x0..=x17`, in and out.
pub type Regs = [u64; 18];

/// `HVC #0` with `x0..=x17` from `r`, which receives `x0..=x17` back.
pub fn hvc_all(r: &mut Regs) -> Option<Fault> {
    catching(|| {
        // SAFETY: an SMCCC call: Warden (or, standalone, QEMU's PSCI or the
        // undefined-instruction path) changes registers only; every
        // register SMCCC lets it touch is an operand here. The call names
        // no memory of ours that Warden could write (no call in the ABI
        // writes host memory).
        unsafe {
            asm!(
                "hvc #0",
                inout("x0") r[0], inout("x1") r[1], inout("x2") r[2], inout("x3") r[3],
                inout("x4") r[4], inout("x5") r[5], inout("x6") r[6], inout("x7") r[7],
                inout("x8") r[8], inout("x9") r[9], inout("x10") r[10], inout("x11") r[11],
                inout("x12") r[12], inout("x13") r[13], inout("x14") r[14], inout("x15") r[15],
                inout("x16") r[16], inout("x17") r[17],
                options(nostack),
            )
        }
    })
    .1
}

/// `HVC #1` (an immediate Warden does not define) with `x0..=x3` from
/// `r`, which receives `x0..=x3` back.
pub fn hvc_imm1(r: &mut Regs) -> Option<Fault> {
    catching(|| {
        // SAFETY: as for `hvc_all`, with the registers SMCCC 1.1 lets the
        // callee change declared clobbered.
        unsafe {
            asm!(
                "hvc #1",
                inout("x0") r[0], inout("x1") r[1], inout("x2") r[2], inout("x3") r[3],
                options(nostack),
            )
        }
    })
    .1
}

/// `SMC #0` with function `fid` and no arguments; `x0..=x3` back.
pub fn smc(fid: u32) -> Result<[u64; 4], Fault> {
    smc4([fid as u64, 0, 0, 0])
}

/// `SMC #0` with `x0..=x3`; `x0..=x3` back.
fn smc4(r: [u64; 4]) -> Result<[u64; 4], Fault> {
    let mut o = r;
    let (_, fault) = catching(|| {
        // SAFETY: an SMCCC call (PSCI); x4..x17 may be clobbered by
        // SMCCC 1.0 firmware and are declared so.
        unsafe {
            asm!(
                "smc #0",
                inout("x0") o[0], inout("x1") o[1], inout("x2") o[2], inout("x3") o[3],
                out("x4") _, out("x5") _, out("x6") _, out("x7") _,
                out("x8") _, out("x9") _, out("x10") _, out("x11") _,
                out("x12") _, out("x13") _, out("x14") _, out("x15") _,
                out("x16") _, out("x17") _,
                options(nostack),
            )
        }
    });
    fault.map_or(Ok(o), Err)
}

/// `HVC #0` with `x0..=x6`; `x0..=x3` back.
pub fn hvc(x: [u64; 7]) -> Result<[u64; 4], Fault> {
    let mut r = [0u64; 18];
    r[..7].copy_from_slice(&x);
    match hvc_all(&mut r) {
        Some(f) => Err(f),
        None => Ok([r[0], r[1], r[2], r[3]]),
    }
}

/// The PSCI conduit: 0 = SMC, 1 = HVC.
static CONDUIT: AtomicU8 = AtomicU8::new(0);

/// Use `conduit` for PSCI calls (from the device tree).
pub fn set_conduit(conduit: PsciConduit) {
    CONDUIT.store((conduit == PsciConduit::Hvc) as u8, Ordering::Relaxed);
}

/// A PSCI call with up to three arguments; PSCI's (signed) result.
pub fn psci_call(fid: u32, a1: u64, a2: u64, a3: u64) -> Result<i64, Fault> {
    let r = [fid as u64, a1, a2, a3];
    let out = if CONDUIT.load(Ordering::Relaxed) == 1 {
        hvc([r[0], r[1], r[2], r[3], 0, 0, 0])?
    } else {
        smc4(r)?
    };
    Ok(out[0] as i64)
}

/// Whether Warden answered FN_CALL_UID (set once at boot).
static WARDEN: AtomicBool = AtomicBool::new(false);

/// Whether the test host runs under Warden.
pub fn under_warden() -> bool {
    WARDEN.load(Ordering::Relaxed)
}

/// Ask for Warden's UID and remember whether it answered; what came back.
pub fn detect_warden() -> Result<[u64; 4], Fault> {
    let r = hvc([abi::FN_CALL_UID as u64, 0, 0, 0, 0, 0, 0]);
    let found = matches!(r, Ok(x) if x.iter().zip(abi::CALL_UID).all(|(&a, b)| a == b as u64));
    WARDEN.store(found, Ordering::Relaxed);
    r
}

/// A Warden hypercall's results: `x0` (SMCCC status), `x1` (0 or a
/// negative errno), `x2`, `x3`.
#[derive(Clone, Copy, Debug)]
pub struct Ret {
    /// SMCCC status.
    pub status: i64,
    /// The call's result.
    pub result: i64,
    /// Output 2.
    pub x2: u64,
    /// Output 3.
    pub x3: u64,
}

/// Call Warden function `fid` with `x1..` = `args`; `None` if the HVC
/// faulted (no hypervisor).
pub fn call(fid: u32, args: &[u64]) -> Option<Ret> {
    let mut x = [0u64; 7];
    x[0] = fid as u64;
    for (d, s) in x[1..].iter_mut().zip(args) {
        *d = *s;
    }
    hvc(x).ok().map(|r| Ret {
        status: r[0] as i64,
        result: r[1] as i64,
        x2: r[2],
        x3: r[3],
    })
}

/// Counter `which` ([`abi::counter`]), if Warden answers.
pub fn counter(which: u64) -> Option<u64> {
    call(abi::FN_COUNTER, &[which])
        .filter(|r| r.status == 0 && r.result == 0)
        .map(|r| r.x2)
}

/// `x1` of a call, or `None` if it did not complete as an implemented
/// function (fault or SMCCC status other than success).
pub fn result(fid: u32, args: &[u64]) -> Option<i64> {
    call(fid, args)
        .filter(|r| r.status == abi::SMCCC_SUCCESS)
        .map(|r| r.result)
}

/// FN_HOST_PAGE_STATE of `pfn`: (`x1`, state, pins), if Warden answers.
pub fn page_state(pfn: u64) -> Option<(i64, u64, u64)> {
    call(abi::FN_HOST_PAGE_STATE, &[pfn])
        .filter(|r| r.status == abi::SMCCC_SUCCESS)
        .map(|r| {
            (
                r.result,
                if r.result == 0 { r.x2 } else { 0 },
                if r.result == 0 { r.x3 } else { 0 },
            )
        })
}
