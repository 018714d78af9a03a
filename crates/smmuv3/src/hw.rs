//! What the driver needs from the platform: register access (the MMIO
//! abstraction that lets one driver talk to QEMU's SMMU at EL2 and to
//! warden-archmodel's model in tests) and memory for the structures the
//! SMMU reads (stream table, queues), with the cache maintenance a
//! non-coherent SMMU needs.

use warden_iommu::IommuError;

/// Register access to one SMMU's frame. Offsets are from its base; 64-bit
/// registers take 64-bit accesses. Implementations are single-copy atomic
/// device accesses (at EL2, volatile loads and stores to a Device-nGnRE
/// mapping of the frame Warden owns).
pub trait Mmio {
    /// Read a 32-bit register.
    fn read32(&mut self, off: u64) -> u32;
    /// Write a 32-bit register.
    fn write32(&mut self, off: u64, val: u32);
    /// Read a 64-bit register.
    fn read64(&mut self, off: u64) -> u64;
    /// Write a 64-bit register.
    fn write64(&mut self, off: u64, val: u64);
    /// Pause between two polls of a register (at EL2 a `yield`/`wfe`-free
    /// spin hint); the driver bounds the number of polls, not time.
    fn relax(&mut self) {}
}

/// Cache maintenance to the point of coherency, by physical address: what
/// a non-coherent SMMU (IDR0.COHACC = 0) needs so that it reads what the
/// CPU wrote and the CPU reads what it wrote.
pub trait CacheMaint {
    /// Clean `[pa, pa + len)` to the PoC (after CPU writes, before the SMMU
    /// reads).
    fn clean(&mut self, pa: u64, len: u64);
    /// Invalidate `[pa, pa + len)` (before the CPU reads what the SMMU
    /// wrote).
    fn invalidate(&mut self, pa: u64, len: u64);
}

/// Allocate a structure of `bytes` (stream table, level-2 table, queue):
/// whole pages, a power of two of them so the allocator aligns it to its
/// size as the base registers require. The allocator zeroed it with CPU
/// stores; for a non-coherent SMMU those zeroes are cleaned to memory here,
/// once, so that neither stale memory nor a later eviction of the zeroing
/// lines can reach the SMMU.
pub fn alloc_structure<D: SmmuMem>(mem: &mut D, bytes: u64, coherent: bool) -> Result<u64, IommuError> {
    let pages = (bytes.div_ceil(4096) as usize).next_power_of_two();
    let pa = mem.alloc(pages).ok_or(IommuError::NoMem)?;
    if !coherent {
        mem.clean(pa, pages as u64 * 4096);
    }
    Ok(pa)
}

/// Memory for the SMMU's structures, owned by Warden.
pub trait SmmuMem: CacheMaint {
    /// `pages` zeroed, physically contiguous pages aligned to their total
    /// size (a power of two), or `None`.
    fn alloc(&mut self, pages: usize) -> Option<u64>;
    /// Read the 64-bit word at `pa`.
    fn read64(&self, pa: u64) -> u64;
    /// Write the 64-bit word at `pa`.
    fn write64(&mut self, pa: u64, val: u64);
    /// Make earlier writes visible to the SMMU before a later register
    /// write (at EL2, `DSB ST`; a coherent SMMU then sees them, a
    /// non-coherent one after [`CacheMaint::clean`]).
    fn publish(&mut self);
}
