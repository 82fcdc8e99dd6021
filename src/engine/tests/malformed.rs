//! Objects whose lists or contexts have the wrong JSON type: refused before any rule runs, with
//! the field named, and never patched.

use serde_json::{Value, json};

use super::{eval, pod};
use crate::engine::{Context, Operation, Verdict, evaluate};
use crate::policy::Policy;
use crate::pss::Control;
use crate::workload::WorkloadKind;

/// Every malformed shape the engine refuses, as a pod spec and the message for it.
fn cases() -> Vec<(Value, &'static str)> {
    let app = || json!({"name": "app", "image": "app:1"});
    let app_with = |field: &str, value: Value| {
        let mut container = app();
        container[field] = value;
        json!([container])
    };
    vec![
        (
            json!({"containers": {"name": "app"}}),
            "spec.containers: expected an array, found an object",
        ),
        (
            json!({"containers": "app"}),
            "spec.containers: expected an array, found a string",
        ),
        (
            json!({"initContainers": 1, "containers": [app()]}),
            "spec.initContainers: expected an array, found a number",
        ),
        (
            json!({"containers": [app()], "ephemeralContainers": {}}),
            "spec.ephemeralContainers: expected an array, found an object",
        ),
        (
            json!({"containers": ["app"]}),
            "spec.containers[0]: expected an object, found a string",
        ),
        (
            json!({"containers": [app()], "volumes": {"name": "v", "emptyDir": {}}}),
            "spec.volumes: expected an array, found an object",
        ),
        (
            json!({"containers": [app()], "volumes": [{"name": "v", "emptyDir": {}}, "v"]}),
            "spec.volumes[1]: expected an object, found a string",
        ),
        (
            json!({"containers": [app()], "securityContext": []}),
            "spec.securityContext: expected an object, found an array",
        ),
        (
            json!({"containers": app_with("securityContext", json!([]))}),
            "spec.containers[0].securityContext: expected an object, found an array",
        ),
        (
            json!({"containers": app_with("env", json!({"A": "b"}))}),
            "spec.containers[0].env: expected an array, found an object",
        ),
        (
            json!({"containers": app_with("volumeMounts", json!({"name": "v"}))}),
            "spec.containers[0].volumeMounts: expected an array, found an object",
        ),
        (
            json!({"containers": app_with("ports", json!(8080))}),
            "spec.containers[0].ports: expected an array, found a number",
        ),
    ]
}

fn assert_refused(verdict: &Verdict, message: &str) {
    let denial = verdict.denial.as_ref().expect("refused");
    assert!(denial.is_malformed(), "{denial}");
    assert_eq!(denial.findings.len(), 1, "{denial:?}");
    let finding = &denial.findings[0];
    assert_eq!(finding.control, Control::Malformed);
    assert_eq!(format!("{}: {}", finding.field, finding.reason), message);
    assert_eq!(
        denial.to_string(),
        format!("cannot be read: {message} (Malformed)")
    );
    assert!(verdict.patch.is_empty(), "{:?}", verdict.patch);
    assert!(verdict.changes.is_empty(), "{:?}", verdict.changes);
}

#[test]
fn each_malformed_shape_is_refused_naming_the_field() {
    let policy = Policy::builtin();
    for (spec, message) in cases() {
        let object = pod(spec);
        let evaluation = eval(&policy, &object, WorkloadKind::Pod, "apps", Context::CREATE)
            .expect("a profile applies");
        assert_refused(&evaluation.outcome, message);
    }
}

#[test]
fn the_field_is_named_under_the_workload_prefix() {
    let policy = Policy::builtin();
    let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "d", "namespace": "apps"},
        "spec": {"template": {"metadata": {"labels": {"app": "d"}}, "spec": {"containers": {"name": "app"}}}}});
    let evaluation = eval(
        &policy,
        &deployment,
        WorkloadKind::Deployment,
        "apps",
        Context::CREATE,
    )
    .expect("a profile applies");
    assert_refused(
        &evaluation.outcome,
        "spec.template.spec.containers: expected an array, found an object",
    );
}

#[test]
fn malformed_objects_are_refused_on_update_too_and_left_untouched() {
    let policy = Policy::builtin();
    let update = Context {
        operation: Operation::Update,
        sub_resource: None,
    };
    for (spec, message) in cases() {
        let original = pod(spec);
        let mut object = original.clone();
        let evaluation = evaluate(&policy, &mut object, WorkloadKind::Pod, "apps", update)
            .expect("a profile applies");
        assert_refused(&evaluation.outcome, message);
        assert!(evaluation.outcome.warnings.is_empty());
        assert_eq!(object, original);
    }
}

#[test]
fn null_counts_as_absent() {
    let policy = Policy::builtin();
    let object = pod(
        json!({"containers": [{"name": "app", "image": "app:1", "env": null,
        "securityContext": null}], "volumes": null, "initContainers": null}),
    );
    let evaluation = eval(&policy, &object, WorkloadKind::Pod, "apps", Context::CREATE)
        .expect("a profile applies");
    assert!(
        evaluation.outcome.denial.is_none(),
        "{:?}",
        evaluation.outcome.denial
    );
    assert!(!evaluation.outcome.patch.is_empty());
}
