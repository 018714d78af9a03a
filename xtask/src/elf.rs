//! Turning the linked ELF into the raw image QEMU loads: the file contents
//! of every PT_LOAD segment, placed at its physical address relative to the
//! lowest one, gaps zero-filled.

use crate::Result;

const PT_LOAD: u32 = 1;
const EM_AARCH64: u16 = 183;

fn u16_at(b: &[u8], off: usize) -> Result<u16> {
    b.get(off..off + 2)
        .map(|s| u16::from_le_bytes([s[0], s[1]]))
        .ok_or_else(|| format!("ELF truncated at {off:#x}"))
}

fn u32_at(b: &[u8], off: usize) -> Result<u32> {
    b.get(off..off + 4)
        .map(|s| u32::from_le_bytes(s.try_into().expect("4 bytes")))
        .ok_or_else(|| format!("ELF truncated at {off:#x}"))
}

fn u64_at(b: &[u8], off: usize) -> Result<u64> {
    b.get(off..off + 8)
        .map(|s| u64::from_le_bytes(s.try_into().expect("8 bytes")))
        .ok_or_else(|| format!("ELF truncated at {off:#x}"))
}

/// A flat image: load address, entry point and bytes.
#[derive(Debug, PartialEq, Eq)]
pub struct Flat {
    /// Physical address of the first byte.
    pub base: u64,
    /// The ELF entry point.
    pub entry: u64,
    /// The bytes to load at `base`.
    pub bytes: Vec<u8>,
}

/// Flatten a little-endian ELF64 AArch64 executable.
pub fn flatten(elf: &[u8]) -> Result<Flat> {
    if elf.get(..4) != Some(b"\x7fELF") || elf.get(4) != Some(&2) || elf.get(5) != Some(&1) {
        return Err("not a little-endian ELF64 file".into());
    }
    if u16_at(elf, 0x12)? != EM_AARCH64 {
        return Err("not an AArch64 ELF file".into());
    }
    let entry = u64_at(elf, 0x18)?;
    let phoff = u64_at(elf, 0x20)? as usize;
    let phentsize = u16_at(elf, 0x36)? as usize;
    let phnum = u16_at(elf, 0x38)? as usize;
    let mut segs = Vec::new();
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        if u32_at(elf, ph)? != PT_LOAD {
            continue;
        }
        let offset = u64_at(elf, ph + 0x08)? as usize;
        let paddr = u64_at(elf, ph + 0x18)?;
        let filesz = u64_at(elf, ph + 0x20)? as usize;
        if filesz == 0 {
            continue;
        }
        let data = elf
            .get(offset..offset + filesz)
            .ok_or_else(|| format!("segment {i} lies outside the file"))?;
        segs.push((paddr, data));
    }
    let base = segs.iter().map(|s| s.0).min().ok_or("no loadable segment")?;
    let end = segs.iter().map(|s| s.0 + s.1.len() as u64).max().unwrap_or(base);
    if end - base > 64 << 20 {
        return Err(format!("image spans {:#x} bytes: segments too far apart", end - base));
    }
    let mut bytes = vec![0u8; (end - base) as usize];
    for (paddr, data) in segs {
        let at = (paddr - base) as usize;
        bytes[at..at + data.len()].copy_from_slice(data);
    }
    Ok(Flat { base, entry, bytes })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF64 with the given (paddr, data, memsz) PT_LOAD segments.
    fn elf(entry: u64, segs: &[(u64, &[u8], u64)]) -> Vec<u8> {
        let mut b = vec![0u8; 64];
        b[..4].copy_from_slice(b"\x7fELF");
        b[4] = 2;
        b[5] = 1;
        b[0x12..0x14].copy_from_slice(&EM_AARCH64.to_le_bytes());
        b[0x18..0x20].copy_from_slice(&entry.to_le_bytes());
        b[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
        b[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        b[0x38..0x3a].copy_from_slice(&(segs.len() as u16).to_le_bytes());
        let data_start = 64 + 56 * segs.len();
        let mut data = Vec::new();
        for (paddr, bytes, memsz) in segs {
            let mut ph = vec![0u8; 56];
            ph[..4].copy_from_slice(&PT_LOAD.to_le_bytes());
            ph[8..16].copy_from_slice(&((data_start + data.len()) as u64).to_le_bytes());
            ph[16..24].copy_from_slice(&paddr.to_le_bytes());
            ph[24..32].copy_from_slice(&paddr.to_le_bytes());
            ph[32..40].copy_from_slice(&(bytes.len() as u64).to_le_bytes());
            ph[40..48].copy_from_slice(&memsz.to_le_bytes());
            b.extend_from_slice(&ph);
            data.extend_from_slice(bytes);
        }
        b.extend_from_slice(&data);
        b
    }

    #[test]
    fn flattens_with_gaps() {
        let f = flatten(&elf(
            0x1000,
            &[(0x1000, b"abcd", 4), (0x1008, b"xy", 2), (0x2000, b"", 0x1000)],
        ))
        .unwrap();
        assert_eq!(f.base, 0x1000);
        assert_eq!(f.entry, 0x1000);
        assert_eq!(f.bytes, b"abcd\0\0\0\0xy");
    }

    #[test]
    fn rejects_garbage() {
        assert!(flatten(b"nope").is_err());
        assert!(flatten(&elf(0, &[])).is_err());
        let mut e = elf(0, &[(0x1000, b"a", 1)]);
        e.truncate(100);
        assert!(flatten(&e).is_err());
    }
}
