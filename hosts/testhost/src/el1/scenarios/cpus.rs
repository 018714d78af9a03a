//! `secondaries`: every CPU of the device tree comes up through PSCI
//! CPU_ON (relayed by Warden, which counts it in CPUS_STARTED), and PSCI's
//! own refusals come back unchanged through the relay: ALREADY_ON for a
//! running CPU, INVALID_PARAMETERS for an MPIDR no CPU has.

use warden_abi::counter;
use warden_testhost::machine::MAX_CPUS;

use super::super::cpu;
use super::super::report::{Checks, Outcome};
use super::super::smccc::{self, psci};
use super::super::smp;
use super::Ctx;

/// How long the secondaries get to reach Rust code.
const BRING_UP_MS: u64 = 3000;
/// An affinity no CPU of a 4-CPU `virt` machine has.
const NO_SUCH_MPIDR: u64 = 0x00ff_ffff;

/// The scenario.
pub fn secondaries(ctx: &Ctx) -> Outcome {
    let mut c = Checks::new();
    let before = smccc::counter(counter::CPUS_STARTED);
    let in_tree = ctx.machine.mpidrs().len();
    if ctx.machine.platform.cpus > MAX_CPUS {
        c.note(format_args!(
            "{} CPUs in the tree, the test host drives {MAX_CPUS}",
            ctx.machine.platform.cpus
        ));
    }
    c.check(
        ctx.machine.cpu_index(cpu::mpidr()).is_some(),
        format_args!("the boot CPU's MPIDR {:#x} is not in the device tree", cpu::mpidr()),
    );
    let start = cpu::ticks();
    let mut started = 0u64;
    let mut index = 1;
    while let Some(mpidr) = smp::mpidr_of(&ctx.machine, index) {
        if index >= MAX_CPUS {
            break;
        }
        match smp::cpu_on(mpidr, index as u64) {
            Ok(psci::SUCCESS) => started += 1,
            Ok(r) => {
                c.check(false, format_args!("CPU_ON({mpidr:#x}) = {r}"));
            }
            Err(f) => {
                c.check(false, format_args!("CPU_ON({mpidr:#x}) faulted (EC {:#x})", f.ec()));
            }
        }
        index += 1;
    }
    let asked = index - 1;
    let deadline = cpu::deadline_ms(BRING_UP_MS);
    while !(1..=asked).all(smp::online) && !cpu::past(deadline) {
        core::hint::spin_loop();
    }
    let up = (1..=asked).filter(|&i| smp::online(i)).count();
    c.check(
        up == asked,
        format_args!("{up} of {asked} secondaries up after {BRING_UP_MS} ms"),
    );
    c.note(format_args!(
        "{} of {} CPUs up in {} ms",
        up + 1,
        in_tree.min(MAX_CPUS),
        cpu::ms_since(start)
    ));

    // PSCI's refusals through the relay.
    let on_self = smp::cpu_on(cpu::mpidr(), 0);
    c.check(
        on_self == Ok(psci::ALREADY_ON),
        format_args!("CPU_ON(self) = {on_self:?}, want ALREADY_ON (-4)"),
    );
    for i in (1..=asked).filter(|&i| smp::online(i)) {
        let mpidr = smp::mpidr_of(&ctx.machine, i).unwrap_or(0);
        let r = smp::cpu_on(mpidr, i as u64);
        c.check(
            r == Ok(psci::ALREADY_ON),
            format_args!("CPU_ON({mpidr:#x}) again = {r:?}, want ALREADY_ON (-4)"),
        );
    }
    let bogus = smp::cpu_on(NO_SUCH_MPIDR, 1);
    c.check(
        bogus == Ok(psci::INVALID_PARAMETERS),
        format_args!("CPU_ON({NO_SUCH_MPIDR:#x}) = {bogus:?}, want INVALID_PARAMETERS (-2)"),
    );
    c.note(format_args!(
        "CPU_ON of a running CPU -> ALREADY_ON, of {NO_SUCH_MPIDR:#x} -> INVALID_PARAMETERS"
    ));

    let after = smccc::counter(counter::CPUS_STARTED);
    match (before, after) {
        (Some(b), Some(a)) => {
            c.check(
                a.wrapping_sub(b) == started,
                format_args!("CPUS_STARTED went {b} -> {a}, want +{started}"),
            );
            c.note(format_args!("CPUS_STARTED +{}", a.wrapping_sub(b)));
        }
        _ => c.skip(format_args!("CPUS_STARTED not readable (no Warden)")),
    }
    c.outcome()
}
