//! The credentials files sparkgap reads (all outside input): docker/containers auth files
//! (`oci::auth::AuthFile`), `--repo-auth` files and helm's `repositories.yaml`
//! (`oci::repo_auth`). The first byte picks the parser; none may panic, and an accepted auth
//! file answers lookups for every registry it names (decoding an entry may fail, cleanly).
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use sparkgap::oci::auth::AuthFile;
use sparkgap::oci::repo_auth::{RepoAuth, RepoAuthFile, parse_helm_repositories};

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    match pick % 3 {
        0 => {
            let Ok(file) = AuthFile::parse(text) else {
                return;
            };
            for key in file.registries() {
                let (host, repo) = key.split_once('/').unwrap_or((&key, "library/x"));
                let _ = file.entry_credential(host, repo);
                let _ = file.entry_credential(host, "other/name");
            }
            let _ = file.entry_credential("docker.io", "library/busybox");
        }
        1 => {
            let _ = RepoAuthFile::parse(text);
        }
        _ => {
            // Relative caFile paths resolve under a directory that does not exist.
            let Ok(entries) =
                parse_helm_repositories(text, Path::new("/nonexistent-sparkgap-fuzz/r.yaml"))
            else {
                return;
            };
            let auth = RepoAuth::from_entries(entries);
            for e in auth.entries() {
                let url = format!("{}index.yaml", e.url);
                assert!(auth.for_url(&url).is_some(), "an entry matches its own URL");
                let _ = auth.describe(&url);
            }
        }
    }
});
