//! The files a spec names beside itself (`manifests[].path`, `charts[].path`,
//! `charts[].valuesFile`): checked before anything is pulled or rendered, and read under the
//! input-file rule (`crate::input`), every message naming the spec, the line and the field.
//!
//! Not part of `SpecFile::read`: the spec copy an install keeps on the node has none of them
//! beside it (the bundle carried them rendered), and `apply`/`verify` of that copy must work.

use std::path::PathBuf;

use super::{Issue, SpecError, SpecFile, locate_nearest};
use crate::input::{InputError, Problem};

/// One file a spec field names: the field, what the file is, the path as written.
struct Named<'a> {
    field: String,
    what: &'static str,
    path: &'a str,
}

impl SpecFile {
    /// Every file the spec names, by field, at its path beside the spec.
    pub fn named_paths(&self) -> Vec<(String, PathBuf)> {
        self.named_files()
            .into_iter()
            .map(|n| (n.field, self.base_dir().join(n.path)))
            .collect()
    }

    fn named_files(&self) -> Vec<Named<'_>> {
        let s = &self.appliance.spec;
        let mut out = Vec::new();
        for (i, m) in s.manifests.iter().enumerate() {
            out.push(Named {
                field: format!("spec.manifests[{i}].path"),
                what: "manifest",
                path: &m.path,
            });
        }
        for (i, c) in s.charts.iter().enumerate() {
            if let Some(p) = &c.path {
                out.push(Named {
                    field: format!("spec.charts[{i}].path"),
                    what: "chart archive",
                    path: p,
                });
            }
            if let Some(p) = &c.values_file {
                out.push(Named {
                    field: format!("spec.charts[{i}].valuesFile"),
                    what: "values file",
                    path: p,
                });
            }
        }
        out
    }

    /// Every file the spec names exists, is a non-empty file, and can be read. All problems at
    /// once, each with its line; a file that is there but unreadable is reported on its own
    /// (it is this machine's fault, not the spec's: `crate::input`).
    pub fn check_files(&self) -> Result<(), SpecError> {
        let text = String::from_utf8_lossy(&self.raw);
        let mut issues = Vec::new();
        let mut unreadable = None;
        for n in self.named_files() {
            let file = self.base_dir().join(n.path);
            match crate::input::read(n.what, &file) {
                Ok(_) => {}
                Err(
                    e @ InputError {
                        problem: Problem::Unreadable(_),
                        ..
                    },
                ) => {
                    unreadable.get_or_insert((n.field, e));
                }
                Err(e) => issues.push(Issue {
                    line: locate_nearest(&text, &n.field),
                    message: e.to_string(),
                    field: n.field,
                }),
            }
        }
        if !issues.is_empty() {
            return Err(SpecError::Invalid {
                path: self.path.clone(),
                issues,
            });
        }
        match unreadable {
            Some((field, source)) => Err(self.file_error(&field, source)),
            None => Ok(()),
        }
    }

    fn file_error(&self, field: &str, file: InputError) -> SpecError {
        let text = String::from_utf8_lossy(&self.raw);
        SpecError::File {
            path: self.path.clone(),
            line: locate_nearest(&text, field),
            field: field.to_string(),
            file: Box::new(file),
        }
    }

    /// The bytes of the file `field` names (`what`: "manifest", "chart archive"), relative to
    /// the spec.
    pub fn read_named(
        &self,
        field: &str,
        what: &'static str,
        rel: &str,
    ) -> Result<(PathBuf, Vec<u8>), SpecError> {
        let file = self.base_dir().join(rel);
        match crate::input::read(what, &file) {
            Ok(bytes) => Ok((file, bytes)),
            Err(e) => Err(self.file_error(field, e)),
        }
    }

    /// Chart `i`'s values: `values`, or the text of `valuesFile`; None when it has neither.
    pub fn chart_values(&self, i: usize) -> Result<Option<String>, SpecError> {
        let chart = &self.appliance.spec.charts[i];
        match (&chart.values, &chart.values_file) {
            (Some(v), _) => Ok(Some(v.clone())),
            (None, Some(f)) => {
                let field = format!("spec.charts[{i}].valuesFile");
                let (file, bytes) = self.read_named(&field, "values file", f)?;
                String::from_utf8(bytes)
                    .map(Some)
                    .map_err(|_| SpecError::Parse {
                        path: self.path.clone(),
                        message: format!(
                            "{field}: values file {} is not UTF-8 text",
                            file.display()
                        ),
                    })
            }
            (None, None) => Ok(None),
        }
    }
}
