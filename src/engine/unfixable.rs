//! What no security context can fix: host namespaces, host paths and other volume types, privileged
//! containers, host ports, unsafe sysctls, custom SELinux, unmasked /proc, Windows host processes
//! and unconfined AppArmor. Each is denied, or removed with a change line where the policy says so.

use serde_json::Value;

use super::{Mutation, Scope};
use crate::patch::escape;
use crate::policy::{Action, Unfixable};
use crate::pss::Malformed;
use crate::pss::controls::{
    APPARMOR_ANNOTATION_PREFIX, Control, is_allowed_apparmor_annotation, is_allowed_profile,
    is_allowed_selinux_type, is_restricted_volume_type, is_safe_sysctl,
};
use crate::pss::fields::{ContainerFields, PodSpecFields, SecurityContextFields};
use crate::workload::ContainerAt;

/// What the policy does about a value that breaks `control`: each unfixable control has its own
/// setting (the fixable ones never reach here; they would be denied).
fn action(unfixable: &Unfixable, control: Control) -> Action {
    match control {
        Control::HostNamespaces => unfixable.host_namespaces,
        Control::HostPathVolumes => unfixable.host_path_volumes,
        Control::VolumeTypes => unfixable.volume_types,
        Control::PrivilegedContainers => unfixable.privileged,
        Control::HostPorts => unfixable.host_ports,
        Control::Sysctls => unfixable.sysctls,
        Control::SELinux => unfixable.se_linux,
        Control::ProcMountType => unfixable.proc_mount,
        Control::HostProcess => unfixable.host_process,
        Control::AppArmor => unfixable.app_armor,
        Control::Capabilities => unfixable.capabilities,
        _ => Action::Deny,
    }
}

/// One finding about to be denied or removed.
struct Offence<'a> {
    /// Pointer relative to the template holder of what `remove` deletes.
    pointer: String,
    field: String,
    scope: Scope,
    control: Control,
    reason: String,
    /// The change line when removed.
    removed: &'a str,
}

fn handle(m: &mut Mutation<'_, '_>, offence: Offence<'_>) {
    match action(&m.profile.unfixable, offence.control) {
        Action::Deny => m.deny(
            offence.field,
            offence.scope,
            offence.control,
            offence.reason,
        ),
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

pub(super) fn apply(m: &mut Mutation<'_, '_>, screen: &Screen) {
    if screen.host_namespaces {
        host_namespaces(m);
    }
    if screen.volumes {
        volumes(m);
    }
    if screen.pod_context {
        unsafe_sysctls(m);
        let field = format!("{}.securityContext", m.spec_path);
        security_context_options(m, "/spec/securityContext", &field, &Scope::Pod);
    }
    apparmor_annotations(m);
    if screen.containers {
        for container in m.containers() {
            container_options(m, container);
        }
    }
}

/// Which parts of the pod spec may hold something unfixable, found in one walk over its members
/// and each container's: most pods hold none of it, and a map lookup per field cost more than the
/// walk. A part flagged here is examined in full by its handler; a part not flagged has nothing
/// for it. The same walk refuses a pod whose lists or contexts have the wrong JSON type.
#[derive(Debug, Default)]
pub(super) struct Screen {
    host_namespaces: bool,
    volumes: bool,
    pod_context: bool,
    containers: bool,
}

impl Screen {
    /// Screens the pod spec at the dotted path `spec_path`.
    pub(super) fn of(spec: Option<&Value>, spec_path: &str) -> Result<Self, Malformed> {
        let fields = PodSpecFields::of(spec);
        if let Some(mistyped) = fields.mistyped().next() {
            return Err(mistyped.at(spec_path));
        }
        let mut screen = Self {
            host_namespaces: [fields.host_network, fields.host_pid, fields.host_ipc]
                .into_iter()
                .any(|value| value.and_then(Value::as_bool) == Some(true)),
            pod_context: {
                let sc = SecurityContextFields::of(fields.security_context);
                // Restrictor itself adds a safe sysctl to most pods.
                sc.se_linux_options.is_some()
                    || sc.windows_options.is_some()
                    || sc.app_armor_profile.is_some()
                    || sc.sysctls.and_then(Value::as_array).is_some_and(|sysctls| {
                        sysctls
                            .iter()
                            .any(|sysctl| !is_safe_sysctl(sysctl_name(sysctl)))
                    })
            },
            ..Self::default()
        };
        for (index, volume) in elements(fields.volumes) {
            if !volume.is_object() {
                let field = format!("{spec_path}.volumes[{index}]");
                return Err(Malformed::element(field, volume));
            }
            screen.volumes |= forbidden_type(volume).is_some();
        }
        for (list, containers) in fields.container_lists() {
            for (index, container) in elements(containers) {
                // Formatted only for an error, as most pods are well formed.
                let at = || format!("{spec_path}.{list}[{index}]");
                if !container.is_object() {
                    return Err(Malformed::element(at(), container));
                }
                let container = ContainerFields::of(Some(container));
                if let Some(mistyped) = container.mistyped().next() {
                    return Err(mistyped.at(at()));
                }
                screen.containers |= may_offend(&container);
            }
        }
        Ok(screen)
    }
}

/// The elements of a list with their indices; none when absent (the screen has ruled out other types).
fn elements(list: Option<&Value>) -> impl Iterator<Item = (usize, &Value)> {
    list.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
}

/// Whether a container has a host port or a security context field that can be unfixable.
fn may_offend(container: &ContainerFields<'_>) -> bool {
    let host_ports = container
        .ports
        .and_then(Value::as_array)
        .is_some_and(|ports| ports.iter().any(|port| port.get("hostPort").is_some()));
    let sc = SecurityContextFields::of(container.security_context);
    host_ports
        || sc.privileged.is_some()
        || sc.proc_mount.is_some()
        || sc.se_linux_options.is_some()
        || sc.windows_options.is_some()
        || sc.app_armor_profile.is_some()
}

fn host_namespaces(m: &mut Mutation<'_, '_>) {
    for field in ["hostNetwork", "hostPID", "hostIPC"] {
        if m.spec().get(field).and_then(Value::as_bool) == Some(true) {
            let offence = Offence {
                pointer: format!("/spec/{field}"),
                field: format!("{}.{field}", m.spec_path),
                scope: Scope::Pod,
                control: Control::HostNamespaces,
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
    volume_type(volume).filter(|kind| !is_restricted_volume_type(kind))
}

fn volumes(m: &mut Mutation<'_, '_>) {
    let offending: Vec<(usize, String, String)> = elements(m.spec().get("volumes"))
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
        let control = if kind == "hostPath" {
            Control::HostPathVolumes
        } else {
            Control::VolumeTypes
        };
        let reason = format!("volume {name:?} is of type {kind}");
        match action(&m.profile.unfixable, control) {
            Action::Deny => m.deny(
                format!("{}.volumes[{index}].{kind}", m.spec_path),
                Scope::Pod,
                control,
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
            let indices: Vec<usize> = elements(m.editor.get(&pointer))
                .filter(|(_, mount)| mount.get("name").and_then(Value::as_str) == Some(volume))
                .map(|(index, _)| index)
                .collect();
            for index in indices.into_iter().rev() {
                m.editor.remove(&format!("{pointer}/{index}"));
            }
        }
    }
}

/// A sysctl's name; empty (never safe) when it has none.
fn sysctl_name(sysctl: &Value) -> &str {
    sysctl
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn unsafe_sysctls(m: &mut Mutation<'_, '_>) {
    let sysctls = m
        .spec()
        .get("securityContext")
        .and_then(|sc| sc.get("sysctls"));
    let offending: Vec<(usize, String)> = elements(sysctls)
        .map(|(index, sysctl)| (index, sysctl_name(sysctl)))
        .filter(|(_, name)| !is_safe_sysctl(name))
        .map(|(index, name)| (index, name.to_owned()))
        .collect();
    for (index, name) in offending.into_iter().rev() {
        let offence = Offence {
            pointer: format!("/spec/securityContext/sysctls/{index}"),
            field: format!("{}.securityContext.sysctls[{index}]", m.spec_path),
            scope: Scope::Pod,
            control: Control::Sysctls,
            reason: format!("sysctl {name:?} is not in the safe set"),
            removed: "sysctl",
        };
        handle(m, offence);
    }
}

/// A member of a security context that no fix makes compliant, found before anything changes.
struct Held {
    /// Pointer of what `remove` deletes, relative to the security context.
    pointer: &'static str,
    /// Dotted path of the offending value, relative to the security context.
    field: &'static str,
    control: Control,
    reason: String,
    removed: &'static str,
}

/// What a pod's or a container's security context holds that no fix makes compliant: custom
/// SELinux, a Windows host process, an unconfined AppArmor profile; for a container also
/// `privileged` and an unmasked `/proc`.
fn held(sc: &Value, container: bool) -> Vec<Held> {
    let mut held = Vec::new();
    let fields = SecurityContextFields::of(Some(sc));
    if container && fields.privileged.and_then(Value::as_bool) == Some(true) {
        held.push(Held {
            pointer: "/privileged",
            field: ".privileged",
            control: Control::PrivilegedContainers,
            reason: "privileged=true gives the container the host's devices".to_owned(),
            removed: "privileged",
        });
    }
    if let Some(mount) = fields.proc_mount.and_then(Value::as_str)
        && container
        && mount != "Default"
    {
        held.push(Held {
            pointer: "/procMount",
            field: ".procMount",
            control: Control::ProcMountType,
            reason: format!("procMount {mount:?} unmasks /proc"),
            removed: "procMount",
        });
    }
    if let Some(options) = fields.se_linux_options {
        selinux(options, &mut held);
    }
    let host_process = fields.windows_options.and_then(|w| w.get("hostProcess"));
    if host_process.and_then(Value::as_bool) == Some(true) {
        held.push(Held {
            pointer: "/windowsOptions/hostProcess",
            field: ".windowsOptions.hostProcess",
            control: Control::HostProcess,
            reason: "Windows host processes run with the host's privileges".to_owned(),
            removed: "windowsOptions.hostProcess",
        });
    }
    if let Some(profile) = fields.app_armor_profile
        && let Some(kind) = profile.get("type").and_then(Value::as_str)
        && !is_allowed_profile(profile)
    {
        held.push(Held {
            pointer: "/appArmorProfile",
            field: ".appArmorProfile.type",
            control: Control::AppArmor,
            reason: format!("AppArmor profile {kind:?} is not allowed"),
            removed: "appArmorProfile",
        });
    }
    held
}

fn selinux(options: &Value, held: &mut Vec<Held>) {
    let selinux_type = options
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if !is_allowed_selinux_type(selinux_type) {
        held.push(Held {
            pointer: "/seLinuxOptions/type",
            field: ".seLinuxOptions.type",
            control: Control::SELinux,
            reason: format!("SELinux type {selinux_type:?} is not allowed"),
            removed: "seLinuxOptions.type",
        });
    }
    for (key, pointer, field) in [
        ("user", "/seLinuxOptions/user", ".seLinuxOptions.user"),
        ("role", "/seLinuxOptions/role", ".seLinuxOptions.role"),
    ] {
        if options
            .get(key)
            .and_then(Value::as_str)
            .is_some_and(|v| !v.is_empty())
        {
            held.push(Held {
                pointer,
                field,
                control: Control::SELinux,
                reason: format!("a custom SELinux {key} is not allowed"),
                removed: key,
            });
        }
    }
}

/// Denies or removes what the security context at `base` (dotted path `field`) holds.
fn security_context_options(m: &mut Mutation<'_, '_>, base: &str, field: &str, scope: &Scope) {
    let container = matches!(scope, Scope::Container { .. });
    let held = m
        .editor
        .get(base)
        .map(|sc| held(sc, container))
        .unwrap_or_default();
    for held in held {
        let offence = Offence {
            pointer: format!("{base}{}", held.pointer),
            field: format!("{field}{}", held.field),
            scope: scope.clone(),
            control: held.control,
            reason: held.reason,
            removed: held.removed,
        };
        handle(m, offence);
    }
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
        .filter(|(key, value)| {
            key.starts_with(APPARMOR_ANNOTATION_PREFIX) && !is_allowed_apparmor_annotation(value)
        })
        .map(|(key, value)| {
            let value = value
                .as_str()
                .map_or_else(|| value.to_string(), str::to_owned);
            (key.clone(), value)
        })
        .collect();
    if offending.is_empty() {
        return;
    }
    let metadata_path = m.kind.metadata_path();
    for (key, value) in offending {
        handle(
            m,
            Offence {
                pointer: format!("/metadata/annotations/{}", escape(&key)),
                field: format!("{metadata_path}.annotations[{key}]"),
                scope: Scope::Pod,
                control: Control::AppArmor,
                reason: format!("AppArmor profile {value:?} is not allowed"),
                removed: "AppArmor annotation",
            },
        );
    }
}

fn container_options(m: &mut Mutation<'_, '_>, container: ContainerAt) {
    let Some(fields) = m.container(container).map(|c| ContainerFields::of(Some(c))) else {
        return;
    };
    if !may_offend(&fields) {
        return;
    }
    let pointer = container.pointer();
    let scope = m.scope_of(container);
    let at = container.field(m.spec_path);
    security_context_options(
        m,
        &format!("{pointer}/securityContext"),
        &format!("{at}.securityContext"),
        &scope,
    );

    let ports_pointer = format!("{pointer}/ports");
    let host_ports: Vec<(usize, i64)> = elements(m.editor.get(&ports_pointer))
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
                pointer: format!("{ports_pointer}/{index}/hostPort"),
                field: format!("{at}.ports[{index}].hostPort"),
                scope: scope.clone(),
                control: Control::HostPorts,
                reason: format!("hostPort {host_port} binds a port of the host"),
                removed: "hostPort",
            },
        );
    }
}
