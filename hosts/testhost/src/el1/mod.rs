//! The test host at EL1: boot, machine discovery, MMU, then the scenarios.
//!
//! Boot path: `_start` (entry.rs) sets up the boot stack, .bss, FP/SIMD and
//! the vectors, then calls [`testhost_main`] with the device tree's
//! address. With the MMU still off it reads the machine (warden-hyp's
//! device-tree reader), switches the console to the tree's UART and the
//! PSCI calls to the tree's conduit, builds the identity map and turns the
//! MMU on (mmu.rs), asks whether Warden is there (FN_CALL_UID), lays out
//! the pages the scenarios use, runs every scenario (scenarios/) and
//! powers off. Every step that can go wrong ends in a RESULT/DONE line
//! (report.rs), never a silent hang.

mod bench;
mod console;
mod cpu;
mod entry;
mod exception;
mod mmu;
mod pci;
mod report;
mod scenarios;
mod smccc;
mod smp;

use warden_hyp::platform::Range;
use warden_testhost::machine::{dtb_total_size, Machine};

use console::println;

/// Largest device tree accepted.
const MAX_DTB_SIZE: usize = 2 << 20;

extern "C" {
    static __image_start: u8;
    static __image_end: u8;
}

/// The test host's own image, stacks included.
fn image() -> Range {
    let start = &raw const __image_start as u64;
    let end = &raw const __image_end as u64;
    Range::new(start, end - start)
}

/// The boot CPU's Rust entry (from entry.rs), MMU off.
pub extern "C" fn testhost_main(dtb: u64) -> ! {
    // SAFETY: the boot protocol gives a device tree at `dtb`; the header
    // is read bytewise (the MMU is off: device memory, aligned accesses
    // only) and nothing writes the tree while the test host runs.
    let header = unsafe { core::slice::from_raw_parts(dtb as *const u8, 64) };
    let size = match dtb_total_size(header) {
        Some(n) if (64..=MAX_DTB_SIZE).contains(&n) => n,
        Some(n) => report::fatal(format_args!("device tree at {dtb:#x} claims {n} bytes")),
        None => report::fatal(format_args!("no device tree at {dtb:#x} (x0)")),
    };
    // SAFETY: as above, for the `totalsize` bytes the header claims.
    let blob = unsafe { core::slice::from_raw_parts(dtb as *const u8, size) };
    let machine = match Machine::from_fdt(blob, dtb) {
        Ok(m) => m,
        Err(e) => report::fatal(format_args!("device tree at {dtb:#x}: {}", e.as_str())),
    };
    console::set_uart(machine.platform.uart.base);
    smccc::set_conduit(machine.platform.psci);
    println!(
        "warden-testhost {}: EL1, image {:#x}..{:#x}, device tree at {dtb:#x} ({size} bytes)",
        env!("CARGO_PKG_VERSION"),
        image().base,
        image().end()
    );

    // SAFETY: boot CPU, once, MMU off, no other CPU started yet.
    let map = unsafe { mmu::enable(&machine) };
    console::enable_locking();
    cpu::unmask_serror();
    println!(
        "testhost: EL1 MMU on (identity: {} GiB Normal-WB, {} GiB Device-nGnRE)",
        map.normal, map.device
    );

    self_check();
    let uid = smccc::detect_warden();
    if smccc::under_warden() {
        println!("testhost: Warden answered FN_CALL_UID: running under Warden");
    } else {
        match uid {
            Ok(r) => println!("testhost: FN_CALL_UID returned {:#x?}: not Warden; standalone mode", r),
            Err(f) => println!(
                "testhost: FN_CALL_UID faulted (EC {:#x}): no hypervisor; standalone mode",
                f.ec()
            ),
        }
    }
    match smccc::psci_call(smccc::psci::VERSION, 0, 0, 0) {
        Ok(v) => println!(
            "testhost: PSCI {}.{} via {}",
            v >> 16 & 0xffff,
            v & 0xffff,
            machine.platform.psci.as_str()
        ),
        Err(f) => println!("testhost: PSCI_VERSION faulted (EC {:#x})", f.ec()),
    }
    let ctx = scenarios::Ctx::new(machine, image());
    ctx.describe();
    scenarios::run_all(ctx);
    report::done()
}

/// Check the fault probes on something whose outcome does not depend on
/// EL2: an address the EL1 stage 1 leaves unmapped must give a data abort
/// (read, write) and an instruction abort (fetch) reporting that address.
/// If the probes are broken, every verdict that relies on them would be
/// wrong, so say so loudly (the scenarios still run).
fn self_check() {
    use exception::{ec, probe_exec, probe_read, probe_write};
    let Some(addr) = mmu::unmapped_address() else {
        println!("testhost: harness self-check skipped: no unmapped GiB");
        return;
    };
    let r = probe_read(addr);
    // SAFETY: `addr` is unmapped at stage 1: the store cannot land.
    let w = unsafe { probe_write(addr, 0) };
    // SAFETY: as above: the fetch cannot execute anything.
    let x = unsafe { probe_exec(addr) };
    let ok = r.is_some_and(|f| f.is_abort_at(ec::DABT_CUR, addr))
        && w.is_some_and(|f| f.is_abort_at(ec::DABT_CUR, addr))
        && x.is_some_and(|f| f.is_abort_at(ec::IABT_CUR, addr));
    if ok {
        println!(
            "testhost: harness self-check ok: read/write/fetch of unmapped {addr:#x} caught with the right ESR and FAR"
        );
    } else {
        println!("testhost: harness self-check FAILED at {addr:#x}: read {r:x?}, write {w:x?}, fetch {x:x?}");
    }
}
