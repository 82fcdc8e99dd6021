//! Reconcile of workloads created before restrictor: restart the non-compliant ones the way
//! `kubectl rollout restart` does, so the UPDATE passes through the webhook; report what cannot be
//! restarted (Jobs, bare Pods).

use std::sync::Arc;

use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::sync::watch;
use tracing::{error, info, warn};

use super::errors::{ApiCall, ClusterError, call};
use super::lease::{LeaderElector, LeaseConfig};

/// The annotation `kubectl rollout restart` sets on the pod template.
pub const RESTARTED_AT_ANNOTATION: &str = "kubectl.kubernetes.io/restartedAt";

/// Configuration of the reconcile.
#[derive(Debug, Clone, Default)]
pub struct ReconcileConfig {
    /// Namespaces to reconcile (those the policy's rules match).
    pub namespaces: Vec<String>,
}

/// One workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadRef {
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for WorkloadRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

/// What the reconcile did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Non-compliant Deployments, StatefulSets and DaemonSets given a rollout restart.
    pub restarted: Vec<WorkloadRef>,
    /// Non-compliant Jobs and bare Pods: reported, not touched.
    pub reported: Vec<WorkloadRef>,
    /// Objects left alone: compliant, being deleted, or Pods owned by a controller.
    pub skipped: usize,
    /// Restarts that failed (the object vanished or changed); the reconcile went on.
    pub failed: Vec<(WorkloadRef, String)>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Action {
    Restart,
    Report,
}

struct Kind {
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    action: Action,
}

const KINDS: [Kind; 5] = [
    Kind {
        group: "apps",
        version: "v1",
        kind: "Deployment",
        plural: "deployments",
        action: Action::Restart,
    },
    Kind {
        group: "apps",
        version: "v1",
        kind: "StatefulSet",
        plural: "statefulsets",
        action: Action::Restart,
    },
    Kind {
        group: "apps",
        version: "v1",
        kind: "DaemonSet",
        plural: "daemonsets",
        action: Action::Restart,
    },
    Kind {
        group: "batch",
        version: "v1",
        kind: "Job",
        plural: "jobs",
        action: Action::Report,
    },
    Kind {
        group: "",
        version: "v1",
        kind: "Pod",
        plural: "pods",
        action: Action::Report,
    },
];

impl Kind {
    fn api_resource(&self) -> ApiResource {
        ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(self.group, self.version, self.kind),
            self.plural,
        )
    }
    fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
}

/// The RFC 3339 timestamp `kubectl rollout restart` writes (seconds precision).
pub fn restarted_at_value(now: OffsetDateTime) -> String {
    now.replace_nanosecond(0)
        .unwrap_or(now)
        .format(&Rfc3339)
        .unwrap_or_default()
}

/// Lists all objects of `kind` in `namespace` (paginated), each as JSON with `apiVersion`/`kind`
/// filled in (list items omit them) so the predicate can classify it.
async fn list_all(
    client: &kube::Client,
    kind: &Kind,
    namespace: &str,
) -> Result<Vec<(DynamicObject, Value)>, ClusterError> {
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), namespace, &kind.api_resource());
    let mut out = Vec::new();
    let mut params = ListParams::default().limit(500);
    loop {
        let list = call(
            ApiCall::new("list", kind.group, kind.plural).namespace(namespace),
            api.list(&params),
        )
        .await?;
        let token = list.metadata.continue_.clone().filter(|t| !t.is_empty());
        for item in list.items {
            let mut value = serde_json::to_value(&item)
                .map_err(|e| ClusterError::Other(format!("re-encoding a {}: {e}", kind.kind)))?;
            if let Some(obj) = value.as_object_mut() {
                obj.insert("apiVersion".into(), Value::String(kind.api_version()));
                obj.insert("kind".into(), Value::String(kind.kind.into()));
            }
            out.push((item, value));
        }
        match token {
            Some(t) => params = params.continue_token(&t),
            None => return Ok(out),
        }
    }
}

/// Reconciles the workloads of `config.namespaces` once. `non_compliant(object)` says whether an
/// object's pod template fails the policy (main passes the PSS "restricted" checker). Deployments,
/// StatefulSets and DaemonSets it flags get the template annotation
/// `kubectl.kubernetes.io/restartedAt: <now>` (strategic merge patch of only that annotation);
/// flagged Jobs and Pods without ownerReferences are logged and counted, never touched.
///
/// A 403 stops the reconcile with [`ClusterError::Forbidden`]; other failures to patch one workload
/// are recorded in [`ReconcileReport::failed`] and the reconcile goes on.
pub async fn reconcile_existing<F>(
    client: &kube::Client,
    config: &ReconcileConfig,
    non_compliant: F,
    now: OffsetDateTime,
) -> Result<ReconcileReport, ClusterError>
where
    F: Fn(&Value) -> bool,
{
    let mut report = ReconcileReport::default();
    let stamp = restarted_at_value(now);
    for namespace in &config.namespaces {
        for kind in &KINDS {
            for (object, value) in list_all(client, kind, namespace).await? {
                let name = object.metadata.name.clone().unwrap_or_default();
                let workload = WorkloadRef {
                    kind: kind.kind,
                    namespace: namespace.clone(),
                    name: name.clone(),
                };
                let owned = object
                    .metadata
                    .owner_references
                    .as_ref()
                    .is_some_and(|o| !o.is_empty());
                let deleting = object.metadata.deletion_timestamp.is_some();
                if deleting || (kind.kind == "Pod" && owned) || !non_compliant(&value) {
                    report.skipped += 1;
                    continue;
                }
                match kind.action {
                    Action::Report => {
                        warn!(workload = %workload, "non-compliant {} created before restrictor; not restartable, recreate it to pass the policy", kind.kind);
                        report.reported.push(workload);
                    }
                    Action::Restart => {
                        let api: Api<DynamicObject> =
                            Api::namespaced_with(client.clone(), namespace, &kind.api_resource());
                        let patch = json!({"spec": {"template": {"metadata": {"annotations": {
                            RESTARTED_AT_ANNOTATION: stamp,
                        }}}}});
                        let params = PatchParams {
                            field_manager: Some("restrictor".into()),
                            ..Default::default()
                        };
                        let result = call(
                            ApiCall::new("patch", kind.group, kind.plural)
                                .name(&name)
                                .namespace(namespace),
                            api.patch(&name, &params, &Patch::Strategic(patch)),
                        )
                        .await;
                        match result {
                            Ok(_) => {
                                info!(workload = %workload, restarted_at = %stamp, "non-compliant workload restarted so its pods pass the webhook");
                                if value.pointer("/spec/updateStrategy/type")
                                    == Some(&Value::String("OnDelete".into()))
                                {
                                    warn!(workload = %workload, "updateStrategy OnDelete: its pods are replaced only when deleted");
                                }
                                report.restarted.push(workload);
                            }
                            Err(e @ ClusterError::Forbidden { .. }) => return Err(e),
                            Err(e) => {
                                warn!(workload = %workload, error = %e, "could not restart");
                                report.failed.push((workload, e.to_string()));
                            }
                        }
                    }
                }
            }
        }
    }
    info!(
        restarted = report.restarted.len(),
        reported = report.reported.len(),
        skipped = report.skipped,
        failed = report.failed.len(),
        "reconcile of existing workloads done"
    );
    Ok(report)
}

/// Waits until `ready` is true (the caBundle is injected, so restarted pods pass the webhook),
/// takes the Lease (waiting while another replica holds it), reconciles once, and releases it.
/// The lease is renewed while the reconcile runs. A later run by another replica is harmless: the
/// UPDATE made templates compliant, so nothing is restarted twice.
///
/// Returns `Ok(None)` when `ready`'s sender is dropped before becoming true.
pub async fn reconcile_as_leader<F>(
    client: kube::Client,
    lease: LeaseConfig,
    config: ReconcileConfig,
    non_compliant: F,
    mut ready: watch::Receiver<bool>,
) -> Result<Option<ReconcileReport>, ClusterError>
where
    F: Fn(&Value) -> bool + Send + Sync,
{
    if ready.wait_for(|r| *r).await.is_err() {
        return Ok(None);
    }
    let retry = lease.retry_period;
    let renew_every = std::time::Duration::from_secs(
        u64::try_from(lease.lease_duration.whole_seconds() / 3)
            .unwrap_or(5)
            .max(1),
    );
    let elector = Arc::new(LeaderElector::new(client.clone(), lease));
    while !elector.try_acquire().await? {
        tokio::time::sleep(retry).await;
    }
    let renewer = {
        let elector = elector.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(renew_every).await;
                match elector.try_acquire().await {
                    Ok(true) => {}
                    Ok(false) => warn!("lost the reconcile lease while reconciling"),
                    Err(e) => error!(error = %e, "cannot renew the reconcile lease"),
                }
            }
        })
    };
    let result =
        reconcile_existing(&client, &config, non_compliant, OffsetDateTime::now_utc()).await;
    renewer.abort();
    if let Err(e) = elector.release().await {
        warn!(error = %e, "cannot release the reconcile lease (it expires by itself)");
    }
    result.map(Some)
}
