//! The isolation report: what the test host printed, scenario by scenario.
//!
//! The test host (hosts/testhost) prints one line per scenario,
//! `RESULT <name> <PASS|FAIL|SKIP> <detail>`, then `TESTHOST DONE <p>/<t>`
//! and powers off (its `scenario` module is the protocol's other half).
//! [`parse`] collects those lines from a console (anywhere on a line:
//! Warden may print on the same UART), [`Report::render`] lays them out as
//! a table next to what each scenario is meant to show ([`SCENARIOS`]),
//! and [`Report::problems`] says why a run does not count as a pass.

/// Prefix of a scenario's line.
pub const RESULT_PREFIX: &str = "RESULT ";
/// Prefix of the test host's final line.
pub const DONE_PREFIX: &str = "TESTHOST DONE ";

/// Every scenario, in the order the test host runs them, with the one-line
/// expectation the report shows. The names must match the test host's
/// `scenario::ALL` (a unit test below reads its source to check).
pub const SCENARIOS: &[(&str, &str)] = &[
    (
        "abi-version",
        "FN_CALL_UID, FN_VERSION (1.0) and FN_FEATURES answer as warden-abi defines",
    ),
    (
        "secondaries",
        "every CPU starts via PSCI CPU_ON through Warden; ALREADY_ON/INVALID_PARAMETERS relayed",
    ),
    (
        "lazy-map",
        "all host RAM is usable; Warden maps it in blocks (<= 1 fault per 2 MiB)",
    ),
    (
        "share-hyp",
        "share/unshare work; double, stray, Warden's, MMIO and past-PA shares refused",
    ),
    (
        "donate-reclaim",
        "donated pages leave the host (abort); only the exact reclaim returns them",
    ),
    (
        "warden-memory",
        "reads, writes, fetches of Warden's memory get an injected abort; host lives on",
    ),
    (
        "smmu-mmio",
        "the SMMU is hidden from the host's tree; its registers abort",
    ),
    (
        "garbage-hypercalls",
        "random hypercalls on all CPUs: no hang, unknown IDs NOT_SUPPORTED, ownership intact",
    ),
    (
        "dma-edu",
        "edu DMA reaches host RAM, not Warden, a donated page or the SMMU (SMMU_FAULTS rises)",
    ),
];

/// One scenario's line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// `PASS`, `FAIL` or `SKIP` (anything else is kept as printed).
    pub verdict: String,
    /// The rest of the line.
    pub detail: String,
}

impl Outcome {
    /// Whether the scenario passed.
    pub fn passed(&self) -> bool {
        self.verdict == "PASS"
    }
}

/// What the console said about the scenarios.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Each scenario of [`SCENARIOS`], in order, with its first line.
    pub results: Vec<(&'static str, Option<Outcome>)>,
    /// Scenarios that printed more than one line.
    pub duplicates: Vec<&'static str>,
    /// RESULT lines naming no known scenario.
    pub unknown: Vec<String>,
    /// The final line's `(passed, total)`, if printed.
    pub done: Option<(usize, usize)>,
}

/// Collect the RESULT and DONE lines of a console.
pub fn parse(lines: &[String]) -> Report {
    let mut report = Report {
        results: SCENARIOS.iter().map(|&(name, _)| (name, None)).collect(),
        ..Report::default()
    };
    for line in lines {
        if let Some(at) = line.find(RESULT_PREFIX) {
            let rest = &line[at + RESULT_PREFIX.len()..];
            let mut words = rest.splitn(3, ' ');
            let name = words.next().unwrap_or("");
            let verdict = words.next().unwrap_or("").to_string();
            let detail = words.next().unwrap_or("").trim().to_string();
            match report.results.iter_mut().find(|(n, _)| *n == name) {
                Some((_, slot @ None)) => *slot = Some(Outcome { verdict, detail }),
                Some((n, Some(_))) => report.duplicates.push(*n),
                None => report.unknown.push(rest.to_string()),
            }
        } else if let Some(at) = line.find(DONE_PREFIX) {
            let counts = line[at + DONE_PREFIX.len()..].trim();
            let parsed = counts
                .split_once('/')
                .and_then(|(p, t)| Some((p.trim().parse().ok()?, t.trim().parse().ok()?)));
            if report.done.is_none() {
                report.done = parsed;
            }
        }
    }
    report
}

impl Report {
    /// Scenarios that passed.
    pub fn passed(&self) -> usize {
        self.results
            .iter()
            .filter(|(_, o)| o.as_ref().is_some_and(Outcome::passed))
            .count()
    }

    /// Why this is not a full pass (empty: every scenario passed). With
    /// `allow_skip` (standalone runs) SKIP counts as acceptable.
    pub fn problems(&self, allow_skip: bool) -> Vec<String> {
        let mut p = Vec::new();
        for (name, outcome) in &self.results {
            match outcome {
                None => p.push(format!("{name}: no RESULT line")),
                Some(o) if o.passed() => {}
                Some(o) if allow_skip && o.verdict == "SKIP" => {}
                Some(o) => p.push(format!("{name}: {} {}", o.verdict, o.detail)),
            }
        }
        for name in &self.duplicates {
            p.push(format!("{name}: more than one RESULT line"));
        }
        for line in &self.unknown {
            p.push(format!("unknown scenario: RESULT {line}"));
        }
        match self.done {
            None => p.push("no \"TESTHOST DONE\" line: the test host did not finish".into()),
            Some((passed, total)) => {
                if total != SCENARIOS.len() {
                    p.push(format!(
                        "the test host ran {total} scenarios, xtask knows {}",
                        SCENARIOS.len()
                    ));
                }
                if passed != self.passed() {
                    p.push(format!(
                        "the test host counted {passed} passes, its lines show {}",
                        self.passed()
                    ));
                }
            }
        }
        p
    }

    /// The one-line summary.
    pub fn summary(&self) -> String {
        let total = SCENARIOS.len();
        let not: Vec<String> = self
            .results
            .iter()
            .filter_map(|(name, o)| match o {
                None => Some(format!("{name} (missing)")),
                Some(o) if !o.passed() => Some(format!("{name} ({})", o.verdict)),
                Some(_) => None,
            })
            .collect();
        if !not.is_empty() {
            format!(
                "Isolation report: {}/{total} scenarios passed; not passed: {}",
                self.passed(),
                not.join(", ")
            )
        } else {
            format!("Isolation report: {}/{total} scenarios passed", self.passed())
        }
    }

    /// The table: scenario | expectation | result (both wrapped), then
    /// the summary line.
    pub fn render(&self) -> String {
        const EXPECTATION_WIDTH: usize = 44;
        const RESULT_WIDTH: usize = 64;
        let name_w = SCENARIOS.iter().map(|(n, _)| n.len()).max().unwrap_or(8).max(8);
        let mut out = String::new();
        let row = |out: &mut String, a: &str, b: &str, c: &str| {
            out.push_str(format!("{a:name_w$} | {b:EXPECTATION_WIDTH$} | {c}").trim_end());
            out.push('\n');
        };
        row(&mut out, "scenario", "expectation", "result");
        out.push_str(&format!(
            "{}-+-{}-+-{}\n",
            "-".repeat(name_w),
            "-".repeat(EXPECTATION_WIDTH),
            "-".repeat(RESULT_WIDTH)
        ));
        for ((name, outcome), (_, expectation)) in self.results.iter().zip(SCENARIOS) {
            let result = match outcome {
                None => "MISSING (no RESULT line)".to_string(),
                Some(o) => format!("{} {}", o.verdict, o.detail).trim_end().to_string(),
            };
            let left = wrap(expectation, EXPECTATION_WIDTH);
            let right = wrap(&result, RESULT_WIDTH);
            for i in 0..left.len().max(right.len()) {
                let a = if i == 0 { *name } else { "" };
                let b = left.get(i).map_or("", String::as_str);
                let c = right.get(i).map_or("", String::as_str);
                row(&mut out, a, b, c);
            }
        }
        out.push_str(&self.summary());
        out.push('\n');
        out
    }
}

/// Split `text` into lines of at most `width` characters at spaces (a
/// longer word gets a line of its own).
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split(' ') {
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() || lines.is_empty() {
        lines.push(line);
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(s: &[&str]) -> Vec<String> {
        s.iter().map(|l| l.to_string()).collect()
    }

    fn all_pass() -> Vec<String> {
        let mut l: Vec<String> = SCENARIOS
            .iter()
            .map(|(n, _)| format!("RESULT {n} PASS fine (3 ms)"))
            .collect();
        l.push(format!("TESTHOST DONE {}/{}", SCENARIOS.len(), SCENARIOS.len()));
        l
    }

    #[test]
    fn full_pass() {
        let r = parse(&all_pass());
        assert_eq!(r.passed(), SCENARIOS.len());
        assert!(r.problems(false).is_empty(), "{:?}", r.problems(false));
        assert_eq!(r.summary(), "Isolation report: 9/9 scenarios passed");
        let table = r.render();
        assert!(table.contains("lazy-map"));
        assert!(table.contains("| PASS fine (3 ms)"), "{table}");
        assert!(table.lines().all(|l| l.len() <= 18 + 3 + 44 + 3 + 64), "{table}");
        assert!(table.ends_with("Isolation report: 9/9 scenarios passed\n"));
    }

    #[test]
    fn fail_detail_and_missing() {
        let mut l = all_pass();
        l[3] = "RESULT share-hyp FAIL double share = 0, want -EPERM | share ok".into();
        l.remove(8); // dma-edu
        l.pop();
        l.push("TESTHOST DONE 7/9".into());
        let r = parse(&l);
        assert_eq!(r.passed(), 7);
        let share = r.results.iter().find(|(n, _)| *n == "share-hyp").unwrap();
        assert_eq!(
            share.1,
            Some(Outcome {
                verdict: "FAIL".into(),
                detail: "double share = 0, want -EPERM | share ok".into()
            })
        );
        let p = r.problems(false);
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p[0].starts_with("share-hyp: FAIL double share"));
        assert_eq!(p[1], "dma-edu: no RESULT line");
        assert_eq!(
            r.summary(),
            "Isolation report: 7/9 scenarios passed; not passed: share-hyp (FAIL), dma-edu (missing)"
        );
        assert!(r.render().contains("MISSING"));
    }

    #[test]
    fn no_done_line_prefixes_duplicates_and_unknown_names() {
        // Warden may print on the same line before the test host's text.
        let mut l = all_pass();
        l.pop();
        l[0] = format!("[warden] {}", l[0]);
        l.push("RESULT abi-version FAIL again".into());
        l.push("RESULT bogus PASS".into());
        let r = parse(&l);
        assert_eq!(r.passed(), 9);
        assert_eq!(r.duplicates, vec!["abi-version"]);
        assert_eq!(r.unknown, vec!["bogus PASS".to_string()]);
        let p = r.problems(false);
        assert!(p.iter().any(|x| x.contains("TESTHOST DONE")));
        assert!(p.iter().any(|x| x.contains("more than one")));
        assert!(p.iter().any(|x| x.contains("unknown scenario")));
        // Nothing at all: every scenario missing.
        let r = parse(&lines(&["Warden 0.1", "WARDEN PANIC: x"]));
        assert_eq!(r.problems(false).len(), SCENARIOS.len() + 1);
    }

    #[test]
    fn skips_count_only_when_allowed() {
        let mut l = all_pass();
        l[2] = "RESULT lazy-map SKIP no Warden".into();
        *l.last_mut().unwrap() = "TESTHOST DONE 8/9".into();
        let r = parse(&l);
        assert!(r.problems(true).is_empty());
        assert_eq!(r.problems(false).len(), 1);
        // A count that disagrees with the lines is a problem.
        let mut l = all_pass();
        *l.last_mut().unwrap() = "TESTHOST DONE 8/9".into();
        assert_eq!(parse(&l).problems(false).len(), 1);
    }

    #[test]
    fn wraps_at_spaces() {
        assert_eq!(wrap("a bb ccc", 4), vec!["a bb", "ccc"]);
        assert_eq!(wrap("", 4), vec![""]);
        assert_eq!(wrap("abcdefgh x", 4), vec!["abcdefgh", "x"]);
    }

    /// The names here are the test host's (hosts/testhost/src/scenario.rs
    /// defines them as string constants and lists them in `ALL`).
    #[test]
    fn names_match_the_test_host() {
        let path = crate::workspace_root().join("hosts/testhost/src/scenario.rs");
        let src = std::fs::read_to_string(&path).unwrap();
        for (name, _) in SCENARIOS {
            assert!(src.contains(&format!("\"{name}\"")), "{name} not in {}", path.display());
        }
        let all = src.split("pub const ALL: [&str; ").nth(1).unwrap();
        let n: usize = all.split(']').next().unwrap().parse().unwrap();
        assert_eq!(n, SCENARIOS.len());
    }
}
