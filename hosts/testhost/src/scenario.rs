//! The scenarios' names and verdicts, and the console protocol xtask reads.
//!
//! Every scenario prints exactly one line
//! `RESULT <name> <PASS|FAIL|SKIP> <detail>`; after the last one the test
//! host prints `TESTHOST DONE <passed>/<total>` and powers off. `SKIP` is
//! only given when the test host runs without Warden (standalone, for
//! development) and a scenario's checks all need Warden; under Warden every
//! scenario must PASS. xtask keeps its own table of these names with a
//! one-line expectation each (`xtask/src/report.rs`), and a unit test there
//! checks the two lists agree.

/// Prefix of a scenario's result line.
pub const RESULT_PREFIX: &str = "RESULT";
/// Prefix of the final line.
pub const DONE_PREFIX: &str = "TESTHOST DONE";

/// Hypercall ABI discovery: UID, version, feature queries.
pub const ABI_VERSION: &str = "abi-version";
/// Secondary CPUs through PSCI CPU_ON (relayed by Warden).
pub const SECONDARIES: &str = "secondaries";
/// Every host page faults in lazily, in blocks.
pub const LAZY_MAP: &str = "lazy-map";
/// Share/unshare with the hypervisor, and hostile variants.
pub const SHARE_HYP: &str = "share-hyp";
/// Donate/reclaim, and access to donated pages.
pub const DONATE_RECLAIM: &str = "donate-reclaim";
/// Access to Warden's own memory.
pub const WARDEN_MEMORY: &str = "warden-memory";
/// Access to the SMMU's registers.
pub const SMMU_MMIO: &str = "smmu-mmio";
/// Random hypercalls from every CPU at once.
pub const GARBAGE_HYPERCALLS: &str = "garbage-hypercalls";
/// DMA from QEMU's edu device behind the SMMU.
pub const DMA_EDU: &str = "dma-edu";

/// Every scenario, in the order they run.
pub const ALL: [&str; 9] = [
    ABI_VERSION,
    SECONDARIES,
    LAZY_MAP,
    SHARE_HYP,
    DONATE_RECLAIM,
    WARDEN_MEMORY,
    SMMU_MMIO,
    GARBAGE_HYPERCALLS,
    DMA_EDU,
];

/// A scenario's verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every check held.
    Pass,
    /// A check failed (the detail says which).
    Fail,
    /// Not under Warden: the checks that need it could not run, and the
    /// others held.
    Skip,
}

impl Verdict {
    /// The word on the RESULT line.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::Fail => "FAIL",
            Verdict::Skip => "SKIP",
        }
    }
}

/// A Linux errno's name, for details (`x1` of a hypercall).
pub fn errno_name(value: i64) -> &'static str {
    match value {
        0 => "0",
        -1 => "-EPERM",
        -2 => "-ENOENT",
        -7 => "-E2BIG",
        -12 => "-ENOMEM",
        -16 => "-EBUSY",
        -22 => "-EINVAL",
        -95 => "-EOPNOTSUPP",
        v if v < 0 => "a negative errno",
        _ => "a positive value",
    }
}

/// Whether `value` is one of the errnos the ABI lists (`warden_abi::Errno`).
pub fn is_abi_errno(value: i64) -> bool {
    use warden_abi::Errno::*;
    [Perm, NoEnt, TooBig, NoMem, Busy, Inval, OpNotSupp]
        .iter()
        .any(|&e| e as i64 == value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_words() {
        for (i, a) in ALL.iter().enumerate() {
            assert!(!a.is_empty() && !a.contains(' '));
            assert!(ALL[i + 1..].iter().all(|b| a != b));
        }
        assert_eq!(errno_name(-22), "-EINVAL");
        assert!(is_abi_errno(-95));
        assert!(!is_abi_errno(-3));
    }
}
