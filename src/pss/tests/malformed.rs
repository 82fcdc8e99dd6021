//! Fields of the wrong JSON type: never a panic, never taken for absent.

use serde_json::{Value, json};

use super::{Control, Level, check_object, compliant_pod, expect, found, pod_with, run};

#[test]
fn wrongly_typed_json_never_panics() {
    let weird = [
        json!({"apiVersion": "v1", "kind": "Pod", "spec": {"containers": "nope", "volumes": {}, "securityContext": []}}),
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"annotations": []}, "spec": {
            "containers": [1, null, {"securityContext": "x", "ports": [3, {"hostPort": null}]}],
            "securityContext": {"sysctls": {"a": 1}, "seLinuxOptions": 5, "seccompProfile": "RuntimeDefault"},
            "volumes": [7, {"name": 3, "hostPath": null}],
            "os": 1,
        }}),
        json!({"apiVersion": "v1", "kind": "Pod", "spec": {"containers": [{"name": "c", "lifecycle": [], "livenessProbe": {"httpGet": {"host": 9}},
            "securityContext": {"capabilities": {"add": [1, "ALL"], "drop": [null]}, "seLinuxOptions": {"type": 1, "user": 2}, "procMount": 0}}]}}),
    ];
    for object in &weird {
        for level in [Level::Baseline, Level::Restricted] {
            let _ = run(object, level);
        }
    }
    let last = found(&weird[2], Level::Baseline);
    for expected in expect(&[
        (
            Control::HostProbesLifecycle,
            "spec.containers[0].livenessProbe.httpGet.host",
        ),
        (
            Control::Capabilities,
            "spec.containers[0].securityContext.capabilities.add[0]",
        ),
        (
            Control::SELinux,
            "spec.containers[0].securityContext.seLinuxOptions.type",
        ),
        (
            Control::ProcMountType,
            "spec.containers[0].securityContext.procMount",
        ),
    ]) {
        assert!(
            last.contains(&expected),
            "{expected:?} missing from {last:?}"
        );
    }
}

/// Every mistyped field the checker reads as it reads it: the pod spec's lists and context, and a
/// container's context and lists. Each is a `Malformed` violation at both levels, with its field.
#[test]
fn mistyped_fields_are_violations_at_every_level() {
    // (parent pointer, member, value, field, expected type)
    let cases = [
        (
            "/spec",
            "containers",
            json!({"name": "app"}),
            "spec.containers",
            "an array",
        ),
        (
            "/spec",
            "containers",
            json!("app"),
            "spec.containers",
            "an array",
        ),
        (
            "/spec",
            "initContainers",
            json!(7),
            "spec.initContainers",
            "an array",
        ),
        (
            "/spec",
            "ephemeralContainers",
            json!({}),
            "spec.ephemeralContainers",
            "an array",
        ),
        (
            "/spec/containers",
            "0",
            json!("app"),
            "spec.containers[0]",
            "an object",
        ),
        (
            "/spec",
            "volumes",
            json!({"name": "tmp"}),
            "spec.volumes",
            "an array",
        ),
        (
            "/spec/volumes",
            "0",
            json!("tmp"),
            "spec.volumes[0]",
            "an object",
        ),
        (
            "/spec",
            "securityContext",
            json!([]),
            "spec.securityContext",
            "an object",
        ),
        (
            "/spec/containers/0",
            "securityContext",
            json!([]),
            "spec.containers[0].securityContext",
            "an object",
        ),
        (
            "/spec/containers/0",
            "env",
            json!({"A": "b"}),
            "spec.containers[0].env",
            "an array",
        ),
        (
            "/spec/containers/0",
            "volumeMounts",
            json!({}),
            "spec.containers[0].volumeMounts",
            "an array",
        ),
    ];
    for (parent, member, value, field, expected) in cases {
        let detail = format!(
            "expected {expected}, found {}",
            crate::pss::JsonType::of(&value)
        );
        let mut pod = compliant_pod();
        match pod.pointer_mut(parent).expect("parent exists") {
            Value::Array(list) => list[0] = value,
            object => object[member] = value,
        }
        for level in [Level::Baseline, Level::Restricted] {
            let malformed: Vec<_> = run(&pod, level)
                .into_iter()
                .filter(|v| v.control == Control::Malformed)
                .collect();
            assert_eq!(malformed.len(), 1, "{field} at {level}: {malformed:?}");
            assert_eq!(malformed[0].field, field);
            assert_eq!(malformed[0].detail, detail);
            assert_eq!(malformed[0].level, Level::Baseline);
        }
    }
}

/// A pod whose only fault is a list of the wrong type is not clean: the containers it could not
/// read are not taken for none. Before, this pod passed both levels.
#[test]
fn a_container_list_it_cannot_read_fails_the_pod() {
    let mut pod = compliant_pod();
    let containers = pod["spec"]["containers"].take();
    pod["spec"]["containers"] = json!({"app": containers[0]});
    for level in [Level::Baseline, Level::Restricted] {
        assert_eq!(
            found(&pod, level),
            [(Control::Malformed, "spec.containers".to_owned())],
            "{level}"
        );
    }
}

#[test]
fn the_position_of_a_container_violation_is_structured() {
    let pod = pod_with(|p| {
        p["spec"]["initContainers"][0]["securityContext"]["privileged"] = json!(true);
        p["spec"]["containers"][0]["ports"] = json!("80");
    });
    let violations = check_object(&pod, Level::Baseline).expect("pod");
    let positions: Vec<_> = violations
        .iter()
        .map(|v| (v.at.map(|at| (at.list, at.index)), v.container.as_deref()))
        .collect();
    assert_eq!(
        positions,
        [
            (Some(("initContainers", 0)), Some("init")),
            (Some(("containers", 0)), Some("app")),
        ]
    );
}
