//! The pod-level `securityContext`: non-root identity, seccomp, and the profile's sysctls.

use serde_json::{Value, json};

use super::{Mutation, Scope};

pub(super) fn apply(m: &mut Mutation<'_, '_>) {
    run_as_non_root(m);
    if m.is_windows() {
        // uids, gids, seccomp and sysctls are Linux concepts; the standard exempts Windows pods.
        return;
    }
    identities(m);
    seccomp(m);
    sysctls(m);
}

/// A member of the pod-level security context in the working copy.
fn pod_context<'m>(m: &'m Mutation<'_, '_>, field: &str) -> Option<&'m Value> {
    m.spec().get("securityContext")?.get(field)
}

fn run_as_non_root(m: &mut Mutation<'_, '_>) {
    let current = pod_context(m, "runAsNonRoot");
    if current == Some(&Value::Bool(true)) {
        return;
    }
    let line = was("runAsNonRoot=true", current);
    m.editor
        .set("/spec/securityContext/runAsNonRoot", json!(true));
    m.change(Scope::Pod, line);
}

/// runAsUser, runAsGroup and fsGroup: set where absent (or root), never replacing a non-zero value.
/// The user and group are left unset when every container sets its own, so an image's own numeric
/// USER keeps working wherever the pod spec already decided.
fn identities(m: &mut Mutation<'_, '_>) {
    let profile = m.profile;
    for (field, pointer, id, containers_may_decide) in [
        (
            "runAsUser",
            "/spec/securityContext/runAsUser",
            profile.run_as_user.get(),
            true,
        ),
        (
            "runAsGroup",
            "/spec/securityContext/runAsGroup",
            profile.run_as_group.get(),
            true,
        ),
        (
            "fsGroup",
            "/spec/securityContext/fsGroup",
            profile.fs_group.get(),
            false,
        ),
    ] {
        let current = pod_context(m, field);
        let needs = match current.and_then(Value::as_i64) {
            Some(0) => true,
            Some(_) => false,
            None if current.is_some_and(|v| !v.is_null()) => true,
            None => !(containers_may_decide && every_container_sets(m, field)),
        };
        if needs {
            let line = was(&format!("{field}={id}"), current);
            m.editor.set(pointer, json!(id));
            m.change(Scope::Pod, line);
        }
    }
}

fn every_container_sets(m: &Mutation<'_, '_>, field: &str) -> bool {
    crate::workload::containers(m.spec()).all(|c| {
        c.container
            .get("securityContext")
            .and_then(|sc| sc.get(field))
            .and_then(Value::as_i64)
            .is_some_and(|id| id > 0)
    })
}

/// Whether a seccomp profile object is one the restricted level accepts.
pub(super) fn is_compliant_seccomp(profile: &Value) -> bool {
    matches!(
        profile.get("type").and_then(Value::as_str),
        Some("RuntimeDefault" | "Localhost")
    )
}

fn seccomp(m: &mut Mutation<'_, '_>) {
    let current = pod_context(m, "seccompProfile");
    match current {
        Some(profile) if is_compliant_seccomp(profile) => return,
        // An absent pod-level profile is fine when every container sets a compliant one.
        None if every_container_has_seccomp(m) => return,
        _ => {}
    }
    let previous = current.map(|p| p.get("type").unwrap_or(p));
    let line = was("seccompProfile=RuntimeDefault", previous);
    m.editor.set(
        "/spec/securityContext/seccompProfile",
        json!({"type": "RuntimeDefault"}),
    );
    m.change(Scope::Pod, line);
}

fn every_container_has_seccomp(m: &Mutation<'_, '_>) -> bool {
    let mut containers = crate::workload::containers(m.spec()).peekable();
    containers.peek().is_some()
        && containers.all(|c| {
            c.container
                .get("securityContext")
                .and_then(|sc| sc.get("seccompProfile"))
                .is_some_and(is_compliant_seccomp)
        })
}

fn sysctls(m: &mut Mutation<'_, '_>) {
    if m.profile.sysctls.is_empty() {
        return;
    }
    // The unprivileged-port sysctl is namespaced to the pod's network namespace; with the host's
    // network it is neither needed nor allowed.
    if m.spec().get("hostNetwork").and_then(Value::as_bool) == Some(true) {
        return;
    }
    let pointer = "/spec/securityContext/sysctls";
    for wanted in &m.profile.sysctls {
        let name = wanted.name.as_str();
        let existing = pod_context(m, "sysctls")
            .and_then(Value::as_array)
            .and_then(|list| {
                list.iter()
                    .enumerate()
                    .find(|(_, s)| s.get("name").and_then(Value::as_str) == Some(name))
            })
            .map(|(index, sysctl)| (index, sysctl.get("value")));
        match existing {
            Some((_, Some(Value::String(value)))) if *value == wanted.value => {}
            Some((index, previous)) => {
                let line = was(&format!("sysctl {name}={}", wanted.value), previous);
                m.editor
                    .set(&format!("{pointer}/{index}/value"), json!(wanted.value));
                m.change(Scope::Pod, line);
            }
            None => {
                m.editor
                    .push(pointer, json!({"name": name, "value": wanted.value}));
                m.change(Scope::Pod, format!("sysctl {name}={}", wanted.value));
            }
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
