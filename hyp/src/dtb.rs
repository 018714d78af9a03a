//! The device tree Warden hands to the de-privileged host kernel.
//!
//! The host boots from a copy of the firmware's tree, rewritten so that it
//! describes the machine the host actually gets:
//!
//! * Warden's own memory is not RAM for the host. Every `memory` node
//!   directly under the root gets its `reg` (and `linux,usable-memory`,
//!   which Linux prefers to `reg` when present) rewritten to the original
//!   ranges minus [`HostDtbSpec::hide`]. A range with a hole in the middle
//!   becomes two entries; empty pieces are dropped. A memory node whose
//!   `reg` is left with no RAM at all is removed rather than given an empty
//!   `reg`: Linux rejects an empty `reg` in a node with `numa-node-id` and
//!   then drops the tree's whole NUMA description ("bad property in memory
//!   node"), while a missing node is simply not memory. Removing RAM is
//!   safer than reserving it (`/memreserve/`): reserved RAM stays in the
//!   host's linear map.
//! * Warden owns the SMMU, so every node compatible with `arm,smmu-v3` is
//!   removed with its subtree, and the `iommus`, `iommu-map` and
//!   `iommu-map-mask` properties are removed from every node, since they
//!   would point at the removed SMMU's phandle. The root is never removed:
//!   it is not a device.
//! * Everything else is copied token by token: the memory reservation
//!   block and the strings block byte for byte (rewritten properties keep
//!   their name offsets, so no string is added), nodes and properties with
//!   their values; `FDT_NOP` tokens are dropped and padding is zeroed.
//!
//! The output is a version 17 tree (last compatible version 16) laid out
//! as header, memory reservation block, structure block, strings block.
//!
//! The input comes from the boot firmware. Before anything is copied the
//! whole tree is validated with the [`fdt`](crate::fdt) reader, whose nodes
//! also answer what each node is (compatible, device type, cell counts);
//! the copy then walks the structure block itself, still with every read
//! and every offset checked, so a malformed blob gives an error and never a
//! panic. There is no allocation: the result is written into a caller's
//! buffer.
//!
//! Format: devicetree specification v0.4, chapter 5.

use crate::fdt::{Fdt, FdtError, Node, HEADER_SIZE};
use crate::platform::Range;

/// Most `(address, size)` entries one rewritten memory property may hold
/// (Linux copes with far more, but a tree that fragments RAM this much
/// means the hidden ranges are wrong).
pub const MAX_HOST_RANGES: usize = 16;

const FDT_MAGIC: u32 = crate::fdt::FDT_MAGIC;
const FDT_BEGIN_NODE: u32 = 1;
const FDT_END_NODE: u32 = 2;
const FDT_PROP: u32 = 3;
const FDT_NOP: u32 = 4;
const FDT_END: u32 = 9;

/// The header version written, and the oldest version it stays compatible
/// with (16 lacks only `size_dt_struct`).
const VERSION: u32 = 17;
const LAST_COMP_VERSION: u32 = 16;

/// Compatible string of the nodes removed with their subtree.
const SMMU_COMPATIBLE: &str = "arm,smmu-v3";
/// Properties removed from every node: they name the removed SMMU.
const REMOVED_PROPS: [&[u8]; 3] = [b"iommus", b"iommu-map", b"iommu-map-mask"];
/// Properties of a memory node that list RAM and so lose the hidden ranges.
const MEMORY_PROPS: [&[u8]; 2] = [b"reg", b"linux,usable-memory"];

/// What to change for the host.
#[derive(Clone, Copy, Debug, Default)]
pub struct HostDtbSpec<'a> {
    /// Physical ranges removed from RAM (Warden's memory). They may overlap
    /// each other, lie partly or wholly outside RAM, or be empty.
    pub hide: &'a [Range],
}

/// Why no host tree was produced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DtbError {
    /// The input blob is malformed (including a memory `reg` with cell
    /// counts that cannot describe RAM).
    Fdt(FdtError),
    /// The output buffer is too small, or the result would not fit the
    /// header's 32-bit fields.
    NoSpace,
    /// A rewritten memory property would hold more than
    /// [`MAX_HOST_RANGES`] entries.
    TooManyRanges,
}

impl From<FdtError> for DtbError {
    fn from(e: FdtError) -> Self {
        DtbError::Fdt(e)
    }
}

impl DtbError {
    /// A short description for the console.
    pub fn as_str(self) -> &'static str {
        match self {
            DtbError::Fdt(e) => e.as_str(),
            DtbError::NoSpace => "host device tree buffer too small",
            DtbError::TooManyRanges => "too many host memory ranges",
        }
    }
}

/// Write the host's device tree, `blob` rewritten as the module
/// documentation describes, into `out`; returns its size in bytes.
/// `blob` may be longer than the tree (only `totalsize` bytes are read).
/// On error `out` holds garbage.
pub fn patch_for_host(blob: &[u8], spec: &HostDtbSpec, out: &mut [u8]) -> Result<usize, DtbError> {
    let fdt = Fdt::new(blob)?;
    // Validate the whole structure block first, so that the copy below
    // only meets a tree the reader accepted and its node iterator stays in
    // step with the token walk.
    for node in fdt.nodes() {
        node?;
    }
    let total = blob.get(..fdt.total_size()).ok_or(FdtError::Truncated)?;
    let field = |i: usize| be32(total, 4 * i).ok_or(FdtError::Truncated);
    // Fdt::new checked that both blocks lie inside the blob.
    let structs = block(total, field(2)?, field(9)?)?;
    let strings = block(total, field(3)?, field(8)?)?;
    let rsvmap = reservations(total, field(4)?)?;
    let boot_cpuid_phys = field(7)?;

    let mut w = Writer { buf: out, len: 0 };
    w.put(&[0; HEADER_SIZE])?;
    // The header is 40 bytes and each reservation 16, which keeps the
    // reservation block 8-aligned and the structure block 4-aligned, as
    // the specification requires.
    let off_rsvmap = w.len;
    w.put(rsvmap)?;
    let off_struct = w.len;
    copy_structure(&fdt, structs, strings, spec.hide, &mut w)?;
    let size_struct = w.len - off_struct;
    let off_strings = w.len;
    w.put(strings)?;
    let totalsize = w.len;

    let header = [
        FDT_MAGIC,
        u32_of(totalsize)?,
        u32_of(off_struct)?,
        u32_of(off_strings)?,
        u32_of(off_rsvmap)?,
        VERSION,
        LAST_COMP_VERSION,
        boot_cpuid_phys,
        u32_of(strings.len())?,
        u32_of(size_struct)?,
    ];
    for (i, v) in header.iter().enumerate() {
        w.set_u32(4 * i, *v)?;
    }
    Ok(totalsize)
}

/// The big-endian u32 at `off`.
fn be32(bytes: &[u8], off: usize) -> Option<u32> {
    let b = bytes.get(off..off.checked_add(4)?)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// `x` rounded up to a multiple of 4.
fn align4(x: usize) -> Option<usize> {
    Some(x.checked_add(3)? & !3)
}

fn u32_of(x: usize) -> Result<u32, DtbError> {
    u32::try_from(x).map_err(|_| DtbError::NoSpace)
}

/// The `size` bytes at `off` in `total`.
fn block(total: &[u8], off: u32, size: u32) -> Result<&[u8], FdtError> {
    let off = off as usize;
    let end = off.checked_add(size as usize).ok_or(FdtError::BadLayout)?;
    total.get(off..end).ok_or(FdtError::BadLayout)
}

/// The memory reservation block at `off`: 16-byte `(address, size)`
/// entries up to and including the all-zero one that ends it.
fn reservations(total: &[u8], off: u32) -> Result<&[u8], FdtError> {
    let start = off as usize;
    if start < HEADER_SIZE {
        return Err(FdtError::BadLayout);
    }
    let mut end = start;
    loop {
        let entry_end = end.checked_add(16).ok_or(FdtError::BadLayout)?;
        let entry = total.get(end..entry_end).ok_or(FdtError::BadLayout)?;
        end = entry_end;
        if entry.iter().all(|&b| b == 0) {
            return total.get(start..end).ok_or(FdtError::BadLayout);
        }
    }
}

/// The NUL-terminated string at `off` (without the NUL).
fn cstr(bytes: &[u8], off: usize) -> Option<&[u8]> {
    let rest = bytes.get(off..)?;
    let len = rest.iter().position(|&b| b == 0)?;
    rest.get(..len)
}

/// The output buffer, filled from the start.
struct Writer<'o> {
    buf: &'o mut [u8],
    len: usize,
}

impl Writer<'_> {
    fn put(&mut self, bytes: &[u8]) -> Result<(), DtbError> {
        let end = self.len.checked_add(bytes.len()).ok_or(DtbError::NoSpace)?;
        self.buf
            .get_mut(self.len..end)
            .ok_or(DtbError::NoSpace)?
            .copy_from_slice(bytes);
        self.len = end;
        Ok(())
    }

    fn put_u32(&mut self, v: u32) -> Result<(), DtbError> {
        self.put(&v.to_be_bytes())
    }

    /// Zero padding up to the next 4-byte boundary: every token starts
    /// aligned.
    fn pad4(&mut self) -> Result<(), DtbError> {
        while !self.len.is_multiple_of(4) {
            self.put(&[0])?;
        }
        Ok(())
    }

    /// Overwrite the u32 at `at`, already written (header, lengths known
    /// only afterwards).
    fn set_u32(&mut self, at: usize, v: u32) -> Result<(), DtbError> {
        let end = at.checked_add(4).ok_or(DtbError::NoSpace)?;
        self.buf
            .get_mut(at..end)
            .ok_or(DtbError::NoSpace)?
            .copy_from_slice(&v.to_be_bytes());
        Ok(())
    }
}

/// Cell counts of a memory node's RAM properties: the root's
/// `#address-cells` and `#size-cells`.
#[derive(Clone, Copy)]
struct Cells {
    addr: usize,
    size: usize,
}

/// The cell counts for rewriting `node`'s RAM, if it is a memory node
/// directly under the root. Its `status` does not matter: hiding memory
/// from a disabled node is harmless, leaving it could expose Warden.
fn memory_cells(node: &Node) -> Option<Result<Cells, FdtError>> {
    if node.depth != 1 || node.prop_str("device_type") != Some(b"memory") {
        return None;
    }
    // RAM needs a size; addresses and sizes wider than 64 bits are not
    // something Warden's ranges could describe.
    Some(
        if (1..=2).contains(&node.addr_cells) && (1..=2).contains(&node.size_cells) {
            Ok(Cells {
                addr: node.addr_cells as usize,
                size: node.size_cells as usize,
            })
        } else {
            Err(FdtError::BadReg)
        },
    )
}

/// Whether `node` disappears from the host's tree with its subtree.
fn is_removed(node: &Node, hide: &[Range]) -> Result<bool, DtbError> {
    if node.depth == 0 {
        return Ok(false);
    }
    if node.is_compatible(SMMU_COMPATIBLE) {
        return Ok(true);
    }
    // A memory node whose `reg` loses every byte.
    if let (Some(cells), Some(reg)) = (memory_cells(node), node.prop("reg")) {
        return Ok(host_ram(reg, cells?, hide, |_, _| Ok(()))? == 0);
    }
    Ok(false)
}

/// Walk the `(address, size)` entries of `value` and call `emit` with
/// every piece of RAM left once `hide` is taken out, in order (pieces of
/// one entry ascending). Returns the number of pieces.
fn host_ram(
    value: &[u8],
    cells: Cells,
    hide: &[Range],
    mut emit: impl FnMut(u64, u64) -> Result<(), DtbError>,
) -> Result<usize, DtbError> {
    let entry = 4 * (cells.addr + cells.size);
    if entry == 0 || !value.len().is_multiple_of(entry) {
        return Err(FdtError::BadReg.into());
    }
    let mut count = 0usize;
    for e in value.chunks_exact(entry) {
        let base = read_cells(e, 0, cells.addr).ok_or(FdtError::BadReg)?;
        let size = read_cells(e, cells.addr, cells.size).ok_or(FdtError::BadReg)?;
        // An entry that wraps past the top of the address space ends there.
        let end = base.saturating_add(size);
        subtract(base, end, hide, |b, s| {
            count = count.checked_add(1).ok_or(DtbError::TooManyRanges)?;
            if count > MAX_HOST_RANGES {
                return Err(DtbError::TooManyRanges);
            }
            emit(b, s)
        })?;
    }
    Ok(count)
}

/// The `n`-cell big-endian number starting at cell `first` of `entry`.
fn read_cells(entry: &[u8], first: usize, n: usize) -> Option<u64> {
    (0..n).try_fold(0u64, |acc, i| {
        let cell = be32(entry, 4 * first.checked_add(i)?)?;
        Some((acc << 32) | u64::from(cell))
    })
}

/// Call `emit(base, size)` for each maximal piece of `[base, end)` that no
/// range in `hide` covers, in ascending order. Independent of the order of
/// `hide` and of overlaps within it.
fn subtract(
    base: u64,
    end: u64,
    hide: &[Range],
    mut emit: impl FnMut(u64, u64) -> Result<(), DtbError>,
) -> Result<(), DtbError> {
    let mut cursor = base;
    while cursor < end {
        // Step over the hidden ranges covering the cursor. Each step moves
        // it strictly forward past one range, which cannot cover it again,
        // so this ends within `hide.len()` rounds.
        let mut moved = true;
        while moved {
            moved = false;
            for h in hide.iter().filter(|h| h.size != 0) {
                if h.base <= cursor && cursor < h.end() {
                    cursor = h.end();
                    moved = true;
                }
            }
        }
        if cursor >= end {
            break;
        }
        // Nothing covers the cursor, so RAM runs up to the next hidden
        // range that starts above it, or to the end.
        let stop = hide
            .iter()
            .filter(|h| h.size != 0 && h.base > cursor)
            .fold(end, |stop, h| stop.min(h.base));
        emit(cursor, stop - cursor)?;
        cursor = stop;
    }
    Ok(())
}

/// Append `n` as `cells` big-endian cells; it must fit.
fn put_cells(w: &mut Writer, n: u64, cells: usize) -> Result<(), DtbError> {
    match cells {
        1 => w.put_u32(u32::try_from(n).map_err(|_| FdtError::BadReg)?),
        2 => w.put(&n.to_be_bytes()),
        _ => Err(FdtError::BadReg.into()),
    }
}

/// Append a memory property with the hidden ranges taken out of `value`.
fn put_memory_prop(w: &mut Writer, nameoff: u32, value: &[u8], cells: Cells, hide: &[Range]) -> Result<(), DtbError> {
    w.put_u32(FDT_PROP)?;
    // The length is known only once the pieces are written.
    let len_at = w.len;
    w.put_u32(0)?;
    w.put_u32(nameoff)?;
    let start = w.len;
    host_ram(value, cells, hide, |base, size| {
        put_cells(w, base, cells.addr)?;
        put_cells(w, size, cells.size)
    })?;
    // Entries are whole cells, so the value needs no padding.
    let len = u32_of(w.len - start)?;
    w.set_u32(len_at, len)
}

/// Copy the structure block `s` into `w`, applying the host's changes.
fn copy_structure(fdt: &Fdt, s: &[u8], strings: &[u8], hide: &[Range], w: &mut Writer) -> Result<(), DtbError> {
    let bad = || DtbError::Fdt(FdtError::BadStructure);
    // The reader's nodes, in the document order the walk meets them.
    let mut nodes = fdt.nodes();
    let mut off = 0usize;
    let mut depth = 0usize;
    // Depth of the removed node whose subtree is being skipped.
    let mut skip: Option<usize> = None;
    // Whether the properties being read may still come (before the first
    // child), and, if they belong to a memory node, its cell counts.
    let mut in_props = false;
    let mut memory: Option<Result<Cells, FdtError>> = None;
    loop {
        match be32(s, off).ok_or_else(bad)? {
            FDT_NOP => off = off.checked_add(4).ok_or_else(bad)?,
            FDT_BEGIN_NODE => {
                let node = nodes.next().ok_or_else(bad)??;
                let name_off = off.checked_add(4).ok_or_else(bad)?;
                let name = cstr(s, name_off).ok_or_else(bad)?;
                // The reader walked the same tokens; a mismatch means the
                // two disagree on the tree, so refuse rather than guess.
                if name != node.name || node.depth != depth {
                    return Err(bad());
                }
                off = name_off
                    .checked_add(name.len())
                    .and_then(|x| x.checked_add(1))
                    .and_then(align4)
                    .ok_or_else(bad)?;
                depth = depth.checked_add(1).ok_or_else(bad)?;
                in_props = true;
                if skip.is_none() && is_removed(&node, hide)? {
                    skip = Some(depth);
                }
                if skip.is_some() {
                    continue;
                }
                w.put_u32(FDT_BEGIN_NODE)?;
                w.put(name)?;
                w.put(&[0])?;
                w.pad4()?;
                memory = memory_cells(&node);
            }
            FDT_PROP => {
                let len = be32(s, off.checked_add(4).ok_or_else(bad)?).ok_or_else(bad)?;
                let nameoff = be32(s, off.checked_add(8).ok_or_else(bad)?).ok_or_else(bad)?;
                let start = off.checked_add(12).ok_or_else(bad)?;
                let end = start.checked_add(len as usize).ok_or_else(bad)?;
                let value = s.get(start..end).ok_or_else(bad)?;
                let name = cstr(strings, nameoff as usize).ok_or_else(bad)?;
                off = align4(end).ok_or_else(bad)?;
                if !in_props {
                    return Err(bad());
                }
                if skip.is_some() || REMOVED_PROPS.contains(&name) {
                    continue;
                }
                match memory {
                    Some(cells) if MEMORY_PROPS.contains(&name) => put_memory_prop(w, nameoff, value, cells?, hide)?,
                    _ => {
                        w.put_u32(FDT_PROP)?;
                        w.put_u32(len)?;
                        w.put_u32(nameoff)?;
                        w.put(value)?;
                        w.pad4()?;
                    }
                }
            }
            FDT_END_NODE => {
                if skip.is_none() {
                    w.put_u32(FDT_END_NODE)?;
                }
                if skip == Some(depth) {
                    skip = None;
                }
                depth = depth.checked_sub(1).ok_or_else(bad)?;
                off = off.checked_add(4).ok_or_else(bad)?;
                // Properties come before children: after a child closes,
                // its parent's list is over too.
                in_props = false;
                memory = None;
            }
            FDT_END => {
                if depth != 0 {
                    return Err(bad());
                }
                return w.put_u32(FDT_END);
            }
            _ => return Err(bad()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::Platform;

    const QEMU_VIRT: &[u8] = include_bytes!("testdata/qemu-virt-gicv3-smmuv3.dtb");
    /// QEMU's RAM in the test blob: 1 GiB at 1 GiB.
    const RAM: Range = Range::new(0x4000_0000, 0x4000_0000);
    const MIB: u64 = 1 << 20;

    fn patch(blob: &[u8], hide: &[Range]) -> Vec<u8> {
        let mut out = vec![0xa5; blob.len() + 4096];
        let n = patch_for_host(blob, &HostDtbSpec { hide }, &mut out).unwrap();
        out.truncate(n);
        out
    }

    fn header(blob: &[u8], i: usize) -> u32 {
        be32(blob, 4 * i).unwrap()
    }

    /// A node as the reader sees it: depth, name, properties in order.
    type NodeDump = (usize, Vec<u8>, Vec<(Vec<u8>, Vec<u8>)>);

    fn dump(blob: &[u8]) -> Vec<NodeDump> {
        let fdt = Fdt::new(blob).unwrap();
        fdt.nodes()
            .map(|n| {
                let n = n.unwrap();
                let props = n.props().map(|p| (p.name.to_vec(), p.value.to_vec())).collect();
                (n.depth, n.name.to_vec(), props)
            })
            .collect()
    }

    fn is_memory(node: &NodeDump) -> bool {
        node.0 == 1 && node.2.iter().any(|(n, v)| n == b"device_type" && v == b"memory\0")
    }

    fn prop<'a>(node: &'a NodeDump, name: &str) -> Option<&'a [u8]> {
        node.2.iter().find(|(n, _)| n == name.as_bytes()).map(|(_, v)| &v[..])
    }

    /// `(base, size)` pairs as 2+2 cells.
    fn cells22(ranges: &[(u64, u64)]) -> Vec<u8> {
        ranges
            .iter()
            .flat_map(|&(b, s)| [b.to_be_bytes(), s.to_be_bytes()])
            .flatten()
            .collect()
    }

    fn cells11(ranges: &[(u32, u32)]) -> Vec<u8> {
        ranges
            .iter()
            .flat_map(|&(b, s)| [b.to_be_bytes(), s.to_be_bytes()])
            .flatten()
            .collect()
    }

    #[test]
    fn qemu_host_tree_has_no_smmu() {
        let out = patch(QEMU_VIRT, &[]);
        let p = Platform::from_fdt(&out).unwrap();
        assert_eq!(p.smmu, None);
        assert_eq!(p.memory(), &[RAM]);
        assert_eq!(p.uart, Range::new(0x0900_0000, 0x1000));
        assert_eq!(p.cpus, 2);
        for node in dump(&out) {
            for (name, _) in &node.2 {
                assert!(!REMOVED_PROPS.contains(&&name[..]), "{:?} kept in {:?}", name, node.1);
            }
            let compat = prop(&node, "compatible").unwrap_or(b"");
            assert!(!compat.split(|&b| b == 0).any(|c| c == b"arm,smmu-v3"));
        }
        // Nor is the SMMU's node name anywhere in the structure block.
        assert!(!out.windows(6).any(|w| w == b"smmuv3"));
    }

    #[test]
    fn qemu_header_and_blocks() {
        let out = patch(QEMU_VIRT, &[Range::new(0x4020_0000, 2 * MIB)]);
        assert_eq!(header(&out, 0), FDT_MAGIC);
        assert_eq!(header(&out, 1) as usize, out.len());
        assert_eq!(header(&out, 5), 17);
        assert_eq!(header(&out, 6), 16);
        assert_eq!(header(&out, 7), header(QEMU_VIRT, 7));
        // Reservation block right after the header, structure block after
        // it, strings block last, each copied or consistent.
        let (rsv, st, strs) = (
            header(&out, 4) as usize,
            header(&out, 2) as usize,
            header(&out, 3) as usize,
        );
        assert_eq!(rsv, HEADER_SIZE);
        let in_rsv = header(QEMU_VIRT, 4) as usize;
        assert_eq!(out[rsv..st], QEMU_VIRT[in_rsv..in_rsv + (st - rsv)]);
        assert_eq!(st + header(&out, 9) as usize, strs);
        assert_eq!(strs + header(&out, 8) as usize, out.len());
        let in_strs = header(QEMU_VIRT, 3) as usize;
        assert_eq!(out[strs..], QEMU_VIRT[in_strs..in_strs + header(QEMU_VIRT, 8) as usize]);
        // The structure block ends with FDT_END.
        assert_eq!(be32(&out, strs - 4), Some(FDT_END));
    }

    #[test]
    fn everything_else_is_identical() {
        let hide = [Range::new(0x4020_0000, 4 * MIB)];
        let out = patch(QEMU_VIRT, &hide);
        // The input with the intended changes applied by hand, memory
        // `reg` aside.
        let mut expected = Vec::new();
        let mut skip_below = None;
        for mut node in dump(QEMU_VIRT) {
            if skip_below.is_some_and(|d| node.0 > d) {
                continue;
            }
            skip_below = None;
            let compat = prop(&node, "compatible").unwrap_or(b"");
            if compat.split(|&b| b == 0).any(|c| c == b"arm,smmu-v3") {
                skip_below = Some(node.0);
                continue;
            }
            let memory = is_memory(&node);
            node.2
                .retain(|(n, _)| !(REMOVED_PROPS.contains(&&n[..]) || (memory && n == b"reg")));
            expected.push(node);
        }
        let mut got = dump(&out);
        let mut regs = Vec::new();
        for node in &mut got {
            if is_memory(node) {
                regs.push(prop(node, "reg").unwrap().to_vec());
                node.2.retain(|(n, _)| n != b"reg");
            }
        }
        assert_eq!(got, expected);
        assert_eq!(
            regs,
            [cells22(&[(0x4000_0000, 2 * MIB), (0x4060_0000, 0x4000_0000 - 6 * MIB)])]
        );
        // The SMMU node was the only one removed, and the PCIe node lost
        // exactly its iommu-map.
        assert_eq!(dump(QEMU_VIRT).len(), got.len() + 1);
        let pcie = got.iter().find(|n| n.1 == b"pcie@10000000").unwrap();
        let in_pcie = dump(QEMU_VIRT).into_iter().find(|n| n.1 == b"pcie@10000000").unwrap();
        assert_eq!(pcie.2.len() + 1, in_pcie.2.len());
        assert!(prop(pcie, "msi-map").is_some());
    }

    #[test]
    fn memory_minus_hidden_ranges() {
        let cases: &[(&[Range], &[Range])] = &[
            // Nothing hidden.
            (&[], &[RAM]),
            // A hole at the start.
            (
                &[Range::new(0x4000_0000, 2 * MIB)],
                &[Range::new(0x4020_0000, 0x4000_0000 - 2 * MIB)],
            ),
            // A hole in the middle: two ranges.
            (
                &[Range::new(0x4020_0000, 0x1000)],
                &[
                    Range::new(0x4000_0000, 2 * MIB),
                    Range::new(0x4020_1000, 0x4000_0000 - 2 * MIB - 0x1000),
                ],
            ),
            // A hole at the end.
            (
                &[Range::new(0x7fff_f000, 0x1000)],
                &[Range::new(0x4000_0000, 0x4000_0000 - 0x1000)],
            ),
            // Hidden ranges reaching past RAM on both sides.
            (
                &[
                    Range::new(0x3000_0000, 0x1010_0000),
                    Range::new(0x7ff0_0000, 0x1000_0000),
                ],
                &[Range::new(0x4010_0000, 0x3fe0_0000)],
            ),
            // Unsorted, overlapping, adjacent, empty and outside ranges.
            (
                &[
                    Range::new(0x5000_0000, 0x2000),
                    Range::new(0x4020_0000, 0x3000),
                    Range::new(0x4020_1000, 0x3000),
                    Range::new(0x4020_4000, 0x1000),
                    Range::new(0x4800_0000, 0),
                    Range::new(0x1000, 0x1000),
                    Range::new(0x8000_0000, 0x1000),
                    Range::new(0x5000_1000, 0x1000),
                ],
                &[
                    Range::new(0x4000_0000, 2 * MIB),
                    Range::new(0x4020_5000, 0x5000_0000 - 0x4020_5000),
                    Range::new(0x5000_2000, 0x8000_0000 - 0x5000_2000),
                ],
            ),
            // The top of the address space hidden.
            (
                &[Range::new(0x6000_0000, u64::MAX)],
                &[Range::new(0x4000_0000, 0x2000_0000)],
            ),
        ];
        for (hide, ram) in cases {
            let out = patch(QEMU_VIRT, hide);
            let p = Platform::from_fdt(&out).unwrap();
            assert_eq!(p.memory(), *ram, "hiding {hide:x?}");
            assert_eq!(p.smmu, None);
        }
    }

    #[test]
    fn fully_hidden_memory_node_is_removed() {
        for hide in [
            &[RAM][..],
            &[Range::new(0, u64::MAX)],
            &[Range::new(0x6000_0000, 1 << 40), Range::new(0, 0x6000_0000)],
        ] {
            let out = patch(QEMU_VIRT, hide);
            let nodes = dump(&out);
            assert!(!nodes.iter().any(is_memory));
            assert!(!nodes.iter().any(|n| n.1.starts_with(b"memory")));
            assert_eq!(nodes.len(), dump(QEMU_VIRT).len() - 2);
        }
    }

    #[test]
    fn patching_is_idempotent() {
        let once = patch(QEMU_VIRT, &[]);
        assert!(once.len() < QEMU_VIRT.len());
        assert_eq!(patch(&once, &[]), once);
        let hide = [Range::new(0x4020_0000, 8 * MIB), Range::new(0x7000_0000, MIB)];
        let once = patch(QEMU_VIRT, &hide);
        assert_eq!(patch(&once, &hide), once);
        assert_eq!(patch(&once, &[]), once);
    }

    #[test]
    fn too_many_ranges_is_an_error() {
        let holes = |n: u64| {
            (0..n)
                .map(|i| Range::new(0x4100_0000 + i * 2 * MIB, MIB))
                .collect::<Vec<_>>()
        };
        // n holes in the middle leave n + 1 pieces.
        let p = Platform::from_fdt(&patch(QEMU_VIRT, &holes(7))).unwrap();
        assert_eq!(p.memory().len(), 8);
        let mut out = vec![0; QEMU_VIRT.len() + 4096];
        let spec = HostDtbSpec {
            hide: &holes(MAX_HOST_RANGES as u64 - 1),
        };
        let n = patch_for_host(QEMU_VIRT, &spec, &mut out).unwrap();
        let nodes = dump(&out[..n]);
        let mem = nodes.iter().find(|n| is_memory(n)).unwrap();
        assert_eq!(prop(mem, "reg").unwrap().len(), MAX_HOST_RANGES * 16);
        let spec = HostDtbSpec {
            hide: &holes(MAX_HOST_RANGES as u64),
        };
        assert_eq!(patch_for_host(QEMU_VIRT, &spec, &mut out), Err(DtbError::TooManyRanges));
        assert_eq!(DtbError::TooManyRanges.as_str(), "too many host memory ranges");
    }

    #[test]
    fn small_output_buffer_is_an_error() {
        let hide = [Range::new(0x4020_0000, 2 * MIB)];
        let full = patch(QEMU_VIRT, &hide);
        let spec = HostDtbSpec { hide: &hide };
        for len in (0..full.len()).step_by(5).chain([full.len() - 1]) {
            let mut out = vec![0; len];
            assert_eq!(
                patch_for_host(QEMU_VIRT, &spec, &mut out),
                Err(DtbError::NoSpace),
                "len {len}"
            );
        }
        let mut out = vec![0; full.len()];
        assert_eq!(patch_for_host(QEMU_VIRT, &spec, &mut out), Ok(full.len()));
        assert_eq!(out, full);
    }

    #[test]
    fn malformed_input_is_an_error() {
        let mut out = vec![0; QEMU_VIRT.len()];
        let spec = HostDtbSpec::default();
        assert_eq!(
            patch_for_host(&[], &spec, &mut out),
            Err(DtbError::Fdt(FdtError::Truncated))
        );
        let mut b = QEMU_VIRT.to_vec();
        b[0] ^= 1;
        assert_eq!(
            patch_for_host(&b, &spec, &mut out),
            Err(DtbError::Fdt(FdtError::BadMagic))
        );
        // A reservation block without its terminator.
        let mut b = QEMU_VIRT.to_vec();
        let total = b.len() as u32;
        b[16..20].copy_from_slice(&(total - 8).to_be_bytes());
        assert_eq!(
            patch_for_host(&b, &spec, &mut out),
            Err(DtbError::Fdt(FdtError::BadLayout))
        );
        assert_eq!(DtbError::Fdt(FdtError::BadMagic).as_str(), "bad magic");
    }

    /// Patch `blob`; whatever is accepted must come out a valid tree.
    fn exercise(blob: &[u8], out: &mut [u8]) {
        let spec = HostDtbSpec {
            hide: &[Range::new(0x4020_0000, 2 * MIB), Range::new(0x9000_0000, MIB)],
        };
        if let Ok(n) = patch_for_host(blob, &spec, out) {
            let fdt = Fdt::new(&out[..n]).unwrap();
            assert_eq!(fdt.total_size(), n);
            for node in fdt.nodes() {
                node.unwrap();
            }
        }
    }

    #[test]
    fn garbage_never_panics() {
        let mut out = vec![0; QEMU_VIRT.len() + 4096];
        let mut b = QEMU_VIRT.to_vec();
        // Corrupt every third byte in turn with token values, all-ones, a
        // flipped bit and zero.
        for i in (0..b.len()).step_by(3) {
            let orig = b[i];
            for v in [0x00, 0xff, orig ^ 0x01, 0x09, 0x03, 0x02] {
                b[i] = v;
                exercise(&b, &mut out);
            }
            b[i] = orig;
        }
        // Truncations, with and without a consistent totalsize.
        for len in (0..QEMU_VIRT.len()).step_by(7) {
            exercise(&QEMU_VIRT[..len], &mut out);
            let mut t = QEMU_VIRT[..len].to_vec();
            if len >= 8 {
                t[4..8].copy_from_slice(&(len as u32).to_be_bytes());
            }
            exercise(&t, &mut out);
        }
        // Pseudo-random corruption behind a valid header.
        let mut x = 0x1234_5678_9abc_def0u64;
        for _ in 0..200 {
            let mut b = QEMU_VIRT.to_vec();
            for byte in b.iter_mut().skip(HEADER_SIZE) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                if x.is_multiple_of(128) {
                    *byte = x as u8;
                }
            }
            exercise(&b, &mut out);
        }
        // Tiny output buffers.
        for len in 0..64 {
            exercise(QEMU_VIRT, &mut out[..len]);
        }
    }

    /// A tree written token by token, for shapes QEMU's blob lacks.
    #[derive(Default)]
    struct Builder {
        structs: Vec<u8>,
        strings: Vec<u8>,
        rsv: Vec<(u64, u64)>,
    }

    impl Builder {
        fn token(&mut self, t: u32) -> &mut Self {
            self.structs.extend_from_slice(&t.to_be_bytes());
            self
        }

        fn begin(&mut self, name: &str) -> &mut Self {
            self.token(FDT_BEGIN_NODE);
            self.structs.extend_from_slice(name.as_bytes());
            self.structs.push(0);
            while !self.structs.len().is_multiple_of(4) {
                self.structs.push(0);
            }
            self
        }

        fn end(&mut self) -> &mut Self {
            self.token(FDT_END_NODE)
        }

        fn prop(&mut self, name: &str, value: &[u8]) -> &mut Self {
            let mut key = name.as_bytes().to_vec();
            key.push(0);
            let nameoff = match self.strings.windows(key.len()).position(|w| w == key) {
                Some(off) => off,
                None => {
                    self.strings.extend_from_slice(&key);
                    self.strings.len() - key.len()
                }
            };
            self.token(FDT_PROP).token(value.len() as u32).token(nameoff as u32);
            self.structs.extend_from_slice(value);
            while !self.structs.len().is_multiple_of(4) {
                self.structs.push(0);
            }
            self
        }

        fn u32_prop(&mut self, name: &str, v: u32) -> &mut Self {
            self.prop(name, &v.to_be_bytes())
        }

        fn finish(&mut self) -> Vec<u8> {
            self.token(FDT_END);
            let off_rsv = HEADER_SIZE;
            let off_struct = off_rsv + 16 * (self.rsv.len() + 1);
            let off_strings = off_struct + self.structs.len();
            let total = off_strings + self.strings.len();
            let hdr = [
                FDT_MAGIC,
                total as u32,
                off_struct as u32,
                off_strings as u32,
                off_rsv as u32,
                17,
                16,
                3,
                self.strings.len() as u32,
                self.structs.len() as u32,
            ];
            let mut b: Vec<u8> = hdr.iter().flat_map(|v| v.to_be_bytes()).collect();
            for &(a, s) in self.rsv.iter().chain(&[(0, 0)]) {
                b.extend_from_slice(&a.to_be_bytes());
                b.extend_from_slice(&s.to_be_bytes());
            }
            b.extend_from_slice(&self.structs);
            b.extend_from_slice(&self.strings);
            b
        }
    }

    /// A 1-cell tree: two memory nodes (one with `linux,usable-memory`),
    /// one without `reg`, a nested SMMU with a child, NOPs, reservations.
    fn synthetic() -> Vec<u8> {
        let mut b = Builder {
            rsv: vec![(0x4800_0000, 0x1000), (0x4900_0000, 0x2000)],
            ..Builder::default()
        };
        b.token(FDT_NOP)
            .begin("")
            .u32_prop("#address-cells", 1)
            .u32_prop("#size-cells", 1)
            .token(FDT_NOP)
            .prop("compatible", b"test,board\0")
            .begin("memory@40000000")
            .prop("device_type", b"memory\0")
            .prop("reg", &cells11(&[(0x4000_0000, 0x1000_0000)]))
            .end()
            .begin("memory@80000000")
            .prop("reg", &cells11(&[(0x8000_0000, 0x1000_0000), (0xa000_0000, 0x1000)]))
            .prop("linux,usable-memory", &cells11(&[(0x8000_0000, 0x800_0000)]))
            .prop("device_type", b"memory\0")
            .prop("numa-node-id", &[0, 0, 0, 1])
            .end()
            .begin("memory@c0000000")
            .prop("device_type", b"memory\0")
            .end()
            .begin("soc")
            .u32_prop("#address-cells", 1)
            .u32_prop("#size-cells", 1)
            .begin("iommu@1000")
            .prop("compatible", b"vendor,thing\0arm,smmu-v3\0")
            .prop("reg", &cells11(&[(0x1000, 0x1000)]))
            .begin("child")
            .prop("x", b"y\0")
            .end()
            .end()
            .begin("dev@2000")
            .prop("iommus", &[0, 0, 0, 1, 0, 0, 0, 2])
            .prop("reg", &cells11(&[(0x2000, 0x100)]))
            .prop("odd", b"abcde")
            .token(FDT_NOP)
            .end()
            .begin("memory@0")
            // Not directly under the root: left alone.
            .prop("device_type", b"memory\0")
            .prop("reg", &cells11(&[(0x4000_0000, 0x1000)]))
            .end()
            .end()
            .begin("chosen")
            .end()
            .end()
            .token(FDT_NOP)
            .finish()
    }

    #[test]
    fn synthetic_tree() {
        let blob = synthetic();
        let hide = [
            Range::new(0x4000_0000, 0x1000),
            Range::new(0x8400_0000, 0x10_0000),
            Range::new(0xa000_0000, 0x1000),
        ];
        let out = patch(&blob, &hide);
        // Reservations copied, boot CPU copied.
        assert_eq!(out[HEADER_SIZE..HEADER_SIZE + 48], blob[HEADER_SIZE..HEADER_SIZE + 48]);
        assert_eq!(header(&out, 7), 3);
        let nodes = dump(&out);
        let names: Vec<&[u8]> = nodes.iter().map(|n| &n.1[..]).collect();
        assert_eq!(
            names,
            [
                &b""[..],
                b"memory@40000000",
                b"memory@80000000",
                b"memory@c0000000",
                b"soc",
                b"dev@2000",
                b"memory@0",
                b"chosen"
            ]
        );
        let node = |name: &[u8]| nodes.iter().find(|n| n.1 == name).unwrap();
        assert_eq!(
            prop(node(b"memory@40000000"), "reg").unwrap(),
            cells11(&[(0x4000_1000, 0xfff_f000)])
        );
        let m = node(b"memory@80000000");
        assert_eq!(
            prop(m, "reg").unwrap(),
            cells11(&[(0x8000_0000, 0x400_0000), (0x8410_0000, 0xbf0_0000)])
        );
        assert_eq!(
            prop(m, "linux,usable-memory").unwrap(),
            cells11(&[(0x8000_0000, 0x400_0000), (0x8410_0000, 0x3f0_0000)])
        );
        assert_eq!(prop(m, "numa-node-id").unwrap(), [0, 0, 0, 1]);
        assert_eq!(node(b"memory@c0000000").2.len(), 1);
        let dev = node(b"dev@2000");
        assert_eq!(
            dev.2,
            [
                (b"reg".to_vec(), cells11(&[(0x2000, 0x100)])),
                (b"odd".to_vec(), b"abcde".to_vec())
            ]
        );
        assert_eq!(
            prop(node(b"memory@0"), "reg").unwrap(),
            cells11(&[(0x4000_0000, 0x1000)])
        );
        // Byte for byte: the tree written by hand without the NOPs, the
        // SMMU and `iommus`, with the input's strings block (names keep
        // their offsets) and reservations.
        let in_strs = header(&blob, 3) as usize;
        let mut b = Builder {
            strings: blob[in_strs..].to_vec(),
            rsv: vec![(0x4800_0000, 0x1000), (0x4900_0000, 0x2000)],
            ..Builder::default()
        };
        b.begin("")
            .u32_prop("#address-cells", 1)
            .u32_prop("#size-cells", 1)
            .prop("compatible", b"test,board\0")
            .begin("memory@40000000")
            .prop("device_type", b"memory\0")
            .prop("reg", &cells11(&[(0x4000_1000, 0xfff_f000)]))
            .end()
            .begin("memory@80000000")
            .prop("reg", &cells11(&[(0x8000_0000, 0x400_0000), (0x8410_0000, 0xbf0_0000)]))
            .prop(
                "linux,usable-memory",
                &cells11(&[(0x8000_0000, 0x400_0000), (0x8410_0000, 0x3f0_0000)]),
            )
            .prop("device_type", b"memory\0")
            .prop("numa-node-id", &[0, 0, 0, 1])
            .end()
            .begin("memory@c0000000")
            .prop("device_type", b"memory\0")
            .end()
            .begin("soc")
            .u32_prop("#address-cells", 1)
            .u32_prop("#size-cells", 1)
            .begin("dev@2000")
            .prop("reg", &cells11(&[(0x2000, 0x100)]))
            .prop("odd", b"abcde")
            .end()
            .begin("memory@0")
            .prop("device_type", b"memory\0")
            .prop("reg", &cells11(&[(0x4000_0000, 0x1000)]))
            .end()
            .end()
            .begin("chosen")
            .end()
            .end();
        assert_eq!(out, b.finish());
        assert_eq!(patch(&out, &hide), out);
    }

    #[test]
    fn default_cells_and_bad_cells() {
        // No #address-cells/#size-cells on the root: 2 and 1.
        let blob = Builder::default()
            .begin("")
            .begin("memory")
            .prop("device_type", b"memory\0")
            .prop("reg", &[0, 0, 0, 1, 0, 0, 0, 0, 0x10, 0, 0, 0])
            .end()
            .end()
            .finish();
        let out = patch(&blob, &[Range::new(0x1_0000_0000, 0x1000)]);
        let nodes = dump(&out);
        assert_eq!(
            prop(&nodes[1], "reg").unwrap(),
            [0, 0, 0, 1, 0, 0, 0x10, 0, 0x0f, 0xff, 0xf0, 0]
        );
        // Sizes of zero cells cannot describe RAM; a ragged reg is malformed.
        let mut out = vec![0; 1024];
        for (size_cells, reg) in [
            (0u32, &[0u8, 0, 0, 1][..]),
            (1, &[0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3][..]),
        ] {
            let blob = Builder::default()
                .begin("")
                .u32_prop("#address-cells", 1)
                .u32_prop("#size-cells", size_cells)
                .begin("memory")
                .prop("device_type", b"memory\0")
                .prop("reg", reg)
                .end()
                .end()
                .finish();
            let spec = HostDtbSpec::default();
            assert_eq!(
                patch_for_host(&blob, &spec, &mut out),
                Err(DtbError::Fdt(FdtError::BadReg))
            );
        }
    }
}
