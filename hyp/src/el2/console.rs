//! The console: `println!` to the PL011.
//!
//! Until the device tree is read, the console uses QEMU virt's PL011 at
//! 0x0900_0000 (an "earlycon"), so that even a bad device tree is reported.
//! Only the boot CPU runs for now, so writes are not serialised.

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicUsize, Ordering};

use super::mmio::Mmio;
use super::uart::{self, Pl011};

/// QEMU virt's PL011, used before the device tree names the console.
const EARLY_UART: usize = 0x0900_0000;

/// Base of the console PL011; only `set_uart` changes it.
static UART_BASE: AtomicUsize = AtomicUsize::new(EARLY_UART);

/// Switch the console to the PL011 at `base`.
///
/// # Safety
/// `base` must be the base of a PL011's register block that stays
/// accessible (mapped as device memory once the MMU is on).
pub unsafe fn set_uart(base: usize) {
    UART_BASE.store(base, Ordering::Relaxed);
}

fn uart() -> Pl011 {
    let base = UART_BASE.load(Ordering::Relaxed);
    // SAFETY: UART_BASE holds QEMU virt's PL011 or a base given to
    // `set_uart`, whose caller promised it is an accessible PL011.
    Pl011::new(unsafe { Mmio::new(base, uart::REGS_SIZE) })
}

/// A writer to the console that turns `\n` into `\r\n`.
pub struct Console;

impl Write for Console {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let u = uart();
        for b in s.bytes() {
            if b == b'\n' {
                u.put(b'\r');
            }
            u.put(b);
        }
        Ok(())
    }
}

/// Print formatted text (used by the macros).
pub fn print(args: fmt::Arguments) {
    // The console never fails.
    let _ = Console.write_fmt(args);
}

/// Wait until the console has sent everything.
pub fn flush() {
    uart().flush();
}

/// Print a line to the console.
macro_rules! println {
    () => { $crate::el2::console::print(format_args!("\n")) };
    ($($arg:tt)*) => {{
        $crate::el2::console::print(format_args!($($arg)*));
        $crate::el2::console::print(format_args!("\n"));
    }};
}

pub(crate) use println;
