use std::process::ExitCode;

use clap::{Parser, Subcommand};
use restrictor::cli::{self, CheckArgs, MutateArgs, PolicyArgs};

/// restrictor: makes every pod in a vcluster pass Pod Security "restricted".
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Mutate manifest files offline, as the webhook would.
    Mutate(MutateArgs),
    /// Check manifest files against a Pod Security Standards level.
    Check(CheckArgs),
    /// Print the built-in policy, or validate a policy file.
    Policy(PolicyArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Mutate(args) => cli::mutate(args),
        Command::Check(args) => cli::check(args),
        Command::Policy(args) => cli::policy(args),
    };
    result.unwrap_or_else(|error| {
        eprintln!("error: {error}");
        ExitCode::from(cli::exit::USAGE)
    })
}
