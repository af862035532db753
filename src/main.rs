use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use sparkgap::cli::{self, Stream};

fn main() -> ExitCode {
    sparkgap::install_tls_provider();
    let raw: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let json = cli::asks_for_json(&raw);
    let args = match cli::Cli::try_parse_from(&raw) {
        Ok(args) => args,
        Err(e) => return usage_error(&e, json),
    };
    init_logging(args.global.verbose);
    let mut code = match cli::run(args) {
        Ok(code) => code,
        Err(err) => {
            let message = message(&err);
            // Interrupted: the process ends by the signal, which a shell reports as 128+N.
            let signal = cli::interrupted_by(&err);
            let (kind, code) = match signal {
                Some(s) => ("interrupted", 128 + s as u8),
                None => (cli::kind_word(&err), cli::exit_code(&err)),
            };
            if json {
                cli::write_out(
                    Stream::Stdout,
                    format_args!("{}\n", cli::error_document(kind, &message, code)),
                );
            }
            // Not eprintln!: a closed stderr must not turn an error into a panic.
            cli::write_out(Stream::Stderr, format_args!("error: {message}\n"));
            if let Some(signal) = signal {
                let _ = cli::output_lost();
                sparkgap::install::interrupt::die_by(signal);
            }
            code
        }
    };
    // The work is done; only now does a lost stdout (a full disk) say so. A reader that went
    // away (`| head`) is not a failure.
    if let Some(lost) = cli::output_lost() {
        cli::write_out(
            Stream::Stderr,
            format_args!(
                "error: the output could not be written to stdout ({lost}); the command itself \
                 ran to its end\n"
            ),
        );
        if code == cli::exit::OK {
            code = cli::exit::ENVIRONMENT;
        }
    }
    ExitCode::from(code)
}

/// Arguments clap refuses (exit 2), and `--help`/`--version` (exit 0), as clap prints them; with
/// `--output json` the refusal is also the JSON error document on stdout.
fn usage_error(e: &clap::Error, json: bool) -> ExitCode {
    let code = e.exit_code() as u8;
    if json && e.use_stderr() {
        let text = e.render().to_string();
        let first = text.lines().next().unwrap_or_default();
        let message = first.strip_prefix("error: ").unwrap_or(first);
        cli::write_out(
            Stream::Stdout,
            format_args!("{}\n", cli::error_document("input", message, code)),
        );
    }
    // clap's own printing, which ignores write errors.
    let _ = e.print();
    let _ = cli::output_lost();
    ExitCode::from(code)
}

fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    // kube's client logs every failed request at ERROR, also those our own code expects and
    // reports (the wait for k3s's API polls until it answers): shown with -v only.
    let kube = if verbose == 0 { "off" } else { level };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SPARKGAP_LOG").unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new(format!(
                    "sparkgap={level},kube_client={kube},warn"
                ))
            }),
        )
        // Log lines go through the same redaction as everything printed: no credential read
        // by this process reaches stderr at any verbosity.
        .with_writer(|| QuietStderr)
        // Colour only for a person at a terminal; CI logs and pipes get plain text.
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .without_time()
        .init();
}

/// stderr for log lines, whose write errors are dropped: tracing-subscriber reports a failed
/// write with `eprintln!`, which panics when stderr is a closed pipe (`... 2>&1 | tee log` after
/// tee died). Logging must never stop the work. Every credential read so far is removed
/// (`oci::auth::redact`) first; tracing's fmt layer writes each event in one call, so a secret is
/// never split.
struct QuietStderr;

impl std::io::Write for QuietStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut err = std::io::stderr().lock();
        let _ = match std::str::from_utf8(buf) {
            Ok(text) => err.write_all(sparkgap::oci::auth::redact(text).as_bytes()),
            Err(_) => err.write_all(buf),
        };
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The error and its causes on one line, each cause once: typed errors often already say their
/// source in their own message, and repeating it ("…(os error 2): …(os error 2)") helps nobody.
fn message(err: &anyhow::Error) -> String {
    let mut msg = err.to_string();
    for cause in err.chain().skip(1) {
        let text = cause.to_string();
        if !msg.contains(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
    }
    msg
}
