//! The admission probe: before restarting anything in a namespace, confirm through the API server
//! that it really sends that namespace's pods to restrictor. The API server picks up a webhook
//! configuration (and its injected `caBundle`) asynchronously, so "restrictor is ready" does not
//! mean "the API server calls restrictor"; a pod restarted in between is created unmutated.
//!
//! The probe is a server-side dry run (`dryRun=All`) of a pod create: admission runs in full,
//! webhooks included (the chart's webhooks declare `sideEffects: None`), and nothing is stored. The
//! probe carries the pod labels and images of a workload about to be restarted, in its namespace,
//! so the webhook configuration (namespaceSelector, objectSelector, matchConditions on the
//! namespace) routes it as it routes that workload's pods, and the policy picks the same profile.
//! It sets no securityContext, so restrictor always has something to change, and the answer
//! counts as mutated only when it carries every change restrictor's engine makes to the same pod
//! and restrictor's echo of the probe's random nonce: another mutating webhook writing the same
//! securityContext must not pass for restrictor (the nonce lives in the object, so the echo
//! proves it whichever replica answered the review).

use std::time::Duration;

use kube::api::{Api, DynamicObject, PostParams};
use serde_json::{Value, json};
use tracing::{info, warn};

use super::errors::{ApiCall, ClusterError, call};
use super::inventory;
use super::reconcile::ReconcileEvent;
use crate::engine::{self, Context};
use crate::patch::Op;
use crate::policy::Policy;
use crate::pss::{self, Level};
use crate::workload::{PodTemplate, WorkloadKind};

/// Label that marks a probe pod; its value is the probe's nonce (the annotation of the same key
/// says what the pod is for).
pub const PROBE_LABEL: &str = crate::admission::PROBE_LABEL;
/// The annotation in which restrictor's answer echoes the nonce.
pub const PROBE_SEEN_ANNOTATION: &str = crate::admission::PROBE_SEEN_ANNOTATION;
/// `generateName` of probe pods: `restrictor-probe-xxxxx` in audit logs and other webhooks' logs.
pub const PROBE_NAME_PREFIX: &str = "restrictor-probe-";
/// Image of a probe whose template names none; never pulled (the pod is never stored).
const FALLBACK_IMAGE: &str = "registry.k8s.io/pause:3.10";

/// A fresh random nonce: 32 hex digits, a valid label value. Random rather than a counter so that
/// no other webhook can guess the echo; should the system's randomness fail, the time still makes
/// it unique to this probe, which is all the check needs.
pub(crate) fn nonce() -> String {
    let mut bytes = [0u8; 16];
    if rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut bytes)
        .is_err()
    {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        bytes = (nanos ^ u128::from(std::process::id())).to_le_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The probe pod standing in for `pod` (a workload's pod template as a Pod) in `namespace`,
/// labelled with `nonce`.
pub(crate) fn probe_pod(namespace: &str, pod: &Value, nonce: &str) -> Value {
    let template = PodTemplate::from_holder(pod, WorkloadKind::Pod);
    let mut labels = template
        .and_then(|t| t.labels())
        .cloned()
        .unwrap_or_default();
    labels.insert(PROBE_LABEL.into(), json!(nonce));
    let mut images: Vec<&str> = template
        .map(|t| t.containers().map(|c| c.image()).collect())
        .unwrap_or_default();
    images.retain(|image| !image.is_empty());
    images.dedup();
    if images.is_empty() {
        images.push(FALLBACK_IMAGE);
    }
    let containers: Vec<Value> = images
        .iter()
        .enumerate()
        .map(|(index, image)| json!({"name": format!("probe-{index}"), "image": image}))
        .collect();
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": PROBE_NAME_PREFIX,
            "namespace": namespace,
            "labels": Value::Object(labels),
            "annotations": {PROBE_LABEL: "server-side dry run by restrictor's reconciler: does the API server send this namespace's pods to restrictor? Never stored."},
        },
        "spec": {"containers": containers},
    })
}

/// The changes restrictor makes to `probe` under `policy`, or why the probe cannot show them.
pub(crate) fn expected_changes(
    policy: &Policy,
    namespace: &str,
    probe: &Value,
) -> Result<Vec<Op>, String> {
    let mut copy = probe.clone();
    let evaluation = engine::evaluate(
        policy,
        &mut copy,
        WorkloadKind::Pod,
        namespace,
        Context::CREATE,
    )
    .ok_or("the policy gives the probe pod no profile")?;
    if let Some(denial) = evaluation.outcome.denial {
        return Err(format!("restrictor would deny the probe pod: {denial}"));
    }
    if evaluation.outcome.patch.is_empty() {
        return Err("restrictor would not change the probe pod".into());
    }
    Ok(evaluation.outcome.patch)
}

/// Whether `answer` (the API server's dry-run result) carries restrictor's echo of `nonce` and
/// every change in `expected`, and passes restricted; `Err` says what is missing.
pub(crate) fn came_back_mutated(
    answer: &Value,
    expected: &[Op],
    nonce: &str,
) -> Result<(), String> {
    let missing: Vec<&str> = expected
        .iter()
        .filter(|op| !reflected(answer, op))
        .map(Op::path)
        .collect();
    let echoed = answer
        .get("metadata")
        .and_then(|m| m.get("annotations"))
        .and_then(|a| a.get(PROBE_SEEN_ANNOTATION))
        .and_then(Value::as_str)
        == Some(nonce);
    if missing.len() == expected.len() && !echoed {
        return Err("probe pod came back unmutated".into());
    }
    if !echoed {
        return Err(format!(
            "probe pod came back mutated, but without restrictor's {PROBE_SEEN_ANNOTATION} echo: another webhook changed it, restrictor did not see its review"
        ));
    }
    if let Some(path) = missing.first() {
        return Err(format!(
            "probe pod came back without restrictor's change at {path}"
        ));
    }
    let mut pod = answer.clone();
    if let Some(object) = pod.as_object_mut() {
        object.insert("apiVersion".into(), json!("v1"));
        object.insert("kind".into(), json!("Pod"));
    }
    passes_restricted(&pod)
}

/// Whether the answered probe passes restricted. An answer the checker cannot read (`None`: no
/// pod spec in it) must not pass for a mutated one.
fn passes_restricted(pod: &Value) -> Result<(), String> {
    match pss::check_object(pod, Level::Restricted).as_deref() {
        None => Err("probe pod came back in a shape the Pod Security checker cannot read".into()),
        Some([violation, ..]) => Err(format!(
            "probe pod came back mutated but still fails restricted: {violation}"
        )),
        Some([]) => Ok(()),
    }
}

/// Whether the API server's answer shows `op`. Values are compared as "at least": the API server
/// adds defaults beside what restrictor set.
fn reflected(answer: &Value, op: &Op) -> bool {
    match op {
        Op::Add { path, value } | Op::Replace { path, value } => {
            let Ok(value) = serde_json::from_str::<Value>(value.as_str()) else {
                return false;
            };
            match path.strip_suffix("/-") {
                Some(array) => answer
                    .pointer(array)
                    .and_then(Value::as_array)
                    .is_some_and(|items| items.iter().any(|item| contains(item, &value))),
                None => answer
                    .pointer(path)
                    .is_some_and(|have| contains(have, &value)),
            }
        }
        Op::Remove { path } => answer.pointer(path).is_none(),
    }
}

/// Whether `have` is `want` or more: objects may have more members, arrays more elements (a later
/// change of restrictor's may append to an array an earlier one added, such as volumes).
fn contains(have: &Value, want: &Value) -> bool {
    match (have, want) {
        (Value::Object(have), Value::Object(want)) => want
            .iter()
            .all(|(key, w)| have.get(key).is_some_and(|h| contains(h, w))),
        (Value::Array(have), Value::Array(want)) => {
            want.iter().all(|w| have.iter().any(|h| contains(h, w)))
        }
        _ => have == want,
    }
}

/// One dry-run create of `probe`; `Ok(Err(reason))` when admission did not come back mutated.
/// Only an RBAC 403 is an error: everything else, including the 403 of an admission plugin
/// (PodSecurity refusing the unmutated probe, a quota, a ValidatingAdmissionPolicy, a webhook), is
/// worth waiting out.
async fn probe_once(
    client: &kube::Client,
    namespace: &str,
    probe: &Value,
    expected: &[Op],
    nonce: &str,
) -> Result<Result<(), String>, ClusterError> {
    let resource = inventory::api_resource(WorkloadKind::Pod);
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &resource);
    let object: DynamicObject = serde_json::from_value(probe.clone())
        .map_err(|e| ClusterError::Other(format!("building the probe pod: {e}")))?;
    let params = PostParams {
        dry_run: true,
        field_manager: Some("restrictor".into()),
    };
    let answer = call(
        ApiCall::new("create", "", "pods").namespace(namespace),
        api.create(&params, &object),
    )
    .await;
    match answer {
        Ok(created) => {
            let answer = serde_json::to_value(&created)
                .map_err(|e| ClusterError::Other(format!("re-encoding the probe answer: {e}")))?;
            Ok(came_back_mutated(&answer, expected, nonce))
        }
        Err(e) if e.is_rbac() => Err(e),
        Err(e) if e.is_admission_denial() => Ok(Err(format!("probe pod denied: {e}"))),
        Err(e) => Ok(Err(format!("probe pod not admitted: {e}"))),
    }
}

/// Probes `namespace` until the answer comes back mutated, waiting `delays` in turn between
/// attempts; `Ok(Err(reason))` once they run out.
pub(crate) async fn wait_until_mutated(
    client: &kube::Client,
    policy: &Policy,
    namespace: &str,
    template_pod: &Value,
    delays: impl Iterator<Item = Duration>,
    observer: &(dyn Fn(&ReconcileEvent<'_>) + Send + Sync),
) -> Result<Result<(), String>, ClusterError> {
    let nonce = nonce();
    let probe = probe_pod(namespace, template_pod, &nonce);
    let expected = match expected_changes(policy, namespace, &probe) {
        Ok(expected) => expected,
        Err(reason) => return Ok(Err(reason)),
    };
    let mut delays = delays;
    let mut attempt = 1u32;
    loop {
        let reason = match probe_once(client, namespace, &probe, &expected, &nonce).await? {
            Ok(()) => {
                info!(%namespace, attempt, "the API server calls restrictor in namespace {namespace}: probe pod came back mutated");
                return Ok(Ok(()));
            }
            Err(reason) => reason,
        };
        let Some(delay) = delays.next() else {
            warn!(%namespace, attempt, %reason, "gave up waiting for the API server to call restrictor in namespace {namespace}: {reason} (attempt {attempt}); nothing restarted there");
            return Ok(Err(reason));
        };
        warn!(%namespace, attempt, %reason, "waiting for the API server to call restrictor in namespace {namespace}: {reason} (attempt {attempt}, next in {:.1}s)", delay.as_secs_f64());
        observer(&ReconcileEvent::WaitingForWebhook {
            namespace,
            attempt,
            reason: &reason,
            next_in: delay,
        });
        tokio::time::sleep(delay).await;
        attempt += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template() -> Value {
        json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"labels": {"app": "agent"}},
            "spec": {"containers": [{"name": "a", "image": "rancher/rancher-agent:v2.9"},
                                    {"name": "b", "image": "rancher/rancher-agent:v2.9"}]}})
    }

    #[test]
    fn probe_mirrors_labels_and_images_and_sets_no_security_context() {
        let probe = probe_pod("cattle-system", &template(), "n0nce");
        assert_eq!(probe["metadata"]["generateName"], PROBE_NAME_PREFIX);
        assert_eq!(probe["metadata"]["labels"]["app"], "agent");
        assert_eq!(probe["metadata"]["labels"][PROBE_LABEL], "n0nce");
        assert_eq!(
            probe["spec"]["containers"],
            json!([{"name": "probe-0", "image": "rancher/rancher-agent:v2.9"}])
        );
        assert!(probe["spec"].get("securityContext").is_none());
    }

    #[test]
    fn only_an_answer_with_every_change_counts_as_mutated() {
        let policy = Policy::builtin();
        let nonce = nonce();
        assert_eq!(nonce.len(), 32);
        assert_ne!(nonce, super::nonce(), "a fresh nonce per probe");
        let probe = probe_pod("cattle-system", &template(), &nonce);
        let expected = expected_changes(&policy, "cattle-system", &probe).unwrap();
        let mutated_as = |probe: &Value| {
            let mut pod = probe.clone();
            engine::evaluate(
                &policy,
                &mut pod,
                WorkloadKind::Pod,
                "cattle-system",
                Context::CREATE,
            )
            .unwrap();
            pod
        };
        let came_back_mutated =
            |answer: &Value, expected: &[Op]| came_back_mutated(answer, expected, &nonce);
        assert_eq!(
            came_back_mutated(&probe, &expected).unwrap_err(),
            "probe pod came back unmutated"
        );
        // Another webhook writing the very same securityContext, restrictor unreached.
        let lookalike = mutated_as(&probe);
        assert!(
            came_back_mutated(&lookalike, &expected)
                .unwrap_err()
                .contains("without restrictor's restrictor.dev/probe-seen echo")
        );
        let mut stale = lookalike.clone();
        stale["metadata"]["annotations"][PROBE_SEEN_ANNOTATION] = json!("an-older-nonce");
        assert!(came_back_mutated(&stale, &expected).is_err());
        let mut mutated = mutated_as(&probe);
        mutated["metadata"]["annotations"][PROBE_SEEN_ANNOTATION] = json!(nonce);
        // The API server adds defaults beside restrictor's changes.
        mutated["spec"]["containers"][0]["imagePullPolicy"] = json!("IfNotPresent");
        mutated["spec"]["dnsPolicy"] = json!("ClusterFirst");
        assert_eq!(came_back_mutated(&mutated, &expected), Ok(()));
        let mut partly = mutated.clone();
        partly["spec"]
            .as_object_mut()
            .unwrap()
            .remove("securityContext");
        assert!(
            came_back_mutated(&partly, &expected)
                .unwrap_err()
                .starts_with(
                    "probe pod came back without restrictor's change at /spec/securityContext"
                )
        );
        // An answer the checker cannot read is no pass.
        assert_eq!(passes_restricted(&mutated), Ok(()));
        assert_eq!(
            passes_restricted(&json!({"apiVersion": "v1", "kind": "Pod", "spec": "unreadable"})),
            Err("probe pod came back in a shape the Pod Security checker cannot read".into())
        );
    }

    #[test]
    fn values_compare_as_at_least() {
        assert!(contains(
            &json!({"a": 1, "b": {"c": 2, "d": 3}}),
            &json!({"b": {"c": 2}})
        ));
        assert!(!contains(&json!({"a": 1}), &json!({"a": 2})));
        assert!(contains(
            &json!([{"a": 1, "b": 2}, 3]),
            &json!([3, {"a": 1}])
        ));
        assert!(!contains(&json!([1]), &json!([1, 2])));
    }
}
