//! Leader election with a `coordination.k8s.io/v1` Lease, so only one replica reconciles (and
//! only one writes the PolicyReports, under a Lease of its own).

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ObjectMeta, PostParams};
use std::sync::Arc;

use time::{Duration, OffsetDateTime};
use tokio::sync::watch;
use tracing::{debug, error, info, warn};

use super::errors::{ApiCall, ClusterError, call};
use super::{Clock, system_clock};

/// Configuration of [`LeaderElector`].
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    /// Namespace of the Lease (restrictor's own).
    pub namespace: String,
    /// Name of the Lease (`--lease-name`).
    pub lease_name: String,
    /// This replica's identity (the pod name).
    pub identity: String,
    /// How long a holder that stops renewing keeps the lease (default 15 s); the holder itself
    /// gives it up after [`renew_deadline`] of failed renewals.
    pub lease_duration: Duration,
    /// How often a candidate retries while another replica holds the lease (default 2 s).
    pub retry_period: std::time::Duration,
}

impl LeaseConfig {
    pub fn new(
        namespace: impl Into<String>,
        lease_name: impl Into<String>,
        identity: impl Into<String>,
    ) -> Self {
        Self {
            namespace: namespace.into(),
            lease_name: lease_name.into(),
            identity: identity.into(),
            lease_duration: Duration::seconds(15),
            retry_period: std::time::Duration::from_secs(2),
        }
    }
}

/// Acquires, renews and releases the Lease. Every update carries the `resourceVersion` read just
/// before, so two candidates can never both win.
pub struct LeaderElector {
    api: Api<Lease>,
    config: LeaseConfig,
    clock: Clock,
}

fn micro(t: OffsetDateTime) -> Option<MicroTime> {
    Timestamp::from_nanosecond(t.unix_timestamp_nanos())
        .ok()
        .map(MicroTime)
}

fn from_micro(t: &MicroTime) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(t.0.as_nanosecond()).ok()
}

impl LeaderElector {
    pub fn new(client: kube::Client, config: LeaseConfig) -> Self {
        Self {
            api: Api::namespaced(client, &config.namespace),
            config,
            clock: system_clock(),
        }
    }

    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    pub fn lease_name(&self) -> &str {
        &self.config.lease_name
    }

    fn call(&self, verb: &'static str) -> ApiCall {
        ApiCall::new(verb, "coordination.k8s.io", "leases")
            .name(&self.config.lease_name)
            .namespace(&self.config.namespace)
    }

    /// Acquires the lease, or renews it when already held. `Ok(false)` while another replica holds
    /// a lease that has not expired (or won a race for it).
    pub async fn try_acquire(&self) -> Result<bool, ClusterError> {
        let now = (self.clock)();
        let name = &self.config.lease_name;
        let me = &self.config.identity;
        let duration_secs = i32::try_from(self.config.lease_duration.whole_seconds()).unwrap_or(15);
        let Some(mut lease) = call(self.call("get"), self.api.get_opt(name)).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(self.config.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(me.clone()),
                    lease_duration_seconds: Some(duration_secs),
                    acquire_time: micro(now),
                    renew_time: micro(now),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return match call(
                self.call("create"),
                self.api.create(&PostParams::default(), &lease),
            )
            .await
            {
                Ok(_) => {
                    info!(lease = %name, identity = %me, "acquired the lease (created it)");
                    Ok(true)
                }
                Err(e) if e.is_conflict() => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let held_by_me = holder.as_deref() == Some(me.as_str());
        if !held_by_me && holder.is_some() {
            let renewed = spec.renew_time.as_ref().and_then(from_micro);
            let duration =
                Duration::seconds(spec.lease_duration_seconds.unwrap_or(duration_secs).into());
            if renewed.is_some_and(|r| now < r + duration) {
                debug!(lease = %name, holder = ?holder, "the lease is held by another replica");
                return Ok(false);
            }
        }
        if !held_by_me {
            spec.acquire_time = micro(now);
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.holder_identity = Some(me.clone());
        spec.lease_duration_seconds = Some(duration_secs);
        spec.renew_time = micro(now);
        match call(
            self.call("update"),
            self.api.replace(name, &PostParams::default(), &lease),
        )
        .await
        {
            Ok(_) => {
                if !held_by_me {
                    info!(lease = %name, identity = %me, previous = ?holder, "acquired the lease");
                }
                Ok(true)
            }
            Err(e) if e.is_conflict() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Gives the lease up (clears the holder) if this replica holds it.
    pub async fn release(&self) -> Result<(), ClusterError> {
        let name = &self.config.lease_name;
        let Some(mut lease) = call(self.call("get"), self.api.get_opt(name)).await? else {
            return Ok(());
        };
        let Some(spec) = lease.spec.as_mut() else {
            return Ok(());
        };
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.acquire_time = None;
        spec.renew_time = None;
        match call(
            self.call("update"),
            self.api.replace(name, &PostParams::default(), &lease),
        )
        .await
        {
            Ok(_) => {
                info!(lease = %name, "released the lease");
                Ok(())
            }
            Err(e) if e.is_conflict() => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// How long a holder keeps trying to renew before it gives the lease up: two thirds of the lease
/// duration, as client-go's renewDeadline (10 s) is to its leaseDuration (15 s). Giving up only
/// after the whole duration would let this replica act for up to one renew period after another
/// replica may legitimately have taken the lease over.
pub fn renew_deadline(lease_duration: Duration) -> Duration {
    lease_duration * 2 / 3
}

/// A lease this replica holds, renewed in the background until dropped. Whoever acts under it
/// checks [`LeaseHold::watch`] before each write, so a replica that lost the lease (another one
/// holds it, or renewals failed until the renew deadline) stops before another replica can take
/// it over.
pub struct LeaseHold {
    held: watch::Receiver<bool>,
    renewer: tokio::task::JoinHandle<()>,
}

impl LeaseHold {
    /// Starts renewing `elector`'s lease, which the caller has just acquired: every third of the
    /// lease duration (at least every second). Time since the last renewal is read from the
    /// elector's clock, the one that stamps `renewTime`.
    pub fn start(elector: Arc<LeaderElector>) -> Self {
        let (held_tx, held) = watch::channel(true);
        let lease_duration = elector.config.lease_duration;
        let deadline = renew_deadline(lease_duration);
        let renew_every = std::time::Duration::try_from(lease_duration / 3)
            .unwrap_or(std::time::Duration::from_secs(5))
            .max(std::time::Duration::from_secs(1));
        // Read now, not when the task first runs: the caller acquired the lease just before.
        let mut renewed = (elector.clock)();
        let renewer = tokio::spawn(async move {
            loop {
                tokio::time::sleep(renew_every).await;
                let attempt = (elector.clock)();
                // A conflict (someone touched the Lease) reads as "not acquired": read it once more
                // before concluding that another replica holds it. A hung call counts as failed.
                let outcome = tokio::time::timeout(renew_every, async {
                    match elector.try_acquire().await {
                        Ok(false) => elector.try_acquire().await,
                        other => other,
                    }
                })
                .await;
                match outcome {
                    Ok(Ok(true)) => renewed = attempt,
                    Ok(Ok(false)) => {
                        warn!(lease = %elector.config.lease_name, "lost the lease to another replica");
                        held_tx.send_replace(false);
                        return;
                    }
                    failed if (elector.clock)() - renewed >= deadline => {
                        let error = match failed {
                            Ok(Err(e)) => e.to_string(),
                            _ => "the renewal timed out".to_owned(),
                        };
                        error!(%error, lease = %elector.config.lease_name, "could not renew the lease within its renew deadline ({deadline}); giving it up before another replica may take it over");
                        held_tx.send_replace(false);
                        return;
                    }
                    Ok(Err(e)) => {
                        warn!(error = %e, lease = %elector.config.lease_name, "cannot renew the lease; retrying")
                    }
                    Err(_) => {
                        warn!(lease = %elector.config.lease_name, "renewing the lease timed out; retrying")
                    }
                }
            }
        });
        Self { held, renewer }
    }

    /// A receiver that turns false when the lease is lost.
    pub fn watch(&self) -> watch::Receiver<bool> {
        self.held.clone()
    }
}

impl Drop for LeaseHold {
    fn drop(&mut self) {
        self.renewer.abort();
    }
}
