//! The audit printed: a table for people, JSON or YAML for machines.
//!
//! The machine formats serialize [`Audit`] as it is: `summary` (`compliant`, `mutated`, `denied`,
//! `exempt`) and `objects[]`, each with `object` (`namespace`, `kind`, `name`, `apiVersion`,
//! `uid`), `outcome`, and by outcome `rule`, `profile`, `changes`, `warnings`, `reason`,
//! `fields[]` (`field`, `check`, `message`) and `owned` (kind -> counts). Objects are sorted by
//! namespace, kind and name, keys alphabetically, so two runs over the same cluster compare equal.

use std::fmt::Write as _;

use super::{Audit, Counts, Entry, Verdict};

#[derive(Debug, thiserror::Error)]
#[error("cannot serialize the audit: {0}")]
pub struct RenderError(String);

/// Pretty JSON with sorted keys and a final newline.
pub fn json(audit: &Audit) -> Result<String, RenderError> {
    let value = sorted(audit)?;
    let mut text =
        serde_json::to_string_pretty(&value).map_err(|error| RenderError(error.to_string()))?;
    text.push('\n');
    Ok(text)
}

/// YAML with sorted keys.
pub fn yaml(audit: &Audit) -> Result<String, RenderError> {
    serde_yaml_ng::to_string(&sorted(audit)?).map_err(|error| RenderError(error.to_string()))
}

/// The audit as a JSON tree whose objects have their keys in alphabetical order, whatever map
/// type serde_json was built with.
fn sorted(audit: &Audit) -> Result<serde_json::Value, RenderError> {
    fn sort(value: serde_json::Value) -> serde_json::Value {
        match value {
            serde_json::Value::Object(map) => {
                let mut entries: Vec<_> = map.into_iter().collect();
                entries.sort_by(|a, b| a.0.cmp(&b.0));
                serde_json::Value::Object(entries.into_iter().map(|(k, v)| (k, sort(v))).collect())
            }
            serde_json::Value::Array(items) => {
                serde_json::Value::Array(items.into_iter().map(sort).collect())
            }
            other => other,
        }
    }
    serde_json::to_value(audit)
        .map(sort)
        .map_err(|error| RenderError(error.to_string()))
}

/// The table: one line per listed object, then what would change or be denied, then the totals.
pub fn table(audit: &Audit) -> String {
    let header = ["NAMESPACE", "KIND", "NAME", "OUTCOME", "RULE", "OWNS"];
    let rows: Vec<[String; 6]> = audit
        .objects
        .iter()
        .map(|entry| {
            [
                entry.object.namespace.clone(),
                entry.object.kind.clone(),
                entry.object.name.clone(),
                entry.verdict.outcome().to_owned(),
                entry.verdict.rule().unwrap_or("-").to_owned(),
                owns(entry),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[&str]| {
        let mut text = String::new();
        for (index, cell) in cells.iter().enumerate() {
            if index + 1 == cells.len() {
                text.push_str(cell);
            } else {
                let _ = write!(text, "{cell:<width$}  ", width = widths[index]);
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&header);
    for row in &rows {
        line(&row.each_ref().map(String::as_str));
    }
    for entry in &audit.objects {
        details(&mut out, entry);
    }
    let Counts {
        compliant,
        mutated,
        denied,
        exempt,
    } = audit.summary;
    let total = audit.summary.total();
    let noun = if total == 1 { "object" } else { "objects" };
    let _ = writeln!(
        out,
        "\n{total} {noun}: {compliant} compliant, {mutated} would be mutated, {denied} would be denied, {exempt} exempt"
    );
    out
}

/// `1 ReplicaSet, 2 Pods (2 mutated)`: what the entry owns, with the outcomes that are not
/// `compliant`.
fn owns(entry: &Entry) -> String {
    if entry.owned.is_empty() {
        return "-".to_owned();
    }
    entry
        .owned
        .iter()
        .map(|(kind, counts)| {
            let total = counts.total();
            let plural = if total == 1 { "" } else { "s" };
            let notable: Vec<String> = [
                ("mutated", counts.mutated),
                ("denied", counts.denied),
                ("exempt", counts.exempt),
            ]
            .into_iter()
            .filter(|(_, n)| *n > 0)
            .map(|(what, n)| format!("{n} {what}"))
            .collect();
            if notable.is_empty() {
                format!("{total} {kind}{plural}")
            } else {
                format!("{total} {kind}{plural} ({})", notable.join(", "))
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn details(out: &mut String, entry: &Entry) {
    match &entry.verdict {
        Verdict::Mutated {
            rule,
            profile,
            changes,
            warnings,
        } => {
            let _ = writeln!(
                out,
                "\n{} would be mutated (rule {rule}, profile {profile}):",
                entry.object
            );
            for change in changes {
                let _ = writeln!(out, "  - {change}");
            }
            for warning in warnings {
                let _ = writeln!(out, "  ! {warning}");
            }
        }
        Verdict::Denied {
            rule,
            profile,
            fields,
            ..
        } => {
            let _ = writeln!(
                out,
                "\n{} would be denied (rule {rule}, profile {profile}):",
                entry.object
            );
            for field in fields {
                let _ = writeln!(out, "  x {}", field.message);
            }
        }
        Verdict::Compliant { .. } | Verdict::Exempt { .. } => {}
    }
}
