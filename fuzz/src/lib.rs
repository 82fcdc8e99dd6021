//! The properties the fuzz targets assert, shared with `tests/fuzz_regressions.rs` (which includes
//! this file with `#[path]`), so a saved input replays through exactly the same checks.
//!
//! Uses only crates the main package has too: `restrictor`, `serde_json`, `json_patch`, `base64`.

use std::sync::LazyLock;

use base64::Engine as _;
use serde_json::Value;

use restrictor::admission::{self, Disposition as Answered};
use restrictor::engine::{self, Context, Operation, Verdict};
use restrictor::patch::Op;
use restrictor::policy::{BUILTIN_YAML, Policy};
use restrictor::pss::{self, Level};
use restrictor::workload::{PodTemplate, WorkloadKind};

/// Every kind the engine understands.
pub const KINDS: [WorkloadKind; 9] = [
    WorkloadKind::Pod,
    WorkloadKind::PodTemplate,
    WorkloadKind::ReplicationController,
    WorkloadKind::Deployment,
    WorkloadKind::ReplicaSet,
    WorkloadKind::StatefulSet,
    WorkloadKind::DaemonSet,
    WorkloadKind::Job,
    WorkloadKind::CronJob,
];

/// The admission handler's limits on what it sends back (see `src/admission.rs`): 12 warnings plus
/// one "and N more", each at most 120 characters; audit annotation values at most 4096 bytes.
pub const MAX_WARNINGS: usize = 13;
pub const MAX_WARNING_CHARS: usize = 120;
pub const MAX_AUDIT_BYTES: usize = 4096;

/// The answer (or the error message) must stay proportional to the request: a response that grows
/// faster than this would let a small request make the webhook write a large one.
pub fn max_answer_bytes(request_bytes: usize) -> usize {
    16 * 1024 + 256 * request_bytes
}

pub static BUILTIN: LazyLock<Policy> = LazyLock::new(Policy::builtin);

/// The built-in policy with every unfixable field removed instead of denied.
pub static REMOVE_ALL: LazyLock<Policy> = LazyLock::new(|| {
    Policy::from_yaml(&BUILTIN_YAML.replace(": deny ", ": remove ")).expect("remove-all policy")
});

/// The admission target: `body` is an HTTP request body. `review` must not panic, must answer
/// within the bounds above, and what it admits must be what the host's Pod Security admits.
pub fn admission(body: &[u8]) {
    let answer = match admission::review(body, &BUILTIN) {
        Ok(answer) => answer,
        Err(error) => {
            let message = error.to_string();
            assert!(!message.is_empty(), "empty error message");
            assert!(
                message.len() <= max_answer_bytes(body.len()),
                "error message of {} bytes for a {}-byte body",
                message.len(),
                body.len()
            );
            return;
        }
    };
    assert!(
        answer.body.len() <= max_answer_bytes(body.len()),
        "answer of {} bytes for a {}-byte body",
        answer.body.len(),
        body.len()
    );
    let response: Value = serde_json::from_slice(&answer.body).expect("the answer is JSON");
    // `review` skips the fields it does not read without validating them (serde_json checks neither
    // UTF-8 nor `\u` escapes in ignored strings), so an answered body need not be JSON to
    // `serde_json::Value`; the API server only sends JSON, so the checks below need it.
    let Ok(request) = serde_json::from_slice::<Value>(body) else {
        return;
    };
    let request = &request["request"];
    assert_eq!(response["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(response["kind"], "AdmissionReview");
    let r = &response["response"];
    let uid = request["uid"]
        .as_str()
        .expect("an answered request has a uid");
    assert_eq!(r["uid"], uid, "the answer is for another request");
    assert_eq!(answer.summary.uid, uid);

    let warnings = r
        .get("warnings")
        .map(|w| w.as_array().expect("warnings is a list").clone())
        .unwrap_or_default();
    assert!(
        warnings.len() <= MAX_WARNINGS,
        "{} warnings",
        warnings.len()
    );
    for warning in &warnings {
        let warning = warning.as_str().expect("a warning is a string");
        assert!(
            warning.chars().count() <= MAX_WARNING_CHARS,
            "warning too long: {warning:?}"
        );
    }
    if let Some(annotations) = r.get("auditAnnotations") {
        for (key, value) in annotations
            .as_object()
            .expect("audit annotations are a map")
        {
            let value = value.as_str().expect("an audit annotation is a string");
            assert!(
                value.len() <= MAX_AUDIT_BYTES,
                "audit annotation {key} has {} bytes",
                value.len()
            );
        }
    }

    let summary = &answer.summary;
    assert_eq!(
        r["allowed"].as_bool(),
        Some(summary.disposition != Answered::Denied),
        "allowed disagrees with the outcome {:?}",
        summary.disposition
    );
    match summary.disposition {
        Answered::Denied => {
            assert_eq!(r["status"]["code"], 403);
            assert!(
                r["status"]["message"]
                    .as_str()
                    .is_some_and(|m| !m.is_empty())
            );
            assert!(r.get("patch").is_none(), "a denial carries a patch");
            assert!(summary.profile.is_some(), "denied without a profile");
            return;
        }
        Answered::Patched => {
            assert_eq!(r["patchType"], "JSONPatch");
            assert!(summary.profile.is_some(), "patched without a profile");
        }
        Answered::Unchanged => {
            assert!(r.get("patch").is_none() && r.get("patchType").is_none());
            assert!(r.get("status").is_none());
        }
        Answered::Invalid | Answered::Error => {
            panic!("an answered review is {:?}", summary.disposition)
        }
    }

    let mut object = request["object"].clone();
    if let Some(encoded) = r.get("patch") {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded.as_str().expect("the patch is a string"))
            .expect("the patch is base64");
        let patch: json_patch::Patch =
            serde_json::from_slice(&bytes).expect("the patch is an RFC 6902 JSON Patch");
        if let Err(error) = json_patch::patch(&mut object, &patch) {
            panic!(
                "the patch does not apply: {error}\npatch: {}",
                String::from_utf8_lossy(&bytes)
            );
        }
    }
    // On UPDATE restrictor may only warn (a Pod's spec is immutable); on CREATE whatever it admits
    // for a matched object must pass "restricted".
    if summary.profile.is_some() && request["operation"] == "CREATE" {
        let gvk = &request["kind"];
        let kind = WorkloadKind::from_group_kind(
            gvk["group"].as_str().unwrap_or_default(),
            gvk["kind"].as_str().unwrap_or_default(),
        )
        .expect("a matched object has a workload kind");
        assert_restricted(&object, kind);
    }
}

/// The engine target: `data` is the object as JSON (anything else is skipped). For each kind the
/// object is evaluated as on CREATE; the policy is the built-in one for inputs of even length and
/// the one that removes unfixable fields for odd lengths, so the fuzzer reaches both by one byte.
pub fn engine(data: &[u8]) {
    let Ok(object) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    if !object.is_object() {
        return;
    }
    let policy: &Policy = if data.len().is_multiple_of(2) {
        &BUILTIN
    } else {
        &REMOVE_ALL
    };
    let namespace = object
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("default");
    for kind in KINDS {
        check_levels(&object, kind);
        evaluate_as(policy, &object, kind, namespace);
    }
    let _ = pss::check_object(&object, Level::Baseline);
    let _ = pss::check_object(&object, Level::Restricted);
}

/// `pss::check` on the pod as `kind`: every baseline violation is a restricted one too.
fn check_levels(object: &Value, kind: WorkloadKind) {
    let Some(pod) = PodTemplate::locate_as(object, kind) else {
        return;
    };
    let baseline = pss::check(&pod, Level::Baseline);
    let restricted = pss::check(&pod, Level::Restricted);
    for violation in &baseline {
        assert_eq!(violation.level, Level::Baseline, "{violation:?}");
        assert!(
            restricted.contains(violation),
            "restricted misses the baseline violation {violation:?}"
        );
    }
    for violation in &restricted {
        assert!(!violation.field.is_empty() && !violation.detail.is_empty());
    }
}

fn evaluate_as(policy: &Policy, object: &Value, kind: WorkloadKind, namespace: &str) {
    // The engine edits its argument in place; keep `object` as the original to compare against.
    let mut edited = object.clone();
    let Some(evaluation) = engine::evaluate(policy, &mut edited, kind, namespace, Context::CREATE)
    else {
        assert!(
            PodTemplate::locate_as(object, kind).is_none(),
            "the built-in rules match every pod, but this one got no profile"
        );
        return;
    };
    let outcome = evaluation.outcome;
    let base = kind.template_pointer();
    for op in &outcome.patch {
        assert!(
            op.path()
                .strip_prefix(base)
                .is_some_and(|rest| rest.starts_with('/')),
            "{kind:?}: patch outside the pod template: {op:?}"
        );
    }
    if kind == WorkloadKind::Pod || kind == WorkloadKind::Job {
        check_update(policy, object, kind, namespace);
    }
    if let Some(denial) = &outcome.denial {
        assert!(!denial.findings.is_empty(), "a denial without findings");
        for finding in &denial.findings {
            assert!(!finding.field.is_empty() && !finding.reason.is_empty());
        }
        return;
    }
    let patched = apply(object, &outcome.patch);
    assert_eq!(
        patched, edited,
        "{kind:?}: the in-place result differs from the patch"
    );
    assert_restricted(&patched, kind);
    let again = engine::evaluate(
        policy,
        &mut patched.clone(),
        kind,
        namespace,
        Context::CREATE,
    )
    .expect("the patched object is still matched");
    assert_eq!(
        again.profile, evaluation.profile,
        "{kind:?}: another profile"
    );
    assert!(
        again.outcome.denial.is_none(),
        "{kind:?}: admitted, then denied on a second pass: {}",
        again
            .outcome
            .denial
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default()
    );
    assert!(
        again.outcome.patch.is_empty(),
        "{kind:?}: not idempotent; first patch {:?}, second patch {:?}",
        outcome.patch,
        again.outcome.patch
    );
}

/// On UPDATE a Pod's spec (but for ephemeral containers) and a Job's template are immutable.
fn check_update(policy: &Policy, object: &Value, kind: WorkloadKind, namespace: &str) {
    let update = |sub_resource| {
        let context = Context {
            operation: Operation::Update,
            sub_resource,
        };
        engine::evaluate(policy, &mut object.clone(), kind, namespace, context)
            .expect("matched on CREATE, matched on UPDATE")
            .outcome
    };
    let plain: Verdict = update(None);
    assert!(plain.patch.is_empty(), "{kind:?} UPDATE: {:?}", plain.patch);
    // Only an object that cannot be read is refused on UPDATE: it is bad input.
    assert!(
        plain.denial.as_ref().is_none_or(|d| d.is_malformed()),
        "{kind:?} UPDATE denied"
    );
    if kind == WorkloadKind::Pod {
        let debug = update(Some("ephemeralcontainers"));
        for op in &debug.patch {
            assert!(
                op.path().starts_with("/spec/ephemeralContainers/"),
                "ephemeralcontainers UPDATE patches {op:?}"
            );
        }
        apply(object, &debug.patch);
    }
}

/// Applies the engine's operations with an independent RFC 6902 implementation.
pub fn apply(object: &Value, ops: &[Op]) -> Value {
    let patch: json_patch::Patch =
        serde_json::from_value(serde_json::to_value(ops).expect("ops serialize"))
            .expect("ops are an RFC 6902 JSON Patch");
    let mut patched = object.clone();
    if let Err(error) = json_patch::patch(&mut patched, &patch) {
        panic!("the patch does not apply: {error}\nops: {ops:?}");
    }
    patched
}

/// The object's pod (as `kind`) passes the built-in "restricted" checker, and so does the object
/// through `check_object` when its own apiVersion and kind say it is that kind.
pub fn assert_restricted(object: &Value, kind: WorkloadKind) {
    let pod =
        PodTemplate::locate_as(object, kind).expect("the admitted object still carries its pod");
    let violations = pss::check(&pod, Level::Restricted);
    assert!(
        violations.is_empty(),
        "{kind:?} admitted, but fails restricted: {violations:#?}"
    );
    if PodTemplate::locate(object).is_some_and(|pod| pod.kind == kind) {
        assert_eq!(
            pss::check_object(object, Level::Restricted),
            Some(Vec::new())
        );
    }
}
