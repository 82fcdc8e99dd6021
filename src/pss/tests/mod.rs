mod malformed;

use super::*;
use serde_json::json;

/// A Pod that passes the restricted level.
fn compliant_pod() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "annotations": {"example.com/x": "y"}},
        "spec": {
            "securityContext": {
                "runAsNonRoot": true,
                "runAsUser": 1000,
                "seccompProfile": {"type": "RuntimeDefault"},
                "sysctls": [{"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"}],
            },
            "initContainers": [{"name": "init", "image": "busybox", "securityContext": secure_context()}],
            "containers": [{
                "name": "app",
                "image": "nginx",
                "ports": [{"containerPort": 8080}],
                "securityContext": secure_context(),
                "livenessProbe": {"httpGet": {"path": "/", "port": 8080}},
            }],
            "volumes": [{"name": "tmp", "emptyDir": {}}],
        }
    })
}

fn secure_context() -> Value {
    json!({"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}})
}

fn run(object: &Value, level: Level) -> Vec<Violation> {
    check_object(object, level).expect("object carries a pod")
}

/// `(check, field)` of every violation.
fn found(object: &Value, level: Level) -> Vec<(Control, String)> {
    run(object, level)
        .into_iter()
        .map(|v| (v.control, v.field))
        .collect()
}

fn pod_with(edit: impl FnOnce(&mut Value)) -> Value {
    let mut pod = compliant_pod();
    edit(&mut pod);
    pod
}

fn app_sc(pod: &mut Value) -> &mut Value {
    &mut pod["spec"]["containers"][0]["securityContext"]
}

fn one(check: Control, field: &str) -> Vec<(Control, String)> {
    vec![(check, field.to_owned())]
}

/// `(control, field)` pairs as [`found`] returns them.
fn expect(pairs: &[(Control, &str)]) -> Vec<(Control, String)> {
    pairs
        .iter()
        .map(|(control, field)| (*control, (*field).to_owned()))
        .collect()
}

/// The same violations at both levels.
fn assert_both(pod: &Value, expected: &[(Control, String)]) {
    assert_eq!(found(pod, Level::Baseline), expected);
    assert_eq!(found(pod, Level::Restricted), expected);
}

fn assert_clean(object: &Value) {
    for level in [Level::Baseline, Level::Restricted] {
        assert_eq!(run(object, level), [], "{level} on {object}");
    }
}

/// Counts heap allocations made by the current thread, to prove the compliant path allocates nothing.
mod counting {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    pub struct Counting;

    thread_local! {
        pub static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
    }

    // SAFETY: delegates every call to the system allocator unchanged.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
            // SAFETY: same contract as the caller's.
            unsafe { System.alloc(layout) }
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            // SAFETY: same contract as the caller's.
            unsafe { System.dealloc(ptr, layout) }
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
            // SAFETY: same contract as the caller's.
            unsafe { System.realloc(ptr, layout, new_size) }
        }
    }

    #[global_allocator]
    static GLOBAL: Counting = Counting;

    pub fn count<T>(f: impl FnOnce() -> T) -> (T, usize) {
        let before = ALLOCATIONS.with(Cell::get);
        let result = f();
        (result, ALLOCATIONS.with(Cell::get) - before)
    }
}

#[test]
fn a_compliant_pod_is_checked_without_allocating() {
    let mut pod = compliant_pod();
    pod["spec"]["os"] = json!({"name": "linux"});
    pod["spec"]["securityContext"]["seLinuxOptions"] = json!({"type": "container_t"});
    pod["spec"]["securityContext"]["appArmorProfile"] = json!({"type": "RuntimeDefault"});
    pod["metadata"]["annotations"]["container.apparmor.security.beta.kubernetes.io/app"] =
        json!("runtime/default");
    pod["spec"]["containers"][0]["securityContext"]["capabilities"]["add"] =
        json!(["NET_BIND_SERVICE"]);
    pod["spec"]["ephemeralContainers"] =
        json!([{"name": "debug", "securityContext": secure_context()}]);
    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "spec": {"template": {"metadata": pod["metadata"], "spec": pod["spec"]}},
    });
    let template = PodTemplate::locate(&deployment).expect("deployment");
    for level in [Level::Baseline, Level::Restricted] {
        let (violations, allocations) = counting::count(|| check(&template, level));
        assert_eq!(violations, []);
        assert_eq!(allocations, 0, "{level}");
    }
    // The counter works: a violation allocates its strings.
    let mut bad = deployment.clone();
    bad["spec"]["template"]["spec"]["hostPID"] = json!(true);
    let template = PodTemplate::locate(&bad).expect("deployment");
    let (_, allocations) = counting::count(|| check(&template, Level::Baseline));
    assert!(allocations > 0);
}

#[test]
fn levels_parse_and_print() {
    assert_eq!("baseline".parse::<Level>(), Ok(Level::Baseline));
    assert_eq!("restricted".parse::<Level>(), Ok(Level::Restricted));
    assert_eq!(Level::Restricted.as_str(), "restricted");
    assert_eq!(Level::Baseline.to_string(), "baseline");
    let err = "privileged".parse::<Level>().unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"unknown Pod Security level "privileged": expected "baseline" or "restricted""#
    );
    assert!("Restricted".parse::<Level>().is_err());
    assert_eq!(
        serde_json::from_value::<Level>(json!("baseline")).ok(),
        Some(Level::Baseline)
    );
    assert_eq!(
        serde_json::to_value(Level::Restricted).ok(),
        Some(json!("restricted"))
    );
}

#[test]
fn compliant_pod_and_workloads_have_no_violations() {
    let pod = compliant_pod();
    assert_clean(&pod);
    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "spec": {"template": {"metadata": pod["metadata"], "spec": pod["spec"]}},
    });
    assert_clean(&deployment);
    let service = json!({"apiVersion": "v1", "kind": "Service", "spec": {"ports": [{"port": 80}]}});
    assert_eq!(check_object(&service, Level::Restricted), None);
}

#[test]
fn a_minimal_pod_passes_baseline_but_not_restricted() {
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "spec": {"containers": [{"name": "c", "image": "x"}]}});
    assert_eq!(run(&pod, Level::Baseline), []);
    let restricted = found(&pod, Level::Restricted);
    assert_eq!(
        restricted,
        expect(&[
            (
                Control::Capabilities,
                "spec.containers[0].securityContext.capabilities.drop"
            ),
            (
                Control::PrivilegeEscalation,
                "spec.containers[0].securityContext.allowPrivilegeEscalation"
            ),
            (
                Control::RunningAsNonRoot,
                "spec.containers[0].securityContext.runAsNonRoot"
            ),
            (
                Control::Seccomp,
                "spec.containers[0].securityContext.seccompProfile.type"
            ),
        ])
    );
    assert!(
        run(&pod, Level::Restricted)
            .iter()
            .all(|v| v.level == Level::Restricted)
    );
}

#[test]
fn host_process() {
    let pod = pod_with(|p| {
        p["spec"]["securityContext"]["windowsOptions"] = json!({"hostProcess": true});
        app_sc(p)["windowsOptions"] = json!({"hostProcess": true});
    });
    let expected = expect(&[
        (
            Control::HostProcess,
            "spec.securityContext.windowsOptions.hostProcess",
        ),
        (
            Control::HostProcess,
            "spec.containers[0].securityContext.windowsOptions.hostProcess",
        ),
    ]);
    assert_both(&pod, &expected);
    let violation = &run(&pod, Level::Baseline)[1];
    assert_eq!(violation.level, Level::Baseline);
    assert_eq!(violation.container.as_deref(), Some("app"));
    assert_clean(&pod_with(|p| {
        p["spec"]["securityContext"]["windowsOptions"] =
            json!({"hostProcess": false, "runAsUserName": "x"});
        app_sc(p)["windowsOptions"] = json!({"hostProcess": null});
    }));
}

#[test]
fn host_namespaces() {
    for name in ["hostNetwork", "hostPID", "hostIPC"] {
        for bad in [json!(true), json!("yes")] {
            let pod = pod_with(|p| p["spec"][name] = bad.clone());
            let expected = one(Control::HostNamespaces, &format!("spec.{name}"));
            assert_both(&pod, &expected);
        }
        assert_clean(&pod_with(|p| p["spec"][name] = json!(false)));
    }
}

#[test]
fn privileged_containers() {
    for bad in [json!(true), json!("yes"), json!(1)] {
        let pod = pod_with(|p| app_sc(p)["privileged"] = bad.clone());
        let expected = one(
            Control::PrivilegedContainers,
            "spec.containers[0].securityContext.privileged",
        );
        assert_both(&pod, &expected);
    }
    assert_clean(&pod_with(|p| app_sc(p)["privileged"] = json!(false)));
    assert_clean(&pod_with(|p| app_sc(p)["privileged"] = Value::Null));
}

#[test]
fn capabilities() {
    // Beyond the default set: a baseline violation at both levels.
    let pod =
        pod_with(|p| app_sc(p)["capabilities"]["add"] = json!(["NET_BIND_SERVICE", "NET_ADMIN"]));
    let expected = one(
        Control::Capabilities,
        "spec.containers[0].securityContext.capabilities.add[1]",
    );
    assert_both(&pod, &expected);
    let violation = &run(&pod, Level::Restricted)[0];
    assert_eq!(violation.level, Level::Baseline);
    assert_eq!(
        violation.detail,
        r#"capability "NET_ADMIN" must not be added"#
    );

    // In the default set: fine for baseline, only NET_BIND_SERVICE may be added under restricted.
    let pod = pod_with(|p| app_sc(p)["capabilities"]["add"] = json!(["CHOWN"]));
    assert_eq!(run(&pod, Level::Baseline), []);
    let restricted = run(&pod, Level::Restricted);
    assert_eq!(restricted.len(), 1);
    assert_eq!(restricted[0].level, Level::Restricted);
    assert_eq!(
        restricted[0].field,
        "spec.containers[0].securityContext.capabilities.add[0]"
    );

    assert_clean(&pod_with(|p| {
        app_sc(p)["capabilities"]["add"] = json!(["NET_BIND_SERVICE"])
    }));

    // Restricted requires dropping ALL.
    for caps in [
        json!({"drop": ["NET_RAW"]}),
        json!(null),
        json!({"drop": "ALL"}),
    ] {
        let pod = pod_with(|p| app_sc(p)["capabilities"] = caps.clone());
        assert_eq!(run(&pod, Level::Baseline), []);
        assert_eq!(
            found(&pod, Level::Restricted),
            one(
                Control::Capabilities,
                "spec.containers[0].securityContext.capabilities.drop"
            )
        );
    }
    // A wrongly typed add list is never accepted.
    let pod = pod_with(|p| app_sc(p)["capabilities"]["add"] = json!("SYS_ADMIN"));
    assert_eq!(
        found(&pod, Level::Baseline),
        one(
            Control::Capabilities,
            "spec.containers[0].securityContext.capabilities.add"
        )
    );
}

#[test]
fn capabilities_on_windows_pods() {
    // Windows pods skip the restricted part (drop ALL, NET_BIND_SERVICE only) but not baseline.
    let pod = pod_with(|p| {
        p["spec"]["os"] = json!({"name": "windows"});
        app_sc(p)["capabilities"] = json!({"add": ["CHOWN"]});
    });
    assert_clean(&pod);
    let pod = pod_with(|p| {
        p["spec"]["os"] = json!({"name": "windows"});
        app_sc(p)["capabilities"] = json!({"add": ["SYS_ADMIN"]});
    });
    let expected = one(
        Control::Capabilities,
        "spec.containers[0].securityContext.capabilities.add[0]",
    );
    assert_eq!(found(&pod, Level::Restricted), expected);
}

#[test]
fn host_path_volumes() {
    let pod = pod_with(|p| {
        p["spec"]["volumes"] = json!([{"name": "tmp", "emptyDir": {}}, {"name": "data", "hostPath": {"path": "/var"}}]);
    });
    let expected = one(Control::HostPathVolumes, "spec.volumes[1].hostPath");
    assert_eq!(found(&pod, Level::Baseline), expected);
    // Reported once under restricted too, as the baseline control.
    assert_eq!(found(&pod, Level::Restricted), expected);
    let violation = &run(&pod, Level::Restricted)[0];
    assert_eq!(violation.level, Level::Baseline);
    assert_eq!(violation.detail, r#"hostPath volume "data" is not allowed"#);
}

#[test]
fn volume_types() {
    let pod = pod_with(|p| {
        p["spec"]["volumes"] = json!([
            {"name": "share", "nfs": {"server": "s", "path": "/"}},
            {"name": "repo", "gitRepo": {"repository": "r"}},
        ]);
    });
    assert_eq!(run(&pod, Level::Baseline), []);
    assert_eq!(
        found(&pod, Level::Restricted),
        [
            (Control::VolumeTypes, "spec.volumes[0].nfs".to_owned()),
            (Control::VolumeTypes, "spec.volumes[1].gitRepo".to_owned()),
        ]
    );
    assert_eq!(
        run(&pod, Level::Restricted)[0].detail,
        r#"volume "share" uses restricted volume type "nfs""#
    );

    let allowed = json!([
        {"name": "a", "configMap": {"name": "c"}},
        {"name": "b", "csi": {"driver": "d"}},
        {"name": "c", "downwardAPI": {"items": []}},
        {"name": "d", "emptyDir": {}},
        {"name": "e", "ephemeral": {"volumeClaimTemplate": {"spec": {}}}},
        {"name": "f", "persistentVolumeClaim": {"claimName": "p"}},
        {"name": "g", "projected": {"sources": []}},
        {"name": "h", "secret": {"secretName": "s"}},
        {"name": "i", "image": {"reference": "registry/x:1"}},
        {"name": "j"},
        {"name": "k", "secret": {"secretName": "s"}, "nfs": null},
    ]);
    assert_clean(&pod_with(|p| p["spec"]["volumes"] = allowed));
}

#[test]
fn host_ports() {
    let pod = pod_with(|p| {
        p["spec"]["containers"][0]["ports"] =
            json!([{"containerPort": 80}, {"containerPort": 443, "hostPort": 443}]);
        p["spec"]["initContainers"][0]["ports"] = json!([{"containerPort": 1, "hostPort": "1"}]);
    });
    let expected = expect(&[
        (
            Control::HostPorts,
            "spec.initContainers[0].ports[0].hostPort",
        ),
        (Control::HostPorts, "spec.containers[0].ports[1].hostPort"),
    ]);
    assert_both(&pod, &expected);
    assert_clean(&pod_with(|p| {
        p["spec"]["containers"][0]["ports"] = json!([{"containerPort": 80, "hostPort": 0}])
    }));
}

#[test]
fn apparmor_annotations() {
    let key = "container.apparmor.security.beta.kubernetes.io/app";
    for bad in [json!("unconfined"), json!("docker-default"), json!(true)] {
        let pod = pod_with(|p| p["metadata"]["annotations"][key] = bad.clone());
        let expected = one(Control::AppArmor, &format!("metadata.annotations[{key}]"));
        assert_both(&pod, &expected);
        assert_eq!(
            run(&pod, Level::Baseline)[0].container.as_deref(),
            Some("app")
        );
    }
    for good in ["runtime/default", "localhost/my-profile", ""] {
        assert_clean(&pod_with(|p| {
            p["metadata"]["annotations"][key] = json!(good)
        }));
    }
}

#[test]
fn apparmor_profile_fields() {
    let pod = pod_with(|p| {
        p["spec"]["securityContext"]["appArmorProfile"] = json!({"type": "Unconfined"});
        p["spec"]["initContainers"][0]["securityContext"]["appArmorProfile"] =
            json!({"type": "Unconfined"});
    });
    let expected = expect(&[
        (
            Control::AppArmor,
            "spec.securityContext.appArmorProfile.type",
        ),
        (
            Control::AppArmor,
            "spec.initContainers[0].securityContext.appArmorProfile.type",
        ),
    ]);
    assert_both(&pod, &expected);
    // A container may tighten a bad pod default, but the pod-level value is still reported.
    let pod = pod_with(|p| {
        p["spec"]["securityContext"]["appArmorProfile"] = json!({"type": "Unconfined"});
        app_sc(p)["appArmorProfile"] = json!({"type": "RuntimeDefault"});
    });
    assert_eq!(
        found(&pod, Level::Baseline),
        one(
            Control::AppArmor,
            "spec.securityContext.appArmorProfile.type"
        )
    );
    assert_clean(&pod_with(|p| {
        p["spec"]["securityContext"]["appArmorProfile"] = json!({"type": "RuntimeDefault"});
        app_sc(p)["appArmorProfile"] =
            json!({"type": "Localhost", "localhostProfile": "k8s-nginx"});
    }));
}

#[test]
fn selinux() {
    let pod = pod_with(|p| {
        p["spec"]["securityContext"]["seLinuxOptions"] = json!({"type": "spc_t"});
        app_sc(p)["seLinuxOptions"] =
            json!({"user": "system_u", "role": "system_r", "level": "s0:c1"});
    });
    let expected = expect(&[
        (Control::SELinux, "spec.securityContext.seLinuxOptions.type"),
        (
            Control::SELinux,
            "spec.containers[0].securityContext.seLinuxOptions.user",
        ),
        (
            Control::SELinux,
            "spec.containers[0].securityContext.seLinuxOptions.role",
        ),
    ]);
    assert_both(&pod, &expected);
    for good in [
        "container_t",
        "container_init_t",
        "container_kvm_t",
        "container_engine_t",
        "",
    ] {
        assert_clean(&pod_with(|p| {
            p["spec"]["securityContext"]["seLinuxOptions"] =
                json!({"type": good, "level": "s0:c123,c456"});
            app_sc(p)["seLinuxOptions"] = json!({"type": good, "user": "", "role": null});
        }));
    }
}

#[test]
fn proc_mount_type() {
    let pod = pod_with(|p| app_sc(p)["procMount"] = json!("Unmasked"));
    let expected = one(
        Control::ProcMountType,
        "spec.containers[0].securityContext.procMount",
    );
    assert_both(&pod, &expected);
    assert_clean(&pod_with(|p| app_sc(p)["procMount"] = json!("Default")));

    // User-namespaced pods may unmask /proc under baseline, never under restricted.
    let pod = pod_with(|p| {
        p["spec"]["hostUsers"] = json!(false);
        app_sc(p)["procMount"] = json!("Unmasked");
    });
    assert_eq!(run(&pod, Level::Baseline), []);
    let restricted = run(&pod, Level::Restricted);
    assert_eq!(restricted.len(), 1);
    assert_eq!(
        (restricted[0].control, restricted[0].level),
        (Control::ProcMountType, Level::Restricted)
    );
}

#[test]
fn seccomp_baseline() {
    let pod = pod_with(|p| {
        p["spec"]["securityContext"]["seccompProfile"] = json!({"type": "Unconfined"});
        app_sc(p)["seccompProfile"] = json!({"type": "Unconfined"});
    });
    let expected = expect(&[
        (Control::Seccomp, "spec.securityContext.seccompProfile.type"),
        (
            Control::Seccomp,
            "spec.containers[0].securityContext.seccompProfile.type",
        ),
    ]);
    assert_eq!(found(&pod, Level::Baseline), expected);
    // Under restricted the init container has no valid profile of its own or from the pod.
    let mut restricted = expected.clone();
    restricted.insert(
        1,
        (
            Control::Seccomp,
            "spec.initContainers[0].securityContext.seccompProfile.type".to_owned(),
        ),
    );
    assert_eq!(found(&pod, Level::Restricted), restricted);
    assert!(
        run(&pod, Level::Baseline)
            .iter()
            .all(|v| v.level == Level::Baseline)
    );
}

#[test]
fn seccomp_restricted() {
    // Nothing anywhere: every container is reported under restricted only.
    let pod = pod_with(|p| {
        p["spec"]["securityContext"]
            .as_object_mut()
            .unwrap()
            .remove("seccompProfile");
    });
    assert_eq!(run(&pod, Level::Baseline), []);
    assert_eq!(
        found(&pod, Level::Restricted),
        expect(&[
            (
                Control::Seccomp,
                "spec.initContainers[0].securityContext.seccompProfile.type"
            ),
            (
                Control::Seccomp,
                "spec.containers[0].securityContext.seccompProfile.type"
            ),
        ])
    );
    // Container-level profiles suffice without a pod-level one.
    assert_clean(&pod_with(|p| {
        p["spec"]["securityContext"]
            .as_object_mut()
            .unwrap()
            .remove("seccompProfile");
        app_sc(p)["seccompProfile"] = json!({"type": "Localhost", "localhostProfile": "p.json"});
        p["spec"]["initContainers"][0]["securityContext"]["seccompProfile"] =
            json!({"type": "RuntimeDefault"});
    }));
    // Pod-level Localhost covers containers.
    assert_clean(&pod_with(|p| {
        p["spec"]["securityContext"]["seccompProfile"] =
            json!({"type": "Localhost", "localhostProfile": "p.json"});
    }));
    // A container overriding a good pod-level profile with Unconfined is caught.
    let pod = pod_with(|p| app_sc(p)["seccompProfile"] = json!({"type": "Unconfined"}));
    let expected = one(
        Control::Seccomp,
        "spec.containers[0].securityContext.seccompProfile.type",
    );
    assert_both(&pod, &expected);
    // A profile without a type is not a valid setting.
    let pod = pod_with(|p| app_sc(p)["seccompProfile"] = json!({}));
    assert_eq!(found(&pod, Level::Restricted), expected);
    // Windows pods skip the restricted requirement.
    assert_clean(&pod_with(|p| {
        p["spec"]["os"] = json!({"name": "windows"});
        p["spec"]["securityContext"]
            .as_object_mut()
            .unwrap()
            .remove("seccompProfile");
    }));
}

#[test]
fn sysctls() {
    let pod = pod_with(|p| {
        p["spec"]["securityContext"]["sysctls"] = json!([
            {"name": "net.ipv4.tcp_syncookies", "value": "1"},
            {"name": "net.core.somaxconn", "value": "1024"},
            {"value": "x"},
        ]);
    });
    let expected = expect(&[
        (Control::Sysctls, "spec.securityContext.sysctls[1].name"),
        (Control::Sysctls, "spec.securityContext.sysctls[2].name"),
    ]);
    assert_both(&pod, &expected);
    let safe: Vec<Value> = SAFE_SYSCTLS
        .iter()
        .map(|name| json!({"name": name, "value": "1"}))
        .collect();
    assert_clean(&pod_with(|p| {
        p["spec"]["securityContext"]["sysctls"] = Value::Array(safe)
    }));
    assert_clean(&pod_with(|p| {
        p["spec"]["securityContext"]["sysctls"] = json!([])
    }));
}

#[test]
fn host_probes_and_lifecycle_hooks() {
    let pod = pod_with(|p| {
        let c = &mut p["spec"]["containers"][0];
        c["readinessProbe"] = json!({"tcpSocket": {"port": 1, "host": "10.0.0.1"}});
        c["lifecycle"] =
            json!({"preStop": {"httpGet": {"port": 1, "host": "metadata.google.internal"}}});
    });
    let expected = expect(&[
        (
            Control::HostProbesLifecycle,
            "spec.containers[0].readinessProbe.tcpSocket.host",
        ),
        (
            Control::HostProbesLifecycle,
            "spec.containers[0].lifecycle.preStop.httpGet.host",
        ),
    ]);
    assert_both(&pod, &expected);
    assert_clean(&pod_with(|p| {
        p["spec"]["containers"][0]["startupProbe"] = json!({"httpGet": {"port": 1, "host": ""}});
    }));
}

#[test]
fn privilege_escalation() {
    for bad in [json!(true), Value::Null, json!("false")] {
        let pod = pod_with(|p| app_sc(p)["allowPrivilegeEscalation"] = bad.clone());
        assert_eq!(run(&pod, Level::Baseline), []);
        assert_eq!(
            found(&pod, Level::Restricted),
            one(
                Control::PrivilegeEscalation,
                "spec.containers[0].securityContext.allowPrivilegeEscalation"
            )
        );
    }
    let pod = pod_with(|p| {
        app_sc(p)
            .as_object_mut()
            .unwrap()
            .remove("allowPrivilegeEscalation");
    });
    assert_eq!(
        run(&pod, Level::Restricted)[0].detail,
        "must be false, not undefined"
    );
    // Linux-only control: Windows pods skip it.
    assert_clean(&pod_with(|p| {
        p["spec"]["os"] = json!({"name": "windows"});
        app_sc(p)["allowPrivilegeEscalation"] = json!(true);
    }));
}

#[test]
fn running_as_non_root() {
    let field = "spec.containers[0].securityContext.runAsNonRoot";
    // Pod-level true, container unset: fine. Container false overrides it: violation.
    let pod = pod_with(|p| app_sc(p)["runAsNonRoot"] = json!(false));
    assert_eq!(run(&pod, Level::Baseline), []);
    assert_eq!(
        found(&pod, Level::Restricted),
        one(Control::RunningAsNonRoot, field)
    );
    // Pod-level unset: each container must opt in.
    let unset = |p: &mut Value| {
        p["spec"]["securityContext"]
            .as_object_mut()
            .unwrap()
            .remove("runAsNonRoot");
    };
    let pod = pod_with(unset);
    assert_eq!(
        found(&pod, Level::Restricted),
        expect(&[
            (
                Control::RunningAsNonRoot,
                "spec.initContainers[0].securityContext.runAsNonRoot"
            ),
            (Control::RunningAsNonRoot, field),
        ])
    );
    assert_clean(&pod_with(|p| {
        unset(p);
        app_sc(p)["runAsNonRoot"] = json!(true);
        p["spec"]["initContainers"][0]["securityContext"]["runAsNonRoot"] = json!(true);
    }));
    // Pod-level false is reported even when every container overrides it with true.
    let pod = pod_with(|p| {
        p["spec"]["securityContext"]["runAsNonRoot"] = json!(false);
        app_sc(p)["runAsNonRoot"] = json!(true);
        p["spec"]["initContainers"][0]["securityContext"]["runAsNonRoot"] = json!(true);
    });
    assert_eq!(
        found(&pod, Level::Restricted),
        one(
            Control::RunningAsNonRoot,
            "spec.securityContext.runAsNonRoot"
        )
    );
    // User-namespaced pods are exempt.
    assert_clean(&pod_with(|p| {
        p["spec"]["hostUsers"] = json!(false);
        p["spec"]["securityContext"]["runAsNonRoot"] = json!(false);
    }));
}

#[test]
fn running_as_non_root_user() {
    // Container 0 overrides a good pod-level user.
    let pod = pod_with(|p| app_sc(p)["runAsUser"] = json!(0));
    assert_eq!(run(&pod, Level::Baseline), []);
    assert_eq!(
        found(&pod, Level::Restricted),
        one(
            Control::RunningAsNonRootUser,
            "spec.containers[0].securityContext.runAsUser"
        )
    );
    // Pod-level 0 is reported even when containers override it.
    let pod = pod_with(|p| {
        p["spec"]["securityContext"]["runAsUser"] = json!(0);
        app_sc(p)["runAsUser"] = json!(1000);
    });
    assert_eq!(
        found(&pod, Level::Restricted),
        one(
            Control::RunningAsNonRootUser,
            "spec.securityContext.runAsUser"
        )
    );
    // Unset at container level when the pod level is fine, or unset everywhere: fine.
    assert_clean(&pod_with(|p| {
        p["spec"]["securityContext"]
            .as_object_mut()
            .unwrap()
            .remove("runAsUser");
    }));
    let pod = pod_with(|p| app_sc(p)["runAsUser"] = json!("0"));
    assert_eq!(run(&pod, Level::Restricted).len(), 1);
    assert_clean(&pod_with(|p| {
        p["spec"]["hostUsers"] = json!(false);
        app_sc(p)["runAsUser"] = json!(0);
    }));
}

#[test]
fn ephemeral_containers_are_checked() {
    let pod = pod_with(|p| {
        p["spec"]["ephemeralContainers"] =
            json!([{"name": "debug", "image": "busybox", "securityContext": {"privileged": true}}]);
    });
    assert_eq!(
        found(&pod, Level::Baseline),
        one(
            Control::PrivilegedContainers,
            "spec.ephemeralContainers[0].securityContext.privileged"
        )
    );
    let restricted = run(&pod, Level::Restricted);
    assert!(
        restricted
            .iter()
            .all(|v| v.container.as_deref() == Some("debug"))
    );
    assert!(
        restricted
            .iter()
            .any(|v| v.control == Control::PrivilegeEscalation)
    );
}

#[test]
fn field_paths_use_the_workload_prefix() {
    let mut pod = compliant_pod();
    pod["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = json!(true);
    pod["metadata"]["annotations"]["container.apparmor.security.beta.kubernetes.io/app"] =
        json!("unconfined");
    let template = json!({"metadata": pod["metadata"], "spec": pod["spec"]});
    let deployment =
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "spec": {"template": template}});
    let cronjob = json!({"apiVersion": "batch/v1", "kind": "CronJob", "spec": {"jobTemplate": {"spec": {"template": template}}}});
    assert_eq!(
        found(&deployment, Level::Restricted),
        [
            (Control::AppArmor, "spec.template.metadata.annotations[container.apparmor.security.beta.kubernetes.io/app]".to_owned()),
            (Control::PrivilegeEscalation, "spec.template.spec.containers[0].securityContext.allowPrivilegeEscalation".to_owned()),
        ]
    );
    assert_eq!(
        found(&cronjob, Level::Restricted),
        [
            (Control::AppArmor, "spec.jobTemplate.spec.template.metadata.annotations[container.apparmor.security.beta.kubernetes.io/app]".to_owned()),
            (Control::PrivilegeEscalation, "spec.jobTemplate.spec.template.spec.containers[0].securityContext.allowPrivilegeEscalation".to_owned()),
        ]
    );
}

#[test]
fn violations_are_ordered_pod_level_first_then_containers_in_start_order() {
    let pod = pod_with(|p| {
        p["spec"]["ephemeralContainers"] =
            json!([{"name": "debug", "securityContext": secure_context()}]);
        p["spec"]["ephemeralContainers"][0]["securityContext"]["privileged"] = json!(true);
        app_sc(p)["privileged"] = json!(true);
        p["spec"]["initContainers"][0]["securityContext"]["privileged"] = json!(true);
        p["spec"]["hostPID"] = json!(true);
    });
    let fields: Vec<String> = run(&pod, Level::Baseline)
        .into_iter()
        .map(|v| v.field)
        .collect();
    assert_eq!(
        fields,
        [
            "spec.hostPID",
            "spec.initContainers[0].securityContext.privileged",
            "spec.containers[0].securityContext.privileged",
            "spec.ephemeralContainers[0].securityContext.privileged",
        ]
    );
}

#[test]
fn display_is_one_line_with_the_container() {
    let pod = pod_with(|p| app_sc(p)["allowPrivilegeEscalation"] = json!(true));
    let violation = &run(&pod, Level::Restricted)[0];
    assert_eq!(
        violation.to_string(),
        r#"Privilege Escalation: spec.containers[0].securityContext.allowPrivilegeEscalation: must be false, not true (container "app")"#
    );
    let pod = pod_with(|p| p["spec"]["hostNetwork"] = json!(true));
    assert_eq!(
        run(&pod, Level::Baseline)[0].to_string(),
        "Host Namespaces: spec.hostNetwork: must be false or unset, not true"
    );
}
