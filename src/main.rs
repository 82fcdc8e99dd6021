use std::process::ExitCode;

use clap::{Parser, Subcommand};
use restrictor::cli::{
    self, AuditArgs, CheckArgs, MutateArgs, PolicyArgs, ServeCommand, UninstallCommand,
};

/// restrictor: makes every pod in a vcluster pass Pod Security "restricted".
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the mutating admission webhook over HTTPS.
    Serve(Box<ServeCommand>),
    /// Delete the webhook configuration (the chart's pre-delete hook).
    Uninstall(UninstallCommand),
    /// Mutate manifest files offline, as the webhook would.
    Mutate(MutateArgs),
    /// Check manifest files against a Pod Security Standards level.
    Check(CheckArgs),
    /// Print the built-in policy, or validate a policy file.
    Policy(PolicyArgs),
    /// What the webhook would do to every pod-bearing object in a live cluster (read-only).
    Audit(AuditArgs),
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Serve(command) => run_async(cli::serve(*command)),
        Command::Uninstall(command) => run_async(cli::uninstall(command)),
        Command::Mutate(args) => cli::mutate(&args).map_err(|error| error.to_string()),
        Command::Check(args) => cli::check(&args).map_err(|error| error.to_string()),
        Command::Policy(args) => cli::policy(&args).map_err(|error| error.to_string()),
        Command::Audit(args) => cli::audit(&args).map_err(|error| error.to_string()),
    };
    result.unwrap_or_else(|error| {
        eprintln!("error: {error}");
        ExitCode::from(cli::exit::USAGE)
    })
}

fn run_async<E: std::fmt::Display>(
    future: impl Future<Output = Result<(), E>>,
) -> Result<ExitCode, String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|error| format!("cannot start the runtime: {error}"))?;
    runtime
        .block_on(future)
        .map(|()| ExitCode::SUCCESS)
        .map_err(|error| error.to_string())
}
