//! A seconds-long smoke of the load tool's core (`benches/load/driver.rs`): both servers
//! in-process on loopback, HTTP/1.1 and HTTP/2 clients, and the built binary as its own process.
//! Checks that the instrument works (every answer 200 with the right uid), not how fast.

#[path = "../benches/load/driver.rs"]
mod driver;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use driver::{Clients, InProcess, Pki, Process, Proto, ReviewTemplate, Tally, TempDir};
use restrictor::policy::Policy;

fn runtimes() -> (tokio::runtime::Runtime, tokio::runtime::Runtime) {
    let server = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("srv")
        .enable_all()
        .build()
        .expect("server runtime");
    let client = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("client runtime");
    (server, client)
}

/// The crypto provider installed, certificates in a scratch directory (removed on drop), and the
/// agent Deployment's review.
fn certificates_and_review(label: &str) -> (TempDir, Pki, Arc<ReviewTemplate>) {
    restrictor::server::install_crypto_provider();
    let tmp = TempDir::new(label);
    let pki = Pki::generate(tmp.path());
    (tmp, pki, Arc::new(ReviewTemplate::rancher_agent()))
}

#[test]
fn ceiling_parses_the_review_and_echoes_the_uid() {
    let review = ReviewTemplate::rancher_agent();
    let body = review.with_uid(&driver::Uid::new(7, 42));
    let answer = driver::ceiling_review(&body, &Policy::builtin()).expect("answered");
    let v: serde_json::Value = serde_json::from_slice(&answer.body).expect("JSON answer");
    assert_eq!(v["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(v["kind"], "AdmissionReview");
    assert_eq!(v["response"]["uid"], "00000007-0000-4000-8000-00000000002a");
    assert_eq!(v["response"]["allowed"], true);
    assert_eq!(answer.summary.kind, "Deployment");
    assert_eq!(answer.summary.namespace, "cattle-system");
    // Like restrictor, it rejects what is not an AdmissionReview.
    assert!(driver::ceiling_review(b"{}", &Policy::builtin()).is_err());
    assert!(driver::ceiling_review(b"  ", &Policy::builtin()).is_err());
    assert!(
        driver::ceiling_review(
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u","kind":{"kind":"Pod"},"object":{"a":[1"#,
            &Policy::builtin()
        )
        .is_err(),
        "the object is parsed too"
    );
}

#[test]
fn both_servers_answer_every_request_over_http1_and_http2() {
    let (_tmp, pki, review) = certificates_and_review("load-smoke");
    let (server_rt, client_rt) = runtimes();
    let ceiling = InProcess::start(&server_rt, &pki, driver::ceiling_review);
    let real = InProcess::start(&server_rt, &pki, restrictor::admission::review);
    for (proto, concurrency) in [(Proto::H1, 1), (Proto::H1, 4), (Proto::H2, 4)] {
        for (name, addr) in [("ceiling", ceiling.https), ("restrictor", real.https)] {
            let mut tally = Tally::default();
            let w = client_rt.block_on(async {
                let mut clients = Clients::connect(addr, pki.client(proto), proto, concurrency)
                    .await
                    .expect("connect");
                clients.run(&review, Duration::from_millis(250)).await
            });
            tally.add(w, Duration::ZERO, Duration::ZERO);
            let s = tally.stats();
            assert_eq!(
                s.errors, 0,
                "{name} {proto:?} c={concurrency}: {:?}",
                tally.first_error
            );
            assert!(
                s.requests > 0,
                "{name} {proto:?} c={concurrency}: no answers"
            );
            assert!(s.p50_ms <= s.p99_ms && s.p99_ms <= s.max_ms);
        }
    }
    ceiling.shutdown(&server_rt);
    real.shutdown(&server_rt);
}

#[test]
fn the_binary_gets_ready_and_reports_its_peak_rss() {
    let (_tmp, pki, review) = certificates_and_review("load-smoke-process");
    let (_server_rt, client_rt) = runtimes();
    let mut p = Process::spawn(Path::new(env!("CARGO_BIN_EXE_restrictor")), &pki);
    assert!(
        p.wait_ready(Duration::from_secs(20)).is_some(),
        "restrictor serve did not get ready"
    );
    let w = client_rt.block_on(async {
        let mut clients = Clients::connect(p.https, pki.client(Proto::H1), Proto::H1, 4)
            .await
            .expect("connect to the process");
        clients.run(&review, Duration::from_millis(250)).await
    });
    assert_eq!(w.errors, 0, "{:?}", w.first_error);
    assert!(!w.latencies_us.is_empty());
    let hwm = p.status_kib("VmHWM").expect("VmHWM in /proc/<pid>/status");
    assert!(hwm > 0);
    assert!(p.cpu() > Duration::ZERO);
}

#[test]
fn the_two_reviewed_objects_are_what_the_rows_claim() {
    let uid = driver::Uid::new(1, 1);
    let policy = Policy::builtin();
    let unmutated =
        restrictor::admission::review(&ReviewTemplate::rancher_agent().with_uid(&uid), &policy)
            .expect("answered");
    assert_eq!(
        unmutated.summary.disposition,
        restrictor::admission::Disposition::Patched
    );
    let steady = restrictor::admission::review(
        &ReviewTemplate::compliant_agent_pod().with_uid(&uid),
        &policy,
    )
    .expect("answered");
    assert_eq!(
        steady.summary.disposition,
        restrictor::admission::Disposition::Unchanged
    );
    assert_eq!(steady.summary.profile.as_deref(), Some("rancher-agent"));
}
