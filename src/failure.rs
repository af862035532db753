//! What kind of failure an error is. Every typed error in the core says which of these it is;
//! only `cli` turns a kind into a process exit code (docs/cli.md), so the core never knows
//! the numbers.

/// The three ways a run can fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// A check or verification failed, or a bundle is damaged: the inputs were fine, the
    /// thing examined is not.
    CheckFailed,
    /// Bad input or usage: a spec, lock, bundle, key or argument is wrong.
    Input,
    /// This machine or its surroundings: permissions, disk, network, missing tools.
    Environment,
}
