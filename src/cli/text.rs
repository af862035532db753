//! Text renderings that more than one command prints. Commands share these, never each
//! other's code.

use crate::install::{Action, InstallReport};

/// What `install` did (also the first part of `up`'s text report); warnings go to stderr.
pub fn install_report(r: &InstallReport) {
    let root = r.root.display();
    if r.unchanged {
        outln!(
            "unchanged: {} ({}, k3s {}) is already installed under {root}",
            r.appliance,
            r.bundle_manifest_digest,
            r.k3s_version
        );
    } else {
        outln!(
            "installed {} (k3s {}, {}) under {root}",
            r.appliance,
            r.k3s_version,
            r.platform
        );
        for f in r.files.iter().filter(|f| f.action != Action::Unchanged) {
            let what = match f.action {
                Action::Created => "created ",
                Action::Replaced => "replaced",
                Action::Unchanged => "unchanged",
            };
            outln!("  {what} {}", f.path);
        }
        for p in &r.removed {
            outln!("  removed  {p}");
        }
    }
    match (&r.k3s.skipped, &r.k3s.ready_node) {
        (Some(why), _) => outln!("k3s not started: {why}"),
        (None, Some(node)) => outln!(
            "k3s {}; node {node} is Ready",
            if r.k3s.restarted {
                "(re)started"
            } else {
                "already running, unchanged"
            }
        ),
        (None, None) => {}
    }
    for w in &r.warnings {
        errln!("warning: {w}");
    }
}

/// The apply step of `up` and of a rollback.
pub fn apply_step(a: &crate::upgrade::ApplyStep) {
    use crate::upgrade::ApplyStep;
    match a {
        ApplyStep::Done { report } => out!("{report}"),
        ApplyStep::Skipped { reason } => outln!("apply: skipped: {reason}"),
        ApplyStep::Failed { error } => outln!("apply: FAILED: {error}"),
    }
}

/// A rollback (by hand, or `up`'s after a failed upgrade).
pub fn rollback_report(rb: &crate::upgrade::RollbackReport) {
    use crate::install::generation::VerificationStatus;
    outln!(
        "{} to generation {}{}: {}",
        if rb.automatic {
            "ROLLED BACK"
        } else {
            "rolled back"
        },
        rb.to_generation,
        if rb.resumed {
            " (finishing an interrupted rollback)"
        } else {
            ""
        },
        rb.reason
    );
    let changed = rb
        .files
        .iter()
        .filter(|f| f.action != Action::Unchanged)
        .count();
    outln!(
        "  restored {}, removed {}",
        crate::words::count(changed as u64, "file"),
        crate::words::count(rb.removed.len() as u64, "path")
    );
    match &rb.k3s.skipped {
        Some(why) => outln!("  k3s not started ({why})"),
        None if rb.k3s.restarted => outln!("  k3s restarted on the restored files"),
        None => {}
    }
    apply_step(&rb.apply);
    if rb.verify.summary.total > 0 && rb.verify.summary.skipped < rb.verify.summary.total {
        out!("{}", rb.verify.to_text());
    }
    if let Some(e) = &rb.error {
        outln!("  rollback problem: {e}");
    }
    let verdict = match rb.verified {
        VerificationStatus::Passed => "the restored generation verified".to_string(),
        VerificationStatus::Failed => "the restored generation did NOT verify".to_string(),
        other => format!("the restored generation: {other}"),
    };
    outln!("  {verdict}");
    for d in &rb.discarded {
        outln!("  discarded generation {d}");
    }
}

/// The lines (or JSON) `split` and `build --split` print.
pub fn split_report(
    s: &crate::bundle::split::SplitSummary,
    g: &super::Global,
) -> anyhow::Result<()> {
    if g.output == super::Output::Json {
        super::print_json(s)?;
    } else {
        outln!(
            "wrote {} ({} parts of at most {} bytes; bundle {} bytes, id {})",
            s.parts_file.display(),
            s.parts.len(),
            crate::bundle::group_digits(s.part_size),
            crate::bundle::group_digits(s.size),
            s.bundle_id
        );
        for p in &s.parts {
            outln!(
                "  {}  {} bytes  {}",
                p.file,
                crate::bundle::group_digits(p.size),
                p.sha256
            );
        }
    }
    Ok(())
}
