//! Progress on the terminal: the `Sink` behind the core's `Progress` handle. Bars on a
//! terminal, quiet line-oriented messages otherwise (CI logs, pipes, `--output json`).

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::bundle::group_digits;
use crate::progress::{Meter, Progress, Sink};

/// The handle for a command: bars only when stderr is a terminal and neither `--no-progress`
/// nor JSON output is asked; otherwise one log line when a task starts and one when it ends.
pub fn for_terminal(global: &super::Global) -> Progress {
    let bars = !global.no_progress
        && global.output == super::Output::Text
        && std::io::stderr().is_terminal();
    Progress::new(Terminal {
        bars,
        multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
    })
}

struct Terminal {
    /// Bars on stderr (a person at a terminal); else log lines (CI logs, pipes).
    bars: bool,
    /// Bars of tasks that run at once (a cold build's pull and bundle write) share the
    /// terminal through this, one line each.
    multi: MultiProgress,
}

impl Sink for Terminal {
    fn bytes(&self, label: &str, total: u64) -> Box<dyn Meter> {
        let bar = self.bars.then(|| {
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
        if !self.bars && total > 0 {
            tracing::info!("{label}: {} bytes to go", group_digits(total));
        }
        Box::new(TerminalTask {
            bar,
            lines: !self.bars,
            label: label.to_string(),
            done: Arc::new(AtomicU64::new(0)),
            started: Instant::now(),
        })
    }

    fn line(&self, msg: &str) {
        tracing::info!("{msg}");
    }
}

struct TerminalTask {
    bar: Option<ProgressBar>,
    lines: bool,
    label: String,
    done: Arc<AtomicU64>,
    started: Instant,
}

impl Meter for TerminalTask {
    fn inc(&self, n: u64) {
        self.done.fetch_add(n, Ordering::Relaxed);
        if let Some(b) = &self.bar {
            b.inc(n);
        }
    }

    fn finish(&self) {
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
            tracing::info!(
                "{}: {} bytes in {secs:.2} s ({rate:.0} MiB/s)",
                self.label,
                group_digits(n)
            );
        }
    }
}
