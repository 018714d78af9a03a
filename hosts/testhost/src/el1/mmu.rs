//! The EL1 stage 1: an identity map with 1 GiB blocks, so that RAM is
//! Normal write-back cacheable (exclusives, hence atomics and the locks
//! between CPUs, are only architecturally reliable there) and devices are
//! Device-nGnRE.
//!
//! 4 KiB granule, T0SZ = 25: a 39-bit VA space whose walk starts at level 1,
//! so one 512-entry table of 1 GiB blocks maps everything the test host
//! touches below 512 GiB:
//!
//! * GiB 0 (UART, GIC, SMMU, the PCIe 32-bit window and low ECAM on `virt`)
//!   and the GiBs of the PCIe ECAM and 32-bit window wherever the tree puts
//!   them: Device-nGnRE, never executable;
//! * every GiB that holds RAM of the host's (and so Warden's gap, which
//!   lies between): Normal WB, inner shareable, executable at EL1 (the
//!   `warden-memory` scenario needs Warden's memory to be executable in
//!   stage 1, so that only Warden's stage 2 can refuse the fetch).
//!
//! Nothing else is mapped: an access there is a stage-1 translation fault,
//! which the scenarios would see as an unexpected exception.
//!
//! The boot CPU builds the table and writes the register values to
//! [`TESTHOST_MMU`] with its MMU off, invalidates the stale cache lines of
//! everything it wrote that way, then turns its MMU on; secondaries load
//! the same values in entry.rs.

use core::arch::asm;
use core::cell::UnsafeCell;

use warden_hyp::platform::Range;
use warden_testhost::machine::Machine;

use super::cpu::{self, read_sysreg};

const GIB: u64 = 1 << 30;
/// Entries of the level-1 table (VA bits 38:30).
const ENTRIES: usize = 512;

/// MAIR_EL1: attribute 0 Device-nGnRE, attribute 1 Normal WB RW-allocate.
const MAIR: u64 = 0x04 | (0xff << 8);
const ATTR_DEVICE: u64 = 0 << 2;
const ATTR_NORMAL: u64 = 1 << 2;
/// Level-1 block descriptor.
const BLOCK: u64 = 0b01;
/// Access flag (set: no access-flag faults).
const AF: u64 = 1 << 10;
/// Inner shareable.
const SH_INNER: u64 = 3 << 8;
/// Privileged / unprivileged execute-never.
const PXN: u64 = 1 << 53;
const UXN: u64 = 1 << 54;

/// TCR_EL1: T0SZ 25, walks inner/outer WB-WA inner shareable, 4 KiB
/// granule, TTBR1 walks disabled (EPD1); IPS is added from the CPU.
const TCR: u64 = 25 | (0b01 << 8) | (0b01 << 10) | (0b11 << 12) | (1 << 23);

/// SCTLR_EL1 bits: M (MMU), A (alignment check), C (data cache), SA (SP
/// alignment check), I (instruction cache), WXN, E0E, EE.
const SCTLR_M: u64 = 1 << 0;
const SCTLR_A: u64 = 1 << 1;
const SCTLR_C: u64 = 1 << 2;
const SCTLR_SA: u64 = 1 << 3;
const SCTLR_I: u64 = 1 << 12;
const SCTLR_WXN: u64 = 1 << 19;
const SCTLR_E0E: u64 = 1 << 24;
const SCTLR_EE: u64 = 1 << 25;

/// A page-aligned table the boot CPU writes once, before any other CPU
/// runs and before its own MMU is on.
#[repr(C, align(4096))]
struct Table(UnsafeCell<[u64; ENTRIES]>);

// SAFETY: written only by the boot CPU before secondaries start, read by
// the table walker (and never through a Rust reference afterwards).
unsafe impl Sync for Table {}

static TABLE: Table = Table(UnsafeCell::new([0; ENTRIES]));

/// MAIR, TCR, TTBR0, SCTLR for the secondaries (entry.rs reads them with
/// the MMU off). SCTLR 0 means "not set up yet".
#[repr(C, align(64))]
pub struct MmuParams(UnsafeCell<[u64; 4]>);

// SAFETY: written once by the boot CPU with its MMU off, before any
// secondary is started; read-only afterwards.
unsafe impl Sync for MmuParams {}

/// The register values secondaries load (symbol used by entry.rs).
pub static TESTHOST_MMU: MmuParams = MmuParams(UnsafeCell::new([0; 4]));

extern "C" {
    static __bss_start: u8;
    static __image_end: u8;
}

/// What the table maps, for the boot log.
pub struct MapSummary {
    /// GiB blocks mapped as Normal memory.
    pub normal: usize,
    /// GiB blocks mapped as device memory.
    pub device: usize,
}

fn gib_span(r: &Range) -> core::ops::Range<usize> {
    if r.size == 0 {
        return 0..0;
    }
    let first = (r.base / GIB) as usize;
    let last = ((r.end() - 1) / GIB) as usize;
    first.min(ENTRIES)..(last + 1).min(ENTRIES)
}

/// Build the table for `machine`, turn the MMU on for the boot CPU and
/// leave the parameters for the secondaries.
///
/// # Safety
/// Boot CPU only, once, with the MMU off and no other CPU running.
pub unsafe fn enable(machine: &Machine) -> MapSummary {
    let mut entries = [0u64; ENTRIES];
    // RAM first; the lowest GiB and the PCIe regions are devices (a GiB
    // holding both would be a machine this map cannot describe; the
    // device mapping wins so that no device is ever cacheable).
    for m in machine.memory() {
        for i in gib_span(m) {
            entries[i] = (i as u64 * GIB) | BLOCK | AF | SH_INNER | ATTR_NORMAL | UXN;
        }
    }
    let mut device = |r: Range| {
        for i in gib_span(&r) {
            entries[i] = (i as u64 * GIB) | BLOCK | AF | ATTR_DEVICE | PXN | UXN;
        }
    };
    device(Range::new(0, GIB));
    if let Some(pci) = machine.pci {
        device(pci.ecam);
        if let Some(w) = pci.mmio32 {
            device(Range::new(w.cpu, w.size));
        }
    }
    let summary = MapSummary {
        normal: entries
            .iter()
            .filter(|&&e| e != 0 && e & (7 << 2) == ATTR_NORMAL)
            .count(),
        device: entries
            .iter()
            .filter(|&&e| e != 0 && e & (7 << 2) == ATTR_DEVICE)
            .count(),
    };
    let table = TABLE.0.get();
    // SAFETY: the boot CPU is alone and its MMU is off: nothing else reads
    // or writes the table yet.
    unsafe { table.write_volatile(entries) };

    // IPS: the CPU's physical address size, capped at 48 bits (52 needs
    // FEAT_LPA2 descriptors).
    let parange = (read_sysreg!("id_aa64mmfr0_el1") & 0xf).min(0b101);
    let tcr = TCR | (parange << 32);
    let sctlr = (read_sysreg!("sctlr_el1") | SCTLR_M | SCTLR_C | SCTLR_I | SCTLR_SA)
        & !(SCTLR_A | SCTLR_WXN | SCTLR_E0E | SCTLR_EE);
    let params = [MAIR, tcr, table as u64, sctlr];
    // SAFETY: as above; secondaries read this only after CPU_ON, later.
    unsafe { TESTHOST_MMU.0.get().write_volatile(params) };

    // Everything written so far with the MMU off (.bss, the table, the
    // parameters, this stack) went straight to memory; drop any stale
    // cache lines of that range so the cacheable view matches memory.
    let start = &raw const __bss_start as u64;
    let end = &raw const __image_end as u64;
    // SAFETY: with the caches off nothing in the range was written
    // through the cache, so no dirty line holds data to lose.
    unsafe { cpu::invalidate_dcache(start, end) };

    // SAFETY: the table identity-maps this code, its stack, the UART and
    // everything else the test host uses, with the attributes above; the
    // sequence is the Arm ARM's: registers, ISB, TLB and I-cache
    // invalidation, barriers, then SCTLR_EL1 and an ISB.
    unsafe {
        asm!(
            "msr mair_el1, {mair}",
            "msr tcr_el1, {tcr}",
            "msr ttbr0_el1, {ttbr}",
            "isb",
            "tlbi vmalle1",
            "ic iallu",
            "dsb nsh",
            "isb",
            "msr sctlr_el1, {sctlr}",
            "isb",
            mair = in(reg) MAIR,
            tcr = in(reg) tcr,
            ttbr = in(reg) table as u64,
            sctlr = in(reg) sctlr,
            options(nostack, preserves_flags),
        )
    };
    summary
}

/// An address the table leaves unmapped (the first empty GiB above 0),
/// for the boot-time check that the fault probes work: an access there is
/// a stage-1 translation fault, taken at EL1 whatever runs at EL2.
pub fn unmapped_address() -> Option<u64> {
    let table = TABLE.0.get() as *const u64;
    (1..ENTRIES)
        // SAFETY: the table is written once before the MMU is on and only
        // read afterwards; volatile reads of its entries.
        .find(|&i| unsafe { table.add(i).read_volatile() } == 0)
        .map(|i| i as u64 * GIB + 0x12_3450)
}
