//! Replays the curated fuzz inputs in `fuzz/regressions/<target>/` through the same checks the
//! cargo-fuzz targets assert (`fuzz/src/lib.rs`): no panic, answers within bounds, patches that
//! apply, admitted objects that pass "restricted", and an engine that is idempotent.
//!
//! Inputs for bugs not fixed yet live in `fuzz/regressions/<target>/open/` and are replayed by an
//! ignored test each (`cargo test --test fuzz_regressions -- --ignored`), named after the bug.
//!
//! `write_seed_corpus` (ignored) writes the fuzzers' seed corpus from `../shared/fixtures`; see
//! `fuzz/README.md`.

mod support;

#[allow(dead_code)]
#[path = "../fuzz/src/lib.rs"]
mod checks;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// A saved input is small; even a debug build must answer it well within this.
const MAX_REPLAY: Duration = Duration::from_secs(10);

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn inputs(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|error| panic!("{}: {error}", dir.display()))
        .map(|entry| entry.expect("dir entry").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    files
}

/// Runs `check` on every file of `dir`; fails naming every input that panicked or was slow.
fn replay(dir: &Path, check: fn(&[u8])) -> usize {
    let files = inputs(dir);
    let mut failures = Vec::new();
    for path in &files {
        let data = std::fs::read(path).expect("read input");
        let started = Instant::now();
        let result = catch_unwind(AssertUnwindSafe(|| check(&data)));
        let took = started.elapsed();
        if let Err(panic) = result {
            let message = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("(non-string panic)");
            failures.push(format!("{}: {message}", path.display()));
        } else if took > MAX_REPLAY {
            failures.push(format!("{}: took {took:?}", path.display()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    files.len()
}

#[test]
fn admission_inputs_replay_cleanly() {
    let count = replay(
        &root().join("fuzz/regressions/admission"),
        checks::admission,
    );
    assert!(count >= 10, "only {count} admission inputs");
}

#[test]
fn engine_inputs_replay_cleanly() {
    let count = replay(&root().join("fuzz/regressions/engine"), checks::engine);
    assert!(count >= 10, "only {count} engine inputs");
}

/// Writes the seed corpus the fuzzers start from: every object of `../shared/fixtures` as JSON for
/// the engine, and AdmissionReviews wrapping each pod-bearing one for the admission handler.
#[test]
#[ignore = "writes fuzz/corpus; run by hand (see fuzz/README.md)"]
fn write_seed_corpus() {
    let Some(files) = support::shared_fixture_files() else {
        return;
    };
    let mut objects = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(&path).expect("fixture");
        let parsed = restrictor::manifest::parse(&path.display().to_string(), &text)
            .expect("fixture parses");
        for object in parsed {
            // The AdmissionReview fixture contributes its object.
            if object["kind"] == "AdmissionReview" {
                objects.push(object["request"]["object"].clone());
            }
            objects.push(object);
        }
    }
    let corpus = root().join("fuzz/corpus");
    let engine = corpus.join("engine");
    let admission = corpus.join("admission");
    std::fs::create_dir_all(&engine).expect("mkdir");
    std::fs::create_dir_all(&admission).expect("mkdir");
    let mut reviews = 0;
    for (index, object) in objects.iter().enumerate() {
        let compact = serde_json::to_vec(object).expect("json");
        std::fs::write(engine.join(format!("fixture-{index:03}.json")), &compact).expect("write");
        let Some(pod) = restrictor::workload::PodTemplate::locate(object) else {
            continue;
        };
        // The pod of every workload, as a bare Pod too: the fuzzer mutates pods most.
        let holder = object.pointer(pod.kind.template_pointer()).expect("holder");
        let mut bare = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {}, "spec": pod.spec});
        if let Some(metadata) = holder.get("metadata") {
            bare["metadata"] = metadata.clone();
        }
        if let Some(namespace) = object.pointer("/metadata/namespace") {
            bare["metadata"]["namespace"] = namespace.clone();
        }
        std::fs::write(
            engine.join(format!("fixture-{index:03}-pod.json")),
            serde_json::to_vec(&bare).expect("json"),
        )
        .expect("write");
        for (operation, candidate) in [("CREATE", object), ("CREATE", &bare), ("UPDATE", object)] {
            let api_version = candidate["apiVersion"].as_str().unwrap_or_default();
            let group = api_version.rsplit_once('/').map_or("", |(group, _)| group);
            let review = json!({
                "apiVersion": "admission.k8s.io/v1",
                "kind": "AdmissionReview",
                "request": {
                    "uid": format!("00000000-0000-0000-0000-{reviews:012}"),
                    "kind": {"group": group, "version": "v1", "kind": candidate["kind"]},
                    "namespace": candidate.pointer("/metadata/namespace").cloned().unwrap_or(Value::Null),
                    "operation": operation,
                    "object": candidate,
                    "dryRun": false,
                }
            });
            std::fs::write(
                admission.join(format!("review-{reviews:03}.json")),
                serde_json::to_vec(&review).expect("json"),
            )
            .expect("write");
            reviews += 1;
        }
    }
    assert!(reviews > 0);
}
