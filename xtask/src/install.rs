//! Prerequisites: the `aarch64-unknown-none` Rust target and QEMU >= 10.
//!
//! Each check prints one progress line and is quick when everything is in
//! place. Missing pieces are installed: the target with rustup, QEMU with
//! apt (on Debian bookworm from bookworm-backports, which carries QEMU 10),
//! through sudo when not root.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::image::TARGET;
use crate::qemu::QEMU;
use crate::Result;

/// Oldest QEMU major version that works (virt with SMMUv3 stage 2 and
/// the machine options used by the runner).
pub const MIN_QEMU_MAJOR: u32 = 10;

const BACKPORTS_LINE: &str = "deb http://deb.debian.org/debian bookworm-backports main";
const BACKPORTS_FILE: &str = "/etc/apt/sources.list.d/bookworm-backports.list";

/// Print `[xtask] checking WHAT... ` without a newline.
fn checking(what: &str) {
    print!("[xtask] checking {what}... ");
    let _ = std::io::stdout().flush();
}

/// Ensure every prerequisite, installing what is missing.
pub fn ensure_prerequisites() -> Result<()> {
    ensure_target()?;
    ensure_qemu()
}

/// Output of a command, if it ran and succeeded.
fn output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).stderr(Stdio::null()).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn ensure_target() -> Result<()> {
    checking(&format!("{TARGET} target"));
    match output("rustup", &["target", "list", "--installed"]) {
        Some(list) if list.lines().any(|l| l.trim() == TARGET) => {
            println!("ok");
            Ok(())
        }
        Some(_) => {
            println!("installing");
            run_step("rustup", &["target", "add", TARGET], &[])
                .map_err(|e| format!("could not install the {TARGET} target: {e}"))
        }
        None => {
            // No rustup: accept a toolchain that already ships the target.
            let sysroot = output("rustc", &["--print", "sysroot"]).unwrap_or_default();
            if Path::new(sysroot.trim()).join("lib/rustlib").join(TARGET).is_dir() {
                println!("ok (no rustup; found in the sysroot)");
                Ok(())
            } else {
                println!("missing");
                Err(format!(
                    "rustup is not available to add the {TARGET} target; install rustup \
                     (https://rustup.rs) or a toolchain with that target"
                ))
            }
        }
    }
}

/// Parse "QEMU emulator version 10.0.2 (...)" into (10, 0).
pub fn parse_qemu_version(text: &str) -> Option<(u32, u32)> {
    let rest = text.split("version ").nth(1)?;
    let mut parts = rest.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next().and_then(|m| m.parse().ok()).unwrap_or(0);
    Some((major, minor))
}

fn qemu_version() -> Option<(u32, u32)> {
    parse_qemu_version(&output(QEMU, &["--version"])?)
}

fn ensure_qemu() -> Result<()> {
    checking(&format!("{QEMU} >= {MIN_QEMU_MAJOR}"));
    match qemu_version() {
        Some((major, minor)) if major >= MIN_QEMU_MAJOR => {
            println!("ok ({major}.{minor})");
            return Ok(());
        }
        Some((major, minor)) => println!("found {major}.{minor}, too old: installing"),
        None => println!("missing: installing"),
    }
    install_qemu()?;
    checking(&format!("{QEMU} after installation"));
    match qemu_version() {
        Some((major, minor)) if major >= MIN_QEMU_MAJOR => {
            println!("ok ({major}.{minor})");
            Ok(())
        }
        found => {
            println!("still unusable");
            Err(format!(
                "{QEMU} {} after installation; QEMU >= {MIN_QEMU_MAJOR} is needed \
                 (is an older one earlier in PATH?)",
                found.map_or("missing".to_string(), |(a, b)| format!("{a}.{b} found"))
            ))
        }
    }
}

fn is_root() -> bool {
    output("id", &["-u"]).is_some_and(|s| s.trim() == "0")
}

/// Run a command with a progress line; its output goes to the terminal.
fn run_step(program: &str, args: &[&str], env: &[(&str, &str)]) -> Result<()> {
    println!("[xtask]   $ {program} {}", args.join(" "));
    let status = Command::new(program)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .status()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{program} {}` failed ({status})", args.join(" ")))
    }
}

/// Run a command as root: directly, or through sudo without a password
/// prompt (which would hang a CI run).
fn run_root(args: &[&str]) -> Result<()> {
    if is_root() {
        run_step(args[0], &args[1..], &[])
    } else {
        let mut sudo = vec!["-n"];
        sudo.extend_from_slice(args);
        run_step("sudo", &sudo, &[]).map_err(|e| format!("{e}: installing needs root or passwordless sudo (`sudo -n`)"))
    }
}

/// The release codename from /etc/os-release (e.g. "bookworm").
fn os_codename() -> Option<String> {
    let text = std::fs::read_to_string("/etc/os-release").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
        .map(|v| v.trim_matches('"').to_string())
}

/// Whether any APT source already names bookworm-backports.
fn backports_configured() -> bool {
    let mut files = vec![Path::new("/etc/apt/sources.list").to_path_buf()];
    if let Ok(dir) = std::fs::read_dir("/etc/apt/sources.list.d") {
        files.extend(dir.flatten().map(|e| e.path()));
    }
    files.iter().any(|f| {
        std::fs::read_to_string(f).is_ok_and(|t| {
            t.lines()
                .any(|l| !l.trim_start().starts_with('#') && l.contains("bookworm-backports"))
        })
    })
}

fn install_qemu() -> Result<()> {
    if output("apt-get", &["--version"]).is_none() {
        return Err(format!(
            "{QEMU} >= {MIN_QEMU_MAJOR} is missing and apt-get is not available: \
             install QEMU {MIN_QEMU_MAJOR} or newer (qemu-system-aarch64) by hand"
        ));
    }
    let codename = os_codename().unwrap_or_default();
    let mut install = vec!["env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y"];
    if codename == "bookworm" {
        print!("[xtask] checking APT source bookworm-backports... ");
        let _ = std::io::stdout().flush();
        if backports_configured() {
            println!("ok");
        } else {
            println!("adding {BACKPORTS_FILE}");
            if is_root() {
                std::fs::write(BACKPORTS_FILE, format!("{BACKPORTS_LINE}\n"))
                    .map_err(|e| format!("cannot write {BACKPORTS_FILE}: {e}"))?;
            } else {
                let mut child = Command::new("sudo")
                    .args(["tee", BACKPORTS_FILE])
                    .stdin(Stdio::piped())
                    .stdout(Stdio::null())
                    .spawn()
                    .map_err(|e| format!("cannot run sudo: {e}"))?;
                if let Some(mut stdin) = child.stdin.take() {
                    writeln!(stdin, "{BACKPORTS_LINE}").map_err(|e| format!("writing {BACKPORTS_FILE}: {e}"))?;
                }
                let status = child.wait().map_err(|e| format!("sudo tee: {e}"))?;
                if !status.success() {
                    return Err(format!("could not write {BACKPORTS_FILE} ({status})"));
                }
            }
        }
        install.extend(["-t", "bookworm-backports"]);
    }
    install.push("qemu-system-arm");
    say_step("apt-get update");
    run_root(&["apt-get", "update"]).map_err(|e| format!("QEMU installation failed: {e}"))?;
    say_step("installing qemu-system-arm");
    run_root(&install).map_err(|e| format!("QEMU installation failed: {e}"))
}

fn say_step(what: &str) {
    println!("[xtask] {what}...");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemu_versions() {
        assert_eq!(
            parse_qemu_version("QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)\nCopyright"),
            Some((10, 0))
        );
        assert_eq!(parse_qemu_version("QEMU emulator version 7.2.15"), Some((7, 2)));
        assert_eq!(parse_qemu_version("QEMU emulator version 11"), Some((11, 0)));
        assert_eq!(parse_qemu_version("nothing here"), None);
    }
}
