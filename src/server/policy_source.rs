//! The one owner of the policy in force. It reads the policy file once at start, then parses
//! each change from the bytes the file watcher settled on (two equal reads in a row, see
//! [`super::reload`]) and publishes the parsed policy on a `watch` channel of `Arc<Policy>`: the
//! request path and the reconciler subscribe to the same channel, so they see the same parse.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::metrics::Metrics;
use super::reload;
use crate::policy::{Policy, PolicyError};

/// Publishes the policy in force; see the module docs.
pub struct PolicySource {
    path: Option<PathBuf>,
    /// The bytes the policy in force was parsed from: the file watcher's starting point.
    bytes: Option<Vec<u8>>,
    sender: watch::Sender<Arc<Policy>>,
}

impl std::fmt::Debug for PolicySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicySource")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl PolicySource {
    /// Reads and parses the policy file, or takes the built-in policy when there is none.
    pub fn open(path: Option<PathBuf>) -> Result<Self, PolicyError> {
        let (policy, bytes) = match &path {
            Some(path) => {
                let bytes = std::fs::read(path).map_err(|source| PolicyError::Read {
                    path: path.display().to_string(),
                    source,
                })?;
                (
                    Policy::from_bytes(&path.display().to_string(), &bytes)?,
                    Some(bytes),
                )
            }
            None => (Policy::builtin(), None),
        };
        Ok(Self {
            path,
            bytes,
            sender: watch::Sender::new(Arc::new(policy)),
        })
    }

    /// A receiver that holds the policy in force and is told of every change.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Policy>> {
        self.sender.subscribe()
    }

    /// Parses `bytes` and, when valid, publishes the result; an invalid policy changes nothing.
    fn publish(&self, bytes: &[u8]) -> Result<(), PolicyError> {
        let source = self
            .path
            .as_ref()
            .map_or_else(|| "policy".to_owned(), |p| p.display().to_string());
        let policy = Policy::from_bytes(&source, bytes)?;
        self.sender.send_replace(Arc::new(policy));
        Ok(())
    }

    /// Publishes every settled change of the policy file, counting reloads and rejections,
    /// until the task is dropped. Without a file the built-in policy stays in force, and the
    /// channel stays open for its subscribers.
    pub(crate) async fn follow(self, interval: Duration, metrics: Arc<Metrics>) {
        let Some(path) = self.path.clone() else {
            return std::future::pending().await;
        };
        let initial = self.bytes.clone().map(|bytes| vec![bytes]);
        reload::poll_files(vec![path.clone()], interval, initial, |contents| {
            let bytes = contents.first().map_or(&[][..], Vec::as_slice);
            match self.publish(bytes) {
                Ok(()) => {
                    metrics.policy_reloads.inc();
                    tracing::info!(path = %path.display(), "policy reloaded");
                }
                Err(error) => {
                    metrics.policy_reload_errors.inc();
                    tracing::error!(path = %path.display(), %error, "new policy rejected; the previous policy stays in force");
                }
            }
        })
        .await;
    }
}
