//! Progress reporting: bars on a terminal, quiet line-oriented messages otherwise (CI logs,
//! pipes, `--output json`). Core modules report through `Progress`, never print themselves.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How long work reports itself.
#[derive(Clone)]
pub struct Progress {
    bars: bool,
}

impl Progress {
    /// Bars only when stderr is a terminal and neither `--no-progress` nor JSON output is asked.
    pub fn new(global: &super::Global) -> Progress {
        let bars = !global.no_progress
            && global.output == super::Output::Text
            && std::io::stderr().is_terminal();
        Progress { bars }
    }

    /// No bars, no lines: for library callers and tests.
    pub fn hidden() -> Progress {
        Progress { bars: false }
    }

    /// A byte-counting task (`total` bytes). Without a terminal it logs start and end lines.
    pub fn bytes(&self, label: &str, total: u64) -> Task {
        if self.bars {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template(
                    "{msg:>10} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                )
                .expect("static template")
                .progress_chars("=> "),
            );
            bar.set_message(label.to_string());
            Task { bar: Some(bar) }
        } else {
            tracing::info!("{label}: {} bytes", total);
            Task { bar: None }
        }
    }

    /// Print one status line (stderr), whatever the mode; silent only when hidden.
    pub fn line(&self, msg: &str) {
        tracing::info!("{msg}");
    }
}

pub struct Task {
    bar: Option<ProgressBar>,
}

impl Task {
    pub fn inc(&self, n: u64) {
        if let Some(b) = &self.bar {
            b.inc(n);
        }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}
