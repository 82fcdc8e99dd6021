//! Writes the audit as `wgpolicyk8s.io/v1alpha2` PolicyReports (built by
//! [`crate::audit::report`]), by server-side apply with field manager `restrictor`, only where
//! the cluster serves the CRD; and the periodic task the webhook runs to keep them current.
//!
//! RBAC: `get`, `patch` and `create` on `policyreports.wgpolicyk8s.io` named `restrictor` in the
//! reported namespaces (an apply that creates the report is authorized as `create` as well), plus
//! what [`super::inventory`] lists. API discovery of the group needs no grant beyond the default
//! `system:discovery`. The periodic task also needs `get`/`update` on its Lease and `create` on
//! leases in restrictor's namespace.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use time::OffsetDateTime;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::errors::{ApiCall, ClusterError};
use super::inventory::{self, InventoryError, Namespaces};
use super::lease::{LeaderElector, LeaseConfig, LeaseHold};
use crate::audit::{self, Audit, report};
use crate::policy::Policy;
use crate::server::GoDuration;

/// The field manager of restrictor's applies.
pub const FIELD_MANAGER: &str = "restrictor";

/// Flags of `restrictor serve` for the periodic PolicyReports (flattened into its command).
#[derive(Debug, Clone, Args)]
pub struct ReportsArgs {
    /// Keep one wgpolicyk8s.io/v1alpha2 PolicyReport per namespace with the audit of its
    /// pod-bearing objects (when the CRD is installed).
    #[arg(long, env = "RESTRICTOR_REPORTS")]
    pub reports: bool,
    /// How often the reports are rebuilt (also on every policy change).
    #[arg(long, env = "RESTRICTOR_REPORTS_INTERVAL", default_value = "1h")]
    pub reports_interval: GoDuration,
    /// Namespaces to report on; all namespaces when empty.
    #[arg(long, env = "RESTRICTOR_REPORTS_NAMESPACES", value_delimiter = ',')]
    pub reports_namespaces: Vec<String>,
    /// The Lease that elects the one replica writing the reports.
    #[arg(
        long,
        env = "RESTRICTOR_REPORTS_LEASE_NAME",
        default_value = "restrictor-reports"
    )]
    pub reports_lease_name: String,
}

impl ReportsArgs {
    /// The namespaces to list, as [`run_periodic_reports`] takes them.
    pub fn scope(&self) -> Namespaces {
        if self.reports_namespaces.is_empty() {
            Namespaces::All
        } else {
            Namespaces::Only(self.reports_namespaces.clone())
        }
    }

    /// The reports Lease in restrictor's `namespace`, held by `identity` while it writes.
    pub fn lease(&self, namespace: String, identity: String) -> LeaseConfig {
        LeaseConfig {
            // A pass every `reports_interval` needs no 5-second failover: a longer lease means a
            // renewal every 20 s instead of every 5 s, and a new writer within a minute.
            lease_duration: time::Duration::seconds(60),
            ..LeaseConfig::new(namespace, self.reports_lease_name.clone(), identity)
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReportsError {
    #[error("cannot tell whether the cluster serves wgpolicyk8s.io/v1alpha2: {0}")]
    Discovery(String),
    #[error(transparent)]
    Api(#[from] Box<ClusterError>),
    #[error("cannot encode the PolicyReport for namespace {namespace:?}: {message}")]
    Encode { namespace: String, message: String },
}

/// What a write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportsOutcome {
    /// The cluster does not serve the PolicyReport CRD: nothing was written.
    CrdAbsent,
    /// Reports applied (new or changed) and reports already current (no request sent).
    Written { applied: usize, unchanged: usize },
}

impl fmt::Display for ReportsOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::CrdAbsent => write!(
                f,
                "PolicyReports not written: the cluster does not serve {}/{} (install the wg-policy PolicyReport CRD, e.g. with Kyverno or Kubewarden, to get them)",
                report::PLURAL,
                report::API_VERSION
            ),
            Self::Written { applied, unchanged } => write!(
                f,
                "PolicyReports {}/{} {:?}: {applied} applied, {unchanged} already current",
                report::PLURAL,
                report::API_VERSION,
                report::REPORT_NAME
            ),
        }
    }
}

/// Whether the cluster serves `policyreports` in `wgpolicyk8s.io/v1alpha2` (API discovery).
pub async fn crd_served(client: &kube::Client) -> Result<bool, ReportsError> {
    match client.list_api_group_resources(report::API_VERSION).await {
        Ok(list) => Ok(list
            .resources
            .iter()
            .any(|resource| resource.name == report::PLURAL)),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(false),
        Err(error) => Err(ReportsError::Discovery(error.to_string())),
    }
}

fn api_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(report::GROUP, report::VERSION, report::KIND),
        report::PLURAL,
    )
}

fn call(verb: &'static str, namespace: &str) -> ApiCall {
    ApiCall::new(verb, report::GROUP, report::PLURAL)
        .name(report::REPORT_NAME)
        .namespace(namespace)
}

/// Writes one report per namespace of `audit` (and per namespace of `scope`, empty if nothing is
/// there), skipping those already current; nothing at all when the CRD is absent.
pub async fn write_reports(
    client: &kube::Client,
    audit: &Audit,
    scope: &[String],
) -> Result<ReportsOutcome, ReportsError> {
    if !crd_served(client).await? {
        return Ok(ReportsOutcome::CrdAbsent);
    }
    apply_reports(client, audit, scope).await
}

/// [`write_reports`] where the CRD is known to be served.
async fn apply_reports(
    client: &kube::Client,
    audit: &Audit,
    scope: &[String],
) -> Result<ReportsOutcome, ReportsError> {
    let (mut applied, mut unchanged) = (0, 0);
    for mut desired in report::policy_reports(audit, scope, OffsetDateTime::now_utc()) {
        let namespace = desired["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let api: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), &namespace, &api_resource());
        let existing = api
            .get_opt(report::REPORT_NAME)
            .await
            .map_err(|e| Box::new(ClusterError::from_kube(call("get", &namespace), e)))?;
        if let Some(existing) = existing {
            let existing =
                serde_json::to_value(&existing).map_err(|error| ReportsError::Encode {
                    namespace: namespace.clone(),
                    message: error.to_string(),
                })?;
            report::keep_timestamps(&mut desired, &existing);
            if report::is_current(&desired, &existing) {
                unchanged += 1;
                continue;
            }
        }
        let params = PatchParams::apply(FIELD_MANAGER).force();
        api.patch(report::REPORT_NAME, &params, &Patch::Apply(&desired))
            .await
            .map_err(|e| Box::new(ClusterError::from_kube(call("patch", &namespace), e)))?;
        applied += 1;
    }
    Ok(ReportsOutcome::Written { applied, unchanged })
}

/// Lists, audits and writes once.
async fn report_once(
    client: &kube::Client,
    policy: &Policy,
    namespaces: &Namespaces,
    previously: &BTreeSet<String>,
) -> Result<(ReportsOutcome, BTreeSet<String>), PeriodicError> {
    if !crd_served(client).await? {
        return Ok((ReportsOutcome::CrdAbsent, BTreeSet::new()));
    }
    let objects = inventory::list_pod_bearing(client, namespaces).await?;
    let audit = audit::audit(policy, &objects);
    // Namespaces reported last time but empty now get an empty report, not a stale one.
    let mut scope: BTreeSet<String> = previously.clone();
    if let Namespaces::Only(names) = namespaces {
        scope.extend(names.iter().cloned());
    }
    let scope: Vec<String> = scope.into_iter().collect();
    // The CRD was found served above, before the inventory: one discovery per pass.
    let outcome = apply_reports(client, &audit, &scope).await?;
    let reported = audit
        .objects
        .iter()
        .map(|entry| entry.object.namespace.clone())
        .collect();
    Ok((outcome, reported))
}

#[derive(Debug, thiserror::Error)]
enum PeriodicError {
    #[error(transparent)]
    Inventory(#[from] InventoryError),
    #[error(transparent)]
    Reports(#[from] ReportsError),
}

/// Keeps the PolicyReports current: a pass at start, then every `interval` and whenever the
/// policy changes, until the policy's sender is dropped. Only the replica holding `lease` lists
/// and writes (every replica of the webhook runs this task, and each pass lists every
/// pod-bearing object in scope); the others stand by and try for the lease once per lease
/// duration, so a writer that is gone (rolled, crashed) is replaced, and its successor writes at
/// once, within about two lease durations rather than one interval. Without the CRD it writes
/// nothing and says so in one log line (and once more when the CRD appears); failures are logged
/// and retried at the next pass.
pub async fn run_periodic_reports(
    client: kube::Client,
    mut policy: watch::Receiver<Arc<Policy>>,
    namespaces: Namespaces,
    interval: Duration,
    lease: LeaseConfig,
) {
    let standby_retry = std::time::Duration::try_from(lease.lease_duration)
        .unwrap_or(interval)
        .min(interval);
    let mut writer = Writer::new(LeaderElector::new(client.clone(), lease));
    let mut crd_absent_logged = false;
    let mut previously = BTreeSet::new();
    loop {
        let current = policy.borrow_and_update().clone();
        if writer.holds_lease().await {
            match report_once(&client, &current, &namespaces, &previously).await {
                Ok((ReportsOutcome::CrdAbsent, _)) => {
                    if !crd_absent_logged {
                        warn!(
                            "{}; checking again every {}s",
                            ReportsOutcome::CrdAbsent,
                            interval.as_secs()
                        );
                        crd_absent_logged = true;
                    } else {
                        debug!("PolicyReport CRD still absent");
                    }
                }
                Ok((outcome, reported)) => {
                    if crd_absent_logged {
                        info!("the PolicyReport CRD is now served: writing reports");
                        crd_absent_logged = false;
                    }
                    info!(%outcome, "policy reports");
                    previously = reported;
                }
                Err(error) => {
                    warn!(%error, "policy reports not written; retrying at the next pass")
                }
            }
        } else {
            // What this replica wrote before another one took over is no guide to what it must
            // empty once it writes again: it starts from what it finds then.
            previously.clear();
        }
        let next_pass = if writer.hold.is_some() {
            interval
        } else {
            standby_retry
        };
        tokio::select! {
            () = tokio::time::sleep(next_pass) => {}
            changed = policy.changed() => {
                if changed.is_err() {
                    writer.release().await;
                    info!("policy reports: stopped");
                    return;
                }
            }
        }
    }
}

/// This replica's claim to write the reports: the Lease, renewed in the background once won.
struct Writer {
    elector: Arc<LeaderElector>,
    hold: Option<LeaseHold>,
    standing_by_logged: bool,
}

impl Writer {
    fn new(elector: LeaderElector) -> Self {
        Self {
            elector: Arc::new(elector),
            hold: None,
            standing_by_logged: false,
        }
    }

    /// Whether this replica writes this pass: it holds the lease still, or wins it now.
    async fn holds_lease(&mut self) -> bool {
        if self
            .hold
            .as_ref()
            .is_some_and(|hold| *hold.watch().borrow())
        {
            return true;
        }
        self.hold = None;
        match self.elector.try_acquire().await {
            Ok(true) => {
                info!(lease = %self.elector.lease_name(), "this replica writes the policy reports");
                self.hold = Some(LeaseHold::start(self.elector.clone()));
                self.standing_by_logged = false;
                true
            }
            Ok(false) => {
                if self.standing_by_logged {
                    debug!("policy reports: another replica still holds the lease");
                } else {
                    info!(lease = %self.elector.lease_name(), "another replica writes the policy reports; this one stands by");
                    self.standing_by_logged = true;
                }
                false
            }
            Err(error) => {
                warn!(%error, "cannot take the policy reports lease; trying again at the next pass");
                false
            }
        }
    }

    /// Gives the lease up, so another replica's next pass takes over without waiting for it to
    /// expire.
    async fn release(&mut self) {
        if self.hold.take().is_some()
            && let Err(error) = self.elector.release().await
        {
            warn!(%error, "cannot release the policy reports lease (it expires by itself)");
        }
    }
}
