//! What no security context can fix: host namespaces, host paths and other volume types, privileged
//! containers, host ports, unsafe sysctls, custom SELinux, unmasked /proc, Windows host processes
//! and unconfined AppArmor. Each is denied, or removed with a change line where the policy says so.

use crate::patch::Pointer;
use serde_json::Value;

use super::{Mutation, Scope};
use crate::patch::escape;
use crate::policy::Action;
use crate::pss;
use crate::workload::ContainerAt;

const APPARMOR_ANNOTATION_PREFIX: &str = "container.apparmor.security.beta.kubernetes.io/";

/// One finding about to be denied or removed.
struct Offence<'a> {
    action: Action,
    /// Pointer relative to the template holder of what `remove` deletes.
    pointer: String,
    field: String,
    scope: Scope,
    check: &'static str,
    reason: String,
    /// The change line when removed.
    removed: &'a str,
}

fn handle(m: &mut Mutation<'_, '_>, offence: Offence<'_>) {
    match offence.action {
        Action::Deny => m.deny(offence.field, offence.scope, offence.check, offence.reason),
        Action::Remove => {
            if m.editor.remove(&offence.pointer) {
                m.change(
                    offence.scope,
                    format!("removed {} ({})", offence.removed, offence.reason),
                );
            }
        }
    }
}

pub(super) fn apply(m: &mut Mutation<'_, '_>) {
    let screen = Screen::of(m.spec());
    if screen.host_namespaces {
        host_namespaces(m);
    }
    if screen.volumes {
        volumes(m);
    }
    if screen.pod_context {
        unsafe_sysctls(m);
        pod_options(m);
    }
    apparmor_annotations(m);
    if screen.containers {
        for container in m.containers() {
            container_options(m, container);
        }
    }
}

/// Which parts of the pod spec may hold something unfixable, found in one walk over its members:
/// most pods hold none of it, and a map lookup per field cost more than the walk. A part flagged
/// here is examined in full by its handler; a part not flagged has nothing for it.
#[derive(Debug, Default)]
struct Screen {
    host_namespaces: bool,
    volumes: bool,
    pod_context: bool,
    containers: bool,
}

impl Screen {
    fn of(spec: &Value) -> Self {
        let mut screen = Self::default();
        for (field, value) in spec.as_object().into_iter().flatten() {
            match field.as_str() {
                "hostNetwork" | "hostPID" | "hostIPC" => {
                    screen.host_namespaces |= value.as_bool() == Some(true);
                }
                "volumes" => {
                    screen.volumes = value
                        .as_array()
                        .is_some_and(|volumes| volumes.iter().any(|v| forbidden_type(v).is_some()));
                }
                "securityContext" => {
                    screen.pod_context = value.as_object().is_some_and(|sc| {
                        sc.iter().any(|(key, value)| match key.as_str() {
                            // Restrictor itself adds a safe one to most pods.
                            "sysctls" => value
                                .as_array()
                                .is_some_and(|sysctls| sysctls.iter().any(|s| !is_safe_sysctl(s))),
                            key => CONTEXT_OPTION_FIELDS.contains(&key),
                        })
                    });
                }
                "initContainers" | "containers" | "ephemeralContainers" => {
                    screen.containers |= value
                        .as_array()
                        .is_some_and(|list| list.iter().any(may_offend));
                }
                _ => {}
            }
        }
        screen
    }
}

/// Whether a container has a host port or a security context field that can be unfixable.
fn may_offend(container: &Value) -> bool {
    let host_ports = container
        .get("ports")
        .and_then(Value::as_array)
        .is_some_and(|ports| ports.iter().any(|port| port.get("hostPort").is_some()));
    host_ports || has_any(container.get("securityContext"), &CONTAINER_CONTEXT_FIELDS)
}

const HOST_NAMESPACES: [&str; 3] = ["hostNetwork", "hostPID", "hostIPC"];

fn host_namespaces(m: &mut Mutation<'_, '_>) {
    for field in HOST_NAMESPACES {
        if m.spec().get(field).and_then(Value::as_bool) == Some(true) {
            let offence = Offence {
                action: m.profile.unfixable.host_namespaces,
                pointer: format!("/spec/{field}"),
                field: format!("{}.{field}", m.spec_path),
                scope: Scope::Pod,
                check: "Host Namespaces",
                reason: format!("{field}=true shares the host's namespace"),
                removed: field,
            };
            handle(m, offence);
        }
    }
}

/// The type of a volume: its one member other than `name`.
fn volume_type(volume: &Value) -> Option<&str> {
    volume
        .as_object()?
        .keys()
        .map(String::as_str)
        .find(|key| *key != "name")
}

/// The volume's type when the restricted level does not allow it.
fn forbidden_type(volume: &Value) -> Option<&str> {
    volume_type(volume).filter(|kind| !pss::RESTRICTED_VOLUME_TYPES.contains(kind))
}

fn volumes(m: &mut Mutation<'_, '_>) {
    let offending: Vec<(usize, String, String)> = m
        .spec()
        .get("volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
        .filter_map(|(index, volume)| {
            let kind = forbidden_type(volume)?;
            let name = volume
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default();
            Some((index, name.to_owned(), kind.to_owned()))
        })
        .collect();
    // Highest index first, so removing one does not shift the next.
    for (index, name, kind) in offending.into_iter().rev() {
        let (action, check) = if kind == "hostPath" {
            (m.profile.unfixable.host_path_volumes, "HostPath Volumes")
        } else {
            (m.profile.unfixable.volume_types, "Volume Types")
        };
        let reason = format!("volume {name:?} is of type {kind}");
        match action {
            Action::Deny => m.deny(
                format!("{}.volumes[{index}].{kind}", m.spec_path),
                Scope::Pod,
                check,
                reason,
            ),
            Action::Remove => {
                remove_mounts_of(m, &name);
                m.editor.remove(&format!("/spec/volumes/{index}"));
                m.change(
                    Scope::Pod,
                    format!("removed volume {name:?} ({kind}) and its mounts"),
                );
            }
        }
    }
}

fn remove_mounts_of(m: &mut Mutation<'_, '_>, volume: &str) {
    for container in m.containers() {
        let container = container.pointer();
        for list in ["volumeMounts", "volumeDevices"] {
            let pointer = format!("{container}/{list}");
            let indices: Vec<usize> = m
                .editor
                .get(&pointer)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .enumerate()
                .filter(|(_, mount)| mount.get("name").and_then(Value::as_str) == Some(volume))
                .map(|(index, _)| index)
                .collect();
            for index in indices.into_iter().rev() {
                m.editor.remove(&format!("{pointer}/{index}"));
            }
        }
    }
}

/// Whether the sysctl is one the restricted level allows.
fn is_safe_sysctl(sysctl: &Value) -> bool {
    sysctl
        .get("name")
        .and_then(Value::as_str)
        .is_some_and(|name| pss::SAFE_SYSCTLS.contains(&name))
}

fn unsafe_sysctls(m: &mut Mutation<'_, '_>) {
    let offending: Vec<(usize, String)> = m
        .spec()
        .get("securityContext")
        .and_then(|sc| sc.get("sysctls"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
        .filter(|(_, sysctl)| !is_safe_sysctl(sysctl))
        .map(|(index, sysctl)| {
            let name = sysctl
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default();
            (index, name.to_owned())
        })
        .collect();
    for (index, name) in offending.into_iter().rev() {
        let offence = Offence {
            action: m.profile.unfixable.sysctls,
            pointer: format!("/spec/securityContext/sysctls/{index}"),
            field: format!("{}.securityContext.sysctls[{index}]", m.spec_path),
            scope: Scope::Pod,
            check: "Sysctls",
            reason: format!("sysctl {name:?} is not in the safe set"),
            removed: "sysctl",
        };
        handle(m, offence);
    }
}

/// seLinuxOptions, windowsOptions.hostProcess and appArmorProfile, shared by pod and containers:
/// `base` is the pointer of the securityContext, `field` its dotted path.
/// Fields of a security context that can hold something no context fix can make compliant.
const CONTEXT_OPTION_FIELDS: [&str; 3] = ["seLinuxOptions", "windowsOptions", "appArmorProfile"];
const CONTAINER_CONTEXT_FIELDS: [&str; 5] = [
    "privileged",
    "procMount",
    "seLinuxOptions",
    "windowsOptions",
    "appArmorProfile",
];

/// Whether the object has any of `fields`: one walk over its few members is cheaper than a map
/// lookup per field, and this runs for every container of every review.
fn has_any(object: Option<&Value>, fields: &[&str]) -> bool {
    object
        .and_then(Value::as_object)
        .is_some_and(|object| object.keys().any(|key| fields.contains(&key.as_str())))
}

fn security_context_options(m: &mut Mutation<'_, '_>, base: &str, field: &str, scope: &Scope) {
    let unfixable = m.profile.unfixable;
    // Most security contexts have none of these fields: decide that without copying anything.
    if !has_any(m.editor.get(base), &CONTEXT_OPTION_FIELDS) {
        return;
    }
    let sc = m.editor.get(base).cloned().unwrap_or(Value::Null);

    if let Some(options) = sc.get("seLinuxOptions") {
        let selinux_type = options
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !pss::SELINUX_TYPES.contains(&selinux_type) {
            handle(
                m,
                Offence {
                    action: unfixable.se_linux,
                    pointer: format!("{base}/seLinuxOptions/type"),
                    field: format!("{field}.seLinuxOptions.type"),
                    scope: scope.clone(),
                    check: "SELinux",
                    reason: format!("SELinux type {selinux_type:?} is not allowed"),
                    removed: "seLinuxOptions.type",
                },
            );
        }
        for key in ["user", "role"] {
            if options
                .get(key)
                .and_then(Value::as_str)
                .is_some_and(|v| !v.is_empty())
            {
                handle(
                    m,
                    Offence {
                        action: unfixable.se_linux,
                        pointer: format!("{base}/seLinuxOptions/{key}"),
                        field: format!("{field}.seLinuxOptions.{key}"),
                        scope: scope.clone(),
                        check: "SELinux",
                        reason: format!("a custom SELinux {key} is not allowed"),
                        removed: key,
                    },
                );
            }
        }
    }
    if sc
        .at("/windowsOptions/hostProcess")
        .and_then(Value::as_bool)
        == Some(true)
    {
        handle(
            m,
            Offence {
                action: unfixable.host_process,
                pointer: format!("{base}/windowsOptions/hostProcess"),
                field: format!("{field}.windowsOptions.hostProcess"),
                scope: scope.clone(),
                check: "HostProcess",
                reason: "Windows host processes run with the host's privileges".to_owned(),
                removed: "windowsOptions.hostProcess",
            },
        );
    }
    if let Some(kind) = sc.at("/appArmorProfile/type").and_then(Value::as_str)
        && !matches!(kind, "RuntimeDefault" | "Localhost")
    {
        handle(
            m,
            Offence {
                action: unfixable.app_armor,
                pointer: format!("{base}/appArmorProfile"),
                field: format!("{field}.appArmorProfile.type"),
                scope: scope.clone(),
                check: "AppArmor",
                reason: format!("AppArmor profile {kind:?} is not allowed"),
                removed: "appArmorProfile",
            },
        );
    }
}

fn pod_options(m: &mut Mutation<'_, '_>) {
    if !has_any(
        m.editor.get("/spec/securityContext"),
        &CONTEXT_OPTION_FIELDS,
    ) {
        return;
    }
    let field = format!("{}.securityContext", m.spec_path);
    security_context_options(m, "/spec/securityContext", &field, &Scope::Pod);
}

fn apparmor_annotations(m: &mut Mutation<'_, '_>) {
    let offending: Vec<(String, String)> = m
        .editor
        .doc()
        .get("metadata")
        .and_then(|metadata| metadata.get("annotations"))
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter(|(key, _)| key.starts_with(APPARMOR_ANNOTATION_PREFIX))
        .filter_map(|(key, value)| {
            let value = value.as_str().unwrap_or_default();
            (value != "runtime/default" && !value.starts_with("localhost/"))
                .then(|| (key.clone(), value.to_owned()))
        })
        .collect();
    if offending.is_empty() {
        return;
    }
    let metadata_path = match m.spec_path.strip_suffix("spec") {
        Some(prefix) => format!("{prefix}metadata"),
        None => "metadata".to_owned(),
    };
    for (key, value) in offending {
        handle(
            m,
            Offence {
                action: m.profile.unfixable.app_armor,
                pointer: format!("/metadata/annotations/{}", escape(&key)),
                field: format!("{metadata_path}.annotations[{key}]"),
                scope: Scope::Pod,
                check: "AppArmor",
                reason: format!("AppArmor profile {value:?} is not allowed"),
                removed: "AppArmor annotation",
            },
        );
    }
}

fn container_options(m: &mut Mutation<'_, '_>, container: ContainerAt) {
    if !m.container(container).is_some_and(may_offend) {
        return;
    }
    let unfixable = m.profile.unfixable;
    let pointer = container.pointer();
    let base = format!("{pointer}/securityContext");
    let field = format!("{}.securityContext", container.field(m.spec_path));
    let scope = m.scope_of(container);
    let sc = m.editor.get(&base).cloned().unwrap_or(Value::Null);

    if sc.get("privileged").and_then(Value::as_bool) == Some(true) {
        handle(
            m,
            Offence {
                action: unfixable.privileged,
                pointer: format!("{base}/privileged"),
                field: format!("{field}.privileged"),
                scope: scope.clone(),
                check: "Privileged Containers",
                reason: "privileged=true gives the container the host's devices".to_owned(),
                removed: "privileged",
            },
        );
    }
    if let Some(mount) = sc.get("procMount").and_then(Value::as_str)
        && mount != "Default"
    {
        handle(
            m,
            Offence {
                action: unfixable.proc_mount,
                pointer: format!("{base}/procMount"),
                field: format!("{field}.procMount"),
                scope: scope.clone(),
                check: "/proc Mount Type",
                reason: format!("procMount {mount:?} unmasks /proc"),
                removed: "procMount",
            },
        );
    }
    security_context_options(m, &base, &field, &scope);

    let ports_pointer = format!("{pointer}/ports");
    let host_ports: Vec<(usize, i64)> = m
        .editor
        .get(&ports_pointer)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
        .filter_map(|(index, port)| {
            let host_port = port.get("hostPort")?;
            let number = host_port.as_i64().unwrap_or(-1);
            (number != 0).then_some((index, number))
        })
        .collect();
    for (index, host_port) in host_ports {
        handle(
            m,
            Offence {
                action: unfixable.host_ports,
                pointer: format!("{ports_pointer}/{index}/hostPort"),
                field: format!("{}.ports[{index}].hostPort", container.field(m.spec_path)),
                scope: scope.clone(),
                check: "HostPorts",
                reason: format!("hostPort {host_port} binds a port of the host"),
                removed: "hostPort",
            },
        );
    }
}
