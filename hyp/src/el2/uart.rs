//! A transmit-only PL011 driver (Arm PrimeCell UART, DDI 0183).
//!
//! It assumes the firmware left the UART enabled and configured, as QEMU
//! does; programming baud rate and line control is left for real boards.

use super::mmio::Mmio;

/// Data register.
const DR: usize = 0x00;
/// Flag register.
const FR: usize = 0x18;
/// FR: transmit FIFO full.
const FR_TXFF: u32 = 1 << 5;
/// FR: UART busy transmitting.
const FR_BUSY: u32 = 1 << 3;
/// Polls of the flag register before giving up on a byte or a flush: the
/// host shares the UART and may stop it, and Warden must not hang (least
/// of all while holding a lock) because of that.
const POLL_LIMIT: u32 = 200_000;
/// Bytes of register space the driver uses.
pub const REGS_SIZE: usize = 0x1000;

/// A PL011 UART.
#[derive(Clone, Copy, Debug)]
pub struct Pl011 {
    regs: Mmio,
}

impl Pl011 {
    /// The UART whose registers are `regs`.
    pub fn new(regs: Mmio) -> Self {
        Pl011 { regs }
    }

    /// Send one byte, waiting (boundedly) for room in the FIFO; the byte is
    /// dropped if none comes.
    pub fn put(&self, byte: u8) {
        if self.wait_while(FR_TXFF) {
            self.regs.write32(DR, byte as u32);
        }
    }

    /// Wait (boundedly) until everything written has left the UART.
    pub fn flush(&self) {
        self.wait_while(FR_BUSY);
    }

    /// Poll until `flag` clears in FR; false if it did not in time.
    fn wait_while(&self, flag: u32) -> bool {
        for _ in 0..POLL_LIMIT {
            if self.regs.read32(FR) & flag == 0 {
                return true;
            }
            core::hint::spin_loop();
        }
        false
    }
}
