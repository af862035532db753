//! `var/lib/sparkgap/journal.json`: the step an upgrade (`up` on an installed node) or a
//! rollback has reached, written atomically **before** each step. A run killed at any moment
//! (SIGKILL, power loss) leaves the journal naming the step it was in; the next `up` or
//! `rollback` reads it first:
//! - an unfinished upgrade is simply run again (every step of it converges: install places
//!   only what differs, apply is server-side apply, verify reads);
//! - an unfinished rollback is finished before anything else (the upgrade it undoes had
//!   already failed), to the generation it names, never one further back.
//!
//! Removed when the operation finished (its generation recorded, or the rollback verified).

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::InstallError;
use super::fsops::{self, fault};

pub const JOURNAL_PATH: &str = "var/lib/sparkgap/journal.json";
const JOURNAL_VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Operation {
    /// `sparkgap up BUNDLE` on a node with a generation to go back to.
    Up,
    /// Going back to `target`: by hand (`sparkgap rollback`) or after a failed upgrade.
    Rollback,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Step {
    /// Verify the bundle and place its files (k3s started and waited for).
    Install,
    /// Apply the new spec.
    Apply,
    /// Verify the new spec.
    Verify,
    /// Record the new generation.
    Record,
    /// Put the target generation's files back.
    Restore,
    /// (Re)start k3s on the restored files and wait for it.
    Start,
    /// Apply the restored spec, pruning what the failed upgrade created.
    RollbackApply,
    /// Verify the restored spec.
    RollbackVerify,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Journal {
    pub journal_version: u32,
    pub operation: Operation,
    pub step: Step,
    /// The bundle `up` was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundle: Option<String>,
    /// The generation the node ran when the operation began.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<u32>,
    /// The generation a rollback restores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<u32>,
    /// Why a rollback runs: what failed, or "by hand".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// A rollback started by `up` after a failed upgrade (true), or by `sparkgap rollback`.
    #[serde(default)]
    pub automatic: bool,
    /// When the operation began (RFC 3339, UTC).
    pub started_at: String,
}

impl Journal {
    pub fn new(operation: Operation, step: Step) -> Journal {
        Journal {
            journal_version: JOURNAL_VERSION,
            operation,
            step,
            bundle: None,
            from: None,
            target: None,
            reason: None,
            automatic: false,
            started_at: super::generation::rfc3339(super::generation::now()),
        }
    }

    /// Read the journal under `root`; None when no operation is unfinished. One that cannot be
    /// read is an error naming it: nothing may act on a guess.
    pub fn read(root: &Path) -> Result<Option<Journal>, InstallError> {
        let path = root.join(JOURNAL_PATH);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(InstallError::io(&path, "read the upgrade journal")(e)),
        };
        let j: Journal = serde_json::from_slice(&bytes).map_err(|e| {
            InstallError::Record(format!(
                "{}: not a sparkgap upgrade journal ({e})\n  help: it records the step an interrupted upgrade or rollback reached; move it away only if you know the node's files are whole, then run `sparkgap rollback` or `sparkgap up` again",
                path.display()
            ))
        })?;
        if j.journal_version != JOURNAL_VERSION {
            return Err(InstallError::Record(format!(
                "{}: journal version {} is not supported (this sparkgap reads {JOURNAL_VERSION})",
                path.display(),
                j.journal_version
            )));
        }
        Ok(Some(j))
    }

    /// Write this journal at `step`, atomically, before the step begins.
    pub fn enter(&mut self, root: &Path, step: Step) -> Result<(), InstallError> {
        self.step = step;
        let path = root.join(JOURNAL_PATH);
        let mut bytes = serde_json::to_vec_pretty(self).expect("journal serialises");
        bytes.push(b'\n');
        fsops::write_atomic(&path, &bytes, 0o644)
            .map_err(InstallError::io(&path, "write the upgrade journal"))?;
        fault::step();
        if let Ok(serde_json::Value::String(name)) = serde_json::to_value(step) {
            fault::kill_at(&name);
            fault::pause_at(&name);
        }
        Ok(())
    }

    /// The operation finished: no journal.
    pub fn clear(root: &Path) -> Result<(), InstallError> {
        let path = root.join(JOURNAL_PATH);
        let _ = std::fs::remove_file(fsops::temp_path(&path));
        match std::fs::remove_file(&path) {
            Ok(()) => {
                let dir = path.parent().unwrap_or(root);
                fsops::fsync_dir(dir).map_err(InstallError::io(dir, "sync directory"))?;
                fault::step();
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(InstallError::io(&path, "remove the upgrade journal")(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_round_trips_and_a_bad_one_is_named() {
        let d = tempfile::tempdir().unwrap();
        assert!(Journal::read(d.path()).unwrap().is_none());
        std::fs::create_dir_all(d.path().join("var/lib/sparkgap")).unwrap();
        let mut j = Journal::new(Operation::Rollback, Step::Restore);
        j.target = Some(3);
        j.enter(d.path(), Step::Start).unwrap();
        let back = Journal::read(d.path()).unwrap().unwrap();
        assert_eq!(back, j);
        assert_eq!(back.step, Step::Start);
        Journal::clear(d.path()).unwrap();
        assert!(Journal::read(d.path()).unwrap().is_none());
        std::fs::write(d.path().join(JOURNAL_PATH), "{").unwrap();
        let e = Journal::read(d.path()).unwrap_err().to_string();
        assert!(e.contains("journal.json"), "{e}");
    }
}
