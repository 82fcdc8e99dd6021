//! The offline CLI driven as an admin would: on every fixture, through the built binary.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn restrictor(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_restrictor"))
        .args(args)
        .output()
        .expect("restrictor runs")
}

/// Every manifest fixture (the AdmissionReview is a request, not a manifest: the server tests use
/// it), or `None` when ../shared is absent.
fn manifest_fixtures() -> Option<Vec<PathBuf>> {
    let files: Vec<PathBuf> = support::shared_fixture_files()?
        .into_iter()
        .filter(|path| !path.to_string_lossy().contains("admissionreview"))
        .collect();
    assert!(files.len() >= 17, "fixtures missing: {files:?}");
    Some(files)
}

fn objects(text: &str) -> Vec<Value> {
    restrictor::manifest::parse("output", text).expect("yaml")
}

fn temp_file(name: &str, contents: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("restrictor-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(name);
    std::fs::write(&path, contents).expect("write");
    path
}

/// Objects `mutate` must deny: they use host namespaces or hostPath, which no security context fixes.
fn expected_denials(file: &str) -> Vec<&'static str> {
    if file.contains("pre-bootstrap") {
        vec!["denied: Deployment cattle-system/cattle-cluster-agent-bootstrap: "]
    } else if file.contains("kube-api-auth") {
        vec!["denied: DaemonSet cattle-system/kube-api-auth: "]
    } else {
        vec![]
    }
}

#[test]
fn every_fixture_is_admitted_compliant_or_denied_precisely() {
    let Some(files) = manifest_fixtures() else {
        return;
    };
    for file in files {
        let name = file.display().to_string();
        let output = restrictor(&["mutate", &name]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        let denials: Vec<&str> = stderr
            .lines()
            .filter(|l| l.starts_with("denied: "))
            .collect();
        let expected = expected_denials(&name);
        assert_eq!(denials.len(), expected.len(), "{name}: {stderr}");
        for (line, prefix) in denials.iter().zip(&expected) {
            assert!(line.starts_with(prefix), "{name}: {line}");
            assert!(
                line.contains("spec.template.spec.hostNetwork"),
                "{name}: {line}"
            );
            assert!(
                line.contains("host namespace would reject"),
                "{name}: {line}"
            );
        }
        if name.contains("kube-api-auth") {
            assert!(
                denials[0].contains("spec.template.spec.volumes[0].hostPath: "),
                "{}",
                denials[0]
            );
            assert!(denials[0].contains("(HostPath Volumes)"), "{}", denials[0]);
        }
        assert_eq!(
            output.status.code(),
            Some(if expected.is_empty() { 0 } else { 1 }),
            "{name}"
        );

        // What was admitted passes restricted.
        let mutated = temp_file("mutated.yaml", &output.stdout);
        let check = restrictor(&[
            "check",
            "--level",
            "restricted",
            &mutated.display().to_string(),
        ]);
        assert_eq!(
            check.status.code(),
            Some(0),
            "{name}: {}",
            String::from_utf8_lossy(&check.stdout)
        );

        // Non-pod objects come out as they went in; every admitted object is still there.
        let input = objects(&std::fs::read_to_string(&file).expect("fixture"));
        let admitted = objects(&String::from_utf8_lossy(&output.stdout));
        assert_eq!(admitted.len() + expected.len(), input.len(), "{name}");
        for original in &input {
            if restrictor::workload::PodTemplate::locate(original).is_none() {
                assert!(
                    admitted.contains(original),
                    "{name}: {} changed",
                    restrictor::manifest::describe(original)
                );
            }
        }

        // A second pass over the output changes nothing.
        let again = restrictor(&["mutate", &mutated.display().to_string()]);
        assert_eq!(again.status.code(), Some(0));
        assert_eq!(again.stdout, output.stdout, "{name}: second pass differs");
        assert!(
            !String::from_utf8_lossy(&again.stderr).contains("mutated:"),
            "{name}"
        );
    }
}

#[test]
fn unmutated_fixtures_fail_the_checker_as_their_readme_says() {
    let Some(agent) =
        support::shared_fixture("rancher/20-import.v2.14.4.url-render.ca-checksum.yaml")
    else {
        return;
    };
    let output = restrictor(&["check", &agent.display().to_string()]);
    assert_eq!(output.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&output.stdout);
    for check in [
        "Privilege Escalation",
        "Capabilities",
        "Running as Non-root",
        "Seccomp",
    ] {
        assert!(stdout.contains(check), "{check} missing from:\n{stdout}");
    }
    assert!(
        stdout
            .lines()
            .all(|l| l.starts_with("Deployment cattle-system/cattle-cluster-agent: ")),
        "{stdout}"
    );

    let baseline = restrictor(&["check", "--level", "baseline", &agent.display().to_string()]);
    assert_eq!(
        baseline.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&baseline.stdout)
    );
}

#[test]
fn stdin_json_and_patch_outputs() {
    let pod = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","namespace":"apps"},"spec":{"containers":[{"name":"a","image":"nginx"}]}}"#;
    let run = |format: &str| support::restrictor_with_stdin(&["mutate", "-o", format], pod);
    let json = run("json");
    assert_eq!(json.status.code(), Some(0));
    let mutated: Value = serde_json::from_slice(&json.stdout).expect("json");
    assert_eq!(mutated["spec"]["securityContext"]["runAsNonRoot"], true);
    assert!(
        String::from_utf8_lossy(&json.stderr).contains("mutated: Pod apps/p (profile restricted)")
    );

    let patch = run("patch");
    let line: Value = serde_json::from_slice(&patch.stdout).expect("json line");
    assert_eq!(line["object"], "Pod apps/p");
    let ops: json_patch::Patch = serde_json::from_value(line["patch"].clone()).expect("patch");
    let mut original: Value = serde_json::from_str(pod).expect("pod");
    json_patch::patch(&mut original, &ops).expect("applies");
    assert_eq!(original, mutated);
}

#[test]
fn bad_input_and_bad_policy_exit_2_with_a_clear_message() {
    let broken = temp_file("broken.yaml", b"kind: Pod\nspec: [unclosed\n");
    let output = restrictor(&["mutate", &broken.display().to_string()]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("broken.yaml: document 1"));

    let missing = restrictor(&["check", "/nonexistent/file.yaml"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("cannot read /nonexistent/file.yaml")
    );

    let policy = temp_file(
        "policy.yaml",
        b"profiles:\n  restricted:\n    fsGroup: 0\nrules:\n- {name: all, profile: restricted}\n",
    );
    let agent = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/rancher-import.yaml");
    let output = restrictor(&[
        "mutate",
        "--policy",
        &policy.display().to_string(),
        &agent.display().to_string(),
    ]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("profiles.restricted.fsGroup") && stderr.contains("line 3"),
        "{stderr}"
    );
    assert!(
        output.stdout.is_empty(),
        "nothing is written when the policy is bad"
    );
}

#[test]
fn serve_names_the_flag_a_feature_needs_before_it_starts_anything() {
    let cases: [(&[&str], &str); 3] = [
        (
            &["--reports"],
            "error: --reports (for its Lease) needs --namespace",
        ),
        (
            &["--reconcile-existing"],
            "error: --reconcile-existing (for its Lease) needs --namespace",
        ),
        (
            &["--self-managed-certs", "--namespace=restrictor-system"],
            "error: --self-managed-certs needs --service",
        ),
    ];
    for (flags, message) in cases {
        let mut command = Command::new(env!("CARGO_BIN_EXE_restrictor"));
        command.arg("serve");
        if flags[0] != "--self-managed-certs" {
            // Files that do not exist: the check comes before they are read.
            command.args([
                "--tls-cert=/nonexistent/tls.crt",
                "--tls-key=/nonexistent/tls.key",
            ]);
        }
        let output = command
            .args(flags)
            .env_remove("RESTRICTOR_NAMESPACE")
            .env_remove("RESTRICTOR_SERVICE")
            .env("KUBECONFIG", "/nonexistent/kubeconfig")
            .output()
            .expect("restrictor runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{flags:?}: {stderr}");
        assert_eq!(stderr.trim_end(), message, "{flags:?}");
    }
}

#[test]
fn policy_prints_the_built_in_policy_which_validates() {
    let output = restrictor(&["policy"]);
    assert_eq!(output.status.code(), Some(0));
    let printed = temp_file("builtin.yaml", &output.stdout);
    let validate = restrictor(&["policy", "--validate", &printed.display().to_string()]);
    assert_eq!(
        validate.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&validate.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        restrictor::policy::BUILTIN_YAML
    );
}
