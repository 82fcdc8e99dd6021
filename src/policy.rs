//! The policy file. (Skeleton: replaced by the full implementation on main.)

use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read policy file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("policy: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, Default)]
pub struct Policy {}

impl Policy {
    pub fn builtin() -> Self {
        Self {}
    }

    pub fn from_yaml(_text: &str) -> Result<Self, PolicyError> {
        Ok(Self {})
    }

    pub fn load(path: &Path) -> Result<Self, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_yaml(&text)
    }
}
