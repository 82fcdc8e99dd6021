//! Objects whose pod lists or contexts have the wrong JSON type, through the offline CLI and the
//! admission answer: refused with the field named, never admitted with a patch around it.

mod support;

use std::process::Output;

use serde_json::{Value, json};
use support::restrictor_with_stdin;

const DEPLOYMENT_WITH_CONTAINERS_AS_OBJECT: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: apps}
spec:
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: {name: web, image: "nginx:1.27"}
"#;

/// Runs `restrictor COMMAND -` on the Deployment: exit code 1, and `expected` in the output.
fn assert_reported(command: &str, expected: &str) -> Output {
    let output = restrictor_with_stdin(&[command], DEPLOYMENT_WITH_CONTAINERS_AS_OBJECT);
    let printed = [&output.stdout, &output.stderr].map(|bytes| String::from_utf8_lossy(bytes));
    assert_eq!(output.status.code(), Some(1), "{printed:?}");
    assert!(
        printed.iter().any(|text| text.contains(expected)),
        "{expected:?} missing from {printed:?}"
    );
    output
}

#[test]
fn mutate_reports_a_malformed_object_as_denied_naming_the_field() {
    let output = assert_reported(
        "mutate",
        "denied: Deployment apps/web: cannot be read: \
         spec.template.spec.containers: expected an array, found an object",
    );
    // Nothing is written for a denied object, not even the object itself.
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "");
}

#[test]
fn check_reports_a_malformed_object_as_a_violation() {
    assert_reported(
        "check",
        "Malformed: spec.template.spec.containers: expected an array, found an object",
    );
}

fn review(object: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "0d3c6a8e-5b1f-4c1e-9a8e-2f0c1b7d9e10",
                    "kind": {"group": "", "version": "v1", "kind": "Pod"},
                    "namespace": "apps", "operation": "CREATE",
                    "userInfo": {"username": "admin"}, "object": object}
    }))
    .expect("json")
}

#[test]
fn the_admission_answer_is_a_bad_request_denial_without_a_patch() {
    let policy = restrictor::policy::Policy::builtin();
    for (spec, field) in [
        (json!({"containers": "web"}), "spec.containers"),
        (
            json!({"containers": [{"name": "web", "image": "nginx", "env": {"A": "b"}}]}),
            "spec.containers[0].env",
        ),
    ] {
        let pod = json!({"apiVersion": "v1", "kind": "Pod",
                         "metadata": {"name": "p", "namespace": "apps"}, "spec": spec});
        let answer = restrictor::admission::review(&review(pod), &policy).expect("answered");
        let body: Value = serde_json::from_slice(&answer.body).expect("json");
        let response = &body["response"];
        assert_eq!(response["allowed"], false, "{response}");
        assert_eq!(response["status"]["code"], 400, "{response}");
        assert_eq!(response["status"]["reason"], "BadRequest", "{response}");
        let message = response["status"]["message"].as_str().expect("message");
        assert!(message.contains(field), "{message}");
        assert!(message.contains("cannot be read"), "{message}");
        assert!(response.get("patch").is_none(), "{response}");
    }
}
