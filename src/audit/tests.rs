use serde_json::{Value, json};
use time::macros::datetime;

use super::*;

fn deployment(namespace: &str, name: &str, uid: &str, spec: Value) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "uid": uid},
        "spec": {"template": {"metadata": {"labels": {"app": name}}, "spec": spec}}})
}

fn owned_pod(namespace: &str, name: &str, owner_uid: &str, spec: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "uid": format!("uid-{name}"),
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs",
                "uid": owner_uid, "controller": true}]},
        "spec": spec})
}

fn restricted_spec() -> Value {
    json!({"securityContext": {"runAsNonRoot": true, "runAsUser": 1000, "runAsGroup": 1000,
            "fsGroup": 1000, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [{"name": "app", "image": "nginx", "securityContext": {
            "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}}]})
}

fn plain_spec() -> Value {
    json!({"containers": [{"name": "app", "image": "nginx"}]})
}

/// A plain spec that also shares the host namespace `field`: denied under every profile.
fn host_spec(field: &str) -> Value {
    let mut spec = plain_spec();
    spec[field] = json!(true);
    spec
}

#[test]
fn each_outcome_is_what_the_engine_decides() {
    let policy = Policy::builtin();
    let compliant = deployment("team", "ok", "u1", restricted_spec());
    let mutated = deployment("team", "plain", "u2", plain_spec());
    let denied = deployment("team", "host", "u3", host_spec("hostNetwork"));
    let kind = WorkloadKind::Deployment;
    assert_eq!(
        verdict(&policy, &compliant, kind),
        Verdict::Compliant {
            rule: "everything-else".into(),
            profile: "restricted".into()
        }
    );
    let Verdict::Mutated { changes, .. } = verdict(&policy, &mutated, kind) else {
        panic!("plain pod template is mutated");
    };
    // The same change lines the webhook's warnings print.
    let mut object = mutated.clone();
    let evaluation = engine::evaluate(&policy, &mut object, kind, "team", Context::CREATE).unwrap();
    let expected: Vec<String> = evaluation
        .outcome
        .changes
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(changes, expected);
    assert!(
        changes
            .iter()
            .any(|c| c.contains("allowPrivilegeEscalation"))
    );

    let Verdict::Denied { fields, reason, .. } = verdict(&policy, &denied, kind) else {
        panic!("hostNetwork is denied");
    };
    assert_eq!(fields[0].field, "spec.template.spec.hostNetwork");
    assert!(reason.contains("hostNetwork"), "{reason}");
}

#[test]
fn exemptions_name_the_rule_or_say_none_matched() {
    let exempting = Policy::from_yaml(
        "profiles: {restricted: {}}\nrules:\n  - name: leave-system\n    match: {namespaces: [kube-system]}\n    profile: none\n  - name: teams\n    match: {namespaces: [team-*]}\n    profile: restricted\n",
    )
    .unwrap();
    let system = deployment("kube-system", "dns", "u1", plain_spec());
    let other = deployment("elsewhere", "x", "u2", plain_spec());
    assert_eq!(
        verdict(&exempting, &system, WorkloadKind::Deployment),
        Verdict::Exempt {
            rule: Some("leave-system".into()),
            reason: "rule \"leave-system\" applies profile \"none\"".into()
        }
    );
    assert_eq!(
        verdict(&exempting, &other, WorkloadKind::Deployment),
        Verdict::Exempt {
            rule: None,
            reason: "no policy rule matches".into()
        }
    );
}

#[test]
fn owned_objects_are_counted_under_their_owner_and_not_listed() {
    let policy = Policy::builtin();
    let replica_set = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": "web-1", "namespace": "team", "uid": "rs",
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": "d", "controller": true}]},
        "spec": {"template": {"spec": restricted_spec()}}});
    let objects = vec![
        owned_pod("team", "web-1-a", "rs", plain_spec()),
        owned_pod("team", "web-1-b", "rs", restricted_spec()),
        replica_set,
        deployment("team", "web", "d", restricted_spec()),
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bare", "namespace": "team"}, "spec": plain_spec()}),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "svc", "namespace": "team"}}),
    ];
    let audit = audit(&policy, &objects);
    let listed: Vec<String> = audit.objects.iter().map(|e| e.object.to_string()).collect();
    assert_eq!(listed, ["Deployment team/web", "Pod team/bare"]);
    let web = &audit.objects[0];
    assert_eq!(web.verdict.outcome(), "compliant");
    assert_eq!(
        web.owned["Pod"],
        Counts {
            compliant: 1,
            mutated: 1,
            ..Counts::default()
        }
    );
    assert_eq!(web.owned["ReplicaSet"].compliant, 1);
    assert_eq!(
        audit.summary,
        Counts {
            compliant: 1,
            mutated: 1,
            ..Counts::default()
        }
    );
    assert!(!audit.has_denials());
    assert!(render::table(&audit).contains("2 Pods (1 mutated)"));
}

#[test]
fn json_output_has_the_documented_fields_sorted() {
    let policy = Policy::builtin();
    let objects = vec![
        deployment("b", "host", "u3", host_spec("hostPID")),
        deployment("a", "ok", "u1", restricted_spec()),
    ];
    let audit = audit(&policy, &objects);
    assert!(audit.has_denials());
    let text = render::json(&audit).unwrap();
    let value: Value = serde_json::from_str(&text).unwrap();
    let denied = &value["objects"][1];
    let expected_fields = vec![json!({
        "check": "Host Namespaces",
        "field": "spec.template.spec.hostPID",
        "message": denied["fields"][0]["message"],
    })];
    assert_eq!(
        value,
        json!({
            "summary": {"compliant": 1, "mutated": 0, "denied": 1, "exempt": 0},
            "objects": [
                {"object": {"namespace": "a", "kind": "Deployment", "name": "ok", "apiVersion": "apps/v1", "uid": "u1"},
                 "outcome": "compliant", "rule": "everything-else", "profile": "restricted"},
                {"object": {"namespace": "b", "kind": "Deployment", "name": "host", "apiVersion": "apps/v1", "uid": "u3"},
                 "outcome": "denied", "rule": "everything-else", "profile": "restricted",
                 "reason": denied["reason"], "fields": expected_fields},
            ]
        })
    );
    assert!(
        denied["fields"][0]["message"]
            .as_str()
            .unwrap()
            .contains("hostPID")
    );
    // Keys are written in alphabetical order: "fields" before "object" before "outcome".
    let object_at = text.find("\"object\"").unwrap();
    assert!(text.find("\"fields\"").unwrap() < text.rfind("\"object\"").unwrap());
    assert!(object_at < text.find("\"outcome\"").unwrap());
    assert_eq!(render::json(&audit).unwrap(), text);
    let yaml: Value = serde_yaml_ng::from_str(&render::yaml(&audit).unwrap()).unwrap();
    assert_eq!(yaml, value);
}

#[test]
fn reports_say_pass_warn_fail_skip_per_object_and_count_them() {
    let policy = Policy::from_yaml(
        "profiles: {restricted: {}}\nrules:\n  - name: skip-legacy\n    match: {namespaces: [legacy]}\n    profile: none\n  - name: all\n    profile: restricted\n",
    )
    .unwrap();
    let objects = vec![
        deployment("team", "ok", "u1", restricted_spec()),
        deployment("team", "plain", "u2", plain_spec()),
        deployment("team", "host", "u3", host_spec("hostIPC")),
        deployment("legacy", "old", "u4", plain_spec()),
    ];
    let audit = audit(&policy, &objects);
    let now = datetime!(2026-11-25 07:00:00 UTC);
    let reports = report::policy_reports(&audit, &["empty".to_owned()], now);
    let namespaces: Vec<&str> = reports
        .iter()
        .map(|r| r["metadata"]["namespace"].as_str().unwrap())
        .collect();
    assert_eq!(namespaces, ["empty", "legacy", "team"]);
    assert_eq!(reports[0]["results"], json!([]));
    assert_eq!(reports[1]["summary"]["skip"], 1);
    assert_eq!(reports[1]["results"][0]["rule"], "skip-legacy");
    let team = &reports[2];
    assert_eq!(
        team["summary"],
        json!({"pass": 1, "warn": 1, "fail": 1, "error": 0, "skip": 0})
    );
    let results: Vec<(&str, &str)> = team["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["resources"][0]["name"].as_str().unwrap(),
                r["result"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        results,
        [("host", "fail"), ("ok", "pass"), ("plain", "warn")]
    );
    let fail = &team["results"][0];
    assert_eq!(fail["source"], "restrictor");
    assert_eq!(fail["severity"], "high");
    assert_eq!(fail["properties"]["fields"], "spec.template.spec.hostIPC");
    assert_eq!(fail["resources"][0]["uid"], "u3");
    assert_eq!(
        fail["timestamp"],
        json!({"seconds": now.unix_timestamp(), "nanos": 0})
    );
}

#[test]
fn an_unchanged_finding_keeps_its_first_timestamp() {
    let policy = Policy::builtin();
    let objects = vec![
        deployment("team", "plain", "u2", plain_spec()),
        deployment("team", "ok", "u1", restricted_spec()),
    ];
    let audit = audit(&policy, &objects);
    let first = report::policy_reports(&audit, &[], datetime!(2026-11-25 07:00:00 UTC)).remove(0);
    let mut second =
        report::policy_reports(&audit, &[], datetime!(2026-11-25 08:00:00 UTC)).remove(0);
    assert!(!report::is_current(&second, &first));
    report::keep_timestamps(&mut second, &first);
    assert!(report::is_current(&second, &first));
    assert_eq!(second, first);

    // A changed finding gets the new run's time.
    let changed = audit_with(&policy, deployment("team", "ok", "u1", plain_spec()));
    let mut third =
        report::policy_reports(&changed, &[], datetime!(2026-11-25 09:00:00 UTC)).remove(0);
    report::keep_timestamps(&mut third, &first);
    assert_eq!(
        third["results"][0]["timestamp"]["seconds"],
        datetime!(2026-11-25 09:00:00 UTC).unix_timestamp()
    );
}

fn audit_with(policy: &Policy, object: Value) -> Audit {
    audit(policy, &[object])
}
