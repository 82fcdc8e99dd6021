//! The `admission.k8s.io/v1` AdmissionReview envelope: parsed once from the request body (only the
//! fields restrictor reads; `oldObject`, `userInfo` and the rest are skipped unparsed) and answered
//! with the engine's outcome as a JSON Patch, warnings, audit annotations or a denial.

use std::borrow::Cow;
use std::fmt::{self, Write as _};

use crate::patch::{Json, Op, Pointer};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::engine::{self, Change, Context, Operation};
use crate::manifest::{controller_reference, describe};
use crate::policy::Policy;
use crate::pss::Control;
use crate::workload::WorkloadKind;

const API_VERSION: &str = "admission.k8s.io/v1";
const KIND: &str = "AdmissionReview";

/// Label on the reconciler's probe pod (a server-side dry run); its value is a random nonce.
pub const PROBE_LABEL: &str = "restrictor.dev/probe";
/// Annotation restrictor's answer adds to a probe pod, echoing the nonce: the proof that restrictor
/// saw the probe's review, which another mutating webhook writing the same securityContext is not.
pub const PROBE_SEEN_ANNOTATION: &str = "restrictor.dev/probe-seen";
const PROBE_SEEN_POINTER: &str = "/metadata/annotations/restrictor.dev~1probe-seen";

/// kubectl prints each warning on its own line; the API server may truncate past 120 characters.
const MAX_WARNING_CHARS: usize = 120;
const MAX_WARNINGS: usize = 12;
/// Audit annotation values end up in every audit event of the request; keep them bounded.
const MAX_AUDIT_CHARS: usize = 4096;

/// What became of one admission request: the `outcome` of its log line and metrics. A review
/// answered by [`review`] is patched, unchanged or denied; the server answers the other two.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Disposition {
    Patched,
    Unchanged,
    Denied,
    /// Answered 4xx: not an answerable review.
    Invalid,
    /// Answered 5xx: the review handler failed.
    Error,
}

impl Disposition {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Patched => "patched",
            Self::Unchanged => "unchanged",
            Self::Denied => "denied",
            Self::Invalid => "invalid",
            Self::Error => "error",
        }
    }
}

/// The facts about one answered review that logs and metrics print.
#[derive(Debug, Clone)]
pub struct Summary {
    pub uid: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub operation: String,
    pub dry_run: bool,
    pub disposition: Disposition,
    /// The Pod Security controls a denial names, each once, in the order found.
    pub denied_by: Vec<&'static str>,
    /// The profile applied, if any rule chose one.
    pub profile: Option<String>,
    /// What the engine changed; formatted only where printed.
    pub changes: Vec<Change>,
    /// Set when a pod CREATE made by a controller is denied: the Event restrictor writes on that
    /// controller, which is what the admin has to change (the controller only logs a retry).
    pub denied_pod: Option<DeniedPod>,
}

/// A denied pod of a workload: its controller's `ownerReference` and the denial as answered.
#[derive(Debug, Clone)]
pub struct DeniedPod {
    pub controller: Value,
    pub message: String,
}

/// A review answered: the serialized `AdmissionReview` response, sent with HTTP 200.
#[derive(Debug)]
pub struct Answer {
    pub body: Vec<u8>,
    pub summary: Summary,
}

/// A request that is not an answerable AdmissionReview (answered with HTTP 400 and this message).
#[derive(Debug, thiserror::Error)]
pub enum AdmissionError {
    #[error("request body is empty; expected an admission.k8s.io/v1 AdmissionReview")]
    EmptyBody,
    #[error("request body is not a valid AdmissionReview: {0}")]
    Malformed(String),
    #[error("unsupported apiVersion {0:?}; this webhook answers admission.k8s.io/v1 only")]
    ApiVersion(String),
    #[error("unsupported kind {0:?}; expected AdmissionReview")]
    Kind(String),
    #[error("AdmissionReview has no request")]
    MissingRequest,
    #[error("AdmissionReview request has no uid")]
    MissingUid,
    #[error("AdmissionReview request has no kind")]
    MissingKind,
    #[error("AdmissionReview request for {operation} has no object")]
    MissingObject { operation: String },
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReviewIn<'a> {
    #[serde(borrow)]
    api_version: Option<Cow<'a, str>>,
    #[serde(borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    request: Option<RequestIn<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RequestIn<'a> {
    #[serde(borrow)]
    uid: Option<Cow<'a, str>>,
    #[serde(borrow)]
    kind: Option<GroupVersionKind<'a>>,
    #[serde(borrow)]
    sub_resource: Option<Cow<'a, str>>,
    #[serde(borrow)]
    namespace: Option<Cow<'a, str>>,
    #[serde(borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow)]
    operation: Option<Cow<'a, str>>,
    dry_run: Option<bool>,
    object: Option<Value>,
}

#[derive(Deserialize)]
struct GroupVersionKind<'a> {
    #[serde(borrow, default)]
    group: Cow<'a, str>,
    #[serde(borrow, default)]
    kind: Cow<'a, str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ReviewOut<'a> {
    api_version: &'static str,
    kind: &'static str,
    response: ResponseOut<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ResponseOut<'a> {
    uid: &'a str,
    allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<StatusOut>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    warnings: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty", serialize_with = "as_map")]
    audit_annotations: Vec<(&'static str, String)>,
}

#[derive(Serialize)]
struct StatusOut {
    code: u16,
    reason: &'static str,
    message: String,
}

fn as_map<S: serde::Serializer>(
    pairs: &[(&'static str, String)],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_map(pairs.iter().map(|(k, v)| (k, v)))
}

/// A validated AdmissionReview request: the envelope fields restrictor reads, the object parsed
/// once into JSON (`oldObject`, `userInfo` and the rest are skipped unparsed).
#[derive(Debug)]
pub struct Review<'a> {
    pub uid: Cow<'a, str>,
    /// API group (`""` for core) and kind of the object, as the request names them.
    pub group: Cow<'a, str>,
    pub kind: Cow<'a, str>,
    pub sub_resource: Option<Cow<'a, str>>,
    pub operation: Cow<'a, str>,
    pub namespace: String,
    /// The name, or `prefix*` while the object has only a `generateName`.
    pub name: String,
    pub dry_run: bool,
    /// Present for CREATE and UPDATE (required there), absent otherwise.
    pub object: Option<Value>,
}

impl<'a> Review<'a> {
    /// Parses and validates one request body; the error says what is wrong (HTTP 400).
    pub fn parse(body: &'a [u8]) -> Result<Self, AdmissionError> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Err(AdmissionError::EmptyBody);
        }
        let review: ReviewIn<'_> = serde_json::from_slice(body)
            .map_err(|error| AdmissionError::Malformed(error.to_string()))?;
        match review.api_version.as_deref() {
            Some(API_VERSION) => {}
            other => {
                return Err(AdmissionError::ApiVersion(
                    other.unwrap_or_default().to_owned(),
                ));
            }
        }
        match review.kind.as_deref() {
            Some(KIND) => {}
            other => return Err(AdmissionError::Kind(other.unwrap_or_default().to_owned())),
        }
        let request = review.request.ok_or(AdmissionError::MissingRequest)?;
        let uid = request
            .uid
            .filter(|uid| !uid.is_empty())
            .ok_or(AdmissionError::MissingUid)?;
        let gvk = request.kind.ok_or(AdmissionError::MissingKind)?;
        let operation = request.operation.unwrap_or_default();
        let object = match (Self::engine_operation(&operation), request.object) {
            (Some(_), Some(object @ Value::Object(_))) => Some(object),
            (Some(_), _) => {
                return Err(AdmissionError::MissingObject {
                    operation: operation.into_owned(),
                });
            }
            (None, _) => None,
        };
        let namespace = request
            .namespace
            .filter(|ns| !ns.is_empty())
            .map(Cow::into_owned)
            .or_else(|| {
                object
                    .as_ref()
                    .and_then(|o| o.at("/metadata/namespace"))
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
            .unwrap_or_default();
        let name = match (request.name.filter(|n| !n.is_empty()), &object) {
            (Some(name), _) => name.into_owned(),
            (None, Some(object)) => display_name(object),
            (None, None) => String::new(),
        };
        Ok(Self {
            uid,
            group: gvk.group,
            kind: gvk.kind,
            sub_resource: request.sub_resource.filter(|s| !s.is_empty()),
            operation,
            namespace,
            name,
            dry_run: request.dry_run.unwrap_or(false),
            object,
        })
    }

    fn engine_operation(operation: &str) -> Option<Operation> {
        match operation {
            "CREATE" => Some(Operation::Create),
            "UPDATE" => Some(Operation::Update),
            // DELETE and CONNECT carry nothing to mutate.
            _ => None,
        }
    }

    fn summary(&self) -> Summary {
        Summary {
            uid: self.uid.clone().into_owned(),
            kind: self.kind.clone().into_owned(),
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            operation: self.operation.clone().into_owned(),
            dry_run: self.dry_run,
            disposition: Disposition::Unchanged,
            denied_by: Vec::new(),
            profile: None,
            changes: Vec::new(),
            denied_pod: None,
        }
    }

    /// Answers `allowed` with nothing changed, whatever the object: what every review costs
    /// besides the policy (the load benchmark's ceiling uses it).
    pub fn allow(self) -> Result<Answer, AdmissionError> {
        let summary = self.summary();
        let body = encode(ResponseOut::allowed(&self.uid))?;
        Ok(Answer { body, summary })
    }

    /// Answers the review under `policy`.
    pub fn answer(mut self, policy: &Policy) -> Result<Answer, AdmissionError> {
        let mut summary = self.summary();
        let mut response = ResponseOut::allowed(&self.uid);

        // The engine edits the parsed object in place (it is ours and is dropped after the answer).
        let mut evaluation = match (
            Self::engine_operation(&self.operation),
            self.object.as_mut(),
        ) {
            (Some(operation), Some(object)) => {
                WorkloadKind::from_group_kind(&self.group, &self.kind)
                    .filter(|_| !(operation == Operation::Update && is_being_deleted(object)))
                    .and_then(|kind| {
                        let context = Context {
                            operation,
                            sub_resource: self.sub_resource.as_deref(),
                        };
                        engine::evaluate(policy, object, kind, &self.namespace, context)
                    })
            }
            _ => None,
        };

        // After the engine edited the object, so the echo's path is judged on what the engine's
        // own operations leave behind.
        let echo = self.probe_echo();
        if let (Some(echo), Some(evaluation)) = (echo.clone(), evaluation.as_mut()) {
            evaluation.outcome.patch.push(echo);
        }
        if let Some(evaluation) = evaluation {
            let outcome = evaluation.outcome;
            summary.profile = Some(evaluation.profile.to_owned());
            response.warnings = bounded_warnings(&outcome.changes, &outcome.warnings);
            response
                .audit_annotations
                .push(("profile", evaluation.profile.to_owned()));
            if let Some(denial) = &outcome.denial {
                summary.disposition = Disposition::Denied;
                summary.denied_by = denial_controls(denial);
                // Kind, namespace and name are never edited, so the edited object still names
                // itself; formatted only here, as most reviews are not denied.
                let subject = self.object.as_ref().map(describe).unwrap_or_default();
                let message = format!("restrictor: {subject}: {denial}");
                response
                    .audit_annotations
                    .push(("denied", truncated(message.clone(), MAX_AUDIT_CHARS)));
                if self.kind == "Pod" && self.operation == "CREATE" {
                    summary.denied_pod =
                        self.object
                            .as_ref()
                            .and_then(controller_reference)
                            .map(|controller| DeniedPod {
                                controller: controller.clone(),
                                message: message.clone(),
                            });
                }
                response.allowed = false;
                // An object the engine cannot read is bad input, as the API server answers it.
                let (code, reason) = if denial.is_malformed() {
                    (400, "BadRequest")
                } else {
                    (403, "Forbidden")
                };
                response.status = Some(StatusOut {
                    code,
                    reason,
                    message,
                });
            } else if !outcome.patch.is_empty() {
                summary.disposition = Disposition::Patched;
                response.patch_type = Some("JSONPatch");
                response.patch = Some(encode_patch(&outcome.patch)?);
                response
                    .audit_annotations
                    .push(("changes", joined(&outcome.changes, MAX_AUDIT_CHARS)));
            }
            summary.changes = outcome.changes;
        } else if let Some(echo) = echo {
            // The policy gives the probe no profile (the reconciler then never sends it), but
            // restrictor still saw the review.
            summary.disposition = Disposition::Patched;
            response.patch_type = Some("JSONPatch");
            response.patch = Some(encode_patch(&[echo])?);
        }
        let body = encode(response)?;
        Ok(Answer { body, summary })
    }
}

impl Review<'_> {
    /// The operation echoing a probe pod's nonce, for the reconciler's dry-run probe only: a Pod
    /// CREATE with `dryRun` carrying [`PROBE_LABEL`], so no stored object is ever touched. Every
    /// other review pays the first comparisons (no allocation); a probe already carrying the echo
    /// gets none, so a second review of the patched probe changes nothing.
    fn probe_echo(&self) -> Option<Op> {
        if !(self.dry_run
            && self.kind == "Pod"
            && self.group.is_empty()
            && self.operation == "CREATE")
        {
            return None;
        }
        // `get` by key, not an escaped pointer, which would allocate to unescape `~1`.
        let metadata = self.object.as_ref()?.get("metadata")?;
        let nonce = metadata.get("labels")?.get(PROBE_LABEL)?.as_str()?;
        let annotations = metadata.get("annotations");
        match annotations.and_then(|a| a.get(PROBE_SEEN_ANNOTATION)) {
            Some(seen) if seen.as_str() == Some(nonce) => None,
            Some(_) => Some(Op::Replace {
                path: PROBE_SEEN_POINTER.to_owned(),
                value: Json::of(&Value::from(nonce)),
            }),
            None if annotations.is_some_and(Value::is_object) => Some(Op::Add {
                path: PROBE_SEEN_POINTER.to_owned(),
                value: Json::of(&Value::from(nonce)),
            }),
            None => {
                let mut annotations = serde_json::Map::new();
                annotations.insert(PROBE_SEEN_ANNOTATION.to_owned(), Value::from(nonce));
                Some(Op::Add {
                    path: "/metadata/annotations".to_owned(),
                    value: Json::of(&Value::Object(annotations)),
                })
            }
        }
    }
}

fn encode_patch(patch: &[Op]) -> Result<String, AdmissionError> {
    let patch =
        serde_json::to_vec(patch).map_err(|error| AdmissionError::Malformed(error.to_string()))?;
    Ok(base64::engine::general_purpose::STANDARD.encode(patch))
}

impl<'a> ResponseOut<'a> {
    fn allowed(uid: &'a str) -> Self {
        Self {
            uid,
            allowed: true,
            patch_type: None,
            patch: None,
            status: None,
            warnings: Vec::new(),
            audit_annotations: Vec::new(),
        }
    }
}

fn encode(response: ResponseOut<'_>) -> Result<Vec<u8>, AdmissionError> {
    serde_json::to_vec(&ReviewOut {
        api_version: API_VERSION,
        kind: KIND,
        response,
    })
    .map_err(|error| AdmissionError::Malformed(error.to_string()))
}

/// Parses one AdmissionReview request body and answers it under `policy`.
pub fn review(body: &[u8], policy: &Policy) -> Result<Answer, AdmissionError> {
    Review::parse(body)?.answer(policy)
}

/// What a review that could not be read is counted as, whether the envelope (HTTP 400) or the
/// object in it (a denial with code 400).
pub const MALFORMED_LABEL: &str = "malformed";

/// The controls `denial` names, each once; a denial naming none is counted as "other".
fn denial_controls(denial: &engine::Denial) -> Vec<&'static str> {
    let mut controls: Vec<&'static str> = Vec::with_capacity(denial.findings.len());
    for finding in &denial.findings {
        let label = match finding.control {
            Control::Malformed => MALFORMED_LABEL,
            control => control.name(),
        };
        if !controls.contains(&label) {
            controls.push(label);
        }
    }
    controls
}

fn is_being_deleted(object: &Value) -> bool {
    object
        .at("/metadata/deletionTimestamp")
        .is_some_and(|t| !t.is_null())
}

/// The object's name, or `prefix*` while the API server has only a `generateName`.
fn display_name(object: &Value) -> String {
    let metadata = object.get("metadata");
    let field = |name: &str| metadata.and_then(|m| m.get(name)).and_then(Value::as_str);
    match (field("name"), field("generateName")) {
        (Some(name), _) if !name.is_empty() => name.to_owned(),
        (_, Some(prefix)) => format!("{prefix}*"),
        _ => String::new(),
    }
}

/// Changes and notes as kubectl warnings: each one short, the list bounded.
fn bounded_warnings(changes: &[Change], notes: &[String]) -> Vec<String> {
    let lines = changes
        .iter()
        .map(|change| change as &dyn fmt::Display)
        .chain(notes.iter().map(|note| note as &dyn fmt::Display));
    let total = changes.len() + notes.len();
    let mut warnings: Vec<String> = lines
        .take(MAX_WARNINGS)
        .map(|line| {
            let mut warning = String::new();
            let _ = write!(warning, "restrictor: {line}");
            truncated(warning, MAX_WARNING_CHARS)
        })
        .collect();
    if total > MAX_WARNINGS {
        warnings.push(format!(
            "restrictor: and {} more changes (see the audit log or `restrictor mutate`)",
            total - MAX_WARNINGS
        ));
    }
    warnings
}

/// The changes joined with "; ", at most `max` bytes.
fn joined(changes: &[Change], max: usize) -> String {
    let mut text = String::new();
    for change in changes {
        if text.len() > max {
            break;
        }
        if !text.is_empty() {
            text.push_str("; ");
        }
        let _ = write!(text, "{change}");
    }
    truncated(text, max)
}

/// `text` cut to at most `max` bytes on a character boundary, ending in "…" when cut.
pub(crate) fn truncated(mut text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push('…');
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn request(object: Value) -> Value {
        json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
                "kind": {"group": "", "version": "v1", "kind": object["kind"]},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "namespace": "apps",
                "operation": "CREATE",
                "userInfo": {"username": "admin"},
                "object": object,
                "oldObject": null,
                "dryRun": false,
            }
        })
    }

    fn answer(review: &Value) -> (Value, Summary) {
        let body = serde_json::to_vec(review).expect("json");
        let answer = review_ok(&body);
        let parsed: Value = serde_json::from_slice(&answer.body).expect("response json");
        (parsed, answer.summary)
    }

    fn review_ok(body: &[u8]) -> Answer {
        match review(body, &Policy::builtin()) {
            Ok(answer) => answer,
            Err(error) => panic!("unexpected error: {error}"),
        }
    }

    fn decode_patch(response: &Value) -> json_patch::Patch {
        let encoded = response["response"]["patch"].as_str().expect("patch");
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .expect("base64");
        serde_json::from_slice(&bytes).expect("patch json")
    }

    fn probe_review(pod: &Value, dry_run: bool) -> Value {
        let mut review = request(pod.clone());
        review["request"]["dryRun"] = json!(dry_run);
        review
    }

    /// The patched pod, or the pod unchanged when the answer carries no patch.
    fn patched(pod: &Value, response: &Value) -> Value {
        let mut patched = pod.clone();
        if response["response"]["patch"].is_string() {
            json_patch::patch(&mut patched, &decode_patch(response)).expect("applies");
        }
        patched
    }

    #[test]
    fn only_a_dry_run_probe_pod_gets_its_nonce_echoed_once() {
        let probe = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"generateName": "restrictor-probe-", "labels": {PROBE_LABEL: "n0nce"}},
            "spec": {"containers": [{"name": "probe-0", "image": "busybox"}]}});
        let (response, summary) = answer(&probe_review(&probe, true));
        let seen = patched(&probe, &response);
        assert_eq!(
            seen["metadata"]["annotations"][PROBE_SEEN_ANNOTATION],
            "n0nce"
        );
        assert_eq!(seen["spec"]["securityContext"]["runAsNonRoot"], true);
        assert_eq!(summary.disposition, Disposition::Patched);

        // Idempotent: a second review of the patched probe has nothing to add.
        let (again, summary) = answer(&probe_review(&seen, true));
        assert!(again["response"].get("patch").is_none(), "{again}");
        assert_eq!(summary.disposition, Disposition::Unchanged);

        // Beside other annotations; a stale echo is replaced.
        let mut annotated = probe.clone();
        annotated["metadata"]["annotations"] = json!({"a": "b", PROBE_SEEN_ANNOTATION: "old"});
        let (response, _) = answer(&probe_review(&annotated, true));
        let seen = patched(&annotated, &response);
        assert_eq!(
            seen["metadata"]["annotations"],
            json!({"a": "b", PROBE_SEEN_ANNOTATION: "n0nce"})
        );

        // Never on a stored object, nor on a dry run of any other pod.
        let (stored, _) = answer(&probe_review(&probe, false));
        assert!(
            patched(&probe, &stored)["metadata"]
                .get("annotations")
                .is_none()
        );
        let mut plain = probe.clone();
        plain["metadata"]["labels"] = json!({"app": "x"});
        let (other, _) = answer(&probe_review(&plain, true));
        assert!(
            patched(&plain, &other)["metadata"]
                .get("annotations")
                .is_none()
        );
    }

    #[test]
    fn a_pod_is_answered_with_a_json_patch_warnings_and_audit_annotations() {
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"generateName": "web-"}, "spec": {"containers": [{"name": "web", "image": "nginx"}]}});
        let (response, summary) = answer(&request(pod.clone()));
        let r = &response["response"];
        assert_eq!(response["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(r["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
        assert_eq!(r["allowed"], true);
        assert_eq!(r["patchType"], "JSONPatch");
        let mut patched = pod;
        json_patch::patch(&mut patched, &decode_patch(&response)).expect("applies");
        assert_eq!(patched["spec"]["securityContext"]["runAsNonRoot"], true);
        assert!(r["warnings"].as_array().is_some_and(|w| !w.is_empty()));
        assert_eq!(r["auditAnnotations"]["profile"], "restricted");
        assert!(
            r["auditAnnotations"]["changes"]
                .as_str()
                .is_some_and(|c| c.contains("runAsNonRoot=true"))
        );
        assert_eq!(summary.disposition, Disposition::Patched);
        assert_eq!(summary.name, "web-*");
        assert_eq!(summary.namespace, "apps");
    }

    #[test]
    fn a_denial_is_403_with_the_object_and_field() {
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "h", "namespace": "apps"}, "spec": {"hostPID": true, "containers": [{"name": "a"}]}});
        let (response, summary) = answer(&request(pod));
        let r = &response["response"];
        assert_eq!(r["allowed"], false);
        assert_eq!(r["status"]["code"], 403);
        let message = r["status"]["message"].as_str().expect("message");
        assert!(message.starts_with("restrictor: Pod apps/h: "), "{message}");
        assert!(message.contains("spec.hostPID"), "{message}");
        assert!(r.get("patch").is_none());
        assert_eq!(summary.disposition, Disposition::Denied);
        assert_eq!(summary.denied_by, ["Host Namespaces"]);
    }

    #[test]
    fn non_pod_kinds_and_deletes_pass_untouched() {
        let (response, summary) = answer(&request(
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}),
        ));
        assert_eq!(
            response["response"],
            json!({"uid": "705ab4f5-6393-11e8-b7cc-42010a800002", "allowed": true})
        );
        assert_eq!(summary.disposition, Disposition::Unchanged);

        let mut delete = request(json!(null));
        delete["request"]["operation"] = json!("DELETE");
        delete["request"]["kind"]["kind"] = json!("Pod");
        let (response, _) = answer(&delete);
        assert_eq!(response["response"]["allowed"], true);
    }

    #[test]
    fn a_compliant_pod_gets_no_patch_and_dry_run_the_same_answer() {
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [{"name": "a"}]}});
        let (first, _) = answer(&request(pod.clone()));
        let mut patched = pod;
        json_patch::patch(&mut patched, &decode_patch(&first)).expect("applies");
        let (second, summary) = answer(&request(patched.clone()));
        assert!(second["response"].get("patch").is_none());
        assert_eq!(summary.disposition, Disposition::Unchanged);

        let mut dry = request(patched);
        dry["request"]["dryRun"] = json!(true);
        let (third, summary) = answer(&dry);
        assert_eq!(third, second);
        assert!(summary.dry_run);
    }

    #[test]
    fn malformed_reviews_are_errors_with_clear_messages() {
        let valid = request(
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": []}}),
        );
        let mut cases: Vec<(Vec<u8>, &str)> = vec![
            (b"".to_vec(), "empty"),
            (b"  \n".to_vec(), "empty"),
            (b"not json".to_vec(), "not a valid AdmissionReview"),
            (b"[1,2]".to_vec(), "not a valid AdmissionReview"),
            (
                b"{\"apiVersion\": 5}".to_vec(),
                "not a valid AdmissionReview",
            ),
        ];
        let mut edit = |f: &dyn Fn(&mut Value), expect: &'static str| {
            let mut review = valid.clone();
            f(&mut review);
            cases.push((serde_json::to_vec(&review).expect("json"), expect));
        };
        edit(
            &|r| r["apiVersion"] = json!("admission.k8s.io/v1beta1"),
            "admission.k8s.io/v1 only",
        );
        edit(&|r| r["kind"] = json!("Pod"), "expected AdmissionReview");
        edit(
            &|r| {
                r.as_object_mut().map(|o| o.remove("request"));
            },
            "has no request",
        );
        edit(
            &|r| {
                r["request"].as_object_mut().map(|o| o.remove("uid"));
            },
            "has no uid",
        );
        edit(&|r| r["request"]["uid"] = json!(""), "has no uid");
        edit(
            &|r| {
                r["request"].as_object_mut().map(|o| o.remove("kind"));
            },
            "has no kind",
        );
        edit(
            &|r| {
                r["request"].as_object_mut().map(|o| o.remove("object"));
            },
            "has no object",
        );
        edit(
            &|r| r["request"]["object"] = json!("a string"),
            "has no object",
        );
        for (body, expected) in cases {
            match review(&body, &Policy::builtin()) {
                Ok(answer) => panic!(
                    "{} answered {:?}",
                    String::from_utf8_lossy(&body),
                    answer.summary
                ),
                Err(error) => assert!(
                    error.to_string().contains(expected),
                    "{error} !~ {expected}"
                ),
            }
        }
    }

    #[test]
    fn warnings_are_short_and_bounded() {
        let containers: Vec<Value> = (0..20).map(|i| json!({"name": format!("container-with-a-rather-long-name-{i:02}-{}", "x".repeat(80))})).collect();
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": containers}});
        let (response, summary) = answer(&request(pod));
        let warnings = response["response"]["warnings"]
            .as_array()
            .expect("warnings");
        assert_eq!(warnings.len(), MAX_WARNINGS + 1);
        assert!(warnings.iter().all(|w| {
            w.as_str()
                .is_some_and(|w| w.chars().count() <= MAX_WARNING_CHARS)
        }));
        assert!(summary.changes.len() > MAX_WARNINGS);
        let audit = response["response"]["auditAnnotations"]["changes"]
            .as_str()
            .expect("changes");
        assert!(audit.len() <= MAX_AUDIT_CHARS);
    }

    #[test]
    fn the_vcluster_agent_pod_review_is_answered_for_its_uid() {
        let text = include_str!("../examples/agent-pod.admissionreview.yaml");
        let review_value = crate::manifest::parse("review", text)
            .expect("yaml")
            .remove(0);
        let (response, summary) = answer(&review_value);
        assert_eq!(response["response"]["uid"], review_value["request"]["uid"]);
        assert_eq!(summary.profile.as_deref(), Some("rancher-agent"));
        let mut pod = review_value["request"]["object"].clone();
        json_patch::patch(&mut pod, &decode_patch(&response)).expect("applies");
        assert!(
            crate::pss::check_object(&pod, crate::pss::Level::Restricted)
                .is_some_and(|v| v.is_empty())
        );
    }
}
