use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use sparkgap::cli;

fn main() -> ExitCode {
    sparkgap::install_tls_provider();
    let args = cli::Cli::parse();
    let level = match args.global.verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    // kube's client logs every failed request at ERROR, also those our own code expects and
    // reports (the wait for k3s's API polls until it answers): shown with -v only.
    let kube = if args.global.verbose == 0 {
        "off"
    } else {
        level
    };
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
        .with_writer(|| Redacting(std::io::stderr()))
        // Colour only for a person at a terminal; CI logs and pipes get plain text.
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .without_time()
        .init();
    match cli::run(args) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            // Not eprintln!: a closed stderr must not turn an error into a panic.
            cli::write_out(
                cli::Stream::Stderr,
                format_args!("error: {}\n", message(&err)),
            );
            ExitCode::from(cli::exit_code(&err))
        }
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

/// A writer that removes every credential read so far (`oci::auth::redact`) from what passes
/// through. tracing's fmt layer writes each event in one call, so a secret is never split.
struct Redacting<W>(W);

impl<W: std::io::Write> std::io::Write for Redacting<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match std::str::from_utf8(buf) {
            Ok(text) => {
                self.0
                    .write_all(sparkgap::oci::auth::redact(text).as_bytes())?;
            }
            Err(_) => self.0.write_all(buf)?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}
