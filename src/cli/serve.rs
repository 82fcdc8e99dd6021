//! `restrictor serve` and `restrictor uninstall`: the webhook server, wired to the self-managed
//! certificates and the reconcile of workloads that existed before restrictor.

use std::time::Duration;

use clap::Args;
use tokio::sync::watch;

use crate::cluster::{
    self, LeaseConfig, ReconcileConfig, SelfManagedCerts, SelfManagedConfig, reconcile_as_leader,
};
use crate::policy::Policy;
use crate::pss::{self, Level};
use crate::server::{self, ServeArgs, Server, TlsSource};

#[derive(Debug, thiserror::Error)]
pub enum ServeCommandError {
    #[error(
        "no TLS material: give --tls-cert and --tls-key, or --self-managed-certs with --namespace, --service, --secret and --webhook-config"
    )]
    NoTls,
    #[error("--self-managed-certs needs {0}")]
    MissingFlag(&'static str),
    #[error("cannot reach the Kubernetes API: {0}")]
    Client(String),
    #[error(transparent)]
    Serve(#[from] server::ServeError),
    #[error(transparent)]
    Cluster(#[from] Box<cluster::ClusterError>),
    #[error(transparent)]
    Policy(#[from] crate::policy::PolicyError),
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

fn required(value: &Option<String>, flag: &'static str) -> Result<String, ServeCommandError> {
    value
        .clone()
        .filter(|v| !v.is_empty())
        .ok_or(ServeCommandError::MissingFlag(flag))
}

/// Runs the webhook until SIGTERM (or Ctrl-C), then drains.
pub async fn serve(command: ServeCommand) -> Result<(), ServeCommandError> {
    server::install_crypto_provider();
    server::init_logging(command.server.log_format);

    let mut background = Vec::new();
    let mut cluster_client = None;
    let (tls, injected) = match command.server.tls_files() {
        Some(files) => (files, None),
        None if command.self_managed_certs => {
            let config = SelfManagedConfig::new(
                required(&command.namespace, "--namespace")?,
                required(&command.service, "--service")?,
                required(&command.secret, "--secret")?,
                required(&command.webhook_config, "--webhook-config")?,
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

    let server = Server::bind(command.server.config(tls)).await?;
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
    if let (Some(client), true) = (&cluster_client, command.reports.reports) {
        // The policy as loaded at start; a reload is picked up once the server publishes its
        // policy on a watch channel.
        let policy = match &command.server.policy {
            Some(path) => Policy::load(path)?,
            None => Policy::builtin(),
        };
        let (policy_tx, policy_rx) = watch::channel(std::sync::Arc::new(policy));
        let (client, scope, interval) = (
            client.clone(),
            command.reports.scope(),
            command.reports.reports_interval,
        );
        background.push(tokio::spawn(async move {
            let _policy_tx = policy_tx;
            cluster::reports::run_periodic_reports(client, policy_rx, scope, interval).await;
        }));
    }

    if command.reconcile_existing {
        let Some(client) = cluster_client else {
            return Err(ServeCommandError::Client(
                "the Kubernetes client was not created".into(),
            ));
        };
        let namespaces = if command.reconcile_namespaces.is_empty() {
            let policy = match &command.server.policy {
                Some(path) => Policy::load(path)?,
                None => Policy::builtin(),
            };
            policy.literal_namespaces()
        } else {
            command.reconcile_namespaces.clone()
        };
        let lease = LeaseConfig::new(
            required(&command.namespace, "--namespace (for the reconcile Lease)")?,
            command.lease_name.clone(),
            identity,
        );
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
        background.push(tokio::spawn(async move {
            let non_compliant = |object: &serde_json::Value| {
                pss::check_object(object, Level::Restricted).is_some_and(|v| !v.is_empty())
            };
            let config = ReconcileConfig { namespaces };
            match reconcile_as_leader(client, lease, config, non_compliant, ready_rx).await {
                Ok(Some(report)) => {
                    tracing::info!(?report, "reconciled existing workloads");
                    // An Event on each re-rolled workload (the reconciler's own events
                    // replace this once it reports each restart as it happens).
                    for workload in events.iter().flat_map(|_| &report.restarted) {
                        let api_version = crate::workload::WorkloadKind::ALL
                            .into_iter()
                            .find(|kind| kind.as_str() == workload.kind)
                            .map_or("apps/v1", |kind| kind.api_version());
                        let notice = cluster::events::Notice::restarted(
                            api_version,
                            workload.kind,
                            &workload.namespace,
                            &workload.name,
                            None,
                        );
                        events.iter().for_each(|events| {
                            events.try_send(notice.clone());
                        });
                    }
                }
                Ok(None) => {}
                Err(error) => tracing::error!(%error, "reconcile of existing workloads failed"),
            }
        }));
    }

    let result = server.run(server::shutdown_signal()).await;
    for task in background {
        task.abort();
    }
    Ok(result?)
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
