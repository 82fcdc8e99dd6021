//! The offline commands: `mutate`, `check` and `policy`. They run the same engine the webhook runs,
//! on manifest files instead of AdmissionReviews.

pub mod audit;
mod serve;

pub use audit::{AuditArgs, audit};
pub use serve::{ServeCommand, ServeCommandError, UninstallCommand, serve, uninstall};

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use serde_json::Value;

use crate::engine::{self, Context};
use crate::manifest::{self, describe};
use crate::policy::{BUILTIN_YAML, Policy};
use crate::pss::{self, Level};
use crate::workload::WorkloadKind;

/// Exit codes shared by the offline commands.
pub mod exit {
    pub const OK: u8 = 0;
    /// Something was denied (`mutate`) or violates the level (`check`).
    pub const FINDINGS: u8 = 1;
    /// Unreadable input or an invalid policy.
    pub const USAGE: u8 = 2;
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Manifest(#[from] manifest::ManifestError),
    #[error(transparent)]
    Policy(#[from] crate::policy::PolicyError),
    #[error("cannot write output: {0}")]
    Write(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Every admitted object, mutated, as multi-document YAML.
    Yaml,
    /// Every admitted object, mutated, as JSON (a v1 List when there is more than one).
    Json,
    /// One JSON line per object that would be patched: the object and its RFC 6902 patch.
    Patch,
}

#[derive(Debug, Args)]
pub struct MutateArgs {
    /// Policy file; the built-in policy (`restrictor policy`) when omitted.
    #[arg(long, env = "RESTRICTOR_POLICY")]
    pub policy: Option<PathBuf>,
    #[arg(long, short, value_enum, default_value_t = OutputFormat::Yaml)]
    pub output: OutputFormat,
    /// Manifest files (YAML, multi-document, or JSON; `List` kinds are expanded); `-` reads stdin.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The Pod Security Standards level to check against.
    #[arg(long, default_value = "restricted", value_parser = parse_level)]
    pub level: Level,
    /// Manifest files; `-` reads stdin.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct PolicyArgs {
    /// Validate this policy file instead of printing the built-in one.
    #[arg(long)]
    pub validate: Option<PathBuf>,
}

fn parse_level(text: &str) -> Result<Level, String> {
    text.parse::<Level>().map_err(|error| error.to_string())
}

fn read_objects(files: &[PathBuf]) -> Result<Vec<Value>, CliError> {
    let mut objects = Vec::new();
    for path in files {
        let (name, text) = if path == Path::new("-") {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|source| CliError::Read {
                    path: "stdin".into(),
                    source,
                })?;
            ("stdin".to_owned(), text)
        } else {
            let text = std::fs::read_to_string(path).map_err(|source| CliError::Read {
                path: path.display().to_string(),
                source,
            })?;
            (path.display().to_string(), text)
        };
        objects.extend(manifest::parse(&name, &text)?);
    }
    Ok(objects)
}

fn kind_of(object: &Value) -> Option<WorkloadKind> {
    WorkloadKind::from_type(
        object.get("apiVersion")?.as_str()?,
        object.get("kind")?.as_str()?,
    )
}

/// `restrictor mutate`: admitted objects to stdout, denials and a change summary to stderr.
pub fn mutate(args: &MutateArgs) -> Result<ExitCode, CliError> {
    let policy = match &args.policy {
        Some(path) => Policy::load(path)?,
        None => Policy::builtin(),
    };
    let objects = read_objects(&args.files)?;
    let mut admitted = Vec::with_capacity(objects.len());
    let mut patches = Vec::new();
    let mut denied = 0;
    let mut stderr = std::io::stderr().lock();
    for mut object in objects {
        let Some(kind) = kind_of(&object) else {
            admitted.push(object);
            continue;
        };
        let namespace = object
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("default")
            .to_owned();
        let subject = describe(&object);
        // The engine edits `object` in place: admitted, it is the mutated object.
        let Some(evaluation) =
            engine::evaluate(&policy, &mut object, kind, &namespace, Context::CREATE)
        else {
            admitted.push(object);
            continue;
        };
        let outcome = evaluation.outcome;
        if let Some(denial) = &outcome.denial {
            denied += 1;
            let _ = writeln!(stderr, "denied: {subject}: {denial}");
            continue;
        }
        if !outcome.changes.is_empty() {
            let _ = writeln!(
                stderr,
                "mutated: {subject} (profile {}): {} changes",
                evaluation.profile,
                outcome.changes.len()
            );
            for change in &outcome.changes {
                let _ = writeln!(stderr, "  - {change}");
            }
        }
        for warning in &outcome.warnings {
            let _ = writeln!(stderr, "warning: {subject}: {warning}");
        }
        if !outcome.patch.is_empty() {
            let patch = serde_json::to_value(&outcome.patch)
                .map_err(|error| CliError::Write(error.to_string()))?;
            patches.push(serde_json::json!({"object": subject, "patch": patch}));
        }
        admitted.push(object);
    }
    write_output(args.output, &admitted, &patches)?;
    Ok(ExitCode::from(if denied > 0 {
        exit::FINDINGS
    } else {
        exit::OK
    }))
}

fn write_output(
    format: OutputFormat,
    objects: &[Value],
    patches: &[Value],
) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    let write_error = |error: &dyn std::fmt::Display| CliError::Write(error.to_string());
    match format {
        OutputFormat::Yaml => {
            for object in objects {
                let yaml = serde_yaml_ng::to_string(object).map_err(|e| write_error(&e))?;
                write!(out, "---\n{yaml}").map_err(|e| write_error(&e))?;
            }
        }
        OutputFormat::Json => {
            let document = match objects {
                [one] => one.clone(),
                many => serde_json::json!({"apiVersion": "v1", "kind": "List", "items": many}),
            };
            serde_json::to_writer_pretty(&mut out, &document).map_err(|e| write_error(&e))?;
            writeln!(out).map_err(|e| write_error(&e))?;
        }
        OutputFormat::Patch => {
            for patch in patches {
                serde_json::to_writer(&mut out, patch).map_err(|e| write_error(&e))?;
                writeln!(out).map_err(|e| write_error(&e))?;
            }
        }
    }
    out.flush().map_err(|e| write_error(&e))
}

/// `restrictor check`: one line per violation on stdout.
pub fn check(args: &CheckArgs) -> Result<ExitCode, CliError> {
    let objects = read_objects(&args.files)?;
    let mut out = std::io::stdout().lock();
    let (mut pods, mut violations) = (0, 0);
    for object in &objects {
        let Some(found) = pss::check_object(object, args.level) else {
            continue;
        };
        pods += 1;
        let subject = describe(object);
        for violation in &found {
            violations += 1;
            writeln!(out, "{subject}: {violation}").map_err(|e| CliError::Write(e.to_string()))?;
        }
    }
    eprintln!(
        "checked {pods} objects with pods against {}: {violations} violations",
        args.level.as_str()
    );
    Ok(ExitCode::from(if violations > 0 {
        exit::FINDINGS
    } else {
        exit::OK
    }))
}

/// `restrictor policy`: print the built-in policy, or validate a file.
pub fn policy(args: &PolicyArgs) -> Result<ExitCode, CliError> {
    match &args.validate {
        Some(path) => {
            let policy = Policy::load(path)?;
            eprintln!("{}: valid ({} rules)", path.display(), policy.rules().len());
        }
        None => print!("{BUILTIN_YAML}"),
    }
    Ok(ExitCode::from(exit::OK))
}
