//! The verification report: one result per check, and its three renderings (text table, JSON,
//! JUnit XML). Pure: it formats values it is given and never talks to the cluster.

use crate::failure::FailureKind;
use serde::Serialize;

/// Version of the JSON report schema (docs/verification.md). Bump on incompatible changes.
/// Version 2: `durationMs` (was `duration_ms`), every key camelCase as in the other JSON output.
pub const REPORT_VERSION: u32 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Fail,
    Skipped,
}

impl Status {
    pub fn as_str(&self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Fail => "fail",
            Status::Skipped => "skipped",
        }
    }
}

/// `Ok` when no problem was found, else every problem in one reason.
pub fn all_held(problems: Vec<String>) -> Result<(), String> {
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// The outcome of one check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckResult {
    /// A stable name from `crate::spec::CHECK_NAMES`.
    pub name: String,
    pub status: Status,
    /// Why it failed or was skipped; `None` for a pass.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What was observed, one fact per entry.
    pub evidence: Vec<String>,
    pub duration_ms: u64,
}

impl CheckResult {
    pub fn pass(name: &str, evidence: Vec<String>) -> CheckResult {
        CheckResult {
            name: name.into(),
            status: Status::Pass,
            reason: None,
            evidence,
            duration_ms: 0,
        }
    }

    pub fn fail(name: &str, reason: impl Into<String>, evidence: Vec<String>) -> CheckResult {
        CheckResult {
            name: name.into(),
            status: Status::Fail,
            reason: Some(reason.into()),
            evidence,
            duration_ms: 0,
        }
    }

    /// Pass on `Ok`, fail with the reason on `Err`; the evidence either way.
    pub fn from_result(
        name: &str,
        result: Result<(), String>,
        evidence: Vec<String>,
    ) -> CheckResult {
        match result {
            Ok(()) => CheckResult::pass(name, evidence),
            Err(reason) => CheckResult::fail(name, reason, evidence),
        }
    }

    pub fn skipped(name: &str, reason: impl Into<String>) -> CheckResult {
        CheckResult {
            name: name.into(),
            status: Status::Skipped,
            reason: Some(reason.into()),
            evidence: Vec::new(),
            duration_ms: 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub total: usize,
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
    /// True when Ctrl-C or the overall timeout stopped the run before every check finished.
    pub interrupted: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    pub version: u32,
    pub checks: Vec<CheckResult>,
    pub summary: Summary,
    /// What was removed after the checks (throwaway namespace, test pods in spec namespaces).
    pub cleanup: Vec<String>,
}

impl Report {
    pub fn new(checks: Vec<CheckResult>, interrupted: bool) -> Report {
        let count = |s: Status| checks.iter().filter(|c| c.status == s).count();
        let summary = Summary {
            total: checks.len(),
            passed: count(Status::Pass),
            failed: count(Status::Fail),
            skipped: count(Status::Skipped),
            interrupted,
        };
        Report {
            version: REPORT_VERSION,
            checks,
            summary,
            cleanup: Vec::new(),
        }
    }

    /// Every check skipped with the same reason (e.g. `up --no-start`: no cluster to check).
    pub fn skipped_all(reason: &str) -> Report {
        Report::new(
            crate::spec::CHECK_NAMES
                .iter()
                .map(|n| CheckResult::skipped(n, reason))
                .collect(),
            false,
        )
    }

    /// True when no check failed and the run was not interrupted (skips do not fail).
    pub fn ok(&self) -> bool {
        self.summary.failed == 0 && !self.summary.interrupted
    }

    /// None when `ok`, else a failed check.
    pub fn failure(&self) -> Option<FailureKind> {
        (!self.ok()).then_some(FailureKind::CheckFailed)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("report serialises")
    }

    /// A table: name, status, duration, then the reason and evidence indented under each row.
    pub fn to_text(&self) -> String {
        let width = self.checks.iter().map(|c| c.name.len()).max().unwrap_or(4);
        let mut out = format!(
            "{:<width$}  {:<7}  {:>8}  DETAILS\n",
            "CHECK", "STATUS", "TIME"
        );
        for c in &self.checks {
            let first = c
                .reason
                .as_deref()
                .or(c.evidence.first().map(String::as_str))
                .unwrap_or("");
            out.push_str(&format!(
                "{:<width$}  {:<7}  {:>8}  {}\n",
                c.name,
                c.status.as_str().to_uppercase(),
                format_ms(c.duration_ms),
                first
            ));
            let rest = if c.reason.is_some() {
                &c.evidence[..]
            } else {
                c.evidence.get(1..).unwrap_or(&[])
            };
            for e in rest {
                out.push_str(&format!("{:<width$}  {:<7}  {:>8}  - {e}\n", "", "", ""));
            }
        }
        let s = &self.summary;
        out.push_str(&format!(
            "\n{}: {} passed, {} failed, {} skipped{}\n",
            crate::words::count(s.total as u64, "check"),
            s.passed,
            s.failed,
            s.skipped,
            if s.interrupted { " (interrupted)" } else { "" }
        ));
        for note in &self.cleanup {
            out.push_str(&format!("cleanup: {note}\n"));
        }
        out
    }

    /// JUnit XML: one `<testsuite>`, one `<testcase>` per check, `<failure>` / `<skipped>`,
    /// evidence in `<system-out>`.
    pub fn to_junit(&self) -> String {
        let s = &self.summary;
        let total_ms: u64 = self.checks.iter().map(|c| c.duration_ms).sum();
        let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        out.push_str(&format!(
            "<testsuites name=\"sparkgap verify\" tests=\"{}\" failures=\"{}\" skipped=\"{}\" errors=\"0\" time=\"{}\">\n",
            s.total, s.failed, s.skipped, secs(total_ms)
        ));
        out.push_str(&format!(
            "  <testsuite name=\"sparkgap verify\" tests=\"{}\" failures=\"{}\" skipped=\"{}\" errors=\"0\" time=\"{}\">\n",
            s.total, s.failed, s.skipped, secs(total_ms)
        ));
        for c in &self.checks {
            out.push_str(&format!(
                "    <testcase classname=\"sparkgap.verify\" name=\"{}\" time=\"{}\">\n",
                xml_escape(&c.name),
                secs(c.duration_ms)
            ));
            let reason = xml_escape(c.reason.as_deref().unwrap_or(""));
            match c.status {
                Status::Fail => out.push_str(&format!(
                    "      <failure message=\"{reason}\">{reason}</failure>\n"
                )),
                Status::Skipped => {
                    out.push_str(&format!("      <skipped message=\"{reason}\"/>\n"))
                }
                Status::Pass => {}
            }
            if !c.evidence.is_empty() {
                out.push_str(&format!(
                    "      <system-out>{}</system-out>\n",
                    xml_escape(&c.evidence.join("\n"))
                ));
            }
            out.push_str("    </testcase>\n");
        }
        out.push_str("  </testsuite>\n</testsuites>\n");
        out
    }
}

fn secs(ms: u64) -> String {
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

fn format_ms(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms}ms")
    } else {
        format!("{:.1}s", ms as f64 / 1000.0)
    }
}

/// Escape text for XML attributes and content; control characters other than tab and newline
/// are not allowed in XML 1.0 and are replaced (pod logs may carry them).
fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\n' | '\t' => out.push(ch),
            c if (c as u32) < 0x20 => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skips_do_not_fail_but_failures_and_interruptions_do() {
        let r = Report::new(
            vec![
                CheckResult::pass("api", vec!["v1.33.5+k3s1".into()]),
                CheckResult::skipped("gpu", "no GPU"),
            ],
            false,
        );
        assert_eq!(r.failure(), None);
        let r = Report::new(vec![CheckResult::fail("api", "down", vec![])], false);
        assert_eq!(r.failure(), Some(FailureKind::CheckFailed));
        let r = Report::new(vec![CheckResult::pass("api", vec![])], true);
        assert_eq!(r.failure(), Some(FailureKind::CheckFailed));
    }

    #[test]
    fn skipped_all_names_every_check() {
        let r = Report::skipped_all("no cluster: installed with --no-start");
        assert_eq!(r.summary.total, crate::spec::CHECK_NAMES.len());
        assert_eq!(r.summary.skipped, r.summary.total);
        assert!(
            r.checks
                .iter()
                .all(|c| c.reason.as_deref() == Some("no cluster: installed with --no-start"))
        );
        assert_eq!(r.failure(), None);
    }

    #[test]
    fn text_table_shows_reason_and_evidence() {
        let mut c = CheckResult::fail("images", "1 image missing", vec!["busybox missing".into()]);
        c.duration_ms = 1500;
        let t = Report::new(vec![c], false).to_text();
        assert!(t.contains("images  FAIL"), "{t}");
        assert!(t.contains("1.5s"), "{t}");
        assert!(t.contains("- busybox missing"), "{t}");
        assert!(t.contains("1 check: 0 passed, 1 failed, 0 skipped"), "{t}");
    }

    #[test]
    fn xml_escaping_covers_markup_and_control_characters() {
        assert_eq!(
            xml_escape("a<b>&\"'\u{1b}"),
            "a&lt;b&gt;&amp;&quot;&apos;\u{FFFD}"
        );
    }
}
