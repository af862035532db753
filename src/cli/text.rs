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
