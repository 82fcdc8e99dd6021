//! Properties of the engine over generated pods: every container list, random security contexts,
//! volumes of every type, host namespaces, the Rancher agent's shape, and fields from the future.
//!
//! For every generated object and both a denying and a removing policy: the engine either denies
//! with reasons, or returns a patch that applies, whose result passes the built-in restricted
//! checker, keeps every unknown field, and yields no patch on a second pass.

use proptest::prelude::*;
use serde_json::{Map, Value, json};

use restrictor::engine::{self, Context};
use restrictor::policy::{BUILTIN_YAML, Policy};
use restrictor::pss::{self, Level};
use restrictor::workload::WorkloadKind;

fn opt<T: Clone + std::fmt::Debug + 'static>(
    values: &[T],
) -> impl Strategy<Value = Option<T>> + use<T> {
    proptest::option::of(proptest::sample::select(values.to_vec()))
}

fn security_context() -> impl Strategy<Value = Value> {
    (
        (
            opt(&[0i64, 1, 1000, 65534]),
            opt(&[true, false]),
            opt(&[true, false]),
            opt(&[true, false]),
        ),
        (
            opt(&[vec!["ALL"], vec!["all"], vec!["NET_RAW"], vec![]]),
            opt(&[
                vec!["NET_BIND_SERVICE"],
                vec!["NET_ADMIN"],
                vec!["SYS_ADMIN", "NET_BIND_SERVICE"],
                vec!["CHOWN"],
            ]),
            opt(&["RuntimeDefault", "Unconfined", "Localhost"]),
            opt(&[true, false]),
        ),
        (
            opt(&["Default", "Unmasked"]),
            opt(&["container_t", "spc_t"]),
            opt(&["Unconfined", "RuntimeDefault"]),
            any::<bool>(),
        ),
    )
        .prop_map(
            |(
                (user, non_root, escalation, privileged),
                (drop, add, seccomp, read_only),
                (proc_mount, selinux, apparmor, future),
            )| {
                let mut sc = Map::new();
                let mut put = |key: &str, value: Option<Value>| {
                    if let Some(value) = value {
                        sc.insert(key.to_owned(), value);
                    }
                };
                put("runAsUser", user.map(Value::from));
                put("runAsNonRoot", non_root.map(Value::from));
                put("allowPrivilegeEscalation", escalation.map(Value::from));
                put("privileged", privileged.map(Value::from));
                if drop.is_some() || add.is_some() {
                    let mut caps = Map::new();
                    if let Some(drop) = drop {
                        caps.insert("drop".into(), json!(drop));
                    }
                    if let Some(add) = add {
                        caps.insert("add".into(), json!(add));
                    }
                    put("capabilities", Some(Value::Object(caps)));
                }
                put(
                    "seccompProfile",
                    seccomp.map(|t| {
                        if t == "Localhost" {
                            json!({"type": t, "localhostProfile": "p.json"})
                        } else {
                            json!({"type": t})
                        }
                    }),
                );
                put("readOnlyRootFilesystem", read_only.map(Value::from));
                put("procMount", proc_mount.map(Value::from));
                put("seLinuxOptions", selinux.map(|t| json!({"type": t})));
                put("appArmorProfile", apparmor.map(|t| json!({"type": t})));
                if future {
                    put("x-future-knob", Some(json!({"level": 3})));
                }
                Value::Object(sc)
            },
        )
}

fn container(index: usize) -> impl Strategy<Value = Value> {
    (
        proptest::option::of(security_context()),
        opt(&["nginx:1", "rancher/rancher-agent:v2.14.4", ""]),
        opt(&["", "abc123"]),
        opt(&[
            "/tmp",
            "/var/lib/rancher-data/local-catalogs/v2",
            "/var",
            "/data",
        ]),
        opt(&[0i64, 8080]),
        any::<bool>(),
    )
        .prop_map(move |(sc, image, checksum, mount, host_port, future)| {
            let mut c = json!({"name": format!("c{index}")});
            if let Some(image) = image {
                c["image"] = json!(image);
            }
            if let Some(sc) = sc {
                c["securityContext"] = sc;
            }
            if let Some(checksum) = checksum {
                c["env"] = json!([{"name": "CATTLE_CA_CHECKSUM", "value": checksum}]);
            }
            if let Some(path) = mount {
                c["volumeMounts"] = json!([{"name": "v0", "mountPath": path}]);
            }
            if let Some(port) = host_port {
                c["ports"] = json!([{"containerPort": 80, "hostPort": port}]);
            }
            if future {
                c["x-future-container"] = json!(["a", {"b": null}]);
            }
            c
        })
}

fn volume() -> impl Strategy<Value = Value> {
    proptest::sample::select(vec![
        json!({"configMap": {"name": "c"}}),
        json!({"secret": {"secretName": "s", "defaultMode": 320}}),
        json!({"emptyDir": {}}),
        json!({"projected": {"sources": []}}),
        json!({"downwardAPI": {"items": []}}),
        json!({"persistentVolumeClaim": {"claimName": "p"}}),
        json!({"csi": {"driver": "d"}}),
        json!({"ephemeral": {"volumeClaimTemplate": {"spec": {}}}}),
        json!({"image": {"reference": "r"}}),
        json!({"hostPath": {"path": "/var/run"}}),
        json!({"nfs": {"server": "s", "path": "/"}}),
        json!({"gitRepo": {"repository": "r"}}),
        json!({"iscsi": {"targetPortal": "t", "iqn": "i", "lun": 0}}),
    ])
}

fn pod_spec() -> impl Strategy<Value = Value> {
    (
        proptest::collection::vec(container(0), 0..2),
        proptest::collection::vec(container(10), 1..3),
        proptest::collection::vec(container(20), 0..2),
        proptest::collection::vec(volume(), 0..3),
        (proptest::option::of(security_context()), opt(&["hostNetwork", "hostPID", "hostIPC"])),
        (any::<bool>(), any::<bool>(), opt(&["kernel.msgmax", "net.ipv4.tcp_syncookies"])),
    )
        .prop_map(|(init, containers, ephemeral, volumes, (pod_sc, host), (affinity, future, sysctl))| {
            // Container names must be unique across lists.
            let rename = |list: Vec<Value>, prefix: &str| -> Vec<Value> {
                list.into_iter()
                    .enumerate()
                    .map(|(i, mut c)| {
                        c["name"] = json!(format!("{prefix}{i}"));
                        c
                    })
                    .collect()
            };
            let mut spec = json!({"containers": rename(containers, "main")});
            if !init.is_empty() {
                spec["initContainers"] = json!(rename(init, "init"));
            }
            if !ephemeral.is_empty() {
                spec["ephemeralContainers"] = json!(rename(ephemeral, "debug"));
            }
            let volumes: Vec<Value> = volumes
                .into_iter()
                .enumerate()
                .map(|(i, mut v)| {
                    v["name"] = json!(format!("v{i}"));
                    v
                })
                .collect();
            if !volumes.is_empty() {
                spec["volumes"] = json!(volumes);
            }
            let mut sc = pod_sc.unwrap_or_else(|| json!({}));
            if let Some(name) = sysctl {
                sc["sysctls"] = json!([{"name": name, "value": "1"}]);
            }
            spec["securityContext"] = sc;
            if let Some(host) = host {
                spec[host] = json!(true);
            }
            if affinity {
                spec["affinity"] = json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": []}}});
                spec["tolerations"] = json!([{"key": "node-role.kubernetes.io/control-plane", "operator": "Exists"}, {"key": "other", "operator": "Exists"}]);
            }
            if future {
                spec["x-future-pod-field"] = json!({"nested": [1, 2, 3]});
            }
            spec
        })
}

fn object() -> impl Strategy<Value = (Value, WorkloadKind)> {
    (pod_spec(), 0usize..4, any::<bool>()).prop_map(|(spec, shape, agent)| {
        let labels = if agent { json!({"app": "cattle-cluster-agent"}) } else { json!({"app": "x"}) };
        let template = json!({"metadata": {"labels": labels}, "spec": spec});
        let metadata = json!({"name": "o", "namespace": "cattle-system", "x-future-meta": 1});
        match shape {
            0 => (
                json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "o", "namespace": "cattle-system", "labels": template["metadata"]["labels"]}, "spec": template["spec"]}),
                WorkloadKind::Pod,
            ),
            1 => (json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": metadata, "spec": {"template": template}}), WorkloadKind::Deployment),
            2 => (json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": metadata, "spec": {"jobTemplate": {"spec": {"template": template}}}}), WorkloadKind::CronJob),
            _ => (json!({"apiVersion": "v1", "kind": "PodTemplate", "metadata": metadata, "template": template}), WorkloadKind::PodTemplate),
        }
    })
}

/// Every `(pointer, value)` of a member whose key starts with `x-future`.
fn future_fields(value: &Value, pointer: String, out: &mut Vec<(String, Value)>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                let child_pointer = format!("{pointer}/{}", restrictor::patch::escape(key));
                if key.starts_with("x-future") {
                    out.push((child_pointer.clone(), child.clone()));
                }
                future_fields(child, child_pointer, out);
            }
        }
        Value::Array(items) => {
            for (index, child) in items.iter().enumerate() {
                future_fields(child, format!("{pointer}/{index}"), out);
            }
        }
        _ => {}
    }
}

fn policies() -> [Policy; 2] {
    let remove_all = BUILTIN_YAML.replace(": deny ", ": remove ");
    [
        Policy::builtin(),
        Policy::from_yaml(&remove_all).expect("remove-all policy"),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn the_engine_denies_or_makes_compliant_idempotently((object, kind) in object()) {
        for policy in policies() {
            let mut edited = object.clone();
            let evaluation = engine::evaluate(&policy, &mut edited, kind, "cattle-system", Context::CREATE)
                .expect("the built-in rules match everything");
            let outcome = evaluation.outcome;
            if let Some(denial) = &outcome.denial {
                prop_assert!(!denial.findings.is_empty());
                prop_assert!(denial.findings.iter().all(|f| !f.reason.is_empty() && !f.field.is_empty()));
                continue;
            }
            let patch: json_patch::Patch = serde_json::from_value(serde_json::to_value(&outcome.patch).expect("ops")).expect("patch");
            let mut patched = object.clone();
            prop_assert!(json_patch::patch(&mut patched, &patch).is_ok(), "patch does not apply: {:?}", outcome.patch);
            prop_assert_eq!(&patched, &edited, "the engine's in-place result differs from its patch");

            let violations = pss::check_object(&patched, Level::Restricted).expect("pod");
            prop_assert!(violations.is_empty(), "admitted but fails restricted: {violations:?}");

            let mut future = Vec::new();
            future_fields(&object, String::new(), &mut future);
            for (pointer, value) in &future {
                prop_assert_eq!(patched.pointer(pointer), Some(value), "unknown field {} lost", pointer);
            }

            let again = engine::evaluate(&policy, &mut patched.clone(), kind, "cattle-system", Context::CREATE).expect("profile").outcome;
            prop_assert!(again.patch.is_empty(), "second pass patched: {:?}", again.patch);
            prop_assert!(again.denial.is_none());
        }
    }
}
