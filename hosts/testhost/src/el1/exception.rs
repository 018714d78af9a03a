//! EL1 exceptions: the handler behind the vectors (entry.rs), the per-CPU
//! "expected fault" slots, and the probes the scenarios attack with.
//!
//! A scenario that expects an abort arms its CPU's slot, makes exactly one
//! access (one instruction, in a probe below), and reads the slot back. The
//! handler, seeing the slot armed, records ESR_EL1/FAR_EL1/ELR_EL1 and
//! resumes after the access (or at the return address, for a branch into
//! memory that must not execute), so the test host carries on and can
//! check what Warden injected.
//!
//! An exception nobody expected is a finding, never a hang: a data abort or
//! an undefined instruction is recorded in the slot's "unexpected" count,
//! stepped over, and fails the running scenario (the runner checks the
//! count); anything else (instruction abort, alignment fault, SError, IRQ,
//! an exception from a lower EL or on SP_EL0, too many unexpected ones)
//! fails the running scenario at once and powers off.

use core::arch::asm;
use core::sync::atomic::{compiler_fence, AtomicU32, AtomicU64, Ordering};

use warden_testhost::machine::MAX_CPUS;

use super::cpu::{self, read_sysreg};
use super::report;

/// ESR_EL1 exception classes the test host tells apart.
pub mod ec {
    /// Unknown reason: an undefined instruction (e.g. HVC without EL2).
    pub const UNKNOWN: u64 = 0x00;
    /// Fault status code of a synchronous external abort: what Warden
    /// injects (docs/abi.md).
    pub const FSC_EXTERNAL: u64 = 0x10;
    /// Instruction abort taken without a change in exception level.
    pub const IABT_CUR: u64 = 0x21;
    /// Data abort taken without a change in exception level.
    pub const DABT_CUR: u64 = 0x25;
}

/// The registers the vector entry saves (entry.rs lays them out).
#[repr(C)]
pub struct Frame {
    /// x0..x30.
    pub x: [u64; 31],
    _pad: u64,
    /// q0..q31: the handler is compiled Rust and may use SIMD registers.
    pub q: [u128; 32],
    /// FPSR and FPCR.
    pub fpsr: u64,
    /// FPCR.
    pub fpcr: u64,
    /// Where `eret` returns to (ELR_EL1, restored from here).
    pub elr: u64,
    /// The interrupted PSTATE (SPSR_EL1, restored from here).
    pub spsr: u64,
}

/// Size of [`Frame`]; entry.rs reserves this much stack.
pub const FRAME_SIZE: usize = core::mem::size_of::<Frame>();
const _: () = assert!(FRAME_SIZE == 800);

/// How to resume after an expected fault.
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
enum Resume {
    /// Not armed.
    Off = 0,
    /// Skip the faulting instruction (a load, store, HVC or SMC).
    Skip = 1,
    /// Return to the link register (a branch into memory that must not be
    /// executed: the abort's ELR is the target, not the branch).
    ReturnToLr = 2,
}

/// What a fault looked like.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fault {
    /// ESR_EL1.
    pub esr: u64,
    /// FAR_EL1 (meaningful for aborts).
    pub far: u64,
    /// ELR_EL1: the instruction that faulted.
    pub elr: u64,
}

impl Fault {
    /// The exception class.
    pub fn ec(&self) -> u64 {
        self.esr >> 26
    }

    /// The fault status code (ESR ISS bits 5:0, DFSC/IFSC of an abort).
    pub fn fsc(&self) -> u64 {
        self.esr & 0x3f
    }

    /// Whether this is what Warden must inject for an access to `addr`
    /// that the host may not make: an abort from the current EL (data or
    /// instruction, as `ec` says) reporting `addr`.
    pub fn is_abort_at(&self, ec: u64, addr: u64) -> bool {
        self.ec() == ec && self.far == addr
    }
}

/// One CPU's fault bookkeeping.
struct Slot {
    resume: AtomicU32,
    faulted: AtomicU32,
    esr: AtomicU64,
    far: AtomicU64,
    elr: AtomicU64,
    unexpected: AtomicU64,
    first: [AtomicU64; 3],
}

impl Slot {
    const fn new() -> Self {
        Slot {
            resume: AtomicU32::new(0),
            faulted: AtomicU32::new(0),
            esr: AtomicU64::new(0),
            far: AtomicU64::new(0),
            elr: AtomicU64::new(0),
            unexpected: AtomicU64::new(0),
            first: [const { AtomicU64::new(0) }; 3],
        }
    }
}

/// Only loads and stores touch the slots (no exclusives): the handler may
/// run before the MMU is on.
static SLOTS: [Slot; MAX_CPUS] = [const { Slot::new() }; MAX_CPUS];

/// Unexpected data aborts / undefined instructions stepped over per CPU
/// before the test host gives up and powers off.
const MAX_UNEXPECTED: u64 = 32;

fn slot() -> &'static Slot {
    &SLOTS[cpu::index()]
}

fn arm(mode: Resume) {
    let s = slot();
    s.faulted.store(0, Ordering::Relaxed);
    s.resume.store(mode as u32, Ordering::Relaxed);
    compiler_fence(Ordering::SeqCst);
}

fn disarm() -> Option<Fault> {
    compiler_fence(Ordering::SeqCst);
    let s = slot();
    s.resume.store(Resume::Off as u32, Ordering::Relaxed);
    (s.faulted.load(Ordering::Relaxed) != 0).then(|| Fault {
        esr: s.esr.load(Ordering::Relaxed),
        far: s.far.load(Ordering::Relaxed),
        elr: s.elr.load(Ordering::Relaxed),
    })
}

/// Run `f` (which must make its possibly-faulting access in one asm
/// instruction) with this CPU's slot armed to skip a faulting instruction;
/// the fault, if one was taken.
pub fn catching<R>(f: impl FnOnce() -> R) -> (R, Option<Fault>) {
    arm(Resume::Skip);
    let r = f();
    (r, disarm())
}

/// Unexpected exceptions CPU `cpu` has stepped over so far, and the
/// first one.
pub fn unexpected_on(cpu: usize) -> (u64, Fault) {
    let s = &SLOTS[cpu.min(MAX_CPUS - 1)];
    let f = Fault {
        esr: s.first[0].load(Ordering::Relaxed),
        far: s.first[1].load(Ordering::Relaxed),
        elr: s.first[2].load(Ordering::Relaxed),
    };
    (s.unexpected.load(Ordering::Relaxed), f)
}

/// Read the 64-bit word at `addr` as one load; the fault if it aborted.
pub fn probe_read(addr: u64) -> Option<Fault> {
    catching(|| {
        // SAFETY: one load from an address the scenario chose (identity
        // mapped by the EL1 stage 1); if Warden refuses it, the abort is
        // caught by the armed slot and the load skipped. The loaded value
        // is discarded, so no Rust object is read.
        unsafe { asm!("ldr {v}, [{a}]", a = in(reg) addr, v = out(reg) _, options(nostack, preserves_flags)) };
    })
    .1
}

/// Write `value` to the 64-bit word at `addr` as one store; the fault if
/// it aborted.
///
/// # Safety
/// `addr` must not hold a live Rust object (it is a page the scenario owns
/// and uses for nothing else, or memory that is not the host's at all).
pub unsafe fn probe_write(addr: u64, value: u64) -> Option<Fault> {
    catching(|| {
        // SAFETY: the caller guarantees `addr` holds no Rust object; an
        // abort is caught by the armed slot and the store skipped.
        unsafe { asm!("str {v}, [{a}]", a = in(reg) addr, v = in(reg) value, options(nostack, preserves_flags)) };
    })
    .1
}

/// Branch to `addr` as if calling a function there; the instruction
/// abort if the fetch was refused. If the fetch is allowed and the code
/// there faults (an undefined instruction, say), the handler returns to
/// the caller too, but the code may have run: callers only branch to
/// memory that every other check says is not the host's.
///
/// # Safety
/// Code at `addr`, if it runs, runs as the test host: only call this for
/// memory the host cannot write (Warden's).
pub unsafe fn probe_exec(addr: u64) -> Option<Fault> {
    arm(Resume::ReturnToLr);
    // SAFETY: BLR to `addr`; if the fetch aborts, the handler resumes at
    // the return address in x30 (just after the BLR). Every register a
    // called function may change is declared clobbered (the C ABI's).
    unsafe { asm!("blr {a}", a = in(reg) addr, clobber_abi("C")) };
    disarm()
}

/// Names of the 16 vectors, by index.
const VECTORS: [&str; 16] = [
    "synchronous, current EL with SP_EL0",
    "IRQ, current EL with SP_EL0",
    "FIQ, current EL with SP_EL0",
    "SError, current EL with SP_EL0",
    "synchronous, current EL",
    "IRQ, current EL",
    "FIQ, current EL",
    "SError, current EL",
    "synchronous, lower EL (AArch64)",
    "IRQ, lower EL (AArch64)",
    "FIQ, lower EL (AArch64)",
    "SError, lower EL (AArch64)",
    "synchronous, lower EL (AArch32)",
    "IRQ, lower EL (AArch32)",
    "FIQ, lower EL (AArch32)",
    "SError, lower EL (AArch32)",
];

/// The Rust side of every vector (entry.rs): `index` says which one,
/// `frame` holds the interrupted registers; returning resumes at
/// `frame.elr`.
#[no_mangle]
extern "C" fn testhost_exception(index: u64, frame: &mut Frame) {
    let esr = read_sysreg!("esr_el1");
    let far = read_sysreg!("far_el1");
    let s = slot();
    if index == 4 {
        let resume = s.resume.load(Ordering::Relaxed);
        if resume != Resume::Off as u32 {
            s.esr.store(esr, Ordering::Relaxed);
            s.far.store(far, Ordering::Relaxed);
            s.elr.store(frame.elr, Ordering::Relaxed);
            s.faulted.store(1, Ordering::Relaxed);
            s.resume.store(Resume::Off as u32, Ordering::Relaxed);
            frame.elr = if resume == Resume::ReturnToLr as u32 {
                frame.x[30]
            } else {
                frame.elr + 4
            };
            return;
        }
        let n = s.unexpected.load(Ordering::Relaxed) + 1;
        s.unexpected.store(n, Ordering::Relaxed);
        if n == 1 {
            s.first[0].store(esr, Ordering::Relaxed);
            s.first[1].store(far, Ordering::Relaxed);
            s.first[2].store(frame.elr, Ordering::Relaxed);
        }
        let ec = esr >> 26;
        if (ec == ec::DABT_CUR || ec == ec::UNKNOWN) && n <= MAX_UNEXPECTED {
            frame.elr += 4;
            return;
        }
    }
    let what = VECTORS.get(index as usize).copied().unwrap_or("unknown vector");
    report::fatal(format_args!(
        "unexpected exception on CPU {}: {what}, ESR {esr:#x} (EC {:#x}), FAR {far:#x}, ELR {:#x}, SPSR {:#x}, \
         {} unexpected so far",
        cpu::index(),
        esr >> 26,
        frame.elr,
        frame.spsr,
        s.unexpected.load(Ordering::Relaxed),
    ))
}
