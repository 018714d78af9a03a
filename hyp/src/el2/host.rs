//! The de-privileged host: the EL2 configuration that confines it (stage 2
//! on, SMC trapped), entering it at EL1, and every synchronous exception it
//! takes to EL2: hypercalls, SMCs (the PSCI relay), stage-2 aborts (lazy
//! identity mapping or an injected abort) and anything else (an injected
//! undefined instruction).
//!
//! Nothing the host does reaches a panic: every register it controls is
//! an argument checked by warden-memprotect or the relay, and faults on
//! what it does not own are reflected back to it.

use core::arch::asm;

use warden_abi::counter;
use warden_hyp::psci_relay::{self, ret as psci_ret, SmcCall};
use warden_memprotect::AbortOutcome;
use warden_pgtable::Geometry;

use super::console::println;
use super::world::{world, World};
use super::{psci, sysreg, STACK_SHIFT};

/// The host's registers on this CPU's EL2 stack while Warden handles a
/// trap (layout shared with the vector code in entry.rs).
#[repr(C)]
pub struct HostFrame {
    /// x0..=x30.
    pub x: [u64; 31],
    /// Where the host resumes (ELR_EL2).
    pub elr: u64,
    /// The host's PSTATE (SPSR_EL2).
    pub spsr: u64,
    _pad: u64,
    /// q0..=q31.
    pub q: [u128; 32],
    /// FPSR.
    pub fpsr: u64,
    /// FPCR.
    pub fpcr: u64,
}

// HCR_EL2 bits (Arm ARM D19.2.48).
const HCR_VM: u64 = 1 << 0;
const HCR_SWIO: u64 = 1 << 1;
const HCR_TSC: u64 = 1 << 19;
const HCR_RW: u64 = 1 << 31;
const HCR_APK: u64 = 1 << 40;
const HCR_API: u64 = 1 << 41;
const HCR_FWB: u64 = 1 << 46;

/// VTCR_EL2: RES1 bit 31, inner-shareable write-back walks, 4 KiB granule.
const VTCR_RES1: u64 = 1 << 31;
const VTCR_WALK_ATTRS: u64 = (0b01 << 8) | (0b01 << 10) | (0b11 << 12);

/// SCTLR_EL1 at the host's entry: its RES1 bits, MMU and caches off,
/// little-endian (the arm64 boot protocol's state).
const SCTLR_EL1_BOOT: u64 = 0x30d0_0800;

/// The host's PSTATE after an injected exception: EL1h, D, A, I, F masked.
const SPSR_EL1H_MASKED: u64 = 0x3c5;
const SPSR_PAN: u64 = 1 << 22;

// Exception classes (ESR_ELx.EC).
const EC_UNKNOWN: u64 = 0x00;
const EC_HVC64: u64 = 0x16;
const EC_SMC64: u64 = 0x17;
const EC_IABT_LOW: u64 = 0x20;
const EC_IABT_CUR: u64 = 0x21;
const EC_DABT_LOW: u64 = 0x24;
const EC_DABT_CUR: u64 = 0x25;
const ESR_IL: u64 = 1 << 25;
/// Fault status: synchronous external abort, not on a table walk.
const FSC_SEA: u64 = 0x10;

/// The per-CPU EL2 register values that confine the host, computed once.
#[derive(Clone, Copy, Debug)]
pub struct HostCtl {
    /// HCR_EL2.
    pub hcr: u64,
    /// VTCR_EL2.
    pub vtcr: u64,
    /// VTTBR_EL2 (VMID 0).
    pub vttbr: u64,
    /// The CPU has GICv3 system registers.
    pub gicv3: bool,
}

impl HostCtl {
    /// The values for a host stage-2 of geometry `geo` at `root`, PA size
    /// encoding `ps`, with FWB if `fwb`.
    pub fn new(geo: &Geometry, root: u64, ps: u64, fwb: bool) -> Self {
        let isar1 = sysreg::id_aa64isar1();
        let pauth = (isar1 >> 4) & 0xff != 0 || (isar1 >> 24) & 0xff != 0 || (sysreg::id_aa64isar2() >> 12) & 0xf != 0;
        let mut hcr = HCR_VM | HCR_SWIO | HCR_TSC | HCR_RW;
        if fwb {
            hcr |= HCR_FWB;
        }
        if pauth {
            // The host's pointer-authentication instructions run without
            // trapping (Warden keeps no keys of its own).
            hcr |= HCR_API | HCR_APK;
        }
        HostCtl {
            hcr,
            vtcr: VTCR_RES1 | (ps << 16) | VTCR_WALK_ATTRS | (geo.vtcr_sl0() << 6) | geo.t0sz(),
            vttbr: root,
            gicv3: (sysreg::id_aa64pfr0() >> 24) & 0xf != 0,
        }
    }
}

/// Whether the CPU implements FEAT_S2FWB (ID_AA64MMFR2_EL1.FWB).
pub fn cpu_has_fwb() -> bool {
    (sysreg::id_aa64mmfr2() >> 40) & 0xf != 0
}

/// Load the host stage-2 (VTCR, VTTBR) without turning it on yet, so that
/// stage-2 TLB maintenance during boot names VMID 0.
///
/// # Safety
/// HCR_EL2.VM must be clear (stage 2 not yet in use on this CPU).
pub unsafe fn load_stage2(ctl: &HostCtl) {
    // SAFETY: with HCR_EL2.VM clear these registers are not used for any
    // translation; the caller promised so.
    unsafe {
        asm!(
            "msr vtcr_el2, {vtcr}",
            "msr vttbr_el2, {vttbr}",
            "isb",
            vtcr = in(reg) ctl.vtcr,
            vttbr = in(reg) ctl.vttbr,
            options(nostack, preserves_flags)
        )
    };
}

/// Configure this CPU's EL2 to run the host: its identification registers
/// as the hardware's, the physical timer and counter usable at EL1, every
/// PMU counter the host's, GICv3 system registers usable at EL1, SCTLR_EL1
/// at its boot value, the host stage-2 loaded and on, SMC trapped; stale
/// EL1&0 translations dropped.
///
/// # Safety
/// Only before entering the host on this CPU: the host stage-2 at
/// `ctl.vttbr` must be complete (Warden's memory annotated), since from the
/// next return to EL1 it is all that confines the host.
pub unsafe fn configure_cpu(ctl: &HostCtl) {
    let hpmn = (sysreg::pmcr_el0() >> 11) & 0x1f;
    // SAFETY: these registers configure EL1/EL0 (not running now) and the
    // traps to EL2; none affects Warden's own translation or stack.
    unsafe {
        asm!(
            "msr vpidr_el2, {midr}",
            "msr vmpidr_el2, {mpidr}",
            "msr vtcr_el2, {vtcr}",
            "msr vttbr_el2, {vttbr}",
            "msr cnthctl_el2, {cnthctl}",
            "msr cntvoff_el2, xzr",
            "msr mdcr_el2, {mdcr}",
            "msr sctlr_el1, {sctlr}",
            "isb",
            "msr hcr_el2, {hcr}",
            "isb",
            "tlbi vmalls12e1",
            "dsb nsh",
            "isb",
            midr = in(reg) sysreg::midr_el1(),
            mpidr = in(reg) sysreg::mpidr_el1(),
            vtcr = in(reg) ctl.vtcr,
            vttbr = in(reg) ctl.vttbr,
            cnthctl = in(reg) 0b11u64,
            mdcr = in(reg) hpmn,
            sctlr = in(reg) SCTLR_EL1_BOOT,
            hcr = in(reg) ctl.hcr,
            options(nostack, preserves_flags)
        )
    };
    if ctl.gicv3 {
        // ICC_SRE_EL2: system-register interface on (SRE), EL1 may use its
        // own ICC_SRE_EL1 (Enable), FIQ/IRQ bypass off (DFB, DIB).
        // SAFETY: configures the host's access to its own GIC CPU
        // interface; Warden takes no interrupts.
        unsafe { asm!("msr S3_4_C12_C9_5, {}", "isb", in(reg) 0xfu64, options(nostack, preserves_flags)) };
    }
}

extern "C" {
    /// entry.rs: reset SP to `stack_top`, zero the registers and ERET to
    /// `entry` at EL1h with `x0`.
    fn warden_enter_host(entry: u64, x0: u64, stack_top: u64) -> !;
    static __stack_top: u8;
}

/// This CPU's index (TPIDR_EL2, set at entry).
pub fn cpu_index() -> usize {
    sysreg::tpidr_el2() as usize
}

/// The top of CPU `index`'s EL2 stack.
pub fn stack_top(index: usize) -> u64 {
    (&raw const __stack_top as u64) - ((index as u64) << STACK_SHIFT)
}

/// Enter the host at `entry` (EL1h, MMU off) with `x0`; EL2 on this CPU
/// must have been configured with [`configure_cpu`].
pub fn enter_host(entry: u64, x0: u64) -> ! {
    let top = stack_top(cpu_index());
    // SAFETY: the EL2 stack is reset to its top: nothing on it is live,
    // since this never returns; the host's state is confined by the stage 2
    // the caller configured.
    unsafe { warden_enter_host(entry, x0, top) }
}

/// A synchronous exception from the host (entry.rs's vector 8), with the
/// host's registers in `frame`; returning resumes the host with them.
#[no_mangle]
extern "C" fn warden_host_trap(frame: &mut HostFrame) {
    let Some(w) = world() else {
        // The host runs only after the world exists; an exception from a
        // lower EL before that is Warden's bug.
        super::fatal(format_args!("exception from a lower EL before the host was set up"));
    };
    let esr = sysreg::esr_el2();
    match (esr >> 26) & 0x3f {
        EC_HVC64 => hypercall(w, frame, esr),
        EC_SMC64 => smc(w, frame),
        EC_IABT_LOW | EC_DABT_LOW => stage2_abort(w, frame, esr),
        _ => inject(frame, EC_UNKNOWN, EC_UNKNOWN, 0, None),
    }
}

fn hypercall(w: &World, f: &mut HostFrame, esr: u64) {
    // SMCCC: HVC #0 only. Copy the arguments once; from here on the frame
    // is only written.
    let regs = [f.x[0], f.x[1], f.x[2], f.x[3], f.x[4], f.x[5], f.x[6]];
    let out = if esr & 0xffff != 0 {
        w.calls.counters.add(counter::HYPERCALLS, 1);
        [warden_abi::SMCCC_NOT_SUPPORTED as u64, 0, 0, 0]
    } else {
        w.calls.handle(&w.mp, &regs, || w.drain_smmu_events())
    };
    f.x[..4].copy_from_slice(&out);
}

fn smc(w: &World, f: &mut HostFrame) {
    // A trapped SMC returns to the SMC itself; the host continues after it.
    f.elr = f.elr.wrapping_add(4);
    let (x0, x1, x2, x3) = (f.x[0], f.x[1], f.x[2], f.x[3]);
    let set = |f: &mut HostFrame, v: i64| {
        f.x[0] = v as u64;
    };
    match psci_relay::decode(x0, x1, x2, x3) {
        SmcCall::Forward => {
            let r = psci::smc([x0, x1, x2, x3]);
            f.x[..4].copy_from_slice(&r);
        }
        SmcCall::Features(fid) => set(f, psci_relay::features(fid)),
        SmcCall::CpuOn { target, entry, context } => {
            let r = match w.cpus.begin_on(target, entry, context) {
                Err(e) => e,
                Ok(i) => {
                    let mpidr = w.cpus.mpidr(i).unwrap_or(u64::MAX);
                    let r = psci::cpu_on(mpidr, secondary_entry(), i as u64);
                    if r != psci_ret::SUCCESS {
                        w.cpus.on_failed(i);
                    }
                    r
                }
            };
            set(f, r);
        }
        SmcCall::CpuOff => {
            let me = cpu_index();
            w.cpus.off(me);
            let r = psci::cpu_off();
            // Only a refusal returns: the CPU is still on.
            w.cpus.mark_on(me);
            set(f, r);
        }
        SmcCall::SystemOff => {
            println!("Warden: the host powered the machine off (PSCI SYSTEM_OFF)");
            psci::system_off()
        }
        SmcCall::SystemReset => {
            println!("Warden: the host reset the machine (PSCI SYSTEM_RESET)");
            psci::system_reset()
        }
        SmcCall::Refused => {
            w.calls.counters.add(counter::SMCS_REFUSED, 1);
            set(f, psci_ret::NOT_SUPPORTED);
        }
    }
}

/// The physical address where a CPU started for the host enters Warden.
fn secondary_entry() -> u64 {
    extern "C" {
        fn warden_secondary_entry();
    }
    // Warden's stage 1 is an identity map: the symbol's address is its PA.
    warden_secondary_entry as *const () as u64
}

fn stage2_abort(w: &World, f: &mut HostFrame, esr: u64) {
    let far = sysreg::far_el2();
    let fsc = esr & 0x3f;
    // Translation faults (levels 0-3): the host touched something its
    // stage 2 does not map yet. HPFAR_EL2.FIPA (bits 43:4) is the page.
    if fsc & 0x3c == 0x04 {
        let ipa = ((sysreg::hpfar_el2() >> 4) & ((1 << 40) - 1)) << 12 | (far & 0xfff);
        if let Ok(AbortOutcome::Handled) = w.mp.host_abort(ipa) {
            w.calls.counters.add(counter::HOST_FAULTS_MAPPED, 1);
            return;
        }
    }
    // Not the host's (or a permission fault: executing MMIO): an external
    // abort at the faulting address, as if the memory were not there.
    w.calls.counters.add(counter::ABORTS_INJECTED, 1);
    let instruction = (esr >> 26) & 0x3f == EC_IABT_LOW;
    let (cur, low) = match instruction {
        true => (EC_IABT_CUR, EC_IABT_LOW),
        false => (EC_DABT_CUR, EC_DABT_LOW),
    };
    inject(f, cur, low, FSC_SEA, Some(far));
}

/// Make the host take a synchronous exception to its EL1 vector, as the
/// architecture would: EC `ec_cur` from EL1, `ec_low` from EL0, with
/// `iss` and, for aborts, `far`.
fn inject(f: &mut HostFrame, ec_cur: u64, ec_low: u64, iss: u64, far: Option<u64>) {
    let mode = f.spsr & 0x1f;
    let (ec, offset) = match mode {
        // EL1 with SP_EL1 (EL1h), EL1 with SP_EL0 (EL1t).
        0b00101 => (ec_cur, 0x200),
        0b00100 => (ec_cur, 0x000),
        // EL0, AArch64.
        0b00000 => (ec_low, 0x400),
        // AArch32 EL0 (the host kernel cannot be AArch32: HCR_EL2.RW).
        _ => (ec_low, 0x600),
    };
    let esr = ec << 26 | ESR_IL | iss;
    let mut spsr = SPSR_EL1H_MASKED;
    // PAN is set on exception entry unless SCTLR_EL1.SPAN says keep it.
    if sysreg::sctlr_el1() & (1 << 23) == 0 {
        spsr |= SPSR_PAN;
    } else {
        spsr |= f.spsr & SPSR_PAN;
    }
    // SAFETY: we are handling the host's trap and redirect it to its own
    // vector below, exactly as an exception taken to EL1 would.
    unsafe { sysreg::set_el1_exception(esr, far.unwrap_or(0), f.elr, f.spsr) };
    f.elr = sysreg::vbar_el1().wrapping_add(offset);
    f.spsr = spsr;
}

/// A secondary CPU arriving in Warden (entry.rs, MMU on, own stack).
#[no_mangle]
extern "C" fn warden_secondary_main(index: u64) -> ! {
    let index = index as usize;
    let Some(w) = world() else {
        // Started before the world exists: nobody asked for it.
        psci::park()
    };
    let Some((entry, context)) = w.cpus.started(index) else {
        // The firmware started a CPU the host did not ask for: it must not
        // run the host's code.
        let _ = psci::cpu_off();
        psci::park()
    };
    // SAFETY: this CPU enters the host right after, with the shared, complete
    // host stage-2.
    unsafe { configure_cpu(&w.ctl) };
    w.calls.counters.add(counter::CPUS_STARTED, 1);
    println!(
        "Warden: CPU {index} (MPIDR {:#x}) up, entering the host at {entry:#x}",
        w.cpus.mpidr(index).unwrap_or(0)
    );
    enter_host(entry, context)
}
