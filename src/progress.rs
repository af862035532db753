//! How long work reports itself, as the core sees it. Core modules (pull, bundle write,
//! install, k3s start) report through a `Progress` handle they are given and never print or
//! draw themselves; the terminal side (bars, plain log lines, silence under `--output json`)
//! implements `Sink` in `cli::progress`. `Progress::hidden()` is the silent handle for library
//! callers, tests and steps of a larger command.

use std::sync::Arc;

/// What the terminal side implements: start a byte-counting task, or say one status line.
pub trait Sink: Send + Sync {
    /// A task moving `total` bytes (0 when unknown).
    fn bytes(&self, label: &str, total: u64) -> Box<dyn Meter>;
    /// One status line.
    fn line(&self, msg: &str);
}

/// One task's counter, shared by the threads that move its bytes.
pub trait Meter: Send + Sync {
    fn inc(&self, n: u64);
    fn finish(&self);
}

/// A cheap, cloneable handle the core reports through.
#[derive(Clone)]
pub struct Progress {
    sink: Arc<dyn Sink>,
}

impl Progress {
    pub fn new(sink: impl Sink + 'static) -> Progress {
        Progress {
            sink: Arc::new(sink),
        }
    }

    /// No bars, no lines.
    pub fn hidden() -> Progress {
        Progress::new(Hidden)
    }

    /// A byte-counting task of `total` bytes (0 when unknown: a counter without a bar).
    pub fn bytes(&self, label: &str, total: u64) -> Task {
        Task {
            meter: self.sink.bytes(label, total),
        }
    }

    /// One status line; nothing when hidden.
    pub fn line(&self, msg: &str) {
        self.sink.line(msg);
    }
}

/// A running byte-counting task.
pub struct Task {
    meter: Box<dyn Meter>,
}

impl Task {
    pub fn inc(&self, n: u64) {
        self.meter.inc(n);
    }

    pub fn finish(&self) {
        self.meter.finish();
    }
}

struct Hidden;

impl Sink for Hidden {
    fn bytes(&self, _label: &str, _total: u64) -> Box<dyn Meter> {
        Box::new(Hidden)
    }

    fn line(&self, _msg: &str) {}
}

impl Meter for Hidden {
    fn inc(&self, _n: u64) {}
    fn finish(&self) {}
}
