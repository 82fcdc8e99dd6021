//! Reconcile of workloads created before restrictor: restart the non-compliant ones the way
//! `kubectl rollout restart` does, so their new pods pass the webhook; report what cannot be
//! restarted (Jobs, bare Pods) or could not pass anyway (what restrictor would deny).
//!
//! Order per round: read the live policy; per namespace, list and classify; probe until the API
//! server sends the namespace's pods to restrictor ([`super::probe`]); restart; then check that the
//! new pods pass (`rollout.rs`). Workloads whose new pods still fail are restarted again in
//! a later round, a bounded number of times.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::sync::watch;
use tracing::{info, warn};

use super::errors::{ApiCall, ClusterError, call};
use super::inventory::{self, ListFailure};
use super::lease::{LeaderElector, LeaseConfig, LeaseHold};
use super::rollout::{self, Restarted, Rollout};
use super::{Clock, probe, system_clock};
use crate::engine::{self, Context};
use crate::policy::Policy;
use crate::pss::{self, Level};
use crate::workload::{PodTemplate, WorkloadKind};

/// The annotation `kubectl rollout restart` sets on the pod template.
pub const RESTARTED_AT_ANNOTATION: &str = "kubectl.kubernetes.io/restartedAt";
/// The label by which a pod opts out of the webhook (the chart's objectSelector).
const OPT_OUT_LABEL: &str = "restrictor.dev/ignore";

/// Configuration of the reconcile.
#[derive(Debug, Clone, Default)]
pub struct ReconcileConfig {
    /// Namespaces to reconcile; `None`: the live policy's [`Policy::literal_namespaces`], read
    /// afresh each round.
    pub namespaces: Option<Vec<String>>,
    pub timing: ReconcileTiming,
}

/// How long the reconcile waits for what, each wait an exponential backoff (factor 2).
#[derive(Debug, Clone)]
pub struct ReconcileTiming {
    /// Probes per namespace: first and longest wait, and how many waits before giving up.
    pub probe: BackoffConfig,
    /// Checks of a restart's new pods.
    pub rollout: BackoffConfig,
    /// Rounds that restart again what still fails, and the wait before each.
    pub retry: BackoffConfig,
}

/// An exponential backoff: `first`, doubling up to `max`, `times` waits in all.
#[derive(Debug, Clone, Copy)]
pub struct BackoffConfig {
    pub first: Duration,
    pub max: Duration,
    pub times: usize,
}

impl BackoffConfig {
    fn delays(&self) -> impl Iterator<Item = Duration> + use<> {
        ExponentialBuilder::default()
            .with_min_delay(self.first)
            .with_max_delay(self.max)
            .with_max_times(self.times)
            .build()
    }
}

impl Default for ReconcileTiming {
    /// Probes for about 10 minutes (a webhook configuration normally reaches the API server in
    /// seconds), checks rollouts for about 4 minutes, restarts what still fails twice more.
    fn default() -> Self {
        Self {
            probe: BackoffConfig {
                first: Duration::from_secs(1),
                max: Duration::from_secs(60),
                times: 15,
            },
            rollout: BackoffConfig {
                first: Duration::from_secs(2),
                max: Duration::from_secs(60),
                times: 8,
            },
            retry: BackoffConfig {
                first: Duration::from_secs(30),
                max: Duration::from_secs(300),
                times: 2,
            },
        }
    }
}

/// One workload, as a Kubernetes Event's `involvedObject` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadRef {
    pub api_version: &'static str,
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

impl std::fmt::Display for WorkloadRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

/// Something the reconcile did or saw, as it happens (for metrics and Kubernetes Events).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReconcileEvent<'a> {
    /// A Deployment, StatefulSet or DaemonSet was given a rollout restart.
    Restarted(&'a WorkloadRef),
    /// A non-compliant Job or bare Pod: reported, not touched.
    Reported(&'a WorkloadRef),
    /// Restrictor would deny the workload's pods: not restarted (its running pods stay).
    Unfixable {
        workload: &'a WorkloadRef,
        reason: &'a str,
    },
    /// The restart patch failed (the object vanished or changed, or a webhook refused it).
    RestartFailed {
        workload: &'a WorkloadRef,
        error: &'a str,
    },
    /// The probe in `namespace` did not come back mutated; the next attempt follows `next_in`.
    WaitingForWebhook {
        namespace: &'a str,
        attempt: u32,
        reason: &'a str,
        next_in: Duration,
    },
    /// The probe never came back mutated: nothing in `namespace` was restarted.
    WebhookUnreached { namespace: &'a str, reason: &'a str },
    /// The restarted workload's new pods pass restricted.
    Verified(&'a WorkloadRef),
    /// The restarted workload's new pods still fail, or never appeared.
    StillFailing {
        workload: &'a WorkloadRef,
        reason: &'a str,
    },
}

impl ReconcileEvent<'_> {
    /// A short label for metrics: `restarted`, `reported`, `unfixable`, `failed`,
    /// `waiting-for-webhook`, `webhook-unreached`, `verified`, `still-failing`.
    pub fn action(&self) -> &'static str {
        match self {
            Self::Restarted(_) => "restarted",
            Self::Reported(_) => "reported",
            Self::Unfixable { .. } => "unfixable",
            Self::RestartFailed { .. } => "failed",
            Self::WaitingForWebhook { .. } => "waiting-for-webhook",
            Self::WebhookUnreached { .. } => "webhook-unreached",
            Self::Verified(_) => "verified",
            Self::StillFailing { .. } => "still-failing",
        }
    }

    /// The workload the event is about (none for the namespace-wide probe events).
    pub fn workload(&self) -> Option<&WorkloadRef> {
        match self {
            Self::Restarted(w) | Self::Reported(w) | Self::Verified(w) => Some(w),
            Self::Unfixable { workload, .. }
            | Self::RestartFailed { workload, .. }
            | Self::StillFailing { workload, .. } => Some(workload),
            Self::WaitingForWebhook { .. } | Self::WebhookUnreached { .. } => None,
        }
    }
}

/// What the reconcile did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Deployments, StatefulSets and DaemonSets given a rollout restart (once each, however many
    /// rounds restarted them).
    pub restarted: Vec<WorkloadRef>,
    /// Non-compliant Jobs and bare Pods: reported, not touched.
    pub reported: Vec<WorkloadRef>,
    /// Workloads whose pods restrictor would deny, with the reason: not restarted.
    pub unfixable: Vec<(WorkloadRef, String)>,
    /// Objects left alone: compliant, opted out, left alone by the policy, being deleted, or
    /// Pods owned by a controller.
    pub skipped: usize,
    /// Restarts that failed (the object vanished or changed, or a webhook refused the patch).
    pub failed: Vec<(WorkloadRef, String)>,
    /// Namespaces whose probe never came back mutated, with the last reason: nothing restarted.
    pub unreached: Vec<(String, String)>,
    /// Restarted workloads whose new pods pass restricted.
    pub verified: Vec<WorkloadRef>,
    /// Restarted workloads whose new pods still failed, with the reason: after the last round, or
    /// when a later round did not restart them again (they vanished, no longer need a restart, or
    /// their namespace's probe gave up), which the reason then says.
    pub still_failing: Vec<(WorkloadRef, String)>,
    /// Namespaces whose workloads could not be listed in the last round, with the error: retried
    /// in later rounds while rounds were left, never reconciled after.
    pub unlisted: Vec<(String, String)>,
}

/// Which of a namespace's workloads a round looks at.
#[derive(Debug, Clone)]
enum Scope {
    /// Everything: reported, counted and restarted as needed (a namespace's first survey).
    All,
    /// Only the restartable workloads with these uids (those whose new pods still failed).
    Only(BTreeSet<String>),
}

/// One namespace's workloads, listed and classified; nothing is reported until every list
/// succeeded, so a namespace listed again after an error is not counted twice.
#[derive(Default)]
struct Survey {
    candidates: Vec<Candidate>,
    skipped: usize,
    reported: Vec<WorkloadRef>,
    unfixable: Vec<(WorkloadRef, String)>,
    /// The uids listed (to tell a workload that vanished from one that needs no restart).
    seen: BTreeSet<String>,
}

/// What a round does with a non-compliant object of a kind.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Action {
    /// Restart: its controller replaces the pods, and the new ones pass the webhook.
    Restart,
    /// Report only: nothing recreates its pods for it (a Job's template is immutable).
    Report,
}

/// The kinds a round lists, and what it does with each.
const KINDS: [(WorkloadKind, Action); 5] = [
    (WorkloadKind::Deployment, Action::Restart),
    (WorkloadKind::StatefulSet, Action::Restart),
    (WorkloadKind::DaemonSet, Action::Restart),
    (WorkloadKind::Job, Action::Report),
    (WorkloadKind::Pod, Action::Report),
];

/// The RFC 3339 timestamp `kubectl rollout restart` writes (seconds precision).
pub fn restarted_at_value(now: OffsetDateTime) -> String {
    now.replace_nanosecond(0)
        .unwrap_or(now)
        .format(&Rfc3339)
        .unwrap_or_default()
}

/// Every object of `kind` in `namespace`, as [`inventory::list_pages`] gives them.
async fn list_all(
    client: &kube::Client,
    kind: WorkloadKind,
    namespace: &str,
) -> Result<Vec<Value>, ClusterError> {
    inventory::list_pages(client, kind, Some(namespace))
        .await
        .map_err(|failure| {
            let call = ApiCall::new("list", kind.group(), kind.plural()).namespace(namespace);
            match failure {
                ListFailure::Request(error) => ClusterError::from_kube(call, error),
                ListFailure::NotAList(detail) => ClusterError::Unreadable { call, detail },
            }
        })
}

/// What to do with one listed object.
enum Verdict {
    Skip,
    Report,
    Unfixable(String),
    /// Restart; the workload's pod template as a Pod (the probe mirrors it).
    Restart(Value),
}

/// The pod a workload's controller creates from its template, as a Pod object.
fn pod_of(kind: WorkloadKind, object: &Value) -> Option<Value> {
    let template = PodTemplate::locate_as(object, kind)?;
    Some(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": template.metadata.cloned().unwrap_or_else(|| json!({})),
        "spec": template.spec,
    }))
}

/// A workload needs a restart when the pods its template makes fail restricted and the policy
/// gives those pods (kind Pod, the template's labels and images, in its namespace) a profile: the
/// host only ever sees pods, restrictor mutates every pod it is given at creation, and a pod the
/// policy leaves alone would come back from a restart exactly as it is. If restrictor would deny
/// those pods, a restart would only replace running pods by none: reported instead.
fn classify(
    policy: &Policy,
    (kind, action): (WorkloadKind, Action),
    namespace: &str,
    object: &Value,
) -> Verdict {
    let metadata = &object["metadata"];
    let deleting = !metadata["deletionTimestamp"].is_null();
    let owned = metadata["ownerReferences"]
        .as_array()
        .is_some_and(|o| !o.is_empty());
    if deleting || (kind == WorkloadKind::Pod && owned) {
        return Verdict::Skip;
    }
    let Some(pod) = pod_of(kind, object) else {
        return Verdict::Skip;
    };
    if pod["metadata"]["labels"][OPT_OUT_LABEL] == "true" {
        return Verdict::Skip;
    }
    if pss::check_object(&pod, Level::Restricted).is_none_or(|v| v.is_empty()) {
        return Verdict::Skip;
    }
    let mut mutated = pod.clone();
    let Some(evaluation) = engine::evaluate(
        policy,
        &mut mutated,
        WorkloadKind::Pod,
        namespace,
        Context::CREATE,
    ) else {
        return Verdict::Skip;
    };
    match (action, evaluation.outcome.denial) {
        (Action::Report, _) => Verdict::Report,
        (Action::Restart, Some(denial)) => Verdict::Unfixable(denial.to_string()),
        (Action::Restart, None) => Verdict::Restart(pod),
    }
}

fn workload_ref(kind: WorkloadKind, namespace: &str, object: &Value) -> WorkloadRef {
    let text = |key: &str| {
        object["metadata"][key]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    WorkloadRef {
        api_version: kind.api_version(),
        kind: kind.as_str(),
        namespace: namespace.to_owned(),
        name: text("name"),
        uid: text("uid"),
    }
}

type Observer = Arc<dyn Fn(&ReconcileEvent<'_>) + Send + Sync>;

/// Reconciles existing workloads against the live policy; see the module documentation.
pub struct Reconciler {
    client: kube::Client,
    config: ReconcileConfig,
    policy: watch::Receiver<Arc<Policy>>,
    observer: Observer,
    clock: Clock,
    /// Turns false when the lease this reconcile runs under is lost.
    leadership: Option<(String, watch::Receiver<bool>)>,
}

/// A workload to restart in this round.
struct Candidate {
    kind: WorkloadKind,
    workload: WorkloadRef,
    object: Value,
    pod: Value,
}

impl Reconciler {
    pub fn new(
        client: kube::Client,
        config: ReconcileConfig,
        policy: watch::Receiver<Arc<Policy>>,
    ) -> Self {
        Self {
            client,
            config,
            policy,
            observer: Arc::new(|_: &ReconcileEvent<'_>| {}),
            clock: system_clock(),
            leadership: None,
        }
    }

    /// Calls `observer` with every [`ReconcileEvent`] as it happens.
    pub fn with_observer(
        mut self,
        observer: impl Fn(&ReconcileEvent<'_>) + Send + Sync + 'static,
    ) -> Self {
        self.observer = Arc::new(observer);
        self
    }

    /// Replaces the clock (the `restartedAt` stamps).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    fn emit(&self, event: ReconcileEvent<'_>) {
        (self.observer)(&event);
    }

    /// The lease this reconcile ran under, if it has been lost.
    fn lost_lease(&self) -> Option<&str> {
        match &self.leadership {
            Some((lease, held)) if !*held.borrow() => Some(lease),
            _ => None,
        }
    }

    /// Runs every round. Only an RBAC 403 or a lost lease stops it with an error: any other
    /// failure is one namespace's (its listing) or one workload's (its restart or check), retried
    /// in the next round while rounds are left.
    pub async fn run(&self) -> Result<ReconcileReport, ClusterError> {
        let mut report = ReconcileReport::default();
        // `None`: the first round, every namespace in full.
        let mut scopes: Option<BTreeMap<String, Scope>> = None;
        // Workloads whose new pods failed, by uid, with the last reason; kept across rounds so that
        // one a later round does not restart again is still reported.
        let mut failing: BTreeMap<String, (WorkloadRef, String)> = BTreeMap::new();
        let mut settled: Vec<(WorkloadRef, String)> = Vec::new();
        let mut retry_delays = self.config.timing.retry.delays();
        loop {
            let policy = self.policy.borrow().clone();
            let work: Vec<(String, Scope)> = match scopes.take() {
                Some(scopes) => scopes.into_iter().collect(),
                None => self
                    .config
                    .namespaces
                    .clone()
                    .unwrap_or_else(|| policy.literal_namespaces())
                    .into_iter()
                    .map(|namespace| (namespace, Scope::All))
                    .collect(),
            };
            let mut next: BTreeMap<String, Scope> = BTreeMap::new();
            let mut unlisted = Vec::new();
            let mut restarted = Vec::new();
            for (namespace, scope) in &work {
                let survey = match self.survey(&policy, namespace, scope).await {
                    Ok(survey) => survey,
                    Err(e) if e.is_rbac() => return Err(e),
                    Err(e) => {
                        let error = e.to_string();
                        warn!(%namespace, %error, "cannot list the workloads of namespace {namespace}; it is tried again in the next round");
                        next.insert(namespace.clone(), scope.clone());
                        unlisted.push((namespace.clone(), error));
                        continue;
                    }
                };
                let seen = survey.seen.clone();
                let candidates = self.record(survey, &mut report);
                if let Scope::Only(uids) = scope {
                    for uid in uids {
                        if candidates.iter().any(|c| &c.workload.uid == uid) {
                            continue;
                        }
                        let why = if seen.contains(uid) {
                            "it no longer needs a restart"
                        } else {
                            "it no longer exists"
                        };
                        settle(&mut failing, &mut settled, uid, why);
                    }
                }
                let Some(first) = candidates.first() else {
                    continue;
                };
                let delays = self.config.timing.probe.delays();
                let reached = probe::wait_until_mutated(
                    &self.client,
                    &policy,
                    namespace,
                    &first.pod,
                    delays,
                    &*self.observer,
                )
                .await?;
                if let Err(reason) = reached {
                    self.emit(ReconcileEvent::WebhookUnreached {
                        namespace,
                        reason: &reason,
                    });
                    for candidate in &candidates {
                        let why = format!("the probe in its namespace gave up: {reason}");
                        settle(&mut failing, &mut settled, &candidate.workload.uid, &why);
                    }
                    report.unreached.push((namespace.clone(), reason));
                    continue;
                }
                for candidate in candidates {
                    if let Some(lease) = self.lost_lease() {
                        return Err(ClusterError::LeaseLost {
                            lease: lease.to_owned(),
                        });
                    }
                    let uid = candidate.workload.uid.clone();
                    match self.restart(candidate, &mut report).await? {
                        Some(done) => restarted.push(done),
                        None => settle(&mut failing, &mut settled, &uid, "the restart failed"),
                    }
                }
            }
            // Whatever was restarted this round is judged afresh by its new pods.
            for restart in &restarted {
                failing.remove(&restart.workload.uid);
            }
            for (restart, reason) in self.verify(restarted, &mut report).await? {
                let workload = restart.workload;
                if let Scope::Only(uids) = next
                    .entry(workload.namespace.clone())
                    .or_insert_with(|| Scope::Only(BTreeSet::new()))
                {
                    uids.insert(workload.uid.clone());
                }
                failing.insert(workload.uid.clone(), (workload, reason));
            }
            if next.is_empty() {
                break;
            }
            let Some(delay) = retry_delays.next() else {
                report.unlisted = unlisted;
                break;
            };
            info!(
                workloads = failing.len(),
                namespaces = unlisted.len(),
                "restarting the workloads whose new pods still fail, and listing the namespaces that could not be listed, again in {:.0}s",
                delay.as_secs_f64()
            );
            scopes = Some(next);
            tokio::time::sleep(delay).await;
        }
        settled.extend(failing.into_values());
        report.still_failing = settled;
        info!(
            restarted = report.restarted.len(),
            verified = report.verified.len(),
            reported = report.reported.len(),
            unfixable = report.unfixable.len(),
            skipped = report.skipped,
            failed = report.failed.len(),
            unreached = report.unreached.len(),
            still_failing = report.still_failing.len(),
            unlisted = report.unlisted.len(),
            "reconcile of existing workloads done"
        );
        for (workload, reason) in &report.still_failing {
            warn!(workload = %workload, %reason, "restarted workload still fails at the end of the reconcile");
        }
        for (namespace, error) in &report.unlisted {
            warn!(%namespace, %error, "namespace not reconciled: its workloads could not be listed");
        }
        Ok(report)
    }

    /// Lists and classifies `namespace`'s workloads within `scope`; reports nothing yet.
    async fn survey(
        &self,
        policy: &Policy,
        namespace: &str,
        scope: &Scope,
    ) -> Result<Survey, ClusterError> {
        let only = match scope {
            Scope::All => None,
            Scope::Only(uids) => Some(uids),
        };
        let mut survey = Survey::default();
        for (kind, action) in KINDS {
            if only.is_some() && action == Action::Report {
                continue;
            }
            for object in list_all(&self.client, kind, namespace).await? {
                let workload = workload_ref(kind, namespace, &object);
                if only.is_some_and(|uids| !uids.contains(&workload.uid)) {
                    continue;
                }
                survey.seen.insert(workload.uid.clone());
                match classify(policy, (kind, action), namespace, &object) {
                    Verdict::Skip => survey.skipped += usize::from(only.is_none()),
                    Verdict::Report => survey.reported.push(workload),
                    Verdict::Unfixable(reason) => survey.unfixable.push((workload, reason)),
                    Verdict::Restart(pod) => survey.candidates.push(Candidate {
                        kind,
                        workload,
                        object,
                        pod,
                    }),
                }
            }
        }
        Ok(survey)
    }

    /// Reports what `survey` found; returns the workloads to restart.
    fn record(&self, survey: Survey, report: &mut ReconcileReport) -> Vec<Candidate> {
        report.skipped += survey.skipped;
        for workload in survey.reported {
            warn!(workload = %workload, "non-compliant {} created before restrictor; not restartable, recreate it to pass the policy", workload.kind);
            self.emit(ReconcileEvent::Reported(&workload));
            report.reported.push(workload);
        }
        for (workload, reason) in survey.unfixable {
            warn!(workload = %workload, %reason, "non-compliant workload not restarted: restrictor would deny its pods");
            self.emit(ReconcileEvent::Unfixable {
                workload: &workload,
                reason: &reason,
            });
            report.unfixable.push((workload, reason));
        }
        survey.candidates
    }

    /// Writes the template annotation `kubectl.kubernetes.io/restartedAt: <now>` (a strategic
    /// merge patch of only that annotation). `None` when the patch failed for this workload only.
    async fn restart(
        &self,
        candidate: Candidate,
        report: &mut ReconcileReport,
    ) -> Result<Option<Restarted>, ClusterError> {
        let Candidate {
            kind,
            workload,
            object,
            ..
        } = candidate;
        let now = (self.clock)();
        let at = now.replace_nanosecond(0).unwrap_or(now);
        // A retry within the second of the previous restart would write the same value, which
        // changes nothing and rolls nothing out.
        let current = object
            .pointer("/spec/template/metadata/annotations")
            .and_then(|a| a.get(RESTARTED_AT_ANNOTATION))
            .and_then(Value::as_str);
        let mut stamp = restarted_at_value(at);
        if current == Some(stamp.as_str()) {
            stamp = restarted_at_value(at + time::Duration::seconds(1));
        }
        let patch = json!({"spec": {"template": {"metadata": {"annotations": {
            RESTARTED_AT_ANNOTATION: stamp,
        }}}}});
        let params = PatchParams {
            field_manager: Some("restrictor".into()),
            ..Default::default()
        };
        let result = call(
            ApiCall::new("patch", kind.group(), kind.plural())
                .name(&workload.name)
                .namespace(&workload.namespace),
            Api::<DynamicObject>::namespaced_with(
                self.client.clone(),
                &workload.namespace,
                &inventory::api_resource(kind),
            )
            .patch(&workload.name, &params, &Patch::Strategic(patch)),
        )
        .await;
        match result {
            Ok(patched) => {
                info!(workload = %workload, restarted_at = %stamp, "non-compliant workload restarted so its pods pass the webhook");
                self.emit(ReconcileEvent::Restarted(&workload));
                if !report.restarted.contains(&workload) {
                    report.restarted.push(workload.clone());
                }
                let object = serde_json::to_value(&patched).unwrap_or(object);
                Ok(Some(Restarted {
                    workload,
                    object,
                    stamp,
                    at,
                }))
            }
            Err(e) if e.is_rbac() => Err(e),
            Err(e) => {
                let error = e.to_string();
                warn!(workload = %workload, %error, "could not restart");
                self.emit(ReconcileEvent::RestartFailed {
                    workload: &workload,
                    error: &error,
                });
                report.failed.push((workload, error));
                Ok(None)
            }
        }
    }

    /// Checks the new pods of every restart until each passes or fails, or the checks run out.
    /// Returns the failing ones with the reason.
    async fn verify(
        &self,
        restarted: Vec<Restarted>,
        report: &mut ReconcileReport,
    ) -> Result<Vec<(Restarted, String)>, ClusterError> {
        let mut pending = Vec::new();
        for restart in restarted {
            match rollout::no_new_pods_expected(&restart.object) {
                Some(why) => {
                    warn!(workload = %restart.workload, "restarted, but no new pods to check: {why}")
                }
                None => pending.push(restart),
            }
        }
        // Each pending restart with the error of its last check, if that check failed.
        let mut pending: Vec<(Restarted, Option<String>)> =
            pending.into_iter().map(|r| (r, None)).collect();
        let mut failing = Vec::new();
        let mut delays = self.config.timing.rollout.delays();
        let mut waited = Duration::ZERO;
        while !pending.is_empty() {
            let Some(delay) = delays.next() else {
                for (restart, error) in pending.drain(..) {
                    let mut reason = format!(
                        "no pod of the restarted template appeared within {:.1}s",
                        waited.as_secs_f64()
                    );
                    if let Some(error) = error {
                        reason.push_str(&format!(" (the last check failed: {error})"));
                    }
                    failing.push((restart, reason));
                }
                break;
            };
            tokio::time::sleep(delay).await;
            waited += delay;
            let mut still_pending = Vec::new();
            for (restart, _) in pending {
                match rollout::check(&self.client, &restart).await {
                    Ok(Rollout::Passing) => {
                        info!(workload = %restart.workload, "the restarted workload's new pods pass restricted");
                        self.emit(ReconcileEvent::Verified(&restart.workload));
                        report.verified.push(restart.workload.clone());
                    }
                    Ok(Rollout::Failing(reason)) => failing.push((restart, reason)),
                    Ok(Rollout::Pending) => still_pending.push((restart, None)),
                    Err(e) if e.is_rbac() => return Err(e),
                    // One failed read says nothing about the rollout: checked again after the
                    // next wait, as long as checks are left.
                    Err(e) => {
                        let error = e.to_string();
                        warn!(workload = %restart.workload, %error, "cannot check the restarted workload's new pods; checking again");
                        still_pending.push((restart, Some(error)));
                    }
                }
            }
            pending = still_pending;
        }
        for (restart, reason) in &failing {
            warn!(workload = %restart.workload, %reason, "restarted workload still fails");
            self.emit(ReconcileEvent::StillFailing {
                workload: &restart.workload,
                reason,
            });
        }
        Ok(failing)
    }
}

/// Moves the workload `uid`, if it was failing, to the settled failures: no later round restarts it
/// again, and the reason says why.
fn settle(
    failing: &mut BTreeMap<String, (WorkloadRef, String)>,
    settled: &mut Vec<(WorkloadRef, String)>,
    uid: &str,
    why: &str,
) {
    if let Some((workload, reason)) = failing.remove(uid) {
        warn!(workload = %workload, %reason, "restarted workload still fails and is not restarted again: {why}");
        settled.push((workload, format!("{reason}; not restarted again: {why}")));
    }
}

/// Waits until `ready` is true (this replica serves reviews with its certificate injected), takes
/// the Lease (waiting while another replica holds it), reconciles under it with the live `policy`,
/// and releases it. The lease is renewed while the reconcile runs, and the reconcile stops before
/// its next restart if the lease is lost. A later run by another replica is harmless: the restarts
/// made templates compliant, so nothing is restarted twice.
///
/// Returns `Ok(None)` when `ready`'s sender is dropped before becoming true.
pub async fn reconcile_as_leader(
    client: kube::Client,
    lease: LeaseConfig,
    config: ReconcileConfig,
    policy: watch::Receiver<Arc<Policy>>,
    mut ready: watch::Receiver<bool>,
    observer: impl Fn(&ReconcileEvent<'_>) + Send + Sync + 'static,
) -> Result<Option<ReconcileReport>, ClusterError> {
    if ready.wait_for(|r| *r).await.is_err() {
        return Ok(None);
    }
    let retry = lease.retry_period;
    let lease_name = lease.lease_name.clone();
    let elector = Arc::new(LeaderElector::new(client.clone(), lease));
    loop {
        match elector.try_acquire().await {
            Ok(true) => break,
            Ok(false) => {}
            Err(e) if e.is_rbac() => return Err(e),
            // A transient error (5xx, timeout) is no reason to give up reconciling for the life of
            // the pod: the next attempt follows the candidates' retry period.
            Err(e) => warn!(error = %e, "cannot take the reconcile lease; retrying"),
        }
        tokio::time::sleep(retry).await;
    }
    let hold = LeaseHold::start(elector.clone());
    let mut reconciler = Reconciler::new(client, config, policy).with_observer(observer);
    reconciler.leadership = Some((lease_name, hold.watch()));
    let result = reconciler.run().await;
    drop(hold);
    if let Err(e) = elector.release().await {
        warn!(error = %e, "cannot release the reconcile lease (it expires by itself)");
    }
    result.map(Some)
}

/// Reconciles as leader once this replica is ready ([`reconcile_as_leader`]), then again after
/// every change of the policy until its sender is dropped: the policy is hot-reloaded, and a rule
/// for another namespace or a profile that now applies would otherwise reach only the pods created
/// from then on, leaving the pods the host already rejects where they are. A pass that fails is
/// logged and the next change tries again; a missing permission stops it, as no change can fix it.
pub async fn reconcile_on_every_policy(
    client: kube::Client,
    lease: LeaseConfig,
    config: ReconcileConfig,
    mut policy: watch::Receiver<Arc<Policy>>,
    ready: watch::Receiver<bool>,
    observer: impl Fn(&ReconcileEvent<'_>) + Send + Sync + 'static,
) -> Result<(), ClusterError> {
    let observer = Arc::new(observer);
    loop {
        // Marked seen before the pass: a change during it is a reason for one more.
        policy.borrow_and_update();
        let observer = observer.clone();
        match reconcile_as_leader(
            client.clone(),
            lease.clone(),
            config.clone(),
            policy.clone(),
            ready.clone(),
            move |event: &ReconcileEvent<'_>| observer(event),
        )
        .await
        {
            Ok(Some(report)) => info!(?report, "reconciled existing workloads"),
            Ok(None) => return Ok(()),
            Err(error) if error.is_rbac() => {
                tracing::error!(%error, "reconcile of existing workloads stopped: a permission is missing");
                return Err(error);
            }
            Err(error) => {
                warn!(%error, "reconcile of existing workloads failed; the next policy change tries again");
            }
        }
        if policy.changed().await.is_err() {
            return Ok(());
        }
        info!("the policy changed: reconciling existing workloads under it");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(spec: Value, labels: Value) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d", "uid": "u"},
            "spec": {"template": {"metadata": {"labels": labels}, "spec": spec}}})
    }

    fn verdict(policy: &Policy, object: &Value) -> &'static str {
        match classify(policy, KINDS[0], "cattle-system", object) {
            Verdict::Skip => "skip",
            Verdict::Report => "report",
            Verdict::Unfixable(_) => "unfixable",
            Verdict::Restart(_) => "restart",
        }
    }

    #[test]
    fn a_restart_needs_failing_pods_a_profile_and_no_denial() {
        let builtin = Policy::builtin();
        let plain = json!({"containers": [{"name": "c", "image": "busybox"}]});
        assert_eq!(
            verdict(&builtin, &deployment(plain.clone(), json!({}))),
            "restart"
        );
        let opted_out = deployment(plain.clone(), json!({OPT_OUT_LABEL: "true"}));
        assert_eq!(verdict(&builtin, &opted_out), "skip");
        let privileged = json!({"containers": [{"name": "c", "image": "busybox",
            "securityContext": {"privileged": true}}]});
        assert_eq!(
            verdict(&builtin, &deployment(privileged, json!({}))),
            "unfixable"
        );
        let leave_alone = Policy::from_yaml(
            "rules:\n  - name: system\n    match: {namespaces: [cattle-system]}\n    profile: none\n",
        )
        .unwrap();
        assert_eq!(verdict(&leave_alone, &deployment(plain, json!({}))), "skip");
    }

    #[test]
    fn actions_have_stable_labels() {
        let w = WorkloadRef {
            api_version: "apps/v1",
            kind: "Deployment",
            namespace: "n".into(),
            name: "d".into(),
            uid: "u".into(),
        };
        assert_eq!(ReconcileEvent::Restarted(&w).action(), "restarted");
        assert_eq!(
            ReconcileEvent::WaitingForWebhook {
                namespace: "n",
                attempt: 1,
                reason: "r",
                next_in: Duration::ZERO
            }
            .action(),
            "waiting-for-webhook"
        );
        assert_eq!(
            ReconcileEvent::StillFailing {
                workload: &w,
                reason: "r"
            }
            .workload(),
            Some(&w)
        );
    }
}
