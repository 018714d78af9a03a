//! What Warden needs to know about the machine, read from the device tree:
//! RAM, the console UART, the SMMU, the GIC, the CPUs and the PSCI conduit.
//!
//! The result is a plain copy ([`Platform`]) that does not borrow the blob,
//! so the tree need not stay mapped.
//!
//! Addresses are taken from `reg` as they are, without `ranges`
//! translation; only direct children of the root are considered for
//! devices and memory (which is where QEMU's virt machine puts them).

use crate::fdt::{Fdt, FdtError, Node};

/// Most RAM ranges recorded.
pub const MAX_MEMORY: usize = 8;
/// Most GIC redistributor regions recorded.
pub const MAX_GIC_REGIONS: usize = 4;
/// Most CPU MPIDRs recorded.
pub const MAX_CPU_IDS: usize = 8;
/// Longest `/chosen/bootargs` recorded (longer ones are truncated).
pub const MAX_BOOTARGS: usize = 256;

/// A physical address range.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Range {
    /// First byte.
    pub base: u64,
    /// Length in bytes.
    pub size: u64,
}

impl Range {
    /// A range from base and size.
    pub const fn new(base: u64, size: u64) -> Self {
        Range { base, size }
    }

    /// One past the last byte (saturating).
    pub fn end(&self) -> u64 {
        self.base.saturating_add(self.size)
    }

    /// Whether `other` lies entirely inside `self`.
    pub fn contains(&self, other: &Range) -> bool {
        self.base <= other.base && other.end() <= self.end()
    }

    /// Whether the two ranges share a byte.
    pub fn overlaps(&self, other: &Range) -> bool {
        self.size != 0 && other.size != 0 && self.base < other.end() && other.base < self.end()
    }
}

/// How PSCI calls reach the firmware.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PsciConduit {
    /// Secure monitor call (EL3 or, under QEMU without EL3, QEMU itself).
    Smc,
    /// Hypervisor call: from EL2 this traps to Warden itself, so Warden
    /// cannot use it.
    Hvc,
}

impl PsciConduit {
    /// The DTB spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            PsciConduit::Smc => "smc",
            PsciConduit::Hvc => "hvc",
        }
    }
}

/// Why the device tree did not describe a usable machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlatformError {
    /// The blob itself is malformed.
    Fdt(FdtError),
    /// No memory node with a non-empty range.
    NoMemory,
    /// More RAM ranges than [`MAX_MEMORY`].
    TooManyMemoryRanges,
    /// No enabled `arm,pl011` UART.
    NoUart,
    /// No PSCI node, or an unknown method.
    NoPsci,
}

impl From<FdtError> for PlatformError {
    fn from(e: FdtError) -> Self {
        PlatformError::Fdt(e)
    }
}

impl PlatformError {
    /// A short description for the console.
    pub fn as_str(self) -> &'static str {
        match self {
            PlatformError::Fdt(e) => e.as_str(),
            PlatformError::NoMemory => "no memory node",
            PlatformError::TooManyMemoryRanges => "too many memory ranges",
            PlatformError::NoUart => "no arm,pl011 UART",
            PlatformError::NoPsci => "no usable PSCI node",
        }
    }
}

/// The machine as the device tree describes it.
#[derive(Clone, Copy, Debug)]
pub struct Platform {
    memory: [Range; MAX_MEMORY],
    memory_count: usize,
    /// The console: the first enabled `arm,pl011`.
    pub uart: Range,
    /// The first enabled `arm,smmu-v3`, if any.
    pub smmu: Option<Range>,
    /// The GICv3 distributor, if an `arm,gic-v3` node exists.
    pub gic_dist: Option<Range>,
    gic_redist: [Range; MAX_GIC_REGIONS],
    gic_redist_count: usize,
    /// PSCI conduit named by the `psci` node's `method`.
    pub psci: PsciConduit,
    /// The PSCI node's most specific `compatible` (e.g. `arm,psci-1.0`).
    psci_compat: [u8; 32],
    psci_compat_len: usize,
    /// Number of `cpu` nodes under `/cpus`.
    pub cpus: usize,
    mpidr: [u64; MAX_CPU_IDS],
    mpidr_count: usize,
    bootargs: [u8; MAX_BOOTARGS],
    bootargs_len: usize,
}

impl Platform {
    /// Read the machine description from a device tree blob.
    pub fn from_fdt(blob: &[u8]) -> Result<Self, PlatformError> {
        let fdt = Fdt::new(blob)?;
        let mut p = Platform {
            memory: [Range::default(); MAX_MEMORY],
            memory_count: 0,
            uart: Range::default(),
            smmu: None,
            gic_dist: None,
            gic_redist: [Range::default(); MAX_GIC_REGIONS],
            gic_redist_count: 0,
            psci: PsciConduit::Smc,
            psci_compat: [0; 32],
            psci_compat_len: 0,
            cpus: 0,
            mpidr: [0; MAX_CPU_IDS],
            mpidr_count: 0,
            bootargs: [0; MAX_BOOTARGS],
            bootargs_len: 0,
        };
        let mut uart = None;
        let mut psci = None;
        let mut in_cpus = false;
        for node in fdt.nodes() {
            let node = node?;
            if node.depth == 1 {
                in_cpus = node.name == b"cpus";
            }
            if node.depth == 2 && in_cpus && node.prop_str("device_type") == Some(b"cpu") {
                p.cpus += 1;
                if let Some((id, _)) = node.reg()?.and_then(|mut r| r.next()) {
                    if p.mpidr_count < MAX_CPU_IDS {
                        p.mpidr[p.mpidr_count] = id;
                        p.mpidr_count += 1;
                    }
                }
            }
            if node.depth != 1 || !node.is_enabled() {
                continue;
            }
            if node.name == b"chosen" {
                if let Some(args) = node.prop_str("bootargs") {
                    let n = args.len().min(MAX_BOOTARGS);
                    p.bootargs[..n].copy_from_slice(&args[..n]);
                    p.bootargs_len = n;
                }
            } else if node.prop_str("device_type") == Some(b"memory") {
                p.add_memory(&node)?;
            } else if node.is_compatible("arm,pl011") {
                if uart.is_none() {
                    uart = first_reg(&node)?;
                }
            } else if node.is_compatible("arm,smmu-v3") {
                if p.smmu.is_none() {
                    p.smmu = first_reg(&node)?;
                }
            } else if node.is_compatible("arm,gic-v3") {
                if p.gic_dist.is_none() {
                    p.add_gic(&node)?;
                }
            } else if node.base_name() == b"psci" || node.is_compatible("arm,psci") {
                psci = Some(node);
            }
        }
        if p.memory_count == 0 {
            return Err(PlatformError::NoMemory);
        }
        p.uart = uart.ok_or(PlatformError::NoUart)?;
        let psci = psci.ok_or(PlatformError::NoPsci)?;
        p.psci = match psci.prop_str("method") {
            Some(b"smc") => PsciConduit::Smc,
            Some(b"hvc") => PsciConduit::Hvc,
            _ => return Err(PlatformError::NoPsci),
        };
        if let Some(c) = psci.prop_str("compatible") {
            let n = c.len().min(p.psci_compat.len());
            p.psci_compat[..n].copy_from_slice(&c[..n]);
            p.psci_compat_len = n;
        }
        Ok(p)
    }

    fn add_memory(&mut self, node: &Node) -> Result<(), PlatformError> {
        let Some(reg) = node.reg()? else {
            return Ok(());
        };
        for (base, size) in reg {
            if size == 0 {
                continue;
            }
            if self.memory_count == MAX_MEMORY {
                return Err(PlatformError::TooManyMemoryRanges);
            }
            self.memory[self.memory_count] = Range::new(base, size);
            self.memory_count += 1;
        }
        Ok(())
    }

    fn add_gic(&mut self, node: &Node) -> Result<(), PlatformError> {
        let Some(mut reg) = node.reg()? else {
            return Ok(());
        };
        self.gic_dist = reg.next().map(|(b, s)| Range::new(b, s));
        // Then the redistributor regions (GICC/GICH/GICV may follow;
        // `#redistributor-regions` says how many are redistributors).
        let n = node.prop_u32("#redistributor-regions").unwrap_or(1) as usize;
        for (base, size) in reg.take(n.min(MAX_GIC_REGIONS)) {
            self.gic_redist[self.gic_redist_count] = Range::new(base, size);
            self.gic_redist_count += 1;
        }
        Ok(())
    }

    /// The RAM ranges, in tree order.
    pub fn memory(&self) -> &[Range] {
        &self.memory[..self.memory_count]
    }

    /// The MPIDR (`reg`) of each `cpu` node, in tree order (at most
    /// [`MAX_CPU_IDS`]).
    pub fn cpu_mpidrs(&self) -> &[u64] {
        &self.mpidr[..self.mpidr_count]
    }

    /// The GICv3 redistributor regions.
    pub fn gic_redist(&self) -> &[Range] {
        &self.gic_redist[..self.gic_redist_count]
    }

    /// The PSCI node's first `compatible` string (lossy for non-UTF-8).
    pub fn psci_compatible(&self) -> &str {
        as_str(&self.psci_compat[..self.psci_compat_len])
    }

    /// `/chosen/bootargs` (lossy for non-UTF-8; empty if absent).
    pub fn bootargs(&self) -> &str {
        as_str(&self.bootargs[..self.bootargs_len])
    }

    /// Whether `bootargs` contains the whitespace-separated word `word`.
    pub fn has_bootarg(&self, word: &str) -> bool {
        self.bootargs().split_ascii_whitespace().any(|w| w == word)
    }

    /// The number after `key=` in `bootargs` (hexadecimal with `0x`,
    /// else decimal); `None` if absent or malformed.
    pub fn bootarg_u64(&self, key: &str) -> Option<u64> {
        let value = self
            .bootargs()
            .split_ascii_whitespace()
            .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))?;
        match value.strip_prefix("0x").or_else(|| value.strip_prefix("0X")) {
            Some(hex) => u64::from_str_radix(hex, 16).ok(),
            None => value.parse().ok(),
        }
    }

    /// Whether `range` lies entirely inside one RAM range.
    pub fn is_ram(&self, range: &Range) -> bool {
        self.memory().iter().any(|m| m.contains(range))
    }

    /// Total RAM in bytes.
    pub fn ram_total(&self) -> u64 {
        self.memory().iter().fold(0u64, |a, m| a.saturating_add(m.size))
    }
}

/// The longest valid UTF-8 prefix of `b`.
fn as_str(b: &[u8]) -> &str {
    match core::str::from_utf8(b) {
        Ok(s) => s,
        // Cannot fail: the prefix up to valid_up_to() is valid UTF-8.
        Err(e) => core::str::from_utf8(&b[..e.valid_up_to()]).unwrap_or(""),
    }
}

fn first_reg(node: &Node) -> Result<Option<Range>, FdtError> {
    Ok(node.reg()?.and_then(|mut r| r.next()).map(|(b, s)| Range::new(b, s)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const QEMU_VIRT: &[u8] = include_bytes!("testdata/qemu-virt-gicv3-smmuv3.dtb");

    #[test]
    fn qemu_virt_platform() {
        let p = Platform::from_fdt(QEMU_VIRT).unwrap();
        assert_eq!(p.memory(), &[Range::new(0x4000_0000, 0x4000_0000)]);
        assert_eq!(p.uart, Range::new(0x0900_0000, 0x1000));
        assert_eq!(p.smmu, Some(Range::new(0x0905_0000, 0x2_0000)));
        assert_eq!(p.gic_dist, Some(Range::new(0x0800_0000, 0x1_0000)));
        assert_eq!(p.gic_redist(), &[Range::new(0x080a_0000, 0xf6_0000)]);
        assert_eq!(p.psci, PsciConduit::Smc);
        assert_eq!(p.psci_compatible(), "arm,psci-1.0");
        assert_eq!(p.cpus, 2);
        assert_eq!(p.cpu_mpidrs(), &[0, 1]);
        assert_eq!(p.bootargs(), "");
        assert_eq!(p.ram_total(), 1 << 30);
        assert!(p.is_ram(&Range::new(0x4020_0000, 0x1000)));
        assert!(!p.is_ram(&Range::new(0x3fff_f000, 0x2000)));
    }

    #[test]
    fn bootarg_numbers() {
        let mut p = Platform::from_fdt(QEMU_VIRT).unwrap();
        let args = b"console=x warden.host=0x44000000 n=12 bad=0xzz warden.hostx=1";
        p.bootargs[..args.len()].copy_from_slice(args);
        p.bootargs_len = args.len();
        assert_eq!(p.bootarg_u64("warden.host"), Some(0x4400_0000));
        assert_eq!(p.bootarg_u64("n"), Some(12));
        assert_eq!(p.bootarg_u64("bad"), None);
        assert_eq!(p.bootarg_u64("console"), None);
        assert_eq!(p.bootarg_u64("missing"), None);
    }

    #[test]
    fn ranges() {
        let a = Range::new(0x1000, 0x2000);
        assert!(a.overlaps(&Range::new(0x2fff, 1)));
        assert!(!a.overlaps(&Range::new(0x3000, 1)));
        assert!(!a.overlaps(&Range::new(0x1000, 0)));
        assert!(a.contains(&Range::new(0x1000, 0x2000)));
        assert!(!a.contains(&Range::new(0x1000, 0x2001)));
        assert_eq!(Range::new(u64::MAX, 2).end(), u64::MAX);
    }

    #[test]
    fn garbage_never_panics() {
        let mut b = QEMU_VIRT.to_vec();
        for i in (0..b.len()).step_by(3) {
            let orig = b[i];
            b[i] = [0x00, 0xff, orig ^ 0x10][(i / 3) % 3];
            let _ = Platform::from_fdt(&b);
            b[i] = orig;
        }
    }

    #[test]
    fn missing_uart_is_an_error() {
        // Rename the compatible string "arm,pl011" in place.
        let mut b = QEMU_VIRT.to_vec();
        let pos = b.windows(9).position(|w| w == b"arm,pl011").unwrap();
        b[pos] = b'x';
        assert_eq!(Platform::from_fdt(&b).unwrap_err(), PlatformError::NoUart);
    }
}
