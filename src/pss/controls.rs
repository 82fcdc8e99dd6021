//! The Pod Security Standards' controls and the values they allow, defined once for the checker
//! and the engine's rules alike (as upstream `k8s.io/pod-security-admission/policy` keeps one
//! check per control).

use std::fmt;

use serde_json::Value;

use super::Level;

/// One control of the Pod Security Standards, plus [`Control::Malformed`] for a field that no
/// control can be decided on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Control {
    HostProcess,
    HostNamespaces,
    PrivilegedContainers,
    Capabilities,
    HostPathVolumes,
    HostPorts,
    AppArmor,
    SELinux,
    ProcMountType,
    Seccomp,
    Sysctls,
    HostProbesLifecycle,
    VolumeTypes,
    PrivilegeEscalation,
    RunningAsNonRoot,
    RunningAsNonRootUser,
    /// Not a control of the standard: a field the controls read has the wrong JSON type (a
    /// container list that is an object), so the pod cannot be judged at any level. Upstream
    /// decodes the pod into typed structs first and rejects such an object before any check.
    Malformed,
}

impl Control {
    /// The control's name as the standard's page names it.
    pub fn name(self) -> &'static str {
        self.row().0
    }

    /// The lowest level that has this control. Capabilities and Seccomp have a stricter part at
    /// `Restricted` too; a [`super::Violation`] carries the level of the part it breaks.
    pub fn level(self) -> Level {
        self.row().1
    }

    fn row(self) -> (&'static str, Level) {
        use Level::{Baseline, Restricted};
        match self {
            Self::HostProcess => ("HostProcess", Baseline),
            Self::HostNamespaces => ("Host Namespaces", Baseline),
            Self::PrivilegedContainers => ("Privileged Containers", Baseline),
            Self::Capabilities => ("Capabilities", Baseline),
            Self::HostPathVolumes => ("HostPath Volumes", Baseline),
            Self::HostPorts => ("HostPorts", Baseline),
            Self::AppArmor => ("AppArmor", Baseline),
            Self::SELinux => ("SELinux", Baseline),
            Self::ProcMountType => ("/proc Mount Type", Baseline),
            Self::Seccomp => ("Seccomp", Baseline),
            Self::Sysctls => ("Sysctls", Baseline),
            Self::HostProbesLifecycle => ("Host Probes / Lifecycle Hooks", Baseline),
            Self::VolumeTypes => ("Volume Types", Restricted),
            Self::PrivilegeEscalation => ("Privilege Escalation", Restricted),
            Self::RunningAsNonRoot => ("Running as Non-root", Restricted),
            Self::RunningAsNonRootUser => ("Running as Non-root user", Restricted),
            Self::Malformed => ("Malformed", Baseline),
        }
    }
}

impl fmt::Display for Control {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Capabilities a baseline container may add (the container runtime's default set).
pub(crate) const BASELINE_CAPABILITIES: [&str; 13] = [
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

/// The one capability the restricted level lets a Linux container add.
pub(crate) const RESTRICTED_ADDABLE_CAPABILITY: &str = "NET_BIND_SERVICE";

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
pub(crate) const RESTRICTED_VOLUME_TYPES: [&str; 9] = [
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

/// SELinux types a pod or container may set.
pub(crate) const SELINUX_TYPES: [&str; 5] = [
    "",
    "container_t",
    "container_init_t",
    "container_kvm_t",
    "container_engine_t",
];

/// The deprecated per-container AppArmor annotations: the prefix, then the container's name.
pub(crate) const APPARMOR_ANNOTATION_PREFIX: &str =
    "container.apparmor.security.beta.kubernetes.io/";

/// Whether a sysctl name is in the safe set.
pub(crate) fn is_safe_sysctl(name: &str) -> bool {
    SAFE_SYSCTLS.contains(&name)
}

/// Whether a volume source (a volume's member other than `name`) is allowed under restricted.
pub(crate) fn is_restricted_volume_type(source: &str) -> bool {
    RESTRICTED_VOLUME_TYPES.contains(&source)
}

/// Whether an SELinux type is allowed.
pub(crate) fn is_allowed_selinux_type(selinux_type: &str) -> bool {
    SELINUX_TYPES.contains(&selinux_type)
}

/// `RuntimeDefault` or `Localhost`: the seccomp and AppArmor profile types allowed when a profile
/// object is set.
pub(crate) fn is_allowed_profile(profile: &Value) -> bool {
    matches!(
        profile.get("type").and_then(Value::as_str),
        Some("RuntimeDefault" | "Localhost")
    )
}

/// Whether an AppArmor annotation's value is allowed: empty, `runtime/default` or `localhost/*`.
pub(crate) fn is_allowed_apparmor_annotation(value: &Value) -> bool {
    value.as_str().is_some_and(|profile| {
        profile.is_empty() || profile == "runtime/default" || profile.starts_with("localhost/")
    })
}

/// Whether a pod spec's `os` member declares a Windows pod, which the Linux-only restricted
/// controls (Privilege Escalation, Seccomp, Capabilities) exempt.
pub(crate) fn is_windows(os: Option<&Value>) -> bool {
    os.and_then(|os| os.get("name")).and_then(Value::as_str) == Some("windows")
}
