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
mod host;
mod mem;
mod mmio;
mod mmu;
mod psci;
mod smmu;
mod sysreg;
mod tlb;
mod uart;
mod world;

use core::fmt::Write;
use core::panic::PanicInfo;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use warden_hyp::dtb::{self, HostDtbSpec};
use warden_hyp::fixmap::Fixmap;
use warden_hyp::hostcall::Hostcalls;
use warden_hyp::layout::{build_el2_table, carve_out, ImageLayout, MapPlan};
use warden_hyp::platform::{Platform, PsciConduit, Range};
use warden_hyp::pool::{PagePool, PhysMem};
use warden_hyp::psci_relay::{Cpus, MAX_CPUS, MPIDR_AFF_MASK};
use warden_hyp::report;
use warden_iommu::IommuHook;
use warden_memprotect::host::tables_needed;
use warden_memprotect::{MemProtect, PageMeta, PageState, Poison, RamMap, Region, PAGE_SHIFT};
use warden_pgtable::{desc, PageTable, Regime, PAGE_SIZE};

use host::HostCtl;
use world::World;

use console::{println, Console};

/// Pages of the pool for Warden's own EL2 table.
const EL2_POOL: u64 = 512 << 10;
/// Pages of the pool for the SMMU's host stage-2 shadow.
const SHADOW_POOL: u64 = 1 << 20;

/// Log2 of each CPU's EL2 stack size (64 KiB); the linker script's
/// `.stack` holds [`MAX_CPUS`] of them, CPU `i`'s top at `__stack_top - i
/// << STACK_SHIFT`.
pub const STACK_SHIFT: u32 = 16;

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

/// The device tree at `dtb`: its size from the header's `totalsize`,
/// checked, as a range (the caller makes slices of it only while nothing
/// writes it).
fn dtb_range(dtb: usize, image: Range) -> Range {
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
    let r = Range::new(dtb as u64, total as u64);
    if r.overlaps(&image) {
        fatal(format_args!("device tree at {dtb:#x} overlaps the hypervisor image"));
    }
    r
}

/// The bytes of `r`.
///
/// # Safety
/// `r` must be readable (identity-mapped, or the MMU off) and nothing may
/// write it while the slice lives.
unsafe fn bytes<'a>(r: Range) -> &'a [u8] {
    // SAFETY: the caller's promise.
    unsafe { core::slice::from_raw_parts(r.base as *const u8, r.size as usize) }
}

/// The device tree the host gets, built here before it is written over the
/// firmware's (which is no longer needed: [`Platform`] is a copy).
static mut HOST_DTB: [u8; HOST_DTB_MAX] = [0; HOST_DTB_MAX];
/// Largest rewritten device tree.
const HOST_DTB_MAX: usize = 128 << 10;

/// Boot values a secondary CPU needs before its MMU is on (MAIR_EL2,
/// TCR_EL2, TTBR0_EL2, SCTLR_EL2), read by entry.rs with the MMU off: the
/// boot CPU cleans them to the PoC.
#[no_mangle]
static SECONDARY_BOOT: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];

/// 2 MiB: a level-2 block.
const BLOCK_2M: u64 = 2 << 20;

/// Pages of host stage-2 tables kept for MMIO mappings on top of page
/// granularity over all RAM (MMIO leaves are recycled when short).
const HOST_POOL_MMIO_PAGES: usize = 64;

/// The Rust entry point, called by `_start` at EL2 with the device tree.
#[no_mangle]
extern "C" fn warden_main(dtb: usize) -> ! {
    let boot_start = sysreg::cntvct_el0();
    println!();
    println!("Warden {}: protected hypervisor for arm64", warden_hyp::VERSION);
    let el = sysreg::current_el();
    println!("running at EL{el}");
    if el != 2 {
        fatal(format_args!("entered at EL{el}, not EL2"));
    }

    let layout = image_layout();
    let dtb_range = dtb_range(dtb, layout.image());
    // SAFETY: the firmware's device tree, outside the image (checked); only
    // read until the host's is written over it, after this slice's use.
    let platform = match Platform::from_fdt(unsafe { bytes(dtb_range) }) {
        Ok(p) => p,
        Err(e) => fatal(format_args!("device tree at {dtb:#x}: {}", e.as_str())),
    };
    // SAFETY: the device tree (trusted firmware) names this PL011; it is
    // mapped as device memory in the EL2 table below.
    unsafe { console::set_uart(platform.uart.base as usize) };
    if platform.psci == PsciConduit::Hvc {
        fatal(format_args!("PSCI method is hvc, which traps to EL2 itself"));
    }
    let mut con = Console;
    let _ = report::write_platform(&mut con, &platform, dtb_range);
    let (major, minor) = psci::version();
    println!("PSCI {major}.{minor} via smc");
    let _ = report::write_image(&mut con, &layout);
    if layout.stack.size != (MAX_CPUS as u64) << STACK_SHIFT {
        fatal(format_args!(
            "stack area is not {MAX_CPUS} stacks of {} KiB",
            1 << (STACK_SHIFT - 10)
        ));
    }

    // The host stage-2 and what Warden carves out of RAM for it: per-page
    // metadata for every RAM page and a table pool that covers all RAM at
    // page granularity (a host that scatters shares or donations can
    // force that), plus a reserve for MMIO.
    // Warden manages physical addresses below 2^47 at most: EL2's VA space
    // (48 bits without LPA2) then has an upper half with no physical
    // address in it, for the fixmap.
    let (cpu_pa_bits, ps) = sysreg::pa_bits();
    let pa_bits = cpu_pa_bits.min(47);
    let fwb = host::cpu_has_fwb();
    let host_regime = Regime::Stage2 {
        ipa_bits: pa_bits,
        vmid: 0,
        fwb,
    };
    let host_geo = match host_regime.geometry() {
        Ok(g) => g,
        Err(e) => fatal(format_args!("host stage-2 geometry: {e:?}")),
    };
    let mut regions = [Region { base: 0, size: 0 }; warden_memprotect::ram::MAX_REGIONS];
    if platform.memory().len() > regions.len() {
        fatal(format_args!("more RAM regions than Warden tracks"));
    }
    for (r, m) in regions.iter_mut().zip(platform.memory()) {
        *r = Region {
            base: m.base,
            size: m.size,
        };
    }
    let regions = &regions[..platform.memory().len()];
    let meta_count = RamMap::pages_of(regions);
    let meta_bytes = (meta_count * core::mem::size_of::<PageMeta>()) as u64;
    let meta_bytes = meta_bytes.next_multiple_of(PAGE_SIZE);
    let wanted: usize = regions.iter().map(|r| tables_needed(&host_geo, r.size)).sum::<usize>()
        + host_geo.root_pages
        + HOST_POOL_MMIO_PAGES;
    // The carve-out ends on a 2 MiB boundary (the rest goes to the host
    // pool): the host's RAM after Warden then faults in as 2 MiB blocks
    // from its first page, not page by page up to the next boundary.
    let image_end = layout.image().end();
    let carve_end =
        (image_end + meta_bytes + wanted.min(world::HOST_POOL_PAGES) as u64 * PAGE_SIZE).next_multiple_of(BLOCK_2M);
    let hyp_mem = match carve_out(layout.image(), &platform, dtb_range, carve_end - image_end) {
        Ok(r) => r,
        Err(e) => fatal(format_args!("carving Warden's memory out of RAM: {e:?}")),
    };
    let meta_range = Range::new(hyp_mem.base, meta_bytes);
    let host_pool_pages = (((hyp_mem.end() - meta_range.end()) / PAGE_SIZE) as usize).min(world::HOST_POOL_PAGES);
    let host_pool = Range::new(meta_range.end(), host_pool_pages as u64 * PAGE_SIZE);
    println!(
        "Warden's memory: image {:#x}..{:#x} ({} KiB), carve-out {:#x}..{:#x}: page metadata {} KiB \
         ({} pages), host stage-2 pool {} pages{}",
        layout.image().base,
        layout.image().end(),
        layout.image().size >> 10,
        hyp_mem.base,
        hyp_mem.end(),
        meta_bytes >> 10,
        meta_count,
        host_pool_pages,
        if wanted > host_pool_pages { " (capped)" } else { "" },
    );

    let plan = match MapPlan::new(&layout, &platform, dtb_range, hyp_mem) {
        Ok(plan) => plan,
        Err(e) => fatal(format_args!("EL2 address space: {e:?}")),
    };
    // The pool (the linker's .pool section) in three disjoint parts: the
    // EL2 table's pages, the SMMU shadow's table pages, the SMMU's
    // structures.
    let el2_pool = Range::new(layout.pool.base, EL2_POOL);
    let shadow_pool = Range::new(el2_pool.end(), SHADOW_POOL);
    let smmu_structs = Range::new(shadow_pool.end(), layout.pool.end().saturating_sub(shadow_pool.end()));
    println!(
        "pools: EL2 table {} pages, host stage-2 {} pages, SMMU shadow {} pages, SMMU structures {} KiB",
        el2_pool.size / PAGE_SIZE,
        host_pool_pages,
        shadow_pool.size / PAGE_SIZE,
        smmu_structs.size >> 10
    );
    // SAFETY: the pool is RAM inside the image that no Rust object uses,
    // mapped read-write in the table it holds; this part is the EL2
    // table's alone.
    let mem = unsafe { mem::IdentityMem::new(el2_pool.base, el2_pool.end()) };
    let pool = PagePool::new(mem, el2_pool.base, el2_pool.size);
    // One more VA bit than PA bits: the upper half of EL2's VA space holds
    // no physical address, so nothing identity-mapped can collide there.
    let va_bits = pa_bits + 1;
    let (table, table_report) = match build_el2_table(&plan, va_bits, pool, tlb::El2Tlb::new()) {
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
    // stack, pool, Warden's carve-out (RW), the device tree and the UART
    // (device RW): all this code touches from now on, and it lives (in
    // `table`, then in the world) until power off. The image was written by
    // the loader (cleaned to PoC per the boot protocol) or by us with the
    // caches off, so invalidating it loses no data.
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
    for (slot, v) in SECONDARY_BOOT
        .iter()
        .zip([desc::MAIR_EL2, sysreg::tcr_el2(), table.root(), sysreg::sctlr_el2()])
    {
        slot.store(v, Ordering::Relaxed);
    }
    let boot_vals = &raw const SECONDARY_BOOT as u64;
    sysreg::dcache_clean_poc(boot_vals, boot_vals + 32);

    // Page ownership: the metadata (zero is "host owns it"), the host
    // stage-2 (empty: the host faults its memory in), Warden's stage 1.
    // SAFETY: the carve-out is RAM only Warden uses, mapped read-write.
    let mut meta_mem = unsafe { mem::IdentityMem::new(meta_range.base, meta_range.end()) };
    for pa in (meta_range.base..meta_range.end()).step_by(PAGE_SIZE as usize) {
        meta_mem.zero_page(pa);
    }
    // SAFETY: `meta_count` PageMetas (8 bytes of atomics each, valid when
    // zero) fit in the zeroed, page-aligned metadata range, which nothing
    // else uses for the rest of Warden's life.
    let meta: &'static [PageMeta] =
        unsafe { core::slice::from_raw_parts(meta_range.base as *const PageMeta, meta_count) };
    let ram = match RamMap::new(regions, meta, pa_bits as u32) {
        Ok(r) => r,
        Err(e) => fatal(format_args!("RAM map: {e:?}")),
    };
    // SAFETY: the host pool is the rest of the carve-out, Warden's alone.
    let host_mem = unsafe { mem::IdentityMem::new(host_pool.base, host_pool.end()) };
    let host_s2 = match PageTable::new(
        host_regime,
        world::HostPool::with_pages(host_mem, host_pool.base, host_pool.size),
        tlb::El2Tlb::new(),
    ) {
        Ok(t) => t,
        Err(e) => fatal(format_args!("host stage-2: {e:?}")),
    };
    let ctl = HostCtl::new(host_s2.geometry(), host_s2.root(), ps, fwb);
    // SAFETY: HCR_EL2.VM is still clear: nothing translates through it.
    unsafe { host::load_stage2(&ctl) };
    // The per-CPU fixmap, in the upper half of EL2's VA space (above every
    // physical address), its tables allocated now so that using it never
    // allocates; checked once by zeroing a carve-out page through CPU 0's
    // slot and reading it back through the identity map.
    let mut table = table;
    let fixmap = match Fixmap::init(&mut table, 1 << pa_bits, MAX_CPUS) {
        Ok(f) => f,
        Err(e) => fatal(format_args!("EL2 fixmap: {e:?}")),
    };
    let probe = host_pool.end() - PAGE_SIZE;
    // (The host pool's last page: unallocated at this point.)
    // SAFETY: the last host-pool page, not allocated yet, identity-mapped
    // read-write; Warden's alone.
    unsafe { (probe as *mut u64).write_volatile(0x5741_5244_454e) };
    // SAFETY: the EL2 table's pool, identity-mapped read-write. The table
    // (through its own `IdentityMem`) and the fixmap both write it, with
    // single-copy-atomic descriptor stores to disjoint entries: the fixmap
    // only its slots' descriptors, which the engine never rewrites after
    // `Fixmap::init` (they hold annotations or fixmap leaves).
    let fixmap_mem = || unsafe { mem::IdentityMem::new(el2_pool.base, el2_pool.end()) };
    world::Poisoner(fixmap, fixmap_mem()).poison(probe);
    // SAFETY: as above.
    if unsafe { (probe as *const u64).read_volatile() } != 0 {
        fatal(format_args!("fixmap self-check: the page at {probe:#x} was not zeroed"));
    }
    println!(
        "EL2 fixmap at {:#x}: {MAX_CPUS} page slots and {MAX_CPUS} 2 MiB block slots, broadcast invalidation on unmap \
         (self-check: zeroed {probe:#x} through CPU 0's slot)",
        fixmap.base()
    );
    let mp = MemProtect::new(
        ram,
        host_s2,
        table,
        world::SmmuHook(None),
        world::Poisoner(fixmap, fixmap_mem()),
    );

    // Warden's own memory leaves the host: every part of the image Warden
    // maps (the guard page below the stacks holds nothing and stays the
    // host's) and the carve-out.
    for (name, r) in layout.parts().into_iter().chain([("carve-out", hyp_mem)]) {
        if r.size == 0 {
            continue;
        }
        if let Err(e) = mp.hyp_claim_boot(r.base >> PAGE_SHIFT, r.size >> PAGE_SHIFT) {
            fatal(format_args!("claiming {name} {:#x}..{:#x}: {e:?}", r.base, r.end()));
        }
    }

    // The host's device tree: RAM without Warden's memory, no SMMU. Built
    // in Warden's buffer, then written over the firmware's, which the host
    // owns; Warden then drops its mapping of it.
    let hide = [Range::new(image.base, hyp_mem.end() - image.base)];
    // SAFETY: HOST_DTB is only used here, by the boot CPU, before any other
    // CPU runs; the firmware's tree is read-only until the copy below.
    let host_dtb = unsafe { core::slice::from_raw_parts_mut((&raw mut HOST_DTB).cast::<u8>(), HOST_DTB_MAX) };
    // SAFETY: as above: the slice dies before the tree is written.
    let len = match dtb::patch_for_host(unsafe { bytes(dtb_range) }, &HostDtbSpec { hide: &hide }, host_dtb) {
        Ok(n) => n,
        Err(e) => fatal(format_args!("host device tree: {}", e.as_str())),
    };
    if len as u64 > page_round_up(dtb_range.size) {
        fatal(format_args!(
            "host device tree ({len} bytes) larger than the firmware's"
        ));
    }
    // SAFETY: the destination is the firmware's tree, mapped read-write in
    // the EL2 table and no longer read; the source is Warden's buffer; they
    // do not overlap (one is in the image, the other outside it).
    unsafe { core::ptr::copy_nonoverlapping(host_dtb.as_ptr(), dtb as *mut u8, len) };
    // The host reads it with its MMU off: past the caches.
    sysreg::dcache_clean_poc(dtb as u64, dtb as u64 + len as u64);
    let dtb_pages = Range::new(dtb_range.base, page_round_up(dtb_range.size));
    if let Err(e) = mp.with_hyp(|h| h.s1.unmap(dtb_pages.base, dtb_pages.size)) {
        fatal(format_args!("unmapping the device tree at EL2: {e:?}"));
    }
    println!(
        "host device tree at {dtb:#x}: {len} bytes, RAM without {:#x}..{:#x}, no SMMU",
        hide[0].base,
        hide[0].end()
    );

    match platform.smmu {
        Some(frame) => {
            // The SMMU's registers become Warden's through memprotect (the
            // host stage-2 records the owner; EL2 maps them as device).
            if let Err(e) = mp.host_donate_hyp_mmio(frame.base >> PAGE_SHIFT, frame.size.div_ceil(PAGE_SIZE)) {
                fatal(format_args!("donating the SMMU's registers to Warden: {e:?}"));
            }
            println!("SMMU registers {:#x}..{:#x} donated to Warden", frame.base, frame.end());
            // SAFETY: the frame is the device tree's SMMU, now Warden's and
            // mapped as device memory; the two pool parts are disjoint from
            // the EL2 table's part and from each other.
            let taken = mp.with_host(|h| unsafe {
                smmu::takeover(regions, frame, shadow_pool, smmu_structs, pa_bits, &mut h.s2)
            });
            match taken {
                Ok(mut s) => {
                    let events = s.drain_events(|e| println!("SMMUv3 event: {e:?}"));
                    println!("SMMUv3: {events} events after takeover");
                    mp.with_host(|h: &mut warden_memprotect::protect::Host<world::El2Platform>| {
                        h.hook.0 = Some(IommuHook::new(s))
                    });
                }
                Err(e) => fatal(format_args!("SMMUv3 takeover: {e:?}")),
            }
        }
        None => println!("no SMMUv3 in the device tree: DMA is not isolated"),
    }

    // The CPUs: the boot CPU first (index 0, its stack and TPIDR_EL2 = 0),
    // then the others in tree order.
    let me = sysreg::mpidr_el1() & MPIDR_AFF_MASK;
    let mut ids = [me; MAX_CPUS];
    let mut n = 1;
    for &id in platform.cpu_mpidrs() {
        if id & MPIDR_AFF_MASK != me && n < MAX_CPUS {
            ids[n] = id & MPIDR_AFF_MASK;
            n += 1;
        }
    }
    let cpus = Cpus::new(&ids[..n], 0);
    println!(
        "CPUs: {} (boot CPU MPIDR {me:#x}); the others start only through Warden's PSCI relay",
        cpus.count()
    );
    let w = world::publish(World {
        mp,
        calls: Hostcalls::new(),
        cpus,
        ctl,
    });

    self_tests(&platform);

    let Some(entry) = platform.bootarg_u64("warden.host") else {
        println!("no host image given (warden.host=ADDR on the command line)");
        println!("Warden: done, powering off (PSCI SYSTEM_OFF)");
        psci::system_off()
    };
    if w.mp.host_state(entry >> PAGE_SHIFT) != Some(PageState::Owned) {
        fatal(format_args!("host entry point {entry:#x} is not RAM the host owns"));
    }
    // SAFETY: the host stage-2 is complete: Warden's memory and the SMMU are
    // annotated, the host's device tree is written and cleaned.
    unsafe { host::configure_cpu(&w.ctl) };
    let ticks = sysreg::cntvct_el0().wrapping_sub(boot_start);
    let freq = sysreg::cntfrq_el0().max(1);
    println!(
        "boot to host entry: {} us ({ticks} counter ticks at {freq} Hz)",
        ticks.saturating_mul(1_000_000) / freq
    );
    println!("entering the host at {entry:#x} (EL1h, MMU off, x0 = device tree {dtb:#x})");
    console::flush();
    host::enter_host(entry, dtb as u64)
}

fn page_round_up(n: u64) -> u64 {
    n.next_multiple_of(PAGE_SIZE)
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
