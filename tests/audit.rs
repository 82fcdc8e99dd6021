//! `restrictor audit`, PolicyReports and Events against the in-process fake API server, loaded
//! with the shared fixture objects (read in place from ../shared/fixtures).

mod fake_apiserver;
mod support;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use fake_apiserver::{Fake, rule};
use restrictor::audit::{self, Verdict, render};
use restrictor::cluster::inventory::{self, Namespaces};
use restrictor::cluster::lease::LeaseConfig;
use restrictor::cluster::reports::{self, ReportsOutcome};
use restrictor::engine::{self, Context};
use restrictor::policy::Policy;
use restrictor::workload::WorkloadKind;
use serde_json::{Value, json};

const AGENT_UID: &str = "d0c1a9e2-0000-4000-8000-000000000001";
/// The ReplicaSet uid the fixture pod's ownerReference names.
const AGENT_RS_UID: &str = "3f0c1e2a-6b7d-4c8e-9f10-a1b2c3d4e5f6";

fn fixture_objects(dir: &std::path::Path, relative: &str) -> Vec<Value> {
    let path = dir.join(relative);
    let text = std::fs::read_to_string(&path).unwrap();
    restrictor::manifest::parse(relative, &text).unwrap()
}

fn kind_of(object: &Value) -> Option<WorkloadKind> {
    WorkloadKind::from_type(object["apiVersion"].as_str()?, object["kind"].as_str()?)
}

/// Where the fake API server keeps an object of one of the nine kinds.
fn store_path(object: &Value) -> String {
    let kind = kind_of(object).unwrap();
    let root = match kind.group() {
        "" => "/api/v1".to_owned(),
        group => format!("/apis/{group}/v1"),
    };
    format!(
        "{root}/namespaces/{}/{}/{}",
        object["metadata"]["namespace"].as_str().unwrap(),
        kind.plural(),
        object["metadata"]["name"].as_str().unwrap()
    )
}

/// `list` on each of the nine kinds, as the README's RBAC for `restrictor audit` grants.
fn audit_rbac() -> Vec<fake_apiserver::Rule> {
    WorkloadKind::ALL
        .iter()
        .map(|kind| rule(&["list"], kind.group(), kind.plural(), None))
        .collect()
}

const REPORTS_LEASE: &str = "restrictor-reports";
const REPORTS_LEASE_PATH: &str =
    "/apis/coordination.k8s.io/v1/namespaces/restrictor-system/leases/restrictor-reports";

/// What the chart's templates/rbac-reports.yaml grants.
fn reports_rbac() -> Vec<fake_apiserver::Rule> {
    let mut rules = audit_rbac();
    rules.push(rule(
        &["get", "create", "patch"],
        "wgpolicyk8s.io",
        "policyreports",
        Some("restrictor"),
    ));
    rules.push(rule(
        &["get", "update"],
        "coordination.k8s.io",
        "leases",
        Some(REPORTS_LEASE),
    ));
    rules.push(rule(&["create"], "coordination.k8s.io", "leases", None));
    rules
}

/// The reports Lease as `restrictor serve --reports` configures it by default, for one replica.
fn reports_lease(identity: &str) -> LeaseConfig {
    let flags = ReportsFlags::try_parse_from(["serve", "--reports"]).unwrap();
    assert_eq!(flags.reports.reports_lease_name, REPORTS_LEASE);
    flags
        .reports
        .lease("restrictor-system".into(), identity.into())
}

/// `restrictor serve`'s report flags alone.
#[derive(clap::Parser)]
struct ReportsFlags {
    #[command(flatten)]
    reports: reports::ReportsArgs,
}

/// One replica's periodic report task on cattle-system with an hour's interval (passes come from
/// policy changes, or a lease won after a stand-by retry), and who holds the reports Lease.
struct Reporters {
    fake: Fake,
}

impl Reporters {
    /// The fake loaded with the shared fixtures and serving the CRD; `None` (the test is
    /// skipped, saying why) when ../shared is absent.
    async fn start() -> Option<Self> {
        let dir = support::shared_fixtures()?;
        let fake = loaded_fake(&dir, reports_rbac()).await;
        fake.serve_api("wgpolicyk8s.io/v1alpha2", &["policyreports"]);
        Some(Self { fake })
    }

    fn replica(
        &self,
        lease: LeaseConfig,
    ) -> (
        tokio::sync::watch::Sender<Arc<Policy>>,
        tokio::task::JoinHandle<()>,
    ) {
        let (policy, policy_rx) = tokio::sync::watch::channel(Arc::new(Policy::builtin()));
        let task = tokio::spawn(reports::run_periodic_reports(
            self.fake.client(),
            policy_rx,
            Namespaces::Only(vec!["cattle-system".into()]),
            Duration::from_secs(3600),
            lease,
        ));
        (policy, task)
    }

    fn holder(&self) -> Value {
        self.fake.get(REPORTS_LEASE_PATH).unwrap()["spec"]["holderIdentity"].clone()
    }
}

/// The cluster the fixtures describe: the Rancher agent Deployment (re-applied by Rancher) with
/// its ReplicaSet and the agent pod stored before restrictor, kube-api-auth's DaemonSet, the
/// fleet-agent Deployment and vcluster's CoreDNS pod.
fn cluster_objects(dir: &std::path::Path) -> Vec<Value> {
    let mut objects = Vec::new();
    for file in [
        "rancher/22-import.main.clusterdeploy-reapply.yaml",
        "rancher/23-import.kube-api-auth.daemonset.yaml",
        "rancher/30-fleet-agent.cattle-fleet-system.yaml",
        "vcluster/02-cattle-cluster-agent.virtual-pod.unmutated.yaml",
    ] {
        objects.extend(
            fixture_objects(dir, file)
                .into_iter()
                .filter(|o| kind_of(o).is_some()),
        );
    }
    // doc 1 is the pod in the vcluster; doc 2 the copy synced to the host (another cluster).
    objects.push(fixture_objects(dir, "vcluster/06-coredns.pods.default-config.yaml").remove(0));
    for object in &mut objects {
        if object["kind"] == "Deployment" && object["metadata"]["name"] == "cattle-cluster-agent" {
            object["metadata"]["uid"] = json!(AGENT_UID);
        }
    }
    // The ReplicaSet the Deployment controller made from that template, owning the agent pod.
    let agent = objects
        .iter()
        .find(|o| o["metadata"]["uid"] == AGENT_UID)
        .unwrap();
    objects.push(json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": "cattle-cluster-agent-6d8f9c7b5", "namespace": "cattle-system",
            "uid": AGENT_RS_UID,
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment",
                "name": "cattle-cluster-agent", "uid": AGENT_UID, "controller": true}]},
        "spec": {"replicas": 1, "selector": agent["spec"]["selector"], "template": agent["spec"]["template"]},
    }));
    objects
}

async fn loaded_fake(dir: &std::path::Path, rules: Vec<fake_apiserver::Rule>) -> Fake {
    let fake = Fake::start(rules).await;
    for object in cluster_objects(dir) {
        fake.put(&store_path(&object), object);
    }
    fake
}

/// The webhook's own answer for an object, to compare the audit with.
fn engine_changes(object: &Value) -> Vec<String> {
    let policy = Policy::builtin();
    let mut copy = object.clone();
    let namespace = object["metadata"]["namespace"].as_str().unwrap();
    engine::evaluate(
        &policy,
        &mut copy,
        kind_of(object).unwrap(),
        namespace,
        Context::CREATE,
    )
    .unwrap()
    .outcome
    .changes
    .iter()
    .map(ToString::to_string)
    .collect()
}

#[tokio::test]
async fn audit_gives_each_fixture_object_the_webhooks_outcome_read_only() {
    let Some(dir) = support::shared_fixtures() else {
        return;
    };
    let fake = loaded_fake(&dir, audit_rbac()).await;
    // Small pages: the inventory must follow `continue` tokens to see everything.
    fake.set_page_size(1);
    let objects = inventory::list_pod_bearing(&fake.client(), &Namespaces::All)
        .await
        .unwrap();
    assert_eq!(objects.len(), cluster_objects(&dir).len());
    let audit = audit::audit(&Policy::builtin(), &objects);

    let listed: Vec<(String, &str)> = audit
        .objects
        .iter()
        .map(|e| (e.object.to_string(), e.verdict.outcome()))
        .collect();
    assert_eq!(
        listed,
        [
            (
                "Deployment cattle-fleet-system/fleet-agent".to_owned(),
                "mutated"
            ),
            ("DaemonSet cattle-system/kube-api-auth".to_owned(), "denied"),
            (
                "Deployment cattle-system/cattle-cluster-agent".to_owned(),
                "mutated"
            ),
            (
                "Pod kube-system/coredns-5d9c7b8f6b-q7w2n".to_owned(),
                "mutated"
            ),
        ]
    );
    // Sorted by namespace first: cattle-fleet-system < cattle-system < kube-system.
    let by_name = |name: &str| {
        audit
            .objects
            .iter()
            .find(|e| e.object.name == name)
            .unwrap()
    };
    let fixtures = cluster_objects(&dir);
    let fixture = |name: &str| {
        fixtures
            .iter()
            .find(|o| o["metadata"]["name"] == name)
            .unwrap()
    };
    let agent = by_name("cattle-cluster-agent");
    assert_eq!(
        agent.verdict,
        Verdict::Mutated {
            rule: "rancher-cluster-agent".into(),
            profile: "rancher-agent".into(),
            changes: engine_changes(fixture("cattle-cluster-agent")),
            warnings: vec![],
        }
    );
    // The agent's ReplicaSet and its pod stored before restrictor are summarised under it.
    assert_eq!(agent.owned["ReplicaSet"].mutated, 1);
    assert_eq!(agent.owned["Pod"].mutated, 1);
    let Verdict::Denied { fields, .. } = &by_name("kube-api-auth").verdict else {
        panic!("kube-api-auth is denied");
    };
    let denied: Vec<&str> = fields.iter().map(|f| f.field.as_str()).collect();
    assert!(
        denied.contains(&"spec.template.spec.hostNetwork"),
        "{denied:?}"
    );
    assert!(denied.iter().any(|f| f.contains("hostPath")), "{denied:?}");
    let Verdict::Mutated { changes, .. } = &by_name("coredns-5d9c7b8f6b-q7w2n").verdict else {
        panic!("coredns is mutated");
    };
    assert_eq!(
        changes,
        &engine_changes(fixture("coredns-5d9c7b8f6b-q7w2n"))
    );
    assert!(audit.has_denials());

    // Read-only: nine cluster-wide lists (each followed page by page), nothing else.
    let calls = fake.calls();
    assert!(calls.iter().all(|c| c.verb == "list"), "{calls:?}");
    for kind in WorkloadKind::ALL {
        assert!(fake.count("list", kind.plural()) >= 1, "{}", kind.plural());
    }
    // Two Deployments, one per page: two calls; two Pods likewise.
    assert_eq!(fake.count("list", "deployments"), 2);
    assert_eq!(fake.count("list", "pods"), 2);
    fake.assert_no_unexpected();
}

struct Kubeconfig {
    _dir: support::TempDir,
    path: PathBuf,
}

/// A kubeconfig whose current context (namespace cattle-system) and context `fleet`
/// (namespace cattle-fleet-system) point at `server`.
fn kubeconfig(server: &str) -> Kubeconfig {
    let dir = support::TempDir::new("kubeconfig");
    let path = dir.path().join("config");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: agent\n\
             clusters:\n- name: fake\n  cluster:\n    server: {server}\n\
             users:\n- name: tester\n  user:\n    token: not-a-secret\n\
             contexts:\n\
             - name: agent\n  context: {{cluster: fake, user: tester, namespace: cattle-system}}\n\
             - name: fleet\n  context: {{cluster: fake, user: tester, namespace: cattle-fleet-system}}\n"
        ),
    )
    .unwrap();
    Kubeconfig { _dir: dir, path }
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

async fn restrictor(args: &[&str]) -> Run {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_restrictor"))
        .args(args)
        .env_remove("KUBECONFIG")
        .env_remove("RESTRICTOR_POLICY")
        .output()
        .await
        .unwrap();
    Run {
        code: output.status.code().unwrap(),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    }
}

#[tokio::test]
async fn the_command_resolves_kubeconfig_and_context_and_its_json_is_stable() {
    let Some(dir) = support::shared_fixtures() else {
        return;
    };
    let fake = loaded_fake(&dir, audit_rbac()).await;
    let config = kubeconfig(&fake.url);
    let file = config.path.to_str().unwrap();

    let all = restrictor(&["audit", "--kubeconfig", file, "-A", "-o", "json"]).await;
    assert_eq!(all.code, 1, "kube-api-auth would be denied: {}", all.stderr);
    // The golden value: the library's audit of the same objects, rendered.
    let expected = render::json(&audit::audit(
        &Policy::builtin(),
        &inventory::list_pod_bearing(&fake.client(), &Namespaces::All)
            .await
            .unwrap(),
    ))
    .unwrap();
    assert_eq!(all.stdout, expected);
    let parsed: Value = serde_json::from_str(&all.stdout).unwrap();
    assert_eq!(
        parsed["summary"],
        json!({"compliant": 0, "mutated": 3, "denied": 1, "exempt": 0})
    );
    assert_eq!(parsed["objects"][1]["object"]["name"], "kube-api-auth");
    assert_eq!(parsed["objects"][1]["outcome"], "denied");
    assert!(
        parsed["objects"][1]["fields"][0]["check"]
            .as_str()
            .is_some_and(|c| !c.is_empty())
    );
    let again = restrictor(&["audit", "--kubeconfig", file, "-A", "-o", "json"]).await;
    assert_eq!(again.stdout, all.stdout, "two runs, one output");

    // The current context's namespace (cattle-system) by default; --context and -n as kubectl.
    let current = restrictor(&["audit", "--kubeconfig", file, "-o", "yaml"]).await;
    let current: Value = serde_yaml_ng::from_str(&current.stdout).unwrap();
    let namespaces: Vec<&str> = current["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["object"]["namespace"].as_str().unwrap())
        .collect();
    assert_eq!(namespaces, ["cattle-system", "cattle-system"]);
    let fleet = restrictor(&["audit", "--kubeconfig", file, "--context", "fleet"]).await;
    assert_eq!(fleet.code, 0, "nothing denied in cattle-fleet-system");
    assert!(
        fleet.stdout.contains("Deployment  fleet-agent"),
        "{}",
        fleet.stdout
    );
    assert!(
        fleet
            .stdout
            .contains("would be mutated (rule everything-else")
    );
    let system = restrictor(&["audit", "--kubeconfig", file, "-n", "kube-system"]).await;
    assert_eq!(system.code, 0);
    assert!(system.stdout.contains("coredns-5d9c7b8f6b-q7w2n"));
    fake.assert_no_unexpected();
}

#[tokio::test]
async fn a_forbidden_list_names_the_resource_verb_and_namespace() {
    let Some(dir) = support::shared_fixtures() else {
        return;
    };
    let rules = audit_rbac()
        .into_iter()
        .filter(|r| r.resource != "deployments")
        .collect();
    let fake = loaded_fake(&dir, rules).await;
    let config = kubeconfig(&fake.url);
    let run = restrictor(&["audit", "--kubeconfig", config.path.to_str().unwrap()]).await;
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains(
            "forbidden: cannot list deployments.apps in namespace \"cattle-system\": deployments.apps is forbidden: User \"system:serviceaccount:restrictor:restrictor\" cannot list resource \"deployments\""
        ),
        "{}",
        run.stderr
    );
    assert!(run.stdout.is_empty(), "no partial audit: {}", run.stdout);
}

#[tokio::test]
async fn an_unreachable_server_is_a_clear_error() {
    // A port nothing listens on: bind, note it, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = format!("http://127.0.0.1:{port}");
    let config = kubeconfig(&server);
    let run = restrictor(&["audit", "--kubeconfig", config.path.to_str().unwrap(), "-A"]).await;
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains(
            "cannot reach the Kubernetes API server (listing cronjobs.batch in all namespaces)"
        ),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains(&format!("127.0.0.1:{port}")),
        "{}",
        run.stderr
    );
    let missing = restrictor(&["audit", "--kubeconfig", "/nonexistent/kubeconfig"]).await;
    assert_eq!(missing.code, 2);
    assert!(
        missing
            .stderr
            .contains("cannot load the kubeconfig: /nonexistent/kubeconfig"),
        "{}",
        missing.stderr
    );
}

/// The PolicyReport CRD's `openAPIV3Schema` (wgpolicyk8s.io/v1alpha2, as the wg-policy prototypes
/// and Kyverno ship it) as JSON Schema: types, enums and required fields as the CRD has them, and
/// `additionalProperties: false` where the CRD lists the properties, since the API server prunes
/// any field the schema does not know (a field written there would silently vanish).
fn policy_report_schema() -> Value {
    let object_reference = json!({"type": "object", "additionalProperties": false, "properties": {
        "apiVersion": {"type": "string"}, "fieldPath": {"type": "string"}, "kind": {"type": "string"},
        "name": {"type": "string"}, "namespace": {"type": "string"},
        "resourceVersion": {"type": "string"}, "uid": {"type": "string"}}});
    let summary_count = json!({"type": "integer"});
    json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["apiVersion", "kind", "metadata"],
        "properties": {
            "apiVersion": {"const": "wgpolicyk8s.io/v1alpha2"},
            "kind": {"const": "PolicyReport"},
            "metadata": {"type": "object"},
            "scope": object_reference,
            "scopeSelector": {"type": "object"},
            "summary": {"type": "object", "additionalProperties": false, "properties": {
                "pass": summary_count, "fail": summary_count, "warn": summary_count,
                "error": summary_count, "skip": summary_count}},
            "results": {"type": "array", "items": {
                "type": "object",
                "additionalProperties": false,
                "required": ["policy"],
                "properties": {
                    "category": {"type": "string"},
                    "message": {"type": "string"},
                    "policy": {"type": "string"},
                    "properties": {"type": "object", "additionalProperties": {"type": "string"}},
                    "resourceSelector": {"type": "object"},
                    "resources": {"type": "array", "items": object_reference},
                    "result": {"enum": ["pass", "fail", "warn", "error", "skip"]},
                    "rule": {"type": "string"},
                    "scored": {"type": "boolean"},
                    "severity": {"enum": ["critical", "high", "low", "medium", "info"]},
                    "source": {"type": "string"},
                    "timestamp": {"type": "object", "additionalProperties": false,
                        "required": ["nanos", "seconds"],
                        "properties": {"nanos": {"type": "integer", "minimum": 0, "maximum": 999_999_999},
                            "seconds": {"type": "integer"}}}
                }
            }}
        }
    })
}

/// What restrictor wrote, without what the API server adds to every object.
fn as_written(mut object: Value) -> Value {
    for field in [
        "resourceVersion",
        "uid",
        "creationTimestamp",
        "managedFields",
    ] {
        object["metadata"].as_object_mut().unwrap().remove(field);
    }
    object
}

fn assert_valid(schema: &Value, object: &Value) {
    let validator = jsonschema::validator_for(schema).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(object)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}\nin {object:#}");
}

#[tokio::test]
async fn policy_reports_match_the_crd_schema_and_rewriting_them_is_a_no_op() {
    let Some(dir) = support::shared_fixtures() else {
        return;
    };
    let fake = loaded_fake(&dir, reports_rbac()).await;
    fake.serve_api("wgpolicyk8s.io/v1alpha2", &["policyreports"]);
    let client = fake.client();
    let namespaces = Namespaces::Only(vec!["cattle-system".into(), "team-empty".into()]);
    let objects = inventory::list_pod_bearing(&client, &namespaces)
        .await
        .unwrap();
    let audit = audit::audit(&Policy::builtin(), &objects);
    let scope = ["cattle-system".to_owned(), "team-empty".to_owned()];

    let first = reports::write_reports(&client, &audit, &scope)
        .await
        .unwrap();
    assert_eq!(
        first,
        ReportsOutcome::Written {
            applied: 2,
            unchanged: 0
        }
    );
    let path = |ns: &str| {
        format!("/apis/wgpolicyk8s.io/v1alpha2/namespaces/{ns}/policyreports/restrictor")
    };
    let stored = fake.get(&path("cattle-system")).unwrap();
    assert_eq!(
        stored["metadata"]["managedFields"][0]["manager"],
        "restrictor"
    );
    let schema = policy_report_schema();
    assert_valid(&schema, &as_written(stored.clone()));
    assert_valid(&schema, &as_written(fake.get(&path("team-empty")).unwrap()));
    assert_eq!(
        stored["summary"],
        json!({"pass": 0, "fail": 1, "warn": 1, "error": 0, "skip": 0})
    );
    let results = stored["results"].as_array().unwrap();
    let by_name = |name: &str| {
        results
            .iter()
            .find(|r| r["resources"][0]["name"] == name)
            .unwrap()
    };
    assert_eq!(by_name("kube-api-auth")["result"], "fail");
    assert_eq!(by_name("cattle-cluster-agent")["result"], "warn");
    assert_eq!(
        by_name("cattle-cluster-agent")["rule"],
        "rancher-cluster-agent"
    );
    assert_eq!(
        by_name("cattle-cluster-agent")["resources"][0]["uid"],
        AGENT_UID
    );
    assert_eq!(by_name("kube-api-auth")["source"], "restrictor");

    // The same cluster again: nothing to write, the stored report keeps its resourceVersion.
    let version = stored["metadata"]["resourceVersion"].clone();
    let patches = fake.count("patch", "policyreports");
    let second = reports::write_reports(&client, &audit, &scope)
        .await
        .unwrap();
    assert_eq!(
        second,
        ReportsOutcome::Written {
            applied: 0,
            unchanged: 2
        }
    );
    assert_eq!(fake.count("patch", "policyreports"), patches);
    assert_eq!(
        fake.get(&path("cattle-system")).unwrap()["metadata"]["resourceVersion"],
        version
    );
    fake.assert_no_unexpected();
}

#[tokio::test]
async fn without_the_crd_nothing_is_written_and_one_line_says_so() {
    let Some(dir) = support::shared_fixtures() else {
        return;
    };
    let fake = loaded_fake(&dir, reports_rbac()).await;
    let config = kubeconfig(&fake.url);
    let run = restrictor(&[
        "audit",
        "--kubeconfig",
        config.path.to_str().unwrap(),
        "--context",
        "fleet",
        "--write-reports",
    ])
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        run.stderr.lines().collect::<Vec<_>>(),
        [
            "PolicyReports not written: the cluster does not serve policyreports/wgpolicyk8s.io/v1alpha2 (install the wg-policy PolicyReport CRD, e.g. with Kyverno or Kubewarden, to get them)"
        ]
    );

    // The webhook's periodic task: several passes, one log line, no report request.
    let (logs, _guard) = support::Logs::capture();
    let (policy_tx, policy_rx) = tokio::sync::watch::channel(Arc::new(Policy::builtin()));
    let task = tokio::spawn(reports::run_periodic_reports(
        fake.client(),
        policy_rx,
        Namespaces::All,
        Duration::from_millis(20),
        reports_lease("replica-a"),
    ));
    // A policy change triggers a pass as well.
    tokio::time::sleep(Duration::from_millis(100)).await;
    policy_tx.send(Arc::new(Policy::builtin())).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(policy_tx);
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the task stops when the policy sender is gone")
        .unwrap();
    assert_eq!(logs.lines_containing("PolicyReports not written"), 1);
    assert_eq!(fake.count("get", "policyreports"), 0);
    assert_eq!(fake.count("patch", "policyreports"), 0);
    // The CRD absent, it did not even list the workloads.
    assert_eq!(fake.count("list", "deployments"), 1, "only the CLI's list");
    fake.assert_no_unexpected();
}

#[tokio::test]
async fn only_the_replica_holding_the_reports_lease_lists_and_writes() {
    let Some(reporters) = Reporters::start().await else {
        return;
    };
    let (fake, holder) = (&reporters.fake, || reporters.holder());
    let (logs, _guard) = support::Logs::capture();
    let within = Duration::from_secs(10);

    let (a_policy, a) = reporters.replica(reports_lease("replica-a"));
    assert!(
        support::eventually(within, || async {
            fake.count("patch", "policyreports") == 1
        })
        .await,
        "the first replica writes the report"
    );
    assert_eq!(holder(), "replica-a");
    let (lists, gets) = (
        fake.count("list", "deployments"),
        fake.count("get", "policyreports"),
    );

    // A second replica, two passes: it stands by, listing and reading nothing.
    let (b_policy, b) = reporters.replica(reports_lease("replica-b"));
    assert!(
        support::eventually(within, || async {
            logs.lines_containing("this one stands by") == 1
        })
        .await,
        "{}",
        logs.text()
    );
    let lease_gets = fake.count("get", "leases");
    b_policy.send(Arc::new(Policy::builtin())).unwrap();
    assert!(
        support::eventually(within, || async {
            fake.count("get", "leases") > lease_gets
        })
        .await
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        fake.count("list", "deployments"),
        lists,
        "the stand-by replica lists nothing"
    );
    assert_eq!(fake.count("get", "policyreports"), gets);
    assert_eq!(logs.lines_containing("this one stands by"), 1, "said once");
    assert_eq!(holder(), "replica-a");

    // The writer stops cleanly and gives the lease up: the other one's next pass takes over.
    drop(a_policy);
    tokio::time::timeout(within, a)
        .await
        .expect("the writer stops when its policy sender is gone")
        .unwrap();
    assert_eq!(holder(), Value::Null, "released");
    b_policy.send(Arc::new(Policy::builtin())).unwrap();
    assert!(
        support::eventually(within, || async {
            fake.count("get", "policyreports") > gets
        })
        .await,
        "the second replica writes now"
    );
    assert_eq!(holder(), "replica-b");
    assert_eq!(
        fake.count("patch", "policyreports"),
        1,
        "the report the first replica wrote is still current"
    );
    assert_eq!(
        logs.lines_containing("this replica writes the policy reports"),
        2
    );
    drop(b_policy);
    tokio::time::timeout(within, b).await.unwrap().unwrap();
    fake.assert_no_unexpected();
}

#[tokio::test]
async fn a_writer_that_vanishes_is_replaced_once_its_reports_lease_expires() {
    let Some(reporters) = Reporters::start().await else {
        return;
    };
    let (fake, holder) = (&reporters.fake, || reporters.holder());
    // A 3 s lease stands for the 60 s one: stand-by replicas try for it once per duration.
    let lease = |identity| LeaseConfig {
        lease_duration: time::Duration::seconds(3),
        ..reports_lease(identity)
    };
    let (_a_policy, a) = reporters.replica(lease("replica-a"));
    assert!(
        support::eventually(Duration::from_secs(10), || async {
            fake.count("patch", "policyreports") == 1
        })
        .await
    );
    let (_b_policy, b) = reporters.replica(lease("replica-b"));
    // Longer than a stand-by retry: the writer renews, so it keeps the lease.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(holder(), "replica-a");
    let gets = fake.count("get", "policyreports");

    // The writer is gone without giving the lease up (its pod was killed); no policy change and a
    // one-hour interval, yet the other replica takes over and writes at once.
    a.abort();
    assert!(
        support::eventually(Duration::from_secs(20), || async {
            holder() == "replica-b" && fake.count("get", "policyreports") > gets
        })
        .await,
        "the stand-by replica took the lease over and wrote"
    );
    b.abort();
    fake.assert_no_unexpected();
}

/// `events.k8s.io/v1` Event as JSON Schema: the fields of the OpenAPI definition (none other
/// survives), `eventTime` required there, and what the API server's create validation requires of
/// a new-style Event on top (reportingController, reportingInstance, action, reason, a type of
/// Normal or Warning, a note of at most 1 kB, a regarding object).
fn event_schema() -> Value {
    let object_reference = json!({"type": "object", "additionalProperties": false, "properties": {
        "apiVersion": {"type": "string"}, "fieldPath": {"type": "string"}, "kind": {"type": "string"},
        "name": {"type": "string"}, "namespace": {"type": "string"},
        "resourceVersion": {"type": "string"}, "uid": {"type": "string"}}});
    json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["apiVersion", "kind", "metadata", "eventTime", "reportingController",
            "reportingInstance", "action", "reason", "type", "regarding"],
        "properties": {
            "apiVersion": {"const": "events.k8s.io/v1"},
            "kind": {"const": "Event"},
            "metadata": {"type": "object", "required": ["name", "namespace"]},
            "action": {"type": "string", "minLength": 1, "maxLength": 128},
            "deprecatedCount": {"type": "integer"},
            "deprecatedFirstTimestamp": {"type": "string"},
            "deprecatedLastTimestamp": {"type": "string"},
            "deprecatedSource": {"type": "object"},
            "eventTime": {"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]+Z$"},
            "note": {"type": "string", "maxLength": 1024},
            "reason": {"type": "string", "minLength": 1, "maxLength": 128},
            "regarding": object_reference,
            "related": object_reference,
            "reportingController": {"type": "string", "minLength": 1, "maxLength": 128},
            "reportingInstance": {"type": "string", "minLength": 1, "maxLength": 128},
            "series": {"type": "object", "additionalProperties": false,
                "required": ["count", "lastObservedTime"],
                "properties": {"count": {"type": "integer"}, "lastObservedTime": {"type": "string"}}},
            "type": {"enum": ["Normal", "Warning"]}
        }
    })
}

fn stored_events(fake: &Fake) -> Vec<Value> {
    fake.with_store(|store| {
        store
            .objects
            .iter()
            .filter(|(path, _)| path.starts_with("/apis/events.k8s.io/v1/"))
            .map(|(_, event)| as_written(event.clone()))
            .collect()
    })
}

#[tokio::test]
async fn events_are_written_as_events_k8s_io_v1_and_rate_limited() {
    use restrictor::cluster::events::{self, EventLimits, Notice};
    let fake = Fake::start(vec![rule(
        &["create", "patch"],
        "events.k8s.io",
        "events",
        None,
    )])
    .await;
    let limits = EventLimits {
        dedupe_window: Duration::from_secs(300),
        burst: 3,
        per_second: 0.001,
        queue: 64,
    };
    let (sender, task) =
        events::spawn_event_recorder(fake.client(), "restrictor-7c9d-abcde".into(), limits);

    assert!(sender.try_send(Notice::restarted(
        "apps/v1",
        "Deployment",
        "cattle-system",
        "cattle-cluster-agent",
        Some(AGENT_UID),
    )));
    // A crash-looping ReplicaSet: the same denied pod again and again is one Event.
    let pod = json!({"metadata": {"generateName": "cattle-cluster-agent-6d8f9c7b5-",
        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
            "name": "cattle-cluster-agent-6d8f9c7b5", "uid": AGENT_RS_UID, "controller": true}]}});
    let message = "restrictor: Pod cattle-system/cattle-cluster-agent-6d8f9c7b5-*: cannot be made to pass Pod Security \"restricted\"";
    for _ in 0..50 {
        let denied = events::denied_workload("cattle-system", &pod, message).unwrap();
        sender.try_send(Notice::Denied(denied));
    }
    // Ten more workloads denied at once: the bucket (3, no refill to speak of) lets one through.
    for index in 0..10 {
        let mut other = pod.clone();
        other["metadata"]["ownerReferences"][0]["name"] = json!(format!("other-{index}"));
        other["metadata"]["ownerReferences"][0]["uid"] = json!(format!("uid-{index}"));
        sender.try_send(Notice::Denied(
            events::denied_workload("team-a", &other, "denied").unwrap(),
        ));
    }
    drop(sender);
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap();

    let written = stored_events(&fake);
    assert_eq!(written.len(), 3, "{written:#?}");
    assert_eq!(fake.count("create", "events"), 3);
    let schema = event_schema();
    for event in &written {
        assert_valid(&schema, event);
        assert_eq!(event["reportingController"], "restrictor");
        assert_eq!(event["reportingInstance"], "restrictor-7c9d-abcde");
    }
    let restarted = written.iter().find(|e| e["reason"] == "Restarted").unwrap();
    assert_eq!(
        restarted["regarding"],
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "namespace": "cattle-system",
            "name": "cattle-cluster-agent", "uid": AGENT_UID})
    );
    assert_eq!(restarted["type"], "Normal");
    assert_eq!(restarted["action"], "Reconcile");
    assert_eq!(restarted["metadata"]["namespace"], "cattle-system");
    let denied = written
        .iter()
        .find(|e| e["regarding"]["uid"] == AGENT_RS_UID)
        .unwrap();
    assert_eq!(denied["type"], "Warning");
    assert_eq!(denied["reason"], "PodDenied");
    assert_eq!(denied["regarding"]["kind"], "ReplicaSet");
    assert!(denied["note"].as_str().unwrap().contains(message));
    assert_eq!(
        written
            .iter()
            .filter(|e| e["metadata"]["namespace"] == "team-a")
            .count(),
        1
    );
    fake.assert_no_unexpected();
}

#[tokio::test]
async fn a_full_queue_drops_instead_of_blocking_the_request_path() {
    use restrictor::cluster::events::{self, EventLimits, Notice};
    // Nothing is allowed: the writer's requests fail, the queue fills behind them.
    let fake = Fake::start(vec![]).await;
    let limits = EventLimits {
        queue: 2,
        ..EventLimits::default()
    };
    let (sender, _task) = events::spawn_event_recorder(fake.client(), "pod".into(), limits);
    let notice =
        |i: usize| Notice::restarted("apps/v1", "Deployment", "ns", &format!("d{i}"), None);
    let started = std::time::Instant::now();
    let accepted = (0..100).filter(|i| sender.try_send(notice(*i))).count();
    assert!(started.elapsed() < Duration::from_millis(100));
    assert!(accepted <= 3, "{accepted}");
    assert_eq!(sender.dropped(), (100 - accepted) as u64);
}

/// The README's example: `restrictor audit -n cattle-system` on examples/rancher-import.yaml as a
/// cluster holds it (the Deployment, the ReplicaSet it made, and the agent pod it started before
/// restrictor was installed). The README block must be exactly what the command prints.
#[tokio::test]
async fn the_readme_example_is_what_audit_prints() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/rancher-import.yaml"
    ))
    .unwrap();
    let mut objects: Vec<Value> = restrictor::manifest::parse("rancher-import.yaml", &text)
        .unwrap()
        .into_iter()
        .filter(|o| kind_of(o).is_some())
        .collect();
    assert_eq!(objects.len(), 1, "the example holds the agent Deployment");
    objects[0]["metadata"]["uid"] = json!(AGENT_UID);
    let template = objects[0]["spec"]["template"].clone();
    objects.push(json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": "cattle-cluster-agent-6d8f9c7b5", "namespace": "cattle-system", "uid": AGENT_RS_UID,
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "cattle-cluster-agent",
                "uid": AGENT_UID, "controller": true}]},
        "spec": {"replicas": 1, "selector": objects[0]["spec"]["selector"], "template": template}}));
    objects.push(json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "cattle-cluster-agent-6d8f9c7b5-x2k4q", "namespace": "cattle-system",
            "labels": template["metadata"]["labels"],
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "cattle-cluster-agent-6d8f9c7b5",
                "uid": AGENT_RS_UID, "controller": true}]},
        "spec": template["spec"]}));
    let fake = Fake::start(audit_rbac()).await;
    for object in objects {
        fake.put(&store_path(&object), object);
    }
    let config = kubeconfig(&fake.url);
    let run = restrictor(&[
        "audit",
        "--kubeconfig",
        config.path.to_str().unwrap(),
        "-n",
        "cattle-system",
    ])
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let begin = "<!-- audit-example:begin -->\n```\n$ restrictor audit -n cattle-system\n";
    let start = readme.find(begin).expect("README has the audit example") + begin.len();
    let end = start
        + readme[start..]
            .find("```\n<!-- audit-example:end -->")
            .unwrap();
    assert_eq!(
        &readme[start..end],
        run.stdout,
        "README example differs from the output; this is the output:\n{}",
        run.stdout
    );
}

/// A loopback address nothing listens on a moment ago.
fn free_address() -> String {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn the_webhook_process_writes_the_reports_and_gives_their_lease_up_on_sigterm() {
    let Some(reporters) = Reporters::start().await else {
        return;
    };
    let fake = &reporters.fake;
    let config = kubeconfig(&fake.url);
    let leaf = support::Pki::new().leaf("serving");
    let certs = support::TempDir::new("serve-reports");
    let (cert, key) = (certs.path().join("tls.crt"), certs.path().join("tls.key"));
    std::fs::write(&cert, &leaf.cert_pem).unwrap();
    std::fs::write(&key, &leaf.key_pem).unwrap();
    let (https, admin) = (free_address(), free_address());
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_restrictor"))
        .args(["serve", "--tls-cert", cert.to_str().unwrap()])
        .args(["--tls-key", key.to_str().unwrap()])
        .args(["--listen", &https, "--admin-listen", &admin])
        .args(["--shutdown-delay=0s", "--shutdown-grace=1s"])
        .args([
            "--reports",
            "--reports-interval=1h",
            "--reports-namespaces=cattle-system",
        ])
        .args([
            "--namespace",
            "restrictor-system",
            "--pod-name",
            "restrictor-7c9f-a",
        ])
        .env("KUBECONFIG", &config.path)
        .env_remove("RESTRICTOR_POLICY")
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let within = Duration::from_secs(20);
    assert!(
        support::eventually(within, || async {
            fake.count("patch", "policyreports") == 1
        })
        .await,
        "the webhook process wrote the report"
    );
    assert_eq!(reporters.holder(), "restrictor-7c9f-a");

    // The shell's builtin kill: no procps needed on the machine.
    let pid = child.id().unwrap();
    let kill = std::process::Command::new("sh")
        .args(["-c", &format!("kill -TERM {pid}")])
        .status()
        .unwrap();
    assert!(kill.success());
    let output = tokio::time::timeout(within, child.wait_with_output())
        .await
        .expect("restrictor stops on SIGTERM")
        .unwrap();
    let logs = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{logs}");
    assert_eq!(reporters.holder(), Value::Null, "released: {logs}");
    assert!(logs.contains("policy reports: stopped"), "{logs}");
    fake.assert_no_unexpected();
}
