//! Warden's hypercall ABI, shared by the hypervisor (which implements it)
//! and by hosts (which call it). `docs/abi.md` is the prose version.
//!
//! Every call is an SMCCC 1.1 fast call through `HVC #0` from the host at
//! EL1 (Arm DEN 0028): the function ID in `w0`, arguments in `x1..=x6`,
//! results in `x0..=x3`, `x4..=x17` preserved.
//!
//! * `x0` is the SMCCC status: [`SMCCC_SUCCESS`] when Warden implements
//!   the function, [`SMCCC_NOT_SUPPORTED`] when it does not (nothing else
//!   is returned then).
//! * `x1` is the call's own result: 0 or a negative Linux errno
//!   ([`Errno`]); further outputs follow in `x2`, `x3`.
//!
//! Warden's functions live in the SMCCC *vendor-specific hypervisor
//! service* range (owning entity 6), SMC64 form: `0xC600_0000 | n`.
//! Arguments are allegations: Warden reads each register once, checks it,
//! and a refused call changes nothing.
#![no_std]

/// SMCCC: the function is implemented (and ran; see `x1`).
pub const SMCCC_SUCCESS: i64 = 0;
/// SMCCC: no such function.
pub const SMCCC_NOT_SUPPORTED: i64 = -1;

/// The SMCCC fast-call, SMC64, vendor-hypervisor-service prefix.
pub const VENDOR_HYP_64: u32 = 0xC600_0000;

/// The function ID of Warden's function number `n`.
pub const fn vendor_hyp_fn(n: u16) -> u32 {
    VENDOR_HYP_64 | n as u32
}

/// SMCCC "Call UID" query for the vendor hypervisor service (SMC32
/// form, as SMCCC defines it): returns Warden's UID in `x0..=x3`.
pub const FN_CALL_UID: u32 = 0x8600_ff01;
/// The four words of Warden's UID, as `FN_CALL_UID` returns them
/// (`"WARDEN-HYP-ABI-1"` in little-endian words).
pub const CALL_UID: [u32; 4] = [0x4452_4157, 0x482d_4e45, 0x412d_5059, 0x312d_4942];

/// ABI version: `x2` = `major << 16 | minor` (`x1` = 0).
pub const FN_VERSION: u32 = vendor_hyp_fn(0x00);
/// Feature discovery: `x1` = a function ID; result 0 if implemented, else
/// `-EOPNOTSUPP`.
pub const FN_FEATURES: u32 = vendor_hyp_fn(0x01);
/// Share host page `x1` (pfn) with the hypervisor.
pub const FN_HOST_SHARE_HYP: u32 = vendor_hyp_fn(0x02);
/// Take back a page shared with the hypervisor (`x1` = pfn); `-EBUSY`
/// while the hypervisor has it pinned.
pub const FN_HOST_UNSHARE_HYP: u32 = vendor_hyp_fn(0x03);
/// Donate `x2` host pages from pfn `x1` to the hypervisor (they leave the
/// host's stage 2 and its DMA; the hypervisor keeps them for the host in
/// a list of donations).
pub const FN_HOST_DONATE_HYP: u32 = vendor_hyp_fn(0x04);
/// Take back a donation: `x1` pfn and `x2` count must be exactly one
/// earlier [`FN_HOST_DONATE_HYP`] still held (`-EPERM` otherwise).
pub const FN_HOST_RECLAIM_HYP: u32 = vendor_hyp_fn(0x05);
/// Share with guest `x1` (handle) `x4` host pages (1 or 512) from pfn `x2`
/// at gfn `x3` with permissions `x5` ([`prot`]).
pub const FN_HOST_SHARE_GUEST: u32 = vendor_hyp_fn(0x10);
/// Unshare from guest `x1` the `x3` pages at gfn `x2`.
pub const FN_HOST_UNSHARE_GUEST: u32 = vendor_hyp_fn(0x11);
/// Give guest `x1`'s mapping at gfn `x2` the permissions `x3` too.
pub const FN_HOST_RELAX_PERMS_GUEST: u32 = vendor_hyp_fn(0x12);
/// Remove write from guest `x1`'s `x3` pages at gfn `x2`.
pub const FN_HOST_WRPROTECT_GUEST: u32 = vendor_hyp_fn(0x13);
/// Test (and with `x4` != 0 clear) the access flag of guest `x1`'s `x3`
/// pages at gfn `x2`; `x2` out = 1 if young.
pub const FN_HOST_TEST_CLEAR_YOUNG_GUEST: u32 = vendor_hyp_fn(0x14);
/// Set the access flag of guest `x1`'s page at gfn `x2`.
pub const FN_HOST_MKYOUNG_GUEST: u32 = vendor_hyp_fn(0x15);
/// The host's state of pfn `x1`: `x2` = [`page_state`] value, `x3` = how
/// many times the hypervisor pinned it. `-EINVAL` past the PA space,
/// `-ENOENT` if not RAM.
pub const FN_HOST_PAGE_STATE: u32 = vendor_hyp_fn(0x20);
/// Counter `x1` ([`counter`]) in `x2`. Reading drains the SMMU's event
/// queue first, so [`counter::SMMU_FAULTS`] is up to date.
pub const FN_COUNTER: u32 = vendor_hyp_fn(0x21);

/// Every function Warden implements, for feature discovery and tests.
pub const FUNCTIONS: &[u32] = &[
    FN_VERSION,
    FN_FEATURES,
    FN_HOST_SHARE_HYP,
    FN_HOST_UNSHARE_HYP,
    FN_HOST_DONATE_HYP,
    FN_HOST_RECLAIM_HYP,
    FN_HOST_SHARE_GUEST,
    FN_HOST_UNSHARE_GUEST,
    FN_HOST_RELAX_PERMS_GUEST,
    FN_HOST_WRPROTECT_GUEST,
    FN_HOST_TEST_CLEAR_YOUNG_GUEST,
    FN_HOST_MKYOUNG_GUEST,
    FN_HOST_PAGE_STATE,
    FN_COUNTER,
];

/// The ABI version this crate describes.
pub const VERSION_MAJOR: u16 = 1;
/// The ABI minor version.
pub const VERSION_MINOR: u16 = 0;

/// Linux errno values (negated in `x1`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i64)]
pub enum Errno {
    /// A page is not in the state the call needs.
    Perm = -1,
    /// Nothing where something must be (no such VM, no mapping, not RAM).
    NoEnt = -2,
    /// The mapping is larger than the range given.
    TooBig = -7,
    /// No table page (or donation slot) for the update.
    NoMem = -12,
    /// The page is pinned, or a counter would overflow.
    Busy = -16,
    /// A malformed argument.
    Inval = -22,
    /// Not implemented (feature discovery).
    OpNotSupp = -95,
}

/// Guest permissions (`prot` arguments).
pub mod prot {
    /// Readable.
    pub const R: u64 = 1 << 0;
    /// Writable.
    pub const W: u64 = 1 << 1;
    /// Executable.
    pub const X: u64 = 1 << 2;
    /// Every defined bit; others are `-EINVAL`.
    pub const ALL: u64 = R | W | X;
}

/// Page states returned by [`FN_HOST_PAGE_STATE`].
pub mod page_state {
    /// The host owns the page alone.
    pub const OWNED: u64 = 0;
    /// The host owns it and shares it (with the hypervisor or guests).
    pub const SHARED_OWNED: u64 = 1;
    /// Someone else owns it and shares it with the host.
    pub const SHARED_BORROWED: u64 = 2;
    /// The host has no access (the hypervisor or a guest owns it).
    pub const NO_PAGE: u64 = 3;
}

/// Counters readable with [`FN_COUNTER`].
pub mod counter {
    /// Host stage-2 faults resolved by mapping (lazy identity map).
    pub const HOST_FAULTS_MAPPED: u64 = 0;
    /// Aborts injected into the host (access to what is not its own).
    pub const ABORTS_INJECTED: u64 = 1;
    /// Hypercalls handled (any function ID, including unknown ones).
    pub const HYPERCALLS: u64 = 2;
    /// SMCs from the host refused (not PSCI).
    pub const SMCS_REFUSED: u64 = 3;
    /// CPUs started through Warden's PSCI relay.
    pub const CPUS_STARTED: u64 = 4;
    /// SMMU fault events drained from the event queue.
    pub const SMMU_FAULTS: u64 = 5;
    /// Number of counters.
    pub const COUNT: u64 = 6;
}
