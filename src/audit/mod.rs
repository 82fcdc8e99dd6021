//! `restrictor audit` without the cluster: what the webhook would answer for every pod-bearing
//! object already stored, computed by the engine the webhook runs ([`engine::evaluate`]: policy
//! selection, the rules, the `restricted` post-check), with pods summarised under the workload
//! that owns them.
//!
//! Input is the objects as JSON (each with `apiVersion` and `kind`), output typed results; no I/O.
//! [`render`] prints them, [`report`] turns them into `wgpolicyk8s.io` PolicyReports.

mod owners;
pub mod render;
pub mod report;

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::engine::{self, Context};
use crate::policy::{Policy, Subject};
use crate::workload::{PodTemplate, WorkloadKind};

/// Which object a result is about, as a Kubernetes ObjectReference names it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectRef {
    pub namespace: String,
    pub kind: String,
    pub name: String,
    pub api_version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
}

impl ObjectRef {
    fn of(object: &Value, kind: WorkloadKind) -> Self {
        let metadata = object.get("metadata");
        let field = |name: &str| {
            metadata
                .and_then(|m| m.get(name))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        Self {
            namespace: field("namespace").unwrap_or_default(),
            kind: kind.as_str().to_owned(),
            name: field("name").unwrap_or_default(),
            api_version: object
                .get("apiVersion")
                .and_then(Value::as_str)
                .unwrap_or(kind.api_version())
                .to_owned(),
            uid: field("uid"),
        }
    }
}

impl std::fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

/// One reason an object would be denied: the field, the Pod Security check, the whole sentence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeniedField {
    /// Dotted path in the object: `spec.template.spec.hostNetwork`.
    pub field: String,
    /// The check as the Pod Security Standards name it: `Host Namespaces`.
    pub check: String,
    /// The engine's finding, as the webhook's denial message prints it.
    pub message: String,
}

/// What the webhook would answer if the object were created now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "camelCase")]
pub enum Verdict {
    /// Admitted as it is: the profile changes nothing.
    #[serde(rename_all = "camelCase")]
    Compliant { rule: String, profile: String },
    /// Admitted after these changes (the engine's change lines) and with these warnings.
    #[serde(rename_all = "camelCase")]
    Mutated {
        rule: String,
        profile: String,
        changes: Vec<String>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        warnings: Vec<String>,
    },
    /// Rejected: what cannot be made to pass `restricted`.
    #[serde(rename_all = "camelCase")]
    Denied {
        rule: String,
        profile: String,
        /// The webhook's denial message.
        reason: String,
        fields: Vec<DeniedField>,
    },
    /// Left alone: a rule says `profile: none` (`rule`), or no rule matches (`rule` absent).
    #[serde(rename_all = "camelCase")]
    Exempt {
        #[serde(skip_serializing_if = "Option::is_none")]
        rule: Option<String>,
        reason: String,
    },
}

impl Verdict {
    /// `compliant`, `mutated`, `denied` or `exempt`: the `outcome` field of the JSON output.
    pub fn outcome(&self) -> &'static str {
        match self {
            Self::Compliant { .. } => "compliant",
            Self::Mutated { .. } => "mutated",
            Self::Denied { .. } => "denied",
            Self::Exempt { .. } => "exempt",
        }
    }

    /// The policy rule that decided, if any.
    pub fn rule(&self) -> Option<&str> {
        match self {
            Self::Compliant { rule, .. }
            | Self::Mutated { rule, .. }
            | Self::Denied { rule, .. } => Some(rule),
            Self::Exempt { rule, .. } => rule.as_deref(),
        }
    }

    pub fn is_denied(&self) -> bool {
        matches!(self, Self::Denied { .. })
    }
}

/// Counts by outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub compliant: usize,
    pub mutated: usize,
    pub denied: usize,
    pub exempt: usize,
}

impl Counts {
    fn add(&mut self, verdict: &Verdict) {
        match verdict {
            Verdict::Compliant { .. } => self.compliant += 1,
            Verdict::Mutated { .. } => self.mutated += 1,
            Verdict::Denied { .. } => self.denied += 1,
            Verdict::Exempt { .. } => self.exempt += 1,
        }
    }

    pub fn total(&self) -> usize {
        self.compliant + self.mutated + self.denied + self.exempt
    }
}

/// One object the audit lists: a workload with no pod-bearing owner, or a bare pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    pub object: ObjectRef,
    #[serde(flatten)]
    pub verdict: Verdict,
    /// What it owns (ReplicaSets and Pods of a Deployment, Jobs and Pods of a CronJob), counted by
    /// kind and outcome: running pods created before restrictor show up as `mutated`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub owned: BTreeMap<String, Counts>,
}

/// The audit of a set of objects: entries sorted by namespace, kind and name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Audit {
    /// Counts of the listed entries (owned objects are not counted here).
    pub summary: Counts,
    pub objects: Vec<Entry>,
}

impl Audit {
    /// Whether the webhook would deny any listed object (the command's exit code).
    pub fn has_denials(&self) -> bool {
        self.summary.denied > 0
    }
}

/// What the webhook would answer for one object of `kind`, as a CREATE.
pub fn verdict(policy: &Policy, object: &Value, kind: WorkloadKind) -> Verdict {
    let namespace = object
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("default");
    // The engine edits its object in place; the stored one stays as listed.
    let mut working = object.clone();
    let Some(evaluation) = engine::evaluate(policy, &mut working, kind, namespace, Context::CREATE)
    else {
        return exemption(policy, object, kind, namespace);
    };
    let rule = evaluation.rule.to_owned();
    let profile = evaluation.profile.to_owned();
    let outcome = evaluation.outcome;
    if let Some(denial) = &outcome.denial {
        return Verdict::Denied {
            rule,
            profile,
            reason: denial.to_string(),
            fields: denial
                .findings
                .iter()
                .map(|finding| DeniedField {
                    field: finding.field.clone(),
                    check: finding.control.name().to_owned(),
                    message: finding.to_string(),
                })
                .collect(),
        };
    }
    if outcome.patch.is_empty() {
        return Verdict::Compliant { rule, profile };
    }
    Verdict::Mutated {
        rule,
        profile,
        changes: outcome.changes.iter().map(ToString::to_string).collect(),
        warnings: outcome.warnings,
    }
}

/// Why the engine left the object alone: which rule, or that none matched.
fn exemption(policy: &Policy, object: &Value, kind: WorkloadKind, namespace: &str) -> Verdict {
    let Some(template) = PodTemplate::locate_as(object, kind) else {
        return Verdict::Exempt {
            rule: None,
            reason: format!("no pod spec at {}", kind.spec_path()),
        };
    };
    let images: Vec<&str> = template.containers().map(|c| c.image()).collect();
    let subject = Subject {
        namespace,
        kind: kind.as_str(),
        labels: template.labels(),
        images: &images,
    };
    match policy.matching_rule(&subject) {
        Some(rule) => Verdict::Exempt {
            rule: Some(rule.name.clone()),
            reason: format!("rule {:?} applies profile {:?}", rule.name, rule.profile),
        },
        None => Verdict::Exempt {
            rule: None,
            reason: "no policy rule matches".to_owned(),
        },
    }
}

/// Audits `objects` (any mix of kinds; those that carry no pod are ignored) under `policy`.
pub fn audit(policy: &Policy, objects: &[Value]) -> Audit {
    let audited: Vec<(ObjectRef, Verdict, Option<String>)> = objects
        .iter()
        .filter_map(|object| {
            let kind = WorkloadKind::from_type(
                object.get("apiVersion")?.as_str()?,
                object.get("kind")?.as_str()?,
            )?;
            let reference = ObjectRef::of(object, kind);
            Some((
                reference,
                verdict(policy, object, kind),
                owners::controller_uid(object),
            ))
        })
        .collect();
    let roots = owners::roots(
        &audited
            .iter()
            .map(|(reference, _, owner)| (reference.uid.as_deref(), owner.as_deref()))
            .collect::<Vec<_>>(),
    );

    let mut owned: BTreeMap<usize, BTreeMap<String, Counts>> = BTreeMap::new();
    for (index, root) in roots.iter().enumerate() {
        if *root != index {
            let (reference, verdict, _) = &audited[index];
            owned
                .entry(*root)
                .or_default()
                .entry(reference.kind.clone())
                .or_default()
                .add(verdict);
        }
    }
    let mut summary = Counts::default();
    let mut entries: Vec<Entry> = audited
        .into_iter()
        .enumerate()
        .filter(|(index, _)| roots[*index] == *index)
        .map(|(index, (object, verdict, _))| {
            summary.add(&verdict);
            Entry {
                object,
                verdict,
                owned: owned.remove(&index).unwrap_or_default(),
            }
        })
        .collect();
    entries.sort_by(|a, b| a.object.cmp(&b.object));
    Audit {
        summary,
        objects: entries,
    }
}

#[cfg(test)]
mod tests;
