//! The EL2 side of Warden: entry, console, device tree, page table, MMU,
//! vectors and power-off. Built only for `target_os = "none"`.
//!
//! Boot path: `_start` (entry.rs) sets up the stack, .bss and the vectors,
//! then calls [`warden_main`] with the device tree's address, which reads
//! the machine, builds the EL2 identity map with warden-pgtable, turns the
//! MMU on, takes the SMMUv3 over with warden-smmuv3 (every stream of PCI
//! bus 0 through the host stage-2 shadow), prints a summary and powers off
//! through PSCI.

mod console;
mod entry;
mod exception;
mod mem;
mod mmio;
mod mmu;
mod psci;
mod smmu;
mod sysreg;
mod tlb;
mod uart;

use core::fmt::Write;
use core::panic::PanicInfo;
use core::sync::atomic::{AtomicBool, Ordering};

use warden_hyp::layout::{build_el2_table, ImageLayout, MapPlan};
use warden_hyp::platform::{Platform, PsciConduit, Range};
use warden_hyp::pool::PagePool;
use warden_hyp::report;

use console::{println, Console};

/// Pages of the pool for Warden's own EL2 table.
const EL2_POOL: u64 = 512 << 10;
/// Pages of the pool for the SMMU's host stage-2 shadow.
const SHADOW_POOL: u64 = 1 << 20;

/// Largest device tree Warden accepts.
const MAX_DTB_SIZE: usize = 2 << 20;

extern "C" {
    static __image_start: u8;
    static __text_start: u8;
    static __text_end: u8;
    static __rodata_start: u8;
    static __rodata_end: u8;
    static __data_start: u8;
    static __data_end: u8;
    static __bss_start: u8;
    static __bss_end: u8;
    static __stack_bottom: u8;
    static __stack_top: u8;
    static __pool_start: u8;
    static __pool_end: u8;
}

/// A constant in .rodata for the W^X self-test.
static RODATA_PROBE: u64 = 0x5741_5244_454e; // "WARDEN"

/// The image layout, from the linker script's symbols.
fn image_layout() -> ImageLayout {
    let r = |start: *const u8, end: *const u8| Range::new(start as u64, (end as u64).saturating_sub(start as u64));
    // Taking the address of an extern static reads nothing.
    ImageLayout {
        text: r(&raw const __text_start, &raw const __text_end),
        rodata: r(&raw const __rodata_start, &raw const __rodata_end),
        data: r(&raw const __data_start, &raw const __data_end),
        bss: r(&raw const __bss_start, &raw const __bss_end),
        stack: r(&raw const __stack_bottom, &raw const __stack_top),
        pool: r(&raw const __pool_start, &raw const __pool_end),
    }
}

/// Report a fatal error and power off; xtask fails a run on this line.
fn fatal(args: core::fmt::Arguments) -> ! {
    println!("WARDEN PANIC: {args}");
    psci::system_off()
}

/// The device tree blob at `dtb`, bounded by its header's `totalsize`.
fn dtb_blob(dtb: usize, image: Range) -> &'static [u8] {
    if dtb == 0 || !dtb.is_multiple_of(8) {
        fatal(format_args!("device tree address {dtb:#x} is null or misaligned"));
    }
    // The header's first 8 bytes: magic and totalsize (big-endian).
    let header = dtb as *const [u8; 8];
    // SAFETY: the boot protocol puts a device tree at x0 in RAM (the
    // firmware is trusted); we read only its 8-byte-aligned first 8 bytes.
    let header = unsafe { header.read_volatile() };
    let total = u32::from_be_bytes([header[4], header[5], header[6], header[7]]) as usize;
    if !(warden_hyp::fdt::HEADER_SIZE..=MAX_DTB_SIZE).contains(&total) {
        fatal(format_args!("device tree at {dtb:#x} has a bad size {total:#x}"));
    }
    if Range::new(dtb as u64, total as u64).overlaps(&image) {
        fatal(format_args!("device tree at {dtb:#x} overlaps the hypervisor image"));
    }
    // SAFETY: the firmware placed `total` bytes of device tree at `dtb`
    // (checked: outside Warden's image, so nothing of Warden's writes it);
    // nobody modifies it afterwards, so a shared slice for the rest of
    // the program is sound.
    unsafe { core::slice::from_raw_parts(dtb as *const u8, total) }
}

/// The Rust entry point, called by `_start` at EL2 with the device tree.
#[no_mangle]
extern "C" fn warden_main(dtb: usize) -> ! {
    println!();
    println!("Warden {}: protected hypervisor for arm64", warden_hyp::VERSION);
    let el = sysreg::current_el();
    println!("running at EL{el}");
    if el != 2 {
        fatal(format_args!("entered at EL{el}, not EL2"));
    }

    let layout = image_layout();
    let blob = dtb_blob(dtb, layout.image());
    let platform = match Platform::from_fdt(blob) {
        Ok(p) => p,
        Err(e) => fatal(format_args!("device tree at {dtb:#x}: {}", e.as_str())),
    };
    // SAFETY: the device tree (trusted firmware) names this PL011; it is
    // mapped as device memory in the EL2 table below.
    unsafe { console::set_uart(platform.uart.base as usize) };
    if platform.psci == PsciConduit::Hvc {
        fatal(format_args!("PSCI method is hvc, which traps to EL2 itself"));
    }
    let dtb_range = Range::new(dtb as u64, blob.len() as u64);
    let mut con = Console;
    let _ = report::write_platform(&mut con, &platform, dtb_range);
    let (major, minor) = psci::version();
    println!("PSCI {major}.{minor} via smc");
    let _ = report::write_image(&mut con, &layout);

    let plan = match MapPlan::new(&layout, &platform, dtb_range) {
        Ok(plan) => plan,
        Err(e) => fatal(format_args!("EL2 address space: {e:?}")),
    };
    // The pool (the linker's .pool section) in three disjoint parts: the
    // EL2 table's pages, the SMMU shadow's table pages, the SMMU's
    // structures.
    let el2_pool = Range::new(layout.pool.base, EL2_POOL);
    let shadow_pool = Range::new(el2_pool.end(), SHADOW_POOL);
    let smmu_structs = Range::new(shadow_pool.end(), layout.pool.end().saturating_sub(shadow_pool.end()));
    // SAFETY: the pool is RAM inside the image that no Rust object uses,
    // mapped read-write in the table it holds; this part is the EL2
    // table's alone.
    let mem = unsafe { mem::IdentityMem::new(el2_pool.base, el2_pool.end()) };
    let pool = PagePool::new(mem, el2_pool.base, el2_pool.size);
    let (pa_bits, ps) = sysreg::pa_bits();
    let (table, table_report) = match build_el2_table(&plan, pa_bits, pool, tlb::El2Tlb::new()) {
        Ok(t) => t,
        Err(e) => fatal(format_args!("EL2 page table: {e:?}")),
    };
    let _ = report::write_table(
        &mut con,
        table.geometry(),
        table.root(),
        &plan,
        &table_report,
        &table.mm().stats(),
    );

    let image = layout.image();
    // SAFETY: the table identity-maps text (RX), rodata (R), data, bss,
    // stack, pool (RW), the device tree (R) and the UART (device RW): all
    // this code touches from now on, and it lives (in `table`) until power
    // off. The image was written by the loader (cleaned to PoC per the boot
    // protocol) or by us with the caches off, so invalidating it loses no
    // data.
    let sctlr = unsafe { mmu::enable(table.root(), table.geometry(), ps, image.base, image.end()) };
    println!(
        "EL2 MMU on: SCTLR_EL2={sctlr:#x} TCR_EL2={:#x} TTBR0_EL2={:#x}",
        sysreg::tcr_el2(),
        table.root()
    );
    let text = layout.text.base;
    match sysreg::translate_el2_read(text) {
        Some(pa) if pa == text => println!("  AT S1E2R {text:#x} -> {pa:#x} (identity)"),
        other => fatal(format_args!("AT S1E2R {text:#x} gave {other:?}")),
    }

    match platform.smmu {
        // SAFETY: the frame is the device tree's SMMU, mapped as device
        // memory above and never given to anyone; the two pool parts are
        // disjoint from the EL2 table's part and from each other.
        Some(frame) => match unsafe { smmu::takeover(&platform, frame, image, shadow_pool, smmu_structs, pa_bits) } {
            Ok(mut s) => {
                let events = s.drain_events(|e| println!("SMMUv3 event: {e:?}"));
                println!("SMMUv3: {events} events after takeover");
            }
            Err(e) => fatal(format_args!("SMMUv3 takeover: {e:?}")),
        },
        None => println!("no SMMUv3 in the device tree: DMA is not isolated"),
    }

    self_tests(&platform);

    println!("Warden: done, powering off (PSCI SYSTEM_OFF)");
    psci::system_off()
}

/// Deliberate failures chosen by `/chosen/bootargs`, which `cargo xtask
/// test` uses to check that faults and panics are reported.
fn self_tests(platform: &Platform) {
    if platform.has_bootarg("warden.selftest=wxn") {
        let probe = &raw const RODATA_PROBE as u64;
        println!("self-test: writing to read-only {probe:#x}, expecting a permission fault");
        // SAFETY: deliberately faults: .rodata is mapped read-only, so the
        // store never completes and the exception handler powers off; no
        // memory is modified.
        unsafe { core::arch::asm!("str xzr, [{}]", in(reg) probe, options(nostack)) };
        fatal(format_args!("write to read-only memory did not fault"));
    }
    if platform.has_bootarg("warden.selftest=panic") {
        println!("self-test: panicking");
        panic!("self-test panic");
    }
}

/// Set by the first panic, so a panic while reporting one powers off.
static PANICKING: AtomicBool = AtomicBool::new(false);

#[panic_handler]
fn panic(info: &PanicInfo) -> ! {
    if PANICKING.load(Ordering::Relaxed) {
        psci::system_off();
    }
    PANICKING.store(true, Ordering::Relaxed);
    let _ = write!(Console, "WARDEN PANIC: {}", info.message());
    if let Some(loc) = info.location() {
        let _ = write!(Console, " at {}:{}", loc.file(), loc.line());
    }
    println!();
    psci::system_off()
}
