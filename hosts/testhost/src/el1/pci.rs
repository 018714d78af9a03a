//! Just enough PCI to drive QEMU's `edu` device: ECAM configuration
//! accesses on the first bus, BAR0 placed in the host bridge's 32-bit
//! window, and the edu DMA engine.
//!
//! edu (QEMU hw/misc/edu.c): BAR0 is 1 MiB of registers, 32-bit memory.
//! DMA registers: 0x80 source, 0x88 destination, 0x90 count, 0x98 command
//! (bit 0 start, bit 1 direction: 1 = from the device's buffer to RAM,
//! bit 2 raise an interrupt). The device's 4 KiB buffer is at device
//! address 0x40000 and is not reachable through BAR0, so filling it takes
//! a DMA from RAM. A transfer runs from a QEMU timer 100 ms (virtual time)
//! after the command is written; the command's start bit clears when it is
//! done, blocked or not (a transfer the IOMMU refuses just does not land).

use warden_testhost::machine::{PciHost, PciWindow};

use super::cpu;

/// QEMU's vendor ID and edu's device ID.
pub const EDU_ID: u32 = 0x11e8_1234;
/// edu's identification register value (version 1.0, 0xed).
const EDU_IDENT: u32 = 0x0100_00ed;
/// The device address of edu's DMA buffer, and its size.
pub const EDU_BUF: u64 = 0x4_0000;
pub const EDU_BUF_SIZE: u64 = 4096;

const CFG_ID: u64 = 0x00;
const CFG_COMMAND: u64 = 0x04;
const CFG_BAR0: u64 = 0x10;
/// Command register: memory space, bus master.
const CMD_MEMORY: u16 = 1 << 1;
const CMD_MASTER: u16 = 1 << 2;

const EDU_LIVENESS: u64 = 0x04;
const DMA_SRC: u64 = 0x80;
const DMA_DST: u64 = 0x88;
const DMA_CNT: u64 = 0x90;
const DMA_CMD: u64 = 0x98;
const DMA_START: u64 = 1 << 0;
const DMA_TO_RAM: u64 = 1 << 1;

/// How long a transfer may take (QEMU's timer is 100 ms).
const DMA_TIMEOUT_MS: u64 = 3000;

/// A function on the ECAM's first bus.
#[derive(Clone, Copy, Debug)]
pub struct Function {
    cfg: u64,
    /// Bus, device, function.
    pub bdf: (u32, u32, u32),
}

impl Function {
    /// The PCI requester ID (bus << 8 | device << 3 | function).
    pub fn rid(&self) -> u32 {
        self.bdf.0 << 8 | self.bdf.1 << 3 | self.bdf.2
    }

    fn read32(&self, off: u64) -> u32 {
        // SAFETY: an aligned register of this function's 4 KiB ECAM
        // window, identity-mapped as device memory; reads have no side
        // effects in configuration space.
        unsafe { ((self.cfg + off) as *const u32).read_volatile() }
    }

    fn write32(&self, off: u64, v: u32) {
        // SAFETY: as for read32; the writes the callers make (BAR,
        // command) only configure this function.
        unsafe { ((self.cfg + off) as *mut u32).write_volatile(v) }
    }

    fn read16(&self, off: u64) -> u16 {
        // SAFETY: as for read32 (ECAM takes 16-bit accesses).
        unsafe { ((self.cfg + off) as *const u16).read_volatile() }
    }

    fn write16(&self, off: u64, v: u16) {
        // SAFETY: as for write32.
        unsafe { ((self.cfg + off) as *mut u16).write_volatile(v) }
    }
}

/// Find the first function with vendor/device `id` on the ECAM's first bus.
pub fn find(host: &PciHost, id: u32) -> Option<Function> {
    for dev in 0..32u32 {
        let f = Function {
            cfg: host.ecam.base + ((dev as u64) << 15),
            bdf: (host.first_bus, dev, 0),
        };
        if f.cfg + 4096 > host.ecam.end() {
            break;
        }
        if f.read32(CFG_ID) == id {
            return Some(f);
        }
    }
    None
}

/// A PCI device's BAR0 as the CPU sees it.
#[derive(Clone, Copy, Debug)]
pub struct Bar {
    /// CPU physical address.
    pub cpu: u64,
    /// Size in bytes.
    pub size: u64,
}

/// Size BAR0 (32-bit memory), place it at the start of `window` and
/// enable memory decoding and bus mastering.
pub fn enable(f: &Function, window: &PciWindow) -> Result<Bar, &'static str> {
    let cmd = f.read16(CFG_COMMAND);
    f.write16(CFG_COMMAND, cmd & !(CMD_MEMORY | CMD_MASTER));
    f.write32(CFG_BAR0, u32::MAX);
    let probe = f.read32(CFG_BAR0);
    if probe & 1 != 0 {
        return Err("BAR0 is an I/O BAR");
    }
    let size = (!(probe & !0xf)).wrapping_add(1) as u64;
    if size == 0 || !size.is_power_of_two() {
        return Err("BAR0 has no size");
    }
    // The window's start rounded up to the BAR's alignment (its size).
    let pci = (window.pci + size - 1) & !(size - 1);
    if pci + size > window.pci + window.size || pci + size > 1 << 32 {
        return Err("BAR0 does not fit the 32-bit window");
    }
    f.write32(CFG_BAR0, pci as u32 | (probe & 0xf));
    if (probe >> 1) & 3 == 0b10 {
        // A 64-bit BAR: the upper half is zero (32-bit window).
        f.write32(CFG_BAR0 + 4, 0);
    }
    f.write16(CFG_COMMAND, cmd | CMD_MEMORY | CMD_MASTER);
    Ok(Bar {
        cpu: window.cpu + (pci - window.pci),
        size,
    })
}

/// The edu device behind an enabled BAR0.
pub struct Edu {
    bar: Bar,
}

/// How a transfer ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dma {
    /// The start bit cleared (the transfer ran or was refused).
    Done,
    /// The start bit stayed set past the timeout.
    TimedOut,
}

impl Edu {
    /// The device at `bar`, if its identification register says edu.
    pub fn new(bar: Bar) -> Result<Self, u32> {
        let e = Edu { bar };
        match e.read32(0) {
            EDU_IDENT => Ok(e),
            other => Err(other),
        }
    }

    fn read32(&self, off: u64) -> u32 {
        // SAFETY: an edu register inside BAR0, which `enable` placed in the
        // host bridge's window (device memory in the EL1 map).
        unsafe { ((self.bar.cpu + off) as *const u32).read_volatile() }
    }

    fn write32(&self, off: u64, v: u32) {
        // SAFETY: as for read32; edu's registers only program edu.
        unsafe { ((self.bar.cpu + off) as *mut u32).write_volatile(v) }
    }

    fn read64(&self, off: u64) -> u64 {
        // SAFETY: as for read32 (edu takes 8-byte accesses at 0x80..).
        unsafe { ((self.bar.cpu + off) as *const u64).read_volatile() }
    }

    fn write64(&self, off: u64, v: u64) {
        // SAFETY: as for write32. Programming a DMA makes the device write
        // RAM: the scenario chooses only destinations it owns or that must
        // be refused.
        unsafe { ((self.bar.cpu + off) as *mut u64).write_volatile(v) }
    }

    /// Whether the liveness register inverts what is written to it.
    pub fn alive(&self) -> bool {
        self.write32(EDU_LIVENESS, 0x1234_5678);
        self.read32(EDU_LIVENESS) == !0x1234_5678
    }

    fn transfer(&self, src: u64, dst: u64, len: u64, to_ram: bool) -> Dma {
        self.write64(DMA_SRC, src);
        self.write64(DMA_DST, dst);
        self.write64(DMA_CNT, len);
        self.write64(DMA_CMD, DMA_START | if to_ram { DMA_TO_RAM } else { 0 });
        let deadline = cpu::deadline_ms(DMA_TIMEOUT_MS);
        while self.read64(DMA_CMD) & DMA_START != 0 {
            if cpu::past(deadline) {
                return Dma::TimedOut;
            }
            core::hint::spin_loop();
        }
        Dma::Done
    }

    /// DMA `len` bytes from bus address `src` into the device's buffer.
    pub fn ram_to_device(&self, src: u64, len: u64) -> Dma {
        self.transfer(src, EDU_BUF, len, false)
    }

    /// DMA `len` bytes of the device's buffer to bus address `dst`.
    pub fn device_to_ram(&self, dst: u64, len: u64) -> Dma {
        self.transfer(EDU_BUF, dst, len, true)
    }
}
