//! The cluster side against an in-process fake API server, with the real `kube::Client`.

mod fake_apiserver;
mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use base64::Engine;
use fake_apiserver::{Fake, rule};
use restrictor::certs::{self, CertPolicy, CertState, Phase, ServingPem, Step};
use restrictor::cluster::{
    self, BackoffConfig, Clock, LeaderElector, LeaseConfig, ReconcileConfig, ReconcileEvent,
    ReconcileTiming, Reconciler, SelfManagedCerts, SelfManagedConfig, WorkloadRef,
};
use restrictor::policy::Policy;
use restrictor::workload::WorkloadKind;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use serde_json::{Value, json};
use time::{Duration, OffsetDateTime};
use tokio::sync::watch;

const NS: &str = "restrictor-system";
const SVC: &str = "restrictor";
const SECRET: &str = "restrictor-tls";
const WH: &str = "restrictor";
const LEASE: &str = "restrictor-reconcile";
const SECRET_PATH: &str = "/api/v1/namespaces/restrictor-system/secrets/restrictor-tls";
const WH_PATH: &str =
    "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/restrictor";
const LEASE_PATH: &str =
    "/apis/coordination.k8s.io/v1/namespaces/restrictor-system/leases/restrictor-reconcile";
const ADM: &str = "admissionregistration.k8s.io";

/// Exactly what the chart's RBAC grants.
fn chart_rbac() -> Vec<fake_apiserver::Rule> {
    vec![
        rule(
            &["get", "list", "update", "watch"],
            "",
            "secrets",
            Some(SECRET),
        ),
        rule(&["create"], "", "secrets", None),
        rule(
            &["get", "list", "patch", "watch", "delete"],
            ADM,
            "mutatingwebhookconfigurations",
            Some(WH),
        ),
        rule(
            &["get", "update"],
            "coordination.k8s.io",
            "leases",
            Some(LEASE),
        ),
        rule(&["create"], "coordination.k8s.io", "leases", None),
        rule(&["list", "patch"], "apps", "deployments", None),
        rule(&["list", "patch"], "apps", "statefulsets", None),
        rule(&["list", "patch"], "apps", "daemonsets", None),
        rule(&["list"], "batch", "jobs", None),
        rule(&["list"], "", "pods", None),
    ]
}

fn webhook_config() -> Value {
    let webhook = |name: &str, ca: Option<&str>| {
        let mut client_config =
            json!({"service": {"name": SVC, "namespace": NS, "path": "/mutate", "port": 443}});
        if let Some(ca) = ca {
            client_config["caBundle"] = json!(ca);
        }
        json!({"name": name, "admissionReviewVersions": ["v1"], "sideEffects": "None",
            "failurePolicy": "Fail", "clientConfig": client_config,
            "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"]}]})
    };
    json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": WH, "labels": {"app": "restrictor"}},
        "webhooks": [webhook("pods.restrictor.io", None), webhook("workloads.restrictor.io", Some("b2xk"))]})
}

async fn fake_with_config() -> Fake {
    let fake = Fake::start(chart_rbac()).await;
    fake.put(WH_PATH, webhook_config());
    fake
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

/// The caBundle of every webhook, decoded.
fn injected_bundles(fake: &Fake) -> Vec<Option<String>> {
    let config = fake.get(WH_PATH).expect("webhook configuration");
    config["webhooks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            w["clientConfig"]["caBundle"]
                .as_str()
                .map(|b| String::from_utf8(b64().decode(b).unwrap()).unwrap())
        })
        .collect()
}

fn secret_field(fake: &Fake, key: &str) -> Option<String> {
    let secret = fake.get(SECRET_PATH)?;
    let v = secret["data"][key].as_str()?;
    Some(String::from_utf8(b64().decode(v).unwrap()).unwrap())
}

fn config() -> SelfManagedConfig {
    SelfManagedConfig::new(NS, SVC, SECRET, WH)
}

struct Channels {
    serving_tx: watch::Sender<Option<ServingPem>>,
    serving_rx: watch::Receiver<Option<ServingPem>>,
    injected_tx: watch::Sender<bool>,
    injected_rx: watch::Receiver<bool>,
}

fn channels() -> Channels {
    let (serving_tx, serving_rx) = watch::channel(None);
    let (injected_tx, injected_rx) = watch::channel(false);
    Channels {
        serving_tx,
        serving_rx,
        injected_tx,
        injected_rx,
    }
}

fn pem_count(bundle: &str) -> usize {
    CertificateDer::pem_slice_iter(bundle.as_bytes()).count()
}

/// Would a client trusting exactly `bundle` accept `cert` for the service at `at`?
fn trusts(bundle: &str, cert: &str, at: OffsetDateTime) -> bool {
    let mut roots = rustls::RootCertStore::empty();
    for der in CertificateDer::pem_slice_iter(bundle.as_bytes()) {
        roots.add(der.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .unwrap();
    let leaf = CertificateDer::from_pem_slice(cert.as_bytes()).unwrap();
    let name = ServerName::try_from(format!("{SVC}.{NS}.svc")).unwrap();
    let at = UnixTime::since_unix_epoch(StdDuration::from_secs(at.unix_timestamp() as u64));
    verifier
        .verify_server_cert(&leaf, &[], &name, &[], at)
        .is_ok()
}

/// A controllable clock.
fn test_clock(start: OffsetDateTime) -> (Arc<Mutex<OffsetDateTime>>, Clock) {
    let now = Arc::new(Mutex::new(start));
    let read = now.clone();
    (now, Arc::new(move || *read.lock().unwrap()))
}

#[tokio::test]
async fn first_start_creates_the_secret_and_injects_the_ca_bundle() {
    let fake = fake_with_config().await;
    let ch = channels();
    let certs = SelfManagedCerts::new(fake.client(), config());
    let outcome = certs
        .sync_once(&ch.serving_tx, &ch.injected_tx)
        .await
        .unwrap();

    assert!(outcome.injected && *ch.injected_rx.borrow());
    assert_eq!(outcome.phase, Phase::Stable);
    let secret = fake.get(SECRET_PATH).expect("secret created");
    for key in ["ca.crt", "ca.key", "tls.crt", "tls.key", "ca-bundle.crt"] {
        assert!(secret["data"][key].is_string(), "{key} missing");
    }
    assert_eq!(
        secret["metadata"]["annotations"]["restrictor.io/cert-phase"],
        "stable"
    );
    let bundle = secret_field(&fake, "ca-bundle.crt").unwrap();
    assert_eq!(bundle.trim(), secret_field(&fake, "ca.crt").unwrap().trim());
    assert_eq!(
        injected_bundles(&fake),
        vec![Some(bundle.clone()), Some(bundle.clone())]
    );
    // Nothing but the caBundles changed.
    let mut after = fake.get(WH_PATH).unwrap();
    let mut before = webhook_config();
    for i in 0..2 {
        after["webhooks"][i]["clientConfig"]
            .as_object_mut()
            .unwrap()
            .remove("caBundle");
        before["webhooks"][i]["clientConfig"]
            .as_object_mut()
            .unwrap()
            .remove("caBundle");
    }
    assert_eq!(after["webhooks"], before["webhooks"]);
    assert_eq!(after["metadata"]["labels"], before["metadata"]["labels"]);
    // The published serving material is the Secret's and valid for the service names.
    let served = ch.serving_rx.borrow().clone().expect("published");
    assert_eq!(served.cert, secret_field(&fake, "tls.crt").unwrap());
    assert_eq!(served.key, secret_field(&fake, "tls.key").unwrap());
    assert!(trusts(&bundle, &served.cert, OffsetDateTime::now_utc()));
    assert_eq!(fake.count("create", "secrets"), 1);
    assert_eq!(fake.count("patch", "mutatingwebhookconfigurations"), 1);
    fake.assert_no_unexpected();
}

#[tokio::test]
async fn a_second_replica_reuses_the_secret() {
    let fake = fake_with_config().await;
    let (a, b) = (channels(), channels());
    SelfManagedCerts::new(fake.client(), config())
        .sync_once(&a.serving_tx, &a.injected_tx)
        .await
        .unwrap();
    let rv = fake.get(SECRET_PATH).unwrap()["metadata"]["resourceVersion"].clone();
    SelfManagedCerts::new(fake.client(), config())
        .sync_once(&b.serving_tx, &b.injected_tx)
        .await
        .unwrap();
    assert_eq!(*a.serving_rx.borrow(), *b.serving_rx.borrow());
    assert!(*b.injected_rx.borrow());
    assert_eq!(
        fake.get(SECRET_PATH).unwrap()["metadata"]["resourceVersion"],
        rv,
        "not rewritten"
    );
    assert_eq!(fake.count("create", "secrets"), 1);
    assert_eq!(fake.count("update", "secrets"), 0);
    assert_eq!(
        fake.count("patch", "mutatingwebhookconfigurations"),
        1,
        "already injected"
    );
    fake.assert_no_unexpected();
}

fn secret_object(state: &CertState) -> Value {
    let (data, annotations) = state.to_secret();
    let data: serde_json::Map<String, Value> = data
        .into_iter()
        .map(|(k, v)| (k, json!(b64().encode(v))))
        .collect();
    json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": SECRET, "namespace": NS, "annotations": annotations}, "data": data})
}

#[tokio::test]
async fn create_conflict_reads_what_the_other_replica_wrote() {
    let fake = fake_with_config().await;
    let names = certs::service_dns_names(SVC, NS);
    let theirs =
        CertState::generate(&names, OffsetDateTime::now_utc(), &CertPolicy::default()).unwrap();
    let their_secret = secret_object(&theirs);
    // The other replica's create lands between our GET (404) and our POST.
    fake.fault(
        "create",
        "secrets",
        409,
        "AlreadyExists",
        1,
        Some(Box::new(move |store| {
            store.put(SECRET_PATH, their_secret.clone())
        })),
    );
    let ch = channels();
    SelfManagedCerts::new(fake.client(), config())
        .sync_once(&ch.serving_tx, &ch.injected_tx)
        .await
        .unwrap();
    assert_eq!(ch.serving_rx.borrow().clone(), Some(theirs.serving_pem()));
    assert_eq!(
        injected_bundles(&fake)[0].as_deref(),
        Some(theirs.ca_bundle().as_str())
    );
    assert_eq!(
        fake.count("get", "secrets"),
        2,
        "read again after the conflict"
    );
    assert_eq!(fake.count("update", "secrets"), 0);
    fake.assert_no_unexpected();
}

#[tokio::test]
async fn two_replicas_starting_together_end_with_one_secret() {
    let fake = fake_with_config().await;
    let (a, b) = (channels(), channels());
    let ra = SelfManagedCerts::new(fake.client(), config());
    let rb = SelfManagedCerts::new(fake.client(), config());
    let (x, y) = tokio::join!(
        ra.sync_once(&a.serving_tx, &a.injected_tx),
        rb.sync_once(&b.serving_tx, &b.injected_tx)
    );
    x.unwrap();
    y.unwrap();
    assert_eq!(*a.serving_rx.borrow(), *b.serving_rx.borrow());
    assert_eq!(
        a.serving_rx.borrow().as_ref().unwrap().cert,
        secret_field(&fake, "tls.crt").unwrap()
    );
    fake.assert_no_unexpected();
}

async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..200 {
        if cond() {
            return;
        }
        tokio::time::sleep(StdDuration::from_millis(25)).await;
    }
    panic!("timed out waiting until {what}");
}

#[tokio::test]
async fn overwritten_ca_bundle_is_restored_and_secret_changes_are_reloaded() {
    let fake = fake_with_config().await;
    let ch = channels();
    let task = tokio::spawn(
        SelfManagedCerts::new(fake.client(), config()).run(ch.serving_tx, ch.injected_tx),
    );
    let mut injected_rx = ch.injected_rx.clone();
    tokio::time::timeout(StdDuration::from_secs(5), injected_rx.wait_for(|v| *v))
        .await
        .unwrap()
        .unwrap();
    let bundle = secret_field(&fake, "ca-bundle.crt").unwrap();

    // Someone (a `helm upgrade`, an admin) overwrites the caBundle.
    let mut config = fake.get(WH_PATH).unwrap();
    config["webhooks"][1]["clientConfig"]["caBundle"] = json!("Y2xvYmJlcmVk");
    fake.put(WH_PATH, config);
    wait_until("the caBundle is restored", || {
        injected_bundles(&fake)[1].as_deref() == Some(bundle.as_str())
    })
    .await;

    // Another replica rotates the serving certificate: this replica reloads it from the watch.
    let names = certs::service_dns_names(SVC, NS);
    let mut state = CertState::from_secret(
        &["ca.crt", "ca.key", "tls.crt", "tls.key"]
            .iter()
            .map(|k| (k.to_string(), secret_field(&fake, k).unwrap().into_bytes()))
            .collect(),
        &Default::default(),
    )
    .unwrap();
    state = state
        .apply(
            Step::RenewServing,
            &names,
            OffsetDateTime::now_utc(),
            &CertPolicy::default(),
        )
        .unwrap();
    let mut secret = fake.get(SECRET_PATH).unwrap();
    secret["data"] = secret_object(&state)["data"].clone();
    fake.put(SECRET_PATH, secret);
    let mut serving_rx = ch.serving_rx.clone();
    tokio::time::timeout(
        StdDuration::from_secs(5),
        serving_rx.wait_for(|s| s.as_ref() == Some(&state.serving_pem())),
    )
    .await
    .expect("reloaded")
    .unwrap();
    task.abort();
    assert!(fake.count("watch", "secrets") >= 1);
    assert!(fake.count("watch", "mutatingwebhookconfigurations") >= 1);
    fake.assert_no_unexpected();
}

/// Drives a CA rotation with the injected clock, placed so every certificate involved is valid
/// at the real current time (the TLS handshake checks real time).
struct Rotation {
    fake: Fake,
    clock: Arc<Mutex<OffsetDateTime>>,
    replica: SelfManagedCerts,
    ch: Channels,
    real_now: OffsetDateTime,
    policy: CertPolicy,
}

fn short_policy() -> CertPolicy {
    CertPolicy {
        ca_validity: Duration::days(90),
        serving_validity: Duration::days(10),
        propagation_delay: Duration::minutes(2),
        backdate: Duration::minutes(5),
    }
}

impl Rotation {
    async fn start() -> Self {
        let fake = fake_with_config().await;
        let real_now = OffsetDateTime::now_utc();
        let (clock, clock_fn) = test_clock(real_now - Duration::days(61));
        let policy = short_policy();
        let mut cfg = config();
        cfg.policy = policy;
        let replica = SelfManagedCerts::new(fake.client(), cfg).with_clock(clock_fn);
        let ch = channels();
        let outcome = replica
            .sync_once(&ch.serving_tx, &ch.injected_tx)
            .await
            .unwrap();
        assert_eq!(outcome.phase, Phase::Stable);
        Rotation {
            fake,
            clock,
            replica,
            ch,
            real_now,
            policy,
        }
    }
    async fn at(&self, t: OffsetDateTime) -> cluster::SyncOutcome {
        *self.clock.lock().unwrap() = t;
        self.replica
            .sync_once(&self.ch.serving_tx, &self.ch.injected_tx)
            .await
            .unwrap()
    }
    fn served(&self) -> String {
        self.ch.serving_rx.borrow().as_ref().unwrap().cert.clone()
    }
}

#[tokio::test]
async fn rotation_yields_an_overlapping_bundle_then_the_new_ca_only() {
    let r = Rotation::start().await;
    let old_ca = secret_field(&r.fake, "ca.crt").unwrap();
    let mut served = vec![r.served()];

    // Two thirds into the CA's life: the next CA joins the bundle, the old one still signs.
    let t1 = r.real_now - Duration::minutes(10);
    let o = r.at(t1).await;
    assert_eq!(o.steps, vec![Step::StartCaOverlap, Step::RenewServing]);
    assert_eq!(o.phase, Phase::CaOverlap);
    assert!(
        !o.steps.contains(&Step::SwitchCa),
        "waits for the propagation delay"
    );
    let overlap = injected_bundles(&r.fake)[0].clone().unwrap();
    assert_eq!(pem_count(&overlap), 2);
    assert!(overlap.contains(old_ca.trim()));
    assert_eq!(secret_field(&r.fake, "ca.crt").unwrap(), old_ca);
    served.push(r.served());

    // After the propagation delay: the new CA signs the serving certificate.
    let t2 = t1 + r.policy.propagation_delay + Duration::seconds(1);
    let o = r.at(t2).await;
    assert_eq!(o.steps, vec![Step::SwitchCa]);
    assert_eq!(o.phase, Phase::CaSwitched);
    let new_ca = secret_field(&r.fake, "ca.crt").unwrap();
    assert_ne!(new_ca, old_ca);
    assert_eq!(
        injected_bundles(&r.fake)[1].as_deref(),
        Some(overlap.as_str()),
        "the bundle keeps both"
    );
    served.push(r.served());
    for cert in &served[1..] {
        assert!(
            trusts(&overlap, cert, t2),
            "a served certificate is untrusted during the overlap"
        );
    }

    // The old CA stays until the last certificate it signed expires (meanwhile the new CA's
    // serving certificate reaches two thirds of its life and is renewed).
    let retire = certs::parse_validity(&served[1]).unwrap().not_after + Duration::seconds(1);
    let o = r.at(retire - Duration::minutes(1)).await;
    assert_eq!(o.steps, vec![Step::RenewServing]);
    assert_eq!(o.phase, Phase::CaSwitched);
    assert_eq!(
        injected_bundles(&r.fake)[0].as_deref(),
        Some(overlap.as_str())
    );
    assert_eq!(o.next_deadline, Some(retire));
    served.push(r.served());
    let o = r.at(retire).await;
    assert_eq!(o.steps, vec![Step::RetirePreviousCa]);
    assert_eq!(o.phase, Phase::Stable);
    let final_bundle = injected_bundles(&r.fake)[0].clone().unwrap();
    assert_eq!(pem_count(&final_bundle), 1);
    assert_eq!(final_bundle.trim(), new_ca.trim());
    // No step removed the CA of a certificate that was still valid.
    for cert in &served {
        let alive = retire <= certs::parse_validity(cert).unwrap().not_after;
        assert!(!alive || trusts(&final_bundle, cert, retire));
    }
    assert_eq!(
        r.fake.get(SECRET_PATH).unwrap()["metadata"]["annotations"]["restrictor.io/cert-phase"],
        "stable"
    );
    r.fake.assert_no_unexpected();
}

#[tokio::test]
async fn switch_waits_until_the_overlap_bundle_is_injected() {
    let r = Rotation::start().await;
    // The caBundle patch keeps failing (a webhook is being edited concurrently).
    r.fake.fault(
        "patch",
        "mutatingwebhookconfigurations",
        422,
        "Invalid",
        100,
        None,
    );
    let t1 = r.real_now - Duration::minutes(10);
    r.at(t1).await;
    let o = r.at(t1 + Duration::hours(1)).await;
    assert_eq!(o.phase, Phase::CaOverlap);
    assert!(!o.injected && !*r.ch.injected_rx.borrow());
    assert!(
        o.steps.is_empty(),
        "never switches before the overlap bundle is in place"
    );
    r.fake.assert_no_unexpected();
}

async fn tls_server(serving: ServingPem) -> std::net::SocketAddr {
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(serving.cert.as_bytes())
            .map(Result::unwrap)
            .collect();
    let key = PrivateKeyDer::from_pem_slice(serving.key.as_bytes()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(tcp).await {
                    use tokio::io::AsyncWriteExt;
                    let _ = tls.write_all(b"ok").await;
                    let _ = tls.shutdown().await;
                }
            });
        }
    });
    addr
}

async fn tls_connect(bundle: &str, addr: std::net::SocketAddr) -> Result<String, std::io::Error> {
    use tokio::io::AsyncReadExt;
    let mut roots = rustls::RootCertStore::empty();
    for der in CertificateDer::pem_slice_iter(bundle.as_bytes()) {
        roots.add(der.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = ServerName::try_from(format!("{SVC}.{NS}.svc")).unwrap();
    let mut tls = connector.connect(name, tcp).await?;
    let mut out = String::new();
    tls.read_to_string(&mut out).await?;
    Ok(out)
}

#[tokio::test]
async fn tls_client_trusting_the_overlap_bundle_reaches_old_and_new_replicas() {
    let r = Rotation::start().await;
    let t1 = r.real_now - Duration::minutes(10);
    r.at(t1).await;
    let old_serving = r.ch.serving_rx.borrow().clone().unwrap();
    r.at(t1 + r.policy.propagation_delay + Duration::seconds(1))
        .await;
    let new_serving = r.ch.serving_rx.borrow().clone().unwrap();
    assert_ne!(old_serving, new_serving);
    let bundle = injected_bundles(&r.fake)[0].clone().unwrap();
    assert_eq!(pem_count(&bundle), 2);

    let lagging = tls_server(old_serving.clone()).await;
    let switched = tls_server(new_serving).await;
    assert_eq!(tls_connect(&bundle, lagging).await.unwrap(), "ok");
    assert_eq!(tls_connect(&bundle, switched).await.unwrap(), "ok");

    // Control: a bundle with only the new CA would have locked out the lagging replica.
    let new_only = secret_field(&r.fake, "ca.crt").unwrap();
    assert!(tls_connect(&new_only, lagging).await.is_err());
    r.fake.assert_no_unexpected();
}

fn workload(api_version: &str, kind: &str, ns: &str, name: &str, compliant: bool) -> Value {
    let spec = if compliant {
        json!({"securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "c", "image": "busybox", "securityContext": {
                "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}}]})
    } else {
        json!({"containers": [{"name": "c", "image": "busybox"}]})
    };
    let mut o = json!({"apiVersion": api_version, "kind": kind, "metadata": {"name": name, "namespace": ns},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}}, "spec": spec.clone()}},
        "status": {"someUnknownField": {"x": 1}}});
    if kind == "Pod" {
        o["spec"] = spec;
    }
    o
}

fn workload_path(group: &str, resource: &str, ns: &str, name: &str) -> String {
    if group.is_empty() {
        format!("/api/v1/namespaces/{ns}/{resource}/{name}")
    } else {
        format!("/apis/{group}/v1/namespaces/{ns}/{resource}/{name}")
    }
}

const APP_NS: &str = "cattle-system";

fn seed_workloads(fake: &Fake) {
    let app = APP_NS;
    for (group, resource, api_version, kind, name, compliant) in [
        (
            "apps",
            "deployments",
            "apps/v1",
            "Deployment",
            "agent",
            false,
        ),
        ("apps", "deployments", "apps/v1", "Deployment", "fine", true),
        (
            "apps",
            "statefulsets",
            "apps/v1",
            "StatefulSet",
            "db",
            false,
        ),
        ("apps", "daemonsets", "apps/v1", "DaemonSet", "ds", true),
        ("batch", "jobs", "batch/v1", "Job", "import", false),
        ("", "pods", "v1", "Pod", "bare", false),
    ] {
        fake.put(
            &workload_path(group, resource, app, name),
            workload(api_version, kind, app, name, compliant),
        );
    }
    let mut owned = workload("v1", "Pod", app, "agent-abc", false);
    owned["metadata"]["ownerReferences"] =
        json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "agent-x", "uid": "u"}]);
    fake.put(&workload_path("", "pods", app, "agent-abc"), owned);
    // A namespace not configured for reconcile is never listed.
    fake.put(
        &workload_path("apps", "deployments", "other", "x"),
        workload("apps/v1", "Deployment", "other", "x", false),
    );
}

/// What the chart grants when reconcileExisting is on, plus the reconcile's own calls.
fn reconcile_rbac() -> Vec<fake_apiserver::Rule> {
    let mut rules = chart_rbac();
    rules.push(rule(&["create"], "", "pods", None));
    rules.push(rule(&["list"], "", "events", None));
    rules
}

/// What restrictor's webhook does to a pod created in `namespace` under the built-in policy.
fn restrictor_mutates(pod: &Value, namespace: &str) -> Value {
    let mut pod = pod.clone();
    let policy = Policy::builtin();
    let evaluation = restrictor::engine::evaluate(
        &policy,
        &mut pod,
        WorkloadKind::Pod,
        namespace,
        restrictor::engine::Context::CREATE,
    );
    assert!(evaluation.is_some_and(|e| e.outcome.denial.is_none()));
    pod
}

/// What admission answers a dry-run pod create: `Ok(answer)` or `Err((code, reason, message))`.
type Admission = Result<Value, (u16, &'static str, String)>;

/// Restrictor's real webhook answer to `pod` (a dry-run CREATE), applied as the API server applies
/// it: `restrictor::admission::review` under the built-in policy, its JSON Patch applied.
fn restrictor_reviews(pod: &Value) -> Admission {
    let review = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "probe-review", "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": pod["metadata"]["namespace"], "operation": "CREATE", "dryRun": true,
            "userInfo": {"username": "system:serviceaccount:restrictor-system:restrictor"},
            "object": pod}});
    let answer =
        restrictor::admission::review(&serde_json::to_vec(&review).unwrap(), &Policy::builtin())
            .unwrap();
    let response: Value = serde_json::from_slice(&answer.body).unwrap();
    let response = &response["response"];
    if response["allowed"] != true {
        let message = response["status"]["message"].as_str().unwrap().to_owned();
        return Err((403, "Forbidden", message));
    }
    let mut pod = pod.clone();
    if let Some(patch) = response["patch"].as_str() {
        let patch: json_patch::Patch =
            serde_json::from_slice(&b64().decode(patch).unwrap()).unwrap();
        json_patch::patch(&mut pod, &patch).unwrap();
    }
    Ok(pod)
}

/// The admission probe's answer, as `answer` decides given the probe's number.
fn webhook_answers_with(
    fake: &Fake,
    probes: Arc<Mutex<usize>>,
    answer: impl Fn(usize, &Value) -> Admission + Send + 'static,
) {
    fake.on_dry_run_create(
        "pods",
        Box::new(move |pod| {
            let mut n = probes.lock().unwrap();
            *n += 1;
            assert!(
                pod["metadata"]["name"]
                    .as_str()
                    .unwrap()
                    .starts_with("restrictor-probe-")
            );
            let nonce = pod["metadata"]["labels"]["restrictor.dev/probe"]
                .as_str()
                .unwrap();
            assert!(
                nonce.len() == 32 && nonce.bytes().all(|b| b.is_ascii_hexdigit()),
                "a random nonce: {nonce}"
            );
            answer(*n, pod)
        }),
    );
}

/// The admission probe's answer: restrictor's real review once `live` says the API server calls
/// restrictor, the pod unchanged before.
fn webhook_answers(
    fake: &Fake,
    probes: Arc<Mutex<usize>>,
    live: impl Fn(usize) -> bool + Send + 'static,
) {
    webhook_answers_with(fake, probes, move |n, pod| {
        if live(n) {
            restrictor_reviews(pod)
        } else {
            Ok(pod.clone())
        }
    });
}

/// The seeded workloads in a cluster whose API server calls restrictor from the first probe and
/// whose controllers create the pods as restrictor mutates them; the handle is the controllers'.
async fn live_cluster() -> (Fake, tokio::task::JoinHandle<()>) {
    let fake = Fake::start(reconcile_rbac()).await;
    seed_workloads(&fake);
    webhook_answers(&fake, Arc::default(), |_| true);
    let controllers = controller(&fake, |pod, _| Some(restrictor_mutates(pod, APP_NS)), "");
    (fake, controllers)
}

/// Stands in for the workload controllers: for every restart (a new restartedAt value on a
/// Deployment's or StatefulSet's template) `create` decides what the controller does — create the
/// pod it returns, or (None) record a FailedCreate event with `denied` as its message.
fn controller(
    fake: &Fake,
    create: impl Fn(&Value, usize) -> Option<Value> + Send + 'static,
    denied: &'static str,
) -> tokio::task::JoinHandle<()> {
    let fake = fake.clone();
    tokio::spawn(async move {
        let mut seen: Vec<String> = Vec::new();
        loop {
            let restarted: Vec<Value> = fake.with_store(|s| {
                s.objects
                    .iter()
                    .filter(|(k, _)| k.contains("/deployments/") || k.contains("/statefulsets/"))
                    .map(|(_, o)| o.clone())
                    .filter(|o| o.pointer("/spec/template/metadata/annotations/kubectl.kubernetes.io~1restartedAt").is_some())
                    .collect()
            });
            for object in restarted {
                let stamp = object
                    .pointer(
                        "/spec/template/metadata/annotations/kubectl.kubernetes.io~1restartedAt",
                    )
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .to_owned();
                let name = object["metadata"]["name"].as_str().unwrap().to_owned();
                let ns = object["metadata"]["namespace"].as_str().unwrap().to_owned();
                let key = format!("{ns}/{name}@{stamp}");
                if seen.contains(&key) {
                    continue;
                }
                seen.push(key);
                let rollout = seen
                    .iter()
                    .filter(|k| k.starts_with(&format!("{ns}/{name}@")))
                    .count();
                let (owner_kind, owner_name, owner_uid) = if object["kind"] == "Deployment" {
                    (
                        "ReplicaSet",
                        format!("{name}-{rollout}f7c9"),
                        "rs-uid".to_owned(),
                    )
                } else {
                    (
                        "StatefulSet",
                        name.clone(),
                        object["metadata"]["uid"].as_str().unwrap().to_owned(),
                    )
                };
                let template = &object["spec"]["template"];
                let mut pod = json!({"apiVersion": "v1", "kind": "Pod",
                    "metadata": template["metadata"].clone(), "spec": template["spec"].clone()});
                pod["metadata"]["name"] = json!(format!("{owner_name}-p{rollout}"));
                pod["metadata"]["namespace"] = json!(ns);
                pod["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": owner_kind, "name": owner_name, "uid": owner_uid}]);
                match create(&pod, rollout) {
                    Some(created) => fake.put(&workload_path("", "pods", &ns, created["metadata"]["name"].as_str().unwrap()), created),
                    None => fake.put(
                        &workload_path("", "events", &ns, &format!("{owner_name}.{rollout}")),
                        json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": format!("{owner_name}.{rollout}")},
                            "reason": "FailedCreate", "type": "Warning", "message": denied,
                            "lastTimestamp": restrictor::cluster::reconcile::restarted_at_value(OffsetDateTime::now_utc()),
                            "involvedObject": {"kind": owner_kind, "name": owner_name, "namespace": ns}}),
                    ),
                }
            }
            tokio::time::sleep(StdDuration::from_millis(10)).await;
        }
    })
}

fn quick_timing(probes: usize, retries: usize) -> ReconcileTiming {
    let ms = |n| StdDuration::from_millis(n);
    ReconcileTiming {
        probe: BackoffConfig {
            first: ms(20),
            max: ms(80),
            times: probes,
        },
        rollout: BackoffConfig {
            first: ms(30),
            max: ms(100),
            times: 12,
        },
        retry: BackoffConfig {
            first: ms(20),
            max: ms(20),
            times: retries,
        },
    }
}

fn config_for(namespace: &str, timing: ReconcileTiming) -> ReconcileConfig {
    ReconcileConfig {
        namespaces: Some(vec![namespace.into()]),
        timing,
    }
}

fn builtin_policy() -> watch::Receiver<Arc<Policy>> {
    watch::channel(Arc::new(Policy::builtin())).1
}

type Events = Arc<Mutex<Vec<String>>>;

/// Records every event as `action kind/name` or `action namespace`.
fn recorder() -> (Events, impl Fn(&ReconcileEvent<'_>) + Send + Sync + 'static) {
    let events: Events = Arc::default();
    let sink = events.clone();
    (events, move |event: &ReconcileEvent<'_>| {
        let subject = match (event.workload(), event) {
            (Some(w), _) => format!("{}/{}", w.kind, w.name),
            (
                None,
                ReconcileEvent::WaitingForWebhook {
                    namespace, attempt, ..
                },
            ) => format!("{namespace}#{attempt}"),
            (None, ReconcileEvent::WebhookUnreached { namespace, .. }) => namespace.to_string(),
            (None, _) => String::new(),
        };
        sink.lock()
            .unwrap()
            .push(format!("{} {subject}", event.action()));
    })
}

/// The seeded non-compliant Deployment and StatefulSet were restarted and their new pods pass.
fn assert_agent_and_db_restarted_and_passing(report: &restrictor::cluster::ReconcileReport) {
    for restarted in [&report.restarted, &report.verified] {
        assert_eq!(names(restarted), ["Deployment/agent", "StatefulSet/db"]);
    }
}

fn names(workloads: &[WorkloadRef]) -> Vec<String> {
    workloads
        .iter()
        .map(|w| format!("{}/{}", w.kind, w.name))
        .collect()
}

/// The seeded workloads behind a fake API server whose probe answers `live` decides (given the
/// probe's number); returns the probe counter too.
async fn seeded_fake(live: impl Fn(usize) -> bool + Send + 'static) -> (Fake, Arc<Mutex<usize>>) {
    let fake = Fake::start(reconcile_rbac()).await;
    seed_workloads(&fake);
    let probes = Arc::new(Mutex::new(0));
    webhook_answers(&fake, probes.clone(), live);
    (fake, probes)
}

/// Runs a reconcile of cattle-system under the built-in policy; returns its report, its events
/// (as [`recorder`] writes them) and its log.
async fn reconcile_observed(
    fake: &Fake,
    timing: ReconcileTiming,
) -> (restrictor::cluster::ReconcileReport, Vec<String>, String) {
    let (events, observer) = recorder();
    let (logs, guard) = support::Logs::capture();
    let report = Reconciler::new(fake.client(), config_for(APP_NS, timing), builtin_policy())
        .with_observer(observer)
        .run()
        .await
        .unwrap();
    drop(guard);
    let events = events.lock().unwrap().clone();
    (report, events, logs.text())
}

fn no_probe_pod_stored(fake: &Fake) {
    fake.with_store(|s| assert!(s.objects.keys().all(|k| !k.contains("restrictor-probe-"))));
}

#[tokio::test]
async fn reconcile_restarts_only_non_compliant_workloads_and_reports_jobs_and_bare_pods() {
    let (fake, _controllers) = live_cluster().await;
    let before_job = fake
        .get(&workload_path("batch", "jobs", APP_NS, "import"))
        .unwrap();
    let now = time::macros::datetime!(2026-03-04 05:06:07.891 UTC);
    let report = Reconciler::new(
        fake.client(),
        config_for(APP_NS, quick_timing(3, 0)),
        builtin_policy(),
    )
    .with_clock(Arc::new(move || now))
    .run()
    .await
    .unwrap();

    assert_agent_and_db_restarted_and_passing(&report);
    assert_eq!(names(&report.reported), ["Job/import", "Pod/bare"]);
    assert_eq!(report.skipped, 3);
    assert!(
        report.failed.is_empty() && report.still_failing.is_empty() && report.unreached.is_empty()
    );
    let agent = fake
        .get(&workload_path("apps", "deployments", APP_NS, "agent"))
        .unwrap();
    assert_eq!(
        agent["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"],
        "2026-03-04T05:06:07Z"
    );
    assert_eq!(
        agent["spec"]["template"]["metadata"]["labels"]["app"], "agent",
        "nothing else changed"
    );
    assert_eq!(report.restarted[0].api_version, "apps/v1");
    assert_eq!(
        report.restarted[0].uid,
        agent["metadata"]["uid"].as_str().unwrap()
    );
    let fine = fake
        .get(&workload_path("apps", "deployments", APP_NS, "fine"))
        .unwrap();
    assert!(
        fine["spec"]["template"]["metadata"]
            .get("annotations")
            .is_none()
    );
    assert_eq!(
        fake.get(&workload_path("batch", "jobs", APP_NS, "import"))
            .unwrap(),
        before_job
    );
    assert_eq!(
        fake.count("patch", "deployments") + fake.count("patch", "statefulsets"),
        2
    );
    assert_eq!(fake.count("patch", "daemonsets"), 0);
    assert_eq!(
        fake.count("create", "pods"),
        1,
        "one probe for the namespace"
    );
    assert!(
        fake.calls()
            .iter()
            .all(|c| c.namespace.as_deref() == Some(APP_NS))
    );
    no_probe_pod_stored(&fake);
    fake.assert_no_unexpected();
}

#[tokio::test]
async fn restarts_wait_until_the_api_server_calls_restrictor() {
    // The API server picks up the webhook configuration only at the fourth probe.
    let (fake, probes) = seeded_fake(|n| n >= 4).await;
    let _controllers = controller(&fake, |pod, _| Some(restrictor_mutates(pod, APP_NS)), "");
    let (report, events, logs) = reconcile_observed(&fake, quick_timing(6, 0)).await;

    assert_eq!(*probes.lock().unwrap(), 4);
    let first_restart = events
        .iter()
        .position(|e| e.starts_with("restarted "))
        .expect("restarted");
    assert_eq!(
        events[..first_restart]
            .iter()
            .filter(|e| e.starts_with("waiting-for-webhook"))
            .collect::<Vec<_>>(),
        [
            "waiting-for-webhook cattle-system#1",
            "waiting-for-webhook cattle-system#2",
            "waiting-for-webhook cattle-system#3"
        ]
    );
    assert!(
        !events[first_restart..]
            .iter()
            .any(|e| e.starts_with("waiting"))
    );
    // No patch before the probe that came back mutated.
    let calls = fake.calls();
    let fourth_probe = calls
        .iter()
        .enumerate()
        .filter(|(_, c)| c.verb == "create" && c.resource == "pods")
        .nth(3)
        .unwrap()
        .0;
    assert!(calls[..fourth_probe].iter().all(|c| c.verb != "patch"));
    assert_agent_and_db_restarted_and_passing(&report);
    assert!(
        logs.contains("waiting for the API server to call restrictor in namespace cattle-system: probe pod came back unmutated (attempt 1, next in 0.0s)"),
        "{logs}"
    );
    assert!(logs.contains("attempt 3, next in 0.1s"), "{logs}");
    no_probe_pod_stored(&fake);
    fake.assert_no_unexpected();
}

#[tokio::test]
async fn nothing_is_restarted_while_the_probe_never_comes_back_mutated() {
    let (fake, probes) = seeded_fake(|_| false).await;
    let (report, events, logs) = reconcile_observed(&fake, quick_timing(3, 2)).await;

    assert_eq!(
        *probes.lock().unwrap(),
        4,
        "the first probe and three retries"
    );
    assert_eq!(
        fake.count("patch", "deployments")
            + fake.count("patch", "statefulsets")
            + fake.count("patch", "daemonsets"),
        0
    );
    assert!(report.restarted.is_empty());
    assert_eq!(
        report.unreached,
        vec![(
            APP_NS.to_owned(),
            "probe pod came back unmutated".to_owned()
        )]
    );
    assert_eq!(
        names(&report.reported),
        ["Job/import", "Pod/bare"],
        "reporting needs no webhook"
    );
    assert_eq!(
        events
            .iter()
            .filter(|e| e.starts_with("waiting-for-webhook"))
            .count(),
        3
    );
    assert!(events.contains(&"webhook-unreached cattle-system".to_owned()));
    for attempt in 1..=3 {
        assert!(
            logs.contains(&format!("waiting for the API server to call restrictor in namespace cattle-system: probe pod came back unmutated (attempt {attempt}, next in")),
            "{logs}"
        );
    }
    assert!(logs.contains("gave up waiting for the API server to call restrictor in namespace cattle-system: probe pod came back unmutated (attempt 4); nothing restarted there"), "{logs}");
    no_probe_pod_stored(&fake);
    fake.assert_no_unexpected();
}

#[tokio::test]
async fn an_answer_mutated_by_another_webhook_without_restrictors_echo_is_not_accepted() {
    // Another mutating webhook writes exactly restrictor's securityContext while restrictor is
    // unreachable: the answer's content is right, but restrictor never saw the review.
    let fake = Fake::start(reconcile_rbac()).await;
    seed_workloads(&fake);
    let probes = Arc::new(Mutex::new(0));
    webhook_answers_with(&fake, probes.clone(), |_, pod| {
        let namespace = pod["metadata"]["namespace"].as_str().unwrap().to_owned();
        Ok(restrictor_mutates(pod, &namespace))
    });
    let (report, _, logs) = reconcile_observed(&fake, quick_timing(2, 0)).await;

    assert_eq!(*probes.lock().unwrap(), 3);
    assert!(report.restarted.is_empty());
    assert_eq!(
        fake.count("patch", "deployments") + fake.count("patch", "statefulsets"),
        0,
        "nothing restarted"
    );
    assert_eq!(report.unreached.len(), 1);
    assert!(
        report.unreached[0]
            .1
            .contains("without restrictor's restrictor.dev/probe-seen echo"),
        "{:?}",
        report.unreached
    );
    assert!(logs.contains("restrictor did not see its review"), "{logs}");
    no_probe_pod_stored(&fake);
    fake.assert_no_unexpected();
}

#[tokio::test]
async fn a_pod_security_403_on_the_probe_means_not_yet_not_rbac() {
    // Before the webhook is live, the namespace's PodSecurity admission refuses the unmutated
    // probe with a 403; that is no missing permission.
    let refused = "pods \"restrictor-probe-dry42\" is forbidden: violates PodSecurity \"restricted:latest\": allowPrivilegeEscalation != false (container \"probe-0\" must set securityContext.allowPrivilegeEscalation=false)";
    let fake = Fake::start(reconcile_rbac()).await;
    seed_workloads(&fake);
    let probes = Arc::new(Mutex::new(0));
    webhook_answers_with(&fake, probes.clone(), move |n, pod| {
        if n < 3 {
            Err((403, "Forbidden", refused.to_owned()))
        } else {
            restrictor_reviews(pod)
        }
    });
    let _controllers = controller(&fake, |pod, _| Some(restrictor_mutates(pod, APP_NS)), "");
    let (report, events, logs) = reconcile_observed(&fake, quick_timing(4, 0)).await;

    assert_eq!(*probes.lock().unwrap(), 3);
    assert_eq!(
        events
            .iter()
            .filter(|e| e.starts_with("waiting-for-webhook"))
            .count(),
        2
    );
    assert!(logs.contains("violates PodSecurity"), "{logs}");
    assert!(!logs.contains("lacks verb"), "not read as RBAC: {logs}");
    assert_agent_and_db_restarted_and_passing(&report);
    fake.assert_no_unexpected();
}

#[tokio::test]
async fn a_failed_list_is_retried_in_the_next_round_while_other_namespaces_go_on() {
    let (fake, _controllers) = live_cluster().await;
    // The first list of deployments (cattle-system's, listed first) answers 500.
    fake.fault("list", "deployments", 500, "InternalError", 1, None);
    let config = ReconcileConfig {
        namespaces: Some(vec![APP_NS.into(), "other".into()]),
        timing: quick_timing(3, 1),
    };
    let (captured, guard) = support::Logs::capture();
    let report = Reconciler::new(fake.client(), config, builtin_policy())
        .run()
        .await
        .expect("a 500 stops nothing");
    drop(guard);
    let logs = captured.text();

    assert_eq!(
        names(&report.restarted),
        ["Deployment/x", "Deployment/agent", "StatefulSet/db"],
        "the other namespace first, then cattle-system in the next round"
    );
    assert_eq!(names(&report.verified), names(&report.restarted));
    assert_eq!(names(&report.reported), ["Job/import", "Pod/bare"], "once");
    assert!(report.unlisted.is_empty(), "{:?}", report.unlisted);
    let calls = fake.calls();
    let lists: Vec<_> = calls
        .iter()
        .filter(|c| c.verb == "list" && c.resource == "deployments")
        .map(|c| c.namespace.clone().unwrap())
        .collect();
    assert_eq!(lists, [APP_NS, "other", APP_NS]);
    assert!(
        logs.contains("cannot list the workloads of namespace cattle-system; it is tried again in the next round"),
        "{logs}"
    );

    // With no round left, the namespace is reported as not reconciled.
    let (fake, _controllers) = live_cluster().await;
    fake.fault("list", "deployments", 500, "InternalError", 1, None);
    let config = ReconcileConfig {
        namespaces: Some(vec![APP_NS.into(), "other".into()]),
        timing: quick_timing(3, 0),
    };
    let report = Reconciler::new(fake.client(), config, builtin_policy())
        .run()
        .await
        .unwrap();
    assert_eq!(names(&report.restarted), ["Deployment/x"]);
    assert_eq!(report.unlisted.len(), 1);
    assert_eq!(report.unlisted[0].0, APP_NS);
    assert!(
        report.unlisted[0].1.contains("500"),
        "{:?}",
        report.unlisted
    );
    assert!(report.reported.is_empty(), "nothing half-reported");
    fake.assert_no_unexpected();
}

#[tokio::test]
async fn a_failing_workload_the_next_round_does_not_restart_is_still_reported() {
    // On a real API server restrictor mutates the Deployment's template on the restart UPDATE, so
    // the next round finds nothing to restart; the rollout's pod still failed.
    let fake = Fake::start(reconcile_rbac()).await;
    let path = workload_path("apps", "deployments", APP_NS, "agent");
    fake.put(
        &path,
        workload("apps/v1", "Deployment", APP_NS, "agent", false),
    );
    webhook_answers(&fake, Arc::default(), |_| true);
    let store = fake.clone();
    let _controllers = controller(
        &fake,
        move |pod, _| {
            store.with_store(|s| {
                let compliant = workload("apps/v1", "Deployment", APP_NS, "agent", true);
                let mut agent = s.objects[&path].clone();
                let annotations = agent["spec"]["template"]["metadata"]["annotations"].clone();
                agent["spec"]["template"] = compliant["spec"]["template"].clone();
                agent["spec"]["template"]["metadata"]["annotations"] = annotations;
                s.put(&path, agent);
            });
            Some(pod.clone())
        },
        "",
    );
    let (report, events, logs) = reconcile_observed(&fake, quick_timing(3, 1)).await;

    assert_eq!(fake.count("patch", "deployments"), 1, "not restarted again");
    assert_eq!(
        events,
        [
            "restarted Deployment/agent",
            "still-failing Deployment/agent"
        ]
    );
    assert_eq!(names(&report.restarted), ["Deployment/agent"]);
    assert!(report.verified.is_empty());
    assert_eq!(report.still_failing.len(), 1, "{report:?}");
    let reason = &report.still_failing[0].1;
    assert!(
        reason.starts_with("new pod agent-1f7c9-p1 fails restricted")
            && reason.ends_with("; not restarted again: it no longer needs a restart"),
        "{reason}"
    );
    assert!(logs.contains("still_failing=1"), "{logs}");
    fake.assert_no_unexpected();
}

#[tokio::test]
async fn a_restart_whose_new_pods_still_fail_is_retried_then_reported() {
    let fake = Fake::start(reconcile_rbac()).await;
    fake.put(
        &workload_path("apps", "deployments", APP_NS, "agent"),
        workload("apps/v1", "Deployment", APP_NS, "agent", false),
    );
    webhook_answers(&fake, Arc::default(), |_| true);
    // The first rollout's pod is created unmutated (the pod webhook was not called for it); the
    // second one's pods are refused.
    let denied = "pods \"agent-2f7c9-x\" is forbidden: admission webhook \"workloads.restrictor.dev\" denied the request: hostPath volumes";
    let _controllers = controller(
        &fake,
        |pod, rollout| (rollout == 1).then(|| pod.clone()),
        denied,
    );
    let (report, events, logs) = reconcile_observed(&fake, quick_timing(3, 1)).await;

    assert_eq!(
        fake.count("patch", "deployments"),
        2,
        "restarted, then once more: bounded"
    );
    assert_eq!(names(&report.restarted), ["Deployment/agent"]);
    assert!(report.verified.is_empty());
    assert_eq!(report.still_failing.len(), 1);
    assert_eq!(
        report.still_failing[0].1,
        format!("the controller cannot create its pods: {denied}")
    );
    assert_eq!(
        events,
        [
            "restarted Deployment/agent",
            "still-failing Deployment/agent",
            "restarted Deployment/agent",
            "still-failing Deployment/agent"
        ]
    );
    assert!(logs.contains("restarted workload still fails"), "{logs}");
    assert!(
        logs.contains("new pod agent-1f7c9-p1 fails restricted"),
        "{logs}"
    );
    assert!(logs.contains(denied), "{logs}");
    fake.assert_no_unexpected();
}

#[tokio::test]
async fn a_namespace_the_policy_leaves_alone_gets_no_probe_and_no_restart() {
    let fake = Fake::start(reconcile_rbac()).await;
    seed_workloads(&fake);
    let policy = Policy::from_yaml(
        "rules:\n  - name: rancher\n    match: {namespaces: [cattle-system]}\n    profile: none\n  - name: rest\n    match: {namespaces: [apps]}\n    profile: restricted\nprofiles:\n  restricted: {}\n",
    )
    .unwrap();
    let (policy_tx, policy_rx) = watch::channel(Arc::new(policy));
    let config = ReconcileConfig {
        namespaces: None,
        timing: quick_timing(1, 0),
    };
    let report = Reconciler::new(fake.client(), config.clone(), policy_rx.clone())
        .run()
        .await
        .unwrap();
    assert!(report.restarted.is_empty() && report.reported.is_empty());
    assert_eq!(fake.count("create", "pods"), 0);
    assert!(
        fake.calls()
            .iter()
            .all(|c| c.namespace.as_deref() == Some("apps")),
        "the literal namespace of the live policy"
    );

    // A policy change reaches the next reconcile: now cattle-system gets a profile.
    policy_tx.send_replace(Arc::new(Policy::builtin()));
    webhook_answers(&fake, Arc::default(), |_| true);
    let _controllers = controller(&fake, |pod, _| Some(restrictor_mutates(pod, APP_NS)), "");
    let report = Reconciler::new(fake.client(), config, policy_rx)
        .run()
        .await
        .unwrap();
    assert_eq!(
        names(&report.restarted),
        ["Deployment/agent", "StatefulSet/db"]
    );
    fake.assert_no_unexpected();
}

#[tokio::test]
async fn reconcile_as_leader_takes_and_releases_the_lease() {
    let (fake, _controllers) = live_cluster().await;
    let (ready_tx, ready_rx) = watch::channel(false);
    let (events, observer) = recorder();
    let task = tokio::spawn(cluster::reconcile_as_leader(
        fake.client(),
        LeaseConfig::new(NS, LEASE, "restrictor-0"),
        config_for(APP_NS, quick_timing(3, 0)),
        builtin_policy(),
        ready_rx,
        observer,
    ));
    tokio::time::sleep(StdDuration::from_millis(100)).await;
    assert_eq!(fake.calls().len(), 0, "nothing before the webhook is ready");
    ready_tx.send_replace(true);
    let report = task.await.unwrap().unwrap().expect("reconciled");
    assert_eq!(report.restarted.len(), 2);
    assert_eq!(
        events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.starts_with("restarted"))
            .count(),
        2
    );
    let lease = fake.get(LEASE_PATH).expect("lease created");
    assert!(
        lease["spec"].get("holderIdentity").is_none(),
        "released: {lease}"
    );
    assert_eq!(fake.count("create", "leases"), 1);
    fake.assert_no_unexpected();
}

#[tokio::test]
async fn a_policy_change_reconciles_again_under_the_new_policy() {
    let (fake, _controllers) = live_cluster().await;
    let leaves_rancher_alone = Policy::from_yaml(
        "rules:\n  - name: rancher\n    match: {namespaces: [cattle-system]}\n    profile: none\nprofiles:\n  restricted: {}\n",
    )
    .unwrap();
    let (policy_tx, policy_rx) = watch::channel(Arc::new(leaves_rancher_alone));
    let (events, observer) = recorder();
    let (logs, _guard) = support::Logs::capture();
    let task = tokio::spawn(cluster::reconcile_on_every_policy(
        fake.client(),
        LeaseConfig::new(NS, LEASE, "restrictor-0"),
        config_for(APP_NS, quick_timing(3, 0)),
        policy_rx,
        watch::channel(true).1,
        observer,
    ));
    let within = StdDuration::from_secs(10);
    let restarted = || {
        events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.starts_with("restarted"))
            .count()
    };
    let passes = async |n| {
        let done = || async { logs.lines_containing("reconciled existing workloads") == n };
        assert!(
            support::eventually(within, done).await,
            "pass {n}: {}",
            logs.text()
        );
    };
    passes(1).await;
    assert_eq!(
        restarted(),
        0,
        "the first policy leaves cattle-system alone"
    );
    assert_eq!(fake.count("patch", "deployments"), 0);

    // The policy is reloaded with a profile for cattle-system: the reconcile runs again.
    policy_tx.send_replace(Arc::new(Policy::builtin()));
    passes(2).await;
    assert_eq!(restarted(), 2, "{:?}", events.lock().unwrap());
    assert_eq!(logs.lines_containing("the policy changed"), 1);
    let lease = fake.get(LEASE_PATH).expect("lease created");
    assert!(
        lease["spec"].get("holderIdentity").is_none(),
        "released: {lease}"
    );

    // The same policy once more: nothing is left to restart. (In a cluster the restart's UPDATE
    // went through restrictor, which fixed the templates; the fake calls no webhook on a patch.)
    let builtin = Policy::builtin();
    for (resource, kind, name) in [
        ("deployments", WorkloadKind::Deployment, "agent"),
        ("statefulsets", WorkloadKind::StatefulSet, "db"),
    ] {
        let path = workload_path("apps", resource, APP_NS, name);
        let mut object = fake.get(&path).unwrap();
        let evaluation = restrictor::engine::evaluate(
            &builtin,
            &mut object,
            kind,
            APP_NS,
            restrictor::engine::Context {
                operation: restrictor::engine::Operation::Update,
                sub_resource: None,
            },
        );
        assert!(evaluation.is_some_and(|e| e.outcome.denial.is_none()));
        fake.put(&path, object);
    }
    policy_tx.send_replace(Arc::new(Policy::builtin()));
    passes(3).await;
    assert_eq!(restarted(), 2);
    drop(policy_tx);
    tokio::time::timeout(within, task)
        .await
        .expect("stops when the policy sender is gone")
        .unwrap()
        .unwrap();
    fake.assert_no_unexpected();
}

#[tokio::test]
async fn lease_is_exclusive_until_it_expires() {
    let fake = Fake::start(chart_rbac()).await;
    let start = OffsetDateTime::now_utc();
    let (clock, clock_fn) = test_clock(start);
    let a = LeaderElector::new(fake.client(), LeaseConfig::new(NS, LEASE, "a"))
        .with_clock(clock_fn.clone());
    let b =
        LeaderElector::new(fake.client(), LeaseConfig::new(NS, LEASE, "b")).with_clock(clock_fn);
    assert!(a.try_acquire().await.unwrap());
    assert!(!b.try_acquire().await.unwrap());
    *clock.lock().unwrap() = start + Duration::seconds(10);
    assert!(a.try_acquire().await.unwrap(), "renewed");
    *clock.lock().unwrap() = start + Duration::seconds(20);
    assert!(
        !b.try_acquire().await.unwrap(),
        "renewed at 10 s, valid until 25 s"
    );
    *clock.lock().unwrap() = start + Duration::seconds(26);
    assert!(b.try_acquire().await.unwrap(), "expired: taken over");
    let lease = fake.get(LEASE_PATH).unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], "b");
    assert_eq!(lease["spec"]["leaseTransitions"], 1);
    a.release().await.unwrap();
    assert_eq!(
        fake.get(LEASE_PATH).unwrap()["spec"]["holderIdentity"],
        "b",
        "a cannot release b's lease"
    );
    b.release().await.unwrap();
    assert!(a.try_acquire().await.unwrap());
    fake.assert_no_unexpected();
}

#[tokio::test]
async fn a_holder_whose_renewals_fail_gives_the_lease_up_before_it_expires() {
    let fake = Fake::start(chart_rbac()).await;
    let start = OffsetDateTime::now_utc();
    let (clock, clock_fn) = test_clock(start);
    // A 3 s lease: renewed every second, given up after 2 s of failed renewals.
    let mut config = LeaseConfig::new(NS, LEASE, "a");
    config.lease_duration = Duration::seconds(3);
    let a = LeaderElector::new(fake.client(), config.clone()).with_clock(clock_fn.clone());
    assert!(a.try_acquire().await.unwrap());
    fake.fault("update", "leases", 500, "InternalError", 100, None);
    let hold = restrictor::cluster::lease::LeaseHold::start(Arc::new(a));
    let held = hold.watch();

    // 1.5 s without a renewal: still within the renew deadline.
    *clock.lock().unwrap() = start + Duration::milliseconds(1500);
    tokio::time::sleep(StdDuration::from_millis(1400)).await;
    assert!(fake.count("update", "leases") >= 1, "a renewal was tried");
    assert!(*held.borrow(), "held within the renew deadline");

    // 2.1 s: past the renew deadline, still before the lease expires at 3 s.
    *clock.lock().unwrap() = start + Duration::milliseconds(2100);
    wait_until("the lease given up", || !*held.borrow()).await;
    let mut other = config;
    other.identity = "b".into();
    let b = LeaderElector::new(fake.client(), other).with_clock(clock_fn);
    assert!(
        !b.try_acquire().await.unwrap(),
        "given up while no other replica could take it yet"
    );
    drop(hold);
}

#[tokio::test]
async fn uninstall_deletes_the_configuration_and_not_found_is_success() {
    let fake = fake_with_config().await;
    assert!(cluster::uninstall(fake.client(), WH).await.unwrap());
    assert!(fake.get(WH_PATH).is_none());
    assert!(!cluster::uninstall(fake.client(), WH).await.unwrap());
    assert_eq!(fake.count("delete", "mutatingwebhookconfigurations"), 2);
    fake.assert_no_unexpected();
}

#[tokio::test]
async fn forbidden_gives_one_clear_message() {
    let fake = fake_with_config().await;
    fake.fault(
        "patch",
        "mutatingwebhookconfigurations",
        403,
        "Forbidden",
        1,
        None,
    );
    let ch = channels();
    let err = SelfManagedCerts::new(fake.client(), config())
        .sync_once(&ch.serving_tx, &ch.injected_tx)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "forbidden: cannot patch mutatingwebhookconfigurations.admissionregistration.k8s.io \"restrictor\" — \
         the ServiceAccount lacks verb \"patch\" on that resource; check the chart's ClusterRole"
    );
    assert!(!*ch.injected_rx.borrow());

    // A namespaced one, from the reconcile.
    fake.fault("list", "deployments", 403, "Forbidden", 1, None);
    let err = Reconciler::new(
        fake.client(),
        config_for(APP_NS, quick_timing(1, 0)),
        builtin_policy(),
    )
    .run()
    .await
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "forbidden: cannot list deployments.apps in namespace \"cattle-system\" — the ServiceAccount lacks verb \
         \"list\" on that resource; check the chart's Role/ClusterRole bound in namespace \"cattle-system\""
    );

    // A real RBAC denial (a call the chart does not grant) reads the same way.
    let denied = Fake::start(vec![]).await;
    let err = cluster::uninstall(denied.client(), WH).await.unwrap_err();
    assert!(err.to_string().starts_with("forbidden: cannot delete mutatingwebhookconfigurations.admissionregistration.k8s.io \"restrictor\""));
    fake.assert_no_unexpected();
}
