//! The load tool's core, shared by `benches/load/main.rs` and the CI smoke (`tests/load_smoke.rs`):
//! throwaway certificates, the agent Deployment's AdmissionReview, the ceiling handler, servers
//! started in-process or as the built binary, and clients that post reviews the way
//! kube-apiserver does (HTTP/1.1 keep-alive or HTTP/2 over TLS verified against the CA, SNI
//! `restrictor.restrictor-system.svc`, `POST /mutate?timeout=10s`).
#![allow(dead_code)]

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener as StdListener, TcpStream as StdStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use restrictor::admission::{AdmissionError, Answer, Review};
use restrictor::policy::Policy;
use restrictor::server::{ReviewFn, ServeConfig, Server, TlsSource};
use rustls::pki_types::ServerName;
use serde_json::json;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_rustls::TlsConnector;

#[path = "../../tests/support/temp_dir.rs"]
mod temp_dir;
pub use temp_dir::TempDir;

/// The name the API server uses for an in-cluster service webhook.
pub const SNI: &str = "restrictor.restrictor-system.svc";

/// The Rancher import manifest whose `cattle-cluster-agent` Deployment is the reviewed object (the
/// README's quick-start input: the same bytes as shared/fixtures/rancher/20-import.v2.14.4.*).
const RANCHER_IMPORT: &str = include_str!("../../examples/rancher-import.yaml");

/// The placeholder uid in the review template; every request overwrites it with its own uid of
/// the same length.
const UID_PLACEHOLDER: &str = "00000000-0000-4000-8000-000000000000";

// ---------------------------------------------------------------------------------------------
// The ceiling handler

/// The ceiling: everything restrictor's handler does that is not policy. Parses and validates the
/// review exactly as `restrictor::admission::review` does (the same `Review::parse`: the object
/// into a `serde_json::Value`), then answers `allowed: true` with the uid.
pub fn ceiling_review(body: &[u8], _policy: &Policy) -> Result<Answer, AdmissionError> {
    Review::parse(body)?.allow()
}

// ---------------------------------------------------------------------------------------------
// Certificates

/// A throwaway CA and a serving certificate for the service's DNS names, written to `dir`.
pub struct Pki {
    ca_der: Vec<u8>,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Pki {
    pub fn generate(dir: &Path) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "restrictor load CA");
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("CA key"))
            .expect("CA certificate");
        let mut params =
            CertificateParams::new(vec![SNI.to_owned(), format!("{SNI}.cluster.local")])
                .expect("leaf params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "restrictor");
        let key = KeyPair::generate().expect("leaf key");
        let leaf = params.signed_by(&key, &ca).expect("leaf certificate");
        let cert_path = dir.join("tls.crt");
        let key_path = dir.join("tls.key");
        std::fs::write(&cert_path, leaf.pem()).expect("write tls.crt");
        std::fs::write(&key_path, key.serialize_pem()).expect("write tls.key");
        Self {
            ca_der: ca.der().to_vec(),
            cert: cert_path,
            key: key_path,
        }
    }

    /// A client that verifies the server against the CA, offering one ALPN protocol.
    pub fn client(&self, proto: Proto) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(self.ca_der.clone().into())
            .expect("CA into root store");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![proto.alpn().to_vec()];
        Arc::new(config)
    }
}

// ---------------------------------------------------------------------------------------------
// The review

fn agent_deployment() -> serde_json::Value {
    restrictor::manifest::parse("rancher-import", RANCHER_IMPORT)
        .expect("the Rancher fixture parses")
        .into_iter()
        .find(|o| o["kind"] == "Deployment" && o["metadata"]["name"] == "cattle-cluster-agent")
        .expect("the fixture has the cattle-cluster-agent Deployment")
}

/// The agent Deployment as restrictor admits it (its template mutated).
fn admitted_agent_deployment() -> serde_json::Value {
    let mut deployment = agent_deployment();
    let policy = Policy::builtin();
    let evaluation = restrictor::engine::evaluate(
        &policy,
        &mut deployment,
        restrictor::workload::WorkloadKind::Deployment,
        "cattle-system",
        restrictor::engine::Context::CREATE,
    )
    .expect("the agent gets a profile");
    assert!(evaluation.outcome.denial.is_none(), "the agent is admitted");
    deployment
}

/// The agent Deployment's AdmissionReview with a placeholder uid, and where the uid sits.
#[derive(Clone)]
pub struct ReviewTemplate {
    bytes: Vec<u8>,
    uid_at: usize,
}

impl ReviewTemplate {
    /// `cattle-cluster-agent` from the Rancher import manifest, as an `admission.k8s.io/v1`
    /// AdmissionReview CREATE in namespace `cattle-system`.
    pub fn rancher_agent() -> Self {
        Self::deployment_review(agent_deployment(), "CREATE")
    }

    /// The steady state for the Deployment: restrictor's own result, updated (a later `kubectl
    /// apply`, a rollout, Rancher updating its agent). Compliant, so no patch.
    pub fn rancher_agent_update() -> Self {
        Self::deployment_review(admitted_agent_deployment(), "UPDATE")
    }

    /// The steady state: the agent pod the ReplicaSet creates from the template restrictor already
    /// mutated. Compliant, so the answer is `allowed` with no patch.
    pub fn compliant_agent_pod() -> Self {
        let deployment = admitted_agent_deployment();
        let template = &deployment["spec"]["template"];
        let pod = json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "generateName": "cattle-cluster-agent-6d8f9c7b5-",
                "namespace": "cattle-system",
                "labels": template["metadata"]["labels"],
            },
            "spec": template["spec"],
        });
        let review = json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": UID_PLACEHOLDER,
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "namespace": "cattle-system",
                "operation": "CREATE",
                "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
                "object": pod,
                "oldObject": null,
                "dryRun": false,
                "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"}
            }
        });
        Self::from_review(&review)
    }

    fn deployment_review(object: serde_json::Value, operation: &str) -> Self {
        let (old_object, options_kind) = match operation {
            "UPDATE" => (object.clone(), "UpdateOptions"),
            _ => (serde_json::Value::Null, "CreateOptions"),
        };
        let review = json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": UID_PLACEHOLDER,
                "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
                "resource": {"group": "apps", "version": "v1", "resource": "deployments"},
                "requestKind": {"group": "apps", "version": "v1", "kind": "Deployment"},
                "requestResource": {"group": "apps", "version": "v1", "resource": "deployments"},
                "name": "cattle-cluster-agent",
                "namespace": "cattle-system",
                "operation": operation,
                "userInfo": {"username": "kubernetes-admin", "groups": ["kubeadm:cluster-admins", "system:authenticated"]},
                "object": object,
                "oldObject": old_object,
                "dryRun": false,
                "options": {"apiVersion": "meta.k8s.io/v1", "kind": options_kind, "fieldManager": "kubectl-client-side-apply"}
            }
        });
        Self::from_review(&review)
    }

    fn from_review(review: &serde_json::Value) -> Self {
        let bytes = serde_json::to_vec(review).expect("review serializes");
        let needle = format!("\"uid\":\"{UID_PLACEHOLDER}\"");
        let at = find(&bytes, needle.as_bytes()).expect("placeholder uid in the template");
        Self {
            bytes,
            uid_at: at + "\"uid\":\"".len(),
        }
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The review with a fresh uid (same length as the placeholder).
    pub fn with_uid(&self, uid: &Uid) -> Bytes {
        let mut bytes = self.bytes.clone();
        bytes[self.uid_at..self.uid_at + UID_PLACEHOLDER.len()].copy_from_slice(&uid.0);
        Bytes::from(bytes)
    }
}

/// A request uid, formatted like a Kubernetes UID.
pub struct Uid([u8; 36]);

impl Uid {
    pub fn new(client: u32, seq: u64) -> Self {
        let text = format!(
            "{:08x}-{:04x}-4000-8000-{:012x}",
            client,
            (seq >> 48) & 0xffff,
            seq & 0xffff_ffff_ffff
        );
        let mut out = [0u8; 36];
        out.copy_from_slice(text.as_bytes());
        Self(out)
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Whether an answer is what the API server accepts: `"response":{"uid":"<uid>"` with this uid.
/// (Both handlers serialize `response.uid` first.)
fn answer_matches(body: &[u8], uid: &Uid) -> bool {
    const PREFIX: &[u8] = b"\"response\":{\"uid\":\"";
    match find(body, PREFIX) {
        Some(at) => body
            .get(at + PREFIX.len()..at + PREFIX.len() + uid.0.len())
            .is_some_and(|got| got == uid.0),
        None => false,
    }
}

fn mutate_request(body: Bytes) -> Request<Full<Bytes>> {
    Request::post("/mutate?timeout=10s")
        .header("host", format!("{SNI}:443"))
        .header("content-type", "application/json")
        .header("accept", "application/json, */*")
        .body(Full::new(body))
        .expect("request builds")
}

// ---------------------------------------------------------------------------------------------
// Servers

/// A server in this process, on the given runtime.
pub struct InProcess {
    pub https: SocketAddr,
    pub admin: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl InProcess {
    /// Binds `handler` with the built-in policy on loopback port 0, certificates from `pki`.
    pub fn start(rt: &tokio::runtime::Runtime, pki: &Pki, handler: ReviewFn) -> Self {
        let mut config = ServeConfig::new(TlsSource::Files {
            cert: pki.cert.clone(),
            key: pki.key.clone(),
        });
        config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        config.admin_listen = SocketAddr::from(([127, 0, 0, 1], 0));
        config.handler = handler;
        config.shutdown_grace = Duration::from_secs(2);
        let server = rt
            .block_on(Server::bind(config))
            .expect("the server binds on loopback");
        let https = server.https_addr();
        let admin = server.admin_addr();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = rt.spawn(async move {
            let _ = server
                .run(async move {
                    let _ = stopped.await;
                })
                .await;
        });
        Self {
            https,
            admin,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn shutdown(mut self, rt: &tokio::runtime::Runtime) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = rt.block_on(task);
        }
    }
}

/// `restrictor serve` as its own process (the built binary), killed on drop.
pub struct Process {
    pub https: SocketAddr,
    pub admin: SocketAddr,
    child: Child,
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> SocketAddr {
    let l = StdListener::bind("127.0.0.1:0").expect("bind a loopback port");
    l.local_addr().expect("local addr")
}

impl Process {
    /// Spawns `bin serve` with the certificate files from `pki`; stderr (its logs, at the default
    /// level) goes to /dev/null. Returns as soon as the process is spawned.
    pub fn spawn(bin: &Path, pki: &Pki) -> Self {
        let https = free_port();
        let admin = free_port();
        let child = Command::new(bin)
            .arg("serve")
            .arg("--tls-cert")
            .arg(&pki.cert)
            .arg("--tls-key")
            .arg(&pki.key)
            .arg("--listen")
            .arg(https.to_string())
            .arg("--admin-listen")
            .arg(admin.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {}: {e}", bin.display()));
        Self {
            https,
            admin,
            child,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Polls `/readyz` (a fresh plain-HTTP connection each time, every 0.5 ms) until it answers
    /// 200; `None` if the process exits or `within` passes.
    pub fn wait_ready(&mut self, within: Duration) -> Option<Instant> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if readyz_ok(self.admin) {
                return Some(Instant::now());
            }
            if let Ok(Some(_)) = self.child.try_wait() {
                return None;
            }
            std::thread::sleep(Duration::from_micros(500));
        }
        None
    }

    /// A line of `/proc/<pid>/status`, e.g. `VmHWM`, in KiB.
    pub fn status_kib(&self, field: &str) -> Option<u64> {
        proc_status_kib(self.pid(), field)
    }

    /// CPU time the process (all its threads) has used so far.
    pub fn cpu(&self) -> Duration {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{}/task", self.pid())) else {
            return Duration::ZERO;
        };
        tasks
            .flatten()
            .map(|t| schedstat(&t.path().join("schedstat").to_string_lossy()))
            .sum()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn readyz_ok(admin: SocketAddr) -> bool {
    let Ok(mut s) = StdStream::connect_timeout(&admin, Duration::from_millis(100)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"GET /readyz HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 12];
    s.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.1 200")
}

/// A numeric line of `/proc/<pid>/status` (`VmHWM` and friends in KiB, `Threads` a count).
pub fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines().find_map(|l| {
        let v = l.strip_prefix(field)?.strip_prefix(':')?.trim();
        v.strip_suffix("kB").unwrap_or(v).trim().parse().ok()
    })
}

/// The first field of a schedstat file: nanoseconds on CPU.
fn schedstat(path: &str) -> Duration {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse().ok())
        .map(Duration::from_nanos)
        .unwrap_or_default()
}

/// CPU time used by this process's threads whose name starts with `prefix` (and, with
/// `invert`, by all the others).
pub fn threads_cpu(prefix: &str, invert: bool) -> Duration {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Duration::ZERO;
    };
    let mut total = Duration::ZERO;
    for task in tasks.flatten() {
        let dir = task.path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if comm.starts_with(prefix) != invert {
            total += schedstat(&dir.join("schedstat").to_string_lossy());
        }
    }
    total
}

// ---------------------------------------------------------------------------------------------
// Clients and measurement

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// HTTP/1.1 keep-alive: one TLS connection per concurrent client.
    H1,
    /// HTTP/2 (ALPN h2): one TLS connection, one stream per concurrent client.
    H2,
}

impl Proto {
    fn alpn(self) -> &'static [u8] {
        match self {
            Self::H1 => b"http/1.1",
            Self::H2 => b"h2",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::H1 => "h1",
            Self::H2 => "h2",
        }
    }
}

enum Sender {
    H1(http1::SendRequest<Full<Bytes>>),
    H2(http2::SendRequest<Full<Bytes>>),
}

/// `concurrency` open connections (HTTP/1.1) or streams of one connection (HTTP/2) to a server.
pub struct Clients {
    senders: Vec<Sender>,
}

async fn tls_connect(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let name = ServerName::try_from(SNI).expect("valid SNI");
    TlsConnector::from(config).connect(name, tcp).await
}

impl Clients {
    /// Connects (handshakes are not part of any measurement).
    pub async fn connect(
        addr: SocketAddr,
        config: Arc<rustls::ClientConfig>,
        proto: Proto,
        concurrency: usize,
    ) -> std::io::Result<Self> {
        let mut senders = Vec::with_capacity(concurrency);
        match proto {
            Proto::H1 => {
                for _ in 0..concurrency {
                    let tls = tls_connect(addr, config.clone()).await?;
                    let (send, conn) = http1::handshake(TokioIo::new(tls))
                        .await
                        .map_err(std::io::Error::other)?;
                    tokio::spawn(async move {
                        let _ = conn.await;
                    });
                    senders.push(Sender::H1(send));
                }
            }
            Proto::H2 => {
                let tls = tls_connect(addr, config).await?;
                if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
                    return Err(std::io::Error::other("server did not negotiate h2"));
                }
                let (send, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                    .await
                    .map_err(std::io::Error::other)?;
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                for _ in 0..concurrency {
                    senders.push(Sender::H2(send.clone()));
                }
            }
        }
        Ok(Self { senders })
    }

    /// Every client posts reviews back to back until `duration` has passed; returns the
    /// latencies and errors of the window.
    pub async fn run(&mut self, review: &Arc<ReviewTemplate>, duration: Duration) -> Window {
        let start = Instant::now();
        let deadline = start + duration;
        let mut tasks = Vec::with_capacity(self.senders.len());
        for (n, sender) in std::mem::take(&mut self.senders).into_iter().enumerate() {
            let review = review.clone();
            tasks.push(tokio::spawn(client_loop(
                n as u32, sender, review, deadline,
            )));
        }
        let mut window = Window::default();
        for task in tasks {
            let (sender, part) = task.await.expect("client task");
            self.senders.push(sender);
            window.latencies_us.extend(part.latencies_us);
            window.errors += part.errors;
            if window.first_error.is_none() {
                window.first_error = part.first_error;
            }
        }
        window.elapsed = start.elapsed();
        window
    }
}

async fn client_loop(
    n: u32,
    mut sender: Sender,
    review: Arc<ReviewTemplate>,
    deadline: Instant,
) -> (Sender, Window) {
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut w = Window {
        latencies_us: Vec::with_capacity(4096),
        ..Window::default()
    };
    let fail = |w: &mut Window, msg: String| {
        w.errors += 1;
        if w.first_error.is_none() {
            w.first_error = Some(msg);
        }
    };
    while Instant::now() < deadline {
        let uid = Uid::new(n, SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        let request = mutate_request(review.with_uid(&uid));
        let t = Instant::now();
        let response = match &mut sender {
            Sender::H1(s) => match s.ready().await {
                Ok(()) => s.send_request(request).await,
                Err(e) => Err(e),
            },
            Sender::H2(s) => match s.ready().await {
                Ok(()) => s.send_request(request).await,
                Err(e) => Err(e),
            },
        };
        let response = match response {
            Ok(r) => r,
            Err(e) => {
                fail(&mut w, format!("transport: {e}"));
                // A dead connection stays dead; do not spin on it.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let status = response.status();
        let body = match response.into_body().collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => {
                fail(&mut w, format!("reading the answer: {e}"));
                continue;
            }
        };
        let took = t.elapsed();
        if status != StatusCode::OK {
            fail(
                &mut w,
                format!("HTTP {status}: {}", String::from_utf8_lossy(&body)),
            );
        } else if !answer_matches(&body, &uid) {
            fail(
                &mut w,
                format!("answer without the uid: {}", String::from_utf8_lossy(&body)),
            );
        } else {
            w.latencies_us
                .push(u32::try_from(took.as_micros()).unwrap_or(u32::MAX));
        }
    }
    (sender, w)
}

/// What one measurement window saw.
#[derive(Debug, Default)]
pub struct Window {
    /// Latencies of the successful requests, in microseconds.
    pub latencies_us: Vec<u32>,
    pub errors: u64,
    pub first_error: Option<String>,
    pub elapsed: Duration,
}

/// Several windows of one (protocol, concurrency, server) summed.
#[derive(Debug, Default)]
pub struct Tally {
    pub latencies_us: Vec<u32>,
    pub errors: u64,
    pub first_error: Option<String>,
    pub elapsed: Duration,
    /// CPU the server used during the windows (in-process: its runtime's threads).
    pub server_cpu: Duration,
    /// CPU the load client used during the windows.
    pub client_cpu: Duration,
}

impl Tally {
    pub fn add(&mut self, w: Window, server_cpu: Duration, client_cpu: Duration) {
        self.latencies_us.extend(w.latencies_us);
        self.errors += w.errors;
        if self.first_error.is_none() {
            self.first_error = w.first_error;
        }
        self.elapsed += w.elapsed;
        self.server_cpu += server_cpu;
        self.client_cpu += client_cpu;
    }

    pub fn stats(&mut self) -> Stats {
        self.latencies_us.sort_unstable();
        let n = self.latencies_us.len();
        let q = |q: f64| -> f64 {
            if n == 0 {
                return 0.0;
            }
            let i = ((n as f64 * q).ceil() as usize).clamp(1, n) - 1;
            f64::from(self.latencies_us[i]) / 1000.0
        };
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        Stats {
            requests: n as u64,
            rps: n as f64 / secs,
            p50_ms: q(0.50),
            p99_ms: q(0.99),
            max_ms: q(1.0),
            errors: self.errors,
            server_cpu_us_per_req: if n == 0 {
                0.0
            } else {
                self.server_cpu.as_secs_f64() * 1e6 / n as f64
            },
            client_cpu_share: self.client_cpu.as_secs_f64() / secs,
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Stats {
    pub requests: u64,
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub errors: u64,
    /// Server CPU per request, µs.
    pub server_cpu_us_per_req: f64,
    /// Client CPU / wall time (1.0 = one core busy).
    pub client_cpu_share: f64,
}
