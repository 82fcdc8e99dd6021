//! Writes the audit as `wgpolicyk8s.io/v1alpha2` PolicyReports (built by
//! [`crate::audit::report`]), by server-side apply with field manager `restrictor`, only where
//! the cluster serves the CRD; and the periodic task the webhook runs to keep them current.
//!
//! RBAC: `get`, `patch` and `create` on `policyreports.wgpolicyk8s.io` named `restrictor` in the
//! reported namespaces (an apply that creates the report is authorized as `create` as well), plus
//! what [`super::inventory`] lists. API discovery of the group needs no grant beyond the default
//! `system:discovery`.

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
    let outcome = write_reports(client, &audit, &scope).await?;
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
/// policy changes, until the policy's sender is dropped. Without the CRD it writes nothing and
/// says so in one log line (and once more when the CRD appears); failures are logged and retried
/// at the next pass.
pub async fn run_periodic_reports(
    client: kube::Client,
    mut policy: watch::Receiver<Arc<Policy>>,
    namespaces: Namespaces,
    interval: Duration,
) {
    let mut crd_absent_logged = false;
    let mut previously = BTreeSet::new();
    loop {
        let current = policy.borrow_and_update().clone();
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
            Err(error) => warn!(%error, "policy reports not written; retrying at the next pass"),
        }
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            changed = policy.changed() => {
                if changed.is_err() {
                    info!("policy reports: stopped");
                    return;
                }
            }
        }
    }
}
