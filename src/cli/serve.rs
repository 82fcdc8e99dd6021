//! `restrictor serve` and `restrictor uninstall`: the webhook server, wired to the self-managed
//! certificates and the reconcile of workloads that existed before restrictor.

use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use tokio::sync::watch;

use crate::admission::{DeniedPod, Summary};
use crate::cluster::events::{DeniedWorkload, EventSender, Notice};
use crate::cluster::{
    self, LeaseConfig, ReconcileConfig, ReconcileEvent, SelfManagedCerts, SelfManagedConfig,
    reconcile_on_every_policy,
};
use crate::policy::Policy;
use crate::server::{self, DeniedPodHook, Metrics, ServeArgs, Server, TlsSource};

#[derive(Debug, thiserror::Error)]
pub enum ServeCommandError {
    #[error(
        "no TLS material: give --tls-cert and --tls-key, or --self-managed-certs with --namespace, --service, --secret and --webhook-config"
    )]
    NoTls,
    #[error("{needed_by} needs {flag}")]
    MissingFlag {
        flag: &'static str,
        needed_by: &'static str,
    },
    #[error("cannot reach the Kubernetes API: {0}")]
    Client(String),
    #[error(transparent)]
    Serve(#[from] server::ServeError),
    #[error(transparent)]
    Cluster(#[from] Box<cluster::ClusterError>),
}

/// Flags of `restrictor serve`; each is also an environment variable.
#[derive(Debug, Args)]
pub struct ServeCommand {
    #[command(flatten)]
    pub server: ServeArgs,
    /// Create and rotate the CA and serving certificate in a Secret, and inject the CA into the
    /// webhook configuration's caBundle (needs in-cluster credentials).
    #[arg(long, env = "RESTRICTOR_SELF_MANAGED_CERTS", conflicts_with_all = ["tls_cert", "tls_key"])]
    pub self_managed_certs: bool,
    /// restrictor's own namespace (the Service, the Secret, the Lease).
    #[arg(long, env = "RESTRICTOR_NAMESPACE")]
    pub namespace: Option<String>,
    /// The webhook Service's name: the certificate is issued for its DNS names.
    #[arg(long, env = "RESTRICTOR_SERVICE")]
    pub service: Option<String>,
    /// The Secret that holds the CA and the serving certificate.
    #[arg(long, env = "RESTRICTOR_SECRET")]
    pub secret: Option<String>,
    /// The MutatingWebhookConfiguration whose caBundle restrictor keeps injected.
    #[arg(long, env = "RESTRICTOR_WEBHOOK_CONFIG")]
    pub webhook_config: Option<String>,
    /// Once ready, restart Deployments, StatefulSets and DaemonSets created before restrictor whose
    /// pod template fails restricted (one replica, holding a Lease), and report Jobs and bare Pods.
    #[arg(long, env = "RESTRICTOR_RECONCILE_EXISTING")]
    pub reconcile_existing: bool,
    /// Namespaces to reconcile; by default those the policy's rules name literally.
    #[arg(long, env = "RESTRICTOR_RECONCILE_NAMESPACES", value_delimiter = ',')]
    pub reconcile_namespaces: Vec<String>,
    /// The Lease that elects the reconciling replica.
    #[arg(
        long,
        env = "RESTRICTOR_LEASE_NAME",
        default_value = "restrictor-reconcile"
    )]
    pub lease_name: String,
    /// This replica's identity in the Lease.
    #[arg(long, env = "RESTRICTOR_POD_NAME")]
    pub pod_name: Option<String>,
    #[command(flatten)]
    pub reports: cluster::reports::ReportsArgs,
    #[command(flatten)]
    pub events: cluster::events::EventsArgs,
}

/// Flags of `restrictor uninstall`.
#[derive(Debug, Args)]
pub struct UninstallCommand {
    /// The MutatingWebhookConfiguration to delete.
    #[arg(long, env = "RESTRICTOR_WEBHOOK_CONFIG")]
    pub webhook_config: String,
}

async fn client() -> Result<kube::Client, ServeCommandError> {
    kube::Client::try_default()
        .await
        .map_err(|error| ServeCommandError::Client(error.to_string()))
}

fn required(
    value: &Option<String>,
    flag: &'static str,
    needed_by: &'static str,
) -> Result<String, ServeCommandError> {
    value
        .clone()
        .filter(|v| !v.is_empty())
        .ok_or(ServeCommandError::MissingFlag { flag, needed_by })
}

/// `--namespace` when `enabled` needs it, checked before anything starts.
fn namespace_for(
    command: &ServeCommand,
    enabled: bool,
    needed_by: &'static str,
) -> Result<Option<String>, ServeCommandError> {
    enabled
        .then(|| required(&command.namespace, "--namespace", needed_by))
        .transpose()
}

/// How long a stopping server waits for the report task to give its Lease up.
const REPORTS_STOP: Duration = Duration::from_secs(2);

/// Runs the webhook until SIGTERM (or Ctrl-C), then drains.
pub async fn serve(command: ServeCommand) -> Result<(), ServeCommandError> {
    server::install_crypto_provider();
    server::init_logging(command.server.log_format);

    // The Leases live in restrictor's own namespace.
    let reports_namespace = namespace_for(
        &command,
        command.reports.reports,
        "--reports (for its Lease)",
    )?;
    let reconcile_namespace = namespace_for(
        &command,
        command.reconcile_existing,
        "--reconcile-existing (for its Lease)",
    )?;

    let mut background = Vec::new();
    let mut cluster_client = None;
    let (tls, injected) = match command.server.tls_files() {
        Some(files) => (files, None),
        None if command.self_managed_certs => {
            let by = "--self-managed-certs";
            let config = SelfManagedConfig::new(
                required(&command.namespace, "--namespace", by)?,
                required(&command.service, "--service", by)?,
                required(&command.secret, "--secret", by)?,
                required(&command.webhook_config, "--webhook-config", by)?,
            );
            let client = client().await?;
            let (serving_tx, serving_rx) = watch::channel(None);
            let (injected_tx, injected_rx) = watch::channel(false);
            let manager = SelfManagedCerts::new(client.clone(), config);
            background.push(tokio::spawn(manager.run(serving_tx, injected_tx)));
            cluster_client = Some(client);
            (TlsSource::Channel(serving_rx), Some(injected_rx))
        }
        None => return Err(ServeCommandError::NoTls),
    };

    let identity = command
        .pod_name
        .clone()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| format!("restrictor-{}", std::process::id()));
    if cluster_client.is_none()
        && (command.reconcile_existing || command.reports.reports || command.events.events)
    {
        cluster_client = Some(client().await?);
    }
    let events = match (&cluster_client, command.events.events) {
        (Some(client), true) => {
            let (sender, task) = cluster::events::spawn_event_recorder(
                client.clone(),
                identity.clone(),
                cluster::events::EventLimits::default(),
            );
            background.push(task);
            Some(sender)
        }
        _ => None,
    };
    let mut config = command.server.config(tls);
    config.on_denied_pod = events.clone().map(|events| {
        DeniedPodHook(Arc::new(move |summary: &Summary, pod: &DeniedPod| {
            if let Some(denied) =
                DeniedWorkload::of_controller(&summary.namespace, &pod.controller, &pod.message)
            {
                events.try_send(Notice::Denied(denied));
            }
        }))
    });

    let server = Server::bind(config).await?;
    let readiness = server.readiness();
    if let Some(mut injected) = injected {
        let condition = readiness.condition("ca-bundle-injected");
        background.push(tokio::spawn(async move {
            loop {
                condition.set(*injected.borrow_and_update());
                if injected.changed().await.is_err() {
                    break;
                }
            }
        }));
    }

    let mut reports = None;
    if let (Some(client), Some(namespace)) = (&cluster_client, reports_namespace) {
        let lease = command.reports.lease(namespace, identity.clone());
        reports = Some(tokio::spawn(cluster::reports::run_periodic_reports(
            client.clone(),
            server.policy(),
            command.reports.scope(),
            command.reports.reports_interval.0,
            lease,
        )));
    }

    if let Some(namespace) = reconcile_namespace {
        let Some(client) = cluster_client else {
            return Err(ServeCommandError::Client(
                "the Kubernetes client was not created".into(),
            ));
        };
        // None: the namespaces the policy in force names, as the policy changes.
        let namespaces = (!command.reconcile_namespaces.is_empty())
            .then(|| command.reconcile_namespaces.clone());
        let lease = LeaseConfig::new(namespace, command.lease_name.clone(), identity);
        // Reconcile only once this replica answers reviews: the restarts go through the webhook.
        let (ready_tx, ready_rx) = watch::channel(false);
        let watched = readiness.clone();
        background.push(tokio::spawn(async move {
            while !watched.is_ready() {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            let _ = ready_tx.send(true);
            // Keep the sender alive so the reconciler does not see a closed channel.
            std::future::pending::<()>().await;
        }));
        background.push(tokio::spawn(reconcile_existing(
            client,
            lease,
            namespaces,
            server.policy(),
            ready_rx,
            server.metrics(),
            events,
        )));
    }

    let result = server.run(server::shutdown_signal()).await;
    // The server's policy is gone with it, which ends the report task: it gives its Lease up, so
    // another replica writes the reports at its next try instead of after the Lease expires.
    if let Some(mut reports) = reports
        && tokio::time::timeout(REPORTS_STOP, &mut reports)
            .await
            .is_err()
    {
        tracing::warn!("policy reports: still writing at shutdown; their Lease expires by itself");
        reports.abort();
    }
    for task in background {
        task.abort();
    }
    Ok(result?)
}

/// Re-rolls the workloads created before restrictor once this replica answers reviews, and again
/// after every policy change, counting every action it takes and writing an Event on each
/// workload it re-rolls.
async fn reconcile_existing(
    client: kube::Client,
    lease: LeaseConfig,
    namespaces: Option<Vec<String>>,
    policy: watch::Receiver<Arc<Policy>>,
    ready: watch::Receiver<bool>,
    metrics: Arc<Metrics>,
    events: Option<EventSender>,
) {
    let config = ReconcileConfig {
        namespaces,
        ..Default::default()
    };
    let observer = move |event: &ReconcileEvent<'_>| {
        metrics.reconcile_action(event.action());
        if let (Some(events), ReconcileEvent::Restarted(workload)) = (&events, event) {
            events.try_send(Notice::restarted(
                workload.api_version,
                workload.kind,
                &workload.namespace,
                &workload.name,
                Some(&workload.uid),
            ));
        }
    };
    // Each pass and its failure is logged there; what ends it (a missing permission) as well.
    let _ = reconcile_on_every_policy(client, lease, config, policy, ready, observer).await;
}

/// Deletes the webhook configuration (the chart's pre-delete hook), so a removed restrictor never
/// leaves a failurePolicy Fail webhook behind that blocks the vcluster.
pub async fn uninstall(command: UninstallCommand) -> Result<(), ServeCommandError> {
    server::install_crypto_provider();
    let existed = cluster::uninstall(client().await?, &command.webhook_config)
        .await
        .map_err(Box::new)?;
    if existed {
        eprintln!(
            "deleted mutatingwebhookconfiguration {}",
            command.webhook_config
        );
    } else {
        eprintln!(
            "mutatingwebhookconfiguration {} was already gone",
            command.webhook_config
        );
    }
    Ok(())
}
