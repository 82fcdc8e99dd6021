//! One-walk readers of the objects a pod is made of, and the JSON types their members must have.
//!
//! serde_json's `Map` is a BTreeMap, so every `get("key")` is a search that calls `memcmp` for
//! each key it passes, and the checker and the rules read a dozen members of the same few
//! objects. One pass over an object's members, matching each key against constant strings
//! (which compile to length checks and inline compares), costs about as much as one or two
//! `get`s. The checker and the engine's rules read through the same readers, so they agree on
//! what a pod spec holds and on which members must be lists or objects.

use std::fmt;

use serde_json::{Map, Value};

use crate::workload::CONTAINER_LISTS;

/// The members of a JSON object; none when the value is absent or not an object, just as
/// `Value::get` finds nothing there.
pub(crate) fn members(value: Option<&Value>) -> impl Iterator<Item = (&String, &Value)> {
    value
        .and_then(Value::as_object)
        .into_iter()
        .flat_map(Map::iter)
}

/// Declares a struct with an `Option<&Value>` per member and `of`, which fills them in one walk.
macro_rules! members_of {
    ($(#[$doc:meta])* $name:ident { $($field:ident: $key:literal,)* }) => {
        $(#[$doc])*
        #[derive(Default)]
        pub(crate) struct $name<'a> {
            $(pub(crate) $field: Option<&'a Value>,)*
        }

        impl<'a> $name<'a> {
            /// Reads the members; all absent when `object` is absent or not an object.
            pub(crate) fn of(object: Option<&'a Value>) -> Self {
                let mut fields = Self::default();
                for (key, value) in members(object) {
                    let slot = match key.as_str() {
                        $($key => &mut fields.$field,)*
                        _ => continue,
                    };
                    *slot = Some(value);
                }
                fields
            }
        }
    };
}

members_of! {
    /// The members of a pod spec that the pod-level controls and the rules read.
    PodSpecFields {
        os: "os",
        host_users: "hostUsers",
        host_network: "hostNetwork",
        host_pid: "hostPID",
        host_ipc: "hostIPC",
        volumes: "volumes",
        security_context: "securityContext",
        init_containers: "initContainers",
        containers: "containers",
        ephemeral_containers: "ephemeralContainers",
    }
}

members_of! {
    /// The members of a container that the per-container controls and the rules read.
    ContainerFields {
        security_context: "securityContext",
        ports: "ports",
        liveness_probe: "livenessProbe",
        readiness_probe: "readinessProbe",
        startup_probe: "startupProbe",
        lifecycle: "lifecycle",
        env: "env",
        volume_mounts: "volumeMounts",
    }
}

members_of! {
    /// The members of a pod's or a container's `securityContext` that any control or rule reads.
    /// The two kinds share most members; each reads only the ones that exist there (`sysctls`,
    /// `fsGroup` at pod level; `privileged`, `capabilities`, `procMount` and
    /// `allowPrivilegeEscalation` per container).
    SecurityContextFields {
        windows_options: "windowsOptions",
        privileged: "privileged",
        capabilities: "capabilities",
        app_armor_profile: "appArmorProfile",
        se_linux_options: "seLinuxOptions",
        proc_mount: "procMount",
        seccomp_profile: "seccompProfile",
        sysctls: "sysctls",
        allow_privilege_escalation: "allowPrivilegeEscalation",
        run_as_non_root: "runAsNonRoot",
        run_as_user: "runAsUser",
        run_as_group: "runAsGroup",
        fs_group: "fsGroup",
    }
}

impl<'a> PodSpecFields<'a> {
    /// The three container lists with their names, in the order the kubelet starts them.
    pub(crate) fn container_lists(&self) -> [(&'static str, Option<&'a Value>); 3] {
        let [init, regular, ephemeral] = CONTAINER_LISTS;
        [
            (init, self.init_containers),
            (regular, self.containers),
            (ephemeral, self.ephemeral_containers),
        ]
    }

    /// The members whose JSON type is wrong: a container list or `volumes` that is not a list, a
    /// `securityContext` that is not an object.
    pub(crate) fn mistyped(&self) -> impl Iterator<Item = Mistyped<'a>> + use<'a> {
        [
            Mistyped::check(self.init_containers, JsonType::Array, "initContainers"),
            Mistyped::check(self.containers, JsonType::Array, "containers"),
            Mistyped::check(
                self.ephemeral_containers,
                JsonType::Array,
                "ephemeralContainers",
            ),
            Mistyped::check(self.volumes, JsonType::Array, "volumes"),
            Mistyped::check(self.security_context, JsonType::Object, "securityContext"),
        ]
        .into_iter()
        .flatten()
    }
}

impl<'a> ContainerFields<'a> {
    /// The members whose JSON type is wrong, as [`PodSpecFields::mistyped`].
    pub(crate) fn mistyped(&self) -> impl Iterator<Item = Mistyped<'a>> + use<'a> {
        [
            Mistyped::check(self.security_context, JsonType::Object, "securityContext"),
            Mistyped::check(self.ports, JsonType::Array, "ports"),
            Mistyped::check(self.env, JsonType::Array, "env"),
            Mistyped::check(self.volume_mounts, JsonType::Array, "volumeMounts"),
        ]
        .into_iter()
        .flatten()
    }
}

/// A member present with the wrong JSON type (JSON `null` counts as absent, as for the API server).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Mistyped<'a> {
    /// The member's name, relative to the object it is in.
    pub member: &'static str,
    pub expected: JsonType,
    pub found: &'a Value,
}

impl<'a> Mistyped<'a> {
    /// `Some` when `value` is set and not of the `expected` type.
    pub(crate) fn check(
        value: Option<&'a Value>,
        expected: JsonType,
        member: &'static str,
    ) -> Option<Self> {
        let found = value?;
        (!found.is_null() && JsonType::of(found) != expected).then_some(Self {
            member,
            expected,
            found,
        })
    }

    /// The error for this member of the object at the dotted path `parent`.
    pub(crate) fn at(self, parent: impl fmt::Display) -> Malformed {
        Malformed {
            field: format!("{parent}.{}", self.member),
            expected: self.expected,
            found: JsonType::of(self.found),
        }
    }
}

/// The JSON types, named as messages name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonType {
    Null,
    Boolean,
    Number,
    String,
    Array,
    Object,
}

impl JsonType {
    pub fn of(value: &Value) -> Self {
        match value {
            Value::Null => Self::Null,
            Value::Bool(_) => Self::Boolean,
            Value::Number(_) => Self::Number,
            Value::String(_) => Self::String,
            Value::Array(_) => Self::Array,
            Value::Object(_) => Self::Object,
        }
    }
}

impl fmt::Display for JsonType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Null => "null",
            Self::Boolean => "a boolean",
            Self::Number => "a number",
            Self::String => "a string",
            Self::Array => "an array",
            Self::Object => "an object",
        })
    }
}

/// A field of a pod with the wrong JSON type, which neither the checker nor the rules can read:
/// `spec.template.spec.containers: expected an array, found an object`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: expected {expected}, found {found}")]
pub struct Malformed {
    /// Full dotted path in the object.
    pub field: String,
    pub expected: JsonType,
    pub found: JsonType,
}

impl Malformed {
    /// A list element (a container, a volume) that is not an object: `field` is its path.
    pub(crate) fn element(field: String, found: &Value) -> Self {
        Self {
            field,
            expected: JsonType::Object,
            found: JsonType::of(found),
        }
    }
}
