//! The server's components wired together as `Server::bind` and `Server::run` wire them, without
//! a client: what the request path and the other subscribers hold.

use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::oneshot;

use super::*;
use crate::admission::{Disposition, review};
use crate::policy::BUILTIN_YAML;

struct TempDir(PathBuf);

impl TempDir {
    fn new(label: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("restrictor-server-{label}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn local(mut config: ServeConfig) -> ServeConfig {
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.admin_listen = "127.0.0.1:0".parse().unwrap();
    config.reload_interval = Duration::from_millis(20);
    config
}

/// Runs `server` until the returned sender is dropped or fired.
fn run(server: Server) -> (oneshot::Sender<()>, JoinHandle<Result<(), ServeError>>) {
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async move {
        let _ = stopped.await;
    }));
    (stop, task)
}

fn scalar(metrics: &Metrics, name: &str) -> Option<f64> {
    metrics
        .render()
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

async fn eventually(mut f: impl FnMut() -> bool) -> bool {
    for _ in 0..250 {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

fn self_signed() -> ServingPem {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["restrictor.test".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    ServingPem {
        cert: cert.pem(),
        key: key.serialize_pem(),
    }
}

/// The profile the request path's policy picks for a pod in namespace `team`.
fn profile_answered(shared: &http::Shared) -> Option<String> {
    let body = serde_json::to_vec(&serde_json::json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "u", "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "namespace": "team", "operation": "CREATE",
            "object": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                       "spec": {"containers": [{"name": "a", "image": "nginx"}]}},
        }
    }))
    .unwrap();
    let answer = review(&body, &shared.policy.load()).unwrap();
    assert_ne!(answer.summary.disposition, Disposition::Denied);
    answer.summary.profile
}

#[tokio::test]
async fn a_policy_changed_on_disk_reaches_the_request_path_and_the_reconciler_from_one_parse() {
    let dir = TempDir::new("policy-source");
    let path = dir.0.join("policy.yaml");
    std::fs::write(&path, BUILTIN_YAML).unwrap();
    let (_tls, tls_rx) = watch::channel(None);
    let mut config = local(ServeConfig::new(TlsSource::Channel(tls_rx)));
    config.policy_path = Some(path.clone());
    let server = Server::bind(config).await.unwrap();
    let shared = server.shared.clone();
    let metrics = server.metrics();
    let mut reconciler = server.policy();
    let (_stop, _task) = run(server);

    assert!(Arc::ptr_eq(
        &reconciler.borrow(),
        &shared.policy.load_full()
    ));
    assert_eq!(profile_answered(&shared).as_deref(), Some("restricted"));
    assert_eq!(
        scalar(&metrics, "restrictor_policy_reloads_total"),
        Some(1.0)
    );

    let team_rule = "rules:\n  - name: team\n    match:\n      namespaces: [team]\n    profile: rancher-agent\n";
    std::fs::write(&path, BUILTIN_YAML.replace("rules:\n", team_rule)).unwrap();
    tokio::time::timeout(Duration::from_secs(5), reconciler.changed())
        .await
        .expect("the reconciler's receiver is told of the change")
        .unwrap();
    let published = reconciler.borrow_and_update().clone();
    assert_eq!(published.literal_namespaces(), ["cattle-system", "team"]);
    assert!(
        eventually(|| Arc::ptr_eq(&published, &shared.policy.load_full())).await,
        "the request path answers with the very policy the receiver holds"
    );
    assert_eq!(profile_answered(&shared).as_deref(), Some("rancher-agent"));
    // One change, one parse: later polls of the unchanged file publish nothing.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        scalar(&metrics, "restrictor_policy_reloads_total"),
        Some(2.0)
    );
    assert!(!reconciler.has_changed().unwrap());

    // An invalid policy changes nothing anywhere.
    std::fs::write(
        &path,
        BUILTIN_YAML.replace("runAsUser: 1000", "runAsUser: 0"),
    )
    .unwrap();
    assert!(
        eventually(|| scalar(&metrics, "restrictor_policy_reload_errors_total") == Some(1.0)).await
    );
    assert!(!reconciler.has_changed().unwrap());
    assert!(Arc::ptr_eq(&published, &shared.policy.load_full()));
    assert_eq!(
        scalar(&metrics, "restrictor_policy_reloads_total"),
        Some(2.0)
    );
}

#[tokio::test]
async fn without_a_policy_file_the_builtin_policy_is_published_and_the_channel_stays_open() {
    let (_tls, tls_rx) = watch::channel(None);
    let server = Server::bind(local(ServeConfig::new(TlsSource::Channel(tls_rx))))
        .await
        .unwrap();
    let mut reconciler = server.policy();
    assert_eq!(**reconciler.borrow(), Policy::builtin());
    let (_stop, _task) = run(server);
    let closed = tokio::time::timeout(Duration::from_millis(200), reconciler.changed()).await;
    assert!(
        closed.is_err(),
        "no change, and no closed channel: {closed:?}"
    );
}

#[tokio::test]
async fn the_certificate_expiry_is_exported_with_certificate_files_and_from_a_channel() {
    let pem = self_signed();
    let not_after = tls::parse_pem(&pem).unwrap().not_after as f64;
    assert!(not_after > 0.0);

    let dir = TempDir::new("expiry");
    let (cert, key) = (dir.0.join("tls.crt"), dir.0.join("tls.key"));
    std::fs::write(&cert, &pem.cert).unwrap();
    std::fs::write(&key, &pem.key).unwrap();
    let files = Server::bind(local(ServeConfig::new(TlsSource::Files { cert, key })))
        .await
        .unwrap();
    let expiry = "restrictor_certificate_expiry_timestamp_seconds";
    assert_eq!(scalar(&files.metrics(), expiry), Some(not_after));

    let (tls, tls_rx) = watch::channel(None);
    let channel = Server::bind(local(ServeConfig::new(TlsSource::Channel(tls_rx))))
        .await
        .unwrap();
    let metrics = channel.metrics();
    assert_eq!(scalar(&metrics, expiry), Some(0.0));
    let (_stop, _task) = run(channel);
    tls.send_replace(Some(pem));
    assert!(eventually(|| scalar(&metrics, expiry) == Some(not_after)).await);
}
