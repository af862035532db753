//! One command at a time changes a root. `install`, `up`, `uninstall`, and an `apply` that may
//! rewrite the node's registries.yaml hold an exclusive lock (flock) on
//! `<root>/var/lib/sparkgap/lock`; a second one refuses at once, naming the holder's pid
//! (exit 3), instead of reading the first one's half-made staging directory. The kernel drops
//! the lock however the holder ends (even SIGKILL), so a lock is never stale.
//!
//! The file stays empty and is never rewritten (a re-run that changes nothing leaves its mtime
//! alone); who holds it is read from the kernel's table of locks, `/proc/locks`.
//!
//! Nested acquisitions in one process (`up` holds the lock across install and apply, which
//! each take it too) share the outer lock. When the outermost lock is dropped and the root holds
//! no install record (a first install that failed, an uninstall that finished), the lock file
//! and the directories it made go too: a root where nothing is installed keeps no trace.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::InstallError;

pub const LOCK_PATH: &str = "var/lib/sparkgap/lock";

/// The lock files this process holds, by (device, inode), with how many guards share each.
static HELD: Mutex<Vec<((u64, u64), usize)>> = Mutex::new(Vec::new());

/// The lock on one root; released (and the lock file cleaned up, see the module) on drop.
#[derive(Debug)]
pub struct RootLock {
    root: PathBuf,
    id: (u64, u64),
    /// The outermost guard keeps the file open (the flock lives on it); nested ones do not.
    file: Option<File>,
    /// Directories acquiring made, deepest last, removed again when empty.
    made: Vec<PathBuf>,
}

impl RootLock {
    /// Lock `root`, making `var/lib/sparkgap` when `create`; without `create`, None when that
    /// directory does not exist (nothing is installed there, and nothing will be made).
    pub fn acquire(root: &Path, create: bool) -> Result<Option<RootLock>, InstallError> {
        let path = root.join(LOCK_PATH);
        let dir = path.parent().unwrap_or(root);
        let mut made = Vec::new();
        if !dir.is_dir() {
            if !create {
                return Ok(None);
            }
            let mut missing = Vec::new();
            let mut d = dir;
            while !d.exists() {
                missing.push(d.to_path_buf());
                d = d.parent().unwrap_or(Path::new("/"));
            }
            std::fs::create_dir_all(dir).map_err(InstallError::io(dir, "create directory"))?;
            made = missing.into_iter().rev().collect();
        }
        // A holder that removed the file (its uninstall finished) between our open and our
        // flock leaves us locking a file nobody else sees: open the current one again.
        for _ in 0..16 {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(&path)
                .map_err(InstallError::io(&path, "open lock file"))?;
            let meta = file
                .metadata()
                .map_err(InstallError::io(&path, "open lock file"))?;
            let id = (meta.dev(), meta.ino());
            if let Some(nested) = Self::nested(root, id) {
                return Ok(Some(nested));
            }
            match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => {}
                Err(rustix::io::Errno::WOULDBLOCK) => {
                    return Err(InstallError::Busy {
                        root: root.display().to_string(),
                        holder: holder(&path),
                    });
                }
                Err(e) => return Err(InstallError::io(&path, "lock")(e.into())),
            }
            let current = std::fs::metadata(&path).map(|m| (m.dev(), m.ino()));
            if current.ok() != Some(id) {
                continue;
            }
            HELD.lock().expect("lock registry").push((id, 1));
            return Ok(Some(RootLock {
                root: root.to_path_buf(),
                id,
                file: Some(file),
                made,
            }));
        }
        Err(InstallError::Busy {
            root: root.display().to_string(),
            holder: "another process that keeps replacing the lock file".into(),
        })
    }

    /// A second guard on a lock this process already holds.
    fn nested(root: &Path, id: (u64, u64)) -> Option<RootLock> {
        let mut held = HELD.lock().expect("lock registry");
        let entry = held.iter_mut().find(|(h, _)| *h == id)?;
        entry.1 += 1;
        Some(RootLock {
            root: root.to_path_buf(),
            id,
            file: None,
            made: Vec::new(),
        })
    }
}

impl Drop for RootLock {
    fn drop(&mut self) {
        let mut held = HELD.lock().expect("lock registry");
        let Some(i) = held.iter().position(|(h, _)| *h == self.id) else {
            return;
        };
        held[i].1 -= 1;
        if held[i].1 > 0 {
            return;
        }
        held.remove(i);
        if self.file.is_some() && !self.root.join(super::RECORD_PATH).exists() {
            let lock = self.root.join(LOCK_PATH);
            let _ = std::fs::remove_file(&lock);
            if let Some(state) = lock.parent() {
                let _ = std::fs::remove_dir(state);
            }
            for d in self.made.iter().rev() {
                let _ = std::fs::remove_dir(d);
            }
        }
        // Closing the file releases the flock.
        self.file = None;
    }
}

/// Who holds the lock on the file at `path`: the pid the kernel's lock table (`/proc/locks`,
/// `N: FLOCK ADVISORY WRITE <pid> <major>:<minor>:<inode> 0 EOF`, device numbers in hex) gives
/// for its inode, with the command name when the process can be seen.
fn holder(path: &Path) -> String {
    let pid = std::fs::metadata(path).ok().and_then(|m| {
        let (major, minor) = (rustix::fs::major(m.dev()), rustix::fs::minor(m.dev()));
        let want = format!("{major:02x}:{minor:02x}:{}", m.ino());
        let table = std::fs::read_to_string("/proc/locks").ok()?;
        table.lines().find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(1) == Some(&"FLOCK") && f.get(5) == Some(&want.as_str()))
                .then(|| f.get(4)?.parse::<u32>().ok())
                .flatten()
        })
    });
    match pid {
        Some(pid) => {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .map(|c| format!(" ({})", c.trim()))
                .unwrap_or_default();
            format!("pid {pid}{comm}")
        }
        None => "a process this one cannot see".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_naming_the_first_and_nothing_stays_behind() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        let held = RootLock::acquire(&root, true).unwrap().expect("created");
        // Another open file description is another holder, as another process would be.
        let other = OpenOptions::new()
            .read(true)
            .open(root.join(LOCK_PATH))
            .unwrap();
        let refused =
            rustix::fs::flock(&other, rustix::fs::FlockOperation::NonBlockingLockExclusive);
        assert_eq!(refused, Err(rustix::io::Errno::WOULDBLOCK));
        assert_eq!(
            holder(&root.join(LOCK_PATH)),
            format!(
                "pid {} ({})",
                std::process::id(),
                std::fs::read_to_string("/proc/self/comm").unwrap().trim()
            )
        );
        // Nested: shares the lock, and dropping it keeps the outer one.
        let nested = RootLock::acquire(&root, true).unwrap().expect("nested");
        drop(nested);
        assert!(root.join(LOCK_PATH).exists());
        drop(held);
        // No install record: the root is left as it was found.
        assert!(!root.exists(), "the lock left {root:?} behind");
        assert!(RootLock::acquire(&root, false).unwrap().is_none());
    }
}
