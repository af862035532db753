//! Where a command writes, checked against what it reads before anything is written: an output
//! that is one of the command's inputs (also through a symbolic or hard link), or lies inside
//! its blob cache, is refused (exit 2). `build -o appliance.yaml` used to replace the spec with
//! a tar.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// A path a command reads: what it is to the user ("the spec (-f)") and where.
pub struct Read<'a> {
    pub what: String,
    pub path: &'a Path,
}

/// `path` made absolute through its nearest existing ancestor, links resolved (neither the file
/// nor its directory need exist yet).
fn resolved(path: &Path) -> Option<PathBuf> {
    let path = std::path::absolute(path).ok()?;
    let mut existing = path.as_path();
    let mut rest = Vec::new();
    loop {
        if let Ok(p) = existing.canonicalize() {
            return Some(rest.iter().rev().fold(p, |acc, part| acc.join(part)));
        }
        rest.push(existing.file_name()?);
        existing = existing.parent()?;
    }
}

/// Refuse writing `out` (given as `flag`) when it would destroy one of `inputs` or land in
/// one of `dirs` (a cache: `what`, directory).
pub fn refuse_clobbering(
    flag: &str,
    out: &Path,
    inputs: &[Read<'_>],
    dirs: &[Read<'_>],
) -> anyhow::Result<()> {
    let shown = out.display();
    let meta = std::fs::metadata(out).ok();
    if meta.as_ref().is_some_and(|m| m.is_dir()) {
        anyhow::bail!("{flag} {shown} is a directory; give the path of the file to write");
    }
    if let Some(m) = &meta {
        for input in inputs {
            let same = std::fs::metadata(input.path)
                .is_ok_and(|i| i.dev() == m.dev() && i.ino() == m.ino());
            if same {
                let link = if std::fs::symlink_metadata(out).is_ok_and(|l| l.is_symlink())
                    || input.path != out
                {
                    format!(" ({} is the same file)", input.path.display())
                } else {
                    String::new()
                };
                anyhow::bail!(
                    "{flag} {shown} is {}{link}: writing there would destroy it; nothing was \
                     written — choose another output path",
                    input.what
                );
            }
        }
    }
    let Some(at) = resolved(out) else {
        return Ok(());
    };
    for dir in dirs {
        if let Some(d) = resolved(dir.path)
            && at.starts_with(&d)
        {
            anyhow::bail!(
                "{flag} {shown} lies inside {} ({}), which holds only what sparkgap puts \
                 there; nothing was written — choose an output path outside it",
                dir.what,
                dir.path.display()
            );
        }
    }
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty())
        && !parent.is_dir()
    {
        anyhow::bail!(
            "{flag} {shown}: the directory {} does not exist; nothing was written — create it \
             first (mkdir -p {})",
            parent.display(),
            parent.display()
        );
    }
    Ok(())
}

/// [`refuse_clobbering`] for a command that reads `spec` (and every file it names), the
/// `others` it is given (`(what, path)`) and the blob cache `cache`.
pub fn refuse_clobbering_spec(
    flag: &str,
    out: &Path,
    spec: &crate::spec::SpecFile,
    others: &[(&str, Option<&Path>)],
    cache: &Path,
) -> anyhow::Result<()> {
    let named = spec.named_paths();
    let mut inputs = vec![Read {
        what: "the spec (-f)".into(),
        path: &spec.path,
    }];
    for (field, path) in &named {
        inputs.push(Read {
            what: format!("a file the spec names ({field})"),
            path,
        });
    }
    for (what, path) in others {
        if let Some(path) = path {
            inputs.push(Read {
                what: what.to_string(),
                path,
            });
        }
    }
    let dirs = [Read {
        what: "the blob cache".into(),
        path: cache,
    }];
    refuse_clobbering(flag, out, &inputs, &dirs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_that_are_inputs_or_inside_a_cache_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let spec = d.path().join("appliance.yaml");
        std::fs::write(&spec, "spec").unwrap();
        let link = d.path().join("link.yaml");
        std::os::unix::fs::symlink(&spec, &link).unwrap();
        let hard = d.path().join("hard.yaml");
        std::fs::hard_link(&spec, &hard).unwrap();
        let cache = d.path().join("cache");
        std::fs::create_dir_all(cache.join("sha256")).unwrap();
        let inputs = [Read {
            what: "the spec (-f)".into(),
            path: &spec,
        }];
        let dirs = [Read {
            what: "the blob cache".into(),
            path: &cache,
        }];
        for (out, words) in [
            (spec.clone(), "is the spec"),
            (link, "same file"),
            (hard, "same file"),
            (cache.join("sha256/x.tar"), "inside the blob cache"),
            (cache.join("new/x.tar"), "inside the blob cache"),
            (cache.clone(), "is a directory"),
        ] {
            let e = refuse_clobbering("-o", &out, &inputs, &dirs).unwrap_err();
            assert!(e.to_string().contains(words), "{out:?}: {e}");
        }
        let e = refuse_clobbering("-o", &d.path().join("new/dir/b.tar"), &inputs, &dirs)
            .unwrap_err()
            .to_string();
        assert!(e.contains("new/dir does not exist"), "{e}");
        refuse_clobbering("-o", &d.path().join("bundle.tar"), &inputs, &dirs).unwrap();
        refuse_clobbering("-o", Path::new("bundle.tar"), &inputs, &dirs).unwrap();
    }
}
