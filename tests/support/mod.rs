//! Test helpers: a throwaway CA and serving certificates (rcgen), a TLS client that verifies the
//! server like the API server does, a server started on loopback ports, captured log lines
//! (`Logs`), the fixtures read in place from `../shared/fixtures` (`shared_fixtures`), and the API
//! server's side of admission: the requests it makes (`admission_request`) and which webhook
//! entries it calls (`webhook_routing`).
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use restrictor::server::{Readiness, ServeConfig, ServeError, Server, TlsSource};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

pub mod admission_request;
mod logs;
mod shared_fixtures;
mod temp_dir;
pub mod webhook_routing;
// Each test binary uses some of these.
#[allow(unused_imports)]
pub use logs::Logs;
#[allow(unused_imports)]
pub use shared_fixtures::{
    fixture_name, shared_dir, shared_fixture, shared_fixture_files, shared_fixture_text,
    shared_fixtures,
};
pub use temp_dir::TempDir;

/// Runs `restrictor ARGS -` with `input` on stdin.
pub fn restrictor_with_stdin(args: &[&str], input: &str) -> std::process::Output {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_restrictor"))
        .args(args)
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("restrictor runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("restrictor exits")
}

/// The name the API server uses for an in-cluster service webhook.
pub const SNI: &str = "restrictor.restrictor-system.svc";

/// A test CA.
pub struct Pki {
    ca: CertifiedIssuer<'static, KeyPair>,
}

/// A serving certificate and key, PEM, plus the leaf's DER to recognise it on the wire.
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: Vec<u8>,
}

impl Pki {
    pub fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "restrictor test CA");
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Self { ca }
    }

    /// A serving certificate for the service's DNS names.
    pub fn leaf(&self, label: &str) -> Leaf {
        let mut params = CertificateParams::new(vec![
            SNI.to_owned(),
            "restrictor.restrictor-system.svc.cluster.local".to_owned(),
        ])
        .unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, label);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }

    /// A client verifying against this CA, offering the given ALPN protocols.
    pub fn client(&self, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
        self.client_with(alpn, &[&rustls::version::TLS13, &rustls::version::TLS12])
    }

    pub fn client_with(
        &self,
        alpn: &[&[u8]],
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.der().clone()).unwrap();
        client_config(roots, alpn, versions)
    }
}

/// A client trusting the certificates of a PEM bundle, as the API server trusts a webhook's
/// caBundle (TLS 1.3 and 1.2), offering the given ALPN protocols.
pub fn client_trusting(ca_pem: &[u8], alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        roots
            .add(cert.expect("the bundle is PEM"))
            .expect("a CA certificate");
    }
    client_config(roots, alpn, rustls::DEFAULT_VERSIONS)
}

fn client_config(
    roots: rustls::RootCertStore,
    alpn: &[&[u8]],
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

pub const H1: &[&[u8]] = &[b"http/1.1"];
pub const H2: &[&[u8]] = &[b"h2"];

pub async fn tls_connect(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<TlsStream<TcpStream>> {
    tls_connect_as(addr, config, SNI).await
}

/// A TLS connection to `addr` for the server name `sni` (verified against the client's roots).
pub async fn tls_connect_as(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    sni: &str,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let name = ServerName::try_from(sni.to_owned())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    TlsConnector::from(config).connect(name, tcp).await
}

/// An HTTP/1.1 connection over an established stream, its driver spawned.
pub async fn h1_handshake<S>(stream: S) -> http1::SendRequest<Full<Bytes>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (send, conn) = http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    send
}

/// The leaf certificate the server presented on this connection.
pub fn peer_leaf(stream: &TlsStream<TcpStream>) -> Vec<u8> {
    let certs: &[CertificateDer<'_>] = stream.get_ref().1.peer_certificates().unwrap();
    certs[0].to_vec()
}

pub struct H1Client {
    pub send: http1::SendRequest<Full<Bytes>>,
    pub leaf: Vec<u8>,
    pub conn: JoinHandle<()>,
}

/// An HTTP/1.1 keep-alive connection over TLS.
pub async fn h1_client(addr: SocketAddr, config: Arc<rustls::ClientConfig>) -> H1Client {
    let tls = tls_connect(addr, config).await.unwrap();
    let leaf = peer_leaf(&tls);
    let (send, conn) = http1::handshake(TokioIo::new(tls)).await.unwrap();
    let conn = tokio::spawn(async move {
        let _ = conn.await;
    });
    H1Client { send, leaf, conn }
}

/// An HTTP/2 connection over TLS (ALPN h2).
pub async fn h2_client(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> http2::SendRequest<Full<Bytes>> {
    let tls = tls_connect(addr, config).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (send, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    send
}

/// An AdmissionReview request for a Pod, as the API server sends it.
pub fn review_body(uid: &str) -> Vec<u8> {
    let pod = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": "web-", "namespace": "team-a"},
        "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}
    });
    let request = admission_request::AdmissionRequest::create("pod", "team-a", pod);
    serde_json::to_vec(&request.review(uid)).unwrap()
}

/// `POST /mutate?timeout=10s` with a JSON body, the way the API server posts a review.
pub fn review_request(body: Vec<u8>) -> Request<Full<Bytes>> {
    Request::post("/mutate?timeout=10s")
        .header("host", format!("{SNI}:443"))
        .header("content-type", "application/json")
        .header("accept", "application/json, */*")
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

/// Reads a whole response.
pub async fn read(resp: Response<hyper::body::Incoming>) -> (StatusCode, http::HeaderMap, Bytes) {
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (parts.status, parts.headers, body)
}

/// Checks a 200 answer echoes `uid` and allows.
pub fn assert_allowed(status: StatusCode, body: &[u8], uid: &str) {
    assert_eq!(
        status,
        StatusCode::OK,
        "body: {}",
        String::from_utf8_lossy(body)
    );
    let v: serde_json::Value = serde_json::from_slice(body).unwrap();
    assert_eq!(v["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(v["kind"], "AdmissionReview");
    assert_eq!(v["response"]["uid"], uid);
    assert!(v["response"]["allowed"].is_boolean());
}

/// POSTs the review for `uid` over an HTTP/1.1 connection and checks the answer is 200 and
/// allows that uid; returns the response headers.
pub async fn post_allowed(
    send: &mut http1::SendRequest<Full<Bytes>>,
    uid: &str,
) -> http::HeaderMap {
    let resp = send
        .send_request(review_request(review_body(uid)))
        .await
        .unwrap_or_else(|e| panic!("request {uid} lost: {e}"));
    let (status, headers, body) = read(resp).await;
    assert_allowed(status, &body, uid);
    headers
}

/// A GET on the admin listener: (status, body).
pub async fn admin_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut send = h1_handshake(TcpStream::connect(addr).await.unwrap()).await;
    let req = Request::get(path)
        .header("host", "admin")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    let (status, _, body) = read(resp).await;
    (status.as_u16(), String::from_utf8_lossy(&body).into_owned())
}

/// The value of one unlabelled metric.
pub async fn metric(addr: SocketAddr, name: &str) -> f64 {
    let (_, text) = admin_get(addr, "/metrics").await;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("metric {name} not found in:\n{text}"))
}

/// Polls `f` until it returns true or `within` passes.
pub async fn eventually<F, Fut>(within: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if f().await {
            return true;
        }
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A directory laid out the way the kubelet mounts a Secret: `..<timestamp>/` holds the files,
/// `..data -> ..<timestamp>`, and `tls.crt -> ..data/tls.crt`. Updates write a new timestamped
/// directory and atomically rename a new `..data` symlink over the old one.
pub struct SecretDir {
    pub dir: TempDir,
    generation: usize,
}

impl SecretDir {
    pub fn new(files: &[(&str, &str)]) -> Self {
        let mut s = Self {
            dir: TempDir::new("secret"),
            generation: 0,
        };
        s.swap(files);
        for (name, _) in files {
            std::os::unix::fs::symlink(format!("..data/{name}"), s.dir.path().join(name)).unwrap();
        }
        s
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Publishes new contents the way the kubelet does.
    pub fn swap(&mut self, files: &[(&str, &str)]) {
        self.generation += 1;
        let root = self.dir.path();
        let old = std::fs::read_link(root.join("..data")).ok();
        let stamp = format!(
            "..2026_11_25_07_00_{:02}.{}",
            self.generation,
            std::process::id()
        );
        std::fs::create_dir(root.join(&stamp)).unwrap();
        for (name, contents) in files {
            std::fs::write(root.join(&stamp).join(name), contents).unwrap();
        }
        let tmp = root.join("..data_tmp");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&stamp, &tmp).unwrap();
        std::fs::rename(&tmp, root.join("..data")).unwrap();
        if let Some(old) = old {
            let _ = std::fs::remove_dir_all(root.join(old));
        }
    }
}

/// A server running on loopback ports in the test's runtime.
pub struct TestServer {
    pub https: SocketAddr,
    pub admin: SocketAddr,
    pub readiness: Readiness,
    stop: Option<oneshot::Sender<()>>,
    pub task: Option<JoinHandle<Result<(), ServeError>>>,
}

impl TestServer {
    /// Starts `config` (its listen addresses are replaced by loopback port 0).
    pub async fn start(mut config: ServeConfig) -> Self {
        config.listen = "127.0.0.1:0".parse().unwrap();
        config.admin_listen = "127.0.0.1:0".parse().unwrap();
        let server = Server::bind(config).await.unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let https = server.https_addr();
        let admin = server.admin_addr();
        let readiness = server.readiness();
        let task = tokio::spawn(server.run(async move {
            let _ = stopped.await;
        }));
        Self {
            https,
            admin,
            readiness,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Sends the shutdown signal.
    pub fn begin_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Shuts down and waits for `run` to return.
    pub async fn shutdown(mut self) -> Result<(), ServeError> {
        self.begin_shutdown();
        self.task.take().unwrap().await.unwrap()
    }
}

/// A server with a fresh certificate from `pki`, fast reloads and the given tweaks.
pub async fn start_with(
    pki: &Pki,
    tweak: impl FnOnce(&mut ServeConfig),
) -> (TestServer, SecretDir) {
    let leaf = pki.leaf("first");
    let secret = SecretDir::new(&[("tls.crt", &leaf.cert_pem), ("tls.key", &leaf.key_pem)]);
    let mut config = ServeConfig::new(TlsSource::Files {
        cert: secret.path("tls.crt"),
        key: secret.path("tls.key"),
    });
    config.reload_interval = Duration::from_millis(100);
    config.shutdown_grace = Duration::from_secs(5);
    tweak(&mut config);
    (TestServer::start(config).await, secret)
}
