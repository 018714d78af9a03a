//! The SMMUv3 at EL2: warden-smmuv3's register and memory traits over
//! the real hardware (QEMU's emulated SMMUv3), and the takeover at boot.
//!
//! The shadow is a snapshot of the host stage-2 taken after Warden claimed
//! its memory and the SMMU's registers were donated to it: everything the
//! host may reach, nothing else; from then on warden-memprotect's hook
//! keeps it in step.

use warden_hyp::platform::Range;
use warden_hyp::pool::{PagePool, PhysMem};
use warden_iommu::{IommuDriver, IommuError};
use warden_memprotect::Region;
use warden_smmuv3::{probe, CacheMaint, Mmio, Smmu, SmmuConfig, SmmuMem};

use super::console::println;
use super::mem::IdentityMem;
use super::sysreg;

/// Streams given the shadow: PCI bus 0 of QEMU's virt machine (its
/// `iommu-map` sends requester ID n to stream n).
const STREAMS: u32 = 256;
/// Bound on register and queue polls; QEMU completes commands when the
/// producer index is written, real SMMUs in microseconds.
const POLL_LIMIT: u32 = 1_000_000;

/// The SMMU's register frame, identity-mapped as device memory.
pub struct SmmuRegs {
    base: u64,
    size: u64,
}

impl SmmuRegs {
    /// The frame at `frame`.
    ///
    /// # Safety
    /// `frame` must be the SMMU's register frame, mapped Device-nGnRE in
    /// Warden's stage 1, owned by Warden (the host cannot reach it), and
    /// nothing else may program the SMMU.
    pub unsafe fn new(frame: Range) -> Self {
        SmmuRegs {
            base: frame.base,
            size: frame.size,
        }
    }

    /// The register's address; the driver's offsets are constants, so one
    /// outside the frame is a bug in Warden, not hostile input.
    fn reg(&self, off: u64, width: u64) -> u64 {
        assert!(
            off.is_multiple_of(width) && off + width <= self.size,
            "SMMU register offset {off:#x} outside the frame"
        );
        self.base + off
    }
}

impl Mmio for SmmuRegs {
    fn read32(&mut self, off: u64) -> u32 {
        let r = self.reg(off, 4) as *const u32;
        // SAFETY: an aligned register inside the frame `new`'s caller
        // vouched for; volatile keeps the device access as written.
        unsafe { r.read_volatile() }
    }
    fn write32(&mut self, off: u64, val: u32) {
        let r = self.reg(off, 4) as *mut u32;
        // SAFETY: as in read32; only Warden programs the SMMU.
        unsafe { r.write_volatile(val) }
    }
    fn read64(&mut self, off: u64) -> u64 {
        let r = self.reg(off, 8) as *const u64;
        // SAFETY: as in read32, for a 64-bit register.
        unsafe { r.read_volatile() }
    }
    fn write64(&mut self, off: u64, val: u64) {
        let r = self.reg(off, 8) as *mut u64;
        // SAFETY: as in write32, for a 64-bit register.
        unsafe { r.write_volatile(val) }
    }
    fn relax(&mut self) {
        core::hint::spin_loop();
    }
}

/// Cache maintenance to the PoC by (identity-mapped) address.
pub struct Dcache;

impl CacheMaint for Dcache {
    fn clean(&mut self, pa: u64, len: u64) {
        sysreg::dcache_clean_poc(pa, pa + len);
    }
    fn invalidate(&mut self, pa: u64, len: u64) {
        // SAFETY: callers invalidate event records the SMMU wrote, which
        // the CPU never writes: there is no dirty data to lose.
        unsafe { sysreg::dcache_invalidate_poc(pa, pa + len) };
    }
}

/// The SMMU's structures (stream table, queues): a bump allocator over a
/// part of Warden's pool.
pub struct StructArena {
    mem: IdentityMem,
    next: u64,
    end: u64,
}

impl StructArena {
    /// An arena over `[start, end)`, accessed through `mem` (which covers
    /// it).
    pub fn new(mem: IdentityMem, start: u64, end: u64) -> Self {
        StructArena { mem, next: start, end }
    }
}

impl CacheMaint for StructArena {
    fn clean(&mut self, pa: u64, len: u64) {
        Dcache.clean(pa, len)
    }
    fn invalidate(&mut self, pa: u64, len: u64) {
        Dcache.invalidate(pa, len)
    }
}

impl SmmuMem for StructArena {
    fn alloc(&mut self, pages: usize) -> Option<u64> {
        let bytes = (pages as u64).checked_mul(4096)?;
        let pa = self.next.checked_next_multiple_of(bytes)?;
        let end = pa.checked_add(bytes)?;
        if end > self.end {
            return None;
        }
        for p in (pa..end).step_by(4096) {
            self.mem.zero_page(p);
        }
        self.next = end;
        Some(pa)
    }
    fn read64(&self, pa: u64) -> u64 {
        self.mem.read_u64(pa)
    }
    fn write64(&mut self, pa: u64, val: u64) {
        self.mem.write_u64_release(pa, val)
    }
    fn publish(&mut self) {
        sysreg::dsb_sy();
    }
}

/// The driver at EL2.
pub type El2Smmu = Smmu<SmmuRegs, StructArena, PagePool<IdentityMem>, Dcache>;

/// Take the SMMU over: probe, snapshot the host stage-2 into the shadow
/// (RAM and MMIO the host owns mapped; Warden's memory and the SMMU's own
/// registers, annotated, left out), point every stream of bus 0 at it.
/// `ram` is the RAM map memprotect was given (every region, so none is
/// mistaken for MMIO).
/// Errors are the driver's: an SMMU Warden cannot use stops the boot (DMA
/// isolation is not optional).
///
/// # Safety
/// As [`SmmuRegs::new`] for `frame`; `tables` and `structs` must be
/// disjoint parts of Warden's memory that nothing else uses.
pub unsafe fn takeover<HM: warden_pgtable::MmOps, HT: warden_pgtable::TlbOps>(
    ram: &[Region],
    frame: Range,
    tables: Range,
    structs: Range,
    cpu_pa_bits: u8,
    host_s2: &mut warden_pgtable::PageTable<HM, HT>,
) -> Result<El2Smmu, IommuError> {
    // SAFETY: the caller vouched for the frame.
    let mut regs = unsafe { SmmuRegs::new(frame) };
    let f = probe(&mut regs)?;
    println!(
        "SMMUv3 at {:#x}: stage-2{}, {}coherent, VMID{}, {} stream table, RIL {}, {} stream ID bits, \
         queues 2^{}/2^{}, OAS {} bits",
        frame.base,
        if f.stage1 { " + stage-1" } else { " only" },
        if f.coherent { "" } else { "non-" },
        if f.vmid16 { 16 } else { 8 },
        if f.two_level { "2-level" } else { "linear" },
        if f.ril { "yes" } else { "no" },
        f.sid_bits,
        f.cmdq_log2,
        f.evtq_log2,
        f.oas_bits
    );
    let cfg = SmmuConfig {
        pa_bits: cpu_pa_bits.min(f.oas_bits),
        streams: STREAMS.min(1 << f.sid_bits.min(31)),
        vmid: 1,
        poll_limit: POLL_LIMIT,
    };
    // SAFETY: the caller gave these ranges to the SMMU alone.
    let table_mem = unsafe { IdentityMem::new(tables.base, tables.end()) };
    // SAFETY: as above.
    let struct_mem = unsafe { IdentityMem::new(structs.base, structs.end()) };
    let pool = PagePool::new(table_mem, tables.base, tables.size);
    let arena = StructArena::new(struct_mem, structs.base, structs.end());
    let mut smmu = Smmu::new(regs, arena, pool, Dcache, ram, cfg)?;
    smmu.snapshot(host_s2)?;
    smmu.init()?;
    let pages = smmu.shadow().table().mm().inner().stats().used;
    println!(
        "SMMUv3: streams 0..{} translate through the host stage-2 shadow ({} PA bits, {} table pages); \
         Warden's memory and the SMMU's registers unreachable; global bypass aborts",
        cfg.streams, cfg.pa_bits, pages
    );
    Ok(smmu)
}
