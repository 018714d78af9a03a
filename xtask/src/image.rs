//! Building the EL2 image: `cargo build` for aarch64-unknown-none, then the
//! ELF flattened into the raw arm64 `Image` that QEMU's `-kernel` loads.

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

/// Build warden-hyp (release) and write `warden-hyp.bin` next to the ELF.
/// Returns the path of the raw image.
pub fn build() -> Result<PathBuf> {
    say!("building warden-hyp ({TARGET}, release)...");
    let status = cargo()
        .current_dir(workspace_root())
        .args(["build", "-p", "warden-hyp", "--target", TARGET, "--release"])
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        return Err(format!("cargo build of warden-hyp failed ({status})"));
    }
    let dir = target_dir().join(TARGET).join("release");
    let elf_path = dir.join("warden-hyp");
    let elf = std::fs::read(&elf_path).map_err(|e| format!("cannot read {}: {e}", elf_path.display()))?;
    let flat = elf::flatten(&elf)?;
    if flat.entry != flat.base {
        return Err(format!(
            "entry {:#x} is not the image start {:#x}: the Image header must come first",
            flat.entry, flat.base
        ));
    }
    if flat.bytes.get(IMAGE_MAGIC_OFFSET..IMAGE_MAGIC_OFFSET + 4) != Some(&IMAGE_MAGIC[..]) {
        return Err("the image lacks the arm64 Image header magic".into());
    }
    let bin = dir.join("warden-hyp.bin");
    std::fs::write(&bin, &flat.bytes).map_err(|e| format!("cannot write {}: {e}", bin.display()))?;
    say!(
        "image {} ({} bytes, loads at {:#x})",
        bin.display(),
        flat.bytes.len(),
        flat.base
    );
    Ok(bin)
}
