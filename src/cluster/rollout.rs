//! After a restart: did the new pods come up passing? The pods of the restarted template carry its
//! `restartedAt` annotation; when none exist, the controller's `FailedCreate` events (on the
//! Deployment's new ReplicaSet, or on the StatefulSet / DaemonSet itself) say why.

use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::errors::{ApiCall, ClusterError, call};
use super::reconcile::{RESTARTED_AT_ANNOTATION, WorkloadRef};
use crate::pss::{self, Level};

/// A workload this reconcile restarted, as the API server answered the patch.
#[derive(Debug, Clone)]
pub(crate) struct Restarted {
    pub workload: WorkloadRef,
    pub object: Value,
    /// The `restartedAt` value written, which the new pods carry.
    pub stamp: String,
    /// When the restart was written (seconds precision); the stamp may be a second later.
    pub at: OffsetDateTime,
}

/// What the new pods of a restart show so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Rollout {
    /// At least one new pod exists and every new pod passes restricted.
    Passing,
    /// A new pod fails restricted, or the controller could not create one.
    Failing(String),
    /// No new pod and no failure yet.
    Pending,
}

/// Why a restart produces no new pods by itself, if it does not.
pub(crate) fn no_new_pods_expected(object: &Value) -> Option<&'static str> {
    let spec = &object["spec"];
    if spec.pointer("/updateStrategy/type") == Some(&json!("OnDelete")) {
        Some("updateStrategy OnDelete: its pods are replaced only when deleted")
    } else if spec.get("replicas") == Some(&json!(0)) {
        Some("scaled to zero replicas")
    } else if spec.get("paused") == Some(&json!(true)) {
        Some("the Deployment's rollout is paused")
    } else {
        None
    }
}

fn core_api(
    client: &kube::Client,
    namespace: &str,
    kind: &str,
    plural: &str,
) -> Api<DynamicObject> {
    let resource =
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("", "v1", kind), plural);
    Api::namespaced_with(client.clone(), namespace, &resource)
}

/// Whether `owner` (an ownerReference or an event's involvedObject) is the workload or, for a
/// Deployment, one of its ReplicaSets (`<name>-<pod-template-hash>`).
fn owned_by(owner: &Value, workload: &WorkloadRef) -> bool {
    if owner["uid"].as_str() == Some(workload.uid.as_str()) {
        return true;
    }
    let kind = owner["kind"].as_str().unwrap_or_default();
    let name = owner["name"].as_str().unwrap_or_default();
    match workload.kind {
        "Deployment" => {
            kind == "ReplicaSet"
                && name
                    .strip_prefix(&format!("{}-", workload.name))
                    .is_some_and(|hash| !hash.is_empty() && !hash.contains('-'))
        }
        _ => kind == workload.kind && name == workload.name,
    }
}

/// Label selector string of `matchLabels` (the server filters; the owner check below decides).
fn label_selector(object: &Value) -> Option<String> {
    let labels = object.pointer("/spec/selector/matchLabels")?.as_object()?;
    let parts: Vec<String> = labels
        .iter()
        .filter_map(|(k, v)| v.as_str().map(|v| format!("{k}={v}")))
        .collect();
    (!parts.is_empty()).then(|| parts.join(","))
}

/// Looks at the new pods of `restart`, then at `FailedCreate` events when there are none.
pub(crate) async fn check(
    client: &kube::Client,
    restart: &Restarted,
) -> Result<Rollout, ClusterError> {
    let workload = &restart.workload;
    let namespace = &workload.namespace;
    let mut params = ListParams::default();
    if let Some(selector) = label_selector(&restart.object) {
        params = params.labels(&selector);
    }
    let pods = call(
        ApiCall::new("list", "", "pods").namespace(namespace),
        core_api(client, namespace, "Pod", "pods").list(&params),
    )
    .await?;
    let mut new_pods = 0;
    for pod in &pods.items {
        let annotations = pod.metadata.annotations.as_ref();
        let stamped =
            annotations.and_then(|a| a.get(RESTARTED_AT_ANNOTATION)) == Some(&restart.stamp);
        let owned = pod.metadata.owner_references.iter().flatten().any(|o| {
            owned_by(
                &json!({"uid": o.uid, "kind": o.kind, "name": o.name}),
                workload,
            )
        });
        if !stamped || !owned {
            continue;
        }
        new_pods += 1;
        let mut value = serde_json::to_value(pod)
            .map_err(|e| ClusterError::Other(format!("re-encoding a pod: {e}")))?;
        if let Some(object) = value.as_object_mut() {
            object.insert("apiVersion".into(), json!("v1"));
            object.insert("kind".into(), json!("Pod"));
        }
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        if let Some(failing) = new_pod_verdict(name, &value) {
            return Ok(failing);
        }
    }
    if new_pods > 0 {
        return Ok(Rollout::Passing);
    }
    let events = call(
        ApiCall::new("list", "", "events").namespace(namespace),
        core_api(client, namespace, "Event", "events")
            .list(&ListParams::default().fields("reason=FailedCreate")),
    )
    .await?;
    let failure = events
        .items
        .iter()
        .filter_map(|event| serde_json::to_value(event).ok())
        .filter(|event| event["reason"] == "FailedCreate")
        .filter(|event| owned_by(&event["involvedObject"], workload))
        .filter(|event| event_time(event).is_some_and(|t| t >= restart.at))
        .max_by_key(event_time)
        .map(|event| {
            event["message"]
                .as_str()
                .unwrap_or("FailedCreate")
                .to_owned()
        });
    Ok(match failure {
        Some(message) => {
            Rollout::Failing(format!("the controller cannot create its pods: {message}"))
        }
        None => Rollout::Pending,
    })
}

/// `Some(Failing)` when the new pod `name` fails restricted, or cannot be read at all: the check
/// after a restart must never pass a pod it could not read.
fn new_pod_verdict(name: &str, pod: &Value) -> Option<Rollout> {
    match pss::check_object(pod, Level::Restricted) {
        None => Some(Rollout::Failing(format!(
            "new pod {name} cannot be read by the Pod Security checker"
        ))),
        Some(violations) => violations.first().map(|first| {
            Rollout::Failing(format!(
                "new pod {name} fails restricted ({} violations; first: {first})",
                violations.len()
            ))
        }),
    }
}

fn event_time(event: &Value) -> Option<OffsetDateTime> {
    ["lastTimestamp", "eventTime", "firstTimestamp"]
        .iter()
        .filter_map(|key| event[*key].as_str())
        .find_map(|t| OffsetDateTime::parse(t, &Rfc3339).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment() -> WorkloadRef {
        WorkloadRef {
            api_version: "apps/v1",
            kind: "Deployment",
            namespace: "ns".into(),
            name: "agent".into(),
            uid: "u-1".into(),
        }
    }

    #[test]
    fn a_deployments_replica_sets_are_its_own_and_a_longer_names_are_not() {
        let d = deployment();
        assert!(owned_by(
            &json!({"kind": "ReplicaSet", "name": "agent-5d8f9c"}),
            &d
        ));
        assert!(!owned_by(
            &json!({"kind": "ReplicaSet", "name": "agent-x-5d8f9c"}),
            &d
        ));
        assert!(!owned_by(
            &json!({"kind": "ReplicaSet", "name": "agent-"}),
            &d
        ));
        assert!(owned_by(
            &json!({"kind": "Deployment", "name": "other", "uid": "u-1"}),
            &d
        ));
    }

    #[test]
    fn a_new_pod_that_cannot_be_read_fails() {
        let passing = json!({"apiVersion": "v1", "kind": "Pod", "spec": {
            "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "c", "image": "i", "securityContext": {
                "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}}]}});
        assert_eq!(new_pod_verdict("p", &passing), None);
        let unreadable = json!({"apiVersion": "v1", "kind": "Pod", "spec": "?"});
        assert_eq!(
            new_pod_verdict("p", &unreadable),
            Some(Rollout::Failing(
                "new pod p cannot be read by the Pod Security checker".into()
            ))
        );
        let failing = json!({"apiVersion": "v1", "kind": "Pod", "spec": {"containers": [{"name": "c", "image": "i"}]}});
        assert!(matches!(
            new_pod_verdict("p", &failing),
            Some(Rollout::Failing(_))
        ));
    }

    #[test]
    fn restarts_that_create_no_pods_are_recognised() {
        assert!(
            no_new_pods_expected(&json!({"spec": {"updateStrategy": {"type": "OnDelete"}}}))
                .is_some()
        );
        assert!(no_new_pods_expected(&json!({"spec": {"replicas": 0}})).is_some());
        assert!(no_new_pods_expected(&json!({"spec": {"replicas": 2}})).is_none());
    }
}
