//! Progress reporting: bars on a terminal, quiet line-oriented messages otherwise (CI logs,
//! pipes, `--output json`). Core modules report through `Progress`, never print themselves.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Bars on stderr (a person at a terminal).
    Bars,
    /// One log line when a task starts and one when it ends (CI logs, pipes).
    Lines,
    /// Nothing at all (library callers, tests, steps of a larger command).
    Hidden,
}

/// How long work reports itself.
#[derive(Clone)]
pub struct Progress {
    mode: Mode,
    /// Bars of tasks that run at once (a cold build's pull and bundle write) share the
    /// terminal through this, one line each.
    multi: MultiProgress,
}

impl Progress {
    /// Bars only when stderr is a terminal and neither `--no-progress` nor JSON output is asked.
    pub fn new(global: &super::Global) -> Progress {
        let bars = !global.no_progress
            && global.output == super::Output::Text
            && std::io::stderr().is_terminal();
        Progress {
            mode: if bars { Mode::Bars } else { Mode::Lines },
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
        }
    }

    /// No bars, no lines.
    pub fn hidden() -> Progress {
        Progress {
            mode: Mode::Hidden,
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::hidden()),
        }
    }

    /// A byte-counting task of `total` bytes (0 when unknown: a counter without a bar).
    pub fn bytes(&self, label: &str, total: u64) -> Task {
        let bar = (self.mode == Mode::Bars).then(|| {
            let (bar, template) = if total > 0 {
                (
                    ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::hidden()),
                    "{msg:>10} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                )
            } else {
                (
                    ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden()),
                    "{msg:>10} {spinner} {bytes} {bytes_per_sec}",
                )
            };
            bar.set_style(
                ProgressStyle::with_template(template)
                    .expect("static template")
                    .progress_chars("=> "),
            );
            bar.set_message(label.to_string());
            // Added before its first draw, so it draws through the shared target.
            self.multi.add(bar)
        });
        if self.mode == Mode::Lines && total > 0 {
            tracing::info!("{label}: {total} bytes to go");
        }
        Task {
            bar,
            lines: self.mode == Mode::Lines,
            label: label.to_string(),
            done: Arc::new(AtomicU64::new(0)),
            started: Instant::now(),
        }
    }

    /// One status line on stderr; nothing when hidden.
    pub fn line(&self, msg: &str) {
        if self.mode != Mode::Hidden {
            tracing::info!("{msg}");
        }
    }
}

pub struct Task {
    bar: Option<ProgressBar>,
    lines: bool,
    label: String,
    done: Arc<AtomicU64>,
    started: Instant,
}

impl Task {
    pub fn inc(&self, n: u64) {
        self.done.fetch_add(n, Ordering::Relaxed);
        if let Some(b) = &self.bar {
            b.inc(n);
        }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
        let n = self.done.load(Ordering::Relaxed);
        // Nothing moved (e.g. the input was refused at once): no end line to report.
        if self.lines && n > 0 {
            let secs = self.started.elapsed().as_secs_f64();
            let rate = if secs > 0.0 {
                n as f64 / secs / (1024.0 * 1024.0)
            } else {
                0.0
            };
            tracing::info!("{}: {n} bytes in {secs:.2} s ({rate:.0} MiB/s)", self.label);
        }
    }
}
