//! The host's hypercalls (`HVC #0`, SMCCC vendor hypervisor service; the
//! ABI is `warden-abi`, the prose `docs/abi.md`): decode the registers,
//! check them, run the transition in warden-memprotect, encode the result.
//!
//! Pure logic over any memprotect [`Platform`], so the host tests run every
//! call, with hostile arguments, against tables in memory. Every register
//! is read once into a local (the trap frame is the host's to race with
//! only in the sense that the host chose the values; they are copied
//! before use and never re-read), and a refused call changes nothing:
//! memprotect's check-then-commit transitions guarantee it for page state,
//! and the donation list is updated only after the transition committed,
//! in a slot reserved before it.

use core::sync::atomic::{AtomicU64, Ordering};

use lock_api::{Mutex, RawMutex};
use warden_abi::{self as abi, counter, page_state, Errno};
use warden_memprotect::{Error, Handle, MemProtect, PageState, Perms, Platform};

/// How many donations the host may hold at once.
pub const MAX_DONATIONS: usize = 64;

/// The registers a hypercall reads: `x0..=x6`.
pub type CallRegs = [u64; 7];
/// The registers a hypercall writes: `x0..=x3`.
pub type RetRegs = [u64; 4];

/// Warden's event counters, readable by the host ([`abi::FN_COUNTER`]).
pub struct Counters([AtomicU64; counter::COUNT as usize]);

impl Counters {
    /// All zero.
    pub const fn new() -> Self {
        Counters([const { AtomicU64::new(0) }; counter::COUNT as usize])
    }

    /// Add `n` to counter `which` (an [`abi::counter`] index).
    pub fn add(&self, which: u64, n: u64) {
        if let Some(c) = self.0.get(which as usize) {
            c.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Counter `which`, or `None` past the last.
    pub fn get(&self, which: u64) -> Option<u64> {
        self.0.get(which as usize).map(|c| c.load(Ordering::Relaxed))
    }
}

impl Default for Counters {
    fn default() -> Self {
        Self::new()
    }
}

/// Pages the host donated and may take back: exactly these `(pfn, nr)`
/// ranges, so that the host can never "reclaim" Warden's own memory.
struct Donations([Option<(u64, u64)>; MAX_DONATIONS]);

/// The hypercall service: the donation list and the counters.
pub struct Hostcalls<L: RawMutex> {
    donations: Mutex<L, Donations>,
    /// Warden's counters (the EL2 code adds faults, SMCs, CPUs, SMMU
    /// events; the dispatcher counts hypercalls).
    pub counters: Counters,
}

fn errno(e: Error) -> i64 {
    e.errno()
}

fn ret(result: Result<(), Error>) -> RetRegs {
    ok(match result {
        Ok(()) => 0,
        Err(e) => errno(e),
    })
}

fn ok(result: i64) -> RetRegs {
    [abi::SMCCC_SUCCESS as u64, result as u64, 0, 0]
}

fn err(e: Errno) -> RetRegs {
    ok(e as i64)
}

/// A guest handle from a register: values that do not fit are no VM.
/// (Permissions are checked first: a malformed argument is `-EINVAL`
/// before the VM lookup's `-ENOENT`, memprotect's check order.)
fn handle(x: u64) -> Result<Handle, Error> {
    Handle::try_from(x).map_err(|_| Error::NoEnt)
}

/// Guest permissions from a register (`-EINVAL` for undefined bits).
fn prot(x: u64) -> Result<Perms, Error> {
    if x & !abi::prot::ALL != 0 {
        return Err(Error::Inval);
    }
    Ok(Perms::new(
        x & abi::prot::R != 0,
        x & abi::prot::W != 0,
        x & abi::prot::X != 0,
    ))
}

fn state_code(s: PageState) -> u64 {
    match s {
        PageState::Owned => page_state::OWNED,
        PageState::SharedOwned => page_state::SHARED_OWNED,
        PageState::SharedBorrowed => page_state::SHARED_BORROWED,
        PageState::NoPage => page_state::NO_PAGE,
    }
}

impl<L: RawMutex> Hostcalls<L> {
    /// No donations, counters at zero.
    pub const fn new() -> Self {
        Hostcalls {
            donations: Mutex::new(Donations([None; MAX_DONATIONS])),
            counters: Counters::new(),
        }
    }

    /// Whether `fid` (the low 32 bits of `x0`) is a function Warden
    /// implements.
    pub fn implemented(fid: u32) -> bool {
        fid == abi::FN_CALL_UID || abi::FUNCTIONS.contains(&fid)
    }

    /// Run the hypercall in `x` and return `x0..=x3`. `drain_events` is
    /// called before a counter is read, to fold in the SMMU's pending
    /// fault events.
    pub fn handle<P: Platform>(&self, mp: &MemProtect<'_, P>, x: &CallRegs, drain_events: impl FnOnce()) -> RetRegs {
        self.counters.add(counter::HYPERCALLS, 1);
        // SMCCC: the function ID is W0; the upper half of X0 is ignored.
        let fid = x[0] as u32;
        let (a1, a2, a3, a4, a5) = (x[1], x[2], x[3], x[4], x[5]);
        match fid {
            abi::FN_CALL_UID => {
                let u = abi::CALL_UID;
                [u[0] as u64, u[1] as u64, u[2] as u64, u[3] as u64]
            }
            abi::FN_VERSION => {
                let mut r = ok(0);
                r[2] = (abi::VERSION_MAJOR as u64) << 16 | abi::VERSION_MINOR as u64;
                r
            }
            abi::FN_FEATURES => match u32::try_from(a1) {
                Ok(f) if Self::implemented(f) => ok(0),
                _ => err(Errno::OpNotSupp),
            },
            abi::FN_HOST_SHARE_HYP => ret(mp.host_share_hyp(a1)),
            abi::FN_HOST_UNSHARE_HYP => ret(mp.host_unshare_hyp(a1)),
            abi::FN_HOST_DONATE_HYP => ret(self.donate(mp, a1, a2)),
            abi::FN_HOST_RECLAIM_HYP => ret(self.reclaim(mp, a1, a2)),
            abi::FN_HOST_SHARE_GUEST => {
                ret(prot(a5).and_then(|p| handle(a1).and_then(|h| mp.host_share_guest(h, a2, a3, a4, p))))
            }
            abi::FN_HOST_UNSHARE_GUEST => ret(handle(a1).and_then(|h| mp.host_unshare_guest(h, a2, a3))),
            abi::FN_HOST_RELAX_PERMS_GUEST => {
                ret(prot(a3).and_then(|p| handle(a1).and_then(|h| mp.host_relax_perms_guest(h, a2, p))))
            }
            abi::FN_HOST_WRPROTECT_GUEST => ret(handle(a1).and_then(|h| mp.host_wrprotect_guest(h, a2, a3))),
            abi::FN_HOST_TEST_CLEAR_YOUNG_GUEST => {
                match handle(a1).and_then(|h| mp.host_test_clear_young_guest(h, a2, a3, a4 != 0)) {
                    Ok(young) => {
                        let mut r = ok(0);
                        r[2] = young as u64;
                        r
                    }
                    Err(e) => ok(errno(e)),
                }
            }
            abi::FN_HOST_MKYOUNG_GUEST => ret(handle(a1).and_then(|h| mp.host_mkyoung_guest(h, a2))),
            abi::FN_HOST_PAGE_STATE => {
                if mp.range(a1, 1).is_err() {
                    return err(Errno::Inval);
                }
                match (mp.host_state(a1), mp.pins(a1)) {
                    (Some(s), Some(pins)) => [abi::SMCCC_SUCCESS as u64, 0, state_code(s), pins as u64],
                    _ => err(Errno::NoEnt),
                }
            }
            abi::FN_COUNTER => {
                if a1 >= counter::COUNT {
                    return err(Errno::Inval);
                }
                drain_events();
                let mut r = ok(0);
                r[2] = self.counters.get(a1).unwrap_or(0);
                r
            }
            _ => [abi::SMCCC_NOT_SUPPORTED as u64, 0, 0, 0],
        }
    }

    /// Donate `nr` pages from `pfn` to the hypervisor and remember the
    /// range for [`Self::reclaim`]. The slot is found before the transition
    /// and filled after it committed, so a full list refuses (`NoMem`)
    /// without a change.
    fn donate<P: Platform>(&self, mp: &MemProtect<'_, P>, pfn: u64, nr: u64) -> Result<(), Error> {
        let mut list = self.donations.lock();
        let slot = list.0.iter().position(Option::is_none).ok_or(Error::NoMem)?;
        mp.host_donate_hyp(pfn, nr)?;
        list.0[slot] = Some((pfn, nr));
        Ok(())
    }

    /// Give back exactly one earlier donation (`Perm` for anything else:
    /// the hypervisor's own memory is never on the list).
    fn reclaim<P: Platform>(&self, mp: &MemProtect<'_, P>, pfn: u64, nr: u64) -> Result<(), Error> {
        let mut list = self.donations.lock();
        let slot = list.0.iter().position(|d| *d == Some((pfn, nr))).ok_or(Error::Perm)?;
        mp.hyp_donate_host(pfn, nr)?;
        list.0[slot] = None;
        Ok(())
    }
}

impl<L: RawMutex> Default for Hostcalls<L> {
    fn default() -> Self {
        Self::new()
    }
}
