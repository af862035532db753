//! How the suite counts tests that cannot run here (docs/testing.md, "Skipped tests"):
//! - `scripts/cargo-test`, the counting half of `scripts/test`, run over a fixture crate
//!   (`tests/fixtures/skipcount`) whose tests pass, skip through the real
//!   `tests/common/skip.rs`, fail, fail after skipping and are ignored, with one test thread and
//!   with two: both give the same counts and name every skip with its reason.
//! - A scan of every test source: a test cannot skip without the helper, neither by printing a
//!   `SKIP` line of its own nor by returning early without recording why.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `scripts/cargo-test` over the fixture crate as `scripts/test` runs it, with
/// `RUST_TEST_THREADS=threads` and `extra` arguments: (exit code, output, summary lines).
fn count_fixture(threads: &str, extra: &[&str]) -> (i32, String, Vec<String>) {
    let tmp = tempfile::tempdir().unwrap();
    let summary = tmp.path().join("summary");
    // Kept between runs (CARGO_TARGET_TMPDIR): the fixture builds once per target directory.
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("skipcount");
    let out = Command::new(repo().join("scripts/cargo-test"))
        .arg("--summary")
        .arg(&summary)
        .args([
            "--locked",
            "--all-targets",
            "--no-fail-fast",
            "--manifest-path",
        ])
        .arg(repo().join("tests/fixtures/skipcount/Cargo.toml"))
        .arg("--target-dir")
        .arg(&target)
        .args(extra)
        .env("RUST_TEST_THREADS", threads)
        // This process's own record file, if any, must not receive the fixture's skips.
        .env_remove("SPARKGAP_SKIP_LOG")
        .output()
        .expect("run scripts/cargo-test");
    // Indented, so that a failure message quoting it cannot pass for this suite's own
    // `test result:` lines.
    let text = String::from_utf8_lossy(&out.stdout)
        .lines()
        .chain(String::from_utf8_lossy(&out.stderr).lines())
        .map(|l| format!("  | {l}\n"))
        .collect();
    let summary = std::fs::read_to_string(&summary)
        .unwrap_or_else(|e| panic!("no summary ({e}):\n{text}"))
        .lines()
        .map(str::to_string)
        .collect();
    (out.status.code().unwrap_or(-1), text, summary)
}

const FIXTURE_SKIPS: [&str; 3] = [
    "skipped at run time: shared_name: fixture: skipped in the second binary only",
    "skipped at run time: tests::nested::skips_in_a_module: fixture: named by its last part",
    "skipped at run time: tests::skips_with_a_reason: fixture: no such tool here",
];

#[test]
fn runtime_skips_are_counted_the_same_with_one_and_with_two_test_threads() {
    for threads in ["1", "2"] {
        let (code, text, summary) = count_fixture(threads, &[]);
        // libtest: 4 + 2 passed (three of them skipped), 2 failed (one after recording a skip,
        // one naming another test in its skip), 1 ignored.
        let mut want: Vec<&str> = FIXTURE_SKIPS.to_vec();
        want.push("cargo: 3 passed, 2 failed, 4 skipped");
        assert_eq!(summary, want, "RUST_TEST_THREADS={threads}:\n{text}");
        assert_eq!(code, 101, "cargo's exit code for failed tests:\n{text}");
        assert!(
            text.contains("skip(\"fails_with_a_misspelled_skip_name\") called on thread \"tests::fails_with_a_misspelt_skip_name\""),
            "a skip naming another test fails the test that made it:\n{text}"
        );

        let (code, text, summary) = count_fixture(threads, &["--", "--skip", "fails_"]);
        let mut want: Vec<&str> = FIXTURE_SKIPS.to_vec();
        want.push("cargo: 3 passed, 0 failed, 4 skipped");
        assert_eq!(summary, want, "RUST_TEST_THREADS={threads}:\n{text}");
        assert_eq!(code, 0, "{text}");
    }
}

/// The source text with comments and the contents of string and char literals blanked (same
/// length, newlines kept), and the literals' contents with their start offsets.
fn lex(src: &str) -> (Vec<char>, Vec<(usize, String)>) {
    let s: Vec<char> = src.chars().collect();
    let mut code = s.clone();
    let mut literals = Vec::new();
    let blank = |code: &mut Vec<char>, from: usize, to: usize| {
        for c in &mut code[from..to] {
            if *c != '\n' {
                *c = ' ';
            }
        }
    };
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    let mut i = 0;
    while i < s.len() {
        let next = |k: usize| s.get(i + k).copied().unwrap_or('\0');
        if s[i] == '/' && next(1) == '/' {
            let end = (i..s.len()).find(|&j| s[j] == '\n').unwrap_or(s.len());
            blank(&mut code, i, end);
            i = end;
        } else if s[i] == '/' && next(1) == '*' {
            let (mut j, mut depth) = (i + 2, 1);
            while j < s.len() && depth > 0 {
                if s[j] == '/' && s.get(j + 1) == Some(&'*') {
                    depth += 1;
                    j += 2;
                } else if s[j] == '*' && s.get(j + 1) == Some(&'/') {
                    depth -= 1;
                    j += 2;
                } else {
                    j += 1;
                }
            }
            blank(&mut code, i, j);
            i = j;
        } else if s[i] == 'r' && (i == 0 || !ident(s[i - 1]) || s[i - 1] == 'b') && {
            let hashes = s[i + 1..].iter().take_while(|&&c| c == '#').count();
            s.get(i + 1 + hashes) == Some(&'"')
        } {
            // A raw string: r"...", r#"..."#, br"...".
            let hashes = s[i + 1..].iter().take_while(|&&c| c == '#').count();
            let start = i + 2 + hashes;
            let mut j = start;
            while j < s.len() {
                if s[j] == '"'
                    && s[j + 1..]
                        .iter()
                        .take(hashes)
                        .filter(|&&c| c == '#')
                        .count()
                        == hashes
                {
                    break;
                }
                j += 1;
            }
            literals.push((start, s[start..j.min(s.len())].iter().collect()));
            blank(&mut code, start, j.min(s.len()));
            i = j + 1 + hashes;
        } else if s[i] == '"' {
            let mut j = i + 1;
            while j < s.len() && s[j] != '"' {
                j += if s[j] == '\\' { 2 } else { 1 };
            }
            literals.push((i + 1, s[i + 1..j.min(s.len())].iter().collect()));
            blank(&mut code, i + 1, j.min(s.len()));
            i = j + 1;
        } else if s[i] == '\'' && (next(1) == '\\' || next(2) == '\'') {
            // A char literal ('x', '\n', '\''); a lifetime or label has no closing quote.
            let mut j = i + 1;
            while j < s.len() && s[j] != '\'' {
                j += if s[j] == '\\' { 2 } else { 1 };
            }
            blank(&mut code, i + 1, j.min(s.len()));
            i = j + 1;
        } else {
            i += 1;
        }
    }
    (code, literals)
}

/// The position of the bracket closing the one opened at `open`.
fn closing(code: &[char], open: usize) -> usize {
    let mut depth = 0usize;
    for (j, &c) in code.iter().enumerate().skip(open) {
        match c {
            '{' | '(' | '[' => depth += 1,
            '}' | ')' | ']' => {
                depth -= 1;
                if depth == 0 {
                    return j;
                }
            }
            _ => {}
        }
    }
    code.len()
}

/// Start offsets of `word` standing alone (not part of a longer identifier).
fn words(code: &[char], word: &str) -> Vec<usize> {
    let w: Vec<char> = word.chars().collect();
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    (0..code.len().saturating_sub(w.len() - 1))
        .filter(|&i| {
            code[i..i + w.len()] == w[..]
                && (i == 0 || !ident(code[i - 1]))
                && code.get(i + w.len()).is_none_or(|&c| !ident(c))
        })
        .collect()
}

fn skip_ws(code: &[char], mut i: usize) -> usize {
    while i < code.len() && code[i].is_whitespace() {
        i += 1;
    }
    i
}

/// Ranges of test code: the whole file under tests/, the `#[cfg(test)] mod` blocks under src/.
fn test_regions(code: &[char], whole: bool) -> Vec<(usize, usize)> {
    if whole {
        return vec![(0, code.len())];
    }
    let text: String = code.iter().collect();
    let mut out = Vec::new();
    for (at, _) in text.match_indices("#[cfg(test)]") {
        let at = text[..at].chars().count();
        if let Some(m) = words(code, "mod").into_iter().find(|&m| m > at)
            && let Some(open) = (m..code.len()).find(|&j| code[j] == '{' || code[j] == ';')
            && code[open] == '{'
        {
            out.push((open, closing(code, open)));
        }
    }
    out
}

/// Bodies of the `#[test]` / `#[tokio::test]` functions (proptest's included).
fn test_fn_bodies(code: &[char]) -> Vec<(usize, usize)> {
    let text: String = code.iter().collect();
    let mut out = Vec::new();
    for pat in ["#[test]", "#[tokio::test"] {
        for (at, _) in text.match_indices(pat) {
            let at = text[..at].chars().count();
            if let Some(f) = words(code, "fn").into_iter().find(|&f| f > at)
                && let Some(open) = (f..code.len()).find(|&j| code[j] == '{')
            {
                out.push((open, closing(code, open)));
            }
        }
    }
    out
}

/// The identifiers called in `text` (`name(`, `path::name(`).
fn calls(text: &[char]) -> Vec<String> {
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    let mut out = Vec::new();
    for (j, &c) in text.iter().enumerate() {
        if c != '(' {
            continue;
        }
        let mut k = j;
        while k > 0 && text[k - 1].is_whitespace() {
            k -= 1;
        }
        let end = k;
        while k > 0 && ident(text[k - 1]) {
            k -= 1;
        }
        if k < end {
            out.push(text[k..end].iter().collect());
        }
    }
    out
}

/// A call that records a skip: `skip(test, reason)` itself, the probes that call it
/// (`tool_available`, `registry_available`), and helpers named `*_or_skip`, which return
/// None after calling it.
fn records_a_skip(name: &str) -> bool {
    matches!(name, "skip" | "tool_available" | "registry_available") || name.ends_with("_or_skip")
}

/// The statement header before the block opened at `open` (`if COND`, `let P = E else`,
/// `ARM =>`), back to the previous statement; an `else` chain includes its `if`.
fn header(code: &[char], open: usize) -> usize {
    let mut stack = 0usize;
    let mut j = open;
    while j > 0 {
        j -= 1;
        match code[j] {
            ')' | ']' => stack += 1,
            '}' if stack > 0 => stack += 1,
            '}' => {
                let after: String = code[j + 1..open].iter().collect();
                if after.trim_start().starts_with("else") {
                    stack += 1;
                } else {
                    return j + 1;
                }
            }
            '(' | '[' | '{' if stack > 0 => stack -= 1,
            '(' | '[' | '{' => return j + 1,
            ';' if stack == 0 => return j + 1,
            _ => {}
        }
    }
    0
}

/// What is wrong with one source file: (line, problem).
fn scan(src: &str, whole_file_is_test_code: bool, literals_too: bool) -> Vec<(usize, String)> {
    let (code, literals) = lex(src);
    let lines: Vec<&str> = src.lines().collect();
    let line_of = |pos: usize| code[..pos].iter().filter(|&&c| c == '\n').count() + 1;
    let regions = test_regions(&code, whole_file_is_test_code);
    let in_tests = |pos: usize| regions.iter().any(|&(a, b)| a <= pos && pos <= b);
    let mut problems = Vec::new();

    for (pos, text) in &literals {
        let t = text.trim_start();
        if literals_too
            && in_tests(*pos)
            && (t.starts_with("SKIP ") || t.to_lowercase().starts_with("skipping"))
        {
            problems.push((
                line_of(*pos),
                "a skip printed by hand is counted as a pass: call skip(test, reason) \
                 (tests/common/skip.rs) and return"
                    .to_string(),
            ));
        }
    }

    // Early exits from a test: a bare `return` anywhere in test code, and `return Ok(())` in a
    // test function's own body.
    let mut exits = Vec::new();
    for r in words(&code, "return") {
        let after = skip_ws(&code, r + "return".len());
        if matches!(code.get(after), Some(';' | '}' | ',')) {
            exits.push(r);
        }
    }
    let bodies = test_fn_bodies(&code);
    for r in words(&code, "return") {
        let rest: String = code[r + "return".len()..(r + 40).min(code.len())]
            .iter()
            .filter(|c| !c.is_whitespace())
            .collect();
        if rest.starts_with("Ok(())") && bodies.iter().any(|&(a, b)| a < r && r < b) {
            exits.push(r);
        }
    }
    for r in exits {
        if !in_tests(r) {
            continue;
        }
        let line = line_of(r);
        if lines
            .get(line - 1)
            .is_some_and(|l| l.contains("// not a skip"))
        {
            continue;
        }
        // The innermost block holding the return, and the condition that opened it.
        let mut depth = 0usize;
        let mut open = None;
        for j in (0..r).rev() {
            match code[j] {
                '}' => depth += 1,
                '{' if depth > 0 => depth -= 1,
                '{' => {
                    open = Some(j);
                    break;
                }
                _ => {}
            }
        }
        let guarded = open.is_some_and(|open| {
            let from = header(&code, open);
            calls(&code[from..r]).iter().any(|c| records_a_skip(c))
        });
        if !guarded {
            problems.push((
                line,
                "an early return that records no skip is counted as a pass: call \
                 skip(test, reason) (tests/common/skip.rs) or a `*_or_skip` helper before it, \
                 or end the line with `// not a skip: <why>` when the test did run"
                    .to_string(),
            ));
        }
    }
    problems
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn no_test_skips_without_the_skip_helper() {
    let mut files = Vec::new();
    rust_files(&repo().join("tests"), &mut files);
    let test_files = files.len();
    rust_files(&repo().join("src"), &mut files);
    assert!(test_files > 20 && files.len() > test_files, "{files:?}");
    let mut problems = Vec::new();
    for (i, f) in files.iter().enumerate() {
        let rel = f.strip_prefix(repo()).unwrap();
        // The helper prints the SKIP line; this file names it.
        let literals_too = ![
            Path::new("tests/common/skip.rs"),
            Path::new("tests/skips.rs"),
        ]
        .contains(&rel);
        let src = std::fs::read_to_string(f).unwrap();
        for (line, p) in scan(&src, i < test_files, literals_too) {
            problems.push(format!("{}:{line}: {p}", rel.display()));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The scan on the shapes of skip the suite had and must not have again.
#[test]
fn the_scan_finds_skips_that_bypass_the_helper() {
    // tests/tanka.rs before the fix: its SKIP line went to captured stdout, and the test passed.
    let printed = r#"
#[test]
fn tanka_import_paths_match_go_jsonnet_with_tankas_jpath() {
    let bin = match jsonnet_binary() {
        Ok(b) => b,
        Err(why) => {
            println!(
                "SKIP tanka_import_paths_match_go_jsonnet_with_tankas_jpath: no go-jsonnet: {why}"
            );
            return;
        }
    };
    run(bin);
}
"#;
    let lines: Vec<usize> = scan(printed, true, true).iter().map(|p| p.0).collect();
    assert_eq!(lines, [8, 10], "{:?}", scan(printed, true, true));

    // A lib unit test skipping with eprintln!, and one returning without a word.
    let unit = r#"
pub fn product() -> Option<u8> { if true { return None; } Some(1) }
pub fn product_unit(x: bool) { if x { return; } }
#[cfg(test)]
mod tests {
    #[test]
    fn starts() {
        if !std::path::Path::new("/usr/bin/x").is_file() {
            eprintln!("skipping: x not installed");
            return;
        }
    }
    #[test]
    fn silent() -> Result<(), String> {
        if std::env::var_os("X").is_none() { return Ok(()); }
        Ok(())
    }
}
"#;
    let lines: Vec<usize> = scan(unit, false, true).iter().map(|p| p.0).collect();
    assert_eq!(lines, [9, 10, 15], "{:?}", scan(unit, false, true));

    // What the helpers allow: skip, the probes, `*_or_skip`, and a marked return that is not a
    // skip; braces and `return;` inside literals and comments are not code.
    let fine = r#"
#[test]
fn a() {
    let Some(h) = Harness::start_or_skip("a") else { return };
    if !common::tool_available("a", "skopeo", "skopeo") || !registry_available("a") {
        return;
    }
    let bin = match go_peer("X", "x") {
        Ok(b) => b,
        Err(why) => {
            common::skip::skip("a", &format!("no x: {why} {{"));
            return;
        }
    };
    for x in [1] {
        if x == 1 { return; } // not a skip: the case is done
    }
    let s = "} return; {"; // return;
    let c = '{';
    /* return; */
}
"#;
    assert_eq!(scan(fine, true, true), []);
}
