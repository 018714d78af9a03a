//! The console: `println!` to the PL011, one whole line at a time.
//!
//! Several CPUs print (secondaries report through it, and any CPU may hit
//! a fatal exception), so each line is written under a spin lock. The lock
//! needs exclusive loads and stores, which are only architecturally
//! reliable on cacheable memory: until the MMU is on (only the boot CPU
//! runs then) lines are written unlocked.
//!
//! Until the device tree is read the console uses QEMU virt's PL011 at
//! 0x0900_0000, so that even a bad device tree is reported.

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// QEMU virt's PL011, used before the device tree names the console.
const EARLY_UART: u64 = 0x0900_0000;
/// PL011 data register.
const DR: u64 = 0x00;
/// PL011 flag register, and its "transmit FIFO full" bit.
const FR: u64 = 0x18;
const FR_TXFF: u32 = 1 << 5;
/// FR: the UART is still sending.
const FR_BUSY: u32 = 1 << 3;

static UART_BASE: AtomicU64 = AtomicU64::new(EARLY_UART);
/// Set once the MMU (and so the cache) is on: lines are locked from then.
static LOCKING: AtomicBool = AtomicBool::new(false);
static LOCK: AtomicBool = AtomicBool::new(false);

/// Use the PL011 at `base` (from the device tree; identity-mapped as
/// device memory by the MMU setup).
pub fn set_uart(base: u64) {
    UART_BASE.store(base, Ordering::Relaxed);
}

/// Serialise lines between CPUs from now on (the MMU is on).
pub fn enable_locking() {
    LOCKING.store(true, Ordering::Release);
}

fn put(byte: u8) {
    let base = UART_BASE.load(Ordering::Relaxed);
    let fr = (base + FR) as *const u32;
    let dr = (base + DR) as *mut u32;
    // SAFETY: `base` is QEMU virt's PL011 or the one the device tree
    // names; both are device MMIO outside any Rust object, mapped as
    // device memory (or the MMU is off). Volatile keeps each access.
    unsafe {
        while fr.read_volatile() & FR_TXFF != 0 {
            core::hint::spin_loop();
        }
        dr.write_volatile(byte as u32);
    }
}

/// Wait until everything written has left the UART (before power-off).
pub fn flush() {
    let fr = (UART_BASE.load(Ordering::Relaxed) + FR) as *const u32;
    // SAFETY: as in `put`.
    while unsafe { fr.read_volatile() } & FR_BUSY != 0 {
        core::hint::spin_loop();
    }
}

struct Uart;

impl Write for Uart {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            if b == b'\n' {
                put(b'\r');
            }
            put(b);
        }
        Ok(())
    }
}

/// Take the line lock; with `bounded`, give up after a while (a CPU that
/// died holding it must not silence a fatal report) and return false.
fn lock(bounded: bool) -> bool {
    if !LOCKING.load(Ordering::Acquire) {
        return false;
    }
    let mut spins = 0u64;
    while LOCK
        .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        spins += 1;
        if bounded && spins > 50_000_000 {
            return false;
        }
        core::hint::spin_loop();
    }
    true
}

fn unlock(held: bool) {
    if held {
        LOCK.store(false, Ordering::Release);
    }
}

/// Print one line (used by `println!`).
pub fn print_line(args: fmt::Arguments) {
    let held = lock(false);
    let _ = Uart.write_fmt(args);
    let _ = Uart.write_str("\n");
    unlock(held);
}

/// Print a line even if another CPU holds the lock for too long (fatal
/// reports).
pub fn print_line_forced(args: fmt::Arguments) {
    let held = lock(true);
    let _ = Uart.write_fmt(args);
    let _ = Uart.write_str("\n");
    unlock(held);
}

/// Print a line to the console.
macro_rules! println {
    ($($arg:tt)*) => {
        $crate::el1::console::print_line(format_args!($($arg)*))
    };
}
pub(crate) use println;
