//! Running Warden under QEMU: the command line, a run with a timeout that
//! captures (and optionally streams) the console, and the verdict on a run.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::image::TESTHOST_LOAD;
use crate::Result;

/// The QEMU binary.
pub const QEMU: &str = "qemu-system-aarch64";

/// A line Warden prints on a fatal error (panic or bad device tree).
pub const PANIC_MARKER: &str = "WARDEN PANIC";
/// A line Warden prints on an unexpected exception.
pub const EXCEPTION_MARKER: &str = "WARDEN EXCEPTION";
/// The line Warden prints just before a clean power-off.
pub const DONE_MARKER: &str = "Warden: done, powering off";

/// The machine to boot.
#[derive(Clone, Debug)]
pub struct Config {
    /// RAM size (`-m`).
    pub memory: String,
    /// CPU count (`-smp`).
    pub cpus: u32,
    /// Kernel command line (`-append`), which QEMU puts in
    /// `/chosen/bootargs`.
    pub append: Option<String>,
    /// The test host image, placed at [`TESTHOST_LOAD`] beside Warden by
    /// QEMU's generic loader (which, without `cpu-num`, does not touch the
    /// PC) and announced to Warden with `warden.host=` on the command line.
    pub host: Option<PathBuf>,
    /// Boot the image itself at EL1 without EL2 (`virtualization=off`):
    /// the test host alone, for debugging it without Warden.
    pub standalone: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            memory: "1G".into(),
            cpus: 2,
            append: None,
            host: None,
            standalone: false,
        }
    }
}

impl Config {
    /// Whether the test host runs (beside Warden or alone): it needs the
    /// edu device for `dma-edu`.
    pub fn runs_test_host(&self) -> bool {
        self.host.is_some() || self.standalone
    }

    /// QEMU's arguments: the virt machine with EL2 (`virtualization=on`,
    /// no EL3 firmware, so `-kernel` enters at EL2 with the device tree in
    /// x0 and PSCI via SMC handled by QEMU), GICv3, an SMMUv3 with stage 2,
    /// the console on stdio. Standalone, the same machine without EL2: the
    /// image enters at EL1 and PSCI goes through HVC.
    ///
    /// With the test host: QEMU's `edu` PCI device with a 64-bit DMA mask
    /// (its default mask is 28 bits, below RAM) for the DMA scenario, and
    /// `-mem-prealloc`: the test host touches every page of RAM, and
    /// letting QEMU allocate guest RAM page by page on first touch costs
    /// seconds, allocating it up front a fraction of that.
    pub fn args(&self, image: &Path, extra: &[String]) -> Vec<String> {
        let machine = if self.standalone {
            "virt,gic-version=3,iommu=smmuv3"
        } else {
            "virt,virtualization=on,gic-version=3,iommu=smmuv3"
        };
        let mut args: Vec<String> = ["-M", machine, "-cpu", "max", "-global", "arm-smmuv3.stage=2"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.extend(["-smp".into(), self.cpus.to_string(), "-m".into(), self.memory.clone()]);
        args.extend(["-nographic".into(), "-kernel".into(), image.display().to_string()]);
        let mut append = self.append.clone();
        if let Some(host) = &self.host {
            args.extend([
                "-device".into(),
                format!("loader,file={},addr={TESTHOST_LOAD:#x},force-raw=on", host.display()),
            ]);
            let word = format!("warden.host={TESTHOST_LOAD:#x}");
            append = Some(match append {
                Some(a) => format!("{word} {a}"),
                None => word,
            });
        }
        if self.runs_test_host() {
            args.extend([
                "-device".into(),
                "edu,dma_mask=0xffffffffffffffff".into(),
                "-mem-prealloc".into(),
            ]);
        }
        if let Some(a) = append {
            args.extend(["-append".into(), a]);
        }
        args.extend(extra.iter().cloned());
        args
    }

    /// The command line, for display.
    pub fn command_line(&self, image: &Path, extra: &[String]) -> String {
        let mut s = QEMU.to_string();
        for a in self.args(image, extra) {
            s.push(' ');
            if a.contains(' ') {
                s.push_str(&format!("\"{a}\""));
            } else {
                s.push_str(&a);
            }
        }
        s
    }
}

/// What a QEMU run produced.
#[derive(Debug)]
pub struct Run {
    /// QEMU's exit status; `None` if it was killed on timeout.
    pub status: Option<ExitStatus>,
    /// Whether the timeout hit.
    pub timed_out: bool,
    /// The console output (stdout), line by line, without `\r`.
    pub lines: Vec<String>,
    /// QEMU's own messages (stderr).
    pub stderr: String,
    /// How long it ran.
    pub elapsed: Duration,
}

/// Boot `image` and wait up to `timeout`; with `stream`, echo the console
/// to our stdout as it arrives. On timeout QEMU is killed.
pub fn run(config: &Config, image: &Path, extra: &[String], timeout: Duration, stream: bool) -> Result<Run> {
    let start = Instant::now();
    let mut child = Command::new(QEMU)
        .args(config.args(image, extra))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {QEMU}: {e}"))?;
    let stdout = child.stdout.take().ok_or("no stdout pipe")?;
    let mut stderr = child.stderr.take().ok_or("no stderr pipe")?;

    let (tx, rx) = mpsc::channel::<String>();
    let out_thread = thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf);
                    let line = line.trim_end_matches(['\n', '\r']).replace('\r', "");
                    if stream {
                        println!("{line}");
                        let _ = std::io::stdout().flush();
                    }
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            }
        }
    });
    let err_thread = thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });

    let deadline = start + timeout;
    let mut timed_out = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() >= deadline => {
                timed_out = true;
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("waiting for {QEMU}: {e}")),
        }
    };
    let _ = out_thread.join();
    let stderr = err_thread.join().unwrap_or_default();
    if stream && !stderr.is_empty() {
        eprint!("{stderr}");
    }
    Ok(Run {
        status,
        timed_out,
        lines: rx.try_iter().collect(),
        stderr,
        elapsed: start.elapsed(),
    })
}

/// Whether a run is a clean Warden boot: QEMU exited with status 0, no
/// panic or exception line, and the final power-off line was printed.
pub fn verdict(run: &Run) -> std::result::Result<(), String> {
    if run.timed_out {
        return Err(format!(
            "timed out after {:.0} s; QEMU killed",
            run.elapsed.as_secs_f64()
        ));
    }
    if let Some(status) = run.status {
        if !status.success() {
            return Err(format!("QEMU exited with {status}"));
        }
    }
    if let Some(line) = run
        .lines
        .iter()
        .find(|l| l.contains(PANIC_MARKER) || l.contains(EXCEPTION_MARKER))
    {
        return Err(format!("Warden failed: {line}"));
    }
    if !run.lines.iter().any(|l| l.contains(DONE_MARKER)) {
        return Err(format!("no \"{DONE_MARKER}\" line"));
    }
    Ok(())
}

/// Why a run with the test host failed at the QEMU level (the scenarios
/// are judged by the report): a timeout, a failed QEMU, or Warden's panic
/// or exception line.
pub fn host_run_problems(run: &Run) -> Vec<String> {
    let mut p = Vec::new();
    if run.timed_out {
        p.push(format!(
            "timed out after {:.0} s; QEMU killed",
            run.elapsed.as_secs_f64()
        ));
    } else if let Some(status) = run.status {
        if !status.success() {
            p.push(format!("QEMU exited with {status}"));
        }
    }
    for line in run
        .lines
        .iter()
        .filter(|l| l.contains(PANIC_MARKER) || l.contains(EXCEPTION_MARKER))
    {
        p.push(format!("Warden failed: {line}"));
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok_status() -> ExitStatus {
        Command::new("true").status().unwrap()
    }

    fn run_with(lines: &[&str]) -> Run {
        Run {
            status: Some(ok_status()),
            timed_out: false,
            lines: lines.iter().map(|s| s.to_string()).collect(),
            stderr: String::new(),
            elapsed: Duration::from_secs(1),
        }
    }

    #[test]
    fn verdicts() {
        assert!(verdict(&run_with(&["Warden", "Warden: done, powering off (PSCI SYSTEM_OFF)"])).is_ok());
        assert!(verdict(&run_with(&["Warden"])).is_err());
        assert!(verdict(&run_with(&["WARDEN PANIC: x", "Warden: done, powering off"])).is_err());
        let mut r = run_with(&[DONE_MARKER]);
        r.timed_out = true;
        r.status = None;
        assert!(verdict(&r).unwrap_err().contains("timed out"));
    }

    #[test]
    fn command_line() {
        let c = Config {
            append: Some("a b".into()),
            ..Config::default()
        };
        let s = c.command_line(Path::new("/x/img"), &[]);
        assert_eq!(
            s,
            "qemu-system-aarch64 -M virt,virtualization=on,gic-version=3,iommu=smmuv3 -cpu max \
             -global arm-smmuv3.stage=2 -smp 2 -m 1G -nographic -kernel /x/img -append \"a b\""
        );
        let c = Config {
            host: Some("/x/th.bin".into()),
            append: Some("x".into()),
            cpus: 4,
            ..Config::default()
        };
        assert_eq!(
            c.command_line(Path::new("/x/img"), &[]),
            "qemu-system-aarch64 -M virt,virtualization=on,gic-version=3,iommu=smmuv3 -cpu max \
             -global arm-smmuv3.stage=2 -smp 4 -m 1G -nographic -kernel /x/img \
             -device loader,file=/x/th.bin,addr=0x44000000,force-raw=on \
             -device edu,dma_mask=0xffffffffffffffff -mem-prealloc -append \"warden.host=0x44000000 x\""
        );
        let c = Config {
            standalone: true,
            ..Config::default()
        };
        assert_eq!(
            c.command_line(Path::new("/x/th.bin"), &[]),
            "qemu-system-aarch64 -M virt,gic-version=3,iommu=smmuv3 -cpu max -global arm-smmuv3.stage=2 \
             -smp 2 -m 1G -nographic -kernel /x/th.bin -device edu,dma_mask=0xffffffffffffffff -mem-prealloc"
        );
    }
}
