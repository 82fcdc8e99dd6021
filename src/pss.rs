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
//! over their members instead of one map search per field (see `PodSpecFields`).

use std::fmt::{self, Write as _};
use std::str::FromStr;

use serde_json::{Map, Value};

use crate::workload::{ContainerRef, PodTemplate};

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

// The controls, named as the Pod Security Standards page names them.
pub const HOST_PROCESS: &str = "HostProcess";
pub const HOST_NAMESPACES: &str = "Host Namespaces";
pub const PRIVILEGED_CONTAINERS: &str = "Privileged Containers";
pub const CAPABILITIES: &str = "Capabilities";
pub const HOST_PATH_VOLUMES: &str = "HostPath Volumes";
pub const HOST_PORTS: &str = "HostPorts";
pub const APPARMOR: &str = "AppArmor";
pub const SELINUX: &str = "SELinux";
pub const PROC_MOUNT_TYPE: &str = "/proc Mount Type";
pub const SECCOMP: &str = "Seccomp";
pub const SYSCTLS: &str = "Sysctls";
pub const HOST_PROBES_LIFECYCLE: &str = "Host Probes / Lifecycle Hooks";
pub const VOLUME_TYPES: &str = "Volume Types";
pub const PRIVILEGE_ESCALATION: &str = "Privilege Escalation";
pub const RUNNING_AS_NON_ROOT: &str = "Running as Non-root";
pub const RUNNING_AS_NON_ROOT_USER: &str = "Running as Non-root user";

/// One field of a pod that breaks a control.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The control's name as the standard names it (one of the constants of this module).
    pub check: &'static str,
    /// The lowest level that forbids this value.
    pub level: Level,
    /// The container the violation belongs to, for per-container fields and AppArmor annotations.
    pub container: Option<String>,
    /// Full dotted path inside the object: `spec.template.spec.containers[0].securityContext.privileged`.
    pub field: String,
    /// Short human reason.
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.check, self.field, self.detail)?;
        if let Some(container) = &self.container {
            write!(f, " (container {container:?})")?;
        }
        Ok(())
    }
}

/// All violations of `level` in the pod template, in a stable order: pod-level fields (pod spec
/// and metadata annotations) first, then every container in start order (init, regular,
/// ephemeral); within each, baseline controls in the order the standard lists them, then the
/// restricted ones.
pub fn check(pod: &PodTemplate<'_>, level: Level) -> Vec<Violation> {
    let spec = PodSpecFields::of(pod.spec);
    let pod_sc = SecurityContextFields::of(spec.security_context);
    let mut checker = Checker {
        pod,
        restricted: level == Level::Restricted,
        windows: spec
            .os
            .and_then(|os| os.get("name"))
            .and_then(Value::as_str)
            == Some("windows"),
        user_namespace: is_false(spec.host_users),
        pod_non_root: is_true(pod_sc.run_as_non_root),
        pod_seccomp: pod_sc
            .seccomp_profile
            .is_some_and(|p| !p.is_null() && profile_type_allowed(p)),
        out: Vec::new(),
    };
    checker.pod_level(&spec, &pod_sc);
    for container in pod.containers() {
        checker.container(&container);
    }
    checker.out
}

/// Convenience for whole objects: locates the pod template; `None` for objects that carry no pod.
pub fn check_object(object: &Value, level: Level) -> Option<Vec<Violation>> {
    PodTemplate::locate(object).map(|pod| check(&pod, level))
}

/// Capabilities a baseline container may add (the container runtime's default set).
const BASELINE_CAPABILITIES: [&str; 13] = [
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

/// Sysctls the standard considers safe (namespaced and isolated), as of v1.32.
pub const SAFE_SYSCTLS: [&str; 12] = [
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
    "net.ipv4.tcp_rmem",
    "net.ipv4.tcp_wmem",
];

/// Inline volume sources the restricted level allows (`image` since v1.33 upstream).
pub const RESTRICTED_VOLUME_TYPES: [&str; 9] = [
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "image",
    "persistentVolumeClaim",
    "projected",
    "secret",
];

pub const SELINUX_TYPES: [&str; 5] = [
    "",
    "container_t",
    "container_init_t",
    "container_kvm_t",
    "container_engine_t",
];

const APPARMOR_ANNOTATION_PREFIX: &str = "container.apparmor.security.beta.kubernetes.io/";

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

/// `RuntimeDefault` or `Localhost`: the seccomp and AppArmor profile types allowed when a profile is set.
fn profile_type_allowed(profile: &Value) -> bool {
    matches!(
        profile.get("type").and_then(Value::as_str),
        Some("RuntimeDefault" | "Localhost")
    )
}

/// The members of a JSON object; none when the value is absent or not an object, just as
/// `Value::get` finds nothing there.
fn members(value: Option<&Value>) -> impl Iterator<Item = (&String, &Value)> {
    value
        .and_then(Value::as_object)
        .into_iter()
        .flat_map(Map::iter)
}

// Why the checker reads objects through the `*Fields` structs below: serde_json's `Map` is a
// BTreeMap, so every `get("key")` is a search that calls `memcmp` for each key it passes, and the
// checker reads a dozen members of the same few objects. One pass over an object's members,
// matching each key against constant strings (which compile to length checks and inline
// compares), costs about as much as one or two `get`s.

/// The members of a pod spec that the pod-level controls read.
#[derive(Default)]
struct PodSpecFields<'a> {
    os: Option<&'a Value>,
    host_users: Option<&'a Value>,
    host_network: Option<&'a Value>,
    host_pid: Option<&'a Value>,
    host_ipc: Option<&'a Value>,
    volumes: Option<&'a Value>,
    security_context: Option<&'a Value>,
}

impl<'a> PodSpecFields<'a> {
    fn of(spec: &'a Value) -> Self {
        let mut fields = Self::default();
        for (key, value) in members(Some(spec)) {
            let slot = match key.as_str() {
                "os" => &mut fields.os,
                "hostUsers" => &mut fields.host_users,
                "hostNetwork" => &mut fields.host_network,
                "hostPID" => &mut fields.host_pid,
                "hostIPC" => &mut fields.host_ipc,
                "volumes" => &mut fields.volumes,
                "securityContext" => &mut fields.security_context,
                _ => continue,
            };
            *slot = Some(value);
        }
        fields
    }
}

/// The members of a container that the per-container controls read.
#[derive(Default)]
struct ContainerFields<'a> {
    security_context: Option<&'a Value>,
    ports: Option<&'a Value>,
    liveness_probe: Option<&'a Value>,
    readiness_probe: Option<&'a Value>,
    startup_probe: Option<&'a Value>,
    lifecycle: Option<&'a Value>,
}

impl<'a> ContainerFields<'a> {
    fn of(container: &'a Value) -> Self {
        let mut fields = Self::default();
        for (key, value) in members(Some(container)) {
            let slot = match key.as_str() {
                "securityContext" => &mut fields.security_context,
                "ports" => &mut fields.ports,
                "livenessProbe" => &mut fields.liveness_probe,
                "readinessProbe" => &mut fields.readiness_probe,
                "startupProbe" => &mut fields.startup_probe,
                "lifecycle" => &mut fields.lifecycle,
                _ => continue,
            };
            *slot = Some(value);
        }
        fields
    }
}

/// The members of a pod's or a container's `securityContext` that any control reads. The two
/// kinds share most members; each level's checks read only the ones that exist there (`sysctls`
/// at pod level; `privileged`, `capabilities`, `procMount` and `allowPrivilegeEscalation` per
/// container).
#[derive(Default)]
struct SecurityContextFields<'a> {
    windows_options: Option<&'a Value>,
    privileged: Option<&'a Value>,
    capabilities: Option<&'a Value>,
    app_armor_profile: Option<&'a Value>,
    se_linux_options: Option<&'a Value>,
    proc_mount: Option<&'a Value>,
    seccomp_profile: Option<&'a Value>,
    sysctls: Option<&'a Value>,
    allow_privilege_escalation: Option<&'a Value>,
    run_as_non_root: Option<&'a Value>,
    run_as_user: Option<&'a Value>,
}

impl<'a> SecurityContextFields<'a> {
    fn of(security_context: Option<&'a Value>) -> Self {
        let mut fields = Self::default();
        for (key, value) in members(security_context) {
            let slot = match key.as_str() {
                "windowsOptions" => &mut fields.windows_options,
                "privileged" => &mut fields.privileged,
                "capabilities" => &mut fields.capabilities,
                "appArmorProfile" => &mut fields.app_armor_profile,
                "seLinuxOptions" => &mut fields.se_linux_options,
                "procMount" => &mut fields.proc_mount,
                "seccompProfile" => &mut fields.seccomp_profile,
                "sysctls" => &mut fields.sysctls,
                "allowPrivilegeEscalation" => &mut fields.allow_privilege_escalation,
                "runAsNonRoot" => &mut fields.run_as_non_root,
                "runAsUser" => &mut fields.run_as_user,
                _ => continue,
            };
            *slot = Some(value);
        }
        fields
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
    /// Pushes a violation of a pod-spec field; `suffix` is relative to the pod spec.
    fn pod_violation(
        &mut self,
        check: &'static str,
        level: Level,
        suffix: fmt::Arguments<'_>,
        detail: fmt::Arguments<'_>,
    ) {
        self.out.push(Violation {
            check,
            level,
            container: None,
            field: field_path(format_args!("{}.{}", self.pod.kind.spec_path(), suffix)),
            detail: detail.to_string(),
        });
    }

    /// Pushes a violation of a container field; `suffix` is relative to the container.
    fn container_violation(
        &mut self,
        check: &'static str,
        level: Level,
        container: &ContainerRef<'_>,
        suffix: fmt::Arguments<'_>,
        detail: fmt::Arguments<'_>,
    ) {
        self.out.push(Violation {
            check,
            level,
            container: Some(container.name().to_owned()),
            field: field_path(format_args!(
                "{}.{}.{}",
                self.pod.kind.spec_path(),
                container.at(),
                suffix
            )),
            detail: detail.to_string(),
        });
    }

    /// `spec.template.metadata` for `spec.template.spec`, `metadata` for a Pod's `spec`.
    fn metadata_path(&self) -> String {
        let spec = self.pod.kind.spec_path();
        let prefix = spec.strip_suffix("spec").unwrap_or("");
        format!("{prefix}metadata")
    }

    fn pod_level(&mut self, spec: &PodSpecFields<'_>, sc: &SecurityContextFields<'_>) {
        // HostProcess
        let host_process = sc.windows_options.and_then(|w| w.get("hostProcess"));
        if not_false(host_process) {
            self.pod_violation(
                HOST_PROCESS,
                Level::Baseline,
                format_args!("securityContext.windowsOptions.hostProcess"),
                format_args!("must be false or unset, not {}", Shown(host_process)),
            );
        }

        // Host Namespaces
        for (name, value) in [
            ("hostNetwork", spec.host_network),
            ("hostPID", spec.host_pid),
            ("hostIPC", spec.host_ipc),
        ] {
            if not_false(value) {
                self.pod_violation(
                    HOST_NAMESPACES,
                    Level::Baseline,
                    format_args!("{name}"),
                    format_args!("must be false or unset, not {}", Shown(value)),
                );
            }
        }

        // HostPath Volumes, and Volume Types under restricted.
        self.volumes(spec.volumes);

        // AppArmor: the deprecated per-container annotations and the pod-level field.
        self.apparmor_annotations();
        if let Some(profile) = sc.app_armor_profile.filter(|p| !p.is_null())
            && !profile_type_allowed(profile)
        {
            self.pod_violation(
                APPARMOR,
                Level::Baseline,
                format_args!("securityContext.appArmorProfile.type"),
                format_args!(
                    "must be RuntimeDefault or Localhost, not {}",
                    Shown(profile.get("type"))
                ),
            );
        }

        // SELinux
        if let Some(options) = sc.se_linux_options.filter(|o| !o.is_null()) {
            self.selinux(None, options);
        }

        // Seccomp: a set profile must be RuntimeDefault or Localhost (baseline; `pod_seccomp` says
        // whether it is); restricted also requires one to be set, at pod level or in every
        // container (checked per container).
        if let Some(profile) = sc.seccomp_profile.filter(|p| !p.is_null())
            && !self.pod_seccomp
        {
            self.pod_violation(
                SECCOMP,
                Level::Baseline,
                format_args!("securityContext.seccompProfile.type"),
                format_args!(
                    "must be RuntimeDefault or Localhost, not {}",
                    Shown(profile.get("type"))
                ),
            );
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
                    RUNNING_AS_NON_ROOT,
                    Level::Restricted,
                    format_args!("securityContext.runAsNonRoot"),
                    format_args!("must be true, not {}", Shown(non_root)),
                );
            }
            // Running as Non-root user
            let user = sc.run_as_user;
            if zero_or_wrong_type(user) {
                self.pod_violation(
                    RUNNING_AS_NON_ROOT_USER,
                    Level::Restricted,
                    format_args!("securityContext.runAsUser"),
                    format_args!("must be a non-zero user ID, not {}", Shown(user)),
                );
            }
        }
    }

    fn volumes(&mut self, volumes: Option<&Value>) {
        let Some(volumes) = volumes.filter(|v| !v.is_null()) else {
            return;
        };
        let Some(volumes) = volumes.as_array() else {
            self.pod_violation(
                if self.restricted {
                    VOLUME_TYPES
                } else {
                    HOST_PATH_VOLUMES
                },
                if self.restricted {
                    Level::Restricted
                } else {
                    Level::Baseline
                },
                format_args!("volumes"),
                format_args!("must be a list of volumes"),
            );
            return;
        };
        for (index, volume) in volumes.iter().enumerate() {
            // Only messages need the name, so it is looked up only for them.
            let name = || volume.get("name").and_then(Value::as_str).unwrap_or("");
            if !is_unset(volume.get("hostPath")) {
                self.pod_violation(
                    HOST_PATH_VOLUMES,
                    Level::Baseline,
                    format_args!("volumes[{index}].hostPath"),
                    format_args!("hostPath volume {:?} is not allowed", name()),
                );
            }
            if !self.restricted {
                continue;
            }
            let Some(sources) = volume.as_object() else {
                self.pod_violation(
                    VOLUME_TYPES,
                    Level::Restricted,
                    format_args!("volumes[{index}]"),
                    format_args!("volume must be an object"),
                );
                continue;
            };
            for (key, source) in sources {
                if key == "name"
                    || key == "hostPath"
                    || source.is_null()
                    || RESTRICTED_VOLUME_TYPES.contains(&key.as_str())
                {
                    continue;
                }
                self.pod_violation(
                    VOLUME_TYPES,
                    Level::Restricted,
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
            let allowed = match value.as_str() {
                Some(profile) => {
                    profile.is_empty()
                        || profile == "runtime/default"
                        || profile.starts_with("localhost/")
                }
                None => false,
            };
            if !allowed {
                let field = format!("{}.annotations[{key}]", self.metadata_path());
                self.out.push(Violation {
                    check: APPARMOR,
                    level: Level::Baseline,
                    container: Some(container.to_owned()),
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
            Some(Value::String(t)) => SELINUX_TYPES.contains(&t.as_str()),
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
        match container {
            None => self.pod_violation(
                SELINUX,
                Level::Baseline,
                format_args!("securityContext.seLinuxOptions.{name}"),
                detail,
            ),
            Some(c) => self.container_violation(
                SELINUX,
                Level::Baseline,
                c,
                format_args!("securityContext.seLinuxOptions.{name}"),
                detail,
            ),
        }
    }

    fn sysctls(&mut self, sysctls: Option<&Value>) {
        let Some(sysctls) = sysctls.filter(|s| !s.is_null()) else {
            return;
        };
        let Some(sysctls) = sysctls.as_array() else {
            self.pod_violation(
                SYSCTLS,
                Level::Baseline,
                format_args!("securityContext.sysctls"),
                format_args!("must be a list of sysctls"),
            );
            return;
        };
        for (index, sysctl) in sysctls.iter().enumerate() {
            let name = sysctl.get("name");
            let safe = name
                .and_then(Value::as_str)
                .is_some_and(|n| SAFE_SYSCTLS.contains(&n));
            if !safe {
                self.pod_violation(
                    SYSCTLS,
                    Level::Baseline,
                    format_args!("securityContext.sysctls[{index}].name"),
                    format_args!("sysctl {} is not in the safe set", Shown(name)),
                );
            }
        }
    }

    fn container(&mut self, c: &ContainerRef<'_>) {
        let fields = ContainerFields::of(c.container);
        let sc = SecurityContextFields::of(fields.security_context);

        // HostProcess
        let host_process = sc.windows_options.and_then(|w| w.get("hostProcess"));
        if not_false(host_process) {
            self.container_violation(
                HOST_PROCESS,
                Level::Baseline,
                c,
                format_args!("securityContext.windowsOptions.hostProcess"),
                format_args!("must be false or unset, not {}", Shown(host_process)),
            );
        }

        // Privileged Containers
        let privileged = sc.privileged;
        if not_false(privileged) {
            self.container_violation(
                PRIVILEGED_CONTAINERS,
                Level::Baseline,
                c,
                format_args!("securityContext.privileged"),
                format_args!("must be false or unset, not {}", Shown(privileged)),
            );
        }

        // Capabilities
        self.capabilities(c, sc.capabilities);

        // HostPorts
        self.host_ports(c, fields.ports);

        // AppArmor
        if let Some(profile) = sc.app_armor_profile.filter(|p| !p.is_null())
            && !profile_type_allowed(profile)
        {
            self.container_violation(
                APPARMOR,
                Level::Baseline,
                c,
                format_args!("securityContext.appArmorProfile.type"),
                format_args!(
                    "must be RuntimeDefault or Localhost, not {}",
                    Shown(profile.get("type"))
                ),
            );
        }

        // SELinux
        if let Some(options) = sc.se_linux_options.filter(|o| !o.is_null()) {
            self.selinux(Some(c), options);
        }

        // /proc Mount Type: user-namespaced pods may unmask /proc under baseline, never under restricted.
        let proc_mount = sc.proc_mount;
        if !is_unset(proc_mount) && proc_mount.and_then(Value::as_str) != Some("Default") {
            if !self.user_namespace {
                self.container_violation(
                    PROC_MOUNT_TYPE,
                    Level::Baseline,
                    c,
                    format_args!("securityContext.procMount"),
                    format_args!("must be Default or unset, not {}", Shown(proc_mount)),
                );
            } else if self.restricted {
                self.container_violation(
                    PROC_MOUNT_TYPE,
                    Level::Restricted,
                    c,
                    format_args!("securityContext.procMount"),
                    format_args!("must be Default or unset, not {}", Shown(proc_mount)),
                );
            }
        }

        // Seccomp (baseline part: a set profile must be RuntimeDefault or Localhost)
        let seccomp = sc.seccomp_profile.filter(|p| !p.is_null());
        if let Some(profile) = seccomp
            && !profile_type_allowed(profile)
        {
            self.container_violation(
                SECCOMP,
                Level::Baseline,
                c,
                format_args!("securityContext.seccompProfile.type"),
                format_args!(
                    "must be RuntimeDefault or Localhost, not {}",
                    Shown(profile.get("type"))
                ),
            );
        }

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
                    PRIVILEGE_ESCALATION,
                    Level::Restricted,
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
                    RUNNING_AS_NON_ROOT,
                    Level::Restricted,
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
            let user = sc.run_as_user;
            if zero_or_wrong_type(user) {
                self.container_violation(
                    RUNNING_AS_NON_ROOT_USER,
                    Level::Restricted,
                    c,
                    format_args!("securityContext.runAsUser"),
                    format_args!("must be a non-zero user ID, not {}", Shown(user)),
                );
            }
        }

        // Seccomp (restricted part, Linux only): a profile must be set here or at pod level.
        if !self.windows && seccomp.is_none() && !self.pod_seccomp {
            self.container_violation(
                SECCOMP,
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
                CAPABILITIES,
                Level::Baseline,
                c,
                format_args!("securityContext.capabilities.add"),
                format_args!("must be a list of capabilities"),
            ),
            Some(Some(list)) => {
                for (index, capability) in list.iter().enumerate() {
                    let name = capability.as_str();
                    let level = match name {
                        Some("NET_BIND_SERVICE") => continue,
                        Some(n) if BASELINE_CAPABILITIES.contains(&n) => {
                            if !linux_restricted {
                                continue;
                            }
                            Level::Restricted
                        }
                        _ => Level::Baseline,
                    };
                    self.container_violation(
                        CAPABILITIES,
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
                self.container_violation(
                    CAPABILITIES,
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
                    HOST_PORTS,
                    Level::Baseline,
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
                        HOST_PROBES_LIFECYCLE,
                        Level::Baseline,
                        c,
                        format_args!("{outer}{sep}{inner}.{action}.host"),
                        format_args!("must be unset, not {}", Shown(host)),
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A Pod that passes the restricted level.
    fn compliant_pod() -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "p", "annotations": {"example.com/x": "y"}},
            "spec": {
                "securityContext": {
                    "runAsNonRoot": true,
                    "runAsUser": 1000,
                    "seccompProfile": {"type": "RuntimeDefault"},
                    "sysctls": [{"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"}],
                },
                "initContainers": [{"name": "init", "image": "busybox", "securityContext": secure_context()}],
                "containers": [{
                    "name": "app",
                    "image": "nginx",
                    "ports": [{"containerPort": 8080}],
                    "securityContext": secure_context(),
                    "livenessProbe": {"httpGet": {"path": "/", "port": 8080}},
                }],
                "volumes": [{"name": "tmp", "emptyDir": {}}],
            }
        })
    }

    fn secure_context() -> Value {
        json!({"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}})
    }

    fn run(object: &Value, level: Level) -> Vec<Violation> {
        check_object(object, level).expect("object carries a pod")
    }

    /// `(check, field)` of every violation.
    fn found(object: &Value, level: Level) -> Vec<(&'static str, String)> {
        run(object, level)
            .into_iter()
            .map(|v| (v.check, v.field))
            .collect()
    }

    fn pod_with(edit: impl FnOnce(&mut Value)) -> Value {
        let mut pod = compliant_pod();
        edit(&mut pod);
        pod
    }

    fn app_sc(pod: &mut Value) -> &mut Value {
        &mut pod["spec"]["containers"][0]["securityContext"]
    }

    fn one(check: &'static str, field: &str) -> Vec<(&'static str, String)> {
        vec![(check, field.to_owned())]
    }

    fn assert_clean(object: &Value) {
        for level in [Level::Baseline, Level::Restricted] {
            assert_eq!(run(object, level), [], "{level} on {object}");
        }
    }

    /// Counts heap allocations made by the current thread, to prove the compliant path allocates nothing.
    mod counting {
        use std::alloc::{GlobalAlloc, Layout, System};
        use std::cell::Cell;

        pub struct Counting;

        thread_local! {
            pub static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
        }

        // SAFETY: delegates every call to the system allocator unchanged.
        unsafe impl GlobalAlloc for Counting {
            unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
                let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
                // SAFETY: same contract as the caller's.
                unsafe { System.alloc(layout) }
            }

            unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
                // SAFETY: same contract as the caller's.
                unsafe { System.dealloc(ptr, layout) }
            }

            unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
                let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
                // SAFETY: same contract as the caller's.
                unsafe { System.realloc(ptr, layout, new_size) }
            }
        }

        #[global_allocator]
        static GLOBAL: Counting = Counting;

        pub fn count<T>(f: impl FnOnce() -> T) -> (T, usize) {
            let before = ALLOCATIONS.with(Cell::get);
            let result = f();
            (result, ALLOCATIONS.with(Cell::get) - before)
        }
    }

    #[test]
    fn a_compliant_pod_is_checked_without_allocating() {
        let mut pod = compliant_pod();
        pod["spec"]["os"] = json!({"name": "linux"});
        pod["spec"]["securityContext"]["seLinuxOptions"] = json!({"type": "container_t"});
        pod["spec"]["securityContext"]["appArmorProfile"] = json!({"type": "RuntimeDefault"});
        pod["metadata"]["annotations"]["container.apparmor.security.beta.kubernetes.io/app"] =
            json!("runtime/default");
        pod["spec"]["containers"][0]["securityContext"]["capabilities"]["add"] =
            json!(["NET_BIND_SERVICE"]);
        pod["spec"]["ephemeralContainers"] =
            json!([{"name": "debug", "securityContext": secure_context()}]);
        let deployment = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "spec": {"template": {"metadata": pod["metadata"], "spec": pod["spec"]}},
        });
        let template = PodTemplate::locate(&deployment).expect("deployment");
        for level in [Level::Baseline, Level::Restricted] {
            let (violations, allocations) = counting::count(|| check(&template, level));
            assert_eq!(violations, []);
            assert_eq!(allocations, 0, "{level}");
        }
        // The counter works: a violation allocates its strings.
        let mut bad = deployment.clone();
        bad["spec"]["template"]["spec"]["hostPID"] = json!(true);
        let template = PodTemplate::locate(&bad).expect("deployment");
        let (_, allocations) = counting::count(|| check(&template, Level::Baseline));
        assert!(allocations > 0);
    }

    #[test]
    fn levels_parse_and_print() {
        assert_eq!("baseline".parse::<Level>(), Ok(Level::Baseline));
        assert_eq!("restricted".parse::<Level>(), Ok(Level::Restricted));
        assert_eq!(Level::Restricted.as_str(), "restricted");
        assert_eq!(Level::Baseline.to_string(), "baseline");
        let err = "privileged".parse::<Level>().unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"unknown Pod Security level "privileged": expected "baseline" or "restricted""#
        );
        assert!("Restricted".parse::<Level>().is_err());
        assert_eq!(
            serde_json::from_value::<Level>(json!("baseline")).ok(),
            Some(Level::Baseline)
        );
        assert_eq!(
            serde_json::to_value(Level::Restricted).ok(),
            Some(json!("restricted"))
        );
    }

    #[test]
    fn compliant_pod_and_workloads_have_no_violations() {
        let pod = compliant_pod();
        assert_clean(&pod);
        let deployment = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "spec": {"template": {"metadata": pod["metadata"], "spec": pod["spec"]}},
        });
        assert_clean(&deployment);
        let service =
            json!({"apiVersion": "v1", "kind": "Service", "spec": {"ports": [{"port": 80}]}});
        assert_eq!(check_object(&service, Level::Restricted), None);
    }

    #[test]
    fn a_minimal_pod_passes_baseline_but_not_restricted() {
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "spec": {"containers": [{"name": "c", "image": "x"}]}});
        assert_eq!(run(&pod, Level::Baseline), []);
        let restricted = found(&pod, Level::Restricted);
        assert_eq!(
            restricted,
            [
                (
                    CAPABILITIES,
                    "spec.containers[0].securityContext.capabilities.drop".to_owned()
                ),
                (
                    PRIVILEGE_ESCALATION,
                    "spec.containers[0].securityContext.allowPrivilegeEscalation".to_owned()
                ),
                (
                    RUNNING_AS_NON_ROOT,
                    "spec.containers[0].securityContext.runAsNonRoot".to_owned()
                ),
                (
                    SECCOMP,
                    "spec.containers[0].securityContext.seccompProfile.type".to_owned()
                ),
            ]
        );
        assert!(
            run(&pod, Level::Restricted)
                .iter()
                .all(|v| v.level == Level::Restricted)
        );
    }

    #[test]
    fn host_process() {
        let pod = pod_with(|p| {
            p["spec"]["securityContext"]["windowsOptions"] = json!({"hostProcess": true});
            app_sc(p)["windowsOptions"] = json!({"hostProcess": true});
        });
        let expected = vec![
            (
                HOST_PROCESS,
                "spec.securityContext.windowsOptions.hostProcess".to_owned(),
            ),
            (
                HOST_PROCESS,
                "spec.containers[0].securityContext.windowsOptions.hostProcess".to_owned(),
            ),
        ];
        assert_eq!(found(&pod, Level::Baseline), expected);
        assert_eq!(found(&pod, Level::Restricted), expected);
        let violation = &run(&pod, Level::Baseline)[1];
        assert_eq!(violation.level, Level::Baseline);
        assert_eq!(violation.container.as_deref(), Some("app"));
        assert_clean(&pod_with(|p| {
            p["spec"]["securityContext"]["windowsOptions"] =
                json!({"hostProcess": false, "runAsUserName": "x"});
            app_sc(p)["windowsOptions"] = json!({"hostProcess": null});
        }));
    }

    #[test]
    fn host_namespaces() {
        for name in ["hostNetwork", "hostPID", "hostIPC"] {
            for bad in [json!(true), json!("yes")] {
                let pod = pod_with(|p| p["spec"][name] = bad.clone());
                let expected = one(HOST_NAMESPACES, &format!("spec.{name}"));
                assert_eq!(found(&pod, Level::Baseline), expected);
                assert_eq!(found(&pod, Level::Restricted), expected);
            }
            assert_clean(&pod_with(|p| p["spec"][name] = json!(false)));
        }
    }

    #[test]
    fn privileged_containers() {
        for bad in [json!(true), json!("yes"), json!(1)] {
            let pod = pod_with(|p| app_sc(p)["privileged"] = bad.clone());
            let expected = one(
                PRIVILEGED_CONTAINERS,
                "spec.containers[0].securityContext.privileged",
            );
            assert_eq!(found(&pod, Level::Baseline), expected);
            assert_eq!(found(&pod, Level::Restricted), expected);
        }
        assert_clean(&pod_with(|p| app_sc(p)["privileged"] = json!(false)));
        assert_clean(&pod_with(|p| app_sc(p)["privileged"] = Value::Null));
    }

    #[test]
    fn capabilities() {
        // Beyond the default set: a baseline violation at both levels.
        let pod = pod_with(|p| {
            app_sc(p)["capabilities"]["add"] = json!(["NET_BIND_SERVICE", "NET_ADMIN"])
        });
        let expected = one(
            CAPABILITIES,
            "spec.containers[0].securityContext.capabilities.add[1]",
        );
        assert_eq!(found(&pod, Level::Baseline), expected);
        assert_eq!(found(&pod, Level::Restricted), expected);
        let violation = &run(&pod, Level::Restricted)[0];
        assert_eq!(violation.level, Level::Baseline);
        assert_eq!(
            violation.detail,
            r#"capability "NET_ADMIN" must not be added"#
        );

        // In the default set: fine for baseline, only NET_BIND_SERVICE may be added under restricted.
        let pod = pod_with(|p| app_sc(p)["capabilities"]["add"] = json!(["CHOWN"]));
        assert_eq!(run(&pod, Level::Baseline), []);
        let restricted = run(&pod, Level::Restricted);
        assert_eq!(restricted.len(), 1);
        assert_eq!(restricted[0].level, Level::Restricted);
        assert_eq!(
            restricted[0].field,
            "spec.containers[0].securityContext.capabilities.add[0]"
        );

        assert_clean(&pod_with(|p| {
            app_sc(p)["capabilities"]["add"] = json!(["NET_BIND_SERVICE"])
        }));

        // Restricted requires dropping ALL.
        for caps in [
            json!({"drop": ["NET_RAW"]}),
            json!(null),
            json!({"drop": "ALL"}),
        ] {
            let pod = pod_with(|p| app_sc(p)["capabilities"] = caps.clone());
            assert_eq!(run(&pod, Level::Baseline), []);
            assert_eq!(
                found(&pod, Level::Restricted),
                one(
                    CAPABILITIES,
                    "spec.containers[0].securityContext.capabilities.drop"
                )
            );
        }
        // A wrongly typed add list is never accepted.
        let pod = pod_with(|p| app_sc(p)["capabilities"]["add"] = json!("SYS_ADMIN"));
        assert_eq!(
            found(&pod, Level::Baseline),
            one(
                CAPABILITIES,
                "spec.containers[0].securityContext.capabilities.add"
            )
        );
    }

    #[test]
    fn capabilities_on_windows_pods() {
        // Windows pods skip the restricted part (drop ALL, NET_BIND_SERVICE only) but not baseline.
        let pod = pod_with(|p| {
            p["spec"]["os"] = json!({"name": "windows"});
            app_sc(p)["capabilities"] = json!({"add": ["CHOWN"]});
        });
        assert_clean(&pod);
        let pod = pod_with(|p| {
            p["spec"]["os"] = json!({"name": "windows"});
            app_sc(p)["capabilities"] = json!({"add": ["SYS_ADMIN"]});
        });
        let expected = one(
            CAPABILITIES,
            "spec.containers[0].securityContext.capabilities.add[0]",
        );
        assert_eq!(found(&pod, Level::Restricted), expected);
    }

    #[test]
    fn host_path_volumes() {
        let pod = pod_with(|p| {
            p["spec"]["volumes"] = json!([{"name": "tmp", "emptyDir": {}}, {"name": "data", "hostPath": {"path": "/var"}}]);
        });
        let expected = one(HOST_PATH_VOLUMES, "spec.volumes[1].hostPath");
        assert_eq!(found(&pod, Level::Baseline), expected);
        // Reported once under restricted too, as the baseline control.
        assert_eq!(found(&pod, Level::Restricted), expected);
        let violation = &run(&pod, Level::Restricted)[0];
        assert_eq!(violation.level, Level::Baseline);
        assert_eq!(violation.detail, r#"hostPath volume "data" is not allowed"#);
    }

    #[test]
    fn volume_types() {
        let pod = pod_with(|p| {
            p["spec"]["volumes"] = json!([
                {"name": "share", "nfs": {"server": "s", "path": "/"}},
                {"name": "repo", "gitRepo": {"repository": "r"}},
            ]);
        });
        assert_eq!(run(&pod, Level::Baseline), []);
        assert_eq!(
            found(&pod, Level::Restricted),
            [
                (VOLUME_TYPES, "spec.volumes[0].nfs".to_owned()),
                (VOLUME_TYPES, "spec.volumes[1].gitRepo".to_owned()),
            ]
        );
        assert_eq!(
            run(&pod, Level::Restricted)[0].detail,
            r#"volume "share" uses restricted volume type "nfs""#
        );

        let allowed = json!([
            {"name": "a", "configMap": {"name": "c"}},
            {"name": "b", "csi": {"driver": "d"}},
            {"name": "c", "downwardAPI": {"items": []}},
            {"name": "d", "emptyDir": {}},
            {"name": "e", "ephemeral": {"volumeClaimTemplate": {"spec": {}}}},
            {"name": "f", "persistentVolumeClaim": {"claimName": "p"}},
            {"name": "g", "projected": {"sources": []}},
            {"name": "h", "secret": {"secretName": "s"}},
            {"name": "i", "image": {"reference": "registry/x:1"}},
            {"name": "j"},
            {"name": "k", "secret": {"secretName": "s"}, "nfs": null},
        ]);
        assert_clean(&pod_with(|p| p["spec"]["volumes"] = allowed));
    }

    #[test]
    fn host_ports() {
        let pod = pod_with(|p| {
            p["spec"]["containers"][0]["ports"] =
                json!([{"containerPort": 80}, {"containerPort": 443, "hostPort": 443}]);
            p["spec"]["initContainers"][0]["ports"] =
                json!([{"containerPort": 1, "hostPort": "1"}]);
        });
        let expected = vec![
            (
                HOST_PORTS,
                "spec.initContainers[0].ports[0].hostPort".to_owned(),
            ),
            (
                HOST_PORTS,
                "spec.containers[0].ports[1].hostPort".to_owned(),
            ),
        ];
        assert_eq!(found(&pod, Level::Baseline), expected);
        assert_eq!(found(&pod, Level::Restricted), expected);
        assert_clean(&pod_with(|p| {
            p["spec"]["containers"][0]["ports"] = json!([{"containerPort": 80, "hostPort": 0}])
        }));
    }

    #[test]
    fn apparmor_annotations() {
        let key = "container.apparmor.security.beta.kubernetes.io/app";
        for bad in [json!("unconfined"), json!("docker-default"), json!(true)] {
            let pod = pod_with(|p| p["metadata"]["annotations"][key] = bad.clone());
            let expected = one(APPARMOR, &format!("metadata.annotations[{key}]"));
            assert_eq!(found(&pod, Level::Baseline), expected);
            assert_eq!(found(&pod, Level::Restricted), expected);
            assert_eq!(
                run(&pod, Level::Baseline)[0].container.as_deref(),
                Some("app")
            );
        }
        for good in ["runtime/default", "localhost/my-profile", ""] {
            assert_clean(&pod_with(|p| {
                p["metadata"]["annotations"][key] = json!(good)
            }));
        }
    }

    #[test]
    fn apparmor_profile_fields() {
        let pod = pod_with(|p| {
            p["spec"]["securityContext"]["appArmorProfile"] = json!({"type": "Unconfined"});
            p["spec"]["initContainers"][0]["securityContext"]["appArmorProfile"] =
                json!({"type": "Unconfined"});
        });
        let expected = vec![
            (
                APPARMOR,
                "spec.securityContext.appArmorProfile.type".to_owned(),
            ),
            (
                APPARMOR,
                "spec.initContainers[0].securityContext.appArmorProfile.type".to_owned(),
            ),
        ];
        assert_eq!(found(&pod, Level::Baseline), expected);
        assert_eq!(found(&pod, Level::Restricted), expected);
        // A container may tighten a bad pod default, but the pod-level value is still reported.
        let pod = pod_with(|p| {
            p["spec"]["securityContext"]["appArmorProfile"] = json!({"type": "Unconfined"});
            app_sc(p)["appArmorProfile"] = json!({"type": "RuntimeDefault"});
        });
        assert_eq!(
            found(&pod, Level::Baseline),
            one(APPARMOR, "spec.securityContext.appArmorProfile.type")
        );
        assert_clean(&pod_with(|p| {
            p["spec"]["securityContext"]["appArmorProfile"] = json!({"type": "RuntimeDefault"});
            app_sc(p)["appArmorProfile"] =
                json!({"type": "Localhost", "localhostProfile": "k8s-nginx"});
        }));
    }

    #[test]
    fn selinux() {
        let pod = pod_with(|p| {
            p["spec"]["securityContext"]["seLinuxOptions"] = json!({"type": "spc_t"});
            app_sc(p)["seLinuxOptions"] =
                json!({"user": "system_u", "role": "system_r", "level": "s0:c1"});
        });
        let expected = vec![
            (
                SELINUX,
                "spec.securityContext.seLinuxOptions.type".to_owned(),
            ),
            (
                SELINUX,
                "spec.containers[0].securityContext.seLinuxOptions.user".to_owned(),
            ),
            (
                SELINUX,
                "spec.containers[0].securityContext.seLinuxOptions.role".to_owned(),
            ),
        ];
        assert_eq!(found(&pod, Level::Baseline), expected);
        assert_eq!(found(&pod, Level::Restricted), expected);
        for good in [
            "container_t",
            "container_init_t",
            "container_kvm_t",
            "container_engine_t",
            "",
        ] {
            assert_clean(&pod_with(|p| {
                p["spec"]["securityContext"]["seLinuxOptions"] =
                    json!({"type": good, "level": "s0:c123,c456"});
                app_sc(p)["seLinuxOptions"] = json!({"type": good, "user": "", "role": null});
            }));
        }
    }

    #[test]
    fn proc_mount_type() {
        let pod = pod_with(|p| app_sc(p)["procMount"] = json!("Unmasked"));
        let expected = one(
            PROC_MOUNT_TYPE,
            "spec.containers[0].securityContext.procMount",
        );
        assert_eq!(found(&pod, Level::Baseline), expected);
        assert_eq!(found(&pod, Level::Restricted), expected);
        assert_clean(&pod_with(|p| app_sc(p)["procMount"] = json!("Default")));

        // User-namespaced pods may unmask /proc under baseline, never under restricted.
        let pod = pod_with(|p| {
            p["spec"]["hostUsers"] = json!(false);
            app_sc(p)["procMount"] = json!("Unmasked");
        });
        assert_eq!(run(&pod, Level::Baseline), []);
        let restricted = run(&pod, Level::Restricted);
        assert_eq!(restricted.len(), 1);
        assert_eq!(
            (restricted[0].check, restricted[0].level),
            (PROC_MOUNT_TYPE, Level::Restricted)
        );
    }

    #[test]
    fn seccomp_baseline() {
        let pod = pod_with(|p| {
            p["spec"]["securityContext"]["seccompProfile"] = json!({"type": "Unconfined"});
            app_sc(p)["seccompProfile"] = json!({"type": "Unconfined"});
        });
        let expected = vec![
            (
                SECCOMP,
                "spec.securityContext.seccompProfile.type".to_owned(),
            ),
            (
                SECCOMP,
                "spec.containers[0].securityContext.seccompProfile.type".to_owned(),
            ),
        ];
        assert_eq!(found(&pod, Level::Baseline), expected);
        // Under restricted the init container has no valid profile of its own or from the pod.
        let mut restricted = expected.clone();
        restricted.insert(
            1,
            (
                SECCOMP,
                "spec.initContainers[0].securityContext.seccompProfile.type".to_owned(),
            ),
        );
        assert_eq!(found(&pod, Level::Restricted), restricted);
        assert!(
            run(&pod, Level::Baseline)
                .iter()
                .all(|v| v.level == Level::Baseline)
        );
    }

    #[test]
    fn seccomp_restricted() {
        // Nothing anywhere: every container is reported under restricted only.
        let pod = pod_with(|p| {
            p["spec"]["securityContext"]
                .as_object_mut()
                .unwrap()
                .remove("seccompProfile");
        });
        assert_eq!(run(&pod, Level::Baseline), []);
        assert_eq!(
            found(&pod, Level::Restricted),
            [
                (
                    SECCOMP,
                    "spec.initContainers[0].securityContext.seccompProfile.type".to_owned()
                ),
                (
                    SECCOMP,
                    "spec.containers[0].securityContext.seccompProfile.type".to_owned()
                ),
            ]
        );
        // Container-level profiles suffice without a pod-level one.
        assert_clean(&pod_with(|p| {
            p["spec"]["securityContext"]
                .as_object_mut()
                .unwrap()
                .remove("seccompProfile");
            app_sc(p)["seccompProfile"] =
                json!({"type": "Localhost", "localhostProfile": "p.json"});
            p["spec"]["initContainers"][0]["securityContext"]["seccompProfile"] =
                json!({"type": "RuntimeDefault"});
        }));
        // Pod-level Localhost covers containers.
        assert_clean(&pod_with(|p| {
            p["spec"]["securityContext"]["seccompProfile"] =
                json!({"type": "Localhost", "localhostProfile": "p.json"});
        }));
        // A container overriding a good pod-level profile with Unconfined is caught.
        let pod = pod_with(|p| app_sc(p)["seccompProfile"] = json!({"type": "Unconfined"}));
        let expected = one(
            SECCOMP,
            "spec.containers[0].securityContext.seccompProfile.type",
        );
        assert_eq!(found(&pod, Level::Baseline), expected);
        assert_eq!(found(&pod, Level::Restricted), expected);
        // A profile without a type is not a valid setting.
        let pod = pod_with(|p| app_sc(p)["seccompProfile"] = json!({}));
        assert_eq!(found(&pod, Level::Restricted), expected);
        // Windows pods skip the restricted requirement.
        assert_clean(&pod_with(|p| {
            p["spec"]["os"] = json!({"name": "windows"});
            p["spec"]["securityContext"]
                .as_object_mut()
                .unwrap()
                .remove("seccompProfile");
        }));
    }

    #[test]
    fn sysctls() {
        let pod = pod_with(|p| {
            p["spec"]["securityContext"]["sysctls"] = json!([
                {"name": "net.ipv4.tcp_syncookies", "value": "1"},
                {"name": "net.core.somaxconn", "value": "1024"},
                {"value": "x"},
            ]);
        });
        let expected = vec![
            (SYSCTLS, "spec.securityContext.sysctls[1].name".to_owned()),
            (SYSCTLS, "spec.securityContext.sysctls[2].name".to_owned()),
        ];
        assert_eq!(found(&pod, Level::Baseline), expected);
        assert_eq!(found(&pod, Level::Restricted), expected);
        let safe: Vec<Value> = SAFE_SYSCTLS
            .iter()
            .map(|name| json!({"name": name, "value": "1"}))
            .collect();
        assert_clean(&pod_with(|p| {
            p["spec"]["securityContext"]["sysctls"] = Value::Array(safe)
        }));
        assert_clean(&pod_with(|p| {
            p["spec"]["securityContext"]["sysctls"] = json!([])
        }));
    }

    #[test]
    fn host_probes_and_lifecycle_hooks() {
        let pod = pod_with(|p| {
            let c = &mut p["spec"]["containers"][0];
            c["readinessProbe"] = json!({"tcpSocket": {"port": 1, "host": "10.0.0.1"}});
            c["lifecycle"] =
                json!({"preStop": {"httpGet": {"port": 1, "host": "metadata.google.internal"}}});
        });
        let expected = vec![
            (
                HOST_PROBES_LIFECYCLE,
                "spec.containers[0].readinessProbe.tcpSocket.host".to_owned(),
            ),
            (
                HOST_PROBES_LIFECYCLE,
                "spec.containers[0].lifecycle.preStop.httpGet.host".to_owned(),
            ),
        ];
        assert_eq!(found(&pod, Level::Baseline), expected);
        assert_eq!(found(&pod, Level::Restricted), expected);
        assert_clean(&pod_with(|p| {
            p["spec"]["containers"][0]["startupProbe"] =
                json!({"httpGet": {"port": 1, "host": ""}});
        }));
    }

    #[test]
    fn privilege_escalation() {
        for bad in [json!(true), Value::Null, json!("false")] {
            let pod = pod_with(|p| app_sc(p)["allowPrivilegeEscalation"] = bad.clone());
            assert_eq!(run(&pod, Level::Baseline), []);
            assert_eq!(
                found(&pod, Level::Restricted),
                one(
                    PRIVILEGE_ESCALATION,
                    "spec.containers[0].securityContext.allowPrivilegeEscalation"
                )
            );
        }
        let pod = pod_with(|p| {
            app_sc(p)
                .as_object_mut()
                .unwrap()
                .remove("allowPrivilegeEscalation");
        });
        assert_eq!(
            run(&pod, Level::Restricted)[0].detail,
            "must be false, not undefined"
        );
        // Linux-only control: Windows pods skip it.
        assert_clean(&pod_with(|p| {
            p["spec"]["os"] = json!({"name": "windows"});
            app_sc(p)["allowPrivilegeEscalation"] = json!(true);
        }));
    }

    #[test]
    fn running_as_non_root() {
        let field = "spec.containers[0].securityContext.runAsNonRoot";
        // Pod-level true, container unset: fine. Container false overrides it: violation.
        let pod = pod_with(|p| app_sc(p)["runAsNonRoot"] = json!(false));
        assert_eq!(run(&pod, Level::Baseline), []);
        assert_eq!(
            found(&pod, Level::Restricted),
            one(RUNNING_AS_NON_ROOT, field)
        );
        // Pod-level unset: each container must opt in.
        let unset = |p: &mut Value| {
            p["spec"]["securityContext"]
                .as_object_mut()
                .unwrap()
                .remove("runAsNonRoot");
        };
        let pod = pod_with(unset);
        assert_eq!(
            found(&pod, Level::Restricted),
            [
                (
                    RUNNING_AS_NON_ROOT,
                    "spec.initContainers[0].securityContext.runAsNonRoot".to_owned()
                ),
                (RUNNING_AS_NON_ROOT, field.to_owned()),
            ]
        );
        assert_clean(&pod_with(|p| {
            unset(p);
            app_sc(p)["runAsNonRoot"] = json!(true);
            p["spec"]["initContainers"][0]["securityContext"]["runAsNonRoot"] = json!(true);
        }));
        // Pod-level false is reported even when every container overrides it with true.
        let pod = pod_with(|p| {
            p["spec"]["securityContext"]["runAsNonRoot"] = json!(false);
            app_sc(p)["runAsNonRoot"] = json!(true);
            p["spec"]["initContainers"][0]["securityContext"]["runAsNonRoot"] = json!(true);
        });
        assert_eq!(
            found(&pod, Level::Restricted),
            one(RUNNING_AS_NON_ROOT, "spec.securityContext.runAsNonRoot")
        );
        // User-namespaced pods are exempt.
        assert_clean(&pod_with(|p| {
            p["spec"]["hostUsers"] = json!(false);
            p["spec"]["securityContext"]["runAsNonRoot"] = json!(false);
        }));
    }

    #[test]
    fn running_as_non_root_user() {
        // Container 0 overrides a good pod-level user.
        let pod = pod_with(|p| app_sc(p)["runAsUser"] = json!(0));
        assert_eq!(run(&pod, Level::Baseline), []);
        assert_eq!(
            found(&pod, Level::Restricted),
            one(
                RUNNING_AS_NON_ROOT_USER,
                "spec.containers[0].securityContext.runAsUser"
            )
        );
        // Pod-level 0 is reported even when containers override it.
        let pod = pod_with(|p| {
            p["spec"]["securityContext"]["runAsUser"] = json!(0);
            app_sc(p)["runAsUser"] = json!(1000);
        });
        assert_eq!(
            found(&pod, Level::Restricted),
            one(RUNNING_AS_NON_ROOT_USER, "spec.securityContext.runAsUser")
        );
        // Unset at container level when the pod level is fine, or unset everywhere: fine.
        assert_clean(&pod_with(|p| {
            p["spec"]["securityContext"]
                .as_object_mut()
                .unwrap()
                .remove("runAsUser");
        }));
        let pod = pod_with(|p| app_sc(p)["runAsUser"] = json!("0"));
        assert_eq!(run(&pod, Level::Restricted).len(), 1);
        assert_clean(&pod_with(|p| {
            p["spec"]["hostUsers"] = json!(false);
            app_sc(p)["runAsUser"] = json!(0);
        }));
    }

    #[test]
    fn ephemeral_containers_are_checked() {
        let pod = pod_with(|p| {
            p["spec"]["ephemeralContainers"] = json!([{"name": "debug", "image": "busybox", "securityContext": {"privileged": true}}]);
        });
        assert_eq!(
            found(&pod, Level::Baseline),
            one(
                PRIVILEGED_CONTAINERS,
                "spec.ephemeralContainers[0].securityContext.privileged"
            )
        );
        let restricted = run(&pod, Level::Restricted);
        assert!(
            restricted
                .iter()
                .all(|v| v.container.as_deref() == Some("debug"))
        );
        assert!(restricted.iter().any(|v| v.check == PRIVILEGE_ESCALATION));
    }

    #[test]
    fn field_paths_use_the_workload_prefix() {
        let mut pod = compliant_pod();
        pod["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = json!(true);
        pod["metadata"]["annotations"]["container.apparmor.security.beta.kubernetes.io/app"] =
            json!("unconfined");
        let template = json!({"metadata": pod["metadata"], "spec": pod["spec"]});
        let deployment =
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "spec": {"template": template}});
        let cronjob = json!({"apiVersion": "batch/v1", "kind": "CronJob", "spec": {"jobTemplate": {"spec": {"template": template}}}});
        assert_eq!(
            found(&deployment, Level::Restricted),
            [
                (APPARMOR, "spec.template.metadata.annotations[container.apparmor.security.beta.kubernetes.io/app]".to_owned()),
                (PRIVILEGE_ESCALATION, "spec.template.spec.containers[0].securityContext.allowPrivilegeEscalation".to_owned()),
            ]
        );
        assert_eq!(
            found(&cronjob, Level::Restricted),
            [
                (APPARMOR, "spec.jobTemplate.spec.template.metadata.annotations[container.apparmor.security.beta.kubernetes.io/app]".to_owned()),
                (PRIVILEGE_ESCALATION, "spec.jobTemplate.spec.template.spec.containers[0].securityContext.allowPrivilegeEscalation".to_owned()),
            ]
        );
    }

    #[test]
    fn violations_are_ordered_pod_level_first_then_containers_in_start_order() {
        let pod = pod_with(|p| {
            p["spec"]["ephemeralContainers"] =
                json!([{"name": "debug", "securityContext": secure_context()}]);
            p["spec"]["ephemeralContainers"][0]["securityContext"]["privileged"] = json!(true);
            app_sc(p)["privileged"] = json!(true);
            p["spec"]["initContainers"][0]["securityContext"]["privileged"] = json!(true);
            p["spec"]["hostPID"] = json!(true);
        });
        let fields: Vec<String> = run(&pod, Level::Baseline)
            .into_iter()
            .map(|v| v.field)
            .collect();
        assert_eq!(
            fields,
            [
                "spec.hostPID",
                "spec.initContainers[0].securityContext.privileged",
                "spec.containers[0].securityContext.privileged",
                "spec.ephemeralContainers[0].securityContext.privileged",
            ]
        );
    }

    #[test]
    fn display_is_one_line_with_the_container() {
        let pod = pod_with(|p| app_sc(p)["allowPrivilegeEscalation"] = json!(true));
        let violation = &run(&pod, Level::Restricted)[0];
        assert_eq!(
            violation.to_string(),
            r#"Privilege Escalation: spec.containers[0].securityContext.allowPrivilegeEscalation: must be false, not true (container "app")"#
        );
        let pod = pod_with(|p| p["spec"]["hostNetwork"] = json!(true));
        assert_eq!(
            run(&pod, Level::Baseline)[0].to_string(),
            "Host Namespaces: spec.hostNetwork: must be false or unset, not true"
        );
    }

    #[test]
    fn wrongly_typed_json_never_panics() {
        let weird = [
            json!({"apiVersion": "v1", "kind": "Pod", "spec": {"containers": "nope", "volumes": {}, "securityContext": []}}),
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"annotations": []}, "spec": {
                "containers": [1, null, {"securityContext": "x", "ports": [3, {"hostPort": null}]}],
                "securityContext": {"sysctls": {"a": 1}, "seLinuxOptions": 5, "seccompProfile": "RuntimeDefault"},
                "volumes": [7, {"name": 3, "hostPath": null}],
                "os": 1,
            }}),
            json!({"apiVersion": "v1", "kind": "Pod", "spec": {"containers": [{"name": "c", "lifecycle": [], "livenessProbe": {"httpGet": {"host": 9}},
                "securityContext": {"capabilities": {"add": [1, "ALL"], "drop": [null]}, "seLinuxOptions": {"type": 1, "user": 2}, "procMount": 0}}]}}),
        ];
        for object in &weird {
            for level in [Level::Baseline, Level::Restricted] {
                let _ = run(object, level);
            }
        }
        let last = found(&weird[2], Level::Baseline);
        assert!(last.contains(&(
            HOST_PROBES_LIFECYCLE,
            "spec.containers[0].livenessProbe.httpGet.host".to_owned()
        )));
        assert!(last.contains(&(
            CAPABILITIES,
            "spec.containers[0].securityContext.capabilities.add[0]".to_owned()
        )));
        assert!(last.contains(&(
            SELINUX,
            "spec.containers[0].securityContext.seLinuxOptions.type".to_owned()
        )));
        assert!(last.contains(&(
            PROC_MOUNT_TYPE,
            "spec.containers[0].securityContext.procMount".to_owned()
        )));
    }
}
