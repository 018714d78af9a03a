//! Device register access: volatile 32-bit reads and writes inside a
//! register block whose address and size were fixed when it was created.

/// A block of memory-mapped device registers.
#[derive(Clone, Copy, Debug)]
pub struct Mmio {
    base: usize,
    size: usize,
}

impl Mmio {
    /// A register block at `[base, base + size)`.
    ///
    /// # Safety
    /// The range must be device MMIO that is accessible (mapped as device
    /// memory, or the MMU is off), that no Rust object lives in, and whose
    /// 32-bit registers may be read and written without breaking memory
    /// safety (e.g. no DMA is programmed through it).
    pub const unsafe fn new(base: usize, size: usize) -> Self {
        Mmio { base, size }
    }

    /// The register's address, if `off` is an aligned offset inside the block.
    fn reg(&self, off: usize) -> *mut u32 {
        assert!(
            off.is_multiple_of(4) && off + 4 <= self.size,
            "MMIO offset {off:#x} outside block"
        );
        (self.base + off) as *mut u32
    }

    /// Read the 32-bit register at `off`.
    pub fn read32(&self, off: usize) -> u32 {
        let reg = self.reg(off);
        // SAFETY: `reg` is an aligned register inside the block, which the
        // creator of `self` promised is accessible MMIO outside any Rust
        // object; volatile keeps the access exactly as written.
        unsafe { reg.read_volatile() }
    }

    /// Write the 32-bit register at `off`.
    pub fn write32(&self, off: usize, val: u32) {
        let reg = self.reg(off);
        // SAFETY: as in `read32`; the creator promised writes to the block
        // cannot break memory safety.
        unsafe { reg.write_volatile(val) }
    }
}
