//! Each container's `securityContext`: no privilege escalation, all capabilities dropped, no root,
//! a compliant seccomp profile, and a read-only root filesystem where the profile asks for one.

use serde_json::{Value, json};

use super::pod::was;
use super::{Mutation, Scope};
use crate::policy::Action;
use crate::pss::controls::{
    Control, RESTRICTED_ADDABLE_CAPABILITY as ALLOWED_ADD, is_allowed_profile,
};
use crate::workload::ContainerAt;

pub(super) fn apply(m: &mut Mutation<'_, '_>) {
    let windows = m.is_windows();
    let read_only_root = m.profile.read_only_root_filesystem;
    // Most pods arrive already compliant (made from templates restrictor mutated): one read of each
    // security context settles them without building a pointer per field.
    let pending: Vec<ContainerAt> = crate::workload::containers(m.spec())
        .filter(|c| !is_compliant(c.container.get("securityContext"), windows, read_only_root))
        .map(|c| c.at())
        .collect();
    for container in pending {
        let scope = m.scope_of(container);
        let sc = format!("{}/securityContext", container.pointer());
        if !windows {
            require(m, &scope, &sc, NO_PRIVILEGE_ESCALATION);
            capabilities(m, container, &scope, &sc);
        }
        run_as_non_root(m, &scope, &sc);
        if !windows {
            run_as_user(m, &scope, &sc);
            seccomp(m, &scope, &sc);
            if read_only_root {
                require(m, &scope, &sc, READ_ONLY_ROOT);
            }
        }
    }
}

/// Whether none of the rules below would change (or deny) this security context. One walk over
/// its members rather than a map lookup per field: this runs for every container of every review.
fn is_compliant(sc: Option<&Value>, windows: bool, read_only_root: bool) -> bool {
    let Some(sc) = sc.and_then(Value::as_object) else {
        return false;
    };
    let (mut escalation_off, mut drops_all, mut read_only) = (false, false, false);
    for (field, value) in sc {
        let acceptable = match field.as_str() {
            // Absent is fine too: the pod-level value applies.
            "runAsNonRoot" => *value == Value::Bool(true),
            // Windows pods are exempt from the Linux-only fields below.
            _ if windows => true,
            "allowPrivilegeEscalation" => {
                escalation_off = *value == Value::Bool(false);
                true
            }
            "capabilities" => {
                drops_all = value
                    .get("drop")
                    .and_then(Value::as_array)
                    .is_some_and(|drop| drop.iter().any(|c| c.as_str() == Some("ALL")));
                value.get("add").is_none_or(|add| {
                    add.as_array()
                        .is_some_and(|add| add.iter().all(|c| c.as_str() == Some(ALLOWED_ADD)))
                })
            }
            "runAsUser" => value.as_i64().is_some_and(|id| id > 0),
            "seccompProfile" => is_allowed_profile(value),
            "readOnlyRootFilesystem" => {
                read_only = *value == Value::Bool(true);
                true
            }
            _ => true,
        };
        if !acceptable {
            return false;
        }
    }
    windows || (escalation_off && drops_all && (read_only || !read_only_root))
}

/// Sets the boolean `field` of the security context at `sc` to `value` unless it is already;
/// `line` is the change line (`field=value`, spelled out so no line is formatted for it).
fn require(
    m: &mut Mutation<'_, '_>,
    scope: &Scope,
    sc: &str,
    (field, value, line): (&str, bool, &str),
) {
    let pointer = format!("{sc}/{field}");
    let current = m.editor.get(&pointer).cloned();
    if current != Some(Value::Bool(value)) {
        m.editor.set(&pointer, json!(value));
        m.change(scope.clone(), was(line, current.as_ref()));
    }
}

const NO_PRIVILEGE_ESCALATION: (&str, bool, &str) = (
    "allowPrivilegeEscalation",
    false,
    "allowPrivilegeEscalation=false",
);
const READ_ONLY_ROOT: (&str, bool, &str) = (
    "readOnlyRootFilesystem",
    true,
    "readOnlyRootFilesystem=true",
);

fn capabilities(m: &mut Mutation<'_, '_>, container: ContainerAt, scope: &Scope, sc: &str) {
    let drop_pointer = format!("{sc}/capabilities/drop");
    match m.editor.get(&drop_pointer) {
        Some(Value::Array(drop)) => {
            let exact = drop.iter().any(|c| c.as_str() == Some("ALL"));
            let any_case = drop
                .iter()
                .position(|c| c.as_str().is_some_and(|c| c.eq_ignore_ascii_case("all")));
            match (exact, any_case) {
                (true, _) => {}
                (false, Some(index)) => {
                    // The runtime matches "ALL" exactly; "all" drops nothing on some runtimes and the
                    // standard's check wants the canonical spelling.
                    m.editor
                        .set(&format!("{drop_pointer}/{index}"), json!("ALL"));
                    m.change(scope.clone(), "capabilities.drop: all -> ALL");
                }
                (false, None) => {
                    m.editor.push(&drop_pointer, json!("ALL"));
                    m.change(scope.clone(), "capabilities.drop += ALL");
                }
            }
        }
        _ => {
            m.editor.set(&drop_pointer, json!(["ALL"]));
            m.change(scope.clone(), "capabilities.drop=[ALL]");
        }
    }

    let add_pointer = format!("{sc}/capabilities/add");
    let Some(Value::Array(add)) = m.editor.get(&add_pointer) else {
        return;
    };
    let (kept, removed): (Vec<&Value>, Vec<&Value>) =
        add.iter().partition(|c| c.as_str() == Some(ALLOWED_ADD));
    if removed.is_empty() {
        return;
    }
    let removed: Vec<String> = removed
        .iter()
        .map(|c| c.as_str().map_or_else(|| c.to_string(), str::to_owned))
        .collect();
    let kept: Vec<Value> = kept.into_iter().cloned().collect();
    match m.profile.unfixable.capabilities {
        Action::Remove => {
            if kept.is_empty() {
                m.editor.remove(&add_pointer);
            } else {
                m.editor.set(&add_pointer, Value::Array(kept));
            }
            m.change(
                scope.clone(),
                format!("removed capabilities.add {}", removed.join(", ")),
            );
        }
        Action::Deny => {
            let field = format!(
                "{}.securityContext.capabilities.add",
                container.field(m.spec_path)
            );
            m.deny(
                field,
                scope.clone(),
                Control::Capabilities,
                format!(
                    "adds {} (only {ALLOWED_ADD} is allowed)",
                    removed.join(", ")
                ),
            );
        }
    }
}

fn run_as_non_root(m: &mut Mutation<'_, '_>, scope: &Scope, sc: &str) {
    let pointer = format!("{sc}/runAsNonRoot");
    // Absent is fine: the pod-level value applies. Only an explicit non-true value overrides it.
    match m.editor.get(&pointer) {
        None | Some(Value::Bool(true)) => {}
        Some(current) => {
            let current = current.clone();
            m.editor.set(&pointer, json!(true));
            m.change(scope.clone(), was("runAsNonRoot=true", Some(&current)));
        }
    }
}

fn run_as_user(m: &mut Mutation<'_, '_>, scope: &Scope, sc: &str) {
    let pointer = format!("{sc}/runAsUser");
    match m.editor.get(&pointer) {
        None => {}
        Some(current) if current.as_i64().is_some_and(|id| id > 0) => {}
        Some(current) => {
            let current = current.clone();
            let id = m.profile.run_as_user.get();
            m.editor.set(&pointer, json!(id));
            m.change(
                scope.clone(),
                was(&format!("runAsUser={id}"), Some(&current)),
            );
        }
    }
}

fn seccomp(m: &mut Mutation<'_, '_>, scope: &Scope, sc: &str) {
    let pointer = format!("{sc}/seccompProfile");
    match m.editor.get(&pointer) {
        None => {}
        Some(profile) if is_allowed_profile(profile) => {}
        Some(profile) => {
            let previous = profile
                .get("type")
                .cloned()
                .unwrap_or_else(|| profile.clone());
            m.editor.set(&pointer, json!({"type": "RuntimeDefault"}));
            m.change(
                scope.clone(),
                was("seccompProfile=RuntimeDefault", Some(&previous)),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::is_compliant;
    use crate::engine::{Context, Scope, mutate};
    use crate::policy::Policy;
    use crate::pss::Control;
    use crate::workload::WorkloadKind;

    /// The shortcut must agree with the rules it skips: a context it calls compliant gets no change
    /// and no finding from them, and one it does not gets at least one.
    #[test]
    fn the_compliance_shortcut_agrees_with_the_rules() {
        let policy = Policy::builtin();
        let profile = policy.profile("restricted").expect("built-in profile");
        let compliant = json!({"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]},
                               "readOnlyRootFilesystem": true});
        let with = |field: &str, value: Value| {
            let mut sc = compliant.clone();
            sc[field] = value;
            sc
        };
        let cases = [
            compliant.clone(),
            with("runAsNonRoot", json!(true)),
            with("runAsNonRoot", json!(false)),
            with("runAsNonRoot", Value::Null),
            with("runAsUser", json!(1000)),
            with("runAsUser", json!(0)),
            with("runAsUser", json!("1000")),
            with("allowPrivilegeEscalation", json!(true)),
            with("allowPrivilegeEscalation", Value::Null),
            with("readOnlyRootFilesystem", json!(false)),
            with("seccompProfile", json!({"type": "RuntimeDefault"})),
            with(
                "seccompProfile",
                json!({"type": "Localhost", "localhostProfile": "p"}),
            ),
            with("seccompProfile", json!({"type": "Unconfined"})),
            with("seccompProfile", Value::Null),
            with("capabilities", json!({"drop": ["all"]})),
            with("capabilities", json!({"drop": ["NET_RAW"]})),
            with(
                "capabilities",
                json!({"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}),
            ),
            with(
                "capabilities",
                json!({"drop": ["ALL"], "add": ["SYS_ADMIN"]}),
            ),
            with(
                "capabilities",
                json!({"drop": ["ALL"], "add": "NET_BIND_SERVICE"}),
            ),
            with("capabilities", json!({})),
            with("futureKnob", json!({"x": 1})),
            json!({}),
            json!("not an object"),
        ];
        for windows in [false, true] {
            for sc in &cases {
                let mut pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                    "spec": {"securityContext": {"runAsNonRoot": true, "runAsUser": 1000, "runAsGroup": 1000,
                                                 "fsGroup": 1000, "seccompProfile": {"type": "RuntimeDefault"}},
                             "containers": [{"name": "app", "image": "app:1", "securityContext": sc,
                                             "volumeMounts": [{"name": "t", "mountPath": "/"}]}]}});
                if windows {
                    pod["spec"]["os"] = json!({"name": "windows"});
                }
                let outcome = mutate(&mut pod, WorkloadKind::Pod, Context::CREATE, profile);
                let is_container = |scope: &Scope| matches!(scope, Scope::Container { .. });
                let changed = outcome.changes.iter().any(|c| is_container(&c.scope));
                let found = outcome
                    .denial
                    .iter()
                    .flat_map(|d| &d.findings)
                    // A context that is not an object is refused before any rule runs.
                    .any(|f| is_container(&f.scope) || f.control == Control::Malformed);
                let shortcut = is_compliant(Some(sc), windows, profile.read_only_root_filesystem);
                if windows {
                    // The rules leave a Windows pod's Linux-only fields alone (the API server
                    // rejects them there); what remains for them is runAsNonRoot.
                    assert!(!(shortcut && changed), "windows: {sc} -> {outcome:?}");
                } else {
                    assert_eq!(shortcut, !(changed || found), "{sc} -> {outcome:?}");
                }
            }
        }
    }
}
