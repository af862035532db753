//! Ctrl-C (SIGINT) and SIGTERM while an install verifies and stages the bundle: the signal is
//! noted instead of ending the process at once, the staging stops at the next chunk it reads,
//! the staging directory is removed, and the install fails with `InstallError::Interrupted`;
//! the CLI says so and then ends by that same signal (a shell sees 130 or 143). Before the
//! files are placed the default handlers are back: placing is a few atomic renames, each safe
//! to kill (a re-run finishes it), and the wait for k3s must stop at once on Ctrl-C.

use std::sync::atomic::{AtomicI32, Ordering};

/// The signal received while caught (0: none).
static RECEIVED: AtomicI32 = AtomicI32::new(0);

extern "C" fn note(signal: libc::c_int) {
    // Only an atomic store: nothing else is safe in a signal handler.
    RECEIVED.store(signal, Ordering::SeqCst);
}

const SIGNALS: [libc::c_int; 2] = [libc::SIGINT, libc::SIGTERM];

/// While alive, SIGINT and SIGTERM are noted (see [`received`]) instead of ending the process;
/// the previous handlers are restored on drop.
pub struct Caught {
    previous: Vec<(libc::c_int, libc::sigaction)>,
}

/// Catch SIGINT and SIGTERM until the returned guard is dropped.
pub fn catch() -> Caught {
    RECEIVED.store(0, Ordering::SeqCst);
    let mut previous = Vec::new();
    for signal in SIGNALS {
        // SAFETY: a zeroed sigaction is a valid "no flags, empty mask" value; `note` is an
        // extern "C" fn that only stores to an atomic; `old` is written by the kernel.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = note as *const () as libc::sighandler_t;
            libc::sigemptyset(&mut action.sa_mask);
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(signal, &action, &mut old) == 0 {
                previous.push((signal, old));
            }
        }
    }
    Caught { previous }
}

impl Drop for Caught {
    fn drop(&mut self) {
        for (signal, old) in &self.previous {
            // SAFETY: restores the handler the kernel handed back in `catch`.
            unsafe {
                libc::sigaction(*signal, old, std::ptr::null_mut());
            }
        }
    }
}

/// The signal noted since `catch`, if any.
pub fn received() -> Option<i32> {
    match RECEIVED.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

/// The signal's name for messages.
pub fn name(signal: i32) -> &'static str {
    match signal {
        libc::SIGINT => "SIGINT (Ctrl-C)",
        libc::SIGTERM => "SIGTERM",
        _ => "a signal",
    }
}

/// End this process by `signal`, as if it had not been caught: default handler, then raise it.
/// What a shell and a supervisor expect of a program stopped by Ctrl-C.
pub fn die_by(signal: i32) -> ! {
    // SAFETY: resetting a handler to the default and raising a signal at ourselves.
    unsafe {
        libc::signal(signal, libc::SIG_DFL);
        libc::raise(signal);
    }
    std::process::exit(128 + signal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signal_is_noted_while_caught_and_not_after() {
        let caught = catch();
        // SAFETY: raising a signal at ourselves; the handler only stores to an atomic.
        unsafe {
            libc::raise(libc::SIGTERM);
        }
        assert_eq!(received(), Some(libc::SIGTERM));
        drop(caught);
        let again = catch();
        assert_eq!(received(), None, "a new catch starts clean");
        drop(again);
    }
}
