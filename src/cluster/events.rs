//! Kubernetes Events (`events.k8s.io/v1`) on the objects restrictor acts on: a workload the
//! reconciler re-rolled, and the controller of a pod restrictor had to deny (its pods can never
//! be created until the workload changes, and the controller only retries).
//!
//! Producers never wait on the API server: [`EventSender::try_send`] queues a [`Notice`] (or
//! drops it when the queue is full), and one task rate-limits and writes them through kube's
//! [`Recorder`] (which turns repeats into an Event series). The limits: at most one Event per
//! object and reason per dedupe window, and a token bucket over all Events, so a crash-looping
//! controller recreating a denied pod every second cannot flood the API server.
//!
//! RBAC: `create` and `patch` (the series update) on `events.events.k8s.io` in the namespaces of
//! the objects.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::manifest::controller_reference;
use clap::Args;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, warn};

/// `reportingController` of every Event restrictor writes.
pub const REPORTING_CONTROLLER: &str = "restrictor";
/// The API server rejects an Event note over 1 kB.
const MAX_NOTE_BYTES: usize = 1024;

/// Flags of `restrictor serve` for Events (flattened into its command).
#[derive(Debug, Clone, Args)]
pub struct EventsArgs {
    /// Write Kubernetes Events on workloads restrictor re-rolls or whose pods it denies.
    #[arg(long, env = "RESTRICTOR_EVENTS")]
    pub events: bool,
}

/// A pod CREATE denied for a workload whose pods restrictor could not fix: the Event goes on the
/// pod's controller, which is what the admin has to change.
#[derive(Debug, Clone, PartialEq)]
pub struct DeniedWorkload {
    pub namespace: String,
    pub owner: OwnerReference,
    /// The Event's reason (`PodDenied`).
    pub reason: String,
    /// The denial message, as the webhook answered it.
    pub message: String,
}

/// The controller a denied pod belongs to, from the review's object (its
/// `metadata.ownerReferences[controller=true]`); `None` for a bare pod, whose creator sees the
/// denial in its own answer.
pub fn denied_workload(namespace: &str, pod: &Value, message: &str) -> Option<DeniedWorkload> {
    DeniedWorkload::of_controller(namespace, controller_reference(pod)?, message)
}

impl DeniedWorkload {
    /// The Event subject for a pod denied in `namespace` whose controller's `ownerReference` is
    /// `controller`; `None` when the reference lacks a field an Event needs.
    pub fn of_controller(namespace: &str, controller: &Value, message: &str) -> Option<Self> {
        let field = |name: &str| {
            controller
                .get(name)
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        Some(Self {
            namespace: namespace.to_owned(),
            owner: OwnerReference {
                api_version: field("apiVersion")?,
                kind: field("kind")?,
                name: field("name")?,
                uid: field("uid")?,
                controller: Some(true),
                block_owner_deletion: None,
            },
            reason: "PodDenied".to_owned(),
            message: message.to_owned(),
        })
    }
}

/// Something worth an Event.
#[derive(Debug, Clone, PartialEq)]
pub enum Notice {
    /// The reconciler gave the workload a rollout restart so its pods come up restricted.
    Restarted {
        /// The workload (apiVersion, kind, namespace, name and uid).
        regarding: ObjectReference,
        message: String,
    },
    /// A pod of the workload was denied.
    Denied(DeniedWorkload),
}

impl Notice {
    /// A restart of `kind` `namespace/name` (`apiVersion` e.g. `apps/v1`).
    pub fn restarted(
        api_version: &str,
        kind: &str,
        namespace: &str,
        name: &str,
        uid: Option<&str>,
    ) -> Self {
        Self::Restarted {
            regarding: ObjectReference {
                api_version: Some(api_version.to_owned()),
                kind: Some(kind.to_owned()),
                namespace: Some(namespace.to_owned()),
                name: Some(name.to_owned()),
                uid: uid.map(str::to_owned),
                ..ObjectReference::default()
            },
            message: format!(
                "restrictor restarted the rollout of {kind} {namespace}/{name}: its pod template fails Pod Security \"restricted\", and the new pods pass through the webhook"
            ),
        }
    }

    fn regarding(&self) -> ObjectReference {
        match self {
            Self::Restarted { regarding, .. } => regarding.clone(),
            Self::Denied(denied) => ObjectReference {
                api_version: Some(denied.owner.api_version.clone()),
                kind: Some(denied.owner.kind.clone()),
                namespace: Some(denied.namespace.clone()),
                name: Some(denied.owner.name.clone()),
                uid: Some(denied.owner.uid.clone()),
                ..ObjectReference::default()
            },
        }
    }

    fn event(&self) -> Event {
        let (type_, reason, action, note) = match self {
            Self::Restarted { message, .. } => (
                EventType::Normal,
                "Restarted".to_owned(),
                "Reconcile",
                message.clone(),
            ),
            Self::Denied(denied) => (
                EventType::Warning,
                denied.reason.clone(),
                "Admit",
                format!(
                    "restrictor denied a pod of this {}: {}",
                    denied.owner.kind, denied.message
                ),
            ),
        };
        Event {
            type_,
            reason,
            note: Some(crate::admission::truncated(note, MAX_NOTE_BYTES)),
            action: action.to_owned(),
            secondary: None,
        }
    }

    /// What the dedupe window is keyed on: the object and the reason.
    fn key(&self) -> DedupeKey {
        let regarding = self.regarding();
        DedupeKey {
            namespace: regarding.namespace.unwrap_or_default(),
            kind: regarding.kind.unwrap_or_default(),
            name: regarding.name.unwrap_or_default(),
            reason: self.event().reason,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct DedupeKey {
    namespace: String,
    kind: String,
    name: String,
    reason: String,
}

/// The limits of the Event writer.
#[derive(Debug, Clone)]
pub struct EventLimits {
    /// One Event per object and reason within this window; repeats are dropped.
    pub dedupe_window: Duration,
    /// Events that may be written at once after a quiet period.
    pub burst: u32,
    /// Events per second over time (the bucket's refill rate).
    pub per_second: f64,
    /// Notices queued for the writer; beyond it `try_send` drops.
    pub queue: usize,
}

impl Default for EventLimits {
    fn default() -> Self {
        Self {
            dedupe_window: Duration::from_secs(300),
            burst: 10,
            per_second: 0.2,
            queue: 256,
        }
    }
}

/// Whether a notice may be written now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decision {
    Write,
    /// The same object and reason had an Event within the window.
    Duplicate,
    /// The bucket is empty.
    Throttled,
}

/// The dedupe window per object and reason, and the token bucket over everything.
struct RateLimiter {
    limits: EventLimits,
    tokens: f64,
    refilled: Instant,
    last_written: HashMap<DedupeKey, Instant>,
}

impl RateLimiter {
    fn new(limits: EventLimits, now: Instant) -> Self {
        Self {
            tokens: f64::from(limits.burst),
            refilled: now,
            last_written: HashMap::new(),
            limits,
        }
    }

    fn decide(&mut self, key: &DedupeKey, now: Instant) -> Decision {
        let window = self.limits.dedupe_window;
        if self
            .last_written
            .get(key)
            .is_some_and(|at| now.duration_since(*at) < window)
        {
            return Decision::Duplicate;
        }
        let elapsed = now.duration_since(self.refilled).as_secs_f64();
        self.tokens =
            (self.tokens + elapsed * self.limits.per_second).min(f64::from(self.limits.burst));
        self.refilled = now;
        if self.tokens < 1.0 {
            return Decision::Throttled;
        }
        self.tokens -= 1.0;
        // Bounded memory: forget keys whose window has passed before remembering one more.
        if self.last_written.len() >= 4096 {
            self.last_written
                .retain(|_, at| now.duration_since(*at) < window);
        }
        self.last_written.insert(key.clone(), now);
        Decision::Write
    }
}

/// The producers' end: cheap to clone, never blocks.
#[derive(Clone)]
pub struct EventSender {
    tx: mpsc::Sender<Notice>,
    dropped: Arc<AtomicU64>,
}

impl EventSender {
    /// Queues `notice` for the writer; `false` (and counted) when the queue is full or the
    /// writer has stopped. Usable on the admission request path.
    pub fn try_send(&self, notice: Notice) -> bool {
        let sent = self.tx.try_send(notice).is_ok();
        if !sent {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        sent
    }

    /// Notices dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// Starts the Event writer: returns the producers' end and the task, which ends when every
/// [`EventSender`] is dropped. `instance` is this replica's pod name (`reportingInstance`).
pub fn spawn_event_recorder(
    client: kube::Client,
    instance: String,
    limits: EventLimits,
) -> (EventSender, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(limits.queue.max(1));
    let sender = EventSender {
        tx,
        dropped: Arc::new(AtomicU64::new(0)),
    };
    let recorder = Recorder::new(
        client,
        Reporter {
            controller: REPORTING_CONTROLLER.to_owned(),
            instance: Some(instance),
        },
    );
    let task = tokio::spawn(write_events(recorder, rx, limits));
    (sender, task)
}

async fn write_events(recorder: Recorder, mut rx: mpsc::Receiver<Notice>, limits: EventLimits) {
    let mut limiter = RateLimiter::new(limits, Instant::now());
    let (mut suppressed, mut failures_logged) = (0u64, false);
    while let Some(notice) = rx.recv().await {
        match limiter.decide(&notice.key(), Instant::now()) {
            Decision::Write => {}
            Decision::Duplicate => continue,
            Decision::Throttled => {
                suppressed += 1;
                debug!(suppressed, "event rate limit reached; event dropped");
                continue;
            }
        }
        let regarding = notice.regarding();
        match recorder.publish(&notice.event(), &regarding).await {
            Ok(()) => failures_logged = false,
            // One warning per run of failures (e.g. missing RBAC), not one per Event.
            Err(error) if !failures_logged => {
                failures_logged = true;
                warn!(%error, kind = ?regarding.kind, name = ?regarding.name, "cannot write the Event (events.k8s.io create/patch); further failures are not logged until one succeeds");
            }
            Err(error) => debug!(%error, "cannot write the Event"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_denied_pod_names_its_controller() {
        let pod = json!({"metadata": {"generateName": "agent-6d8f9c7b5-", "ownerReferences": [
            {"apiVersion": "v1", "kind": "Node", "name": "n", "uid": "x"},
            {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "agent-6d8f9c7b5",
             "uid": "rs-uid", "controller": true, "blockOwnerDeletion": true}]}});
        let denied = denied_workload("cattle-system", &pod, "hostNetwork").unwrap();
        assert_eq!(denied.namespace, "cattle-system");
        assert_eq!(denied.owner.kind, "ReplicaSet");
        assert_eq!(denied.owner.name, "agent-6d8f9c7b5");
        assert_eq!(denied.owner.uid, "rs-uid");
        assert_eq!(denied.reason, "PodDenied");
        assert_eq!(denied.message, "hostNetwork");
    }

    #[test]
    fn a_bare_pod_or_an_incomplete_reference_has_no_workload() {
        for pod in [
            json!({"metadata": {"name": "bare"}}),
            json!({"metadata": {"ownerReferences": [{"kind": "ReplicaSet", "name": "x", "uid": "u"}]}}),
            json!({"metadata": {"ownerReferences": [{"kind": "ReplicaSet", "name": "x", "controller": true}]}}),
            json!({"metadata": {"ownerReferences": "not a list"}}),
        ] {
            assert_eq!(denied_workload("ns", &pod, "m"), None, "{pod}");
        }
    }

    fn key(name: &str) -> DedupeKey {
        DedupeKey {
            namespace: "ns".into(),
            kind: "ReplicaSet".into(),
            name: name.into(),
            reason: "PodDenied".into(),
        }
    }

    #[test]
    fn repeats_within_the_window_are_dropped_and_the_bucket_bounds_the_rest() {
        let start = Instant::now();
        let limits = EventLimits {
            dedupe_window: Duration::from_secs(60),
            burst: 3,
            per_second: 1.0,
            queue: 8,
        };
        let mut limiter = RateLimiter::new(limits, start);
        assert_eq!(limiter.decide(&key("a"), start), Decision::Write);
        assert_eq!(limiter.decide(&key("a"), start), Decision::Duplicate);
        assert_eq!(limiter.decide(&key("b"), start), Decision::Write);
        assert_eq!(limiter.decide(&key("c"), start), Decision::Write);
        assert_eq!(limiter.decide(&key("d"), start), Decision::Throttled);
        // One token back per second.
        let later = start + Duration::from_secs(1);
        assert_eq!(limiter.decide(&key("d"), later), Decision::Write);
        assert_eq!(limiter.decide(&key("e"), later), Decision::Throttled);
        // The window over, the same object may have an Event again.
        let much_later = start + Duration::from_secs(61);
        assert_eq!(limiter.decide(&key("a"), much_later), Decision::Write);
    }

    #[test]
    fn notes_fit_the_api_servers_limit() {
        let long = "é".repeat(2000);
        let note = crate::admission::truncated(long, MAX_NOTE_BYTES);
        assert!(note.len() <= MAX_NOTE_BYTES);
        assert!(note.ends_with('…'));
    }
}
