//! Building the images: `cargo build` for aarch64-unknown-none, then the
//! ELF flattened into a raw arm64 `Image`: Warden's (EL2), which QEMU's
//! `-kernel` loads, and the test host's (EL1), which QEMU's generic loader
//! places at [`TESTHOST_LOAD`] for Warden to start (or `-kernel` boots
//! alone: its header asks for that address too).

use std::path::PathBuf;
use std::process::Command;

use crate::{elf, say, workspace_root, Result};

/// The hypervisor's target triple.
pub const TARGET: &str = "aarch64-unknown-none";
/// Offset of the arm64 Image header's magic.
const IMAGE_MAGIC_OFFSET: usize = 0x38;
/// The arm64 Image header's magic, "ARM\x64".
const IMAGE_MAGIC: &[u8; 4] = b"ARM\x64";

/// The cargo binary to use for nested builds.
pub fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// Where the test host is linked and loaded (hosts/testhost/linker.ld).
pub const TESTHOST_LOAD: u64 = 0x4400_0000;
/// RAM base of QEMU's `virt` machine (2 MiB aligned, as `-kernel` needs).
const VIRT_RAM_BASE: u64 = 0x4000_0000;

/// Build warden-hyp (release) and write `warden-hyp.bin` next to the ELF.
/// Returns the path of the raw image.
pub fn build() -> Result<PathBuf> {
    build_flat("warden-hyp", None)
}

/// Build the test host (release) and write `warden-testhost.bin`; it must
/// load at [`TESTHOST_LOAD`].
pub fn build_testhost() -> Result<PathBuf> {
    build_flat("warden-testhost", Some(TESTHOST_LOAD))
}

/// Build `package` for the EL2/EL1 target, flatten its ELF (binary of the
/// same name) and check the image: entry at its first byte, an arm64 Image
/// header, and the expected load address if one is given.
fn build_flat(package: &str, load: Option<u64>) -> Result<PathBuf> {
    say!("building {package} ({TARGET}, release)...");
    let status = cargo()
        .current_dir(workspace_root())
        .args(["build", "-p", package, "--target", TARGET, "--release"])
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        return Err(format!("cargo build of {package} failed ({status})"));
    }
    let dir = target_dir().join(TARGET).join("release");
    let elf_path = dir.join(package);
    let elf = std::fs::read(&elf_path).map_err(|e| format!("cannot read {}: {e}", elf_path.display()))?;
    let flat = elf::flatten(&elf)?;
    if flat.entry != flat.base {
        return Err(format!(
            "{package}: entry {:#x} is not the image start {:#x}: the Image header must come first",
            flat.entry, flat.base
        ));
    }
    if flat.bytes.get(IMAGE_MAGIC_OFFSET..IMAGE_MAGIC_OFFSET + 4) != Some(&IMAGE_MAGIC[..]) {
        return Err(format!("{package}: the image lacks the arm64 Image header magic"));
    }
    if let Some(load) = load {
        if flat.base != load {
            return Err(format!(
                "{package}: linked at {:#x}, but loaded at {load:#x}",
                flat.base
            ));
        }
        // Booted alone with `-kernel`, QEMU places the image at RAM base +
        // the header's text_offset: that must be the same address.
        let text_offset = flat
            .bytes
            .get(8..16)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
            .unwrap_or(0);
        if VIRT_RAM_BASE + text_offset != load {
            return Err(format!(
                "{package}: Image header text_offset {text_offset:#x} does not place it at {load:#x}"
            ));
        }
    }
    let bin = dir.join(format!("{package}.bin"));
    std::fs::write(&bin, &flat.bytes).map_err(|e| format!("cannot write {}: {e}", bin.display()))?;
    say!(
        "image {} ({} bytes, loads at {:#x})",
        bin.display(),
        flat.bytes.len(),
        flat.base
    );
    Ok(bin)
}
