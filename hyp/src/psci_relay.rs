//! The PSCI relay: what Warden does with an SMC the host made (trapped by
//! HCR_EL2.TSC), and the per-CPU power state that makes CPU_ON safe.
//!
//! The rule (docs/abi.md): PSCI calls Warden understands are relayed, with
//! CPU_ON rewritten so the CPU starts in Warden (its EL2 setup first, then
//! the host's entry point at EL1): the host can never start a CPU outside
//! Warden. Every other SMC is refused with `NOT_SUPPORTED` and never
//! reaches the firmware.

use core::sync::atomic::{AtomicU64, AtomicU8, Ordering};

/// Most CPUs Warden manages.
pub const MAX_CPUS: usize = 8;

/// PSCI return codes (Arm DEN 0022).
pub mod ret {
    /// Success.
    pub const SUCCESS: i64 = 0;
    /// Not supported.
    pub const NOT_SUPPORTED: i64 = -1;
    /// Invalid parameters.
    pub const INVALID_PARAMETERS: i64 = -2;
    /// The CPU is already on.
    pub const ALREADY_ON: i64 = -4;
    /// A CPU_ON for this CPU is still in progress.
    pub const ON_PENDING: i64 = -5;
    /// Internal failure.
    pub const INTERNAL_FAILURE: i64 = -6;
}

/// PSCI function IDs (SMC32 `0x84..`, SMC64 `0xC4..`) and the SMCCC
/// calls Linux makes through the PSCI conduit.
pub mod fid {
    /// PSCI_VERSION.
    pub const VERSION: u32 = 0x8400_0000;
    /// CPU_SUSPEND (SMC32).
    pub const CPU_SUSPEND_32: u32 = 0x8400_0001;
    /// CPU_SUSPEND (SMC64).
    pub const CPU_SUSPEND_64: u32 = 0xC400_0001;
    /// CPU_OFF.
    pub const CPU_OFF: u32 = 0x8400_0002;
    /// CPU_ON (SMC32).
    pub const CPU_ON_32: u32 = 0x8400_0003;
    /// CPU_ON (SMC64).
    pub const CPU_ON_64: u32 = 0xC400_0003;
    /// AFFINITY_INFO (SMC32).
    pub const AFFINITY_INFO_32: u32 = 0x8400_0004;
    /// AFFINITY_INFO (SMC64).
    pub const AFFINITY_INFO_64: u32 = 0xC400_0004;
    /// MIGRATE_INFO_TYPE.
    pub const MIGRATE_INFO_TYPE: u32 = 0x8400_0006;
    /// SYSTEM_OFF.
    pub const SYSTEM_OFF: u32 = 0x8400_0008;
    /// SYSTEM_RESET.
    pub const SYSTEM_RESET: u32 = 0x8400_0009;
    /// PSCI_FEATURES.
    pub const FEATURES: u32 = 0x8400_000A;
    /// SMCCC_VERSION.
    pub const SMCCC_VERSION: u32 = 0x8000_0000;
    /// SMCCC_ARCH_FEATURES.
    pub const SMCCC_ARCH_FEATURES: u32 = 0x8000_0001;
}

/// A host SMC, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SmcCall {
    /// Forward unchanged to the firmware (version queries, AFFINITY_INFO,
    /// MIGRATE_INFO_TYPE, SMCCC version and architecture features).
    Forward,
    /// Answer PSCI_FEATURES for `fid` from Warden's own list.
    Features(u32),
    /// Start CPU `target` (an MPIDR) at the host's `entry` with `context`.
    CpuOn {
        /// The target's MPIDR affinity.
        target: u64,
        /// The host's entry point (physical).
        entry: u64,
        /// The host's x0 for the new CPU.
        context: u64,
    },
    /// Turn the calling CPU off.
    CpuOff,
    /// Power the machine off.
    SystemOff,
    /// Reset the machine.
    SystemReset,
    /// Not relayed: `NOT_SUPPORTED`, firmware untouched.
    Refused,
}

/// Decode the SMC in `x0..=x3`. SMC32 calls take 32-bit arguments.
pub fn decode(x0: u64, x1: u64, x2: u64, x3: u64) -> SmcCall {
    let w = |v: u64| v & 0xffff_ffff;
    match x0 as u32 {
        fid::VERSION
        | fid::AFFINITY_INFO_32
        | fid::AFFINITY_INFO_64
        | fid::MIGRATE_INFO_TYPE
        | fid::SMCCC_VERSION
        | fid::SMCCC_ARCH_FEATURES => SmcCall::Forward,
        fid::FEATURES => SmcCall::Features(x1 as u32),
        fid::CPU_ON_32 => SmcCall::CpuOn {
            target: w(x1),
            entry: w(x2),
            context: w(x3),
        },
        fid::CPU_ON_64 => SmcCall::CpuOn {
            target: x1,
            entry: x2,
            context: x3,
        },
        fid::CPU_OFF => SmcCall::CpuOff,
        fid::SYSTEM_OFF => SmcCall::SystemOff,
        fid::SYSTEM_RESET => SmcCall::SystemReset,
        // CPU_SUSPEND with a power-down state would return through the
        // firmware's entry point, not Warden's: not offered (Linux idles
        // with WFI instead).
        _ => SmcCall::Refused,
    }
}

/// PSCI_FEATURES' answer for `f`: 0 for what Warden relays, else
/// `NOT_SUPPORTED`.
pub fn features(f: u32) -> i64 {
    match f {
        fid::VERSION
        | fid::CPU_OFF
        | fid::CPU_ON_32
        | fid::CPU_ON_64
        | fid::AFFINITY_INFO_32
        | fid::AFFINITY_INFO_64
        | fid::MIGRATE_INFO_TYPE
        | fid::SYSTEM_OFF
        | fid::SYSTEM_RESET
        | fid::FEATURES => ret::SUCCESS,
        _ => ret::NOT_SUPPORTED,
    }
}

/// The MPIDR affinity fields (Aff3, Aff2, Aff1, Aff0).
pub const MPIDR_AFF_MASK: u64 = 0xff_00ff_ffff;

const OFF: u8 = 0;
const PENDING: u8 = 1;
const ON: u8 = 2;

/// Every CPU's power state as Warden sees it, and the host entry point a
/// starting CPU will take.
pub struct Cpus {
    mpidr: [u64; MAX_CPUS],
    count: usize,
    state: [AtomicU8; MAX_CPUS],
    entry: [AtomicU64; MAX_CPUS],
    context: [AtomicU64; MAX_CPUS],
}

impl Cpus {
    /// The CPUs with these MPIDRs (the device tree's `/cpus`, at most
    /// [`MAX_CPUS`]), all off except `boot` (an index).
    pub fn new(mpidrs: &[u64], boot: usize) -> Self {
        let count = mpidrs.len().min(MAX_CPUS);
        let mut mpidr = [u64::MAX; MAX_CPUS];
        for (m, v) in mpidr.iter_mut().zip(mpidrs) {
            *m = v & MPIDR_AFF_MASK;
        }
        let cpus = Cpus {
            mpidr,
            count,
            state: [const { AtomicU8::new(OFF) }; MAX_CPUS],
            entry: [const { AtomicU64::new(0) }; MAX_CPUS],
            context: [const { AtomicU64::new(0) }; MAX_CPUS],
        };
        if boot < count {
            cpus.state[boot].store(ON, Ordering::Relaxed);
        }
        cpus
    }

    /// How many CPUs.
    pub fn count(&self) -> usize {
        self.count
    }

    /// The index of the CPU with affinity `mpidr`.
    pub fn index_of(&self, mpidr: u64) -> Option<usize> {
        self.mpidr[..self.count]
            .iter()
            .position(|&m| m == mpidr & MPIDR_AFF_MASK)
    }

    /// The MPIDR affinity of CPU `index`.
    pub fn mpidr(&self, index: usize) -> Option<u64> {
        self.mpidr[..self.count].get(index).copied()
    }

    /// A host CPU_ON for `target` (bits outside the affinity fields are
    /// ignored; the firmware is given the matched CPU's MPIDR): claim the CPU (off -> pending) and
    /// record where the host wants it to start. The caller then asks the
    /// firmware to start it in Warden, and calls [`Self::on_failed`] if
    /// the firmware refuses. Errors are PSCI codes; a refusal changes
    /// nothing.
    pub fn begin_on(&self, target: u64, entry: u64, context: u64) -> Result<usize, i64> {
        let i = self.index_of(target).ok_or(ret::INVALID_PARAMETERS)?;
        match self.state[i].compare_exchange(OFF, PENDING, Ordering::Acquire, Ordering::Acquire) {
            Ok(_) => {
                self.entry[i].store(entry, Ordering::Relaxed);
                self.context[i].store(context, Ordering::Relaxed);
                Ok(i)
            }
            Err(PENDING) => Err(ret::ON_PENDING),
            Err(_) => Err(ret::ALREADY_ON),
        }
    }

    /// The firmware did not start CPU `i`: back to off.
    pub fn on_failed(&self, i: usize) {
        if let Some(s) = self.state.get(i) {
            let _ = s.compare_exchange(PENDING, OFF, Ordering::Release, Ordering::Relaxed);
        }
    }

    /// CPU `i` came up in Warden: mark it on and return the host's entry
    /// point and context. `None` if no CPU_ON was pending for it (the
    /// firmware started a CPU nobody asked for: it must not enter the
    /// host).
    pub fn started(&self, i: usize) -> Option<(u64, u64)> {
        let s = self.state.get(i)?;
        s.compare_exchange(PENDING, ON, Ordering::AcqRel, Ordering::Relaxed)
            .ok()?;
        Some((
            self.entry[i].load(Ordering::Relaxed),
            self.context[i].load(Ordering::Relaxed),
        ))
    }

    /// CPU `i` is turning itself off.
    pub fn off(&self, i: usize) {
        if let Some(s) = self.state.get(i) {
            s.store(OFF, Ordering::Release);
        }
    }

    /// CPU `i` is on after all (its CPU_OFF was refused).
    pub fn mark_on(&self, i: usize) {
        if let Some(s) = self.state.get(i) {
            s.store(ON, Ordering::Release);
        }
    }

    /// Whether CPU `i` is on.
    pub fn is_on(&self, i: usize) -> bool {
        self.state.get(i).is_some_and(|s| s.load(Ordering::Acquire) == ON)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoding() {
        assert_eq!(
            decode(0xC400_0003, 1, 0x4400_0000, 7),
            SmcCall::CpuOn {
                target: 1,
                entry: 0x4400_0000,
                context: 7
            }
        );
        // SMC32 CPU_ON ignores the upper halves.
        assert_eq!(
            decode(0xffff_ffff_8400_0003, 1 << 32 | 1, 1 << 40 | 0x1000, u64::MAX),
            SmcCall::CpuOn {
                target: 1,
                entry: 0x1000,
                context: 0xffff_ffff
            }
        );
        assert_eq!(decode(0x8400_0008, 0, 0, 0), SmcCall::SystemOff);
        assert_eq!(decode(0xC400_0001, 0, 0, 0), SmcCall::Refused);
        assert_eq!(
            decode(0xC600_0000, 0, 0, 0),
            SmcCall::Refused,
            "vendor calls are not PSCI"
        );
        assert_eq!(
            decode(0x8400_000A, fid::CPU_ON_64 as u64, 0, 0),
            SmcCall::Features(fid::CPU_ON_64)
        );
        assert_eq!(features(fid::CPU_ON_64), 0);
        assert_eq!(features(fid::CPU_SUSPEND_64), ret::NOT_SUPPORTED);
    }

    #[test]
    fn cpu_on_state_machine() {
        let cpus = Cpus::new(&[0x8000_0000, 0x8000_0001, 0x100], 0);
        assert_eq!(cpus.index_of(0x1), Some(1), "MPIDR's RES1 bit 31 is not affinity");
        assert_eq!(cpus.begin_on(0, 0x1000, 1), Err(ret::ALREADY_ON), "the boot CPU is on");
        assert_eq!(cpus.begin_on(5, 0x1000, 1), Err(ret::INVALID_PARAMETERS));
        assert_eq!(
            cpus.begin_on(1 << 50, 0x1000, 1),
            Err(ret::ALREADY_ON),
            "bits outside the affinity ignored"
        );
        assert_eq!(cpus.begin_on(1, 0x1000, 9), Ok(1));
        assert_eq!(
            cpus.begin_on(1, 0x2000, 8),
            Err(ret::ON_PENDING),
            "the first request stands"
        );
        assert_eq!(cpus.started(2), None, "nobody asked for CPU 2");
        assert_eq!(cpus.started(1), Some((0x1000, 9)));
        assert_eq!(cpus.started(1), None, "a CPU starts once per CPU_ON");
        assert!(cpus.is_on(1));
        assert_eq!(cpus.begin_on(1, 0x1000, 9), Err(ret::ALREADY_ON));
        cpus.off(1);
        assert_eq!(cpus.begin_on(0x8000_0001, 0x3000, 3), Ok(1));
        cpus.on_failed(1);
        assert!(!cpus.is_on(1));
        assert_eq!(cpus.begin_on(0x100, 0x3000, 3), Ok(2));
        assert_eq!(cpus.started(99), None);
    }
}
