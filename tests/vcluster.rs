//! The vcluster config `charts/vcluster/restricted-host.yaml` (issue 11), against the upstream
//! vcluster chart in `../shared/vcluster-chart` (read in place, never copied):
//!
//! - the chart renders with it (its values.schema.json accepts it) and every pod it renders on the
//!   host passes restricted, by `restrictor check` and by `ci/pss_restricted.py` (written from the
//!   upstream evaluator, not from restrictor) plus `kubernetes-validate` for the schemas; with the
//!   chart's defaults the same pod fails both checkers;
//! - what the syncer applies inside the vcluster (`experimental.deploy.vcluster.manifests`, read
//!   back from the config Secret the chart renders, split the way the syncer splits it) is exactly
//!   `helm template charts/restrictor` for the script's options, holds no secret material, and
//!   passes restricted; `charts/vcluster/generate.sh --check` accepts the shipped file and rejects a
//!   stale one;
//! - CoreDNS, as the syncer renders it with the file's settings, passes on its own (it starts before
//!   restrictor), and a StatefulSet pod with `spec.subdomain`, after restrictor's mutation plus the
//!   `vcluster-rewrite-hosts` init container and emptyDir the syncer adds, still passes.
//!
//! Needs helm (`RESTRICTOR_HELM`, else `ci/.tools/bin/helm`), python3 with PyYAML and
//! kubernetes-validate (`ci/install-k8s-tools.sh`; `RESTRICTOR_PYTHON` picks the interpreter) and
//! the shared directory (`../shared` beside the checkout, or `RESTRICTOR_SHARED_DIR`: `support::shared_dir`). Without one of
//! them a test prints why it is skipped, and fails instead when `CI` is set.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde::Deserialize;
use serde_json::{Value, json};
use support::TempDir;

const VCLUSTER_RELEASE: &str = "vcl1";
const RESTRICTOR_RELEASE: &str = "restrictor";
const RESTRICTOR_NS: &str = "restrictor-system";
/// A host at the chart's minimum Kubernetes version (the vcluster chart switches on >= 1.27).
const KUBE_VERSION: &str = "1.30.0";
/// The syncer's UID the file sets; CoreDNS and the rewrite-hosts init container run as it.
const SYNCER_UID: u64 = 12345;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn shipped_file() -> PathBuf {
    repo().join("charts/vcluster/restricted-host.yaml")
}

struct Tools {
    helm: PathBuf,
    python: PathBuf,
    shared: PathBuf,
}

impl Tools {
    /// The tools, or None after printing why the test is skipped (a panic under `CI`).
    fn find() -> Option<Self> {
        let helm = std::env::var_os("RESTRICTOR_HELM")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo().join("ci/.tools/bin/helm"));
        let python = PathBuf::from(
            std::env::var_os("RESTRICTOR_PYTHON").unwrap_or_else(|| "python3".into()),
        );
        let shared = support::shared_dir();
        let python_ok = Command::new(&python)
            .args(["-c", "import yaml, kubernetes_validate"])
            .output()
            .is_ok_and(|o| o.status.success());
        let missing = if !helm.exists() {
            Some(format!(
                "helm not found at {} (set RESTRICTOR_HELM or run ci/install-k8s-tools.sh)",
                helm.display()
            ))
        } else if !python_ok {
            Some(format!(
                "{} cannot import yaml and kubernetes_validate (run ci/install-k8s-tools.sh, or set RESTRICTOR_PYTHON)",
                python.display()
            ))
        } else if !shared.join("vcluster-chart/values.schema.json").exists() {
            Some(format!(
                "the upstream vcluster chart is not at {} (CI lays ../shared beside the checkout; RESTRICTOR_SHARED_DIR names another place)",
                shared.join("vcluster-chart").display()
            ))
        } else {
            None
        };
        match missing {
            None => Some(Self {
                helm,
                python,
                shared,
            }),
            Some(reason) if std::env::var_os("CI").is_some() => panic!("{reason}, and CI is set"),
            Some(reason) => {
                eprintln!("SKIPPED: {reason}; set CI=1 to make this a failure");
                None
            }
        }
    }

    fn vcluster_chart(&self) -> PathBuf {
        self.shared.join("vcluster-chart")
    }

    /// `helm template` of the upstream vcluster chart with these extra arguments.
    fn render_vcluster(&self, args: &[&str]) -> Output {
        run(Command::new(&self.helm)
            .args(["template", VCLUSTER_RELEASE])
            .arg(self.vcluster_chart())
            .args([
                "--namespace",
                VCLUSTER_RELEASE,
                "--kube-version",
                KUBE_VERSION,
            ])
            .args(args))
    }

    fn render_vcluster_ok(&self, args: &[&str]) -> String {
        let out = self.render_vcluster(args);
        assert!(
            out.status.success(),
            "helm template of the vcluster chart {args:?} failed: {}",
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    /// `helm template charts/restrictor` with the options generate.sh documents, written here
    /// independently of the script so that a drift in either shows.
    fn render_restrictor(&self) -> String {
        let out = run(Command::new(&self.helm)
            .args(["template", RESTRICTOR_RELEASE])
            .arg(repo().join("charts/restrictor"))
            .args(["--namespace", RESTRICTOR_NS, "--kube-version", KUBE_VERSION])
            .args(["--set", "uninstallHook.enabled=false"]));
        assert!(
            out.status.success(),
            "helm template charts/restrictor failed: {}",
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    /// `ci/pss_restricted.py` on a file: (exit code, violations).
    fn pss_restricted(&self, file: &Path) -> (i32, String) {
        let out = run(Command::new(&self.python)
            .arg(repo().join("ci/pss_restricted.py"))
            .arg(file));
        (out.status.code().unwrap_or(-1), text(&out.stdout))
    }

    /// `kubernetes-validate --strict` at the chart's minimum version and the newest it knows.
    fn assert_schemas_valid(&self, file: &Path) {
        let newest = run(Command::new(&self.python).args([
            "-c",
            "import kubernetes_validate.utils as u; print(u.latest_version())",
        ]));
        assert!(newest.status.success(), "{}", text(&newest.stderr));
        for version in [
            KUBE_VERSION.to_owned(),
            text(&newest.stdout).trim().to_owned(),
        ] {
            let out = run(Command::new(&self.python)
                .args(["-m", "kubernetes_validate", "--strict", "-k", &version])
                .arg(file));
            assert!(
                out.status.success(),
                "kubernetes-validate --strict -k {version} {}: {}{}",
                file.display(),
                text(&out.stdout),
                text(&out.stderr)
            );
        }
    }
}

fn run(command: &mut Command) -> Output {
    command
        .output()
        .unwrap_or_else(|e| panic!("running {command:?}: {e}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `restrictor check --level restricted FILE`: (exit code, violations).
fn restrictor_check(file: &Path) -> (i32, String) {
    let out = run(Command::new(env!("CARGO_BIN_EXE_restrictor"))
        .args(["check", "--level", "restricted"])
        .arg(file));
    (out.status.code().unwrap_or(-1), text(&out.stdout))
}

/// Both checkers agree that every pod in `file` passes restricted.
fn assert_restricted(tools: &Tools, file: &Path) {
    let (code, report) = restrictor_check(file);
    assert_eq!(code, 0, "restrictor check {}:\n{report}", file.display());
    let (code, report) = tools.pss_restricted(file);
    assert_eq!(
        code,
        0,
        "ci/pss_restricted.py {}:\n{report}",
        file.display()
    );
}

fn parse_documents(yaml: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(yaml)
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("YAML: {e}")))
        .filter(|doc| !doc.is_null())
        .collect()
}

fn write(dir: &TempDir, name: &str, content: &str) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, content).unwrap();
    path
}

fn write_objects(dir: &TempDir, name: &str, objects: &[Value]) -> PathBuf {
    let yaml: Vec<String> = objects
        .iter()
        .map(|o| serde_yaml_ng::to_string(o).unwrap())
        .collect();
    write(dir, name, &yaml.join("---\n"))
}

fn kind(object: &Value) -> &str {
    object["kind"].as_str().unwrap_or_default()
}

const POD_BEARING: [&str; 9] = [
    "Pod",
    "PodTemplate",
    "ReplicationController",
    "ReplicaSet",
    "Deployment",
    "StatefulSet",
    "DaemonSet",
    "Job",
    "CronJob",
];

fn pod_bearing(objects: &[Value]) -> Vec<String> {
    objects
        .iter()
        .filter(|o| POD_BEARING.contains(&kind(o)))
        .map(|o| format!("{}/{}", kind(o), o["metadata"]["name"].as_str().unwrap()))
        .collect()
}

fn shipped_values() -> Value {
    let text = std::fs::read_to_string(shipped_file()).unwrap();
    parse_documents(&text).remove(0)
}

/// What the syncer reads: the chart stores the values in Secret vc-config-<release>, and the
/// deployer takes experimental.deploy.vcluster.manifests from there.
fn deployed_manifests(host_rendering: &[Value]) -> String {
    use base64::Engine as _;
    let secret = host_rendering
        .iter()
        .find(|o| {
            kind(o) == "Secret"
                && o["metadata"]["name"] == format!("vc-config-{VCLUSTER_RELEASE}").as_str()
        })
        .expect("the chart renders the config Secret");
    let config = base64::engine::general_purpose::STANDARD
        .decode(secret["data"]["config.yaml"].as_str().unwrap())
        .unwrap();
    let config = parse_documents(&text(&config)).remove(0);
    config["experimental"]["deploy"]["vcluster"]["manifests"]
        .as_str()
        .expect("experimental.deploy.vcluster.manifests is set")
        .to_owned()
}

/// The objects the syncer's deployer applies from a manifests string: split on "\n---" (its
/// ManifestStringToUnstructuredArray), each part parsed, empty parts skipped.
fn split_like_the_syncer(manifests: &str) -> Vec<Value> {
    manifests
        .split("\n---")
        .filter_map(|part| {
            let value: Value = serde_yaml_ng::from_str(part)
                .unwrap_or_else(|e| panic!("a part the syncer would fail on: {e}\n{part}"));
            (!value.is_null() && value.as_object().is_some_and(|m| !m.is_empty())).then_some(value)
        })
        .collect()
}

#[test]
fn the_vcluster_chart_accepts_the_file_and_every_host_pod_passes_restricted() {
    let Some(tools) = Tools::find() else { return };
    let dir = TempDir::new("vcluster-host");
    let file = shipped_file();
    let rendered = tools.render_vcluster_ok(&["-f", file.to_str().unwrap()]);
    let objects = parse_documents(&rendered);
    assert_eq!(
        pod_bearing(&objects),
        [format!("StatefulSet/{VCLUSTER_RELEASE}")],
        "the pods the chart renders on the host with this file (the test must see each of them)"
    );
    let host = write(&dir, "host.yaml", &rendered);
    assert_restricted(&tools, &host);
    tools.assert_schemas_valid(&host);

    // The schema really is applied to the values: a misspelt key of the kind this file sets fails.
    let typo = tools.render_vcluster(&[
        "-f",
        file.to_str().unwrap(),
        "--set",
        "controlPlane.statefulSet.security.podSecurityContxt.runAsNonRoot=true",
    ]);
    assert!(!typo.status.success(), "a misspelt key must be rejected");
    assert!(
        text(&typo.stderr).contains("podSecurityContxt"),
        "the schema error names the key: {}",
        text(&typo.stderr)
    );

    // Every container of the control-plane pod runs as the syncer UID the rest of the tests assume.
    let statefulset = objects.iter().find(|o| kind(o) == "StatefulSet").unwrap();
    let spec = &statefulset["spec"]["template"]["spec"];
    let containers: Vec<&Value> = ["initContainers", "containers"]
        .iter()
        .flat_map(|k| spec[k].as_array().unwrap())
        .collect();
    assert_eq!(
        containers.len(),
        2,
        "the kubernetes init container and the syncer"
    );
    for c in containers {
        assert_eq!(
            c["securityContext"]["runAsUser"], SYNCER_UID,
            "{}",
            c["name"]
        );
    }
}

#[test]
fn the_chart_defaults_fail_restricted_so_the_file_is_what_makes_the_difference() {
    let Some(tools) = Tools::find() else { return };
    let dir = TempDir::new("vcluster-defaults");
    let rendered = tools.render_vcluster_ok(&[]);
    assert_eq!(
        pod_bearing(&parse_documents(&rendered)),
        [format!("StatefulSet/{VCLUSTER_RELEASE}")]
    );
    let host = write(&dir, "host-defaults.yaml", &rendered);

    let (code, report) = restrictor_check(&host);
    assert_eq!(
        code, 1,
        "restrictor check must fail the defaults:\n{report}"
    );
    for expected in [
        r#"runAsUser: must be a non-zero user ID, not 0 (container "syncer")"#,
        r#"allowPrivilegeEscalation: must be false, not undefined (container "kubernetes")"#,
    ] {
        assert!(
            report.contains(expected),
            "missing {expected:?} in:\n{report}"
        );
    }
    let (code, report) = tools.pss_restricted(&host);
    assert_eq!(
        code, 1,
        "pss_restricted.py must fail the defaults:\n{report}"
    );
    for expected in [
        r#"runAsUser=0 (container "syncer" must not set runAsUser=0)"#,
        r#"seccompProfile (pod or containers "kubernetes", "syncer""#,
        r#"unrestricted capabilities (containers "kubernetes", "syncer""#,
        r#"allowPrivilegeEscalation != false (container "kubernetes""#,
    ] {
        assert!(
            report.contains(expected),
            "missing {expected:?} in:\n{report}"
        );
    }
}

#[test]
fn experimental_deploy_vcluster_applies_exactly_what_charts_restrictor_renders() {
    let Some(tools) = Tools::find() else { return };
    let dir = TempDir::new("vcluster-deploy");
    let host =
        parse_documents(&tools.render_vcluster_ok(&["-f", shipped_file().to_str().unwrap()]));
    let manifests = deployed_manifests(&host);
    let applied = split_like_the_syncer(&manifests);

    let (namespace, charted) = applied.split_first().expect("objects to apply");
    assert_eq!(
        namespace,
        &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": RESTRICTOR_NS}}),
        "restrictor's namespace comes first: helm template renders none and the rest lives in it"
    );
    let rendered = parse_documents(&tools.render_restrictor());
    assert!(
        charted == rendered.as_slice(),
        "the embedded manifests differ from helm template charts/restrictor: run charts/vcluster/generate.sh\nembedded: {charted:#?}\nrendered: {rendered:#?}"
    );
    assert_eq!(
        pod_bearing(charted),
        ["Deployment/restrictor"],
        "restrictor's only workload"
    );

    // The syncer defaults a missing namespace to "default": every namespaced object names its own.
    let cluster_scoped = [
        "Namespace",
        "ClusterRole",
        "ClusterRoleBinding",
        "MutatingWebhookConfiguration",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    ];
    for object in charted {
        let ns = &object["metadata"]["namespace"];
        if cluster_scoped.contains(&kind(object)) {
            assert!(ns.is_null(), "{} is cluster-scoped", kind(object));
        } else {
            assert_eq!(
                ns,
                RESTRICTOR_NS,
                "{} {}",
                kind(object),
                object["metadata"]["name"]
            );
        }
        assert!(
            object["metadata"]["annotations"]
                .as_object()
                .is_none_or(|a| a.keys().all(|k| !k.starts_with("helm.sh/hook"))),
            "a hook applied as a plain object would run at once: {}",
            object["metadata"]["name"]
        );
    }

    // Nothing secret, and the caBundle is left to restrictor (self-managed): a re-apply by the
    // syncer (client-side apply, three-way) never touches a field it never set.
    assert!(!charted.iter().any(|o| kind(o) == "Secret"));
    for needle in ["PRIVATE KEY", "BEGIN CERTIFICATE"] {
        assert!(
            !manifests.contains(needle),
            "the manifests contain {needle:?}"
        );
    }
    let webhook = charted
        .iter()
        .find(|o| kind(o) == "MutatingWebhookConfiguration")
        .unwrap();
    assert_eq!(webhook["metadata"]["name"], "restrictor");
    let entries = webhook["webhooks"].as_array().unwrap();
    assert_eq!(entries.len(), 3);
    for entry in entries {
        assert!(
            entry["clientConfig"]["caBundle"].is_null(),
            "{}",
            entry["name"]
        );
    }
    let deployment = charted.iter().find(|o| kind(o) == "Deployment").unwrap();
    let args = deployment["spec"]["template"]["spec"]["containers"][0]["args"].to_string();
    assert!(
        args.contains("--self-managed-certs"),
        "TLS mode self-managed: {args}"
    );

    // The image is the chart's, at its appVersion.
    let chart_yaml = std::fs::read_to_string(repo().join("charts/restrictor/Chart.yaml")).unwrap();
    let app_version = parse_documents(&chart_yaml)[0]["appVersion"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        deployment["spec"]["template"]["spec"]["containers"][0]["image"],
        format!("ghcr.io/restrictor-dev/restrictor:{app_version}").as_str()
    );

    let file = write_objects(&dir, "applied.yaml", &applied);
    assert_restricted(&tools, &file);
    tools.assert_schemas_valid(&file);
}

#[test]
fn generate_sh_accepts_the_shipped_file_and_rejects_a_stale_one() {
    let Some(tools) = Tools::find() else { return };
    let generate = |root: &Path, args: &[&str]| {
        run(Command::new(root.join("charts/vcluster/generate.sh"))
            .args(args)
            .env("HELM", &tools.helm))
    };
    let out = generate(repo(), &["--check"]);
    assert!(
        out.status.success(),
        "charts/vcluster/restricted-host.yaml is stale, run charts/vcluster/generate.sh:\n{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );

    // The same script in a copy of the two charts whose restrictor defaults changed.
    let dir = TempDir::new("vcluster-generate");
    let root = dir.path();
    for sub in ["charts/vcluster", "charts/restrictor/templates"] {
        std::fs::create_dir_all(root.join(sub)).unwrap();
    }
    for file in [
        "charts/vcluster/generate.sh",
        "charts/vcluster/restricted-host.yaml",
        "charts/restrictor/Chart.yaml",
        "charts/restrictor/values.yaml",
        "charts/restrictor/values.schema.json",
    ] {
        std::fs::copy(repo().join(file), root.join(file)).unwrap();
    }
    for entry in std::fs::read_dir(repo().join("charts/restrictor/templates")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(
            entry.path(),
            root.join("charts/restrictor/templates")
                .join(entry.file_name()),
        )
        .unwrap();
    }
    let values = root.join("charts/restrictor/values.yaml");
    let changed = std::fs::read_to_string(&values)
        .unwrap()
        .replace("\nreplicaCount: 2\n", "\nreplicaCount: 3\n");
    std::fs::write(&values, changed).unwrap();

    let out = generate(root, &["--check"]);
    assert_eq!(out.status.code(), Some(1), "a stale file must fail --check");
    assert!(
        text(&out.stderr).contains("is stale"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains("+          replicas: 3"),
        "the diff shows the change"
    );

    assert!(generate(root, &[]).status.success());
    assert!(
        generate(root, &["--check"]).status.success(),
        "regenerated is current"
    );

    // Helm flags are for variants on stdout only, and the fixed ones cannot be overridden.
    let out = generate(repo(), &["--set", "replicaCount=3"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let out = generate(repo(), &["--stdout", "--namespace", "elsewhere"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let out = generate(repo(), &["--stdout", "--set", "uninstallHook.enabled=true"]);
    assert_eq!(out.status.code(), Some(2), "a hook must never be embedded");
    let out = generate(repo(), &["--stdout", "--set", "replicaCount=3"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let variant = text(&out.stdout);
    assert!(variant.contains("\n          replicas: 3\n"));
    assert!(variant.contains("--set uninstallHook.enabled=false --set replicaCount=3"));
}

/// The syncer's CoreDNS template (pkg/coredns/template.go): the pod's securityContext is
/// controlPlane.coredns.security.podSecurityContext verbatim when set; the container keeps its
/// built-in context unless containerSecurityContext is set.
#[test]
fn coredns_as_the_syncer_renders_it_with_the_file_passes_restricted_on_its_own() {
    let Some(tools) = Tools::find() else { return };
    let dir = TempDir::new("vcluster-coredns");
    let values = shipped_values();
    let security = &values["controlPlane"]["coredns"]["security"];
    assert!(
        security["containerSecurityContext"].is_null(),
        "the file keeps CoreDNS's built-in container context (the fixture's)"
    );
    let pod_security = &security["podSecurityContext"];
    assert!(
        pod_security.is_object(),
        "the file sets CoreDNS's pod context"
    );

    let fixture = tools
        .shared
        .join("fixtures/vcluster/06-coredns.pods.default-config.yaml");
    let mut pods = parse_documents(&std::fs::read_to_string(&fixture).unwrap());
    assert_eq!(pods.len(), 2, "the virtual pod and the host pod");
    for pod in &pods {
        // the fixture's syncer runs as the UID this file gives it
        assert_eq!(
            pod["spec"]["containers"][0]["securityContext"]["runAsUser"],
            SYNCER_UID
        );
    }

    // As the chart's defaults render it, the host rejects it: the baseline for this test.
    let as_default = write(
        &dir,
        "coredns-default.yaml",
        &std::fs::read_to_string(&fixture).unwrap(),
    );
    let (code, report) = tools.pss_restricted(&as_default);
    assert_eq!(code, 1, "{report}");
    assert!(report.contains("seccompProfile"), "{report}");
    assert_eq!(restrictor_check(&as_default).0, 1);

    for pod in &mut pods {
        pod["spec"]["securityContext"] = pod_security.clone();
    }
    let with_file = write_objects(&dir, "coredns.yaml", &pods);
    assert_restricted(&tools, &with_file);
    tools.assert_schemas_valid(&with_file);
}

/// A StatefulSet pod as the vcluster's StatefulSet controller creates it (serviceName "web").
fn statefulset_pod() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "web-0",
            "namespace": "shop",
            "labels": {"app": "web", "statefulset.kubernetes.io/pod-name": "web-0"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "web",
                                 "uid": "2f0c6a4e-5b1d-4e8f-9a3c-7d6e5f4a3b2c", "controller": true}]
        },
        "spec": {
            "hostname": "web-0",
            "subdomain": "web",
            "initContainers": [{"name": "migrate", "image": "registry.example/shop:1.4", "command": ["/migrate"]}],
            "containers": [{
                "name": "web",
                "image": "registry.example/shop:1.4",
                "ports": [{"containerPort": 8080}],
                "volumeMounts": [{"name": "data", "mountPath": "/data"}]
            }],
            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data-web-0"}}]
        }
    })
}

/// What the syncer adds on the host to a pod with spec.subdomain (pkg/controllers/resources/pods/
/// translate/hosts.go): the vcluster-rewrite-hosts init container first, with the security context
/// it is created with, its emptyDir, and /etc/hosts mounted from it in every other container.
fn add_rewrite_hosts(pod: &mut Value, image: &str) {
    let spec = pod["spec"].as_object_mut().unwrap();
    let hosts_mount =
        json!({"name": "vcluster-rewrite-hosts", "mountPath": "/etc/hosts", "subPath": "hosts"});
    for key in ["containers", "initContainers"] {
        for c in spec
            .get_mut(key)
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            c.as_object_mut()
                .unwrap()
                .entry("volumeMounts")
                .or_insert_with(|| json!([]))
                .as_array_mut()
                .unwrap()
                .push(hosts_mount.clone());
        }
    }
    let init = json!({
        "name": "vcluster-rewrite-hosts",
        "image": image,
        "command": ["sh"],
        "args": ["-c", "sed -E -e 's/^(\\d+.\\d+.\\d+.\\d+\\s+)web-0$/\\1 web-0.web.shop.svc.cluster.local web-0/' /etc/hosts > /hosts/hosts"],
        "securityContext": {
            "runAsUser": SYNCER_UID,
            "runAsGroup": SYNCER_UID,
            "runAsNonRoot": true,
            "capabilities": {"drop": ["ALL"]},
            "allowPrivilegeEscalation": false,
            "seccompProfile": {"type": "RuntimeDefault"}
        },
        "resources": {"limits": {"cpu": "30m", "memory": "64Mi"}, "requests": {"cpu": "30m", "memory": "64Mi"}},
        "volumeMounts": [{"name": "vcluster-rewrite-hosts", "mountPath": "/hosts"}]
    });
    let inits = spec
        .entry("initContainers")
        .or_insert_with(|| json!([]))
        .as_array_mut()
        .unwrap();
    inits.insert(0, init);
    spec["volumes"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "vcluster-rewrite-hosts", "emptyDir": {}}));
    pod["metadata"]["annotations"] = json!({"vcluster.loft.sh/hosts-rewritten": "true"});
}

fn rewrite_hosts_image(tools: &Tools) -> String {
    let values = std::fs::read_to_string(tools.vcluster_chart().join("values.yaml")).unwrap();
    let image = &parse_documents(&values)[0]["sync"]["toHost"]["pods"]["rewriteHosts"]["initContainer"]
        ["image"];
    format!(
        "{}/{}:{}",
        image["registry"].as_str().unwrap(),
        image["repository"].as_str().unwrap(),
        image["tag"].as_str().unwrap()
    )
}

#[test]
fn a_statefulset_pod_keeps_hostname_rewriting_and_passes_restricted_on_the_host() {
    let Some(tools) = Tools::find() else { return };
    let dir = TempDir::new("vcluster-rewrite-hosts");
    assert_eq!(
        shipped_values()["sync"]["toHost"]["pods"]["rewriteHosts"]["enabled"],
        true,
        "the file keeps rewriteHosts on"
    );
    let image = rewrite_hosts_image(&tools);

    // Inside the vcluster: restrictor mutates the pod at creation.
    let virtual_pod = write_objects(&dir, "virtual.yaml", &[statefulset_pod()]);
    let out = run(Command::new(env!("CARGO_BIN_EXE_restrictor"))
        .args(["mutate", "-o", "json"])
        .arg(&virtual_pod));
    assert!(
        out.status.success(),
        "restrictor mutate: {}",
        text(&out.stderr)
    );
    let mutated: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(mutated["spec"]["subdomain"], "web");

    // On the host: the syncer adds its init container and emptyDir.
    let mut host_pod = mutated.clone();
    add_rewrite_hosts(&mut host_pod, &image);
    let host = write_objects(&dir, "host.yaml", std::slice::from_ref(&host_pod));
    assert_restricted(&tools, &host);
    tools.assert_schemas_valid(&host);

    // The checkers do look at the added init container: without its seccomp profile (and with
    // none at pod level) the pod fails, naming it.
    let mut without_seccomp = host_pod.clone();
    without_seccomp["spec"]["initContainers"][0]["securityContext"]
        .as_object_mut()
        .unwrap()
        .remove("seccompProfile");
    without_seccomp["spec"]["securityContext"]
        .as_object_mut()
        .unwrap()
        .remove("seccompProfile");
    let weakened = write_objects(&dir, "weakened.yaml", &[without_seccomp]);
    let (code, report) = tools.pss_restricted(&weakened);
    assert_eq!(code, 1, "{report}");
    assert!(report.contains("\"vcluster-rewrite-hosts\""), "{report}");
    let (code, report) = restrictor_check(&weakened);
    assert_eq!(code, 1, "{report}");
    assert!(report.contains("vcluster-rewrite-hosts"), "{report}");

    // And without restrictor the same host pod is rejected: the mutation is what makes it pass.
    let mut unmutated = statefulset_pod();
    add_rewrite_hosts(&mut unmutated, &image);
    let unmutated = write_objects(&dir, "unmutated.yaml", &[unmutated]);
    assert_eq!(tools.pss_restricted(&unmutated).0, 1);
    assert_eq!(restrictor_check(&unmutated).0, 1);
}

/// A pod that passes restricted, with one control broken by `breaking` (nothing for the passes).
fn control_case(name: &str, breaking: impl FnOnce(&mut Value)) -> Value {
    let mut pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "controls"},
        "spec": {
            "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "c", "image": "x", "securityContext": {
                "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}}]
        }
    });
    breaking(&mut pod);
    pod
}

/// The independent checker is only worth something if it fails what upstream fails: one pod per
/// control, each must fail with upstream's reason, and restrictor's checker must fail the very
/// same pods (and pass the same three: the base, an image volume, a user-namespace pod with UID 0).
#[test]
fn both_checkers_fail_each_restricted_control_and_agree_on_which_pods() {
    let Some(tools) = Tools::find() else { return };
    let dir = TempDir::new("vcluster-controls");
    let c = "/spec/containers/0";
    let sc = "/spec/containers/0/securityContext";
    let failing: Vec<(&str, Value)> = vec![
        (
            "host namespaces",
            control_case("host-network", |p| p["spec"]["hostNetwork"] = json!(true)),
        ),
        (
            "privileged",
            control_case("privileged", |p| {
                p["spec"]["containers"][0]["securityContext"]["privileged"] = json!(true)
            }),
        ),
        (
            "hostPort",
            control_case("host-port", |p| {
                p.pointer_mut(c).unwrap()["ports"] = json!([{"containerPort": 80, "hostPort": 80}])
            }),
        ),
        (
            "forbidden AppArmor profile",
            control_case(
                "apparmor-annotation",
                |p| {
                    p["metadata"]["annotations"] =
                        json!({"container.apparmor.security.beta.kubernetes.io/c": "unconfined"})
                },
            ),
        ),
        (
            "forbidden AppArmor profile",
            control_case("apparmor-field", |p| {
                p.pointer_mut(sc).unwrap()["appArmorProfile"] = json!({"type": "Unconfined"})
            }),
        ),
        (
            "seLinuxOptions",
            control_case("selinux", |p| {
                p.pointer_mut(sc).unwrap()["seLinuxOptions"] = json!({"type": "spc_t"})
            }),
        ),
        (
            "forbidden sysctls",
            control_case("sysctl", |p| {
                p["spec"]["securityContext"]["sysctls"] =
                    json!([{"name": "kernel.msgmax", "value": "1"}])
            }),
        ),
        (
            "hostProcess",
            control_case("host-process", |p| {
                p.pointer_mut(sc).unwrap()["windowsOptions"] = json!({"hostProcess": true})
            }),
        ),
        (
            "probe or lifecycle host",
            control_case("probe-host", |p| {
                p.pointer_mut(c).unwrap()["readinessProbe"] =
                    json!({"httpGet": {"host": "10.0.0.1", "port": 80}})
            }),
        ),
        (
            "restricted volume types",
            control_case("nfs-volume", |p| {
                p["spec"]["volumes"] = json!([{"name": "n", "nfs": {"server": "s", "path": "/"}}])
            }),
        ),
        (
            "allowPrivilegeEscalation != false",
            control_case("escalation", |p| {
                p.pointer_mut(sc).unwrap()["allowPrivilegeEscalation"] = json!(true)
            }),
        ),
        (
            "runAsNonRoot != true",
            control_case("run-as-root", |p| {
                p.pointer_mut(sc).unwrap()["runAsNonRoot"] = json!(false)
            }),
        ),
        (
            "runAsUser=0",
            control_case("uid-0", |p| {
                p.pointer_mut(sc).unwrap()["runAsUser"] = json!(0)
            }),
        ),
        (
            "seccompProfile",
            control_case("seccomp", |p| {
                p.pointer_mut(sc).unwrap()["seccompProfile"] = json!({"type": "Unconfined"})
            }),
        ),
        (
            "unrestricted capabilities",
            control_case("capability", |p| {
                p.pointer_mut(sc).unwrap()["capabilities"]["add"] = json!(["SYS_ADMIN"])
            }),
        ),
        (
            "procMount",
            control_case("proc-mount", |p| {
                p.pointer_mut(sc).unwrap()["procMount"] = json!("Unmasked")
            }),
        ),
    ];
    let passing = [
        control_case("base", |_| {}),
        control_case("image-volume", |p| {
            p["spec"]["volumes"] = json!([{"name": "i", "image": {"reference": "x"}}])
        }),
        control_case("user-namespace-uid-0", |p| {
            p["spec"]["hostUsers"] = json!(false);
            p.pointer_mut(sc).unwrap()["runAsUser"] = json!(0);
        }),
    ];
    let mut pods: Vec<Value> = failing.iter().map(|(_, pod)| pod.clone()).collect();
    pods.extend(passing.iter().cloned());
    let file = write_objects(&dir, "controls.yaml", &pods);

    let (code, report) = tools.pss_restricted(&file);
    assert_eq!(code, 1, "{report}");
    let name_of = |pod: &Value| pod["metadata"]["name"].as_str().unwrap().to_owned();
    for (reason, pod) in &failing {
        let name = name_of(pod);
        let line = format!("Pod controls/{name}: {reason} (");
        assert!(
            report.contains(&line),
            "pss_restricted.py must report {line:?}:\n{report}"
        );
    }
    let (code, restrictor_report) = restrictor_check(&file);
    assert_eq!(code, 1, "{restrictor_report}");
    let flagged = |report: &str| -> std::collections::BTreeSet<String> {
        report
            .lines()
            .filter_map(|l| l.strip_prefix("Pod controls/"))
            .map(|l| l.split(':').next().unwrap().to_owned())
            .collect()
    };
    let expected: std::collections::BTreeSet<String> =
        failing.iter().map(|(_, pod)| name_of(pod)).collect();
    assert_eq!(flagged(&report), expected, "pss_restricted.py:\n{report}");
    assert_eq!(
        flagged(&restrictor_report),
        expected,
        "restrictor check:\n{restrictor_report}"
    );
}
