//! End-to-end test of the Helm chart's webhook configuration (issue 5): render the chart in
//! `tls.mode=secret` with a CA made here, start the real server with a certificate from that CA,
//! and act as the vcluster's API server for every object of the fixtures: decide from the rendered
//! MutatingWebhookConfiguration which entry (if any) is called — rules, namespaceSelector,
//! objectSelector and the CEL matchConditions (`support::webhook_routing`) — send the
//! AdmissionReview the API server would send to the Service (resolved to the loopback port) over
//! TLS verified against the rendered caBundle, and apply the returned JSON patch.
//!
//! Needs helm: `RESTRICTOR_HELM`, else `ci/.tools/bin/helm` (ci/install-k8s-tools.sh), and the
//! fixtures in `../shared/fixtures`. Without either the test fails when `CI` is set and is skipped
//! (with the reason printed) otherwise.

mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::Full;
use hyper::client::conn::http1;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use restrictor::pss::{Level, check_object};
use restrictor::server::{ServeConfig, TlsSource};
use serde::Deserialize;
use serde_json::{Value, json};
use support::admission_request::{AdmissionRequest, CLUSTER_SCOPED, labels_of};
use support::webhook_routing::{Conditions, FailurePolicy, Webhook, parse_webhooks, route};
use support::{H1, TempDir, TestServer, client_trusting, h1_handshake, read, tls_connect_as};

const RELEASE: &str = "restrictor";
const RELEASE_NS: &str = "restrictor-system";
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

// ---------------------------------------------------------------------------------------------
// helm

/// helm, or `None` once the reason the test is skipped is printed; under `CI` its absence fails.
fn helm_or_skip() -> Option<PathBuf> {
    let helm = match std::env::var_os("RESTRICTOR_HELM") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("ci/.tools/bin/helm"),
    };
    if helm.exists() {
        return Some(helm);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "helm not found (RESTRICTOR_HELM or ci/.tools/bin/helm) but CI is set: run ci/install-k8s-tools.sh"
    );
    eprintln!(
        "SKIPPED: helm not found (set RESTRICTOR_HELM or run ci/install-k8s-tools.sh); set CI=1 to make this a failure"
    );
    None
}

fn yaml_docs(text: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|doc| Value::deserialize(doc).expect("YAML document"))
        .filter(|v| !v.is_null())
        .collect()
}

fn helm_template(helm: &Path, args: &[String]) -> Vec<Value> {
    let chart = Path::new(env!("CARGO_MANIFEST_DIR")).join("charts/restrictor");
    let out = std::process::Command::new(helm)
        .args(["template", RELEASE])
        .arg(&chart)
        .args(["--namespace", RELEASE_NS, "--kube-version", "1.30.0"])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", helm.display()));
    assert!(
        out.status.success(),
        "helm template failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    yaml_docs(&String::from_utf8(out.stdout).unwrap())
}

/// The one MutatingWebhookConfiguration of a rendering.
fn webhook_configuration(rendered: &[Value]) -> &Value {
    let configs: Vec<&Value> = rendered
        .iter()
        .filter(|d| d["kind"] == "MutatingWebhookConfiguration")
        .collect();
    assert_eq!(configs.len(), 1, "one MutatingWebhookConfiguration");
    configs[0]
}

// ---------------------------------------------------------------------------------------------
// The chart's matchConditions, evaluated as CEL on the requests they are there to tell apart

fn deployment(namespace: &str, replicas: u64) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
           "metadata": {"name": "web", "namespace": namespace, "labels": {"app": "web"}},
           "spec": {"replicas": replicas, "template": {"spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}}}})
}

/// An object that is being deleted, with one finalizer left.
fn deleting(mut object: Value) -> Value {
    object["metadata"]["deletionTimestamp"] = json!("2026-11-25T07:00:00Z");
    object["metadata"]["finalizers"] = json!(["e2e/finalizer"]);
    object
}

/// What each entry's matchConditions decide for each request, by entry name.
fn condition_outcomes(
    hooks: &[Webhook],
    requests: &[AdmissionRequest],
) -> BTreeMap<(String, String), Conditions> {
    let mut outcomes = BTreeMap::new();
    for request in requests {
        for hook in hooks {
            let outcome = hook.conditions(request);
            assert!(
                !matches!(outcome, Conditions::Error(..)),
                "{}: a matchCondition of {} errors ({outcome:?}); the chart says they never do",
                request.what,
                hook.name
            );
            outcomes.insert((request.what.clone(), hook.name.clone()), outcome);
        }
    }
    outcomes
}

#[test]
fn the_charts_match_conditions_tell_apart_what_the_chart_says() {
    let Some(helm) = helm_or_skip() else {
        return;
    };
    let pod = |namespace: &str| {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"generateName": "web-", "namespace": namespace},
               "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}})
    };
    let mut relabelled = deployment("team-a", 1);
    relabelled["metadata"]["labels"]["e2e/touched"] = json!("yes");
    let template = |image: &str| {
        json!({"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t", "namespace": "team-a"},
               "template": {"spec": {"containers": [{"name": "c", "image": image}]}}})
    };
    let mut debugged = deleting(pod("team-a"));
    debugged["spec"]["ephemeralContainers"] =
        json!([{"name": "debugger", "image": "busybox:1.36"}]);
    let mut ephemeral = AdmissionRequest::update(
        "ephemeral container on a deleting pod",
        "team-a",
        deleting(pod("team-a")),
        debugged,
    );
    ephemeral.sub_resource = Some("ephemeralcontainers");
    let requests = [
        AdmissionRequest::create(
            "pod in cattle-system",
            "cattle-system",
            pod("cattle-system"),
        ),
        AdmissionRequest::create(
            "pod in cattle-fleet-system",
            "cattle-fleet-system",
            pod("cattle-fleet-system"),
        ),
        AdmissionRequest::create("pod in cattle", "cattle", pod("cattle")),
        AdmissionRequest::create("pod in team-a", "team-a", pod("team-a")),
        AdmissionRequest::update(
            "label update",
            "team-a",
            deployment("team-a", 1),
            relabelled,
        ),
        AdmissionRequest::update(
            "scale",
            "team-a",
            deployment("team-a", 1),
            deployment("team-a", 3),
        ),
        AdmissionRequest::update("same template", "team-a", template("a:1"), template("a:1")),
        AdmissionRequest::update("new template", "team-a", template("a:1"), template("a:2")),
        AdmissionRequest::update(
            "no spec, no template",
            "team-a",
            json!({"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t"}}),
            json!({"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t", "labels": {"a": "b"}}}),
        ),
        AdmissionRequest::update(
            "finalizer removal",
            "team-a",
            deleting(deployment("team-a", 1)),
            deleting(deployment("team-a", 1)),
        ),
        AdmissionRequest::update(
            "spec change while deleting",
            "team-a",
            deleting(deployment("team-a", 1)),
            deleting(deployment("team-a", 3)),
        ),
        ephemeral,
    ];
    let all_true = [
        "pod in team-a",
        "scale",
        "new template",
        "no spec, no template",
        "ephemeral container on a deleting pod",
    ];

    // Defaults: webhook.skipNoopUpdates=true, rancherNamespacePrefix=cattle-.
    let rendered = helm_template(&helm, &[]);
    let hooks = parse_webhooks(webhook_configuration(&rendered));
    let names: Vec<&str> = hooks.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "rancher.restrictor.dev",
            "workloads.restrictor.dev",
            "kube-system.restrictor.dev"
        ]
    );
    let outcomes = condition_outcomes(&hooks, &requests);
    let outcome =
        |what: &str, hook: &str| &outcomes[&(what.to_owned(), format!("{hook}.restrictor.dev"))];
    let is_false = |name: &str| Conditions::False(name.to_owned());
    for rancher_ns in ["pod in cattle-system", "pod in cattle-fleet-system"] {
        assert_eq!(
            outcome(rancher_ns, "rancher"),
            &Conditions::AllTrue,
            "{rancher_ns}"
        );
        assert_eq!(
            outcome(rancher_ns, "workloads"),
            &is_false("not-rancher-namespace")
        );
    }
    assert_eq!(
        outcome("pod in cattle", "rancher"),
        &is_false("rancher-namespace")
    );
    assert_eq!(outcome("pod in cattle", "workloads"), &Conditions::AllTrue);
    for what in all_true {
        assert_eq!(outcome(what, "workloads"), &Conditions::AllTrue, "{what}");
        assert_eq!(outcome(what, "kube-system"), &Conditions::AllTrue, "{what}");
        assert_eq!(
            outcome(what, "rancher"),
            &is_false("rancher-namespace"),
            "{what}"
        );
    }
    for what in ["label update", "same template", "finalizer removal"] {
        for hook in ["workloads", "kube-system"] {
            assert_eq!(
                outcome(what, hook),
                &is_false("skip-update-without-spec-change"),
                "{what}"
            );
        }
    }
    assert_eq!(
        outcome("spec change while deleting", "workloads"),
        &is_false("skip-object-being-deleted")
    );

    // webhook.skipNoopUpdates=false: only the namespace split is left, kube-system has none.
    let rendered = helm_template(
        &helm,
        &["--set".into(), "webhook.skipNoopUpdates=false".into()],
    );
    let hooks = parse_webhooks(webhook_configuration(&rendered));
    assert!(
        hooks[2].match_conditions.is_empty(),
        "kube-system: no matchConditions"
    );
    let outcomes = condition_outcomes(&hooks, &requests);
    for request in &requests {
        let workloads = &outcomes[&(request.what.clone(), "workloads.restrictor.dev".to_owned())];
        if request.namespace.starts_with("cattle-") {
            assert_eq!(
                workloads,
                &is_false("not-rancher-namespace"),
                "{}",
                request.what
            );
        } else {
            assert_eq!(workloads, &Conditions::AllTrue, "{}", request.what);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The routing emulation itself, against the API server's documented rules

const PODS: &str = "pods";

/// An entry for `resource` (CREATE and UPDATE) with an objectSelector `team=a` and `conditions`
/// (named c0, c1, …).
fn hook(name: &str, failure_policy: &str, resource: &str, conditions: &[&str]) -> Value {
    let conditions: Vec<Value> = conditions
        .iter()
        .enumerate()
        .map(|(i, expression)| json!({"name": format!("c{i}"), "expression": expression}))
        .collect();
    json!({"name": name, "failurePolicy": failure_policy, "matchConditions": conditions,
           "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"], "resources": [resource]}],
           "objectSelector": {"matchLabels": {"team": "a"}}})
}

/// (entries called, the condition that rejected the request, how many conditions errored).
fn routed(hooks: Vec<Value>, request: &AdmissionRequest) -> (Vec<String>, Option<String>, usize) {
    let hooks = parse_webhooks(&json!({ "webhooks": hooks }));
    let routing = route(&hooks, request, &BTreeMap::new());
    let called = routing.called.iter().map(|h| h.name.clone()).collect();
    let rejected = routing.rejection().map(|e| e.condition.clone());
    (called, rejected, routing.condition_errors.len())
}

#[test]
fn routing_follows_the_api_servers_rules_for_selectors_and_condition_errors() {
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "labels": {"team": "a"}}, "spec": {}});
    let create = AdmissionRequest::create("pod", "apps", pod.clone());
    let absent = "object.metadata.nope == 'x'";
    let absorbed = format!("{absent} || true");
    let rejected = |called: &[&str]| {
        let called = called.iter().map(|c| c.to_string()).collect();
        (called, Some("c0".to_owned()), 1)
    };
    let called = |called: &[&str]| (called.iter().map(|c| c.to_string()).collect(), None, 0);
    let ok = || {
        hook(
            "ok",
            "Fail",
            PODS,
            &["request.namespace == 'apps'", "oldObject == null"],
        )
    };
    let failing = || hook("f", "Fail", PODS, &[absent]);
    for (hooks, want) in [
        // An error rejects under Fail and skips under Ignore; a false condition wins over it.
        (vec![failing()], rejected(&[])),
        (
            vec![hook("i", "Ignore", PODS, &[absent])],
            (vec![], None, 1),
        ),
        (
            vec![hook("f", "Fail", PODS, &[absent, "false"])],
            called(&[]),
        ),
        // A result that is not a bool is an error; `||` absorbs an error, as CEL does.
        (vec![hook("f", "Fail", PODS, &["'yes'"])], rejected(&[])),
        (vec![hook("f", "Fail", PODS, &[&absorbed])], called(&["f"])),
        // Entries are called in order until a rejection.
        (vec![ok(), failing()], rejected(&["ok"])),
        (vec![failing(), ok()], rejected(&[])),
    ] {
        let names: Vec<String> = hooks.iter().map(|h| h["name"].to_string()).collect();
        assert_eq!(routed(hooks, &create), want, "{names:?}");
    }

    // objectSelector: the old or the new object; a subresource needs its own rule.
    let mut unlabelled = pod.clone();
    unlabelled["metadata"]["labels"] = json!({});
    let relabel = AdmissionRequest::update("relabel", "apps", pod.clone(), unlabelled.clone());
    let plain = || hook("plain", "Fail", PODS, &[]);
    assert_eq!(routed(vec![plain()], &relabel), called(&["plain"]));
    let unlabelled = AdmissionRequest::create("unlabelled", "apps", unlabelled);
    assert_eq!(routed(vec![plain()], &unlabelled), called(&[]));
    let mut debug = AdmissionRequest::update("debug", "apps", pod.clone(), pod);
    debug.sub_resource = Some("ephemeralcontainers");
    assert_eq!(routed(vec![plain()], &debug), called(&[]));
    let subresources = hook("sub", "Fail", "pods/*", &[]);
    assert_eq!(routed(vec![subresources], &debug), called(&["sub"]));
}

#[test]
#[should_panic(expected = "undeclared variable namespaceObject")]
fn a_webhook_match_condition_has_no_namespace_object() {
    let config = json!({"webhooks": [{"name": "w", "matchConditions": [
        {"name": "ns", "expression": "namespaceObject.metadata.name == 'apps'"}]}]});
    parse_webhooks(&config);
}
// ---------------------------------------------------------------------------------------------
// The API server's HTTPS client, with the Service resolved to the loopback server

struct ApiServerClient {
    https: std::net::SocketAddr,
    conns: HashMap<String, http1::SendRequest<Full<Bytes>>>,
    connections_opened: usize,
}

struct Answer {
    allowed: bool,
    message: String,
    patched: Value,
    patch_ops: usize,
}

impl ApiServerClient {
    async fn call(&mut self, hook: &Webhook, req: &AdmissionRequest, uid: &str) -> Answer {
        let service = hook.service.as_ref().expect("the chart calls a Service");
        let host = format!("{}.{}.svc", service.name, service.namespace);
        let key = format!("{host}:{}", service.port);
        let mut reusable = false;
        if let Some(send) = self.conns.get_mut(&key) {
            reusable = !send.is_closed() && send.ready().await.is_ok();
        }
        if !reusable {
            let ca_bundle = hook.ca_bundle.as_deref().expect("caBundle rendered");
            let stream = tls_connect_as(self.https, client_trusting(ca_bundle, H1), &host)
                .await
                .unwrap_or_else(|e| panic!("TLS to {host} verified against the caBundle: {e}"));
            self.conns.insert(key.clone(), h1_handshake(stream).await);
            self.connections_opened += 1;
        }
        let send = self.conns.get_mut(&key).unwrap();
        let body = serde_json::to_vec(&req.review(uid)).unwrap();
        let http_req = http::Request::post(format!(
            "{}?timeout={}s",
            service.path, hook.timeout_seconds
        ))
        .header("host", &key)
        .header("content-type", "application/json")
        .header("accept", "application/json, */*")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
        let (status, _, body) = read(send.send_request(http_req).await.unwrap()).await;
        assert_eq!(
            status,
            200,
            "{}: {}",
            req.what,
            String::from_utf8_lossy(&body)
        );
        let review: Value = serde_json::from_slice(&body).unwrap();
        let resp = &review["response"];
        assert_eq!(review["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(resp["uid"], uid, "{}: uid echoed", req.what);
        let allowed = resp["allowed"].as_bool().expect("allowed");
        let mut patched = req.object.clone();
        let mut patch_ops = 0;
        if let Some(patch) = resp["patch"].as_str() {
            assert_eq!(resp["patchType"], "JSONPatch");
            assert!(allowed, "{}: a patch on a denial", req.what);
            let patch: json_patch::Patch =
                serde_json::from_slice(&B64.decode(patch).unwrap()).unwrap();
            patch_ops = patch.0.len();
            json_patch::patch(&mut patched, &patch)
                .unwrap_or_else(|e| panic!("{}: patch does not apply: {e}", req.what));
        }
        Answer {
            allowed,
            message: resp["status"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            patched,
            patch_ops,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Objects and what the controllers make of them

fn pod_template(obj: &Value) -> Option<&Value> {
    match obj["kind"].as_str()? {
        "Deployment"
        | "ReplicaSet"
        | "StatefulSet"
        | "DaemonSet"
        | "Job"
        | "ReplicationController" => Some(&obj["spec"]["template"]),
        "CronJob" => Some(&obj["spec"]["jobTemplate"]["spec"]["template"]),
        "PodTemplate" => Some(&obj["template"]),
        _ => None,
    }
}

fn pod_spec(obj: &Value) -> Option<&Value> {
    if obj["kind"] == "Pod" {
        Some(&obj["spec"])
    } else {
        pod_template(obj).map(|t| &t["spec"])
    }
}

/// What no security context can fix in the fixtures: host network and hostPath volumes.
fn needs_host(obj: &Value) -> bool {
    pod_spec(obj).is_some_and(|spec| {
        spec["hostNetwork"] == true
            || spec["volumes"]
                .as_array()
                .is_some_and(|v| v.iter().any(|v| !v["hostPath"].is_null()))
    })
}

/// The pod a workload's controller creates from its (stored) template.
fn pod_from(workload: &Value) -> Option<Value> {
    let template = pod_template(workload)?;
    let name = workload["metadata"]["name"].as_str().unwrap_or("x");
    let mut meta = template["metadata"].clone();
    if !meta.is_object() {
        meta = json!({});
    }
    meta["generateName"] = json!(format!("{name}-"));
    meta["namespace"] = workload["metadata"]["namespace"].clone();
    meta["ownerReferences"] = json!([{
        "apiVersion": workload["apiVersion"], "kind": workload["kind"], "name": name,
        "uid": "00000000-0000-0000-0000-000000000001", "controller": true, "blockOwnerDeletion": true,
    }]);
    Some(json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": template["spec"]}))
}

/// Every document of every fixture, named `group/file.yaml#index`, or `None` when skipped.
fn fixture_objects() -> Option<Vec<(String, Value)>> {
    let mut out = Vec::new();
    for path in support::shared_fixture_files()? {
        let name = support::fixture_name(&path);
        for (i, doc) in yaml_docs(&std::fs::read_to_string(&path).unwrap())
            .into_iter()
            .enumerate()
        {
            out.push((format!("{name}#{i}"), doc));
        }
    }
    Some(out)
}

fn describe(obj: &Value) -> String {
    let m = &obj["metadata"];
    format!(
        "{} {}/{}",
        obj["kind"].as_str().unwrap_or("?"),
        m["namespace"].as_str().unwrap_or("-"),
        m["name"]
            .as_str()
            .or(m["generateName"].as_str())
            .unwrap_or("?")
    )
}

fn is_agent(obj: &Value) -> bool {
    let name = obj["metadata"]["name"]
        .as_str()
        .or(obj["metadata"]["generateName"].as_str())
        .unwrap_or_default();
    name.starts_with("cattle-cluster-agent")
}

// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct Tally {
    sent: usize,
    not_sent: usize,
    by_namespace_policy: BTreeMap<String, BTreeSet<String>>,
    denied: BTreeSet<String>,
    expected_denied: BTreeSet<String>,
    compliant_agents: usize,
    kube_system_handled: usize,
    release_namespace_checked: usize,
    patched: usize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rendered_webhook_configuration_drives_restrictor_like_the_api_server() {
    let Some(helm) = helm_or_skip() else {
        return;
    };
    let Some(fixtures) = fixture_objects() else {
        return;
    };

    // A CA and a serving certificate for the chart's Service, made now.
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "chart e2e CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let leaf_names: Vec<String> = [
        RELEASE.to_owned(),
        format!("{RELEASE}.{RELEASE_NS}"),
        format!("{RELEASE}.{RELEASE_NS}.svc"),
        format!("{RELEASE}.{RELEASE_NS}.svc.cluster.local"),
    ]
    .into();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(leaf_names)
        .unwrap()
        .signed_by(&leaf_key, &ca)
        .unwrap();
    let ca_b64 = B64.encode(ca.pem());

    // The chart in secret mode, caBundle = that CA.
    let rendered = helm_template(
        &helm,
        &[
            "--set".into(),
            "tls.mode=secret".into(),
            "--set".into(),
            "tls.secretName=restrictor-tls".into(),
            "--set".into(),
            format!("tls.caBundle={ca_b64}"),
        ],
    );
    let config = webhook_configuration(&rendered);
    for h in config["webhooks"].as_array().expect("webhooks") {
        assert!(
            h["clientConfig"]["url"].is_null(),
            "the chart uses a service reference"
        );
        assert_eq!(h["admissionReviewVersions"], json!(["v1"]));
        assert_eq!(h["matchPolicy"], "Equivalent");
    }
    let hooks = parse_webhooks(config);
    assert!(
        hooks.len() >= 3,
        "rancher, workloads and kube-system entries"
    );
    let service_of = |h: &Webhook| {
        h.service
            .clone()
            .expect("the chart uses a service reference")
    };
    let service = rendered
        .iter()
        .find(|d| {
            d["kind"] == "Service" && d["metadata"]["name"] == service_of(&hooks[0]).name.as_str()
        })
        .expect("the Service the webhooks call is rendered");
    for h in &hooks {
        assert_eq!(service_of(h).namespace, RELEASE_NS);
        assert_eq!(
            h.ca_bundle.as_deref(),
            Some(ca.pem().as_bytes()),
            "caBundle is tls.caBundle"
        );
        let port = service["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["port"] == service_of(h).port)
            .expect("the webhook's port is a Service port");
        assert_eq!(
            port["targetPort"], "https",
            "the Service routes to the https port"
        );
    }
    let deployment = rendered.iter().find(|d| d["kind"] == "Deployment").unwrap();
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert!(
        container["args"]
            .as_array()
            .unwrap()
            .contains(&json!("--tls-cert=/etc/restrictor/tls/tls.crt"))
    );

    // restrictor serve with those certificates (the files the Secret would mount), loopback.
    let dir = TempDir::new("chart-e2e");
    std::fs::write(dir.path().join("tls.crt"), leaf.pem()).unwrap();
    std::fs::write(dir.path().join("tls.key"), leaf_key.serialize_pem()).unwrap();
    let server = TestServer::start(ServeConfig::new(TlsSource::Files {
        cert: dir.path().join("tls.crt"),
        key: dir.path().join("tls.key"),
    }))
    .await;
    let mut client = ApiServerClient {
        https: server.https,
        conns: HashMap::new(),
        connections_opened: 0,
    };

    // The API server's namespaces: every namespace carries kubernetes.io/metadata.name, plus the
    // labels a fixture's Namespace object gives it.
    let mut requests: Vec<AdmissionRequest> = Vec::new();
    let mut namespaces: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut fixture_review: Option<Value> = None;
    for (what, doc) in fixtures {
        let obj = if doc["kind"] == "AdmissionReview" {
            fixture_review = Some(doc.clone());
            doc["request"]["object"].clone()
        } else {
            doc
        };
        let kind = obj["kind"].as_str().unwrap_or_default().to_owned();
        if kind == "Namespace" {
            let name = obj["metadata"]["name"].as_str().unwrap().to_owned();
            namespaces.entry(name).or_default().extend(labels_of(&obj));
        }
        let ns = if CLUSTER_SCOPED.contains(&kind.as_str()) {
            String::new()
        } else {
            obj["metadata"]["namespace"]
                .as_str()
                .unwrap_or("default")
                .to_owned()
        };
        requests.push(AdmissionRequest::create(
            format!("{what} {}", describe(&obj)),
            &ns,
            obj,
        ));
    }
    // The release namespace: restrictor's own objects, and worse ones, are never sent.
    let mut release_ns_requests: Vec<AdmissionRequest> = rendered
        .iter()
        .filter(|d| d["metadata"]["namespace"] == RELEASE_NS)
        .map(|d| AdmissionRequest::create(format!("chart {}", describe(d)), RELEASE_NS, d.clone()))
        .collect();
    let agent = requests
        .iter()
        .find(|r| r.object["kind"] == "Deployment" && is_agent(&r.object))
        .expect("the agent Deployment is in the fixtures")
        .object
        .clone();
    let mut agent_here = agent.clone();
    agent_here["metadata"]["namespace"] = json!(RELEASE_NS);
    release_ns_requests.push(AdmissionRequest::create(
        "agent Deployment in the release namespace",
        RELEASE_NS,
        agent_here.clone(),
    ));
    let mut host_pod = pod_from(&agent_here).unwrap();
    host_pod["spec"]["hostNetwork"] = json!(true);
    release_ns_requests.push(AdmissionRequest::create(
        "hostNetwork pod in the release namespace",
        RELEASE_NS,
        host_pod,
    ));
    let release_count = release_ns_requests.len();
    requests.extend(release_ns_requests);
    // An ordinary namespace (the workloads entry, webhook.failurePolicy = Fail by default).
    let mut agent_elsewhere = agent.clone();
    agent_elsewhere["metadata"]["namespace"] = json!("team-a");
    requests.push(AdmissionRequest::create(
        "agent Deployment in team-a",
        "team-a",
        agent_elsewhere,
    ));
    // A namespace opted out by label: never sent.
    let mut agent_opted_out = agent.clone();
    agent_opted_out["metadata"]["namespace"] = json!("legacy");
    namespaces.insert(
        "legacy".into(),
        [("restrictor.dev/ignore".to_owned(), "true".to_owned())].into(),
    );
    requests.push(AdmissionRequest::create(
        "agent Deployment in the opted-out namespace legacy",
        "legacy",
        agent_opted_out,
    ));
    // kube-system beyond the CoreDNS pod: its Deployment (vcluster's CoreDNS is one), whose
    // pods the loop below derives, all through the Ignore entry.
    let coredns = requests
        .iter()
        .find(|r| r.namespace == "kube-system" && r.object["kind"] == "Pod")
        .expect("the vcluster CoreDNS pod is in the fixtures")
        .object
        .clone();
    let mut labels = coredns["metadata"]["labels"].clone();
    if let Some(l) = labels.as_object_mut() {
        l.remove("pod-template-hash");
    }
    let coredns_deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "coredns", "namespace": "kube-system", "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": coredns["spec"]},
        },
    });
    requests.push(AdmissionRequest::create(
        "kube-system Deployment coredns",
        "kube-system",
        coredns_deployment,
    ));
    for r in &requests {
        if !r.namespace.is_empty() {
            let labels = namespaces.entry(r.namespace.clone()).or_default();
            labels.insert("kubernetes.io/metadata.name".into(), r.namespace.clone());
        }
    }

    // The fixture review and the review this test builds for the same pod have the same shape.
    let fixture_review = fixture_review.expect("vcluster/01 AdmissionReview fixture");
    let built = AdmissionRequest::create(
        "agent pod",
        "cattle-system",
        fixture_review["request"]["object"].clone(),
    )
    .review(fixture_review["request"]["uid"].as_str().unwrap());
    let keys = |v: &Value| -> BTreeSet<String> { v.as_object().unwrap().keys().cloned().collect() };
    assert_eq!(
        keys(&built["request"]),
        keys(&fixture_review["request"]),
        "request fields"
    );
    for k in [
        "kind",
        "resource",
        "requestKind",
        "requestResource",
        "namespace",
        "operation",
        "object",
        "oldObject",
        "options",
    ] {
        assert_eq!(built["request"][k], fixture_review["request"][k], "{k}");
    }

    let mut tally = Tally::default();
    let mut uid = 0u32;
    let mut queue: std::collections::VecDeque<(AdmissionRequest, u8)> =
        requests.into_iter().map(|r| (r, 0)).collect();
    while let Some((req, depth)) = queue.pop_front() {
        uid += 1;
        let ns_labels = namespaces.get(&req.namespace).cloned().unwrap_or_default();
        let routing = route(&hooks, &req, &ns_labels);
        assert!(
            routing.condition_errors.is_empty(),
            "{}: a matchCondition errors, so the API server applies failurePolicy: {:?}",
            req.what,
            routing.condition_errors
        );
        assert!(
            routing.called.len() <= 1,
            "{}: called by {} entries (each request must be sent once)",
            req.what,
            routing.called.len()
        );
        let hook = routing.called.first().copied();
        if req.namespace == RELEASE_NS {
            tally.release_namespace_checked += 1;
            assert!(
                hook.is_none(),
                "{}: the release namespace is sent to {}",
                req.what,
                hook.map_or("", |h| h.name.as_str())
            );
        }
        let Some(hook) = hook else {
            tally.not_sent += 1;
            let sendable = ["Pod", "Deployment", "DaemonSet", "StatefulSet", "Job"]
                .contains(&req.object["kind"].as_str().unwrap_or_default())
                && req.operation == "CREATE";
            assert!(
                !sendable
                    || req.namespace == RELEASE_NS
                    || labels_of(&req.object).contains_key("restrictor.dev/ignore")
                    || ns_labels.contains_key("restrictor.dev/ignore"),
                "{}: a workload CREATE outside the release namespace is not sent",
                req.what
            );
            continue;
        };
        tally.sent += 1;
        assert!(
            !ns_labels.contains_key("restrictor.dev/ignore")
                && !labels_of(&req.object).contains_key("restrictor.dev/ignore"),
            "{}: opted out, but sent",
            req.what
        );
        tally
            .by_namespace_policy
            .entry(req.namespace.clone())
            .or_default()
            .insert(hook.failure_policy.as_str().to_owned());
        let answer = client.call(hook, &req, &format!("uid-{uid}")).await;
        if needs_host(&req.object) {
            tally.expected_denied.insert(req.what.clone());
        }
        if !answer.allowed {
            assert!(
                !answer.message.is_empty(),
                "{}: a denial says why",
                req.what
            );
            tally.denied.insert(req.what.clone());
            // Its pods, had it been created before restrictor, are denied too.
            if depth == 0
                && let Some(pod) = pod_from(&req.object)
            {
                queue.push_back((
                    AdmissionRequest::create(format!("pod of {}", req.what), &req.namespace, pod),
                    1,
                ));
            }
            continue;
        }
        if answer.patch_ops > 0 {
            tally.patched += 1;
        } else if req.operation == "CREATE" && is_agent(&req.object) {
            assert!(
                check_object(&req.object, Level::Restricted).is_some_and(|v| v.is_empty()),
                "{}: a non-compliant agent admitted without a patch",
                req.what
            );
        }
        if req.namespace == "kube-system" {
            assert_eq!(hook.failure_policy, FailurePolicy::Ignore);
            tally.kube_system_handled += 1;
        }
        // Every admitted pod or template restrictor handled passes restricted.
        if let Some(violations) = check_object(&answer.patched, Level::Restricted) {
            assert!(
                violations.is_empty(),
                "{}: still fails restricted after restrictor: {violations:?}",
                req.what
            );
            if is_agent(&answer.patched) {
                tally.compliant_agents += 1;
            }
        }
        if depth > 0 {
            continue;
        }
        // What follows an admitted request in the cluster:
        let obj = &req.object;
        if pod_template(obj).is_some() && req.operation == "CREATE" {
            // the controller creates pods from the stored (mutated) template...
            if let Some(pod) = pod_from(&answer.patched) {
                queue.push_back((
                    AdmissionRequest::create(format!("pod of {}", req.what), &req.namespace, pod),
                    1,
                ));
            }
            // ...and from the template as it was, as for a workload created before restrictor.
            if let Some(pod) = pod_from(obj) {
                queue.push_back((
                    AdmissionRequest::create(
                        format!("pod of unmutated {}", req.what),
                        &req.namespace,
                        pod,
                    ),
                    1,
                ));
            }
            // A metadata-only UPDATE (a controller's label) is not sent.
            let mut relabelled = answer.patched.clone();
            relabelled["metadata"]["labels"]["e2e/touched"] = json!("yes");
            queue.push_back((
                AdmissionRequest::update(
                    format!("label update of {}", req.what),
                    &req.namespace,
                    answer.patched.clone(),
                    relabelled,
                ),
                1,
            ));
            // A finalizer removal of an object being deleted is not sent.
            let mut deleting = answer.patched.clone();
            deleting["metadata"]["deletionTimestamp"] = json!("2026-11-25T07:00:00Z");
            let mut finalized = deleting.clone();
            deleting["metadata"]["finalizers"] = json!(["e2e/finalizer"]);
            finalized["metadata"]["finalizers"] = json!([]);
            queue.push_back((
                AdmissionRequest::update(
                    format!("finalizer removal of {}", req.what),
                    &req.namespace,
                    deleting,
                    finalized,
                ),
                1,
            ));
            // `kubectl rollout restart` of the unmutated object (reconcileExisting) is sent.
            if obj["kind"] == "Deployment" {
                let mut restarted = obj.clone();
                restarted["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"] =
                    json!("2026-11-25T07:00:00Z");
                queue.push_back((
                    AdmissionRequest::update(
                        format!("rollout restart of unmutated {}", req.what),
                        &req.namespace,
                        obj.clone(),
                        restarted,
                    ),
                    1,
                ));
            }
        }
        if obj["kind"] == "Pod" && is_agent(obj) {
            // `kubectl debug` on the agent pod: pods/ephemeralcontainers UPDATE is sent.
            let old = answer.patched.clone();
            let mut new = old.clone();
            new["spec"]["ephemeralContainers"] = json!([{
                "name": "debugger", "image": "busybox:1.36", "targetContainerName": "cluster-register",
            }]);
            let mut r = AdmissionRequest::update(
                format!("ephemeral container on {}", req.what),
                &req.namespace,
                old,
                new,
            );
            r.sub_resource = Some("ephemeralcontainers");
            queue.push_back((r, 1));
            // The same pod opted out by label is not sent.
            let mut opted_out = obj.clone();
            opted_out["metadata"]["labels"]["restrictor.dev/ignore"] = json!("true");
            queue.push_back((
                AdmissionRequest::create(
                    format!("opted-out {}", req.what),
                    &req.namespace,
                    opted_out,
                ),
                1,
            ));
        }
    }

    eprintln!(
        "chart e2e: {} requests sent ({} patched, {} denied), {} not sent, {} connection(s), agents compliant {}, kube-system handled {}, release namespace checked {}",
        tally.sent,
        tally.patched,
        tally.denied.len(),
        tally.not_sent,
        client.connections_opened,
        tally.compliant_agents,
        tally.kube_system_handled,
        tally.release_namespace_checked
    );
    eprintln!("denied: {:#?}", tally.denied);
    eprintln!(
        "failurePolicy per namespace: {:?}",
        tally.by_namespace_policy
    );
    assert_eq!(
        tally.denied, tally.expected_denied,
        "denied objects are exactly the hostNetwork/hostPath ones"
    );
    assert!(
        !tally.denied.is_empty(),
        "the fixtures hold hostNetwork/hostPath workloads"
    );
    assert!(
        tally.compliant_agents >= 10,
        "the Rancher agent came out compliant ({} times)",
        tally.compliant_agents
    );
    assert!(
        tally.kube_system_handled >= 4,
        "kube-system pods are handled (Ignore entry)"
    );
    assert_eq!(
        tally.release_namespace_checked, release_count,
        "every release-namespace object was routed (and none sent)"
    );
    assert!(
        release_count >= 5,
        "the chart's own objects were routed too"
    );
    // failurePolicy per namespace as issue 5 says.
    for (ns, policies) in &tally.by_namespace_policy {
        let want = if ns == "kube-system" {
            "Ignore"
        } else {
            // cattle-* always Fail; every other namespace the default webhook.failurePolicy=Fail
            "Fail"
        };
        assert_eq!(
            policies,
            &BTreeSet::from([want.to_owned()]),
            "failurePolicy in {ns}"
        );
    }
    for ns in [
        "cattle-system",
        "cattle-fleet-system",
        "kube-system",
        "team-a",
    ] {
        assert!(
            tally.by_namespace_policy.contains_key(ns),
            "nothing was sent for {ns}"
        );
    }
    assert_eq!(
        client.connections_opened, 1,
        "one keep-alive connection served every request"
    );
    server.shutdown().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// The ValidatingAdmissionPolicy that limits the probe's `create pods` to dry runs, evaluated as CEL

/// What the API server decides for a pod CREATE by `username` under the chart's
/// ValidatingAdmissionPolicy: `None` when its matchConditions leave the request alone, else
/// `Some(Ok)` (allowed) or `Some(Err(message))` (denied).
fn dry_run_policy_decides(
    policy: &Value,
    username: &str,
    dry_run: bool,
) -> Option<Result<(), String>> {
    let pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"generateName": "restrictor-probe-", "namespace": "cattle-system"},
        "spec": {"containers": [{"name": "probe-0", "image": "busybox"}]}});
    let request = json!({"uid": "vap", "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
        "requestResource": {"group": "", "version": "v1", "resource": "pods"},
        "name": "", "namespace": "cattle-system", "operation": "CREATE",
        "userInfo": {"username": username, "groups": ["system:serviceaccounts", "system:authenticated"]},
        "dryRun": dry_run, "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"}});
    let mut context = cel::Context::default();
    for (name, value) in [
        ("request", &request),
        ("object", &pod),
        ("oldObject", &Value::Null),
        ("params", &Value::Null),
        (
            "namespaceObject",
            &json!({"metadata": {"name": "cattle-system"}}),
        ),
    ] {
        context.add_variable_from_value(name, cel::to_value(value).unwrap());
    }
    let eval = |expression: &str| {
        let program = cel::Program::compile(expression)
            .unwrap_or_else(|e| panic!("the API server refuses {expression:?}: {e}"));
        match program.execute(&context) {
            Ok(cel::Value::Bool(b)) => b,
            other => panic!("{expression:?} gave {other:?}, not a bool"),
        }
    };
    let spec = &policy["spec"];
    let conditions = spec["matchConditions"].as_array().expect("matchConditions");
    assert!(
        !conditions.is_empty(),
        "the policy must not match every pod create"
    );
    if !conditions
        .iter()
        .all(|c| eval(c["expression"].as_str().unwrap()))
    {
        return None;
    }
    for validation in spec["validations"].as_array().expect("validations") {
        if !eval(validation["expression"].as_str().unwrap()) {
            return Some(Err(validation["message"]
                .as_str()
                .unwrap_or("denied")
                .to_owned()));
        }
    }
    Some(Ok(()))
}

#[test]
fn the_dry_run_policy_denies_restrictors_real_pod_creates_and_nobody_elses() {
    let Some(helm) = helm_or_skip() else {
        return;
    };
    let rendered = helm_template(&helm, &[]);
    let named =
        |kind: &str| -> Vec<&Value> { rendered.iter().filter(|d| d["kind"] == kind).collect() };
    let policies = named("ValidatingAdmissionPolicy");
    let bindings = named("ValidatingAdmissionPolicyBinding");
    assert_eq!((policies.len(), bindings.len()), (1, 1));
    let (policy, binding) = (policies[0], bindings[0]);
    // Without a Binding naming it and denying, the policy does nothing at all.
    assert_eq!(binding["spec"]["policyName"], policy["metadata"]["name"]);
    assert_eq!(binding["spec"]["validationActions"], json!(["Deny"]));
    assert_eq!(policy["spec"]["failurePolicy"], "Fail");
    assert_eq!(
        policy["spec"]["matchConstraints"]["resourceRules"],
        json!([{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"]}])
    );

    let restrictor = format!("system:serviceaccount:{RELEASE_NS}:{RELEASE}");
    assert_eq!(
        dry_run_policy_decides(policy, &restrictor, true),
        Some(Ok(())),
        "the probe (a dry run) is allowed"
    );
    let denied = dry_run_policy_decides(policy, &restrictor, false);
    assert!(
        matches!(&denied, Some(Err(message)) if message.contains("dryRun")),
        "a stored pod created by restrictor is denied: {denied:?}"
    );
    for other in [
        "system:serviceaccount:kube-system:replicaset-controller",
        "admin",
        &format!("system:serviceaccount:{RELEASE_NS}:other"),
    ] {
        assert_eq!(
            dry_run_policy_decides(policy, other, false),
            None,
            "{other}'s pod creates are not matched"
        );
    }
}
