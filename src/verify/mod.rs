//! Built-in verification: named checks against the live cluster, each pass, fail or skipped
//! with a reason, with evidence; and the report (text, JSON, JUnit).

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("{0}")]
    Other(String),
}

impl VerifyError {
    pub fn exit_code(&self) -> u8 {
        crate::cli::exit::ENVIRONMENT
    }
}
