//! The files a user names, on the command line or in the spec (spec, lock, values files,
//! manifests, charts, bundle, keys, kubeconfig), read one way so that every command holds to one
//! rule for what can be wrong with one (docs/cli.md, "Input files"):
//!
//! - the path points at nothing usable: it does not exist, is a directory, is empty, or is a
//!   pipe or device where a file that is read twice is needed: **bad input** (exit 2);
//! - the file is there but this machine cannot read it (permissions, an I/O error): **the
//!   environment** (exit 3).
//!
//! What the bytes must be (YAML of a spec, a minisign key of the right kind) is each reader's
//! own business, and always bad input. Never prints; the caller names the file in its words.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use crate::failure::FailureKind;

/// What is wrong with an input file.
#[derive(Debug)]
pub enum Problem {
    Missing,
    Directory,
    Empty,
    /// A pipe, device or socket where a regular file is needed; the word for what it is.
    NotRegular(&'static str),
    /// A file where a directory is needed.
    NotDirectory,
    /// A directory where a bundle is read that is not a split bundle's (no parts file in it).
    DirectoryWithoutParts,
    Unreadable(io::Error),
}

/// An input file that cannot be used: which one (`what`: "spec", "public key", ...), where,
/// and why.
#[derive(Debug)]
pub struct InputError {
    pub what: &'static str,
    pub path: PathBuf,
    pub problem: Problem,
}

impl InputError {
    pub fn new(what: &'static str, path: &Path, problem: Problem) -> InputError {
        InputError {
            what,
            path: path.to_path_buf(),
            problem,
        }
    }

    /// The rule of this module: only a file that is there but cannot be read is the machine's
    /// fault.
    pub fn kind(&self) -> FailureKind {
        match self.problem {
            Problem::Unreadable(_) => FailureKind::Environment,
            _ => FailureKind::Input,
        }
    }

    /// The problem alone, without the file's name (for messages that name the file already).
    pub fn reason(&self) -> String {
        match &self.problem {
            Problem::Missing => "does not exist".into(),
            Problem::Directory => "is a directory, not a file".into(),
            Problem::NotDirectory => "is a file, not a directory".into(),
            Problem::DirectoryWithoutParts => "is a directory, not a file, and holds no parts \
                file (NAME.parts.json) of a split bundle: name the bundle file, or the directory \
                `sparkgap split` or `build --split` wrote"
                .into(),
            Problem::Empty => "is empty".into(),
            Problem::NotRegular(kind) => format!(
                "is {kind}, not a regular file: it is read twice (its manifest first, then every \
                 member), so save the stream to a file first (e.g. `ssh HOST cat spark.tar > \
                 spark.tar`)"
            ),
            Problem::Unreadable(e) => format!(
                "cannot be read: {e}\n  help: check its permissions, or run as a user who may \
                 read it (sudo)"
            ),
        }
    }
}

impl std::fmt::Display for InputError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} {}", self.what, self.path.display(), self.reason())
    }
}

// No `source()`: the reason already holds the I/O error's text, and the CLI prints each cause
// of a chain once.
impl std::error::Error for InputError {}

fn classify(what: &'static str, path: &Path, e: io::Error) -> InputError {
    let problem = match e.kind() {
        // A component that is a file (`spec.yaml/x`) leaves the path pointing at nothing too.
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory => Problem::Missing,
        io::ErrorKind::IsADirectory => Problem::Directory,
        _ => Problem::Unreadable(e),
    };
    InputError::new(what, path, problem)
}

/// Read a whole input file (a pipe such as `<(…)` is fine: it is read once).
pub fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, InputError> {
    if path.is_dir() {
        return Err(InputError::new(what, path, Problem::Directory));
    }
    let bytes = std::fs::read(path).map_err(|e| classify(what, path, e))?;
    if bytes.is_empty() {
        return Err(InputError::new(what, path, Problem::Empty));
    }
    Ok(bytes)
}

/// Open an input file that is read more than once or by size (a bundle): it must be a regular,
/// non-empty file. Returns the file and its size.
pub fn open_regular(what: &'static str, path: &Path) -> Result<(File, u64), InputError> {
    if path == Path::new("-") {
        return Err(InputError::new(
            what,
            path,
            Problem::NotRegular("standard input"),
        ));
    }
    let meta = std::fs::metadata(path).map_err(|e| classify(what, path, e))?;
    let ft = meta.file_type();
    if ft.is_dir() {
        return Err(InputError::new(what, path, Problem::Directory));
    }
    if !ft.is_file() {
        use std::os::unix::fs::FileTypeExt;
        let kind = if ft.is_fifo() {
            "a pipe"
        } else if ft.is_socket() {
            "a socket"
        } else {
            "a device"
        };
        return Err(InputError::new(what, path, Problem::NotRegular(kind)));
    }
    if meta.len() == 0 {
        return Err(InputError::new(what, path, Problem::Empty));
    }
    let f = File::open(path).map_err(|e| classify(what, path, e))?;
    Ok((f, meta.len()))
}

/// Check that an input directory (a Tanka project) exists and is a directory.
pub fn check_dir(what: &'static str, path: &Path) -> Result<(), InputError> {
    let meta = std::fs::metadata(path).map_err(|e| classify(what, path, e))?;
    if meta.is_dir() {
        std::fs::read_dir(path)
            .map(|_| ())
            .map_err(|e| classify(what, path, e))
    } else {
        Err(InputError::new(what, path, Problem::NotDirectory))
    }
}
