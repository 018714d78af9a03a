//! [`TlbOps`] at EL2: real barriers and TLBI, for Warden's own stage-1
//! table and for the host stage-2 (VMID 0).

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
            // Stage 2. Warden runs the host with VMID 0 loaded in VTTBR_EL2
            // at all times, and the by-IPA and by-VMID forms act on the
            // loaded VMID; so VMID 0 gets the precise forms. Other VMIDs
            // (guests, later) get every VMID's EL1&0 entries dropped: a
            // superset, correct but heavy.
            Tlbi::Stage2Ipa {
                vmid: 0,
                ipa,
                level,
                last_level,
                scope,
            } => {
                let arg = self.va_operand(ipa, level);
                // SAFETY: see above. The DSB between the two makes the
                // stage-2 invalidation complete before the stage-1 one, so
                // no combined entry is refilled from a stale stage-2 one.
                unsafe {
                    match (last_level, scope) {
                        (true, Scope::Broadcast) => asm!("tlbi ipas2le1is, {}", in(reg) arg, options(nostack)),
                        (false, Scope::Broadcast) => asm!("tlbi ipas2e1is, {}", in(reg) arg, options(nostack)),
                        (true, Scope::Local) => asm!("tlbi ipas2le1, {}", in(reg) arg, options(nostack)),
                        (false, Scope::Local) => asm!("tlbi ipas2e1, {}", in(reg) arg, options(nostack)),
                    }
                    match scope {
                        Scope::Broadcast => asm!("dsb ish", "tlbi vmalle1is", options(nostack)),
                        Scope::Local => asm!("dsb nsh", "tlbi vmalle1", options(nostack)),
                    }
                }
            }
            Tlbi::Stage2Vmid { vmid: 0, scope } => match scope {
                // SAFETY: see above.
                Scope::Broadcast => unsafe { asm!("tlbi vmalls12e1is", options(nostack)) },
                // SAFETY: see above.
                Scope::Local => unsafe { asm!("tlbi vmalls12e1", options(nostack)) },
            },
            Tlbi::Stage2Ipa { scope, .. } | Tlbi::Stage2Vmid { scope, .. } => match scope {
                // SAFETY: see above.
                Scope::Broadcast => unsafe { asm!("tlbi alle1is", options(nostack)) },
                // SAFETY: see above.
                Scope::Local => unsafe { asm!("tlbi alle1", options(nostack)) },
            },
        }
    }
}
