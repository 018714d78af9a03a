//! `cargo xtask`: Warden's build, run and test driver.
//!
//! * `cargo xtask run`: install what is missing, build Warden's EL2 image
//!   and the hostile test host, boot Warden under QEMU with the test host
//!   as its host kernel, stream the console, then print the isolation
//!   report (scenario | expectation | result); the exit status says whether
//!   every scenario passed. `--no-host` boots Warden alone, as before the
//!   test host existed.
//! * `cargo xtask test`: install what is missing, run `cargo test
//!   --workspace`, then boot the image in several QEMU configurations
//!   (the test host among them) and check what they print.
//! * `cargo xtask testhost-standalone`: boot the test host alone at EL1
//!   (no EL2, no Warden), for working on the test host itself.
//! * `cargo xtask bench`: Warden with the test host under `-icount
//!   shift=0`; prints instructions per hypercall, per stage-2 fault, per
//!   donation (SMMU update included) and boot-to-host-entry.
//! * `cargo xtask build`: only build the images and print their paths.

mod elf;
mod image;
mod install;
mod qemu;
mod report;
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
  run [--timeout SECS] [--cpus N] [--no-host] [-- QEMU-ARGS...]
        build Warden and the test host, boot Warden under QEMU at EL2 with the
        test host as its host, stream the console and print the isolation
        report; fails on a failed or missing scenario, a Warden panic, a
        non-zero QEMU status or a timeout (default 60 s). --no-host boots
        Warden alone (it must reach its clean power-off); --cpus: 1 to 4 (2)
  test [--verbose] [--qemu-only]
        cargo test --workspace, then the QEMU boot tests (PASS/FAIL each);
        --verbose shows every console line, --qemu-only skips cargo test
  bench [--timeout SECS] [--cpus N]
        Warden + test host under -icount shift=0: instruction counts per
        hypercall, stage-2 fault and donation, and boot to host entry
  testhost-standalone [--timeout SECS] [--cpus N] [-- QEMU-ARGS...]
        boot the test host alone at EL1 (no EL2, PSCI via HVC) and print its
        report; scenarios that need Warden SKIP; fails on a FAIL, a missing
        line or a timeout
  build
        build the EL2 image and the test host and print their paths

run and test first install what is missing: the aarch64-unknown-none
Rust target and QEMU >= 10 (Debian: qemu-system-arm from bookworm-backports).";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("run") => cmd_run(&args[1..]),
        Some("test") => cmd_test(&args[1..]),
        Some("testhost-standalone") => cmd_standalone(&args[1..]),
        Some("bench") => cmd_bench(&args[1..]),
        Some("build") => image::build().and_then(|img| {
            let host = image::build_testhost()?;
            say!("image: {}", img.display());
            say!("test host: {}", host.display());
            Ok(ExitCode::SUCCESS)
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

/// Options shared by `run` and `testhost-standalone`.
struct RunOptions {
    timeout: Duration,
    cpus: u32,
    no_host: bool,
    extra: Vec<String>,
}

fn run_options(args: &[String], allow_no_host: bool) -> Result<RunOptions> {
    let mut o = RunOptions {
        timeout: Duration::from_secs(60),
        cpus: 2,
        no_host: false,
        extra: Vec::new(),
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--timeout" => {
                let secs = it
                    .next()
                    .and_then(|s| s.parse::<u64>().ok())
                    .ok_or("--timeout needs seconds")?;
                o.timeout = Duration::from_secs(secs);
            }
            "--cpus" => {
                o.cpus = it
                    .next()
                    .and_then(|s| s.parse::<u32>().ok())
                    .filter(|n| (1..=4).contains(n))
                    .ok_or("--cpus needs 1 to 4 (the test host has four stacks)")?;
            }
            "--no-host" if allow_no_host => o.no_host = true,
            "--" => o.extra.extend(it.by_ref().cloned()),
            other => return Err(format!("unknown option {other:?}")),
        }
    }
    Ok(o)
}

/// The exit code for a failed run: QEMU's own if it failed, else 1.
fn failure_code(run: &qemu::Run) -> ExitCode {
    let code = run.status.and_then(|s| s.code()).filter(|&c| c != 0).unwrap_or(1);
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

fn cmd_run(args: &[String]) -> Result<ExitCode> {
    let o = run_options(args, true)?;
    install::ensure_prerequisites()?;
    let image = image::build()?;
    let host = if o.no_host {
        None
    } else {
        Some(image::build_testhost()?)
    };
    let config = qemu::Config {
        cpus: o.cpus,
        host: host.clone(),
        ..qemu::Config::default()
    };
    match &host {
        Some(h) => say!(
            "booting {} with the test host {} under QEMU (timeout {} s)",
            image.display(),
            h.display(),
            o.timeout.as_secs()
        ),
        None => say!(
            "booting {} under QEMU (timeout {} s)",
            image.display(),
            o.timeout.as_secs()
        ),
    }
    say!("$ {}", config.command_line(&image, &o.extra));
    let run = qemu::run(&config, &image, &o.extra, o.timeout, true)?;
    if host.is_none() {
        return Ok(match qemu::verdict(&run) {
            Ok(()) => {
                say!("Warden powered off cleanly");
                ExitCode::SUCCESS
            }
            Err(why) => {
                say!("FAILED: {why}");
                failure_code(&run)
            }
        });
    }
    let report = report::parse(&run.lines);
    println!();
    print!("{}", report.render());
    let mut problems = qemu::host_run_problems(&run);
    problems.extend(report.problems(false));
    if problems.is_empty() {
        say!("every scenario passed; the test host powered off cleanly");
        Ok(ExitCode::SUCCESS)
    } else {
        for p in &problems {
            say!("FAILED: {p}");
        }
        Ok(failure_code(&run))
    }
}

/// `cargo xtask bench`: Warden with the test host under `-icount shift=0`
/// (one virtual nanosecond per instruction, so the 1 GHz counter counts
/// instructions, deterministically) and `testhost.bench`; prints the test
/// host's `BENCH` lines and Warden's boot-to-host-entry figure as a table.
fn cmd_bench(args: &[String]) -> Result<ExitCode> {
    let mut o = run_options(args, false)?;
    o.extra.extend(["-icount".to_string(), "shift=0".to_string()]);
    install::ensure_prerequisites()?;
    let image = image::build()?;
    let host = image::build_testhost()?;
    let config = qemu::Config {
        cpus: o.cpus,
        host: Some(host),
        append: Some("testhost.bench".into()),
        ..qemu::Config::default()
    };
    say!("$ {}", config.command_line(&image, &o.extra));
    let run = qemu::run(&config, &image, &o.extra, o.timeout, false)?;
    let mut rows = Vec::new();
    for line in &run.lines {
        if let Some(rest) = line.split("boot to host entry: ").nth(1) {
            // "... us (N counter ticks at F Hz)": ticks = instructions here.
            if let Some(ticks) = rest.split('(').nth(1).and_then(|t| t.split_whitespace().next()) {
                rows.push(format!("{:<38} {:>12}", "boot to host entry (Warden, EL2)", ticks));
            }
        }
        if let Some(rest) = line.split("BENCH ").nth(1) {
            if rest.starts_with("baseline") || rest.starts_with("warning") || rest.starts_with("done") {
                say!("{line}");
                continue;
            }
            let (name, figures) = rest.split_once(" first=").unwrap_or((rest, ""));
            let field = |k: &str| {
                figures
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix(k))
                    .unwrap_or("?")
                    .to_string()
            };
            let first = figures.split_whitespace().next().unwrap_or("?");
            rows.push(format!("{name:<38} {:>12} {first:>12}", field("min=")));
        }
    }
    println!(
        "{:<38} {:>12} {:>12}",
        "operation (instructions, -icount shift=0)", "min", "first"
    );
    for r in &rows {
        println!("{r}");
    }
    let mut problems = qemu::host_run_problems(&run);
    if !run.lines.iter().any(|l| l.contains("BENCH done")) {
        problems.push("no \"BENCH done\" line: the test host did not finish measuring".into());
    }
    if run.lines.iter().any(|l| l.contains("BENCH warning")) {
        problems.push("a measured call failed".into());
    }
    if rows.len() < 7 {
        problems.push(format!("expected 7 figures, got {}", rows.len()));
    }
    if problems.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        for p in &problems {
            say!("FAILED: {p}");
        }
        Ok(failure_code(&run))
    }
}

fn cmd_standalone(args: &[String]) -> Result<ExitCode> {
    let o = run_options(args, false)?;
    install::ensure_prerequisites()?;
    let host = image::build_testhost()?;
    let config = qemu::Config {
        cpus: o.cpus,
        standalone: true,
        ..qemu::Config::default()
    };
    say!(
        "booting the test host {} alone at EL1 (no Warden; timeout {} s)",
        host.display(),
        o.timeout.as_secs()
    );
    say!("$ {}", config.command_line(&host, &o.extra));
    let run = qemu::run(&config, &host, &o.extra, o.timeout, true)?;
    let report = report::parse(&run.lines);
    println!();
    print!("{}", report.render());
    let mut problems = qemu::host_run_problems(&run);
    problems.extend(report.problems(true));
    if problems.is_empty() {
        say!("standalone run complete (SKIP: needs Warden)");
        Ok(ExitCode::SUCCESS)
    } else {
        for p in &problems {
            say!("FAILED: {p}");
        }
        Ok(failure_code(&run))
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
        Ok(image) => {
            let host = image::build_testhost();
            suite::run_qemu_tests(&image, host.as_deref().map_err(String::as_str), verbose)?
        }
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
