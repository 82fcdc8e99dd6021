//! `restrictor audit`: what the webhook would do to every pod-bearing object in a live cluster.
//! Read-only unless `--write-reports`.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use kube::config::{KubeConfigOptions, Kubeconfig};

use super::exit;
use crate::audit::{self, Audit, render};
use crate::cluster::inventory::{self, InventoryError, Namespaces};
use crate::cluster::reports::{self, ReportsError, ReportsOutcome};
use crate::policy::{Policy, PolicyError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AuditFormat {
    /// A table, then what would change or be denied.
    Table,
    /// The audit as JSON (fields documented in the README).
    Json,
    /// The same as YAML.
    Yaml,
}

/// Flags of `restrictor audit`. RBAC needed: `list` on pods, podtemplates, replicationcontrollers,
/// deployments.apps, replicasets.apps, statefulsets.apps, daemonsets.apps, jobs.batch and
/// cronjobs.batch in the audited namespaces; with --write-reports also `get`, `create` and `patch`
/// on policyreports.wgpolicyk8s.io named `restrictor`.
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Kubeconfig file; by default $KUBECONFIG or ~/.kube/config, as kubectl reads them.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context to use; by default the current context.
    #[arg(long)]
    pub context: Option<String>,
    /// Namespace to audit; by default the context's namespace.
    #[arg(long, short = 'n', conflicts_with = "all_namespaces")]
    pub namespace: Option<String>,
    /// Audit every namespace.
    #[arg(long, short = 'A')]
    pub all_namespaces: bool,
    /// Policy file; the built-in policy (`restrictor policy`) when omitted.
    #[arg(long, env = "RESTRICTOR_POLICY")]
    pub policy: Option<PathBuf>,
    #[arg(long, short, value_enum, default_value_t = AuditFormat::Table)]
    pub output: AuditFormat,
    /// Also write one wgpolicyk8s.io/v1alpha2 PolicyReport per audited namespace (server-side
    /// apply, field manager restrictor); skipped with a message when the CRD is not installed.
    #[arg(long)]
    pub write_reports: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum AuditCommandError {
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error("cannot load the kubeconfig: {0}")]
    Kubeconfig(String),
    #[error("cannot build a Kubernetes client: {0}")]
    Client(String),
    #[error("{error} (API server {server})")]
    Inventory {
        server: String,
        #[source]
        error: Box<InventoryError>,
    },
    #[error(transparent)]
    Reports(#[from] Box<ReportsError>),
    #[error(transparent)]
    Render(#[from] render::RenderError),
    #[error("cannot write output: {0}")]
    Write(std::io::Error),
    #[error("cannot start the runtime: {0}")]
    Runtime(std::io::Error),
}

/// `restrictor audit`: exit 0 when nothing would be denied, 1 when something would, 2 on usage
/// or connection errors (returned as `Err`).
pub fn audit(args: &AuditArgs) -> Result<ExitCode, AuditCommandError> {
    let policy = match &args.policy {
        Some(path) => Policy::load(path)?,
        None => Policy::builtin(),
    };
    crate::server::install_crypto_provider();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(AuditCommandError::Runtime)?;
    let (audit, written) = runtime.block_on(run(args, &policy))?;
    let text = match args.output {
        AuditFormat::Table => render::table(&audit),
        AuditFormat::Json => render::json(&audit)?,
        AuditFormat::Yaml => render::yaml(&audit)?,
    };
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(AuditCommandError::Write)?;
    if let Some(written) = written {
        eprintln!("{written}");
    }
    Ok(ExitCode::from(if audit.has_denials() {
        exit::FINDINGS
    } else {
        exit::OK
    }))
}

async fn run(
    args: &AuditArgs,
    policy: &Policy,
) -> Result<(Audit, Option<ReportsOutcome>), AuditCommandError> {
    let config = client_config(args).await?;
    let server = config.cluster_url.to_string();
    let namespaces = if args.all_namespaces {
        Namespaces::All
    } else {
        Namespaces::Only(vec![
            args.namespace
                .clone()
                .unwrap_or_else(|| config.default_namespace.clone()),
        ])
    };
    let client = kube::Client::try_from(config)
        .map_err(|error| AuditCommandError::Client(error.to_string()))?;
    let objects = inventory::list_pod_bearing(&client, &namespaces)
        .await
        .map_err(|error| AuditCommandError::Inventory {
            server,
            error: Box::new(error),
        })?;
    let audit = audit::audit(policy, &objects);
    let written = if args.write_reports {
        let scope = match &namespaces {
            Namespaces::All => Vec::new(),
            Namespaces::Only(names) => names.clone(),
        };
        Some(
            reports::write_reports(&client, &audit, &scope)
                .await
                .map_err(Box::new)?,
        )
    } else {
        None
    };
    Ok((audit, written))
}

/// The client configuration kubectl would use: `--kubeconfig` or `$KUBECONFIG` or
/// `~/.kube/config` with `--context`; inside a pod without any kubeconfig, the in-cluster
/// service account.
async fn client_config(args: &AuditArgs) -> Result<kube::Config, AuditCommandError> {
    let options = KubeConfigOptions {
        context: args.context.clone(),
        ..KubeConfigOptions::default()
    };
    let kubeconfig_error = |error: &dyn std::fmt::Display| {
        AuditCommandError::Kubeconfig(match &args.kubeconfig {
            Some(path) => format!("{}: {error}", path.display()),
            None => error.to_string(),
        })
    };
    if let Some(path) = &args.kubeconfig {
        let file = Kubeconfig::read_from(path).map_err(|e| kubeconfig_error(&e))?;
        return kube::Config::from_custom_kubeconfig(file, &options)
            .await
            .map_err(|e| kubeconfig_error(&e));
    }
    match kube::Config::from_kubeconfig(&options).await {
        Ok(config) => Ok(config),
        Err(error) if args.context.is_none() => kube::Config::incluster().map_err(|in_cluster| {
            kubeconfig_error(&format!(
                "{error}; and not running in a cluster either: {in_cluster}"
            ))
        }),
        Err(error) => Err(kubeconfig_error(&error)),
    }
}

#[cfg(test)]
mod tests {
    use clap::{Args as _, Command};

    #[test]
    fn the_audit_and_serve_flags_are_valid_clap_definitions() {
        let command = Command::new("restrictor")
            .subcommand(super::AuditArgs::augment_args(Command::new("audit")))
            .subcommand(super::super::ServeCommand::augment_args(Command::new(
                "serve",
            )));
        command.clone().debug_assert();
        let matches = command
            .try_get_matches_from([
                "restrictor",
                "serve",
                "--reports",
                "--reports-interval=30m",
                "--reports-namespaces=a,b",
                "--events",
            ])
            .unwrap();
        let serve = matches.subcommand_matches("serve").unwrap();
        assert!(serve.get_flag("reports") && serve.get_flag("events"));
    }
}
