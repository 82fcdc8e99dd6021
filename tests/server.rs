//! The HTTPS admission server, exercised over real TLS on loopback the way the API server uses it.

mod support;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use restrictor::admission::{AdmissionError, Answer};
use restrictor::policy::Policy;
use restrictor::server::{ServeConfig, TlsSource};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

fn init() {
    restrictor::server::install_crypto_provider();
}

/// Waits until the server closes `stream` (end of stream or a reset), failing after `within`.
async fn closed_by_server(
    stream: &mut (impl tokio::io::AsyncRead + Unpin),
    within: Duration,
    what: &str,
) {
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(within, stream.read(&mut buf))
        .await
        .expect(what)
        .unwrap_or(0);
    assert_eq!(n, 0, "{what}: data instead of a close");
}

/// A server (fresh certificate, then `tweak`) watching a file that holds the built-in policy; the
/// file to edit, in a directory removed on drop.
async fn start_with_policy_file(
    pki: &Pki,
    label: &str,
    tweak: impl FnOnce(&mut ServeConfig),
) -> (TempDir, PathBuf, TestServer, SecretDir) {
    let dir = TempDir::new(label);
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, restrictor::policy::BUILTIN_YAML).unwrap();
    let path = policy.clone();
    let (server, secret) = start_with(pki, move |c| {
        c.policy_path = Some(path);
        tweak(c);
    })
    .await;
    (dir, policy, server, secret)
}

/// A server with the default configuration and a certificate from a fresh CA.
async fn serving() -> (Pki, TestServer, SecretDir) {
    init();
    let pki = Pki::new();
    let (server, secret) = start_with(&pki, |_| {}).await;
    (pki, server, secret)
}

#[tokio::test]
async fn many_reviews_over_one_kept_alive_http1_connection() {
    let (pki, server, _secret) = serving().await;
    let mut c = h1_client(server.https, pki.client(H1)).await;
    for i in 0..50 {
        let uid = format!("uid-{i}");
        c.send.ready().await.unwrap();
        let headers = post_allowed(&mut c.send, &uid).await;
        assert_eq!(headers["content-type"], "application/json");
        assert!(headers.get("connection").is_none());
    }
    // All fifty went over the one connection this client holds, and the server saw only it.
    assert!(!c.conn.is_finished());
    assert_eq!(
        metric(server.admin, "restrictor_open_connections").await,
        1.0
    );
    assert_eq!(
        metric(server.admin, "restrictor_admission_duration_seconds_count").await,
        50.0
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn http2_via_alpn_and_tls12() {
    let (pki, server, _secret) = serving().await;
    let send = h2_client(server.https, pki.client(H2)).await;
    let mut tasks = Vec::new();
    for i in 0..32 {
        let mut send = send.clone();
        tasks.push(tokio::spawn(async move {
            let uid = format!("h2-{i}");
            let resp = send
                .send_request(review_request(review_body(&uid)))
                .await
                .unwrap();
            assert_eq!(resp.version(), http::Version::HTTP_2);
            let (status, _, body) = read(resp).await;
            assert_allowed(status, &body, &uid);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }

    // TLS 1.2 is still accepted (older clients), with ALPN http/1.1.
    let tls12 = pki.client_with(H1, &[&rustls::version::TLS12]);
    let stream = tls_connect(server.https, tls12).await.unwrap();
    assert_eq!(
        stream.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn malformed_requests_get_clear_answers_and_the_server_keeps_serving() {
    init();
    let pki = Pki::new();
    let (server, _secret) = start_with(&pki, |c| c.max_body_bytes = 64 * 1024).await;
    let req = |method: &str, uri: &str, ctype: Option<&str>, body: Vec<u8>| {
        let mut b = Request::builder()
            .method(method)
            .uri(uri)
            .header("host", SNI);
        if let Some(ct) = ctype {
            b = b.header("content-type", ct);
        }
        b.body(Full::new(Bytes::from(body))).unwrap()
    };
    let json = Some("application/json");
    let mut no_uid: serde_json::Value = serde_json::from_slice(&review_body("x")).unwrap();
    no_uid["request"]
        .as_object_mut()
        .unwrap()
        .remove("uid")
        .unwrap();
    let cases: Vec<(&str, Request<Full<Bytes>>, u16)> = vec![
        (
            "empty body",
            req("POST", "/mutate?timeout=10s", json, vec![]),
            400,
        ),
        (
            "not JSON",
            req("POST", "/mutate?timeout=10s", json, b"{not json".to_vec()),
            400,
        ),
        (
            "wrong content type",
            req("POST", "/mutate", Some("text/plain"), review_body("a")),
            400,
        ),
        (
            "no content type",
            req("POST", "/mutate", None, review_body("a")),
            400,
        ),
        (
            "missing uid",
            req(
                "POST",
                "/mutate",
                json,
                serde_json::to_vec(&no_uid).unwrap(),
            ),
            400,
        ),
        (
            "bad timeout",
            req("POST", "/mutate?timeout=soon", json, review_body("a")),
            400,
        ),
        (
            "negative timeout",
            req("POST", "/mutate?timeout=-1s", json, review_body("a")),
            400,
        ),
        ("GET", req("GET", "/mutate", None, vec![]), 405),
        (
            "unknown path",
            req("POST", "/validate", json, review_body("a")),
            404,
        ),
        (
            "too large",
            req("POST", "/mutate", json, vec![b' '; 65 * 1024]),
            413,
        ),
    ];
    for (what, request, want) in cases {
        // A fresh connection each: after a 413 the server may close the connection.
        let mut c = h1_client(server.https, pki.client(H1)).await;
        let resp = c.send.send_request(request).await.unwrap();
        let (status, headers, body) = read(resp).await;
        assert_eq!(
            status.as_u16(),
            want,
            "{what}: {}",
            String::from_utf8_lossy(&body)
        );
        if want == 405 {
            assert_eq!(headers["allow"], "POST");
        }
        if want == 400 || want == 413 {
            assert!(!body.is_empty(), "{what}: a message is expected");
            assert!(
                headers["content-type"]
                    .to_str()
                    .unwrap()
                    .starts_with("text/plain")
            );
        }
    }
    // A chunked body (no Content-Length) over the limit is cut off too.
    let mut c = h1_client(server.https, pki.client(H1)).await;
    let (chunks, rx) = tokio::sync::mpsc::channel(2);
    for _ in 0..2 {
        chunks.try_send(Bytes::from(vec![b' '; 40 * 1024])).unwrap();
    }
    drop(chunks);
    let request = Request::post("/mutate")
        .header("host", SNI)
        .header("content-type", "application/json; charset=utf-8")
        .body(ChanBody(rx))
        .unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(
        tls_connect(server.https, pki.client(H1)).await.unwrap(),
    ))
    .await
    .unwrap();
    tokio::spawn(conn);
    let resp = send.send_request(request).await.unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);

    // Still serving, on a fresh connection.
    post_allowed(&mut c.send, "after").await;
    let (_, text) = admin_get(server.admin, "/metrics").await;
    assert!(
        text.contains("outcome=\"invalid\"} 11"),
        "invalid requests counted:\n{text}"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn ten_mib_body_is_refused_quickly() {
    let (pki, server, _secret) = serving().await;
    let mut c = h1_client(server.https, pki.client(H1)).await;
    let start = Instant::now();
    let resp = c
        .send
        .send_request(review_request(vec![b' '; 10 * 1024 * 1024]))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    server.shutdown().await.unwrap();
}

fn panicking(_: &[u8], _: &Policy) -> Result<Answer, AdmissionError> {
    panic!("handler bug");
}

#[tokio::test]
async fn a_panicking_handler_is_answered_500_and_the_server_keeps_serving() {
    init();
    let pki = Pki::new();
    let (server, _secret) = start_with(&pki, |c| c.handler = panicking).await;
    let mut c = h1_client(server.https, pki.client(H1)).await;
    for _ in 0..3 {
        let resp = c
            .send
            .send_request(review_request(review_body("p")))
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let _ = read(resp).await;
    }
    assert!(!c.conn.is_finished());
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_slow_body_hits_the_requested_deadline() {
    let (pki, server, _secret) = serving().await;
    let mut tls = tls_connect(server.https, pki.client(H1)).await.unwrap();
    let head = format!(
        "POST /mutate?timeout=300ms HTTP/1.1\r\nhost: {SNI}\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{{"
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    let start = Instant::now();
    let mut buf = vec![0; 4096];
    let n = tokio::time::timeout(Duration::from_secs(3), tls.read(&mut buf))
        .await
        .expect("answered before the test timeout")
        .unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(start.elapsed() >= Duration::from_millis(250));
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn certificate_swapped_through_a_kubelet_data_symlink_is_served_to_new_connections() {
    init();
    let pki = Pki::new();
    let first = pki.leaf("first");
    let mut secret = SecretDir::new(&[("tls.crt", &first.cert_pem), ("tls.key", &first.key_pem)]);
    let mut config = ServeConfig::new(TlsSource::Files {
        cert: secret.path("tls.crt"),
        key: secret.path("tls.key"),
    });
    config.reload_interval = Duration::from_millis(100);
    let t = Instant::now();
    let server = TestServer::start(config).await;
    let (status, _) = admin_get(server.admin, "/readyz").await;
    let start_to_ready = t.elapsed();
    assert_eq!(status, 200);
    eprintln!("bind + load certificate + first /readyz 200: {start_to_ready:?}");
    assert!(
        start_to_ready < Duration::from_millis(100),
        "{start_to_ready:?}"
    );

    let mut old = h1_client(server.https, pki.client(H1)).await;
    assert_eq!(old.leaf, first.der);
    let expiry_before = metric(
        server.admin,
        "restrictor_certificate_expiry_timestamp_seconds",
    )
    .await;
    assert!(expiry_before > 1.7e9);

    let second = pki.leaf("second");
    secret.swap(&[("tls.crt", &second.cert_pem), ("tls.key", &second.key_pem)]);
    let https = server.https;
    let client = pki.client(H1);
    let swapped = eventually(Duration::from_secs(5), || {
        let client = client.clone();
        let want = second.der.clone();
        async move {
            let s = tls_connect(https, client).await.unwrap();
            peer_leaf(&s) == want
        }
    })
    .await;
    assert!(swapped, "new connections get the new certificate");
    assert_eq!(
        metric(server.admin, "restrictor_tls_reloads_total").await,
        2.0
    );

    // The connection made before the swap keeps working.
    post_allowed(&mut old.send, "old-conn").await;

    // A broken certificate is rejected and counted; the current one stays.
    secret.swap(&[("tls.crt", "garbage"), ("tls.key", &second.key_pem)]);
    let admin = server.admin;
    assert!(
        eventually(Duration::from_secs(5), || async move {
            metric(admin, "restrictor_tls_reload_errors_total").await == 1.0
        })
        .await
    );
    let s = tls_connect(server.https, pki.client(H1)).await.unwrap();
    assert_eq!(peer_leaf(&s), second.der);
    assert_eq!(admin_get(server.admin, "/readyz").await.0, 200);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn policy_reloads_and_an_invalid_policy_is_rejected() {
    init();
    let pki = Pki::new();
    let (_dir, policy, server, _secret) = start_with_policy_file(&pki, "policy", |_| {}).await;
    let admin = server.admin;
    assert_eq!(metric(admin, "restrictor_policy_reloads_total").await, 1.0);

    std::fs::write(
        &policy,
        format!("{}\n# edited\n", restrictor::policy::BUILTIN_YAML),
    )
    .unwrap();
    assert!(
        eventually(Duration::from_secs(5), || async move {
            metric(admin, "restrictor_policy_reloads_total").await == 2.0
        })
        .await
    );
    // A policy with a mistake (uid 0) is rejected and the old one stays in force.
    std::fs::write(
        &policy,
        restrictor::policy::BUILTIN_YAML.replace("runAsUser: 1000", "runAsUser: 0"),
    )
    .unwrap();
    assert!(
        eventually(Duration::from_secs(5), || async move {
            metric(admin, "restrictor_policy_reload_errors_total").await == 1.0
        })
        .await
    );
    assert_eq!(metric(admin, "restrictor_policy_reloads_total").await, 2.0);
    let mut c = h1_client(server.https, pki.client(H1)).await;
    post_allowed(&mut c.send, "after-bad-policy").await;
    assert_eq!(admin_get(admin, "/readyz").await.0, 200);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn readiness_follows_tls_material_conditions_and_draining() {
    init();
    let pki = Pki::new();
    let (tx, rx) = watch::channel(None);
    let mut config = ServeConfig::new(TlsSource::Channel(rx));
    config.shutdown_delay = Duration::from_millis(400);
    let mut server = TestServer::start(config).await;
    let admin = server.admin;

    assert_eq!(admin_get(admin, "/livez").await.0, 200);
    let (status, body) = admin_get(admin, "/readyz").await;
    assert_eq!(status, 503);
    assert!(body.contains("tls"), "{body}");

    let ca_injected = server.readiness.condition("ca-bundle-injected");
    let leaf = pki.leaf("from-channel");
    tx.send_replace(Some(restrictor::certs::ServingPem {
        cert: leaf.cert_pem.clone(),
        key: leaf.key_pem.clone(),
    }));
    assert!(
        eventually(Duration::from_secs(2), || async move {
            admin_get(admin, "/readyz")
                .await
                .1
                .contains("ca-bundle-injected")
        })
        .await
    );
    ca_injected.set(true);
    assert_eq!(admin_get(admin, "/readyz").await.0, 200);
    let s = tls_connect(server.https, pki.client(H1)).await.unwrap();
    assert_eq!(peer_leaf(&s), leaf.der);

    let (_, text) = admin_get(admin, "/metrics").await;
    for name in [
        "restrictor_admission_requests_total",
        "restrictor_admission_duration_seconds_bucket",
        "restrictor_tls_reloads_total 1",
        "restrictor_tls_reload_errors_total 0",
        "restrictor_policy_reloads_total 1",
        "restrictor_policy_reload_errors_total 0",
        "restrictor_certificate_expiry_timestamp_seconds",
    ] {
        assert!(text.contains(name), "{name} missing from:\n{text}");
    }

    server.begin_shutdown();
    assert!(
        eventually(Duration::from_secs(2), || async move {
            let (status, body) = admin_get(admin, "/readyz").await;
            status == 503 && body.contains("draining")
        })
        .await
    );
    server.task.take().unwrap().await.unwrap().unwrap();
}

#[tokio::test]
async fn shutdown_under_load_loses_no_request() {
    let (pki, mut server, _secret) = serving().await;
    let answered = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for n in 0..8 {
        let mut c = h1_client(server.https, pki.client(H1)).await;
        let answered = answered.clone();
        clients.push(tokio::spawn(async move {
            let mut closed_by_server = false;
            for i in 0.. {
                if c.send.ready().await.is_err() {
                    // Closed while idle (the client paused): nothing was in flight.
                    closed_by_server = true;
                    break;
                }
                let uid = format!("c{n}-{i}");
                // Every request written must be answered 200.
                let headers = post_allowed(&mut c.send, &uid).await;
                answered.fetch_add(1, Ordering::Relaxed);
                if headers.get("connection").is_some_and(|v| v == "close") {
                    closed_by_server = true;
                    break;
                }
            }
            closed_by_server
        }));
    }
    // An idle keep-alive connection is closed promptly at drain.
    let idle = tls_connect(server.https, pki.client(H1)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = answered.load(Ordering::Relaxed);
    assert!(before > 0);
    server.begin_shutdown();
    let start = Instant::now();
    for c in clients {
        assert!(c.await.unwrap(), "each client was told to close");
    }
    let (mut r, _w) = tokio::io::split(idle);
    closed_by_server(
        &mut r,
        Duration::from_secs(2),
        "idle connection closed at drain",
    )
    .await;
    server.task.take().unwrap().await.unwrap().unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    assert!(answered.load(Ordering::Relaxed) >= before);
    // The listener is closed.
    assert!(tokio::net::TcpStream::connect(server.https).await.is_err());
}

#[tokio::test]
async fn a_slowloris_client_is_disconnected_but_an_idle_keep_alive_is_not() {
    init();
    let pki = Pki::new();
    let (server, _secret) = start_with(&pki, |c| {
        c.header_read_timeout = Duration::from_millis(600);
    })
    .await;
    // Kept-alive and idle for longer than the head deadline: still usable.
    let mut idle = h1_client(server.https, pki.client(H1)).await;
    let resp = idle
        .send
        .send_request(review_request(review_body("first")))
        .await
        .unwrap();
    let _ = read(resp).await;

    let mut slow = tls_connect(server.https, pki.client(H1)).await.unwrap();
    let head =
        format!("POST /mutate HTTP/1.1\r\nhost: {SNI}\r\ncontent-type: application/json\r\n");
    let start = Instant::now();
    let mut cut = false;
    for b in head.as_bytes().iter().cycle().take(200) {
        if slow.write_all(&[*b]).await.is_err() || slow.flush().await.is_err() {
            cut = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        if start.elapsed() > Duration::from_secs(4) {
            break;
        }
    }
    if !cut {
        let mut buf = [0u8; 64];
        cut = matches!(
            tokio::time::timeout(Duration::from_millis(500), slow.read(&mut buf)).await,
            Ok(Ok(0)) | Ok(Err(_))
        );
    }
    assert!(
        cut,
        "slow client still connected after {:?}",
        start.elapsed()
    );
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );

    // Connected, handshaken, and silent: closed after the head deadline too.
    let mut silent = tls_connect(server.https, pki.client(H1)).await.unwrap();
    let silent_start = Instant::now();
    closed_by_server(
        &mut silent,
        Duration::from_secs(3),
        "silent connection closed",
    )
    .await;
    assert!(silent_start.elapsed() >= Duration::from_millis(500));

    post_allowed(&mut idle.send, "idle").await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed_after_the_idle_timeout() {
    init();
    let pki = Pki::new();
    let (server, _secret) = start_with(&pki, |c| c.idle_timeout = Duration::from_millis(300)).await;
    let c = h1_client(server.https, pki.client(H1)).await;
    let closed = tokio::time::timeout(Duration::from_secs(3), c.conn).await;
    assert!(closed.is_ok(), "idle connection closed by the server");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn concurrent_clients_get_no_errors() {
    let (pki, server, _secret) = serving().await;
    let client = pki.client(H1);
    let mut tasks = Vec::new();
    for n in 0..256 {
        let client = client.clone();
        let addr = server.https;
        tasks.push(tokio::spawn(async move {
            let mut c = h1_client(addr, client).await;
            for i in 0..4 {
                let uid = format!("{n}-{i}");
                post_allowed(&mut c.send, &uid).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_thousand_idle_tls_connections_do_not_stop_service() {
    let (pki, server, _secret) = serving().await;
    let start = Instant::now();
    let rss_before = rss_kib();
    let client = pki.client(H1);
    // Client and server ends both live in this process: two descriptors per connection.
    let wanted = 1000;
    let count = match open_files_limit() {
        Some(limit) if limit < 2 * wanted + 200 => {
            eprintln!("open files limit {limit}: holding fewer idle connections");
            (limit.saturating_sub(200) / 2).max(10)
        }
        _ => wanted,
    };
    let mut idle = Vec::with_capacity(count);
    let mut pending = tokio::task::JoinSet::new();
    for _ in 0..count {
        let client = client.clone();
        let addr = server.https;
        pending.spawn(async move { tls_connect(addr, client).await });
        if pending.len() >= 64 {
            idle.push(pending.join_next().await.unwrap().unwrap().unwrap());
        }
    }
    while let Some(r) = pending.join_next().await {
        idle.push(r.unwrap().unwrap());
    }
    let admin = server.admin;
    assert!(
        eventually(Duration::from_secs(5), || async move {
            metric(admin, "restrictor_open_connections").await >= count as f64
        })
        .await
    );
    let mut c = h1_client(server.https, client.clone()).await;
    for i in 0..20 {
        let uid = format!("busy-{i}");
        let t = Instant::now();
        post_allowed(&mut c.send, &uid).await;
        assert!(t.elapsed() < Duration::from_millis(500));
    }
    if let (Some(before), Some(after)) = (rss_before, rss_kib()) {
        let per_connection = after.saturating_sub(before) / count as u64;
        eprintln!(
            "RSS {before} -> {after} KiB with {count} idle TLS connections (server and client ends): {per_connection} KiB each"
        );
        // Both ends of a TLS connection (rustls state, buffers, a task) in this process: tens of
        // KiB each were measured; a leak or unbounded buffer would blow far past this.
        assert!(
            per_connection < 128,
            "memory per idle connection {per_connection} KiB is not bounded"
        );
    }
    eprintln!("{count} idle connections test took {:?}", start.elapsed());
    drop(idle);
    server.shutdown().await.unwrap();
}

fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches(" kB")
        .parse()
        .ok()
}

#[tokio::test]
async fn certificate_and_policy_swaps_during_load_lose_no_request() {
    init();
    let pki = Pki::new();
    let (_dir, policy, server, mut secret) = start_with_policy_file(&pki, "policy-load", |c| {
        c.reload_interval = Duration::from_millis(50);
    })
    .await;
    let deadline = Instant::now() + Duration::from_millis(1500);
    let mut clients = Vec::new();
    for n in 0..4 {
        let mut c = h1_client(server.https, pki.client(H1)).await;
        clients.push(tokio::spawn(async move {
            let mut done = 0;
            while Instant::now() < deadline {
                let uid = format!("keep-{n}-{done}");
                post_allowed(&mut c.send, &uid).await;
                done += 1;
            }
            done
        }));
    }
    // A client that opens a new connection (new handshake) for each request.
    let https = server.https;
    let client = pki.client(H1);
    clients.push(tokio::spawn(async move {
        let mut done = 0;
        while Instant::now() < deadline {
            let mut c = h1_client(https, client.clone()).await;
            let uid = format!("fresh-{done}");
            post_allowed(&mut c.send, &uid).await;
            done += 1;
        }
        done
    }));
    let mut swaps = 0;
    while Instant::now() < deadline {
        let leaf = pki.leaf(&format!("gen-{swaps}"));
        secret.swap(&[("tls.crt", &leaf.cert_pem), ("tls.key", &leaf.key_pem)]);
        std::fs::write(
            &policy,
            format!(
                "{}\n# generation {swaps}\n",
                restrictor::policy::BUILTIN_YAML
            ),
        )
        .unwrap();
        swaps += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut total = 0;
    for c in clients {
        let n = c.await.unwrap();
        assert!(n > 0);
        total += n;
    }
    let admin = server.admin;
    assert!(metric(admin, "restrictor_tls_reloads_total").await >= 3.0);
    assert!(metric(admin, "restrictor_policy_reloads_total").await >= 3.0);
    assert_eq!(
        metric(admin, "restrictor_tls_reload_errors_total").await,
        0.0
    );
    eprintln!("{total} requests across {swaps} certificate and policy swaps");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn http2_clients_get_goaway_and_in_flight_streams_finish_at_shutdown() {
    let (pki, mut server, _secret) = serving().await;
    let mut send = h2_client(server.https, pki.client(H2)).await;
    // A request whose body is still arriving when the shutdown starts.
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
    let body = ChanBody(rx);
    let request = Request::post("/mutate?timeout=10s")
        .header("content-type", "application/json")
        .body(body)
        .unwrap();
    let (mut send2, conn2) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls_connect(server.https, pki.client(H2)).await.unwrap()),
    )
    .await
    .unwrap();
    tokio::spawn(conn2);
    let in_flight = tokio::spawn(async move { send2.send_request(request).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    server.begin_shutdown();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let body = review_body("streaming");
    tx.send(Bytes::from(body)).await.unwrap();
    drop(tx);
    let resp = in_flight.await.unwrap().unwrap();
    let (status, _, body) = read(resp).await;
    assert_allowed(status, &body, "streaming");
    // After GOAWAY, the idle h2 connection refuses new streams (the client goes elsewhere).
    let late = send.send_request(review_request(review_body("late"))).await;
    assert!(late.is_err());
    tokio::time::timeout(Duration::from_secs(3), server.task.take().unwrap())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

/// A request body fed from a channel, chunk by chunk (no Content-Length): ends when the sender
/// is dropped.
struct ChanBody(tokio::sync::mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChanBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|b| b.map(|b| Ok(hyper::body::Frame::data(b))))
    }
}

#[tokio::test]
async fn a_stalled_tls_handshake_is_cut_off() {
    init();
    let pki = Pki::new();
    let (server, _secret) =
        start_with(&pki, |c| c.handshake_timeout = Duration::from_millis(300)).await;
    let mut tcp = tokio::net::TcpStream::connect(server.https).await.unwrap();
    tcp.write_all(&[0x16, 0x03, 0x01]).await.unwrap(); // the start of a ClientHello, then nothing
    let start = Instant::now();
    closed_by_server(&mut tcp, Duration::from_secs(3), "closed by the server").await;
    assert!(start.elapsed() >= Duration::from_millis(250));
    assert_eq!(
        metric(server.admin, "restrictor_tls_handshake_errors_total").await,
        1.0
    );
    server.shutdown().await.unwrap();
}

fn open_files_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Why `Server::bind` refuses a configuration of these files (on loopback port 0).
async fn bind_error(cert: PathBuf, key: PathBuf, policy: Option<PathBuf>) -> String {
    let mut config = ServeConfig::new(TlsSource::Files { cert, key });
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.admin_listen = "127.0.0.1:0".parse().unwrap();
    config.policy_path = policy;
    match restrictor::server::Server::bind(config).await {
        Ok(_) => panic!("the server started"),
        Err(err) => err.to_string(),
    }
}

#[tokio::test]
async fn startup_fails_clearly_without_tls_files_or_with_an_invalid_policy() {
    init();
    let dir = TempDir::new("startup");
    let file = |name: &str| dir.path().join(name);
    let err = bind_error(file("missing.crt"), file("missing.key"), None).await;
    assert!(err.contains("missing.crt"), "{err}");

    let pki = Pki::new();
    let leaf = pki.leaf("x");
    std::fs::write(file("tls.crt"), &leaf.cert_pem).unwrap();
    std::fs::write(file("tls.key"), pki.leaf("other").key_pem).unwrap();
    let err = bind_error(file("tls.crt"), file("tls.key"), None).await;
    assert!(err.contains("do not belong together"), "{err}");

    std::fs::write(file("tls.key"), &leaf.key_pem).unwrap();
    std::fs::write(file("policy.yaml"), [0xff, 0xfe]).unwrap();
    let err = bind_error(file("tls.crt"), file("tls.key"), Some(file("policy.yaml"))).await;
    assert!(err.contains("policy"), "{err}");
}

fn apply_answer(object: &mut serde_json::Value, answer: &serde_json::Value) {
    use base64::Engine as _;
    let Some(encoded) = answer["response"]["patch"].as_str() else {
        return;
    };
    assert_eq!(answer["response"]["patchType"], "JSONPatch");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .unwrap();
    let patch: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
    json_patch::patch(object, &patch).expect("the patch applies");
}

#[tokio::test]
async fn the_vcluster_review_of_the_agent_pod_and_every_fixture_are_answered_as_the_api_server_expects()
 {
    use restrictor::pss::{Level, check_object};
    use restrictor::workload::WorkloadKind;
    init();
    let Some(files) = support::shared_fixture_files() else {
        return;
    };
    let pki = Pki::new();
    let (server, _secret) = start_with(&pki, |_| {}).await;
    let mut c = h1_client(server.https, pki.client(H1)).await;
    let mut post = async |review: &serde_json::Value| {
        c.send.ready().await.unwrap();
        let resp = c
            .send
            .send_request(review_request(serde_json::to_vec(review).unwrap()))
            .await
            .unwrap();
        let (status, _, body) = read(resp).await;
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
        let answer: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(answer["response"]["uid"], review["request"]["uid"]);
        answer
    };

    // The review a vcluster's API server sends for the agent pod (generateName, no name yet).
    let review_file = files
        .iter()
        .find(|path| path.to_string_lossy().contains("admissionreview"))
        .expect("the vcluster/01 AdmissionReview fixture");
    let text = std::fs::read_to_string(review_file).unwrap();
    let review = restrictor::manifest::parse("review", &text)
        .unwrap()
        .remove(0);
    let answer = post(&review).await;
    assert_eq!(answer["response"]["allowed"], true);
    assert_eq!(
        answer["response"]["auditAnnotations"]["profile"],
        "rancher-agent"
    );
    let mut pod = review["request"]["object"].clone();
    apply_answer(&mut pod, &answer);
    assert_eq!(check_object(&pod, Level::Restricted), Some(vec![]));
    // Reinvoked (reinvocationPolicy IfNeeded) on its own output: no patch.
    let mut again = review.clone();
    again["request"]["object"] = pod;
    assert!(post(&again).await["response"].get("patch").is_none());

    // Every object of every manifest fixture, CREATE, then reinvoked on the result.
    let mut denied = Vec::new();
    for path in files.iter().filter(|p| p != &review_file) {
        let text = std::fs::read_to_string(path).unwrap();
        for (n, object) in restrictor::manifest::parse("fixture", &text)
            .unwrap()
            .into_iter()
            .enumerate()
        {
            let api_version = object["apiVersion"].as_str().unwrap_or_default();
            let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
            let kind = object["kind"].as_str().unwrap_or_default();
            let namespace = object["metadata"]["namespace"].as_str().unwrap_or_default();
            let mut review = serde_json::json!({
                "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                "request": {"uid": format!("{}-{n}", path.display()),
                            "kind": {"group": group, "version": version, "kind": kind},
                            "namespace": namespace, "operation": "CREATE",
                            "userInfo": {"username": "admin"}, "object": object, "dryRun": false}});
            let answer = post(&review).await;
            if answer["response"]["allowed"] == false {
                assert_eq!(answer["response"]["status"]["code"], 403);
                denied.push(
                    answer["response"]["status"]["message"]
                        .as_str()
                        .unwrap()
                        .to_owned(),
                );
                continue;
            }
            let mut result = object.clone();
            apply_answer(&mut result, &answer);
            if WorkloadKind::from_type(api_version, kind).is_some() {
                assert_eq!(
                    check_object(&result, Level::Restricted),
                    Some(vec![]),
                    "{}",
                    path.display()
                );
            } else {
                assert_eq!(result, object, "a non-pod object was changed");
            }
            review["request"]["object"] = result;
            assert!(
                post(&review).await["response"].get("patch").is_none(),
                "{}: reinvocation patched",
                path.display()
            );
        }
    }
    denied.sort();
    assert_eq!(denied.len(), 2, "{denied:#?}");
    assert!(denied[0].starts_with("restrictor: DaemonSet cattle-system/kube-api-auth: "));
    assert!(
        denied[1]
            .starts_with("restrictor: Deployment cattle-system/cattle-cluster-agent-bootstrap: ")
    );
    assert!(denied.iter().all(|m| m.contains("hostNetwork")));
    // All of it over the one kept-alive connection.
    assert!(!c.conn.is_finished());
    server.shutdown().await.unwrap();
}

/// A pod of `controller` (or a bare one) whose hostNetwork no security context can fix.
fn unfixable_pod_review(uid: &str, controller: Option<&str>, dry_run: bool) -> Vec<u8> {
    let mut pod = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": "web-", "namespace": "team-a"},
        "spec": {"hostNetwork": true, "containers": [{"name": "web", "image": "nginx:1.27"}]}
    });
    if let Some(name) = controller {
        pod["metadata"]["ownerReferences"] = serde_json::json!([
            {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "other", "uid": "u-0"},
            {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": name, "uid": "u-1",
             "controller": true, "blockOwnerDeletion": true}
        ]);
    }
    let mut review =
        support::admission_request::AdmissionRequest::create("pod", "team-a", pod).review(uid);
    review["request"]["dryRun"] = serde_json::json!(dry_run);
    serde_json::to_vec(&review).unwrap()
}

#[tokio::test]
async fn a_denied_pod_of_a_controller_is_handed_to_the_denied_pod_hook_and_nothing_else_is() {
    init();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let pki = Pki::new();
    let hook_seen = seen.clone();
    let (server, _secret) = start_with(&pki, move |config| {
        config.on_denied_pod = Some(restrictor::server::DeniedPodHook(Arc::new(
            move |summary, pod| {
                hook_seen.lock().unwrap().push((
                    summary.uid.clone(),
                    summary.namespace.clone(),
                    pod.controller.clone(),
                    pod.message.clone(),
                ));
            },
        )));
    })
    .await;
    let mut c = h1_client(server.https, pki.client(H1)).await;
    let cases = [
        ("of-a-replicaset", Some("web-7d9f"), false),
        ("dry-run", Some("web-7d9f"), true),
        ("bare", None, false),
    ];
    for (uid, controller, dry_run) in cases {
        c.send.ready().await.unwrap();
        let resp = c
            .send
            .send_request(review_request(unfixable_pod_review(
                uid, controller, dry_run,
            )))
            .await
            .unwrap();
        let (status, _, body) = read(resp).await;
        assert_eq!(status, StatusCode::OK);
        let answer: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(answer["response"]["allowed"], false, "{uid}: {answer}");
    }
    // An allowed pod of a controller is not a denial.
    post_allowed(&mut c.send, "allowed").await;

    server.shutdown().await.unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1, "{seen:#?}");
    let (uid, namespace, controller, message) = &seen[0];
    assert_eq!(uid, "of-a-replicaset");
    assert_eq!(namespace, "team-a");
    assert_eq!(
        controller["name"], "web-7d9f",
        "the controller, not the other owner"
    );
    assert_eq!(controller["uid"], "u-1");
    assert!(message.contains("hostNetwork"), "{message}");
}
