//! `certs/gen-certs.sh` (the admin's bring-your-own-certificate script) makes files that the real
//! server accepts, and that a client trusting only the printed `caBundle` verifies under the
//! Service's DNS name, exactly as the API server would.
//!
//! Needs `openssl`. Without it the test fails when `CI` is set and is skipped (with the reason
//! printed) otherwise.

mod support;

use std::path::Path;
use std::process::Command;

use base64::Engine as _;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use support::{
    H1, TempDir, TestServer, client_trusting, h1_handshake, read, review_body, review_request,
    tls_connect_as,
};

const SERVICE: &str = "restrictor";
const NAMESPACE: &str = "restrictor-system";

fn have_openssl() -> bool {
    Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The base64 line printed after "caBundle (base64 of ca.crt):".
fn printed_ca_bundle(stdout: &str) -> String {
    let mut lines = stdout.lines();
    lines
        .by_ref()
        .find(|l| l.starts_with("caBundle"))
        .expect("the script prints a caBundle heading");
    lines.next().expect("the caBundle line").trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gen_certs_output_is_served_and_verifies_with_the_printed_ca_bundle() {
    if !have_openssl() {
        if std::env::var_os("CI").is_some() {
            panic!("openssl is not installed but CI is set: certs/gen-certs.sh cannot be tested");
        }
        eprintln!(
            "SKIPPED: openssl is not installed (certs/gen-certs.sh needs it); set CI=1 to make this a failure"
        );
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = TempDir::new("gen-certs");
    let run = Command::new("bash")
        .arg(root.join("certs/gen-certs.sh"))
        .args([SERVICE, NAMESPACE])
        .arg(out.path())
        .output()
        .expect("run bash certs/gen-certs.sh");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "gen-certs.sh failed: {}\n{stdout}\n{}",
        run.status,
        String::from_utf8_lossy(&run.stderr)
    );

    // The printed caBundle is base64 of ca.crt, byte for byte.
    let ca_pem = std::fs::read(out.path().join("ca.crt")).unwrap();
    let bundle = printed_ca_bundle(&stdout);
    assert_eq!(
        bundle,
        base64::engine::general_purpose::STANDARD.encode(&ca_pem),
        "printed caBundle is not base64 of ca.crt"
    );
    assert!(
        stdout.contains(&format!("--set tls.caBundle={bundle}")),
        "the printed helm line uses the caBundle"
    );
    assert!(
        !out.path().join("ca.key").exists(),
        "the CA key is not kept by default"
    );
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(out.path().join("tls.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "tls.key is private");

    // The real server, with exactly those files.
    let config = restrictor::server::ServeConfig::new(restrictor::server::TlsSource::Files {
        cert: out.path().join("tls.crt"),
        key: out.path().join("tls.key"),
    });
    let server = TestServer::start(config).await;

    // A client that trusts only the decoded caBundle, with the SNI the API server uses.
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(&bundle)
        .unwrap();
    assert_eq!(
        CertificateDer::pem_slice_iter(&decoded).count(),
        1,
        "ca.crt holds exactly one certificate"
    );
    let client = client_trusting(&decoded, H1);
    for sni in [
        format!("{SERVICE}.{NAMESPACE}.svc"),
        format!("{SERVICE}.{NAMESPACE}.svc.cluster.local"),
    ] {
        let tls = tls_connect_as(server.https, client.clone(), &sni)
            .await
            .unwrap_or_else(|e| panic!("TLS to {sni} verified against ca.crt: {e}"));
        let mut send = h1_handshake(tls).await;
        let resp = send
            .send_request(review_request(review_body("gen-certs-1")))
            .await
            .unwrap();
        let (status, _, body) = read(resp).await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        let review: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(review["response"]["uid"], "gen-certs-1");
        assert_eq!(review["response"]["allowed"], true);
        assert_eq!(review["response"]["patchType"], "JSONPatch");
        // The review's pod (nginx, no security context) comes back compliant.
        let patch = base64::engine::general_purpose::STANDARD
            .decode(review["response"]["patch"].as_str().unwrap())
            .unwrap();
        let patch: json_patch::Patch = serde_json::from_slice(&patch).unwrap();
        let mut pod = serde_json::from_slice::<serde_json::Value>(&review_body("x")).unwrap()
            ["request"]["object"]
            .take();
        json_patch::patch(&mut pod, &patch).unwrap();
        let violations =
            restrictor::pss::check_object(&pod, restrictor::pss::Level::Restricted).unwrap();
        assert!(violations.is_empty(), "{violations:?}");
    }

    // A name outside the certificate is refused: the client really verifies.
    assert!(
        tls_connect_as(server.https, client, "other.restrictor-system.svc")
            .await
            .is_err(),
        "a name not in the SANs must not verify"
    );
    server.shutdown().await.unwrap();
}
