//! The rules that change a pod spec so it passes Pod Security "restricted", as pure functions.
//!
//! [`mutate`] lets each rule edit the parsed object's pod template in place through a
//! [`crate::patch::Editor`], which records the JSON Patch that makes the same edits on the original, and
//! finally runs the built-in checker on the result: a matched object that would still fail
//! `restricted` is denied, never admitted. Rules decide by reading first and format pointers,
//! names and change lines only for what they change, since most pods arrive compliant.

mod containers;
mod pod;
mod scheduling;
mod unfixable;
mod writable;

use std::fmt;

use serde_json::Value;

use crate::patch::{Editor, Op};
use crate::policy::{Policy, Profile, Subject};
use crate::pss::{self, Control, Malformed, controls};
use crate::workload::{ContainerAt, PodTemplate, WorkloadKind};

/// The admission operation the object arrives with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Create,
    Update,
}

/// What the engine needs to know about the request besides the object.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    pub operation: Operation,
    /// `ephemeralcontainers` for `kubectl debug`; other subresources are not mutated.
    pub sub_resource: Option<&'a str>,
}

impl Context<'_> {
    pub const CREATE: Context<'static> = Context {
        operation: Operation::Create,
        sub_resource: None,
    };
}

/// One change the engine made, in one short line: `container "app": allowPrivilegeEscalation=false`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub scope: Scope,
    pub what: String,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.scope, self.what)
    }
}

/// Where a change or finding applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    Pod,
    Container { list: &'static str, name: String },
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Pod => f.write_str("pod"),
            Scope::Container { list, name } => {
                let kind = match *list {
                    "initContainers" => "init container",
                    "ephemeralContainers" => "ephemeral container",
                    _ => "container",
                };
                write!(f, "{kind} {name:?}")
            }
        }
    }
}

/// A reason the object cannot be admitted: the field, the Pod Security control it fails, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Full dotted path in the object: `spec.template.spec.volumes[1].hostPath`.
    pub field: String,
    pub scope: Scope,
    /// [`Control::Malformed`] when the field has the wrong JSON type.
    pub control: Control,
    pub reason: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.scope {
            Scope::Pod => write!(f, "{}: {} ({})", self.field, self.reason, self.control),
            scope => write!(
                f,
                "{scope}: {}: {} ({})",
                self.field, self.reason, self.control
            ),
        }
    }
}

impl Finding {
    fn from_violation(violation: pss::Violation) -> Self {
        let scope = match violation.container {
            Some(name) => Scope::Container {
                // An AppArmor annotation names a container but not its list.
                list: violation.at.map_or("containers", |at| at.list),
                name,
            },
            None => Scope::Pod,
        };
        Self {
            field: violation.field,
            scope,
            control: violation.control,
            reason: violation.detail,
        }
    }

    fn malformed(malformed: Malformed) -> Self {
        Self {
            reason: format!("expected {}, found {}", malformed.expected, malformed.found),
            field: malformed.field,
            scope: Scope::Pod,
            control: Control::Malformed,
        }
    }
}

/// Why an object is rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    pub findings: Vec<Finding>,
}

impl Denial {
    /// Whether the object was refused because a field has the wrong JSON type (it is then the
    /// one finding): bad input rather than a pod the standard forbids.
    pub fn is_malformed(&self) -> bool {
        self.findings
            .iter()
            .any(|finding| finding.control == Control::Malformed)
    }
}

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.is_malformed() {
            "cannot be read: "
        } else {
            "cannot be made to pass Pod Security \"restricted\" without changing what the workload is, \
             and the host namespace would reject its pods: "
        })?;
        for (index, finding) in self.findings.iter().enumerate() {
            if index > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{finding}")?;
        }
        Ok(())
    }
}

/// The engine's verdict on one object: the patch that makes it pass "restricted" and what the
/// patch changes, or why it cannot be admitted.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Verdict {
    /// RFC 6902 operations against the original object; empty when nothing changes.
    pub patch: Vec<Op>,
    pub changes: Vec<Change>,
    /// Notes for the admin that are not changes (e.g. what could not be patched on an immutable field).
    pub warnings: Vec<String>,
    pub denial: Option<Denial>,
}

/// Where the rules are: the working copy and what they found so far.
pub(crate) struct Mutation<'p, 'o> {
    pub editor: Editor<'o>,
    pub profile: &'p Profile,
    pub kind: WorkloadKind,
    /// Dotted path of the pod spec in the object, for messages (`spec.template.spec`).
    pub spec_path: &'static str,
    pub changes: Vec<Change>,
    pub findings: Vec<Finding>,
}

impl Mutation<'_, '_> {
    pub fn spec(&self) -> &Value {
        self.editor.doc().get("spec").unwrap_or(&Value::Null)
    }

    pub fn change(&mut self, scope: Scope, what: impl Into<String>) {
        self.changes.push(Change {
            scope,
            what: what.into(),
        });
    }

    pub fn deny(&mut self, field: String, scope: Scope, control: Control, reason: String) {
        self.findings.push(Finding {
            field,
            scope,
            control,
            reason,
        });
    }

    /// Where every container sits, read from the working copy. Positions only: a rule reads the
    /// container through [`Mutation::container`] and formats pointers or names only for the few it
    /// changes (most pods arrive compliant, and formatting per container dominated their cost).
    pub fn containers(&self) -> Vec<ContainerAt> {
        crate::workload::containers(self.spec())
            .map(|c| c.at())
            .collect()
    }

    /// The container at `at` in the working copy.
    pub fn container(&self, at: ContainerAt) -> Option<&Value> {
        self.spec().get(at.list)?.get(at.index)
    }

    /// The scope change lines and findings about the container at `at` name.
    pub fn scope_of(&self, at: ContainerAt) -> Scope {
        let name = self
            .container(at)
            .and_then(|c| c.get("name"))
            .and_then(Value::as_str)
            .unwrap_or_default();
        Scope::Container {
            list: at.list,
            name: name.to_owned(),
        }
    }

    /// Whether the pod declares itself a Windows pod; Linux-only fields are then left alone, as the
    /// Pod Security Standards exempt such pods from them.
    pub fn is_windows(&self) -> bool {
        controls::is_windows(self.spec().get("os"))
    }
}

/// Changes `object` in place (of `kind`, located by the caller from the admission request or the
/// file) so its pod passes Pod Security "restricted" under `profile`, or explains why it cannot.
///
/// On return `object` equals the original with `verdict.patch` applied — unless the outcome is a
/// denial, when it is left partly edited and must not be used. Objects that carry no pod template
/// come back unchanged with an empty outcome.
pub fn mutate(
    object: &mut Value,
    kind: WorkloadKind,
    context: Context<'_>,
    profile: &Profile,
) -> Verdict {
    if withholds_edits(kind, context) {
        // Only part of the edits may be sent: compute them on a copy, then apply to `object` just
        // what the patch carries. A rare path (UPDATE of a Pod or Job), so the copy is affordable.
        let mut copy = object.clone();
        let outcome =
            restrict_to_mutable_fields(mutate_in_place(&mut copy, kind, profile), kind, context);
        if outcome.denial.is_none() && !apply_ops(object, &outcome.patch) {
            tracing::error!("restrictor's own patch does not apply to the object it came from");
        }
        return outcome;
    }
    mutate_in_place(object, kind, profile)
}

fn mutate_in_place(object: &mut Value, kind: WorkloadKind, profile: &Profile) -> Verdict {
    let holder_pointer = kind.template_pointer();
    let Some(holder) = kind.holder_mut(object) else {
        return Verdict::default();
    };
    if PodTemplate::from_holder(holder, kind).is_none() {
        return Verdict::default();
    }
    // Bad input is refused before any rule reads it: a rule would take a mistyped field for an
    // absent one and patch around it.
    let screen = match unfixable::Screen::of(holder.get("spec"), kind.spec_path()) {
        Ok(screen) => screen,
        Err(malformed) => {
            return Verdict {
                denial: Some(Denial {
                    findings: vec![Finding::malformed(malformed)],
                }),
                ..Verdict::default()
            };
        }
    };
    let mut mutation = Mutation {
        editor: Editor::new(holder_pointer, holder),
        profile,
        kind,
        spec_path: kind.spec_path(),
        changes: Vec::new(),
        findings: Vec::new(),
    };

    // Order matters: what cannot be fixed is decided (and, where the policy says so, removed) first,
    // so the fixes below see the pod as it will be admitted.
    // Containers restrictor adds (seeding writable paths) exist before the pod-level rules ask
    // whether every container sets its own user.
    unfixable::apply(&mut mutation, &screen);
    scheduling::apply(&mut mutation);
    writable::apply(&mut mutation);
    pod::apply(&mut mutation);
    containers::apply(&mut mutation);

    let Mutation {
        editor,
        changes,
        mut findings,
        ..
    } = mutation;
    let patch = editor.into_ops();

    if findings.is_empty() {
        // The post-condition: never admit what the host would still reject.
        if let Some(pod) = PodTemplate::locate_as(object, kind) {
            findings.extend(
                pss::check(&pod, pss::Level::Restricted)
                    .into_iter()
                    .map(Finding::from_violation),
            );
        }
    }

    Verdict {
        patch,
        changes,
        warnings: Vec::new(),
        denial: (!findings.is_empty()).then_some(Denial { findings }),
    }
}

/// Applies operations with an independent RFC 6902 implementation.
fn apply_ops(object: &mut Value, ops: &[Op]) -> bool {
    serde_json::to_value(ops)
        .ok()
        .and_then(|ops| serde_json::from_value::<json_patch::Patch>(ops).ok())
        .is_some_and(|patch| json_patch::patch(object, &patch).is_ok())
}

/// The profile chosen for an object and what it did.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation<'p> {
    pub rule: &'p str,
    pub profile: &'p str,
    pub outcome: Verdict,
}

/// Selects the profile for `object` under `policy` and applies it, editing `object` in place as
/// [`mutate`] does; `None` when the object carries no pod or no rule gives it a profile (it is then
/// left alone, untouched).
pub fn evaluate<'p>(
    policy: &'p Policy,
    object: &mut Value,
    kind: WorkloadKind,
    namespace: &str,
    context: Context<'_>,
) -> Option<Evaluation<'p>> {
    let selection = {
        let template = PodTemplate::locate_as(object, kind)?;
        let images: Vec<&str> = template.containers().map(|c| c.image()).collect();
        policy.select(&Subject {
            namespace,
            kind: kind.as_str(),
            labels: template.labels(),
            images: &images,
        })?
    };
    Some(Evaluation {
        rule: selection.rule,
        profile: selection.profile_name,
        outcome: mutate(object, kind, context, selection.profile),
    })
}

/// On UPDATE the API server forbids changing a Pod's spec (apart from ephemeral containers, through
/// their subresource) and a Job's template: the patch would be rejected whatever the failurePolicy.
fn withholds_edits(kind: WorkloadKind, context: Context<'_>) -> bool {
    context.operation == Operation::Update && matches!(kind, WorkloadKind::Pod | WorkloadKind::Job)
}

/// What the engine would have changed in an immutable part becomes warnings; denials of it too,
/// since the object already exists and rejecting a label change fixes nothing. An object that
/// cannot be read stays refused: that is bad input, not an existing pod.
fn restrict_to_mutable_fields(
    mut outcome: Verdict,
    kind: WorkloadKind,
    context: Context<'_>,
) -> Verdict {
    if !withholds_edits(kind, context) {
        return outcome;
    }
    let mutable_prefix = match (kind, context.sub_resource) {
        (WorkloadKind::Pod, Some("ephemeralcontainers")) => Some("/spec/ephemeralContainers/"),
        _ => None,
    };
    let is_mutable = |path: &str| mutable_prefix.is_some_and(|prefix| path.starts_with(prefix));
    let (kept, dropped): (Vec<Op>, Vec<Op>) = outcome
        .patch
        .into_iter()
        .partition(|op| is_mutable(op.path()));
    outcome.patch = kept;
    let what = match kind {
        WorkloadKind::Job => "a Job's pod template is immutable",
        _ => "a Pod's spec is immutable",
    };
    if !dropped.is_empty() {
        let (ephemeral, rest): (Vec<Change>, Vec<Change>) =
            outcome.changes.into_iter().partition(|change| {
                matches!(
                    &change.scope,
                    Scope::Container {
                        list: "ephemeralContainers",
                        ..
                    }
                )
            });
        outcome.changes = if mutable_prefix.is_some() {
            ephemeral
        } else {
            Vec::new()
        };
        outcome.warnings.extend(
            rest.iter()
                .map(|change| format!("not changed ({what}): {change}")),
        );
    }
    if let Some(denial) = outcome.denial.take_if(|denial| !denial.is_malformed()) {
        let (blocking, other): (Vec<Finding>, Vec<Finding>) =
            denial.findings.into_iter().partition(|finding| {
                mutable_prefix.is_some()
                    && matches!(
                        finding.scope,
                        Scope::Container {
                            list: "ephemeralContainers",
                            ..
                        }
                    )
            });
        outcome.warnings.extend(other.iter().map(|finding| {
            format!("existing object fails Pod Security \"restricted\": {finding}")
        }));
        if !blocking.is_empty() {
            outcome.denial = Some(Denial { findings: blocking });
        }
    }
    outcome
}

#[cfg(test)]
mod tests;
