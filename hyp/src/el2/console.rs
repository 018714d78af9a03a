//! The console: `println!` to the PL011.
//!
//! Until the device tree is read, the console uses QEMU virt's PL011 at
//! 0x0900_0000 (an "earlycon"), so that even a bad device tree is reported.
//! Lines from different CPUs are serialised by a lock taken with a bounded
//! wait (a CPU that faulted while printing must not silence the others'
//! reports). The host writes the same UART; its lines and Warden's may
//! still meet.

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

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

/// Held while a CPU prints a line.
static LINE_LOCK: AtomicBool = AtomicBool::new(false);
/// Spins before printing without the lock.
const LOCK_SPINS: u32 = 1_000_000;

/// Print formatted text (used by the macros).
pub fn print(args: fmt::Arguments) {
    // The console never fails.
    let _ = Console.write_fmt(args);
}

/// Print formatted text and a newline as one line: other CPUs' Warden
/// lines do not split it.
pub fn print_line(args: fmt::Arguments) {
    let mut locked = false;
    for _ in 0..LOCK_SPINS {
        if LINE_LOCK
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            locked = true;
            break;
        }
        core::hint::spin_loop();
    }
    let _ = Console.write_fmt(args);
    let _ = Console.write_str("\n");
    if locked {
        LINE_LOCK.store(false, Ordering::Release);
    }
}

/// Wait until the console has sent everything.
pub fn flush() {
    uart().flush();
}

/// Print a line to the console.
macro_rules! println {
    () => { $crate::el2::console::print(format_args!("\n")) };
    ($($arg:tt)*) => {
        $crate::el2::console::print_line(format_args!($($arg)*))
    };
}

pub(crate) use println;
