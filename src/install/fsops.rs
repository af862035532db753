//! The only way install writes: temp file in the target's directory, fsync, rename, fsync the
//! directory; plus the debug-build fault hooks the kill and disk-full tests drive.
//!
//! Temp names are fixed per target (`.NAME.sparkgap-tmp`) so a run killed mid-write leaves a
//! name the next run knows and removes.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The temp path used while writing `target`.
pub fn temp_path(target: &Path) -> PathBuf {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    target.with_file_name(format!(".{name}.sparkgap-tmp"))
}

pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Create a file for writing with `mode` (umask does not apply: the mode is set explicitly).
pub fn create(path: &Path, mode: u32) -> io::Result<FaultyFile> {
    let f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)?;
    f.set_permissions(fs::Permissions::from_mode(mode))?;
    Ok(FaultyFile { file: f })
}

/// Write `bytes` to `target` atomically with `mode`.
pub fn write_atomic(target: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let tmp = temp_path(target);
    let result = (|| {
        let mut f = create(&tmp, mode)?;
        f.write_all(bytes)?;
        f.file.sync_all()?;
        drop(f);
        fs::rename(&tmp, target)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result?;
    fsync_dir(target.parent().unwrap_or(Path::new("/")))
}

/// Move an already fsynced staged file into place: a rename when staging and target share a
/// filesystem; otherwise (a host whose `/var` is its own partition, so staging under
/// `/var/lib/sparkgap` and `/usr/local/bin/k3s` are on different devices: `EXDEV`) a copy to the
/// target's temp name, fsync, rename over the target, then the staged file is removed. Either
/// way the target changes in one step.
pub fn rename_into_place(staged: &Path, target: &Path, mode: u32) -> io::Result<()> {
    fs::set_permissions(staged, fs::Permissions::from_mode(mode))?;
    match fs::rename(staged, target) {
        Err(e) if e.kind() == io::ErrorKind::CrossesDevices => {
            copy_into_place(staged, target, mode)?
        }
        other => other?,
    }
    fsync_dir(target.parent().unwrap_or(Path::new("/")))
}

/// The cross-filesystem half of [`rename_into_place`]: copy through the target's temp name
/// (which a killed run leaves for the next to remove), rename it over the target, then remove
/// the staged file.
fn copy_into_place(staged: &Path, target: &Path, mode: u32) -> io::Result<()> {
    let tmp = temp_path(target);
    let result = (|| {
        let mut out = create(&tmp, mode)?;
        io::copy(&mut File::open(staged)?, &mut out.file)?;
        out.file.sync_all()?;
        drop(out);
        fs::rename(&tmp, target)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result?;
    fs::remove_file(staged)
}

/// Point the symlink `target` at `to`, atomically (symlink at the temp name, rename over).
pub fn symlink_atomic(to: &str, target: &Path) -> io::Result<()> {
    let tmp = temp_path(target);
    let _ = fs::remove_file(&tmp);
    std::os::unix::fs::symlink(to, &tmp)?;
    if let Err(e) = fs::rename(&tmp, target) {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    fsync_dir(target.parent().unwrap_or(Path::new("/")))
}

/// `<hex>` sha256 and size of a file's contents.
pub fn sha256_file(path: &Path) -> io::Result<(String, u64)> {
    crate::digest::sha256_reader(File::open(path)?)
}

/// A writer that counts what passes through it.
pub struct Counting<W> {
    pub inner: W,
    pub written: u64,
}

impl<W> Counting<W> {
    pub fn new(inner: W) -> Self {
        Counting { inner, written: 0 }
    }
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A file whose writes honour the simulated disk-full hook (debug builds only).
pub struct FaultyFile {
    pub file: File,
}

impl Write for FaultyFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        fault::before_write(buf.len())?;
        self.file.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// A file written by its own thread: the caller's thread hashes (the bundle reader verifies)
/// while this one copies into the page cache, starts writeback as it goes and fsyncs, so the two
/// halves of staging overlap on two cores. At most `DEPTH` chunks of `CHUNK` bytes are in
/// flight: memory stays flat whatever the size.
pub struct PipedFile {
    buf: Vec<u8>,
    tx: Option<std::sync::mpsc::SyncSender<Vec<u8>>>,
    handle: Option<std::thread::JoinHandle<io::Result<()>>>,
}

const CHUNK: usize = 1 << 20;
const DEPTH: usize = 8;

impl PipedFile {
    /// Create `path` with `mode` and start its writer thread.
    pub fn create(path: &Path, mode: u32) -> io::Result<PipedFile> {
        let mut file = create(path, mode)?;
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(DEPTH);
        let handle = std::thread::spawn(move || {
            let mut writeback = Writeback::default();
            for chunk in rx {
                file.write_all(&chunk)?;
                writeback.wrote(&file.file, chunk.len() as u64);
            }
            file.file.sync_all()
        });
        Ok(PipedFile {
            buf: Vec::with_capacity(CHUNK),
            tx: Some(tx),
            handle: Some(handle),
        })
    }

    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        let sent = self.tx.as_ref().map(|tx| tx.send(chunk).is_ok());
        if sent == Some(true) {
            Ok(())
        } else {
            // The writer stopped: its error says why.
            Err(self
                .join()
                .err()
                .unwrap_or_else(|| io::Error::other("writer stopped")))
        }
    }

    fn join(&mut self) -> io::Result<()> {
        self.tx = None;
        match self.handle.take() {
            Some(h) => h
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("writer thread panicked"))),
            None => Err(io::Error::other("writer already finished")),
        }
    }

    /// Write what is buffered, wait for the writer, fsync. The file is complete and durable
    /// only when this returns Ok.
    pub fn finish(mut self) -> io::Result<()> {
        self.send()?;
        self.join()
    }
}

impl Write for PipedFile {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.send()?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for PipedFile {
    fn drop(&mut self) {
        // An abandoned file (an error elsewhere): let the writer end before staging goes.
        if self.handle.is_some() {
            let _ = self.join();
        }
    }
}

/// Starts writeback of what was written every `WRITEBACK_EVERY` bytes, without waiting for it.
/// Without this the kernel holds a GiB of dirty pages (below its background threshold on a
/// large-memory host) until the final fsync, which then writes it all while nothing else
/// runs; with it the disk writes while the bundle is still being hashed. Advisory: errors are
/// ignored here, the final fsync reports them.
#[derive(Default)]
struct Writeback {
    written: u64,
    started: u64,
}

const WRITEBACK_EVERY: u64 = 8 << 20;

impl Writeback {
    fn wrote(&mut self, file: &File, n: u64) {
        self.written += n;
        if self.written - self.started < WRITEBACK_EVERY {
            return;
        }
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            // SAFETY: a valid open fd; the range is within what was written.
            unsafe {
                libc::sync_file_range(
                    file.as_raw_fd(),
                    self.started as libc::off64_t,
                    (self.written - self.started) as libc::off64_t,
                    libc::SYNC_FILE_RANGE_WRITE,
                );
            }
        }
        #[cfg(not(target_os = "linux"))]
        let _ = file;
        self.started = self.written;
    }
}

/// A reader that remembers whether it failed, so a copy can tell a damaged bundle member
/// (read side) from a full disk (write side).
pub struct Tracked<'a> {
    pub inner: &'a mut dyn Read,
    pub failed: Option<io::Error>,
}

impl Read for Tracked<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => Ok(n),
            Err(e) => {
                let kind = e.kind();
                let msg = e.to_string();
                self.failed = Some(e);
                Err(io::Error::new(kind, msg))
            }
        }
    }
}

/// Fault injection for the kill and disk-full tests. Compiled to no-ops in release builds, so
/// no environment variable can make a shipped binary kill itself or fail writes.
pub mod fault {
    /// `SPARKGAP_FAULT_KILL_AFTER_WRITES=N`: SIGKILL this process right after the Nth completed
    /// write step (a staged file, a placed file or link, a removal, the record).
    pub const KILL_AFTER_WRITES: &str = "SPARKGAP_FAULT_KILL_AFTER_WRITES";
    /// `SPARKGAP_FAULT_ENOSPC_AFTER_BYTES=N`: fail writes with ENOSPC once N bytes were written.
    pub const ENOSPC_AFTER_BYTES: &str = "SPARKGAP_FAULT_ENOSPC_AFTER_BYTES";
    /// `SPARKGAP_FAULT_PAUSE_AFTER_WRITES=N`: right after the Nth write step, create the file
    /// `SPARKGAP_FAULT_PAUSE_FILE` names and wait (up to a minute) for a signal: the Ctrl-C and
    /// kill tests interrupt the run at a known point.
    pub const PAUSE_AFTER_WRITES: &str = "SPARKGAP_FAULT_PAUSE_AFTER_WRITES";
    pub const PAUSE_FILE: &str = "SPARKGAP_FAULT_PAUSE_FILE";
    /// `SPARKGAP_FAULT_FAIL=STEP[,STEP]`: `up` and `rollback` treat that step (`start`, `apply`,
    /// `verify`, `rollback-verify`) as failed, so the rollback decision and the kill tests can
    /// run in a temp root where no cluster is started (debug builds only).
    pub const FAIL: &str = "SPARKGAP_FAULT_FAIL";

    /// `SPARKGAP_FAULT_KILL_AT_STEP=STEP`: SIGKILL this process right after the upgrade journal
    /// was written for STEP (`install`, `apply`, `verify`, `record`, `restore`, `start`,
    /// `rollbackApply`, `rollbackVerify`): the live node's kill tests stop `up` at a known step
    /// (debug builds only).
    pub const KILL_AT_STEP: &str = "SPARKGAP_FAULT_KILL_AT_STEP";

    /// SIGKILL now when the fault hook names `step`. Never in release builds.
    pub fn kill_at(step: &str) {
        if cfg!(debug_assertions) && std::env::var(KILL_AT_STEP).is_ok_and(|v| v == step) {
            let _ = rustix::process::kill_process(
                rustix::process::getpid(),
                rustix::process::Signal::KILL,
            );
        }
    }

    /// `SPARKGAP_FAULT_PAUSE_AT_STEP=STEP`: right after the upgrade journal was written for
    /// STEP, create the file `SPARKGAP_FAULT_PAUSE_FILE` names and wait (up to five minutes)
    /// until it is removed: the live node's tests disturb k3s at a known step (debug builds only).
    pub const PAUSE_AT_STEP: &str = "SPARKGAP_FAULT_PAUSE_AT_STEP";

    /// Pause now when the fault hook names `step` (see [`PAUSE_AT_STEP`]). Never in release
    /// builds.
    pub fn pause_at(step: &str) {
        if !cfg!(debug_assertions) || std::env::var(PAUSE_AT_STEP).map_or(true, |v| v != step) {
            return;
        }
        let Some(file) = std::env::var_os(PAUSE_FILE) else {
            return;
        };
        let _ = std::fs::write(&file, std::process::id().to_string());
        let until = std::time::Instant::now() + std::time::Duration::from_secs(300);
        while std::path::Path::new(&file).exists() && std::time::Instant::now() < until {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    /// Whether the fault hook asks `step` to fail. Always false in release builds.
    pub fn fail(step: &str) -> bool {
        cfg!(debug_assertions)
            && std::env::var(FAIL).is_ok_and(|v| v.split(',').any(|s| s.trim() == step))
    }

    #[cfg(debug_assertions)]
    mod imp {
        use std::sync::OnceLock;
        use std::sync::atomic::{AtomicU64, Ordering};

        static STEPS: AtomicU64 = AtomicU64::new(0);
        static BYTES: AtomicU64 = AtomicU64::new(0);

        fn env(name: &str) -> Option<u64> {
            std::env::var(name).ok().and_then(|v| v.parse().ok())
        }

        pub fn step() {
            static LIMIT: OnceLock<Option<u64>> = OnceLock::new();
            static PAUSE: OnceLock<Option<u64>> = OnceLock::new();
            let n = STEPS.fetch_add(1, Ordering::SeqCst) + 1;
            if *LIMIT.get_or_init(|| env(super::KILL_AFTER_WRITES)) == Some(n) {
                let _ = rustix::process::kill_process(
                    rustix::process::getpid(),
                    rustix::process::Signal::KILL,
                );
            }
            if *PAUSE.get_or_init(|| env(super::PAUSE_AFTER_WRITES)) == Some(n) {
                if let Some(f) = std::env::var_os(super::PAUSE_FILE) {
                    let _ = std::fs::write(f, std::process::id().to_string());
                }
                let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
                while crate::install::interrupt::received().is_none()
                    && std::time::Instant::now() < until
                {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
            }
        }

        pub fn before_write(len: usize) -> std::io::Result<()> {
            static LIMIT: OnceLock<Option<u64>> = OnceLock::new();
            if let Some(limit) = *LIMIT.get_or_init(|| env(super::ENOSPC_AFTER_BYTES)) {
                let done = BYTES.fetch_add(len as u64, Ordering::SeqCst) + len as u64;
                if done > limit {
                    return Err(std::io::Error::from_raw_os_error(
                        rustix::io::Errno::NOSPC.raw_os_error(),
                    ));
                }
            }
            Ok(())
        }
    }

    #[cfg(not(debug_assertions))]
    mod imp {
        pub fn step() {}
        pub fn before_write(_len: usize) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// One write step completed.
    pub fn step() {
        imp::step()
    }

    /// About to write `len` bytes.
    pub fn before_write(len: usize) -> std::io::Result<()> {
        imp::before_write(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_sets_mode_and_leaves_no_temp() {
        let d = tempfile::tempdir().unwrap();
        let t = d.path().join("config.yaml");
        write_atomic(&t, b"a: 1\n", 0o600).unwrap();
        write_atomic(&t, b"a: 2\n", 0o600).unwrap();
        assert_eq!(fs::read(&t).unwrap(), b"a: 2\n");
        assert_eq!(
            fs::metadata(&t).unwrap().permissions().mode() & 0o7777,
            0o600
        );
        assert!(!temp_path(&t).exists());
        symlink_atomic("config.yaml", &d.path().join("link")).unwrap();
        symlink_atomic("config.yaml", &d.path().join("link")).unwrap();
        assert_eq!(
            fs::read_link(d.path().join("link")).unwrap(),
            Path::new("config.yaml")
        );
    }

    /// The path a host with `/var` on its own filesystem takes (staging and target on two
    /// devices): the target gets the bytes and the mode, the staged file and the temp go.
    #[test]
    fn copy_into_place_replaces_the_target_and_removes_the_staged_file() {
        let d = tempfile::tempdir().unwrap();
        let staged = d.path().join("staged");
        let target = d.path().join("k3s");
        fs::write(&staged, b"new binary").unwrap();
        fs::write(&target, b"old binary").unwrap();
        copy_into_place(&staged, &target, 0o755).unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"new binary");
        assert_eq!(
            fs::metadata(&target).unwrap().permissions().mode() & 0o7777,
            0o755
        );
        assert!(!staged.exists());
        assert!(!temp_path(&target).exists());
    }
}
