//! `cargo xtask test`: the host tests, then QEMU boot tests that check what
//! Warden prints.
//!
//! Each QEMU test boots the image in one configuration, waits for QEMU to
//! exit (killing it after [`TIMEOUT`]) and checks: QEMU's exit status, a set
//! of lines that must appear in order, and lines that must not appear. The
//! isolation test boots Warden with the test host (hosts/testhost) and
//! also requires its report: every scenario's RESULT line PASS and the
//! final `TESTHOST DONE` (report.rs).

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::image::cargo;
use crate::qemu::{self, Config, DONE_MARKER, EXCEPTION_MARKER, PANIC_MARKER};
use crate::report;
use crate::{say, workspace_root, Result};

/// How long one boot may take before it counts as a hang.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// One QEMU boot and what it must print.
pub struct QemuTest {
    /// Name printed with PASS/FAIL.
    pub name: &'static str,
    /// The machine.
    pub config: Config,
    /// Substrings that must appear in this order (each on the line of the
    /// previous one or later).
    pub expect: Vec<&'static str>,
    /// Substrings that must appear on no line.
    pub forbid: Vec<&'static str>,
    /// Boot the test host with Warden and require its isolation report
    /// to pass (every scenario PASS, `TESTHOST DONE` printed).
    pub isolation: bool,
}

/// What a clean boot of the default machine prints, in order.
const CLEAN_BOOT: &[&str] = &[
    "Warden 0.",
    "running at EL2",
    "memory map (from the device tree):",
    "  RAM      0x040000000..0x080000000      1 GiB",
    "  UART     0x009000000..0x009001000      4 KiB  arm,pl011",
    "  SMMU     0x009050000..0x009070000    128 KiB  arm,smmu-v3",
    "  GIC dist 0x008000000..0x008010000     64 KiB  arm,gic-v3",
    "  PSCI     method smc",
    "  CPUs     2",
    "PSCI 1.",
    "hypervisor image 0x040200000..",
    "  text   0x040200000..",
    "  pool   ",
    "Warden's memory: image 0x40200000..",
    "pools: EL2 table 128 pages, host stage-2 ",
    "EL2 page table: 48-bit VA, 4 KiB granule, start level 0",
    "  text   0x040200000..",
    "RX   Normal-WB",
    "  rodata ",
    "R    Normal-WB",
    "  stack  ",
    "RW   Normal-WB",
    "  uart   0x009000000..0x009001000      4 KiB  RW   Device-nGnRE",
    "  table pages used: ",
    "EL2 MMU on: SCTLR_EL2=",
    "(identity)",
    "EL2 fixmap at 0x800000000000: 8 page slots and 8 2 MiB block slots",
    "host device tree at 0x48000000: ",
    "SMMU registers 0x9050000..0x9070000 donated to Warden",
    "SMMUv3 at 0x9050000: stage-2",
    "SMMUv3: streams 0..256 translate through the host stage-2 shadow",
    "SMMUv3: 0 events after takeover",
    "CPUs: 2 (boot CPU MPIDR 0x0)",
    DONE_MARKER,
];

/// What Warden prints when it boots the test host, in order (the test
/// host's own lines are judged by the isolation report).
const HOST_BOOT: &[&str] = &["running at EL2", "EL2 MMU on", report::DONE_PREFIX];

/// The QEMU tests.
pub fn qemu_tests() -> Vec<QemuTest> {
    let failures = vec![PANIC_MARKER, EXCEPTION_MARKER];
    vec![
        QemuTest {
            name: "boot (virt, 2 CPUs, 1 GiB)",
            config: Config::default(),
            expect: CLEAN_BOOT.to_vec(),
            forbid: failures.clone(),
            isolation: false,
        },
        QemuTest {
            name: "boot (virt, 1 CPU, 512 MiB): memory map follows the device tree",
            config: Config {
                memory: "512M".into(),
                cpus: 1,
                ..Config::default()
            },
            expect: vec![
                "running at EL2",
                "  RAM      0x040000000..0x060000000    512 MiB",
                "  CPUs     1",
                "EL2 MMU on",
                DONE_MARKER,
            ],
            forbid: failures.clone(),
            isolation: false,
        },
        QemuTest {
            name: "W^X: a write to .rodata faults and is reported",
            config: Config {
                append: Some("warden.selftest=wxn".into()),
                ..Config::default()
            },
            expect: vec![
                "EL2 MMU on",
                "self-test: writing to read-only",
                "WARDEN EXCEPTION: synchronous from current EL with SP_EL2",
                "EC 0x25 data abort, same EL, permission fault at level 3 on write",
                "powering off after the exception",
            ],
            forbid: vec![DONE_MARKER, PANIC_MARKER],
            isolation: false,
        },
        QemuTest {
            name: "panic: reported and powered off",
            config: Config {
                append: Some("warden.selftest=panic".into()),
                ..Config::default()
            },
            expect: vec!["EL2 MMU on", "WARDEN PANIC: self-test panic at "],
            forbid: vec![DONE_MARKER, EXCEPTION_MARKER],
            isolation: false,
        },
        QemuTest {
            name: "isolation: Warden + test host (virt, 4 CPUs, 1 GiB), every scenario PASS",
            config: Config {
                cpus: 4,
                ..Config::default()
            },
            expect: HOST_BOOT.to_vec(),
            forbid: failures,
            isolation: true,
        },
    ]
}

/// Check a run against a test's expectations; the reasons it failed.
/// Expectations match in order: each on the line of the previous match or
/// a later one.
pub fn check(test: &QemuTest, run: &qemu::Run) -> Vec<String> {
    let mut problems = Vec::new();
    if run.timed_out {
        problems.push(format!("hung: killed after {} s", TIMEOUT.as_secs()));
    } else if let Some(status) = run.status {
        if !status.success() {
            problems.push(format!("QEMU exited with {status}"));
        }
    }
    let mut from = 0;
    for want in &test.expect {
        match run.lines[from..].iter().position(|l| l.contains(want)) {
            // The next expectation may sit on the same line.
            Some(i) => from += i,
            None => {
                problems.push(format!("missing (in order) line containing {want:?}"));
                break;
            }
        }
    }
    for bad in &test.forbid {
        if let Some(line) = run.lines.iter().find(|l| l.contains(bad)) {
            problems.push(format!("unexpected line: {line}"));
        }
    }
    if test.isolation {
        problems.extend(report::parse(&run.lines).problems(false));
    }
    problems
}

/// `cargo test --workspace`; whether it passed.
pub fn cargo_test_workspace() -> Result<bool> {
    let status = cargo()
        .current_dir(workspace_root())
        .args(["test", "--workspace"])
        .status()
        .map_err(|e| format!("cannot run cargo test: {e}"))?;
    Ok(status.success())
}

/// Run every QEMU test; (passed, failed). `testhost` is the test host's
/// image, or why it could not be built (the isolation test then fails).
pub fn run_qemu_tests(
    image: &Path,
    testhost: std::result::Result<&Path, &str>,
    verbose: bool,
) -> Result<(usize, usize)> {
    let tests = qemu_tests();
    say!("running {} QEMU tests", tests.len());
    let (mut passed, mut failed) = (0, 0);
    for test in &tests {
        let mut config = test.config.clone();
        if test.isolation {
            match testhost {
                Ok(path) => config.host = Some(PathBuf::from(path)),
                Err(e) => {
                    failed += 1;
                    println!("[xtask] FAIL {}", test.name);
                    println!("[xtask]      building the test host: {e}");
                    continue;
                }
            }
        }
        let run = qemu::run(&config, image, &[], TIMEOUT, false)?;
        let problems = check(test, &run);
        let secs = run.elapsed.as_secs_f64();
        if problems.is_empty() {
            passed += 1;
            println!("[xtask] PASS {} ({secs:.1} s)", test.name);
        } else {
            failed += 1;
            println!("[xtask] FAIL {} ({secs:.1} s)", test.name);
            for p in &problems {
                println!("[xtask]      {p}");
            }
            println!("[xtask]      $ {}", config.command_line(image, &[]));
        }
        if test.isolation && (verbose || !problems.is_empty()) {
            for line in report::parse(&run.lines).render().lines() {
                println!("    {line}");
            }
        }
        if verbose || !problems.is_empty() {
            for line in &run.lines {
                println!("    | {line}");
            }
            for line in run.stderr.lines() {
                println!("    ! {line}");
            }
        }
    }
    Ok((passed, failed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn run_with(lines: &[&str]) -> qemu::Run {
        qemu::Run {
            status: Some(Command::new("true").status().unwrap()),
            timed_out: false,
            lines: lines.iter().map(|s| s.to_string()).collect(),
            stderr: String::new(),
            elapsed: Duration::from_secs(1),
        }
    }

    #[test]
    fn order_and_forbidden_lines() {
        let t = QemuTest {
            name: "t",
            config: Config::default(),
            expect: vec!["a", "b"],
            forbid: vec!["PANIC"],
            isolation: false,
        };
        assert!(check(&t, &run_with(&["xa", "yb"])).is_empty());
        assert!(check(&t, &run_with(&["ab"])).is_empty());
        assert_eq!(check(&t, &run_with(&["b", "a"])).len(), 1);
        assert_eq!(check(&t, &run_with(&["a", "b", "PANIC"])).len(), 1);
        let mut hung = run_with(&["a", "b"]);
        hung.timed_out = true;
        assert_eq!(check(&t, &hung).len(), 1);
    }

    #[test]
    fn isolation_needs_the_report() {
        let t = QemuTest {
            name: "t",
            config: Config::default(),
            expect: vec!["EL2 MMU on"],
            forbid: vec!["PANIC"],
            isolation: true,
        };
        let mut lines: Vec<String> = vec!["EL2 MMU on".into()];
        lines.extend(report::SCENARIOS.iter().map(|(n, _)| format!("RESULT {n} PASS ok")));
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        // No DONE line: the test host did not finish.
        assert_eq!(check(&t, &run_with(&refs)).len(), 1);
        lines.push("TESTHOST DONE 9/9".into());
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        assert!(check(&t, &run_with(&refs)).is_empty());
        // A FAIL and a timeout are both reported.
        lines[3] = "RESULT lazy-map FAIL 900 faults".into();
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        let mut hung = run_with(&refs);
        hung.timed_out = true;
        let p = check(&t, &hung);
        assert!(p.iter().any(|x| x.contains("hung")), "{p:?}");
        assert!(p.iter().any(|x| x.contains("lazy-map: FAIL")), "{p:?}");
    }
}
