//! Built-in Pod Security Standards checker: pure logic over `serde_json::Value`, no I/O.
//!
//! Implements the latest version of every Baseline and Restricted control as the upstream
//! `k8s.io/pod-security-admission/policy` package evaluates it (policy version "latest", i.e. v1.35+):
//! user-namespaced pods (`hostUsers: false`) relax `/proc Mount Type` (baseline), "Running as
//! Non-root" and "Running as Non-root user"; Windows pods (`spec.os.name: windows`) skip the
//! Linux-only restricted controls (Privilege Escalation, Seccomp, Capabilities).
//!
//! Every violation is reported once, under the most basic control that forbids it: a hostPath
//! volume is a "HostPath Volumes" (baseline) violation at both levels, `seccompProfile.type:
//! Unconfined` is a baseline "Seccomp" violation, adding `SYS_ADMIN` is a baseline "Capabilities"
//! violation; restricted-only violations carry `level: Restricted`.
//!
//! The checker runs on every admission request, mostly on pods that already comply, so that path
//! is kept cheap: it never allocates (field paths and details are only formatted when a violation
//! is pushed), and it reads the pod spec, each container and each `securityContext` in one pass
//! over their members instead of one map search per field (see `fields`).
//!
//! The parts: `controls` names each control and the values it allows (the engine's rules use
//! the same table and predicates), `fields` reads the objects a pod is made of, `checks` applies
//! the controls.

mod checks;
pub(crate) mod controls;
pub(crate) mod fields;

use std::fmt;
use std::str::FromStr;

use serde_json::Value;

pub use controls::{Control, SAFE_SYSCTLS};
pub(crate) use fields::{JsonType, Malformed};

use crate::workload::{ContainerAt, PodTemplate};

/// A Pod Security Standards level. `Restricted` includes every `Baseline` control.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Baseline,
    Restricted,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Baseline => "baseline",
            Self::Restricted => "restricted",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error of parsing a [`Level`] from anything but `baseline` or `restricted`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown Pod Security level {0:?}: expected \"baseline\" or \"restricted\"")]
pub struct ParseLevelError(pub String);

impl FromStr for Level {
    type Err = ParseLevelError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "baseline" => Ok(Self::Baseline),
            "restricted" => Ok(Self::Restricted),
            other => Err(ParseLevelError(other.to_owned())),
        }
    }
}

/// One field of a pod that breaks a control.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub control: Control,
    /// The lowest level that forbids this value.
    pub level: Level,
    /// The container the violation belongs to, for per-container fields and AppArmor annotations.
    pub container: Option<String>,
    /// Where that container sits; `None` for pod-level fields and for AppArmor annotations, which
    /// name a container but not its position.
    pub at: Option<ContainerAt>,
    /// Full dotted path inside the object: `spec.template.spec.containers[0].securityContext.privileged`.
    pub field: String,
    /// Short human reason.
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.control, self.field, self.detail)?;
        if let Some(container) = &self.container {
            write!(f, " (container {container:?})")?;
        }
        Ok(())
    }
}

/// All violations of `level` in the pod template, in a stable order: pod-level fields (pod spec
/// and metadata annotations) first, then every container in start order (init, regular,
/// ephemeral); within each, baseline controls in the order the standard lists them, then the
/// restricted ones. A field of the wrong JSON type (a container list that is not a list) is a
/// [`Control::Malformed`] violation at every level, never taken for absent.
pub fn check(pod: &PodTemplate<'_>, level: Level) -> Vec<Violation> {
    checks::check(pod, level)
}

/// Convenience for whole objects: locates the pod template; `None` for objects that carry no pod.
pub fn check_object(object: &Value, level: Level) -> Option<Vec<Violation>> {
    PodTemplate::locate(object).map(|pod| check(&pod, level))
}

#[cfg(test)]
mod tests;
