//! [`TlbOps`] for Warden's own EL2 stage-1 table: real barriers and TLBI.

use core::arch::asm;

use warden_pgtable::{Barrier, Scope, TlbOps, Tlbi};

use super::sysreg;

/// Barriers and TLB maintenance at EL2.
#[derive(Clone, Copy, Debug)]
pub struct El2Tlb {
    /// FEAT_TTL: TLBI by VA may carry a level hint.
    ttl: bool,
}

impl El2Tlb {
    /// Probe the CPU for TLBI level hints.
    pub fn new() -> Self {
        El2Tlb {
            ttl: (sysreg::id_aa64mmfr2() >> 48) & 0xf != 0,
        }
    }

    /// The operand of `TLBI VA*E2*`: VA[55:12] in bits 43:0, and with
    /// FEAT_TTL the level hint (4 KiB granule = 0b01, level 1..=3) in 47:44.
    fn va_operand(&self, va: u64, level: u8) -> u64 {
        let mut op = (va >> 12) & ((1 << 44) - 1);
        if self.ttl && (1..=3).contains(&level) {
            op |= ((0b01 << 2) | level as u64) << 44;
        }
        op
    }
}

impl TlbOps for El2Tlb {
    fn barrier(&mut self, barrier: Barrier) {
        match barrier {
            Barrier::DsbIshSt => sysreg::dsb_ishst(),
            Barrier::DsbIsh => sysreg::dsb_ish(),
            Barrier::DsbNsh => sysreg::dsb_nsh(),
            Barrier::Isb => sysreg::isb(),
        }
    }

    fn tlbi(&mut self, op: Tlbi) {
        // SAFETY (every block below): TLB invalidation only drops cached
        // translations; the next access walks the tables again. It cannot
        // make memory reachable that the tables do not map.
        match op {
            Tlbi::El2Va {
                va,
                level,
                last_level,
                scope,
            } => {
                let arg = self.va_operand(va, level);
                match (last_level, scope) {
                    // SAFETY: see above.
                    (true, Scope::Broadcast) => unsafe { asm!("tlbi vale2is, {}", in(reg) arg, options(nostack)) },
                    // SAFETY: see above.
                    (true, Scope::Local) => unsafe { asm!("tlbi vale2, {}", in(reg) arg, options(nostack)) },
                    // SAFETY: see above.
                    (false, Scope::Broadcast) => unsafe { asm!("tlbi vae2is, {}", in(reg) arg, options(nostack)) },
                    // SAFETY: see above.
                    (false, Scope::Local) => unsafe { asm!("tlbi vae2, {}", in(reg) arg, options(nostack)) },
                }
            }
            Tlbi::El2All {
                scope: Scope::Broadcast,
            } => {
                // SAFETY: see above.
                unsafe { asm!("tlbi alle2is", options(nostack)) }
            }
            Tlbi::El2All { scope: Scope::Local } => {
                // SAFETY: see above.
                unsafe { asm!("tlbi alle2", options(nostack)) }
            }
            // Warden has no stage-2 table yet. Invalidating every VMID's
            // EL1&0 entries covers any stage-2 request (a superset, correct
            // but heavy); a per-VMID version comes with the host stage 2.
            Tlbi::Stage2Ipa {
                scope: Scope::Broadcast,
                ..
            }
            | Tlbi::Stage2Vmid {
                scope: Scope::Broadcast,
                ..
            } => {
                // SAFETY: see above.
                unsafe { asm!("tlbi alle1is", options(nostack)) }
            }
            Tlbi::Stage2Ipa {
                scope: Scope::Local, ..
            }
            | Tlbi::Stage2Vmid {
                scope: Scope::Local, ..
            } => {
                // SAFETY: see above.
                unsafe { asm!("tlbi alle1", options(nostack)) }
            }
        }
    }
}
