//! A directory tree as a value, to assert that a run changed exactly what it should (and, after a
//! refusal, nothing): every entry's kind, mode and contents, or its inode and mtime. Include with
//! `#[path = "common/tree.rs"] mod tree;`.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use sparkgap::digest::sha256_hex;

/// path → (kind, mode, sha256 or link target).
pub type Tree = BTreeMap<String, (char, u32, String)>;

/// Every entry under `root` (not `root` itself), as a [`Tree`].
pub fn tree(root: &Path) -> Tree {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, (char, u32, String)>) {
        for e in fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let m = fs::symlink_metadata(&p).unwrap();
            let mode = m.permissions().mode() & 0o7777;
            if m.is_symlink() {
                out.insert(
                    rel,
                    ('l', 0, fs::read_link(&p).unwrap().display().to_string()),
                );
            } else if m.is_dir() {
                out.insert(rel, ('d', mode, String::new()));
                walk(root, &p, out);
            } else {
                out.insert(rel, ('f', mode, sha256_hex(&fs::read(&p).unwrap())));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// path → (inode, mtime ns) of every entry.
pub fn stamps(root: &Path) -> BTreeMap<String, (u64, i64)> {
    tree(root)
        .keys()
        .map(|rel| {
            let m = fs::symlink_metadata(root.join(rel)).unwrap();
            (
                rel.clone(),
                (m.ino(), m.mtime() * 1_000_000_000 + m.mtime_nsec()),
            )
        })
        .collect()
}
