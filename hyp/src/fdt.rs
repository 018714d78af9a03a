//! A small, read-only flattened device tree (DTB) reader.
//!
//! The blob comes from whoever booted us; Warden trusts the boot firmware,
//! but a malformed tree must still give an error, never a panic or an
//! out-of-bounds read. Every offset and length is checked against the blob,
//! nesting depth is bounded, and iteration stops at the first malformed
//! token. There is no allocation: nodes and properties borrow the blob.
//!
//! Format: devicetree specification v0.4, chapter 5 (header, memory
//! reservation block, structure block of tokens, strings block).

/// Header magic, big-endian.
pub const FDT_MAGIC: u32 = 0xd00d_feed;
/// Size of the v17 header in bytes.
pub const HEADER_SIZE: usize = 40;
/// Deepest node nesting the reader accepts.
pub const MAX_DEPTH: usize = 16;

const FDT_BEGIN_NODE: u32 = 1;
const FDT_END_NODE: u32 = 2;
const FDT_PROP: u32 = 3;
const FDT_NOP: u32 = 4;
const FDT_END: u32 = 9;

/// Why a blob was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FdtError {
    /// Shorter than a header, or `totalsize` exceeds the buffer.
    Truncated,
    /// Wrong magic number.
    BadMagic,
    /// A version this reader does not understand.
    BadVersion,
    /// A block lies outside the blob or is misaligned.
    BadLayout,
    /// A token, name or property runs past its block or is unknown.
    BadStructure,
    /// Nodes nest deeper than [`MAX_DEPTH`].
    TooDeep,
    /// A `reg` property has an unsupported cell count or a ragged length.
    BadReg,
}

impl FdtError {
    /// A short description for the console.
    pub fn as_str(self) -> &'static str {
        match self {
            FdtError::Truncated => "truncated blob",
            FdtError::BadMagic => "bad magic",
            FdtError::BadVersion => "unsupported version",
            FdtError::BadLayout => "blocks outside the blob",
            FdtError::BadStructure => "malformed structure block",
            FdtError::TooDeep => "nodes nest too deep",
            FdtError::BadReg => "malformed reg property",
        }
    }
}

fn be32(bytes: &[u8], off: usize) -> Option<u32> {
    let b = bytes.get(off..off.checked_add(4)?)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

fn align4(x: usize) -> Option<usize> {
    Some(x.checked_add(3)? & !3)
}

/// The NUL-terminated string starting at `off` (without the NUL).
fn cstr(bytes: &[u8], off: usize) -> Option<&[u8]> {
    let rest = bytes.get(off..)?;
    let len = rest.iter().position(|&b| b == 0)?;
    Some(&rest[..len])
}

/// A validated device tree blob.
#[derive(Clone, Copy, Debug)]
pub struct Fdt<'a> {
    total: &'a [u8],
    structs: &'a [u8],
    strings: &'a [u8],
}

impl<'a> Fdt<'a> {
    /// Validate the header of `blob` and the placement of its blocks.
    /// `blob` may be longer than the tree; only `totalsize` bytes are used.
    pub fn new(blob: &'a [u8]) -> Result<Self, FdtError> {
        if blob.len() < HEADER_SIZE {
            return Err(FdtError::Truncated);
        }
        let field = |i: usize| be32(blob, i * 4).ok_or(FdtError::Truncated);
        if field(0)? != FDT_MAGIC {
            return Err(FdtError::BadMagic);
        }
        let total = field(1)? as usize;
        let off_struct = field(2)? as usize;
        let off_strings = field(3)? as usize;
        let version = field(5)?;
        let last_comp = field(6)?;
        let size_strings = field(8)? as usize;
        let size_struct = field(9)? as usize;
        if total < HEADER_SIZE || total > blob.len() {
            return Err(FdtError::Truncated);
        }
        // size_dt_struct exists from version 17; accept trees that are
        // compatible with 16 or 17.
        if version < 17 || last_comp > 17 {
            return Err(FdtError::BadVersion);
        }
        let total = &blob[..total];
        let block = |off: usize, size: usize| -> Result<&'a [u8], FdtError> {
            let end = off.checked_add(size).ok_or(FdtError::BadLayout)?;
            if off < HEADER_SIZE || end > total.len() {
                return Err(FdtError::BadLayout);
            }
            Ok(&total[off..end])
        };
        if !off_struct.is_multiple_of(4) || !size_struct.is_multiple_of(4) {
            return Err(FdtError::BadLayout);
        }
        Ok(Fdt {
            total,
            structs: block(off_struct, size_struct)?,
            strings: block(off_strings, size_strings)?,
        })
    }

    /// The blob's `totalsize` in bytes.
    pub fn total_size(&self) -> usize {
        self.total.len()
    }

    /// Every node in document order (the root first, at depth 0). The
    /// iterator yields one `Err` and stops at the first malformed token.
    pub fn nodes(&self) -> Nodes<'a> {
        Nodes {
            fdt: *self,
            off: 0,
            depth: 0,
            cells: [(2, 1); MAX_DEPTH + 1],
            done: false,
        }
    }

    /// The property name at `nameoff` in the strings block.
    fn prop_name(&self, nameoff: usize) -> Option<&'a [u8]> {
        cstr(self.strings, nameoff)
    }
}

/// A node: its name, depth, and properties.
#[derive(Clone, Copy, Debug)]
pub struct Node<'a> {
    fdt: Fdt<'a>,
    /// The node's name (unit name included, e.g. `pl011@9000000`); empty
    /// for the root.
    pub name: &'a [u8],
    /// Nesting depth: 0 for the root.
    pub depth: usize,
    /// Offset of the first property token in the structure block.
    props_off: usize,
    /// One past the last property token.
    props_end: usize,
    /// `#address-cells` of the parent: cells per address in `reg`.
    pub addr_cells: u32,
    /// `#size-cells` of the parent: cells per size in `reg`.
    pub size_cells: u32,
}

impl<'a> Node<'a> {
    /// The node's properties.
    pub fn props(&self) -> Props<'a> {
        Props {
            fdt: self.fdt,
            off: self.props_off,
            end: self.props_end,
        }
    }

    /// The value of property `name`, if present.
    pub fn prop(&self, name: &str) -> Option<&'a [u8]> {
        self.props().find(|p| p.name == name.as_bytes()).map(|p| p.value)
    }

    /// The value of property `name` as a string (up to the first NUL).
    pub fn prop_str(&self, name: &str) -> Option<&'a [u8]> {
        let v = self.prop(name)?;
        Some(match v.iter().position(|&b| b == 0) {
            Some(n) => &v[..n],
            None => v,
        })
    }

    /// The value of property `name` as one big-endian u32 cell.
    pub fn prop_u32(&self, name: &str) -> Option<u32> {
        let v = self.prop(name)?;
        if v.len() != 4 {
            return None;
        }
        be32(v, 0)
    }

    /// Whether `compatible` lists `compat` (exact match of one entry).
    pub fn is_compatible(&self, compat: &str) -> bool {
        self.prop("compatible")
            .is_some_and(|v| v.split(|&b| b == 0).any(|s| s == compat.as_bytes()))
    }

    /// Whether the node is enabled: no `status`, or `okay`/`ok`.
    pub fn is_enabled(&self) -> bool {
        match self.prop_str("status") {
            None => true,
            Some(s) => s == b"okay" || s == b"ok",
        }
    }

    /// The node's name without its unit address.
    pub fn base_name(&self) -> &'a [u8] {
        match self.name.iter().position(|&b| b == b'@') {
            Some(n) => &self.name[..n],
            None => self.name,
        }
    }

    /// The `(address, size)` pairs of the `reg` property, decoded with the
    /// parent's cell counts. `Ok(None)` when there is no `reg`.
    pub fn reg(&self) -> Result<Option<Reg<'a>>, FdtError> {
        let Some(value) = self.prop("reg") else {
            return Ok(None);
        };
        if !(1..=2).contains(&self.addr_cells) || self.size_cells > 2 {
            return Err(FdtError::BadReg);
        }
        let entry = 4 * (self.addr_cells + self.size_cells) as usize;
        if value.len() % entry != 0 {
            return Err(FdtError::BadReg);
        }
        Ok(Some(Reg {
            value,
            addr_cells: self.addr_cells as usize,
            size_cells: self.size_cells as usize,
        }))
    }
}

/// One property.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prop<'a> {
    /// Property name.
    pub name: &'a [u8],
    /// Raw value.
    pub value: &'a [u8],
}

/// Iterator over a node's properties (validated when the node was read).
#[derive(Clone, Debug)]
pub struct Props<'a> {
    fdt: Fdt<'a>,
    off: usize,
    end: usize,
}

impl<'a> Iterator for Props<'a> {
    type Item = Prop<'a>;

    fn next(&mut self) -> Option<Prop<'a>> {
        while self.off < self.end {
            let (tok, next) = read_prop_token(&self.fdt, self.off).ok()?;
            self.off = next;
            if let Some(p) = tok {
                return Some(p);
            }
        }
        None
    }
}

/// Read the PROP or NOP token at `off`: the property (None for NOP) and
/// the offset after it. Errors on any other token or a bounds violation.
fn read_prop_token<'a>(fdt: &Fdt<'a>, off: usize) -> Result<(Option<Prop<'a>>, usize), FdtError> {
    let s = fdt.structs;
    match be32(s, off).ok_or(FdtError::BadStructure)? {
        FDT_NOP => Ok((None, off + 4)),
        FDT_PROP => {
            let len = be32(s, off + 4).ok_or(FdtError::BadStructure)? as usize;
            let nameoff = be32(s, off + 8).ok_or(FdtError::BadStructure)? as usize;
            let start = off + 12;
            let end = start.checked_add(len).ok_or(FdtError::BadStructure)?;
            let value = s.get(start..end).ok_or(FdtError::BadStructure)?;
            let name = fdt.prop_name(nameoff).ok_or(FdtError::BadStructure)?;
            let next = align4(end).ok_or(FdtError::BadStructure)?;
            Ok((Some(Prop { name, value }), next))
        }
        _ => Err(FdtError::BadStructure),
    }
}

/// Iterator over the `(address, size)` pairs of a `reg` property.
#[derive(Clone, Debug)]
pub struct Reg<'a> {
    value: &'a [u8],
    addr_cells: usize,
    size_cells: usize,
}

impl Iterator for Reg<'_> {
    type Item = (u64, u64);

    fn next(&mut self) -> Option<(u64, u64)> {
        let n = 4 * (self.addr_cells + self.size_cells);
        if self.value.len() < n {
            return None;
        }
        let read = |cells: usize, off: usize| {
            (0..cells).fold(0u64, |acc, i| {
                (acc << 32) | be32(self.value, off + 4 * i).unwrap_or(0) as u64
            })
        };
        let addr = read(self.addr_cells, 0);
        let size = read(self.size_cells, 4 * self.addr_cells);
        self.value = &self.value[n..];
        Some((addr, size))
    }
}

/// Iterator over the nodes of a tree.
#[derive(Clone, Debug)]
pub struct Nodes<'a> {
    fdt: Fdt<'a>,
    off: usize,
    depth: usize,
    /// `(#address-cells, #size-cells)` that the node at each depth gives
    /// its children; index 0 holds the defaults the root's own `reg` uses.
    cells: [(u32, u32); MAX_DEPTH + 1],
    done: bool,
}

impl<'a> Nodes<'a> {
    fn step(&mut self) -> Result<Option<Node<'a>>, FdtError> {
        let s = self.fdt.structs;
        loop {
            let tok = be32(s, self.off).ok_or(FdtError::BadStructure)?;
            match tok {
                FDT_NOP => self.off += 4,
                FDT_END => {
                    return if self.depth == 0 {
                        Ok(None)
                    } else {
                        Err(FdtError::BadStructure)
                    };
                }
                FDT_END_NODE => {
                    if self.depth == 0 {
                        return Err(FdtError::BadStructure);
                    }
                    self.depth -= 1;
                    self.off += 4;
                    if self.depth == 0 {
                        // The root closed: only FDT_END (and NOPs) may follow.
                        self.expect_end()?;
                        return Ok(None);
                    }
                }
                FDT_BEGIN_NODE => return self.begin_node().map(Some),
                // A property outside a node's property list.
                _ => return Err(FdtError::BadStructure),
            }
        }
    }

    fn expect_end(&mut self) -> Result<(), FdtError> {
        loop {
            match be32(self.fdt.structs, self.off).ok_or(FdtError::BadStructure)? {
                FDT_NOP => self.off += 4,
                FDT_END => return Ok(()),
                _ => return Err(FdtError::BadStructure),
            }
        }
    }

    fn begin_node(&mut self) -> Result<Node<'a>, FdtError> {
        let s = self.fdt.structs;
        if self.depth >= MAX_DEPTH {
            return Err(FdtError::TooDeep);
        }
        let name_off = self.off + 4;
        let name = cstr(s, name_off).ok_or(FdtError::BadStructure)?;
        // The root must be first and only one node may sit at depth 0.
        if (self.depth == 0) != (self.off == first_node_offset(s)) {
            return Err(FdtError::BadStructure);
        }
        let props_off = align4(name_off + name.len() + 1).ok_or(FdtError::BadStructure)?;
        // Scan (and so validate) the property list; note the cell counts
        // this node gives its children.
        let mut off = props_off;
        let mut child_cells = (2u32, 1u32);
        let mut props_end = props_off;
        while let FDT_PROP | FDT_NOP = be32(s, off).ok_or(FdtError::BadStructure)? {
            let (prop, next) = read_prop_token(&self.fdt, off)?;
            if let Some(p) = prop {
                let cell = || be32(p.value, 0).filter(|_| p.value.len() == 4);
                if p.name == b"#address-cells" {
                    child_cells.0 = cell().ok_or(FdtError::BadStructure)?;
                } else if p.name == b"#size-cells" {
                    child_cells.1 = cell().ok_or(FdtError::BadStructure)?;
                }
            }
            off = next;
            props_end = off;
        }
        let (addr_cells, size_cells) = self.cells[self.depth];
        let node = Node {
            fdt: self.fdt,
            name,
            depth: self.depth,
            props_off,
            props_end,
            addr_cells,
            size_cells,
        };
        self.depth += 1;
        self.cells[self.depth] = child_cells;
        self.off = props_end;
        Ok(node)
    }
}

/// Offset of the first non-NOP token: where the root node must begin.
fn first_node_offset(s: &[u8]) -> usize {
    let mut off = 0;
    while be32(s, off) == Some(FDT_NOP) {
        off += 4;
    }
    off
}

impl<'a> Iterator for Nodes<'a> {
    type Item = Result<Node<'a>, FdtError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.step() {
            Ok(Some(node)) => Some(Ok(node)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const QEMU_VIRT: &[u8] = include_bytes!("testdata/qemu-virt-gicv3-smmuv3.dtb");

    #[test]
    fn header_of_qemu_blob() {
        let fdt = Fdt::new(QEMU_VIRT).unwrap();
        assert_eq!(fdt.total_size(), QEMU_VIRT.len());
    }

    #[test]
    fn walks_qemu_tree() {
        let fdt = Fdt::new(QEMU_VIRT).unwrap();
        let nodes: Vec<_> = fdt.nodes().collect::<Result<_, _>>().unwrap();
        assert_eq!(nodes[0].depth, 0);
        assert!(nodes[0].name.is_empty());
        assert!(nodes[0].is_compatible("linux,dummy-virt"));
        let uart = nodes.iter().find(|n| n.is_compatible("arm,pl011")).unwrap();
        assert_eq!(uart.name, b"pl011@9000000");
        assert_eq!(uart.depth, 1);
        let reg: Vec<_> = uart.reg().unwrap().unwrap().collect();
        assert_eq!(reg, [(0x0900_0000, 0x1000)]);
        let gic = nodes.iter().find(|n| n.is_compatible("arm,gic-v3")).unwrap();
        let reg: Vec<_> = gic.reg().unwrap().unwrap().collect();
        assert_eq!(reg, [(0x0800_0000, 0x1_0000), (0x080a_0000, 0xf6_0000)]);
        let cpu = nodes.iter().find(|n| n.name == b"cpu@1").unwrap();
        assert_eq!((cpu.addr_cells, cpu.size_cells), (1, 0));
        assert_eq!(cpu.reg().unwrap().unwrap().collect::<Vec<_>>(), [(1, 0)]);
        let psci = nodes.iter().find(|n| n.name == b"psci").unwrap();
        assert_eq!(psci.prop_str("method"), Some(&b"smc"[..]));
        assert!(psci.is_compatible("arm,psci-0.2"));
        assert!(!psci.is_compatible("arm,psci-0"));
    }

    #[test]
    fn rejects_bad_headers() {
        assert_eq!(Fdt::new(&[]).unwrap_err(), FdtError::Truncated);
        let mut b = QEMU_VIRT.to_vec();
        b[0] = 0;
        assert_eq!(Fdt::new(&b).unwrap_err(), FdtError::BadMagic);
        let mut b = QEMU_VIRT.to_vec();
        b[4..8].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(Fdt::new(&b).unwrap_err(), FdtError::Truncated);
        let mut b = QEMU_VIRT.to_vec();
        b[8..12].copy_from_slice(&0xffff_fff0u32.to_be_bytes());
        assert_eq!(Fdt::new(&b).unwrap_err(), FdtError::BadLayout);
        assert_eq!(Fdt::new(&QEMU_VIRT[..100]).unwrap_err(), FdtError::Truncated);
    }

    /// Iterate everything a consumer might touch; must never panic.
    fn exercise(blob: &[u8]) {
        let Ok(fdt) = Fdt::new(blob) else { return };
        for node in fdt.nodes() {
            let Ok(node) = node else { break };
            for p in node.props() {
                let _ = (p.name.len(), p.value.len());
            }
            let _ = node.prop_u32("#address-cells");
            let _ = node.is_compatible("arm,pl011");
            let _ = node.is_enabled();
            if let Ok(Some(reg)) = node.reg() {
                for r in reg {
                    let _ = r;
                }
            }
        }
    }

    #[test]
    fn garbage_never_panics() {
        // Corrupt every third byte in turn (a stride of 3 reaches every
        // position within the 4-byte tokens), and truncate the blob at many
        // lengths.
        let mut b = QEMU_VIRT.to_vec();
        for i in (0..b.len()).step_by(3) {
            let orig = b[i];
            // One corruption per byte, cycling through the interesting ones
            // (token values, all-ones, a flipped bit).
            b[i] = [0x00, 0xff, orig ^ 0x01, 0x09, 0x03][i % 5];
            exercise(&b);
            b[i] = orig;
        }
        for len in (0..QEMU_VIRT.len()).step_by(7) {
            exercise(&QEMU_VIRT[..len]);
        }
        // A pseudo-random stream with a valid header.
        let mut x = 0x1234_5678_9abc_def0u64;
        for _ in 0..50 {
            let mut b = QEMU_VIRT.to_vec();
            for byte in b.iter_mut().skip(HEADER_SIZE) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                if x.is_multiple_of(64) {
                    *byte = x as u8;
                }
            }
            exercise(&b);
        }
    }

    #[test]
    fn depth_is_bounded() {
        // A tree of MAX_DEPTH + 1 nested nodes.
        let mut s = Vec::new();
        for _ in 0..=MAX_DEPTH {
            s.extend_from_slice(&FDT_BEGIN_NODE.to_be_bytes());
            s.extend_from_slice(&[b'n', 0, 0, 0]);
        }
        for _ in 0..=MAX_DEPTH {
            s.extend_from_slice(&FDT_END_NODE.to_be_bytes());
        }
        s.extend_from_slice(&FDT_END.to_be_bytes());
        let blob = build(&s, b"");
        let fdt = Fdt::new(&blob).unwrap();
        let last = fdt.nodes().last().unwrap();
        assert_eq!(last.unwrap_err(), FdtError::TooDeep);
    }

    /// A blob with the given structure and strings blocks.
    fn build(structs: &[u8], strings: &[u8]) -> Vec<u8> {
        let off_rsv = HEADER_SIZE;
        let off_struct = off_rsv + 16;
        let off_strings = off_struct + structs.len();
        let total = off_strings + strings.len();
        let hdr = [
            FDT_MAGIC,
            total as u32,
            off_struct as u32,
            off_strings as u32,
            off_rsv as u32,
            17,
            16,
            0,
            strings.len() as u32,
            structs.len() as u32,
        ];
        let mut b: Vec<u8> = hdr.iter().flat_map(|v| v.to_be_bytes()).collect();
        b.extend_from_slice(&[0; 16]);
        b.extend_from_slice(structs);
        b.extend_from_slice(strings);
        b
    }

    #[test]
    fn unbalanced_trees_are_errors() {
        let mut s = Vec::new();
        s.extend_from_slice(&FDT_BEGIN_NODE.to_be_bytes());
        s.extend_from_slice(&[0, 0, 0, 0]);
        s.extend_from_slice(&FDT_END.to_be_bytes());
        let blob = build(&s, b"");
        let fdt = Fdt::new(&blob).unwrap();
        assert!(fdt.nodes().any(|n| n.is_err()));
        // Two roots.
        let mut s = Vec::new();
        for _ in 0..2 {
            s.extend_from_slice(&FDT_BEGIN_NODE.to_be_bytes());
            s.extend_from_slice(&[0, 0, 0, 0]);
            s.extend_from_slice(&FDT_END_NODE.to_be_bytes());
        }
        s.extend_from_slice(&FDT_END.to_be_bytes());
        let blob = build(&s, b"");
        let fdt = Fdt::new(&blob).unwrap();
        assert!(fdt.nodes().any(|n| n.is_err()));
    }
}
