//! Everything that talks to the Kubernetes API: self-managed TLS material (Secret, `caBundle`
//! injection, rotation), leader election, reconcile of workloads created before restrictor, and
//! uninstall.
//!
//! # Wiring (for `main.rs`)
//!
//! ```ignore
//! let client = kube::Client::try_default().await?;
//! let (serving_tx, serving_rx) = tokio::sync::watch::channel(None);   // -> TLS server
//! let (injected_tx, injected_rx) = tokio::sync::watch::channel(false); // -> /readyz
//! let certs = SelfManagedCerts::new(client.clone(), SelfManagedConfig::new(ns, service, secret, webhook_config));
//! tokio::spawn(certs.run(serving_tx, injected_tx));
//! // ready = serving_rx.borrow().is_some() && *injected_rx.borrow()
//! if reconcile_existing {
//!     let lease = LeaseConfig::new(ns, lease_name, pod_name);
//!     // `policy_rx`: the server's `watch::Receiver<Arc<Policy>>`, so a reload reaches the reconcile.
//!     let config = ReconcileConfig { namespaces, ..Default::default() };
//!     // Once ready, and again after every policy change.
//!     tokio::spawn(reconcile_on_every_policy(client, lease, config, policy_rx, injected_rx, |event| {
//!         // count event.action(), post a Kubernetes Event on event.workload()
//!     }));
//! }
//! // `restrictor uninstall`: cluster::uninstall(client, &webhook_config).await?
//! ```
//!
//! # API calls (what the chart's RBAC must grant)
//!
//! * `secrets` in the own namespace: `get`, `update`, `list` + `watch` (name `--secret`: the
//!   watcher lists and watches with a `metadata.name` field selector, which RBAC authorizes by
//!   name), `create` (cannot be limited by name).
//! * `mutatingwebhookconfigurations.admissionregistration.k8s.io`: `get`, `patch`, `list` +
//!   `watch` (by name, field selector) for serving; `delete` for uninstall.
//! * `leases.coordination.k8s.io` in the own namespace: `get`, `update` (name `--lease-name`),
//!   `create`.
//! * Reconcile only: `list` of `deployments`, `statefulsets`, `daemonsets` (apps) with `patch` of
//!   them; `list` of `jobs` (batch) and `pods`; `create` of `pods`, always with `dryRun=All` (the
//!   admission probe); `list` of `events` (why a restarted workload's pods were not created); in
//!   the reconciled namespaces.

pub mod errors;
pub mod events;
pub mod inventory;
pub mod lease;
pub mod probe;
pub mod reconcile;
pub mod reports;
mod rollout;
mod secret;
pub mod webhook_config;

use std::fmt::Debug;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use serde::de::DeserializeOwned;
use time::OffsetDateTime;
use tokio::sync::{Notify, watch};
use tracing::{debug, error, info, warn};

use crate::certs::{self, CertPolicy, Phase, ServingPem, Step};
pub use errors::{ApiCall, ClusterError};
pub use lease::{LeaderElector, LeaseConfig};
pub use reconcile::{
    BackoffConfig, ReconcileConfig, ReconcileEvent, ReconcileReport, ReconcileTiming, Reconciler,
    WorkloadRef, reconcile_as_leader, reconcile_on_every_policy,
};
pub use webhook_config::uninstall;

/// A source of "now"; tests inject a controllable one.
pub type Clock = Arc<dyn Fn() -> OffsetDateTime + Send + Sync>;

/// The wall clock.
pub fn system_clock() -> Clock {
    Arc::new(OffsetDateTime::now_utc)
}

/// Configuration of [`SelfManagedCerts`].
#[derive(Debug, Clone)]
pub struct SelfManagedConfig {
    /// Namespace of restrictor (the Service, the Secret, the Lease).
    pub namespace: String,
    /// Name of the webhook Service: the certificate is issued for its DNS names.
    pub service: String,
    /// Name of the Secret holding the material.
    pub secret_name: String,
    /// Name of the MutatingWebhookConfiguration whose `caBundle`s are injected.
    pub webhook_config_name: String,
    /// Certificate lifetimes.
    pub policy: CertPolicy,
}

impl SelfManagedConfig {
    /// Configuration with the default lifetimes (CA 10 years, serving 1 year).
    pub fn new(
        namespace: impl Into<String>,
        service: impl Into<String>,
        secret_name: impl Into<String>,
        webhook_config_name: impl Into<String>,
    ) -> Self {
        Self {
            namespace: namespace.into(),
            service: service.into(),
            secret_name: secret_name.into(),
            webhook_config_name: webhook_config_name.into(),
            policy: CertPolicy::default(),
        }
    }
}

/// What one [`SelfManagedCerts::sync_once`] pass saw and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncOutcome {
    /// Rotation steps written to the Secret during this pass.
    pub steps: Vec<Step>,
    pub phase: Phase,
    /// Whether every webhook's `caBundle` carries the Secret's bundle.
    pub injected: bool,
    /// When the schedule needs another pass (`None`: only an event can make progress).
    pub next_deadline: Option<OffsetDateTime>,
}

/// The self-managed TLS task: keeps the Secret, the published serving material and the webhook
/// configuration's `caBundle` in step, and runs the rotation schedule of [`crate::certs`].
pub struct SelfManagedCerts {
    config: SelfManagedConfig,
    dns_names: Vec<String>,
    store: secret::SecretStore,
    secrets: Api<Secret>,
    webhooks: Api<MutatingWebhookConfiguration>,
    clock: Clock,
}

impl SelfManagedCerts {
    pub fn new(client: kube::Client, config: SelfManagedConfig) -> Self {
        Self {
            dns_names: certs::service_dns_names(&config.service, &config.namespace),
            store: secret::SecretStore::new(client.clone(), &config.namespace, &config.secret_name),
            secrets: Api::namespaced(client.clone(), &config.namespace),
            webhooks: Api::all(client),
            config,
            clock: system_clock(),
        }
    }

    /// Replaces the clock (tests drive rotation with it).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// One pass at the clock's "now": read (or create) the Secret, publish the serving material,
    /// inject the bundle, and perform every rotation step that is due, each written to the Secret
    /// with its `resourceVersion` (on a conflict the Secret is read again and the plan redone).
    pub async fn sync_once(
        &self,
        serving: &watch::Sender<Option<ServingPem>>,
        injected: &watch::Sender<bool>,
    ) -> Result<SyncOutcome, ClusterError> {
        let now = (self.clock)();
        let policy = &self.config.policy;
        let mut stored = self
            .store
            .load_or_create(&self.dns_names, now, policy)
            .await?;
        let mut steps = Vec::new();
        let mut conflicts = 0;
        loop {
            publish(serving, &stored.state);
            let bundle = stored.state.ca_bundle();
            let is_injected = webhook_config::ensure_ca_bundle(
                &self.webhooks,
                &self.config.webhook_config_name,
                bundle.as_bytes(),
            )
            .await?;
            injected.send_if_modified(|v| std::mem::replace(v, is_injected) != is_injected);
            let plan = certs::plan(&stored.state, &self.dns_names, now, is_injected, policy);
            let Some(step) = plan.step.filter(|_| steps.len() < 8) else {
                return Ok(SyncOutcome {
                    steps,
                    phase: stored.state.phase(),
                    injected: is_injected,
                    next_deadline: plan.next_deadline,
                });
            };
            let next = stored.state.apply(step, &self.dns_names, now, policy)?;
            match self.store.update(&stored, next).await {
                Ok(written) => {
                    info!(?step, phase = written.state.phase().as_str(), secret = %self.config.secret_name, "certificate rotation step written");
                    stored = written;
                    steps.push(step);
                }
                Err(e) if e.is_conflict() && conflicts < 5 => {
                    conflicts += 1;
                    debug!(?step, "the Secret changed under us; reading it again");
                    stored = self
                        .store
                        .load_or_create(&self.dns_names, now, policy)
                        .await?;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Runs forever (until the serving channel's receivers are all gone): a pass at start, then
    /// one at every schedule deadline, every change of the Secret (another replica rotated) and
    /// every change of the webhook configuration (someone overwrote `caBundle`). Errors are logged
    /// and retried with backoff.
    pub async fn run(
        self,
        serving: watch::Sender<Option<ServingPem>>,
        injected: watch::Sender<bool>,
    ) {
        let poke = Arc::new(Notify::new());
        let secret_watch = tokio::spawn(watch_named(
            self.secrets.clone(),
            self.config.secret_name.clone(),
            ApiCall::new("watch", "", "secrets")
                .name(&self.config.secret_name)
                .namespace(&self.config.namespace),
            poke.clone(),
        ));
        let webhook_watch = tokio::spawn(watch_named(
            self.webhooks.clone(),
            self.config.webhook_config_name.clone(),
            webhook_config::api_call("watch", &self.config.webhook_config_name),
            poke.clone(),
        ));
        let mut backoff = std::time::Duration::from_secs(1);
        while !serving.is_closed() {
            let wait = match self.sync_once(&serving, &injected).await {
                Ok(outcome) => {
                    backoff = std::time::Duration::from_secs(1);
                    let now = (self.clock)();
                    match outcome.next_deadline {
                        Some(deadline) => {
                            let secs = (deadline - now).whole_seconds().clamp(1, 3600);
                            std::time::Duration::from_secs(secs as u64)
                        }
                        None => std::time::Duration::from_secs(10),
                    }
                }
                Err(e) => {
                    error!(error = %e, "self-managed certificates: sync failed");
                    let wait = backoff;
                    backoff = (backoff * 2).min(std::time::Duration::from_secs(60));
                    wait
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = poke.notified() => {}
                _ = serving.closed() => {}
            }
        }
        secret_watch.abort();
        webhook_watch.abort();
        info!("self-managed certificates: stopped");
    }
}

fn publish(serving: &watch::Sender<Option<ServingPem>>, state: &certs::CertState) {
    let pem = state.serving_pem();
    let changed = serving.send_if_modified(|current| {
        if current.as_ref() == Some(&pem) {
            false
        } else {
            *current = Some(pem.clone());
            true
        }
    });
    if changed {
        info!("published new serving certificate");
    }
}

/// Watches one object by name (a `metadata.name` field selector, so RBAC can limit the list and
/// the watch to that name) and pokes `notify` whenever it changes, appears or disappears.
/// `kube::runtime::watcher` lists, watches from the listed `resourceVersion`, re-lists after 410
/// Gone, and its default backoff spaces out retries while the API server refuses.
async fn watch_named<K>(api: Api<K>, name: String, what: ApiCall, notify: Arc<Notify>)
where
    K: kube::Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut events = std::pin::pin!(watcher::watcher(api, config).default_backoff());
    while let Some(event) = events.next().await {
        match event {
            Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_) | watcher::Event::InitDone) => {
                notify.notify_one();
            }
            Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => {}
            Err(error) => {
                warn!(error = %watch_error(&what, error), "watch failed; retrying with backoff")
            }
        }
    }
}

/// The watcher's error with the call it came from (a 403 names the missing permission).
fn watch_error(what: &ApiCall, error: watcher::Error) -> ClusterError {
    match error {
        watcher::Error::InitialListFailed(e) => {
            let list = ApiCall {
                verb: "list",
                ..what.clone()
            };
            ClusterError::from_kube(list, e)
        }
        watcher::Error::WatchStartFailed(e) | watcher::Error::WatchFailed(e) => {
            ClusterError::from_kube(what.clone(), e)
        }
        watcher::Error::WatchError(status) => {
            ClusterError::from_kube(what.clone(), kube::Error::Api(status))
        }
        other => ClusterError::Other(format!(
            "{} {} {}: {other}",
            what.verb,
            what.group_resource(),
            what.target()
        )),
    }
}
