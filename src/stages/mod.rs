//! Cluster stages, in order: namespace, storage, network, registry, quota, rbac. Each renders
//! typed objects from the spec (pure); one apply engine sends them with server-side apply.

use std::fmt;

/// The stages, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Stage {
    Namespace,
    Storage,
    Network,
    Registry,
    Quota,
    Rbac,
}

impl Stage {
    pub const ALL: [Stage; 6] = [
        Stage::Namespace,
        Stage::Storage,
        Stage::Network,
        Stage::Registry,
        Stage::Quota,
        Stage::Rbac,
    ];

    pub fn name(&self) -> &'static str {
        match self {
            Stage::Namespace => "namespace",
            Stage::Storage => "storage",
            Stage::Network => "network",
            Stage::Registry => "registry",
            Stage::Quota => "quota",
            Stage::Rbac => "rbac",
        }
    }

    pub fn parse(s: &str) -> Option<Stage> {
        Stage::ALL.into_iter().find(|st| st.name() == s)
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error("{0}")]
    Other(String),
}

impl StageError {
    pub fn exit_code(&self) -> u8 {
        crate::cli::exit::ENVIRONMENT
    }
}
