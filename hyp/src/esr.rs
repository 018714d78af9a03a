//! Decoding exception syndromes (ESR_ELx) for fault reports.

use core::fmt;

/// The exception class: ESR bits 31:26.
pub fn exception_class(esr: u64) -> u8 {
    ((esr >> 26) & 0x3f) as u8
}

/// A short name for an exception class.
pub fn class_name(ec: u8) -> &'static str {
    match ec {
        0x00 => "unknown reason",
        0x01 => "WFI/WFE",
        0x07 => "FP/SIMD access",
        0x0e => "illegal execution state",
        0x15 => "SVC (AArch64)",
        0x16 => "HVC (AArch64)",
        0x17 => "SMC (AArch64)",
        0x18 => "system register access",
        0x20 => "instruction abort, lower EL",
        0x21 => "instruction abort, same EL",
        0x22 => "PC alignment fault",
        0x24 => "data abort, lower EL",
        0x25 => "data abort, same EL",
        0x26 => "SP alignment fault",
        0x2f => "SError",
        0x3c => "BRK",
        _ => "other",
    }
}

/// What the fault status code (ISS bits 5:0 of an abort) says.
pub fn fault_status(fsc: u8) -> (&'static str, Option<u8>) {
    let level = Some(fsc & 3);
    match fsc & 0x3c {
        0x04 => ("translation fault", level),
        0x08 => ("access flag fault", level),
        0x0c => ("permission fault", level),
        0x00 if fsc < 4 => ("address size fault", level),
        _ if fsc == 0x10 => ("synchronous external abort", None),
        _ if fsc == 0x21 => ("alignment fault", None),
        _ => ("other fault", None),
    }
}

/// A one-line description of an ESR value.
#[derive(Clone, Copy, Debug)]
pub struct Describe(pub u64);

impl fmt::Display for Describe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let esr = self.0;
        let ec = exception_class(esr);
        write!(f, "EC {ec:#04x} {}", class_name(ec))?;
        if matches!(ec, 0x20 | 0x21 | 0x24 | 0x25) {
            let (what, level) = fault_status((esr & 0x3f) as u8);
            write!(f, ", {what}")?;
            if let Some(l) = level {
                write!(f, " at level {l}")?;
            }
            if matches!(ec, 0x24 | 0x25) {
                let wnr = esr & (1 << 6) != 0;
                write!(f, " on {}", if wnr { "write" } else { "read" })?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_aborts() {
        // Data abort, same EL, permission fault level 3, write.
        let esr = (0x25 << 26) | (1 << 25) | (1 << 6) | 0x0f;
        assert_eq!(
            std::format!("{}", Describe(esr)),
            "EC 0x25 data abort, same EL, permission fault at level 3 on write"
        );
        let esr = (0x21 << 26) | 0x07;
        assert_eq!(
            std::format!("{}", Describe(esr)),
            "EC 0x21 instruction abort, same EL, translation fault at level 3"
        );
        assert_eq!(std::format!("{}", Describe(0x3c << 26)), "EC 0x3c BRK");
        assert_eq!(std::format!("{}", Describe(u64::MAX)), "EC 0x3f other");
    }
}
