//! Host install: places k3s, its config, registries.yaml, the image archive, the systemd unit,
//! atomically, under a root directory; starts k3s and waits for it. The only module that
//! touches the host.

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("{0}")]
    Other(String),
}

impl InstallError {
    pub fn exit_code(&self) -> u8 {
        crate::cli::exit::ENVIRONMENT
    }
}
