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

    /// Send one byte, waiting for room in the FIFO.
    pub fn put(&self, byte: u8) {
        while self.regs.read32(FR) & FR_TXFF != 0 {
            core::hint::spin_loop();
        }
        self.regs.write32(DR, byte as u32);
    }

    /// Wait until everything written has left the UART.
    pub fn flush(&self) {
        while self.regs.read32(FR) & FR_BUSY != 0 {
            core::hint::spin_loop();
        }
    }
}
