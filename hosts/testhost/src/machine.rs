//! What the test host knows about the machine: its device tree as Warden
//! patched it (Warden's memory and the SMMU taken out), read with
//! warden-hyp's own reader, plus the few QEMU `virt` facts the hostile
//! scenarios need because the tree no longer shows them (where RAM starts,
//! where the SMMU sits).
//!
//! warden-hyp's [`Platform`] gives RAM, the UART and the PSCI conduit; this
//! module adds what only the host needs: each CPU's MPIDR (for CPU_ON), the
//! generic PCIe host bridge (ECAM and its 32-bit memory window, for the edu
//! device), the memory reservations (kept out of the pages the scenarios
//! touch) and the gap in RAM that must be Warden's.

use warden_hyp::fdt::{Fdt, FdtError, Node};
use warden_hyp::platform::{Platform, PlatformError, Range};

/// Most CPUs the test host drives (one stack each in the image).
pub const MAX_CPUS: usize = 4;
/// Most memory reservations recorded.
pub const MAX_RESERVED: usize = 8;
/// Where QEMU's `virt` machine starts RAM: the gap Warden leaves in the
/// host's memory map is found relative to it.
pub const QEMU_VIRT_RAM_BASE: u64 = 0x4000_0000;
/// The SMMUv3's register frame on QEMU's `virt` machine (the host's tree
/// no longer describes it; Warden owns it).
pub const QEMU_VIRT_SMMU: u64 = 0x0905_0000;
/// Affinity fields of MPIDR_EL1 (Aff3 and Aff2..Aff0).
pub const MPIDR_AFFINITY_MASK: u64 = 0xff_00ff_ffff;

/// The bus addresses a PCI memory window maps, and where the CPU sees them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PciWindow {
    /// CPU physical address of the window.
    pub cpu: u64,
    /// PCI bus address of the window's start.
    pub pci: u64,
    /// Length in bytes.
    pub size: u64,
}

/// One `iommu-map` entry: requester IDs `rid_base..rid_base + len` are
/// streams `stream_base..` of the IOMMU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IommuMap {
    /// First requester ID.
    pub rid_base: u32,
    /// The IOMMU's stream ID for `rid_base`.
    pub stream_base: u32,
    /// How many requester IDs.
    pub len: u32,
}

/// A `pci-host-ecam-generic` host bridge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PciHost {
    /// The ECAM configuration space (bus 0 at its start).
    pub ecam: Range,
    /// The first bus number the ECAM covers (`bus-range`).
    pub first_bus: u32,
    /// The 32-bit non-prefetchable memory window from `ranges`.
    pub mmio32: Option<PciWindow>,
    /// The first `iommu-map` entry, if the tree still has one (Warden
    /// removes it with the SMMU).
    pub iommu_map: Option<IommuMap>,
}

impl PciHost {
    /// The stream ID requester `rid` has on the IOMMU: from `iommu-map`
    /// if present, else the requester ID itself (QEMU `virt` maps bus 0
    /// one to one).
    pub fn stream_id(&self, rid: u32) -> u32 {
        match self.iommu_map {
            Some(m) if rid >= m.rid_base && rid - m.rid_base < m.len => m.stream_base + (rid - m.rid_base),
            _ => rid,
        }
    }
}

/// The machine as the host's device tree describes it.
#[derive(Clone, Copy, Debug)]
pub struct Machine {
    /// RAM, UART, PSCI conduit, CPU count (warden-hyp's reading).
    pub platform: Platform,
    /// MPIDR affinity of the first [`MAX_CPUS`] CPUs, in tree order.
    mpidrs: [u64; MAX_CPUS],
    mpidr_count: usize,
    /// The PCIe host bridge, if any.
    pub pci: Option<PciHost>,
    reserved: [Range; MAX_RESERVED],
    reserved_count: usize,
    /// Reservations beyond [`MAX_RESERVED`] (not recorded: the caller must
    /// not trust the free-page map then).
    pub reserved_dropped: usize,
    /// The blob itself (its address and `totalsize`).
    pub dtb: Range,
}

fn be32(b: &[u8], off: usize) -> Option<u32> {
    let s = b.get(off..off.checked_add(4)?)?;
    Some(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

fn be64(b: &[u8], off: usize) -> Option<u64> {
    Some((be32(b, off)? as u64) << 32 | be32(b, off + 4)? as u64)
}

/// `cells` big-endian cells at `off` as one number (1 or 2 cells; more are
/// folded, keeping the low 64 bits).
fn cells(b: &[u8], off: usize, cells: usize) -> Option<u64> {
    (0..cells).try_fold(0u64, |acc, i| Some(acc << 32 | be32(b, off + 4 * i)? as u64))
}

/// The `totalsize` a device tree header at the start of `header` claims
/// (for sizing the slice before the blob is validated), if the magic is
/// right.
pub fn dtb_total_size(header: &[u8]) -> Option<usize> {
    (be32(header, 0)? == warden_hyp::fdt::FDT_MAGIC).then_some(be32(header, 4)? as usize)
}

impl Machine {
    /// Read the machine from the blob at physical address `addr`.
    pub fn from_fdt(blob: &[u8], addr: u64) -> Result<Self, PlatformError> {
        let platform = Platform::from_fdt(blob)?;
        let fdt = Fdt::new(blob)?;
        let mut m = Machine {
            platform,
            mpidrs: [0; MAX_CPUS],
            mpidr_count: 0,
            pci: None,
            reserved: [Range::default(); MAX_RESERVED],
            reserved_count: 0,
            reserved_dropped: 0,
            dtb: Range::new(addr, fdt.total_size() as u64),
        };
        m.read_memreserve(blob);
        let mut parent = [&b""[..]; 2];
        for node in fdt.nodes() {
            let node = node?;
            if node.depth == 1 {
                parent[0] = node.name;
            }
            if node.depth == 2 && parent[0] == b"cpus" && node.prop_str("device_type") == Some(b"cpu") {
                if let Some((mpidr, _)) = node.reg()?.and_then(|mut r| r.next()) {
                    if m.mpidr_count < MAX_CPUS {
                        m.mpidrs[m.mpidr_count] = mpidr & MPIDR_AFFINITY_MASK;
                        m.mpidr_count += 1;
                    }
                }
            }
            if node.depth == 2 && parent[0] == b"reserved-memory" && node.is_enabled() {
                if let Some(reg) = node.reg()? {
                    for (base, size) in reg {
                        m.add_reserved(Range::new(base, size));
                    }
                }
            }
            if node.depth == 1 && m.pci.is_none() && node.is_enabled() && node.is_compatible("pci-host-ecam-generic") {
                m.pci = pci_host(&node)?;
            }
        }
        Ok(m)
    }

    /// The memory reservation block: `(address, size)` pairs of big-endian
    /// u64 up to a `(0, 0)` entry (devicetree spec 5.3).
    fn read_memreserve(&mut self, blob: &[u8]) {
        let Some(mut off) = be32(blob, 16).map(|o| o as usize) else {
            return;
        };
        // A well-formed block ends long before this; a malformed one must
        // not make the loop run away.
        for _ in 0..64 {
            let (Some(base), Some(size)) = (be64(blob, off), be64(blob, off + 8)) else {
                return;
            };
            if base == 0 && size == 0 {
                return;
            }
            self.add_reserved(Range::new(base, size));
            off += 16;
        }
    }

    fn add_reserved(&mut self, r: Range) {
        if r.size == 0 {
            return;
        }
        if self.reserved_count == MAX_RESERVED {
            self.reserved_dropped += 1;
        } else {
            self.reserved[self.reserved_count] = r;
            self.reserved_count += 1;
        }
    }

    /// The host's RAM ranges.
    pub fn memory(&self) -> &[Range] {
        self.platform.memory()
    }

    /// Memory reservations (`/memreserve/` and `/reserved-memory`).
    pub fn reserved(&self) -> &[Range] {
        &self.reserved[..self.reserved_count]
    }

    /// The MPIDRs of the CPUs the test host drives (tree order).
    pub fn mpidrs(&self) -> &[u64] {
        &self.mpidrs[..self.mpidr_count]
    }

    /// The index of the CPU with affinity `mpidr`, if listed.
    pub fn cpu_index(&self, mpidr: u64) -> Option<usize> {
        let mpidr = mpidr & MPIDR_AFFINITY_MASK;
        self.mpidrs().iter().position(|&m| m == mpidr)
    }

    /// The first gap in RAM: starting at [`QEMU_VIRT_RAM_BASE`], the lowest
    /// range that no memory range covers and that ends below the end of
    /// the highest one. On QEMU `virt` booted by Warden this is Warden's
    /// memory (its image is at RAM base + 2 MiB); standalone there is none.
    pub fn warden_gap(&self) -> Option<Range> {
        first_gap(self.memory())
    }
}

/// The lowest range at or above [`QEMU_VIRT_RAM_BASE`] that no range of
/// `memory` covers and that ends below the end of the highest one.
pub fn first_gap(memory: &[Range]) -> Option<Range> {
    let end = memory.iter().map(Range::end).max()?;
    let mut cursor = QEMU_VIRT_RAM_BASE;
    while cursor < end {
        // A range covering the cursor moves it to that range's end.
        if let Some(r) = memory.iter().find(|r| r.base <= cursor && cursor < r.end()) {
            cursor = r.end();
            continue;
        }
        // Otherwise the gap runs to the next range above the cursor.
        let next = memory
            .iter()
            .map(|r| r.base)
            .filter(|&b| b > cursor)
            .min()
            .unwrap_or(end);
        return Some(Range::new(cursor, next - cursor));
    }
    None
}

/// The host bridge a `pci-host-ecam-generic` node describes.
fn pci_host(node: &Node) -> Result<Option<PciHost>, FdtError> {
    let Some((base, size)) = node.reg()?.and_then(|mut r| r.next()) else {
        return Ok(None);
    };
    let first_bus = node.prop("bus-range").and_then(|v| be32(v, 0)).unwrap_or(0);
    // `ranges`: (child address: #address-cells of this node, 3 for PCI;
    // parent address: the parent's #address-cells; size: this node's
    // #size-cells). The child's first cell says the space: bits 25:24 =
    // 0b10 for 32-bit memory.
    let child = node.prop_u32("#address-cells").unwrap_or(3) as usize;
    let parent = node.addr_cells as usize;
    let size_cells = node.prop_u32("#size-cells").unwrap_or(2) as usize;
    let mut mmio32 = None;
    if let (Some(ranges), true) = (node.prop("ranges"), child == 3 && parent <= 2 && size_cells <= 2) {
        let entry = 4 * (child + parent + size_cells);
        for e in ranges.chunks_exact(entry) {
            let (Some(hi), Some(pci), Some(cpu), Some(len)) = (
                be32(e, 0),
                cells(e, 4, 2),
                cells(e, 12, parent),
                cells(e, 12 + 4 * parent, size_cells),
            ) else {
                continue;
            };
            if (hi >> 24) & 3 == 0b10 && mmio32.is_none() {
                mmio32 = Some(PciWindow { cpu, pci, size: len });
            }
        }
    }
    // `iommu-map`: (rid-base, iommu phandle, iommu-base, length), one
    // cell each for an SMMUv3 (#iommu-cells = 1).
    let iommu_map = node.prop("iommu-map").and_then(|v| {
        Some(IommuMap {
            rid_base: be32(v, 0)?,
            stream_base: be32(v, 8)?,
            len: be32(v, 12)?,
        })
    });
    Ok(Some(PciHost {
        ecam: Range::new(base, size),
        first_bus,
        mmio32,
        iommu_map,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const QEMU_VIRT: &[u8] = include_bytes!("../../../hyp/src/testdata/qemu-virt-gicv3-smmuv3.dtb");

    #[test]
    fn reads_qemu_virt() {
        assert_eq!(dtb_total_size(QEMU_VIRT), Some(QEMU_VIRT.len()));
        let m = Machine::from_fdt(QEMU_VIRT, 0x4800_0000).unwrap();
        assert_eq!(m.mpidrs(), &[0, 1]);
        assert_eq!(m.cpu_index(0x8000_0001), Some(1));
        assert_eq!(m.cpu_index(7), None);
        assert_eq!(m.dtb, Range::new(0x4800_0000, QEMU_VIRT.len() as u64));
        let pci = m.pci.unwrap();
        assert_eq!(pci.ecam, Range::new(0x40_1000_0000, 0x1000_0000));
        assert_eq!(pci.first_bus, 0);
        assert_eq!(
            pci.mmio32,
            Some(PciWindow {
                cpu: 0x1000_0000,
                pci: 0x1000_0000,
                size: 0x2eff_0000
            })
        );
        assert_eq!(
            pci.iommu_map,
            Some(IommuMap {
                rid_base: 0,
                stream_base: 0,
                len: 0x10000
            })
        );
        assert_eq!(pci.stream_id(0x10), 0x10);
        // The unpatched tree has all of RAM: no gap.
        assert_eq!(m.warden_gap(), None);
        assert!(m.reserved().is_empty());
    }

    #[test]
    fn gap_is_the_first_hole_above_ram_base() {
        let r = Range::new;
        // Warden at 0x40200000..0x40800000, the host around it.
        let mem = [r(0x4000_0000, 0x20_0000), r(0x4080_0000, 0x3f80_0000)];
        assert_eq!(first_gap(&mem), Some(r(0x4020_0000, 0x60_0000)));
        // Tree order does not matter.
        let mem = [r(0x4080_0000, 0x3f80_0000), r(0x4000_0000, 0x20_0000)];
        assert_eq!(first_gap(&mem), Some(r(0x4020_0000, 0x60_0000)));
        // Host RAM only after Warden.
        assert_eq!(first_gap(&[r(0x4080_0000, 0x100)]), Some(r(0x4000_0000, 0x80_0000)));
        // All of RAM, or nothing: no gap.
        assert_eq!(first_gap(&[r(0x4000_0000, 0x4000_0000)]), None);
        assert_eq!(first_gap(&[]), None);
        // A trailing hole is not a gap (RAM may simply end there).
        assert_eq!(first_gap(&[r(0x4000_0000, 0x1000)]), None);
    }
}
