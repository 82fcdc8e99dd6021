//! The pod-level `securityContext`: non-root identity, seccomp, and the profile's sysctls.
//!
//! The rules decide by reading the pod once, then make their edits: most pods arrive compliant,
//! and for them this costs one walk over the security context's members and no allocation.

use serde_json::{Value, json};

use super::{Mutation, Scope};
use crate::policy::Profile;
use crate::pss::controls::{is_allowed_profile, is_windows};
use crate::pss::fields::SecurityContextFields;

pub(super) fn apply(m: &mut Mutation<'_, '_>) {
    for edit in plan(m.profile, m.spec()) {
        match edit.kind {
            EditKind::Set => {
                m.editor.set(&edit.pointer, edit.value);
            }
            EditKind::Append => m.editor.push(&edit.pointer, edit.value),
        }
        m.change(Scope::Pod, edit.line);
    }
}

/// One change to the pod's security context, decided before any is made.
struct Edit {
    pointer: String,
    value: Value,
    kind: EditKind,
    /// The change line.
    line: String,
}

enum EditKind {
    Set,
    /// Appended to the array at the pointer (created when missing).
    Append,
}

impl Edit {
    fn set(pointer: &str, value: Value, line: String) -> Self {
        Self {
            pointer: pointer.to_owned(),
            value,
            kind: EditKind::Set,
            line,
        }
    }
}

fn plan(profile: &Profile, spec: &Value) -> Vec<Edit> {
    let context = SecurityContextFields::of(spec.get("securityContext"));
    let mut edits = Vec::new();
    if context.run_as_non_root != Some(&Value::Bool(true)) {
        edits.push(Edit::set(
            "/spec/securityContext/runAsNonRoot",
            json!(true),
            was("runAsNonRoot=true", context.run_as_non_root),
        ));
    }
    if is_windows(spec.get("os")) {
        // uids, gids, seccomp and sysctls are Linux concepts; the standard exempts Windows pods.
        return edits;
    }
    identities(profile, spec, &context, &mut edits);
    seccomp(spec, &context, &mut edits);
    sysctls(profile, spec, &context, &mut edits);
    edits
}

/// runAsUser, runAsGroup and fsGroup: set where absent (or root), never replacing a non-zero value.
/// The user and group are left unset when every container sets its own, so an image's own numeric
/// USER keeps working wherever the pod spec already decided.
fn identities(
    profile: &Profile,
    spec: &Value,
    context: &SecurityContextFields<'_>,
    edits: &mut Vec<Edit>,
) {
    for (field, pointer, current, id, containers_may_decide) in [
        (
            "runAsUser",
            "/spec/securityContext/runAsUser",
            context.run_as_user,
            profile.run_as_user.get(),
            true,
        ),
        (
            "runAsGroup",
            "/spec/securityContext/runAsGroup",
            context.run_as_group,
            profile.run_as_group.get(),
            true,
        ),
        (
            "fsGroup",
            "/spec/securityContext/fsGroup",
            context.fs_group,
            profile.fs_group.get(),
            false,
        ),
    ] {
        let needs = match current.and_then(Value::as_i64) {
            Some(0) => true,
            Some(_) => false,
            None if current.is_some_and(|v| !v.is_null()) => true,
            None => !(containers_may_decide && every_container_sets(spec, field)),
        };
        if needs {
            edits.push(Edit::set(
                pointer,
                json!(id),
                was(&format!("{field}={id}"), current),
            ));
        }
    }
}

fn every_container_sets(spec: &Value, field: &str) -> bool {
    crate::workload::containers(spec).all(|c| {
        c.container
            .get("securityContext")
            .and_then(|sc| sc.get(field))
            .and_then(Value::as_i64)
            .is_some_and(|id| id > 0)
    })
}

fn seccomp(spec: &Value, context: &SecurityContextFields<'_>, edits: &mut Vec<Edit>) {
    let current = context.seccomp_profile;
    match current {
        Some(profile) if is_allowed_profile(profile) => return,
        // An absent pod-level profile is fine when every container sets a compliant one.
        None if every_container_has_seccomp(spec) => return,
        _ => {}
    }
    let previous = current.map(|p| p.get("type").unwrap_or(p));
    edits.push(Edit::set(
        "/spec/securityContext/seccompProfile",
        json!({"type": "RuntimeDefault"}),
        was("seccompProfile=RuntimeDefault", previous),
    ));
}

fn every_container_has_seccomp(spec: &Value) -> bool {
    let mut containers = crate::workload::containers(spec).peekable();
    containers.peek().is_some()
        && containers.all(|c| {
            c.container
                .get("securityContext")
                .and_then(|sc| sc.get("seccompProfile"))
                .is_some_and(is_allowed_profile)
        })
}

fn sysctls(
    profile: &Profile,
    spec: &Value,
    context: &SecurityContextFields<'_>,
    edits: &mut Vec<Edit>,
) {
    if profile.sysctls.is_empty() {
        return;
    }
    // The unprivileged-port sysctl is namespaced to the pod's network namespace; with the host's
    // network it is neither needed nor allowed.
    if spec.get("hostNetwork").and_then(Value::as_bool) == Some(true) {
        return;
    }
    let pointer = "/spec/securityContext/sysctls";
    let current = context.sysctls.and_then(Value::as_array);
    // Policy validation rules out a name listed twice, so each wanted sysctl is decided against the
    // pod as it came: appending one never affects the next.
    for wanted in &profile.sysctls {
        let name = wanted.name.as_str();
        let existing = current
            .into_iter()
            .flatten()
            .enumerate()
            .find(|(_, s)| s.get("name").and_then(Value::as_str) == Some(name))
            .map(|(index, sysctl)| (index, sysctl.get("value")));
        match existing {
            Some((_, Some(Value::String(value)))) if *value == wanted.value => {}
            Some((index, previous)) => edits.push(Edit::set(
                &format!("{pointer}/{index}/value"),
                json!(wanted.value),
                was(&format!("sysctl {name}={}", wanted.value), previous),
            )),
            None => edits.push(Edit {
                pointer: pointer.to_owned(),
                value: json!({"name": name, "value": wanted.value}),
                kind: EditKind::Append,
                line: format!("sysctl {name}={}", wanted.value),
            }),
        }
    }
}

/// `field=value` or `field=value (was old)` for a change line.
pub(super) fn was(what: &str, previous: Option<&Value>) -> String {
    match previous {
        None | Some(Value::Null) => what.to_owned(),
        Some(Value::String(s)) => format!("{what} (was {s})"),
        Some(other) => format!("{what} (was {other})"),
    }
}
