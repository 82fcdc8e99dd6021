//! The engine's cost per object: decide + build the patch, and the checker alone.
//! `cargo bench --bench engine`; the target is under 20 µs for the Rancher agent Deployment.

use std::hint::black_box;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use serde_json::{Value, json};

use restrictor::admission;
use restrictor::engine::{self, Context};
use restrictor::policy::Policy;
use restrictor::pss::{self, Level};
use restrictor::workload::WorkloadKind;

fn agent_deployment() -> Value {
    // The README's quick-start input: the same bytes as shared/fixtures/rancher/20-import.v2.14.4.*.
    let text = include_str!("../examples/rancher-import.yaml");
    restrictor::manifest::parse("agent", text)
        .expect("fixture")
        .into_iter()
        .find(|o| o["kind"] == "Deployment")
        .expect("agent deployment")
}

fn pod_with_containers(count: usize) -> Value {
    let containers: Vec<Value> = (0..count)
        .map(|i| json!({"name": format!("c{i}"), "image": "nginx:1.27", "ports": [{"containerPort": 8080}],
                        "env": [{"name": "A", "value": "b"}], "resources": {"limits": {"memory": "64Mi"}}}))
        .collect();
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "apps"},
           "spec": {"containers": containers}})
}

fn review_of(object: &Value, group: &str, kind: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "b7d5b0c2-1b4f-4a53-8c7e-0f3f1b2a9c11",
                    "kind": {"group": group, "version": "v1", "kind": kind},
                    "namespace": "cattle-system", "operation": "CREATE",
                    "userInfo": {"username": "admin"}, "object": object}
    }))
    .expect("json")
}

/// The agent Deployment as restrictor admits it.
fn mutated_agent(policy: &Policy, agent: &Value) -> Value {
    let mut mutated = agent.clone();
    engine::evaluate(
        policy,
        &mut mutated,
        WorkloadKind::Deployment,
        "cattle-system",
        Context::CREATE,
    )
    .expect("profile");
    mutated
}

fn benches(c: &mut Criterion) {
    let policy = Policy::builtin();
    let agent = agent_deployment();
    let bare = pod_with_containers(1);
    // The steady state: the agent pod as the ReplicaSet creates it from the mutated template.
    let compliant_agent_pod = {
        let deployment = mutated_agent(&policy, &agent);
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"generateName": "cattle-cluster-agent-", "namespace": "cattle-system",
                            "labels": deployment["spec"]["template"]["metadata"]["labels"]},
               "spec": deployment["spec"]["template"]["spec"]})
    };
    let wide = pod_with_containers(50);

    let mut mutate = c.benchmark_group("mutate");
    for (name, object, kind, namespace) in [
        (
            "agent-deployment",
            &agent,
            WorkloadKind::Deployment,
            "cattle-system",
        ),
        ("bare-pod", &bare, WorkloadKind::Pod, "apps"),
        (
            "agent-pod-compliant",
            &compliant_agent_pod,
            WorkloadKind::Pod,
            "cattle-system",
        ),
        ("pod-50-containers", &wide, WorkloadKind::Pod, "apps"),
    ] {
        // The engine edits the object it is given (the server's freshly parsed copy), so each
        // iteration gets its own copy, made and dropped outside the timed region.
        mutate.bench_function(name, |b| {
            b.iter_batched_ref(
                || object.clone(),
                |object| {
                    let evaluation = engine::evaluate(
                        &policy,
                        black_box(object),
                        kind,
                        namespace,
                        Context::CREATE,
                    );
                    let patch = evaluation.map(|e| serde_json::to_vec(&e.outcome.patch));
                    black_box(patch)
                },
                BatchSize::SmallInput,
            )
        });
    }
    mutate.finish();

    let mut check = c.benchmark_group("check");
    let agent_mutated = mutated_agent(&policy, &agent);
    check.bench_function("agent-deployment-unmutated", |b| {
        b.iter(|| black_box(pss::check_object(black_box(&agent), Level::Restricted)))
    });
    check.bench_function("agent-deployment-compliant", |b| {
        b.iter(|| {
            black_box(pss::check_object(
                black_box(&agent_mutated),
                Level::Restricted,
            ))
        })
    });
    check.finish();

    // A whole review in process: parse, mutate, answer. The `ceiling` rows only parse and answer
    // `allowed` (the load benchmark's ceiling handler), so the difference is what the policy costs.
    let mut review = c.benchmark_group("review");
    for (name, body) in [
        ("agent-deployment", review_of(&agent, "apps", "Deployment")),
        (
            "agent-pod-compliant",
            review_of(&compliant_agent_pod, "", "Pod"),
        ),
    ] {
        review.bench_function(name, |b| {
            b.iter(|| black_box(admission::review(black_box(&body), &policy)))
        });
        review.bench_function(format!("{name}-ceiling"), |b| {
            b.iter(|| black_box(admission::Review::parse(black_box(&body)).and_then(|r| r.allow())))
        });
    }
    review.finish();
}

criterion_group!(engine_benches, benches);
criterion_main!(engine_benches);
