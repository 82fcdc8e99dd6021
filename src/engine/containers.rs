//! Each container's `securityContext`: no privilege escalation, all capabilities dropped, no root,
//! a compliant seccomp profile, and a read-only root filesystem where the profile asks for one.

use serde_json::{Value, json};

use super::pod::{is_compliant_seccomp, was};
use super::{ContainerAt, Mutation, Scope};
use crate::policy::Action;

/// The one capability the restricted level lets a container add.
const ALLOWED_ADD: &str = "NET_BIND_SERVICE";

pub(super) fn apply(m: &mut Mutation<'_, '_>) {
    let windows = m.is_windows();
    for container in m.containers() {
        // Most pods arrive already compliant (made from templates restrictor mutated): one read
        // of the security context settles them without building a pointer per field.
        let compliant = m.container(container).is_some_and(|c| {
            is_compliant(
                c.get("securityContext"),
                windows,
                m.profile.read_only_root_filesystem,
            )
        });
        if compliant {
            continue;
        }
        let scope = m.scope_of(container);
        let sc = format!("{}/securityContext", container.pointer());
        if !windows {
            allow_privilege_escalation(m, &scope, &sc);
            capabilities(m, container, &scope, &sc);
        }
        run_as_non_root(m, &scope, &sc);
        if !windows {
            run_as_user(m, &scope, &sc);
            seccomp(m, &scope, &sc);
            read_only_root_filesystem(m, &scope, &sc);
        }
    }
}

/// Whether none of the rules below would change (or deny) this security context.
fn is_compliant(sc: Option<&Value>, windows: bool, read_only_root: bool) -> bool {
    let Some(sc) = sc.filter(|sc| sc.is_object()) else {
        return false;
    };
    let field = |name: &str| sc.get(name);
    let run_as_non_root = matches!(field("runAsNonRoot"), None | Some(Value::Bool(true)));
    if windows {
        return run_as_non_root;
    }
    let capabilities = field("capabilities");
    let drops_all = capabilities
        .and_then(|c| c.get("drop"))
        .and_then(Value::as_array)
        .is_some_and(|drop| drop.iter().any(|c| c.as_str() == Some("ALL")));
    let adds_only_allowed = capabilities.and_then(|c| c.get("add")).is_none_or(|add| {
        add.as_array()
            .is_some_and(|add| add.iter().all(|c| c.as_str() == Some(ALLOWED_ADD)))
    });
    run_as_non_root
        && drops_all
        && adds_only_allowed
        && field("allowPrivilegeEscalation") == Some(&Value::Bool(false))
        && field("runAsUser").is_none_or(|id| id.as_i64().is_some_and(|id| id > 0))
        && field("seccompProfile").is_none_or(is_compliant_seccomp)
        && (!read_only_root || field("readOnlyRootFilesystem") == Some(&Value::Bool(true)))
}

fn allow_privilege_escalation(m: &mut Mutation<'_, '_>, scope: &Scope, sc: &str) {
    let pointer = format!("{sc}/allowPrivilegeEscalation");
    let current = m.editor.get(&pointer).cloned();
    if current != Some(Value::Bool(false)) {
        m.editor.set(&pointer, json!(false));
        m.change(
            scope.clone(),
            was("allowPrivilegeEscalation=false", current.as_ref()),
        );
    }
}

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
                "Capabilities",
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
        Some(profile) if is_compliant_seccomp(profile) => {}
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

fn read_only_root_filesystem(m: &mut Mutation<'_, '_>, scope: &Scope, sc: &str) {
    if !m.profile.read_only_root_filesystem {
        return;
    }
    let pointer = format!("{sc}/readOnlyRootFilesystem");
    let current = m.editor.get(&pointer).cloned();
    if current != Some(Value::Bool(true)) {
        m.editor.set(&pointer, json!(true));
        m.change(
            scope.clone(),
            was("readOnlyRootFilesystem=true", current.as_ref()),
        );
    }
}
