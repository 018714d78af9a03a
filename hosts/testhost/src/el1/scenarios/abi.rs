//! `abi-version`: the hypercall ABI's discovery calls answer as
//! `warden-abi` says: the UID, version 1.0, every listed function
//! implemented, an unknown one not.

use warden_abi as abi;

use super::super::report::{Checks, Outcome};
use super::super::smccc;
use super::{errno, standalone};

/// A function ID in Warden's range that the ABI does not define.
const UNDEFINED_FN: u32 = 0xC600_0FFF;
/// A silicon-provider (SiP) service call, SMC64: firmware's business,
/// which Warden must not forward for the host.
const SIP_CALL: u32 = 0xC200_0000;

/// The scenario.
pub fn abi_version() -> Outcome {
    let mut c = Checks::new();
    let uid = smccc::hvc([abi::FN_CALL_UID as u64, 0, 0, 0, 0, 0, 0]);
    let uid = match uid {
        Err(f) => {
            return standalone(
                c,
                format_args!(
                    "FN_CALL_UID is an undefined instruction (EC {:#x}): no hypervisor",
                    f.ec()
                ),
            )
        }
        Ok(r) => r,
    };
    let want = abi::CALL_UID.map(u64::from);
    if !smccc::under_warden() {
        // Standalone, QEMU's own SMCCC handling answers the HVC.
        return standalone(c, format_args!("FN_CALL_UID answered x0 = {:#x}: not Warden", uid[0]));
    }
    c.check(
        uid == want,
        format_args!("FN_CALL_UID returned {uid:#x?}, want {want:#x?}"),
    );
    if c.failed() {
        return c.outcome();
    }
    c.note(format_args!("UID ok"));

    match smccc::call(abi::FN_VERSION, &[]) {
        Some(r) => {
            let want = (abi::VERSION_MAJOR as u64) << 16 | abi::VERSION_MINOR as u64;
            c.check(
                r.status == abi::SMCCC_SUCCESS && r.result == 0 && r.x2 == want,
                format_args!(
                    "FN_VERSION: x0 {} x1 {} x2 {:#x}, want 0, 0, {want:#x}",
                    r.status, r.result, r.x2
                ),
            );
            c.note(format_args!("version {}.{}", r.x2 >> 16, r.x2 & 0xffff));
        }
        None => {
            c.check(false, format_args!("FN_VERSION faulted"));
        }
    }
    let feature = |fid: u32| smccc::result(abi::FN_FEATURES, &[fid as u64]);
    let counter = feature(abi::FN_COUNTER);
    c.check(
        counter == Some(0),
        format_args!("FN_FEATURES(FN_COUNTER) = {}, want 0", errno(counter)),
    );
    let undefined = feature(UNDEFINED_FN);
    c.check(
        undefined == Some(abi::Errno::OpNotSupp as i64),
        format_args!(
            "FN_FEATURES({UNDEFINED_FN:#x}) = {}, want -EOPNOTSUPP",
            errno(undefined)
        ),
    );
    let mut listed = 0;
    for &f in abi::FUNCTIONS {
        let r = feature(f);
        if c.check(r == Some(0), format_args!("FN_FEATURES({f:#x}) = {}, want 0", errno(r))) {
            listed += 1;
        }
    }
    c.note(format_args!(
        "FN_FEATURES: {listed}/{} listed functions implemented, {UNDEFINED_FN:#x} not",
        abi::FUNCTIONS.len()
    ));
    // An unknown function ID is not supported at the SMCCC level.
    let unknown = smccc::call(UNDEFINED_FN, &[]);
    c.check(
        unknown.is_some_and(|r| r.status == abi::SMCCC_NOT_SUPPORTED),
        format_args!(
            "HVC {UNDEFINED_FN:#x} returned x0 = {:?}, want -1",
            unknown.map(|r| r.status)
        ),
    );
    // HVC's immediate must be 0.
    let mut r = [0u64; 18];
    r[0] = abi::FN_VERSION as u64;
    let f = smccc::hvc_imm1(&mut r);
    c.check(
        f.is_none() && r[0] as i64 == abi::SMCCC_NOT_SUPPORTED,
        format_args!("HVC #1 (FN_VERSION) returned x0 = {:#x} (fault {f:x?}), want -1", r[0]),
    );
    // An SMC that is not PSCI is refused, never forwarded, and counted.
    let before = smccc::counter(abi::counter::SMCS_REFUSED);
    let sip = smccc::smc(SIP_CALL);
    let after = smccc::counter(abi::counter::SMCS_REFUSED);
    c.check(
        sip.is_ok_and(|x| x[0] as i64 == abi::SMCCC_NOT_SUPPORTED),
        format_args!("SMC {SIP_CALL:#x} (SiP service) = {sip:x?}, want NOT_SUPPORTED"),
    );
    c.check(
        before.zip(after).is_some_and(|(b, a)| a == b + 1),
        format_args!("SMCS_REFUSED went {before:?} -> {after:?}, want +1"),
    );
    c.note(format_args!("HVC #1 and a SiP SMC refused"));
    c.outcome()
}
