mod malformed;

use serde_json::{Value, json};

use super::*;
use crate::policy::{Action, Policy};
use crate::workload::WorkloadKind;

fn kind_of(object: &Value) -> WorkloadKind {
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    let kind = object["kind"].as_str().unwrap_or_default();
    WorkloadKind::from_type(api_version, kind).expect("pod-bearing kind")
}

fn namespace_of(object: &Value) -> &str {
    object
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("default")
}

/// [`evaluate`] on a copy of `object`, checking that the copy it edited in place equals the original
/// with the returned patch applied (when not denied).
fn eval<'p>(
    policy: &'p Policy,
    object: &Value,
    kind: WorkloadKind,
    namespace: &str,
    context: Context<'_>,
) -> Option<Evaluation<'p>> {
    let mut edited = object.clone();
    let evaluation = evaluate(policy, &mut edited, kind, namespace, context)?;
    if evaluation.outcome.denial.is_none() {
        assert_eq!(
            edited,
            apply(object, &evaluation.outcome),
            "in-place result differs from the patch"
        );
    }
    Some(evaluation)
}

/// Applies `outcome`'s patch to `object` with an independent RFC 6902 implementation.
fn apply(object: &Value, outcome: &Verdict) -> Value {
    let patch: json_patch::Patch =
        serde_json::from_value(serde_json::to_value(&outcome.patch).expect("ops")).expect("patch");
    let mut patched = object.clone();
    json_patch::patch(&mut patched, &patch).expect("patch applies");
    patched
}

/// Evaluates under `policy`, applies the patch, and checks that a second pass changes nothing.
fn admit_with(policy: &Policy, object: &Value) -> (Verdict, Value) {
    let kind = kind_of(object);
    let evaluation = eval(policy, object, kind, namespace_of(object), Context::CREATE)
        .expect("a profile applies");
    let outcome = evaluation.outcome;
    assert!(outcome.denial.is_none(), "denied: {:?}", outcome.denial);
    let patched = apply(object, &outcome);
    let again = eval(
        policy,
        &patched,
        kind,
        namespace_of(object),
        Context::CREATE,
    )
    .expect("a profile applies");
    assert!(
        again.outcome.patch.is_empty(),
        "second pass patched: {:?}",
        again.outcome.patch
    );
    assert!(again.outcome.denial.is_none());
    (outcome, patched)
}

/// The verdict has the change line `what`; a failure lists the lines it has.
fn assert_changed(verdict: &Verdict, what: &str) {
    assert!(
        verdict.changes.iter().any(|c| c.what == what),
        "{what:?} not among {:?}",
        verdict.changes
    );
}

/// The built-in policy's verdict on an UPDATE of `object` (of its `sub_resource`, if any).
fn updated(object: &Value, sub_resource: Option<&str>) -> Verdict {
    let context = Context {
        operation: Operation::Update,
        sub_resource,
    };
    let policy = Policy::builtin();
    eval(
        &policy,
        object,
        kind_of(object),
        namespace_of(object),
        context,
    )
    .expect("a profile applies")
    .outcome
}

fn admit(object: &Value) -> (Verdict, Value) {
    admit_with(&Policy::builtin(), object)
}

fn deny(object: &Value) -> Denial {
    deny_with(&Policy::builtin(), object)
}

fn deny_with(policy: &Policy, object: &Value) -> Denial {
    let kind = kind_of(object);
    let evaluation = eval(policy, object, kind, namespace_of(object), Context::CREATE)
        .expect("a profile applies");
    evaluation.outcome.denial.expect("denied")
}

fn pod(spec: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "apps"}, "spec": spec})
}

fn fixture_objects(text: &str) -> Vec<Value> {
    crate::manifest::parse("fixture", text).expect("fixture parses")
}

fn agent_deployment(text: &str) -> Value {
    fixture_objects(text)
        .into_iter()
        .find(|o| {
            o["kind"] == "Deployment"
                && o["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with("cattle-cluster-agent"))
        })
        .expect("agent deployment")
}

// Read in place from ../shared/fixtures (None: skipped, the reason printed).
#[path = "../../../tests/support/shared_fixtures.rs"]
mod shared_fixtures;
use shared_fixtures::shared_fixture_text;

/// The agent Deployment of a shared fixture, or `None` when skipped.
fn shared_agent(relative: &str) -> Option<Value> {
    shared_fixture_text(relative).map(|text| agent_deployment(&text))
}

const MAIN_IMPORT: &str = "rancher/10-import.testdata.test-provisioned-import.yaml";
/// The README's quick-start input: the same bytes as shared/fixtures/rancher/20-import.v2.14.4.*.
const V2_14_IMPORT: &str = include_str!("../../../examples/rancher-import.yaml");
const REAPPLY: &str = "rancher/22-import.main.clusterdeploy-reapply.yaml";

fn mounts(container: &Value) -> Vec<&str> {
    container["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["mountPath"].as_str())
        .collect()
}

fn container<'a>(spec: &'a Value, list: &str, name: &str) -> &'a Value {
    spec[list]
        .as_array()
        .and_then(|l| l.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("{list} {name}"))
}

#[test]
fn bare_pod_gets_the_restricted_security_context() {
    let (outcome, patched) = admit(&pod(
        json!({"containers": [{"name": "app", "image": "nginx"}]}),
    ));
    let spec = &patched["spec"];
    assert_eq!(
        spec["securityContext"],
        json!({"runAsNonRoot": true, "runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 1000,
               "seccompProfile": {"type": "RuntimeDefault"}})
    );
    assert_eq!(
        spec["containers"][0]["securityContext"],
        json!({"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}})
    );
    // No appArmorProfile, ever: it breaks vcluster StatefulSet pods on hosts >= 1.31.
    assert!(!patched.to_string().contains("appArmor"));
    // The restricted profile does not make the root filesystem read-only.
    assert!(
        spec["containers"][0]["securityContext"]
            .get("readOnlyRootFilesystem")
            .is_none()
    );
    let lines: Vec<String> = outcome.changes.iter().map(ToString::to_string).collect();
    assert!(
        lines.contains(&"pod: runAsNonRoot=true".to_owned()),
        "{lines:?}"
    );
    assert!(
        lines.contains(&"container \"app\": allowPrivilegeEscalation=false".to_owned()),
        "{lines:?}"
    );
}

#[test]
fn compliant_pod_gets_no_patch() {
    let spec = json!({
        "securityContext": {"runAsNonRoot": true, "runAsUser": 5, "runAsGroup": 5, "fsGroup": 5,
                            "seccompProfile": {"type": "Localhost", "localhostProfile": "p.json"}},
        "containers": [{"name": "a", "securityContext": {"allowPrivilegeEscalation": false,
                         "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}}}],
    });
    let (outcome, _) = admit(&pod(spec));
    assert!(
        outcome.patch.is_empty() && outcome.changes.is_empty(),
        "{outcome:?}"
    );
}

#[test]
fn existing_non_zero_ids_are_kept_and_root_ids_replaced() {
    let spec = json!({
        "securityContext": {"runAsUser": 0, "runAsGroup": 2000, "fsGroup": 0},
        "containers": [
            {"name": "a", "securityContext": {"runAsUser": 0, "runAsNonRoot": false}},
            {"name": "b", "securityContext": {"runAsUser": 4242}},
        ],
    });
    let (_, patched) = admit(&pod(spec));
    let spec = &patched["spec"];
    assert_eq!(spec["securityContext"]["runAsUser"], 1000);
    assert_eq!(spec["securityContext"]["runAsGroup"], 2000);
    assert_eq!(spec["securityContext"]["fsGroup"], 1000);
    assert_eq!(spec["containers"][0]["securityContext"]["runAsUser"], 1000);
    assert_eq!(
        spec["containers"][0]["securityContext"]["runAsNonRoot"],
        true
    );
    assert_eq!(spec["containers"][1]["securityContext"]["runAsUser"], 4242);
}

#[test]
fn pod_user_is_left_unset_when_every_container_sets_one() {
    let spec = json!({"containers": [{"name": "a", "securityContext": {"runAsUser": 12345, "runAsGroup": 12345}}]});
    let (_, patched) = admit(&pod(spec));
    let sc = &patched["spec"]["securityContext"];
    assert!(
        sc.get("runAsUser").is_none() && sc.get("runAsGroup").is_none(),
        "{sc}"
    );
    assert_eq!(sc["fsGroup"], 1000);
}

#[test]
fn seccomp_unconfined_is_replaced_at_pod_and_container_level() {
    let spec = json!({
        "securityContext": {"seccompProfile": {"type": "Unconfined"}},
        "containers": [{"name": "a", "securityContext": {"seccompProfile": {"type": "Unconfined"}}}],
    });
    let (outcome, patched) = admit(&pod(spec));
    assert_eq!(
        patched["spec"]["securityContext"]["seccompProfile"],
        json!({"type": "RuntimeDefault"})
    );
    assert_eq!(
        patched["spec"]["containers"][0]["securityContext"]["seccompProfile"],
        json!({"type": "RuntimeDefault"})
    );
    assert_changed(&outcome, "seccompProfile=RuntimeDefault (was Unconfined)");
}

#[test]
fn capabilities_are_normalised_and_only_net_bind_service_is_kept() {
    let spec = json!({"containers": [
        {"name": "lower", "securityContext": {"capabilities": {"drop": ["all"]}}},
        {"name": "partial", "securityContext": {"capabilities": {"drop": ["NET_RAW"], "add": ["NET_BIND_SERVICE", "NET_ADMIN"]}}},
        {"name": "adds", "securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}}},
    ]});
    let (outcome, patched) = admit(&pod(spec));
    let containers = &patched["spec"]["containers"];
    assert_eq!(
        containers[0]["securityContext"]["capabilities"],
        json!({"drop": ["ALL"]})
    );
    assert_eq!(
        containers[1]["securityContext"]["capabilities"],
        json!({"drop": ["NET_RAW", "ALL"], "add": ["NET_BIND_SERVICE"]})
    );
    assert_eq!(
        containers[2]["securityContext"]["capabilities"],
        json!({"drop": ["ALL"]})
    );
    assert_changed(&outcome, "removed capabilities.add SYS_ADMIN");
}

#[test]
fn capabilities_can_be_denied_by_policy() {
    let mut policy_text =
        crate::policy::BUILTIN_YAML.replace("capabilities: remove", "capabilities: deny");
    policy_text.push('\n');
    let policy = Policy::from_yaml(&policy_text).expect("policy");
    let denial = deny_with(
        &policy,
        &pod(
            json!({"containers": [{"name": "a", "securityContext": {"capabilities": {"add": ["NET_ADMIN"]}}}]}),
        ),
    );
    assert_eq!(
        denial.findings[0].field,
        "spec.containers[0].securityContext.capabilities.add"
    );
    assert_eq!(denial.findings[0].control.name(), "Capabilities");
}

#[test]
fn every_container_list_is_covered() {
    let spec = json!({
        "initContainers": [{"name": "init"}],
        "containers": [{"name": "main"}],
        "ephemeralContainers": [{"name": "debug"}],
    });
    let (_, patched) = admit(&pod(spec));
    for list in ["initContainers", "containers", "ephemeralContainers"] {
        assert_eq!(
            patched["spec"][list][0]["securityContext"]["allowPrivilegeEscalation"], false,
            "{list}"
        );
        assert_eq!(
            patched["spec"][list][0]["securityContext"]["capabilities"]["drop"],
            json!(["ALL"]),
            "{list}"
        );
    }
}

#[test]
fn every_pod_bearing_kind_is_mutated_and_other_kinds_pass_untouched() {
    let template = json!({"metadata": {"labels": {"app": "x"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}});
    let objects = [
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}, "spec": {"template": template}}),
        json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "d"}, "spec": {"template": template}}),
        json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "d"}, "spec": {"template": template}}),
        json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "d"}, "spec": {"template": template}}),
        json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "d"}, "spec": {"template": template}}),
        json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "d"}, "spec": {"jobTemplate": {"spec": {"template": template}}}}),
        json!({"apiVersion": "v1", "kind": "ReplicationController", "metadata": {"name": "d"}, "spec": {"template": template}}),
        json!({"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "d"}, "template": template}),
    ];
    for object in objects {
        let (outcome, patched) = admit(&object);
        let pod = crate::workload::PodTemplate::locate(&patched).expect("template");
        assert_eq!(
            pod.spec["securityContext"]["runAsNonRoot"], true,
            "{}",
            object["kind"]
        );
        let prefix = kind_of(&object).template_pointer();
        assert!(
            outcome.patch.iter().all(|op| op.path().starts_with(prefix)),
            "{}",
            object["kind"]
        );
    }
    // A Deployment whose template has no spec object carries no pod: nothing to do.
    let hollow = json!({"apiVersion": "apps/v1", "kind": "Deployment", "spec": {"template": {"spec": null}}});
    assert_eq!(
        mutate(
            &mut hollow.clone(),
            WorkloadKind::Deployment,
            Context::CREATE,
            &Profile::default()
        ),
        Verdict::default()
    );
}

#[test]
fn unknown_fields_survive_untouched() {
    let object = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "d", "namespace": "apps", "futureMetadata": {"a": 1}},
        "spec": {"futureSpecField": [1, 2], "template": {"metadata": {}, "spec": {
            "futurePodField": {"nested": true},
            "securityContext": {"futureKnob": "x"},
            "containers": [{"name": "c", "image": "i", "futureContainerField": 7,
                            "securityContext": {"futureContainerKnob": {"deep": [1]}}}],
        }}},
        "status": {"futureStatus": "y"},
    });
    let (_, patched) = admit(&object);
    assert_eq!(patched["metadata"]["futureMetadata"], json!({"a": 1}));
    assert_eq!(patched["spec"]["futureSpecField"], json!([1, 2]));
    let spec = &patched["spec"]["template"]["spec"];
    assert_eq!(spec["futurePodField"], json!({"nested": true}));
    assert_eq!(spec["securityContext"]["futureKnob"], "x");
    assert_eq!(spec["containers"][0]["futureContainerField"], 7);
    assert_eq!(
        spec["containers"][0]["securityContext"]["futureContainerKnob"],
        json!({"deep": [1]})
    );
    assert_eq!(patched["status"], json!({"futureStatus": "y"}));
}

#[test]
fn every_unfixable_category_is_denied_with_its_field() {
    let cases = [
        (
            json!({"hostNetwork": true, "containers": [{"name": "a"}]}),
            "spec.hostNetwork",
            "Host Namespaces",
        ),
        (
            json!({"hostPID": true, "containers": [{"name": "a"}]}),
            "spec.hostPID",
            "Host Namespaces",
        ),
        (
            json!({"hostIPC": true, "containers": [{"name": "a"}]}),
            "spec.hostIPC",
            "Host Namespaces",
        ),
        (
            json!({"volumes": [{"name": "h", "hostPath": {"path": "/"}}], "containers": [{"name": "a"}]}),
            "spec.volumes[0].hostPath",
            "HostPath Volumes",
        ),
        (
            json!({"volumes": [{"name": "n", "nfs": {"server": "s", "path": "/"}}], "containers": [{"name": "a"}]}),
            "spec.volumes[0].nfs",
            "Volume Types",
        ),
        (
            json!({"containers": [{"name": "a", "securityContext": {"privileged": true}}]}),
            "spec.containers[0].securityContext.privileged",
            "Privileged Containers",
        ),
        (
            json!({"containers": [{"name": "a", "ports": [{"containerPort": 80, "hostPort": 80}]}]}),
            "spec.containers[0].ports[0].hostPort",
            "HostPorts",
        ),
        (
            json!({"securityContext": {"sysctls": [{"name": "kernel.msgmax", "value": "1"}]}, "containers": [{"name": "a"}]}),
            "spec.securityContext.sysctls[0]",
            "Sysctls",
        ),
        (
            json!({"containers": [{"name": "a", "securityContext": {"seLinuxOptions": {"type": "spc_t"}}}]}),
            "spec.containers[0].securityContext.seLinuxOptions.type",
            "SELinux",
        ),
        (
            json!({"securityContext": {"seLinuxOptions": {"user": "root"}}, "containers": [{"name": "a"}]}),
            "spec.securityContext.seLinuxOptions.user",
            "SELinux",
        ),
        (
            json!({"containers": [{"name": "a", "securityContext": {"procMount": "Unmasked"}}]}),
            "spec.containers[0].securityContext.procMount",
            "/proc Mount Type",
        ),
        (
            json!({"containers": [{"name": "a", "securityContext": {"windowsOptions": {"hostProcess": true}}}]}),
            "spec.containers[0].securityContext.windowsOptions.hostProcess",
            "HostProcess",
        ),
        (
            json!({"initContainers": [{"name": "i", "securityContext": {"appArmorProfile": {"type": "Unconfined"}}}], "containers": [{"name": "a"}]}),
            "spec.initContainers[0].securityContext.appArmorProfile.type",
            "AppArmor",
        ),
    ];
    for (spec, field, check) in cases {
        let denial = deny(&pod(spec));
        assert_eq!(denial.findings.len(), 1, "{field}: {denial:?}");
        assert_eq!(denial.findings[0].field, field);
        assert_eq!(denial.findings[0].control.name(), check);
        let message = denial.to_string();
        assert!(message.contains("host namespace would reject"), "{message}");
    }
}

#[test]
fn apparmor_annotation_unconfined_is_denied() {
    let mut object = pod(json!({"containers": [{"name": "a"}]}));
    object["metadata"]["annotations"] =
        json!({"container.apparmor.security.beta.kubernetes.io/a": "unconfined"});
    let denial = deny(&object);
    assert_eq!(
        denial.findings[0].field,
        "metadata.annotations[container.apparmor.security.beta.kubernetes.io/a]"
    );
}

#[test]
fn remove_action_strips_what_cannot_be_fixed_and_warns() {
    let text = crate::policy::BUILTIN_YAML
        .replace("hostNamespaces: deny", "hostNamespaces: remove")
        .replace("hostPathVolumes: deny", "hostPathVolumes: remove")
        .replace("privileged: deny", "privileged: remove")
        .replace("hostPorts: deny", "hostPorts: remove");
    let policy = Policy::from_yaml(&text).expect("policy");
    let object = pod(json!({
        "hostNetwork": true,
        "volumes": [{"name": "cfg", "configMap": {"name": "c"}}, {"name": "host", "hostPath": {"path": "/var/run"}}],
        "containers": [{"name": "a", "ports": [{"containerPort": 80, "hostPort": 80}],
                        "securityContext": {"privileged": true},
                        "volumeMounts": [{"name": "host", "mountPath": "/h"}, {"name": "cfg", "mountPath": "/c"}]}],
    }));
    let (outcome, patched) = admit_with(&policy, &object);
    let spec = &patched["spec"];
    assert!(spec.get("hostNetwork").is_none());
    assert_eq!(
        spec["volumes"],
        json!([{"name": "cfg", "configMap": {"name": "c"}}])
    );
    assert_eq!(
        spec["containers"][0]["volumeMounts"],
        json!([{"name": "cfg", "mountPath": "/c"}])
    );
    assert!(
        spec["containers"][0]["securityContext"]
            .get("privileged")
            .is_none()
    );
    assert_eq!(
        spec["containers"][0]["ports"],
        json!([{"containerPort": 80}])
    );
    assert!(
        outcome
            .changes
            .iter()
            .any(|c| c.what.starts_with("removed volume \"host\""))
    );
}

#[test]
fn windows_pods_get_only_what_applies_to_them() {
    let (_, patched) = admit(&pod(
        json!({"os": {"name": "windows"}, "containers": [{"name": "a"}]}),
    ));
    assert_eq!(
        patched["spec"]["securityContext"],
        json!({"runAsNonRoot": true})
    );
    assert!(
        patched["spec"]["containers"][0]
            .get("securityContext")
            .is_none()
    );
}

// ---- The Rancher agent profile ----

#[test]
fn rancher_main_agent_gets_exact_mounts_strips_and_sysctl() {
    let Some(object) = shared_agent(MAIN_IMPORT) else {
        return;
    };
    let (_, patched) = admit(&object);
    let spec = &patched["spec"]["template"]["spec"];
    // Node affinity stripped, pod anti-affinity kept; non-control-plane tolerations kept.
    assert!(spec["affinity"].get("nodeAffinity").is_none());
    assert!(spec["affinity"].get("podAntiAffinity").is_some());
    assert_eq!(spec["tolerations"].as_array().map(Vec::len), Some(2));
    assert_eq!(spec["securityContext"]["fsGroup"], 1000);
    assert_eq!(
        spec["securityContext"]["sysctls"],
        json!([{"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"}])
    );
    let agent = container(spec, "containers", "cluster-register");
    // CATTLE_CA_CHECKSUM is empty: no /etc/kubernetes, /etc/docker; local-catalogs/v2 is mounted: no seed.
    assert_eq!(
        mounts(agent),
        [
            "/var/lib/rancher-data/local-catalogs/v2",
            "/cattle-credentials",
            "/tmp",
            "/var/lib/rancher"
        ]
    );
    assert_eq!(agent["securityContext"]["readOnlyRootFilesystem"], true);
    let copy = container(spec, "initContainers", "rancher-charts-copy");
    assert_eq!(copy["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(spec["initContainers"].as_array().map(Vec::len), Some(1));
    let volumes: Vec<&str> = spec["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["name"].as_str())
        .collect();
    assert_eq!(
        volumes,
        [
            "rancher-charts",
            "cattle-credentials",
            "restrictor-tmp",
            "restrictor-var-lib-rancher"
        ]
    );
}

#[test]
fn rancher_v2_14_agent_with_private_ca_gets_ca_paths_and_a_seeded_catalog() {
    let object = agent_deployment(V2_14_IMPORT);
    let (_, patched) = admit(&object);
    let spec = &patched["spec"]["template"]["spec"];
    let agent = container(spec, "containers", "cluster-register");
    assert_eq!(
        mounts(agent),
        [
            "/cattle-credentials",
            "/tmp",
            "/var/lib/rancher",
            "/etc/kubernetes",
            "/etc/docker",
            "/var/lib/rancher-data/local-catalogs"
        ]
    );
    // The control-plane tolerations Rancher adds by default are gone, and no empty list is left behind
    // only if there were no others.
    let tolerations = spec["tolerations"].as_array().cloned().unwrap_or_default();
    assert!(tolerations.iter().all(|t| {
        !t["key"]
            .as_str()
            .unwrap_or_default()
            .starts_with("node-role")
    }));
    let seed = container(spec, "initContainers", "restrictor-seed-local-catalogs");
    assert_eq!(seed["image"], agent["image"]);
    assert_eq!(
        seed["command"],
        json!([
            "cp",
            "-R",
            "/var/lib/rancher-data/local-catalogs/.",
            "/restrictor-seed"
        ])
    );
    assert_eq!(
        seed["volumeMounts"],
        json!([{"name": "restrictor-var-lib-rancher-data-local-catalogs", "mountPath": "/restrictor-seed"}])
    );
    assert_eq!(seed["securityContext"]["readOnlyRootFilesystem"], true);
}

#[test]
fn the_agent_image_and_container_names_never_change() {
    let (Some(main_import), Some(reapply)) = (
        shared_fixture_text(MAIN_IMPORT),
        shared_fixture_text(REAPPLY),
    ) else {
        return;
    };
    for text in [&main_import, V2_14_IMPORT, &reapply] {
        let object = agent_deployment(text);
        let (outcome, patched) = admit(&object);
        assert!(
            !outcome
                .patch
                .iter()
                .any(|op| op.path().ends_with("/image") || op.path().ends_with("/name"))
        );
        let before = &object["spec"]["template"]["spec"]["containers"];
        let after = &patched["spec"]["template"]["spec"]["containers"];
        assert_eq!(before[0]["image"], after[0]["image"]);
        assert_eq!(before[0]["name"], after[0]["name"]);
    }
}

#[test]
fn rancher_reapply_brings_stripped_fields_back_and_they_are_stripped_again() {
    // Rancher's client-side apply restores affinity and tolerations on the live (mutated) object.
    let Some(object) = shared_agent(REAPPLY) else {
        return;
    };
    let (_, mutated) = admit(&object);
    let mut reapplied = mutated.clone();
    reapplied["spec"]["template"]["spec"]["affinity"] =
        object["spec"]["template"]["spec"]["affinity"].clone();
    reapplied["spec"]["template"]["spec"]["tolerations"] =
        object["spec"]["template"]["spec"]["tolerations"].clone();
    assert_eq!(namespace_of(&reapplied), "cattle-system");
    let outcome = updated(&reapplied, None);
    let patched = apply(&reapplied, &outcome);
    assert_eq!(patched, mutated);
}

#[test]
fn agent_on_host_network_gets_no_sysctl_and_is_denied() {
    let Some(object) = shared_agent(
        "rancher/10-import.testdata.pre-bootstrap-renders-bootstrap-deployment-with-hostnetwork.yaml",
    ) else {
        return;
    };
    let denial = deny(&object);
    assert_eq!(denial.findings[0].field, "spec.template.spec.hostNetwork");
}

#[test]
fn the_agent_matched_by_image_outside_cattle_system_gets_the_agent_profile() {
    let object = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a", "namespace": "elsewhere"},
        "spec": {"containers": [{"name": "agent", "image": "registry.local/rancher/rancher-agent:v2.14.4"}]}});
    let policy = Policy::builtin();
    let evaluation = eval(
        &policy,
        &object,
        WorkloadKind::Pod,
        "elsewhere",
        Context::CREATE,
    )
    .expect("profile");
    assert_eq!(evaluation.profile, "rancher-agent");
}

// ---- Immutability on UPDATE ----

#[test]
fn pod_update_is_never_patched_but_warns() {
    let object = pod(json!({"containers": [{"name": "a"}]}));
    let outcome = updated(&object, None);
    assert!(outcome.patch.is_empty() && outcome.changes.is_empty() && outcome.denial.is_none());
    assert!(
        outcome
            .warnings
            .iter()
            .any(|w| w.starts_with("not changed (a Pod's spec is immutable)")),
        "{:?}",
        outcome.warnings
    );

    let privileged =
        pod(json!({"containers": [{"name": "a", "securityContext": {"privileged": true}}]}));
    let outcome = updated(&privileged, None);
    assert!(
        outcome.denial.is_none(),
        "an existing pod's label change must not be blocked"
    );
}

#[test]
fn ephemeral_container_update_patches_only_ephemeral_containers() {
    let object = pod(
        json!({"containers": [{"name": "a"}], "ephemeralContainers": [{"name": "debug", "image": "busybox"}]}),
    );
    let outcome = updated(&object, Some("ephemeralcontainers"));
    assert!(!outcome.patch.is_empty());
    assert!(
        outcome
            .patch
            .iter()
            .all(|op| op.path().starts_with("/spec/ephemeralContainers/0/")),
        "{:?}",
        outcome.patch
    );
    apply(&object, &outcome);

    let privileged = pod(
        json!({"containers": [{"name": "a"}], "ephemeralContainers": [{"name": "debug", "securityContext": {"privileged": true}}]}),
    );
    let outcome = updated(&privileged, Some("ephemeralcontainers"));
    assert_eq!(
        outcome.denial.expect("denied").findings[0].field,
        "spec.ephemeralContainers[0].securityContext.privileged"
    );
}

#[test]
fn job_template_update_is_not_patched_but_cronjob_is() {
    let template = json!({"spec": {"containers": [{"name": "c"}], "restartPolicy": "Never"}});
    let job = json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j", "namespace": "apps"}, "spec": {"template": template}});
    let cron = json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "c", "namespace": "apps"}, "spec": {"jobTemplate": {"spec": {"template": template}}}});
    let job_outcome = updated(&job, None);
    assert!(job_outcome.patch.is_empty() && !job_outcome.warnings.is_empty());
    let cron_outcome = updated(&cron, None);
    assert!(!cron_outcome.patch.is_empty());
}

#[test]
fn a_policy_with_action_remove_for_unsafe_sysctls_removes_them() {
    let policy = Policy::from_yaml(
        "profiles:\n  p:\n    unfixable: {sysctls: remove}\nrules: [{name: all, profile: p}]\n",
    )
    .expect("policy");
    let object = pod(
        json!({"securityContext": {"sysctls": [{"name": "kernel.msgmax", "value": "1"}, {"name": "net.ipv4.tcp_syncookies", "value": "1"}]}, "containers": [{"name": "a"}]}),
    );
    let (_, patched) = admit_with(&policy, &object);
    assert_eq!(
        patched["spec"]["securityContext"]["sysctls"],
        json!([{"name": "net.ipv4.tcp_syncookies", "value": "1"}])
    );
}

#[test]
fn action_remove_applies_to_every_category() {
    // Sanity of the knob's plumbing: every category has a field the engine consults.
    let unfixable = crate::policy::Unfixable::default();
    assert_eq!(unfixable.capabilities, Action::Remove);
    assert_eq!(unfixable.host_namespaces, Action::Deny);
}

#[test]
fn the_seed_container_copies_as_the_user_the_agent_runs_as() {
    // Found by the fuzzer: every container sets its user, so the pod sets none; the seed container
    // must then run as the agent's user itself (not the image's, root for the agent image).
    let object = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "agent", "namespace": "apps"},
        "spec": {"containers": [{"name": "agent", "image": "rancher/rancher-agent:v2.14.4",
                 "securityContext": {"runAsUser": 4242, "runAsGroup": 4343}}]}});
    let (_, patched) = admit(&object);
    let seed = container(
        &patched["spec"],
        "initContainers",
        "restrictor-seed-local-catalogs",
    );
    assert_eq!(seed["securityContext"]["runAsUser"], 4242);
    assert_eq!(seed["securityContext"]["runAsGroup"], 4343);
    assert!(
        patched["spec"]["securityContext"]
            .get("runAsUser")
            .is_none()
    );
}

#[test]
fn pod_ids_account_for_the_seed_container_restrictor_adds() {
    // Found by the property suite: the pod-level rules must see the seed container (added for the
    // agent's local catalogs) or a second pass patches the pod again.
    let object = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "o", "namespace": "apps"},
        "spec": {"securityContext": {}, "containers": [{"name": "main0", "image": "rancher/rancher-agent:v2.14.4",
                 "securityContext": {"runAsUser": 1}}]}});
    let (_, patched) = admit(&object);
    let spec = &patched["spec"];
    assert!(spec["securityContext"].get("runAsUser").is_none());
    assert_eq!(spec["securityContext"]["runAsGroup"], 1000);
    let seed = container(spec, "initContainers", "restrictor-seed-local-catalogs");
    assert_eq!(seed["securityContext"]["runAsUser"], 1);
}
