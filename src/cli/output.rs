//! What commands print, and how it reaches stdout and stderr: `out!` and friends write
//! through [`write_out`], which never panics and never stops the work (docs/cli.md, "Output
//! streams"); the one JSON document of `--output json`, also on failure.

/// Where `out!` and `err!` write.
#[derive(Clone, Copy)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// A stream that could not be written: the reader went away (a closed pipe), or the write
/// failed for another reason, kept to be reported.
static STDOUT_ENDED: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
static STDERR_ENDED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn stdout_failed(e: std::io::Error) {
    let lost = (e.kind() != std::io::ErrorKind::BrokenPipe).then(|| e.to_string());
    let _ = STDOUT_ENDED.set(lost);
}

/// Write to stdout or stderr. Never panics and never fails: see `out!`. Every credential this
/// process has read is removed first (`oci::auth::redact`): whatever a registry or helper echoed
/// into an error, no secret reaches the terminal or `--output json`.
pub fn write_out(stream: Stream, args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    use std::sync::atomic::Ordering;
    let text = args.to_string();
    let text = crate::oci::auth::redact(&text);
    match stream {
        Stream::Stdout if STDOUT_ENDED.get().is_none() => {
            if let Err(e) = std::io::stdout().lock().write_all(text.as_bytes()) {
                stdout_failed(e);
            }
        }
        Stream::Stderr if !STDERR_ENDED.load(Ordering::Relaxed) => {
            let failed = std::io::stderr().lock().write_all(text.as_bytes()).is_err();
            STDERR_ENDED.fetch_or(failed, Ordering::Relaxed);
        }
        _ => {}
    }
}

/// Flush stdout (what is still buffered is written now) and say whether its output was lost
/// for another reason than a reader that went away: the error, for the one `error:` line.
pub fn output_lost() -> Option<String> {
    use std::io::Write;
    if STDOUT_ENDED.get().is_none()
        && let Err(e) = std::io::stdout().lock().flush()
    {
        stdout_failed(e);
    }
    STDOUT_ENDED.get().cloned().flatten()
}

/// The JSON document a failed command prints on stdout with `--output json`: what scripts
/// read instead of a report (docs/cli.md, "The JSON error document").
pub fn error_document(kind: &str, message: &str, exit_code: u8) -> String {
    let doc = serde_json::json!({
        "error": { "kind": kind, "message": message },
        "exitCode": exit_code,
    });
    serde_json::to_string_pretty(&doc).expect("a JSON value serialises")
}

/// Whether the raw command line asks for `--output json`: usage errors happen before the
/// arguments are parsed, and a script that asked for JSON gets its document all the same.
pub fn asks_for_json(args: &[std::ffi::OsString]) -> bool {
    args.iter()
        .zip(args.iter().skip(1))
        .any(|(a, b)| a == "--output" && b == "json")
        || args.iter().any(|a| a == "--output=json")
}

/// Print a serialisable value as the one JSON document on stdout.
pub fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    outln!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}
