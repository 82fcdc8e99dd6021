//! The cluster side against an in-process fake API server, with the real `kube::Client`.

mod fake_apiserver;

use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use base64::Engine;
use fake_apiserver::{Fake, rule};
use restrictor::certs::{self, CertPolicy, CertState, Phase, ServingPem, Step};
use restrictor::cluster::{
    self, Clock, LeaderElector, LeaseConfig, ReconcileConfig, SelfManagedCerts, SelfManagedConfig,
    WorkloadRef,
};
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
        rule(&["get", "update", "watch"], "", "secrets", Some(SECRET)),
        rule(&["create"], "", "secrets", None),
        rule(
            &["get", "patch", "watch", "delete"],
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
    assert_eq!(served.cert_chain, secret_field(&fake, "tls.crt").unwrap());
    assert_eq!(served.key, secret_field(&fake, "tls.key").unwrap());
    assert!(trusts(
        &bundle,
        &served.cert_chain,
        OffsetDateTime::now_utc()
    ));
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
        a.serving_rx.borrow().as_ref().unwrap().cert_chain,
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
        self.ch
            .serving_rx
            .borrow()
            .as_ref()
            .unwrap()
            .cert_chain
            .clone()
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
        CertificateDer::pem_slice_iter(serving.cert_chain.as_bytes())
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
    let spec = json!({"securityContext": {"runAsNonRoot": compliant}, "containers": [{"name": "c", "image": "busybox"}]});
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

/// The test's stand-in for the PSS checker: the pod must set runAsNonRoot. Also proves the
/// reconcile hands over objects with apiVersion/kind filled in.
fn non_compliant(o: &Value) -> bool {
    let pointer = match o["kind"].as_str() {
        Some("Pod") => "/spec/securityContext/runAsNonRoot",
        Some(_) => "/spec/template/spec/securityContext/runAsNonRoot",
        None => panic!("object without kind: {o}"),
    };
    assert!(o["apiVersion"].is_string());
    o.pointer(pointer) != Some(&json!(true))
}

fn seed_workloads(fake: &Fake) {
    let app = "cattle-system";
    fake.put(
        &workload_path("apps", "deployments", app, "agent"),
        workload("apps/v1", "Deployment", app, "agent", false),
    );
    fake.put(
        &workload_path("apps", "deployments", app, "fine"),
        workload("apps/v1", "Deployment", app, "fine", true),
    );
    fake.put(
        &workload_path("apps", "statefulsets", app, "db"),
        workload("apps/v1", "StatefulSet", app, "db", false),
    );
    fake.put(
        &workload_path("apps", "daemonsets", app, "ds"),
        workload("apps/v1", "DaemonSet", app, "ds", true),
    );
    fake.put(
        &workload_path("batch", "jobs", app, "import"),
        workload("batch/v1", "Job", app, "import", false),
    );
    fake.put(
        &workload_path("", "pods", app, "bare"),
        workload("v1", "Pod", app, "bare", false),
    );
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

fn wref(kind: &'static str, name: &str) -> WorkloadRef {
    WorkloadRef {
        kind,
        namespace: "cattle-system".into(),
        name: name.into(),
    }
}

#[tokio::test]
async fn reconcile_restarts_only_non_compliant_workloads_and_reports_jobs_and_bare_pods() {
    let fake = Fake::start(chart_rbac()).await;
    seed_workloads(&fake);
    let before_job = fake
        .get(&workload_path("batch", "jobs", "cattle-system", "import"))
        .unwrap();
    let now = time::macros::datetime!(2026-03-04 05:06:07.891 UTC);
    let cfg = ReconcileConfig {
        namespaces: vec!["cattle-system".into()],
    };
    let report = cluster::reconcile_existing(&fake.client(), &cfg, non_compliant, now)
        .await
        .unwrap();

    assert_eq!(
        report.restarted,
        vec![wref("Deployment", "agent"), wref("StatefulSet", "db")]
    );
    assert_eq!(
        report.reported,
        vec![wref("Job", "import"), wref("Pod", "bare")]
    );
    assert_eq!(report.skipped, 3);
    assert!(report.failed.is_empty());
    let agent = fake
        .get(&workload_path(
            "apps",
            "deployments",
            "cattle-system",
            "agent",
        ))
        .unwrap();
    assert_eq!(
        agent["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"],
        "2026-03-04T05:06:07Z"
    );
    assert_eq!(
        agent["spec"]["template"]["metadata"]["labels"]["app"], "agent",
        "nothing else changed"
    );
    let fine = fake
        .get(&workload_path(
            "apps",
            "deployments",
            "cattle-system",
            "fine",
        ))
        .unwrap();
    assert!(
        fine["spec"]["template"]["metadata"]
            .get("annotations")
            .is_none()
    );
    assert_eq!(
        fake.get(&workload_path("batch", "jobs", "cattle-system", "import"))
            .unwrap(),
        before_job
    );
    assert_eq!(
        fake.count("patch", "deployments") + fake.count("patch", "statefulsets"),
        2
    );
    assert_eq!(fake.count("patch", "daemonsets"), 0);
    assert!(
        fake.calls()
            .iter()
            .all(|c| c.namespace.as_deref() == Some("cattle-system"))
    );
    fake.assert_no_unexpected();
}

#[tokio::test]
async fn reconcile_as_leader_takes_and_releases_the_lease() {
    let fake = Fake::start(chart_rbac()).await;
    seed_workloads(&fake);
    let (ready_tx, ready_rx) = watch::channel(false);
    let cfg = ReconcileConfig {
        namespaces: vec!["cattle-system".into()],
    };
    let task = tokio::spawn(cluster::reconcile_as_leader(
        fake.client(),
        LeaseConfig::new(NS, LEASE, "restrictor-0"),
        cfg,
        non_compliant,
        ready_rx,
    ));
    tokio::time::sleep(StdDuration::from_millis(100)).await;
    assert_eq!(fake.calls().len(), 0, "nothing before the webhook is ready");
    ready_tx.send_replace(true);
    let report = task.await.unwrap().unwrap().expect("reconciled");
    assert_eq!(report.restarted.len(), 2);
    let lease = fake.get(LEASE_PATH).expect("lease created");
    assert!(
        lease["spec"].get("holderIdentity").is_none(),
        "released: {lease}"
    );
    assert_eq!(fake.count("create", "leases"), 1);
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
    let cfg = ReconcileConfig {
        namespaces: vec!["cattle-system".into()],
    };
    let err = cluster::reconcile_existing(
        &fake.client(),
        &cfg,
        non_compliant,
        OffsetDateTime::now_utc(),
    )
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
