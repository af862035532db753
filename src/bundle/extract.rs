//! Safe extraction: every member of a verified bundle into a fresh directory, all or nothing.
//!
//! Members are written into a staging directory created next to the destination; only when
//! `read_bundle` has verified every member (and the signature when asked) is the staging
//! directory renamed to the destination. On any error the staging directory is removed, so a
//! damaged or hostile bundle leaves nothing behind. Paths were checked by the reader before the
//! visitor sees them, and nothing here follows links: the staging tree is ours alone.

use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};

use super::{BundleError, Member, ReadOptions, VerifiedManifest, read_bundle};

/// Extract `bundle` into `dest`, which must not exist yet. Modes come from the manifest
/// (0644/0755); parent directories are 0755. Returns the verified manifest.
pub fn extract(
    bundle: &Path,
    opts: &ReadOptions,
    dest: &Path,
) -> Result<VerifiedManifest, BundleError> {
    if fs::symlink_metadata(dest).is_ok() {
        return Err(BundleError::Invalid {
            path: dest.display().to_string(),
            message: "the extraction directory already exists; remove it or choose another".into(),
        });
    }
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "bundle".into());
    let staging = tempfile::Builder::new()
        .prefix(&format!(".{name}.partial-"))
        .tempdir_in(&parent)
        .map_err(|e| BundleError::write_io(&parent, e))?;
    let root = staging.path().to_path_buf();
    let verified = read_bundle(bundle, opts, &mut |m, r| write_member(&root, m, r))?;
    set_mode(&root, 0o755).map_err(|e| BundleError::write_io(&root, e))?;
    let kept = staging.keep();
    fs::rename(&kept, dest).map_err(|e| {
        let _ = fs::remove_dir_all(&kept);
        BundleError::write_io(dest, e)
    })?;
    if let Ok(d) = File::open(&parent) {
        // Make the rename durable; a filesystem that cannot fsync a directory is no error.
        let _ = d.sync_all();
    }
    Ok(verified)
}

fn write_member(root: &Path, m: &Member, r: &mut dyn Read) -> Result<(), BundleError> {
    let path = root.join(&m.path);
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(|e| BundleError::write_io(dir, e))?;
    }
    let mut f = File::options()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| BundleError::write_io(&path, e))?;
    // The reader reports damage itself (as BundleError::Damaged, which wins over this one).
    std::io::copy(r, &mut f).map_err(|e| BundleError::write_io(&path, e))?;
    f.sync_all().map_err(|e| BundleError::write_io(&path, e))?;
    set_mode(&path, m.mode).map_err(|e| BundleError::write_io(&path, e))
}

#[cfg(unix)]
fn set_mode(p: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(p, fs::Permissions::from_mode(mode))
}

#[cfg(not(unix))]
fn set_mode(_p: &Path, _mode: u32) -> std::io::Result<()> {
    Ok(())
}
