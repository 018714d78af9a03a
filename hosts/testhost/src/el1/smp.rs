//! Secondary CPUs: started through PSCI CPU_ON (which Warden relays so the
//! CPU comes up in Warden first and is then sent to our entry at EL1), then
//! waiting for work from the boot CPU.
//!
//! CPU indices: 0 is the boot CPU; the other CPUs of the device tree get
//! 1, 2, ... in tree order (up to `MAX_CPUS`), passed as CPU_ON's context
//! and kept in TPIDR_EL1. Work is posted as a kind plus a sequence number;
//! each secondary runs it once and records the sequence number it
//! finished, so the boot CPU can wait for everyone with a deadline.

use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use warden_testhost::machine::{Machine, MAX_CPUS};

use super::console::println;
use super::cpu;
use super::exception::Fault;
use super::scenarios;
use super::smccc::{self, psci};

extern "C" {
    /// The secondary entry point (entry.rs).
    fn testhost_secondary_entry();
}

/// Which CPUs have reached Rust code.
static ONLINE: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];
/// The work posted: its kind and sequence number.
static WORK_KIND: AtomicU32 = AtomicU32::new(0);
static WORK_SEQ: AtomicU32 = AtomicU32::new(0);
/// The last sequence number each CPU finished.
static DONE_SEQ: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];

/// Work a secondary can be given.
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Work {
    /// Its part of `garbage-hypercalls`.
    Garbage = 1,
}

/// The MPIDR of CPU `index` (0 = boot) under the numbering above.
pub fn mpidr_of(machine: &Machine, index: usize) -> Option<u64> {
    let boot = cpu::mpidr();
    if index == 0 {
        return Some(boot);
    }
    machine.mpidrs().iter().copied().filter(|&m| m != boot).nth(index - 1)
}

/// PSCI CPU_ON of `mpidr` at the secondary entry with context `index`.
pub fn cpu_on(mpidr: u64, index: u64) -> Result<i64, Fault> {
    let entry = testhost_secondary_entry as *const () as u64;
    smccc::psci_call(psci::CPU_ON, mpidr, entry, index)
}

/// Whether CPU `index` is running the test host.
pub fn online(index: usize) -> bool {
    ONLINE.get(index).is_some_and(|o| o.load(Ordering::Acquire))
}

/// Post `work` to every online secondary, run it here too, and wait up to
/// `timeout_ms` for the others; which CPUs finished.
pub fn run_everywhere(work: Work, timeout_ms: u64) -> [bool; MAX_CPUS] {
    WORK_KIND.store(work as u32, Ordering::Relaxed);
    let seq = WORK_SEQ.load(Ordering::Relaxed) + 1;
    WORK_SEQ.store(seq, Ordering::Release);
    cpu::sev();
    run(work, 0);
    let deadline = cpu::deadline_ms(timeout_ms);
    let mut finished = [false; MAX_CPUS];
    finished[0] = true;
    loop {
        let mut waiting = false;
        for (i, f) in finished.iter_mut().enumerate().skip(1) {
            *f = !online(i) || DONE_SEQ[i].load(Ordering::Acquire) == seq;
            waiting |= !*f;
        }
        if !waiting || cpu::past(deadline) {
            // A CPU that is not online did no work: only online ones count.
            for (i, f) in finished.iter_mut().enumerate().skip(1) {
                *f = online(i) && DONE_SEQ[i].load(Ordering::Acquire) == seq;
            }
            return finished;
        }
        core::hint::spin_loop();
    }
}

fn run(work: Work, index: usize) {
    match work {
        Work::Garbage => scenarios::garbage::run_on_this_cpu(index),
    }
}

/// A secondary CPU's Rust entry (entry.rs has turned its MMU on).
pub extern "C" fn secondary_main(index: u64) -> ! {
    let index = index as usize;
    ONLINE[index].store(true, Ordering::Release);
    cpu::unmask_serror();
    cpu::sev();
    println!("testhost: CPU {index} up (MPIDR {:#x})", cpu::mpidr());
    let mut seen = 0;
    loop {
        let seq = WORK_SEQ.load(Ordering::Acquire);
        if seq == seen {
            cpu::wfe();
            continue;
        }
        seen = seq;
        if WORK_KIND.load(Ordering::Relaxed) == Work::Garbage as u32 {
            run(Work::Garbage, index);
        }
        DONE_SEQ[index].store(seq, Ordering::Release);
        cpu::sev();
    }
}
