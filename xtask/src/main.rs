//! `cargo xtask`: Warden's build, run and test driver.
//!
//! * `cargo xtask run`: install what is missing, build the EL2 image, boot
//!   it under QEMU and stream its console; the exit status says whether
//!   Warden got to its clean power-off.
//! * `cargo xtask test`: install what is missing, run `cargo test
//!   --workspace`, then boot the image in several QEMU configurations and
//!   check what it prints.
//! * `cargo xtask build`: only build the image and print its path.

mod elf;
mod image;
mod install;
mod qemu;
mod suite;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// An error for the user: printed as `[xtask] error: ...`.
pub type Error = String;
/// Result with a printable error.
pub type Result<T> = std::result::Result<T, Error>;

/// The workspace root (the parent of xtask/).
pub fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

/// Print a progress line prefixed with `[xtask]`.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => { println!("[xtask] {}", format!($($arg)*)) };
}

const USAGE: &str = "\
usage: cargo xtask <command> [options]

commands:
  run [--timeout SECS] [-- QEMU-ARGS...]
        build Warden and boot it under QEMU at EL2, streaming its console;
        fails on a Warden panic, a non-zero QEMU status or a timeout (default 60 s)
  test [--verbose] [--qemu-only]
        cargo test --workspace, then the QEMU boot tests (PASS/FAIL each);
        --verbose shows every console line, --qemu-only skips cargo test
  build
        build the EL2 image and print its path

run and test first install what is missing: the aarch64-unknown-none
Rust target and QEMU >= 10 (Debian: qemu-system-arm from bookworm-backports).";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("run") => cmd_run(&args[1..]),
        Some("test") => cmd_test(&args[1..]),
        Some("build") => image::build().map(|img| {
            say!("image: {}", img.display());
            ExitCode::SUCCESS
        }),
        Some("help" | "-h" | "--help") => {
            println!("{USAGE}");
            Ok(ExitCode::SUCCESS)
        }
        _ => {
            eprintln!("{USAGE}");
            Ok(ExitCode::from(2))
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("[xtask] error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn cmd_run(args: &[String]) -> Result<ExitCode> {
    let mut timeout = Duration::from_secs(60);
    let mut extra = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--timeout" => {
                let secs = it
                    .next()
                    .and_then(|s| s.parse::<u64>().ok())
                    .ok_or("--timeout needs seconds")?;
                timeout = Duration::from_secs(secs);
            }
            "--" => extra.extend(it.by_ref().cloned()),
            other => return Err(format!("unknown option {other:?} for run")),
        }
    }
    install::ensure_prerequisites()?;
    let image = image::build()?;
    let config = qemu::Config::default();
    say!(
        "booting {} under QEMU (timeout {} s)",
        image.display(),
        timeout.as_secs()
    );
    say!("$ {}", config.command_line(&image, &extra));
    let run = qemu::run(&config, &image, &extra, timeout, true)?;
    let verdict = qemu::verdict(&run);
    match verdict {
        Ok(()) => {
            say!("Warden powered off cleanly");
            Ok(ExitCode::SUCCESS)
        }
        Err(why) => {
            say!("FAILED: {why}");
            let code = run.status.and_then(|s| s.code()).filter(|&c| c != 0).unwrap_or(1);
            Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
        }
    }
}

fn cmd_test(args: &[String]) -> Result<ExitCode> {
    let mut verbose = false;
    let mut host = true;
    for a in args {
        match a.as_str() {
            "--verbose" | "-v" => verbose = true,
            "--qemu-only" => host = false,
            other => return Err(format!("unknown option {other:?} for test")),
        }
    }
    install::ensure_prerequisites()?;
    let host_ok = if host {
        say!("running cargo test --workspace");
        let ok = suite::cargo_test_workspace()?;
        say!("{}: cargo test --workspace", if ok { "PASS" } else { "FAIL" });
        ok
    } else {
        say!("skipping cargo test --workspace (--qemu-only)");
        true
    };
    let (passed, failed) = match image::build() {
        Ok(image) => suite::run_qemu_tests(&image, verbose)?,
        Err(e) => {
            say!("FAIL: building the EL2 image: {e}");
            (0, suite::qemu_tests().len())
        }
    };
    println!();
    say!(
        "summary: cargo test --workspace {}, QEMU tests {passed} passed, {failed} failed",
        if !host {
            "skipped"
        } else if host_ok {
            "passed"
        } else {
            "FAILED"
        }
    );
    println!("qemu: {passed} passed, {failed} failed");
    Ok(if host_ok && failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
