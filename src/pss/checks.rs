//! The checker: every control of [`super::controls`] applied to one pod template, in one pass
//! over the pod spec, each container and each `securityContext`.

use std::fmt::{self, Write as _};

use serde_json::Value;

use super::controls::{
    APPARMOR_ANNOTATION_PREFIX, BASELINE_CAPABILITIES, Control, RESTRICTED_ADDABLE_CAPABILITY,
    is_allowed_apparmor_annotation, is_allowed_profile, is_allowed_selinux_type,
    is_restricted_volume_type, is_safe_sysctl, is_windows,
};
use super::fields::{ContainerFields, Mistyped, PodSpecFields, SecurityContextFields};
use super::{Level, Violation};
use crate::workload::{ContainerRef, PodTemplate};

/// Absent or JSON `null`: the standard's "undefined/nil".
fn is_unset(value: Option<&Value>) -> bool {
    matches!(value, None | Some(Value::Null))
}

/// Exactly JSON `true`.
fn is_true(value: Option<&Value>) -> bool {
    matches!(value, Some(Value::Bool(true)))
}

/// Exactly JSON `false`.
fn is_false(value: Option<&Value>) -> bool {
    matches!(value, Some(Value::Bool(false)))
}

/// For fields whose allowed values are "undefined/nil, false": anything else (true, or a value of
/// the wrong type) breaks the control.
fn not_false(value: Option<&Value>) -> bool {
    !matches!(value, None | Some(Value::Null) | Some(Value::Bool(false)))
}

/// Whether a JSON value is the number zero (or not a number at all, which is never allowed where
/// a number is expected). `None` means undefined.
fn zero_or_wrong_type(value: Option<&Value>) -> bool {
    match value {
        None | Some(Value::Null) => false,
        Some(Value::Number(n)) => n.as_f64() == Some(0.0),
        Some(_) => true,
    }
}

/// Renders an optional JSON value for a detail message: strings quoted, other JSON as JSON,
/// absent as `undefined`.
struct Shown<'a>(Option<&'a Value>);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            None => f.write_str("undefined"),
            Some(Value::String(s)) => write!(f, "{s:?}"),
            Some(other) => write!(f, "{other}"),
        }
    }
}

/// Formats a violation's field path into a String sized for a long one up front: `format!`
/// would start from an estimate of a few bytes and regrow the String several times on the way.
fn field_path(path: fmt::Arguments<'_>) -> String {
    const CAPACITY: usize = 128;
    let mut field = String::with_capacity(CAPACITY);
    // Writing into a String fails only if a `Display` impl does; none of the checker's can.
    let _ = field.write_fmt(path);
    field
}

/// The checker's pass over one pod; see [`super::check`].
pub(super) fn check(pod: &PodTemplate<'_>, level: Level) -> Vec<Violation> {
    let spec = PodSpecFields::of(Some(pod.spec));
    let pod_sc = SecurityContextFields::of(spec.security_context);
    let mut checker = Checker {
        pod,
        restricted: level == Level::Restricted,
        windows: is_windows(spec.os),
        user_namespace: is_false(spec.host_users),
        pod_non_root: is_true(pod_sc.run_as_non_root),
        pod_seccomp: pod_sc
            .seccomp_profile
            .is_some_and(|p| !p.is_null() && is_allowed_profile(p)),
        out: Vec::new(),
    };
    checker.pod_level(&spec, &pod_sc);
    for (list, containers) in spec.container_lists() {
        // A list of the wrong type is reported by `pod_level`.
        let Some(containers) = containers.and_then(Value::as_array) else {
            continue;
        };
        for (index, container) in containers.iter().enumerate() {
            checker.container(&ContainerRef {
                list,
                index,
                container,
            });
        }
    }
    checker.out
}

struct Checker<'p, 'a> {
    pod: &'p PodTemplate<'a>,
    restricted: bool,
    windows: bool,
    user_namespace: bool,
    /// `runAsNonRoot: true` at pod level, which containers that leave it unset inherit.
    pod_non_root: bool,
    /// An allowed seccomp profile at pod level, which containers without one of their own inherit.
    pod_seccomp: bool,
    out: Vec<Violation>,
}

impl Checker<'_, '_> {
    /// Pushes a violation at `level` of a field of the pod spec (`place: None`) or of a container;
    /// `suffix` is relative to that object.
    fn violation_at(
        &mut self,
        place: Option<&ContainerRef<'_>>,
        control: Control,
        level: Level,
        suffix: fmt::Arguments<'_>,
        detail: fmt::Arguments<'_>,
    ) {
        let spec = self.pod.kind.spec_path();
        let (container, at, field) = match place {
            None => (None, None, field_path(format_args!("{spec}.{suffix}"))),
            Some(c) => {
                let at = c.at();
                let field = field_path(format_args!("{spec}.{at}.{suffix}"));
                (Some(c.name().to_owned()), Some(at), field)
            }
        };
        self.out.push(Violation {
            control,
            level,
            container,
            at,
            field,
            detail: detail.to_string(),
        });
    }

    fn pod_violation_at(
        &mut self,
        control: Control,
        level: Level,
        suffix: fmt::Arguments<'_>,
        detail: fmt::Arguments<'_>,
    ) {
        self.violation_at(None, control, level, suffix, detail);
    }

    fn container_violation_at(
        &mut self,
        control: Control,
        level: Level,
        container: &ContainerRef<'_>,
        suffix: fmt::Arguments<'_>,
        detail: fmt::Arguments<'_>,
    ) {
        self.violation_at(Some(container), control, level, suffix, detail);
    }

    /// Pushes a violation of a pod-spec field at its control's level.
    fn pod_violation(
        &mut self,
        control: Control,
        suffix: fmt::Arguments<'_>,
        detail: fmt::Arguments<'_>,
    ) {
        self.pod_violation_at(control, control.level(), suffix, detail);
    }

    /// Pushes a violation of a container field at its control's level.
    fn container_violation(
        &mut self,
        control: Control,
        container: &ContainerRef<'_>,
        suffix: fmt::Arguments<'_>,
        detail: fmt::Arguments<'_>,
    ) {
        self.container_violation_at(control, control.level(), container, suffix, detail);
    }

    /// Pushes a [`Control::Malformed`] violation for a member of the wrong JSON type.
    fn mistyped(&mut self, container: Option<&ContainerRef<'_>>, mistyped: Mistyped<'_>) {
        let member = format_args!("{}", mistyped.member);
        let detail = format_args!(
            "expected {}, found {}",
            mistyped.expected,
            super::JsonType::of(mistyped.found)
        );
        self.violation_at(
            container,
            Control::Malformed,
            Level::Baseline,
            member,
            detail,
        );
    }

    /// HostProcess of a pod's or a container's security context.
    #[inline]
    fn host_process(&mut self, place: Option<&ContainerRef<'_>>, sc: &SecurityContextFields<'_>) {
        let host_process = sc.windows_options.and_then(|w| w.get("hostProcess"));
        if not_false(host_process) {
            self.violation_at(
                place,
                Control::HostProcess,
                Level::Baseline,
                format_args!("securityContext.windowsOptions.hostProcess"),
                format_args!("must be false or unset, not {}", Shown(host_process)),
            );
        }
    }

    /// A set AppArmor or seccomp profile (`member`) must be RuntimeDefault or Localhost: the
    /// AppArmor control, and the baseline part of Seccomp.
    #[inline]
    fn profile_type(
        &mut self,
        place: Option<&ContainerRef<'_>>,
        control: Control,
        member: &str,
        profile: Option<&Value>,
    ) {
        if let Some(profile) = profile.filter(|p| !p.is_null())
            && !is_allowed_profile(profile)
        {
            self.violation_at(
                place,
                control,
                Level::Baseline,
                format_args!("securityContext.{member}.type"),
                format_args!(
                    "must be RuntimeDefault or Localhost, not {}",
                    Shown(profile.get("type"))
                ),
            );
        }
    }

    /// Running as Non-root user of a pod's or a container's security context.
    #[inline]
    fn run_as_user(&mut self, place: Option<&ContainerRef<'_>>, user: Option<&Value>) {
        if zero_or_wrong_type(user) {
            self.violation_at(
                place,
                Control::RunningAsNonRootUser,
                Level::Restricted,
                format_args!("securityContext.runAsUser"),
                format_args!("must be a non-zero user ID, not {}", Shown(user)),
            );
        }
    }

    fn pod_level(&mut self, spec: &PodSpecFields<'_>, sc: &SecurityContextFields<'_>) {
        for mistyped in spec.mistyped() {
            self.mistyped(None, mistyped);
        }

        self.host_process(None, sc);

        // Host Namespaces
        for (name, value) in [
            ("hostNetwork", spec.host_network),
            ("hostPID", spec.host_pid),
            ("hostIPC", spec.host_ipc),
        ] {
            if not_false(value) {
                self.pod_violation(
                    Control::HostNamespaces,
                    format_args!("{name}"),
                    format_args!("must be false or unset, not {}", Shown(value)),
                );
            }
        }

        // HostPath Volumes, and Volume Types under restricted.
        self.volumes(spec.volumes);

        // AppArmor: the deprecated per-container annotations and the pod-level field.
        self.apparmor_annotations();
        self.profile_type(
            None,
            Control::AppArmor,
            "appArmorProfile",
            sc.app_armor_profile,
        );

        // SELinux
        if let Some(options) = sc.se_linux_options.filter(|o| !o.is_null()) {
            self.selinux(None, options);
        }

        // Seccomp: a set profile must be RuntimeDefault or Localhost (baseline); restricted also
        // requires one to be set, at pod level or in every container (checked per container).
        // `pod_seccomp` already says whether a set profile is allowed.
        if !self.pod_seccomp {
            self.profile_type(None, Control::Seccomp, "seccompProfile", sc.seccomp_profile);
        }

        // Sysctls
        self.sysctls(sc.sysctls);

        if !self.restricted {
            return;
        }

        // Running as Non-root: pod level may be true or undefined here; false is always wrong.
        if !self.user_namespace {
            let non_root = sc.run_as_non_root;
            if !is_unset(non_root) && !is_true(non_root) {
                self.pod_violation(
                    Control::RunningAsNonRoot,
                    format_args!("securityContext.runAsNonRoot"),
                    format_args!("must be true, not {}", Shown(non_root)),
                );
            }
            // Running as Non-root user
            self.run_as_user(None, sc.run_as_user);
        }
    }

    fn volumes(&mut self, volumes: Option<&Value>) {
        // A `volumes` that is not a list is reported by `pod_level`.
        let Some(volumes) = volumes.and_then(Value::as_array) else {
            return;
        };
        for (index, volume) in volumes.iter().enumerate() {
            let Some(sources) = volume.as_object() else {
                self.pod_violation(
                    Control::Malformed,
                    format_args!("volumes[{index}]"),
                    format_args!("expected an object, found {}", super::JsonType::of(volume)),
                );
                continue;
            };
            // Only messages need the name, so it is looked up only for them.
            let name = || volume.get("name").and_then(Value::as_str).unwrap_or("");
            if !is_unset(sources.get("hostPath")) {
                self.pod_violation(
                    Control::HostPathVolumes,
                    format_args!("volumes[{index}].hostPath"),
                    format_args!("hostPath volume {:?} is not allowed", name()),
                );
            }
            if !self.restricted {
                continue;
            }
            for (key, source) in sources {
                if key == "name"
                    || key == "hostPath"
                    || source.is_null()
                    || is_restricted_volume_type(key)
                {
                    continue;
                }
                self.pod_violation(
                    Control::VolumeTypes,
                    format_args!("volumes[{index}].{key}"),
                    format_args!("volume {:?} uses restricted volume type {key:?}", name()),
                );
            }
        }
    }

    fn apparmor_annotations(&mut self) {
        let Some(annotations) = self
            .pod
            .metadata
            .and_then(|m| m.get("annotations"))
            .and_then(Value::as_object)
        else {
            return;
        };
        for (key, value) in annotations {
            let Some(container) = key.strip_prefix(APPARMOR_ANNOTATION_PREFIX) else {
                continue;
            };
            let allowed = is_allowed_apparmor_annotation(value);
            if !allowed {
                let field = format!("{}.annotations[{key}]", self.pod.kind.metadata_path());
                self.out.push(Violation {
                    control: Control::AppArmor,
                    level: Level::Baseline,
                    container: Some(container.to_owned()),
                    at: None,
                    field,
                    detail: format!(
                        "must be runtime/default or localhost/*, not {}",
                        Shown(Some(value))
                    ),
                });
            }
        }
    }

    /// SELinux options of the pod (`container: None`) or of a container.
    fn selinux(&mut self, container: Option<&ContainerRef<'_>>, options: &Value) {
        let selinux_type = options.get("type");
        let type_allowed = match selinux_type {
            None | Some(Value::Null) => true,
            Some(Value::String(t)) => is_allowed_selinux_type(t),
            Some(_) => false,
        };
        if !type_allowed {
            self.selinux_violation(
                container,
                "type",
                format_args!(
                    "type {} is not allowed (container_t, container_init_t, container_kvm_t, container_engine_t)",
                    Shown(selinux_type)
                ),
            );
        }
        for name in ["user", "role"] {
            let value = options.get(name);
            let set = match value {
                None | Some(Value::Null) => false,
                Some(Value::String(s)) => !s.is_empty(),
                Some(_) => true,
            };
            if set {
                self.selinux_violation(
                    container,
                    name,
                    format_args!("{name} must not be set, not {}", Shown(value)),
                );
            }
        }
    }

    fn selinux_violation(
        &mut self,
        container: Option<&ContainerRef<'_>>,
        name: &str,
        detail: fmt::Arguments<'_>,
    ) {
        self.violation_at(
            container,
            Control::SELinux,
            Level::Baseline,
            format_args!("securityContext.seLinuxOptions.{name}"),
            detail,
        );
    }

    fn sysctls(&mut self, sysctls: Option<&Value>) {
        let Some(sysctls) = sysctls.filter(|s| !s.is_null()) else {
            return;
        };
        let Some(sysctls) = sysctls.as_array() else {
            self.pod_violation(
                Control::Sysctls,
                format_args!("securityContext.sysctls"),
                format_args!("must be a list of sysctls"),
            );
            return;
        };
        for (index, sysctl) in sysctls.iter().enumerate() {
            let name = sysctl.get("name");
            let safe = name.and_then(Value::as_str).is_some_and(is_safe_sysctl);
            if !safe {
                self.pod_violation(
                    Control::Sysctls,
                    format_args!("securityContext.sysctls[{index}].name"),
                    format_args!("sysctl {} is not in the safe set", Shown(name)),
                );
            }
        }
    }

    fn container(&mut self, c: &ContainerRef<'_>) {
        if !c.container.is_object() {
            let found = super::JsonType::of(c.container);
            self.out.push(Violation {
                control: Control::Malformed,
                level: Level::Baseline,
                container: None,
                at: Some(c.at()),
                field: field_path(format_args!("{}.{}", self.pod.kind.spec_path(), c.at())),
                detail: format!("expected an object, found {found}"),
            });
            return;
        }
        let fields = ContainerFields::of(Some(c.container));
        for mistyped in fields.mistyped() {
            self.mistyped(Some(c), mistyped);
        }
        let sc = SecurityContextFields::of(fields.security_context);

        self.host_process(Some(c), &sc);

        // Privileged Containers
        let privileged = sc.privileged;
        if not_false(privileged) {
            self.container_violation(
                Control::PrivilegedContainers,
                c,
                format_args!("securityContext.privileged"),
                format_args!("must be false or unset, not {}", Shown(privileged)),
            );
        }

        // Capabilities
        self.capabilities(c, sc.capabilities);

        // HostPorts
        self.host_ports(c, fields.ports);

        self.profile_type(
            Some(c),
            Control::AppArmor,
            "appArmorProfile",
            sc.app_armor_profile,
        );

        // SELinux
        if let Some(options) = sc.se_linux_options.filter(|o| !o.is_null()) {
            self.selinux(Some(c), options);
        }

        // /proc Mount Type: user-namespaced pods may unmask /proc under baseline, never under restricted.
        let proc_mount = sc.proc_mount;
        if !is_unset(proc_mount) && proc_mount.and_then(Value::as_str) != Some("Default") {
            if !self.user_namespace {
                self.container_violation(
                    Control::ProcMountType,
                    c,
                    format_args!("securityContext.procMount"),
                    format_args!("must be Default or unset, not {}", Shown(proc_mount)),
                );
            } else if self.restricted {
                self.container_violation_at(
                    Control::ProcMountType,
                    Level::Restricted,
                    c,
                    format_args!("securityContext.procMount"),
                    format_args!("must be Default or unset, not {}", Shown(proc_mount)),
                );
            }
        }

        // Seccomp (baseline part: a set profile must be RuntimeDefault or Localhost)
        let seccomp = sc.seccomp_profile.filter(|p| !p.is_null());
        self.profile_type(Some(c), Control::Seccomp, "seccompProfile", seccomp);

        // Host Probes / Lifecycle Hooks
        self.probe_hosts(c, &fields);

        if !self.restricted {
            return;
        }

        // Privilege Escalation (Linux only)
        if !self.windows {
            let escalation = sc.allow_privilege_escalation;
            if !is_false(escalation) {
                self.container_violation(
                    Control::PrivilegeEscalation,
                    c,
                    format_args!("securityContext.allowPrivilegeEscalation"),
                    format_args!("must be false, not {}", Shown(escalation)),
                );
            }
        }

        if !self.user_namespace {
            // Running as Non-root: explicitly true here, or undefined here and true at pod level.
            let non_root = sc.run_as_non_root;
            let ok = if is_unset(non_root) {
                self.pod_non_root
            } else {
                is_true(non_root)
            };
            if !ok {
                self.container_violation(
                    Control::RunningAsNonRoot,
                    c,
                    format_args!("securityContext.runAsNonRoot"),
                    format_args!(
                        "must be true{}",
                        if is_unset(non_root) {
                            " here or at pod level"
                        } else {
                            ""
                        }
                    ),
                );
            }

            // Running as Non-root user
            self.run_as_user(Some(c), sc.run_as_user);
        }

        // Seccomp (restricted part, Linux only): a profile must be set here or at pod level.
        if !self.windows && seccomp.is_none() && !self.pod_seccomp {
            self.container_violation_at(
                Control::Seccomp,
                Level::Restricted,
                c,
                format_args!("securityContext.seccompProfile.type"),
                format_args!("must be RuntimeDefault or Localhost here or at pod level"),
            );
        }
    }

    fn capabilities(&mut self, c: &ContainerRef<'_>, capabilities: Option<&Value>) {
        let capabilities = capabilities.filter(|v| !v.is_null());
        let add = capabilities
            .and_then(|caps| caps.get("add"))
            .filter(|v| !v.is_null());
        // Restricted requires drop: [ALL] and add ⊆ [NET_BIND_SERVICE] on Linux pods. The baseline
        // part (add ⊆ default set) applies to every pod, so restricted stays a superset of baseline.
        let linux_restricted = self.restricted && !self.windows;
        match add.map(Value::as_array) {
            None => {}
            Some(None) => self.container_violation(
                Control::Capabilities,
                c,
                format_args!("securityContext.capabilities.add"),
                format_args!("must be a list of capabilities"),
            ),
            Some(Some(list)) => {
                for (index, capability) in list.iter().enumerate() {
                    let name = capability.as_str();
                    let level = match name {
                        Some(RESTRICTED_ADDABLE_CAPABILITY) => continue,
                        Some(n) if BASELINE_CAPABILITIES.contains(&n) => {
                            if !linux_restricted {
                                continue;
                            }
                            Level::Restricted
                        }
                        _ => Level::Baseline,
                    };
                    self.container_violation_at(
                        Control::Capabilities,
                        level,
                        c,
                        format_args!("securityContext.capabilities.add[{index}]"),
                        format_args!(
                            "capability {} must not be added{}",
                            Shown(Some(capability)),
                            if level == Level::Restricted {
                                " (restricted allows only NET_BIND_SERVICE)"
                            } else {
                                ""
                            }
                        ),
                    );
                }
            }
        }
        if linux_restricted {
            let drops_all = capabilities
                .and_then(|caps| caps.get("drop"))
                .and_then(Value::as_array)
                .is_some_and(|drop| drop.iter().any(|d| d.as_str() == Some("ALL")));
            if !drops_all {
                self.container_violation_at(
                    Control::Capabilities,
                    Level::Restricted,
                    c,
                    format_args!("securityContext.capabilities.drop"),
                    format_args!("must include \"ALL\""),
                );
            }
        }
    }

    fn host_ports(&mut self, c: &ContainerRef<'_>, ports: Option<&Value>) {
        let Some(ports) = ports.and_then(Value::as_array) else {
            return;
        };
        for (index, port) in ports.iter().enumerate() {
            let host_port = port.get("hostPort");
            let allowed = match host_port {
                None | Some(Value::Null) => true,
                Some(Value::Number(n)) => n.as_f64() == Some(0.0),
                Some(_) => false,
            };
            if !allowed {
                self.container_violation(
                    Control::HostPorts,
                    c,
                    format_args!("ports[{index}].hostPort"),
                    format_args!("must be 0 or unset, not {}", Shown(host_port)),
                );
            }
        }
    }

    fn probe_hosts(&mut self, c: &ContainerRef<'_>, fields: &ContainerFields<'_>) {
        let hook = |name: &str| fields.lifecycle.and_then(|l| l.get(name));
        let handlers = [
            ("livenessProbe", None, fields.liveness_probe),
            ("readinessProbe", None, fields.readiness_probe),
            ("startupProbe", None, fields.startup_probe),
            ("lifecycle", Some("postStart"), hook("postStart")),
            ("lifecycle", Some("preStop"), hook("preStop")),
        ];
        for (outer, inner, handler) in handlers {
            let Some(handler) = handler else { continue };
            for action in ["httpGet", "tcpSocket"] {
                let host = handler.get(action).and_then(|a| a.get("host"));
                let allowed = match host {
                    None | Some(Value::Null) => true,
                    Some(Value::String(h)) => h.is_empty(),
                    Some(_) => false,
                };
                if !allowed {
                    let (sep, inner) = match inner {
                        Some(inner) => (".", inner),
                        None => ("", ""),
                    };
                    self.container_violation(
                        Control::HostProbesLifecycle,
                        c,
                        format_args!("{outer}{sep}{inner}.{action}.host"),
                        format_args!("must be unset, not {}", Shown(host)),
                    );
                }
            }
        }
    }
}
