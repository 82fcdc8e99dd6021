//! Where a pod lives inside each pod-bearing kind.
//!
//! Everything that reads or writes a pod spec goes through [`PodTemplate::locate`], so the knowledge
//! "a CronJob keeps its pod at `spec.jobTemplate.spec.template`" exists exactly once.

use std::fmt;

use serde_json::Value;

/// The pod-bearing kinds restrictor understands, keyed by `apiVersion` group and `kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WorkloadKind {
    Pod,
    PodTemplate,
    ReplicationController,
    Deployment,
    ReplicaSet,
    StatefulSet,
    DaemonSet,
    Job,
    CronJob,
}

impl WorkloadKind {
    /// Classifies an object by its `apiVersion` and `kind`; `None` for anything that carries no pod.
    pub fn from_type(api_version: &str, kind: &str) -> Option<Self> {
        let group = api_version.rsplit_once('/').map_or("", |(group, _)| group);
        Self::from_group_kind(group, kind)
    }

    /// Classifies by API group (`""` for core) and kind, as an AdmissionReview's `request.kind` names them.
    pub fn from_group_kind(group: &str, kind: &str) -> Option<Self> {
        Some(match (group, kind) {
            ("", "Pod") => Self::Pod,
            ("", "PodTemplate") => Self::PodTemplate,
            ("", "ReplicationController") => Self::ReplicationController,
            ("apps" | "extensions", "Deployment") => Self::Deployment,
            ("apps" | "extensions", "ReplicaSet") => Self::ReplicaSet,
            ("apps", "StatefulSet") => Self::StatefulSet,
            ("apps" | "extensions", "DaemonSet") => Self::DaemonSet,
            ("batch", "Job") => Self::Job,
            ("batch", "CronJob") => Self::CronJob,
            _ => return None,
        })
    }

    /// JSON pointer of the object holding the pod's `metadata` and `spec`.
    pub fn template_pointer(self) -> &'static str {
        match self {
            Self::Pod => "",
            Self::PodTemplate => "/template",
            Self::ReplicationController
            | Self::Deployment
            | Self::ReplicaSet
            | Self::StatefulSet
            | Self::DaemonSet
            | Self::Job => "/spec/template",
            Self::CronJob => "/spec/jobTemplate/spec/template",
        }
    }

    /// The object holding the pod's `metadata` and `spec`, at [`Self::template_pointer`]: the
    /// object itself for a Pod. Plain member lookups, as this runs several times per review.
    pub fn holder(self, object: &Value) -> Option<&Value> {
        match self {
            Self::Pod => Some(object),
            Self::PodTemplate => object.get("template"),
            Self::CronJob => object
                .get("spec")?
                .get("jobTemplate")?
                .get("spec")?
                .get("template"),
            _ => object.get("spec")?.get("template"),
        }
    }

    /// [`Self::holder`], mutably.
    pub fn holder_mut(self, object: &mut Value) -> Option<&mut Value> {
        match self {
            Self::Pod => Some(object),
            Self::PodTemplate => object.get_mut("template"),
            Self::CronJob => object
                .get_mut("spec")?
                .get_mut("jobTemplate")?
                .get_mut("spec")?
                .get_mut("template"),
            _ => object.get_mut("spec")?.get_mut("template"),
        }
    }

    /// The same location in the dotted form error messages use (`spec.template.spec`).
    pub fn spec_path(self) -> &'static str {
        match self {
            Self::Pod => "spec",
            Self::PodTemplate => "template.spec",
            Self::CronJob => "spec.jobTemplate.spec.template.spec",
            _ => "spec.template.spec",
        }
    }

    /// The pod's `metadata` in the dotted form messages use (`spec.template.metadata`).
    pub fn metadata_path(self) -> &'static str {
        match self {
            Self::Pod => "metadata",
            Self::PodTemplate => "template.metadata",
            Self::CronJob => "spec.jobTemplate.spec.template.metadata",
            _ => "spec.template.metadata",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pod => "Pod",
            Self::PodTemplate => "PodTemplate",
            Self::ReplicationController => "ReplicationController",
            Self::Deployment => "Deployment",
            Self::ReplicaSet => "ReplicaSet",
            Self::StatefulSet => "StatefulSet",
            Self::DaemonSet => "DaemonSet",
            Self::Job => "Job",
            Self::CronJob => "CronJob",
        }
    }
}

/// Where each kind is served: what a client needs to list it. Kept beside [`WorkloadKind::from_type`]
/// so the kinds restrictor mutates and the kinds it lists are one table.
impl WorkloadKind {
    /// Every pod-bearing kind, owners before the objects they own (CronJob before Job, Deployment
    /// before ReplicaSet, every workload before Pod).
    pub const ALL: [WorkloadKind; 9] = [
        Self::CronJob,
        Self::Job,
        Self::Deployment,
        Self::ReplicaSet,
        Self::StatefulSet,
        Self::DaemonSet,
        Self::ReplicationController,
        Self::PodTemplate,
        Self::Pod,
    ];

    /// The API group the kind is served from today (`""` for core).
    pub fn group(self) -> &'static str {
        match self {
            Self::Pod | Self::PodTemplate | Self::ReplicationController => "",
            Self::Deployment | Self::ReplicaSet | Self::StatefulSet | Self::DaemonSet => "apps",
            Self::Job | Self::CronJob => "batch",
        }
    }

    /// `v1` for every kind: the served version of each group.
    pub fn version(self) -> &'static str {
        "v1"
    }

    /// `apiVersion` as objects of the kind carry it (`apps/v1`, `v1`).
    pub fn api_version(self) -> &'static str {
        match self.group() {
            "" => "v1",
            "apps" => "apps/v1",
            _ => "batch/v1",
        }
    }

    /// The plural resource name RBAC and URLs use (`deployments`).
    pub fn plural(self) -> &'static str {
        match self {
            Self::Pod => "pods",
            Self::PodTemplate => "podtemplates",
            Self::ReplicationController => "replicationcontrollers",
            Self::Deployment => "deployments",
            Self::ReplicaSet => "replicasets",
            Self::StatefulSet => "statefulsets",
            Self::DaemonSet => "daemonsets",
            Self::Job => "jobs",
            Self::CronJob => "cronjobs",
        }
    }
}

/// The three lists a pod keeps containers in, in the order the kubelet starts them.
pub const CONTAINER_LISTS: [&str; 3] = ["initContainers", "containers", "ephemeralContainers"];

/// A located pod template: borrowed views of its metadata and spec plus where they sit.
#[derive(Debug, Clone, Copy)]
pub struct PodTemplate<'a> {
    pub kind: WorkloadKind,
    /// `metadata` of the pod (the template's metadata for workloads); absent in some templates.
    pub metadata: Option<&'a Value>,
    pub spec: &'a Value,
}

impl<'a> PodTemplate<'a> {
    /// Finds the pod template in `object`; `None` for other kinds or when the template has no `spec` object.
    pub fn locate(object: &'a Value) -> Option<Self> {
        let api_version = object.get("apiVersion")?.as_str()?;
        let kind = object.get("kind")?.as_str()?;
        let kind = WorkloadKind::from_type(api_version, kind)?;
        Self::locate_as(object, kind)
    }

    /// Finds the pod template of an object whose kind the caller already knows (from an AdmissionReview).
    pub fn locate_as(object: &'a Value, kind: WorkloadKind) -> Option<Self> {
        Self::from_holder(kind.holder(object)?, kind)
    }

    /// The template from the object that holds its `metadata` and `spec` (the object itself for a
    /// Pod, `spec.template` for a Deployment).
    pub fn from_holder(holder: &'a Value, kind: WorkloadKind) -> Option<Self> {
        let spec = holder.get("spec").filter(|spec| spec.is_object())?;
        Some(Self {
            kind,
            metadata: holder.get("metadata").filter(|m| m.is_object()),
            spec,
        })
    }

    /// Labels of the pod (the template's labels for workloads).
    pub fn labels(&self) -> Option<&'a serde_json::Map<String, Value>> {
        self.metadata?.get("labels")?.as_object()
    }

    /// Every container in every list, with the list name and index the patch paths need.
    pub fn containers(&self) -> impl Iterator<Item = ContainerRef<'a>> + 'a {
        containers(self.spec)
    }
}

/// Every container of a pod spec, in every list, with the list name and index patch paths need.
pub fn containers(spec: &Value) -> impl Iterator<Item = ContainerRef<'_>> {
    CONTAINER_LISTS.into_iter().flat_map(move |list| {
        spec.get(list)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
            .map(move |(index, container)| ContainerRef {
                list,
                index,
                container,
            })
    })
}

/// One container of a pod, with where it sits.
#[derive(Debug, Clone, Copy)]
pub struct ContainerRef<'a> {
    /// `initContainers`, `containers` or `ephemeralContainers`.
    pub list: &'static str,
    pub index: usize,
    pub container: &'a Value,
}

impl<'a> ContainerRef<'a> {
    pub fn name(&self) -> &'a str {
        self.container
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
    }

    pub fn image(&self) -> &'a str {
        self.container
            .get("image")
            .and_then(Value::as_str)
            .unwrap_or("")
    }

    /// Where the container sits.
    pub fn at(&self) -> ContainerAt {
        ContainerAt {
            list: self.list,
            index: self.index,
        }
    }
}

/// Where a container sits in a pod spec: its list and its index there. Displayed as in messages,
/// `containers[0]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContainerAt {
    /// `initContainers`, `containers` or `ephemeralContainers`.
    pub list: &'static str,
    pub index: usize,
}

impl ContainerAt {
    /// Pointer relative to the template holder: `/spec/containers/0`.
    pub fn pointer(self) -> String {
        format!("/spec/{}/{}", self.list, self.index)
    }

    /// Dotted path for messages below the pod spec at `spec_path`:
    /// `spec.template.spec.containers[0]`.
    pub fn field(self, spec_path: &str) -> String {
        format!("{spec_path}.{self}")
    }
}

impl fmt::Display for ContainerAt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}[{}]", self.list, self.index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn locates_the_template_of_every_pod_bearing_kind() {
        let template =
            json!({"metadata": {"labels": {"app": "x"}}, "spec": {"containers": [{"name": "c"}]}});
        let templated = |api_version: &str, kind: &str| json!({"apiVersion": api_version, "kind": kind, "spec": {"template": template}});
        let cases = [
            (
                json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"labels": {"app": "x"}}, "spec": template["spec"]}),
                WorkloadKind::Pod,
            ),
            (
                json!({"apiVersion": "v1", "kind": "PodTemplate", "template": template}),
                WorkloadKind::PodTemplate,
            ),
            (
                templated("v1", "ReplicationController"),
                WorkloadKind::ReplicationController,
            ),
            (templated("apps/v1", "Deployment"), WorkloadKind::Deployment),
            (templated("apps/v1", "ReplicaSet"), WorkloadKind::ReplicaSet),
            (
                templated("apps/v1", "StatefulSet"),
                WorkloadKind::StatefulSet,
            ),
            (templated("apps/v1", "DaemonSet"), WorkloadKind::DaemonSet),
            (templated("batch/v1", "Job"), WorkloadKind::Job),
            (
                json!({"apiVersion": "batch/v1", "kind": "CronJob", "spec": {"jobTemplate": {"spec": {"template": template}}}}),
                WorkloadKind::CronJob,
            ),
        ];
        for (object, kind) in cases {
            let pod = PodTemplate::locate(&object)
                .unwrap_or_else(|| panic!("{kind:?}: no template found"));
            assert_eq!(pod.kind, kind);
            assert_eq!(
                pod.labels().and_then(|l| l.get("app")),
                Some(&json!("x")),
                "{kind:?}"
            );
            assert_eq!(
                pod.containers().map(|c| c.name()).collect::<Vec<_>>(),
                ["c"],
                "{kind:?}"
            );
            assert_eq!(
                object.pointer(&format!("{}/spec", kind.template_pointer())),
                Some(pod.spec),
                "{kind:?}"
            );
            assert_eq!(
                kind.holder(&object),
                object.pointer(kind.template_pointer()),
                "{kind:?}"
            );
        }
    }

    #[test]
    fn every_kind_is_listed_once_and_classifies_back_from_its_api_version() {
        for kind in WorkloadKind::ALL {
            assert_eq!(
                WorkloadKind::from_type(kind.api_version(), kind.as_str()),
                Some(kind)
            );
            assert_eq!(
                WorkloadKind::from_group_kind(kind.group(), kind.as_str()),
                Some(kind)
            );
            assert!(kind.plural().ends_with('s'));
        }
        let mut plurals: Vec<_> = WorkloadKind::ALL.iter().map(|k| k.plural()).collect();
        plurals.sort();
        plurals.dedup();
        assert_eq!(plurals.len(), WorkloadKind::ALL.len());
    }

    #[test]
    fn other_kinds_and_groups_carry_no_pod() {
        for object in [
            json!({"apiVersion": "v1", "kind": "Service", "spec": {"template": {"spec": {}}}}),
            json!({"apiVersion": "example.com/v1", "kind": "Deployment", "spec": {"template": {"spec": {}}}}),
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "spec": {"template": {"spec": "not an object"}}}),
            json!({"kind": "Pod", "spec": {}}),
        ] {
            assert!(PodTemplate::locate(&object).is_none(), "{object}");
        }
    }

    #[test]
    fn containers_are_listed_in_start_order_with_their_paths() {
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "spec": {
            "ephemeralContainers": [{"name": "debug"}],
            "containers": [{"name": "a"}, {"name": "b"}],
            "initContainers": [{"name": "init"}],
        }});
        let template = PodTemplate::locate(&pod).expect("pod");
        let paths: Vec<_> = template
            .containers()
            .map(|c| (c.at().to_string(), c.name()))
            .collect();
        assert_eq!(
            paths,
            [
                ("initContainers[0]".to_owned(), "init"),
                ("containers[0]".to_owned(), "a"),
                ("containers[1]".to_owned(), "b"),
                ("ephemeralContainers[0]".to_owned(), "debug"),
            ]
        );
    }
}
