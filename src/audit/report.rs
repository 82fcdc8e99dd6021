//! The audit as `wgpolicyk8s.io/v1alpha2` PolicyReports, the format Kyverno and Kubewarden write
//! and Policy Reporter and the Rancher UI show: one report per namespace, one result per listed
//! object (pass: compliant, warn: would be mutated, fail: would be denied, skip: exempt).
//!
//! A result keeps the timestamp of the run that first found it, so that a run over an unchanged
//! cluster builds the same report again and server-side apply has nothing to write.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use time::OffsetDateTime;

use super::{Audit, Entry, Verdict};

pub const API_VERSION: &str = "wgpolicyk8s.io/v1alpha2";
pub const GROUP: &str = "wgpolicyk8s.io";
pub const VERSION: &str = "v1alpha2";
pub const KIND: &str = "PolicyReport";
pub const PLURAL: &str = "policyreports";
/// The name of restrictor's report in each namespace.
pub const REPORT_NAME: &str = "restrictor";
/// `results[].source` and `results[].policy`.
pub const SOURCE: &str = "restrictor";
/// The label restrictor's reports carry, as Kyverno's do with its own name.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "restrictor");
const CATEGORY: &str = "Pod Security Standards (Restricted)";
/// The CRD says a message is short; a long change list is cut here.
const MAX_MESSAGE_BYTES: usize = 1024;

/// One PolicyReport per namespace that has listed objects, sorted by namespace; `namespaces`
/// are reported even when empty (the audited scope: their report then says there is nothing).
pub fn policy_reports(audit: &Audit, namespaces: &[String], now: OffsetDateTime) -> Vec<Value> {
    let mut by_namespace: BTreeMap<&str, Vec<&Entry>> = namespaces
        .iter()
        .map(|namespace| (namespace.as_str(), Vec::new()))
        .collect();
    for entry in &audit.objects {
        by_namespace
            .entry(entry.object.namespace.as_str())
            .or_default()
            .push(entry);
    }
    by_namespace
        .into_iter()
        .map(|(namespace, entries)| namespace_report(namespace, &entries, now))
        .collect()
}

fn namespace_report(namespace: &str, entries: &[&Entry], now: OffsetDateTime) -> Value {
    let mut summary = BTreeMap::from([
        ("pass", 0),
        ("fail", 0),
        ("warn", 0),
        ("error", 0),
        ("skip", 0),
    ]);
    let results: Vec<Value> = entries
        .iter()
        .map(|entry| {
            let result = result_of(&entry.verdict);
            *summary.entry(result).or_default() += 1;
            result_entry(entry, result, now)
        })
        .collect();
    json!({
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": REPORT_NAME,
            "namespace": namespace,
            "labels": {MANAGED_BY.0: MANAGED_BY.1},
        },
        "summary": summary,
        "results": results,
    })
}

/// The report's word for an outcome.
pub fn result_of(verdict: &Verdict) -> &'static str {
    match verdict {
        Verdict::Compliant { .. } => "pass",
        Verdict::Mutated { .. } => "warn",
        Verdict::Denied { .. } => "fail",
        Verdict::Exempt { .. } => "skip",
    }
}

fn result_entry(entry: &Entry, result: &str, now: OffsetDateTime) -> Value {
    let object = &entry.object;
    let mut resource = json!({
        "apiVersion": object.api_version,
        "kind": object.kind,
        "namespace": object.namespace,
        "name": object.name,
    });
    if let Some(uid) = &object.uid {
        resource["uid"] = json!(uid);
    }
    let mut properties = BTreeMap::from([("outcome", entry.verdict.outcome().to_owned())]);
    let message = match &entry.verdict {
        Verdict::Compliant { profile, .. } => {
            properties.insert("profile", profile.clone());
            format!("passes Pod Security \"restricted\" as it is (profile {profile})")
        }
        Verdict::Mutated {
            profile, changes, ..
        } => {
            properties.insert("profile", profile.clone());
            properties.insert("changes", changes.len().to_string());
            format!(
                "restrictor changes it on admission to pass Pod Security \"restricted\" (profile {profile}): {}",
                changes.join("; ")
            )
        }
        Verdict::Denied {
            profile, fields, ..
        } => {
            properties.insert("profile", profile.clone());
            let mut names: Vec<&str> = fields.iter().map(|f| f.field.as_str()).collect();
            names.dedup();
            properties.insert("fields", names.join(", "));
            let findings: Vec<&str> = fields.iter().map(|f| f.message.as_str()).collect();
            format!(
                "restrictor denies it: it cannot pass Pod Security \"restricted\" without changing what it is: {}",
                findings.join("; ")
            )
        }
        Verdict::Exempt { reason, .. } => format!("left alone by restrictor: {reason}"),
    };
    for (kind, counts) in &entry.owned {
        if counts.mutated + counts.denied > 0 {
            properties.insert(
                "ownedNotRestricted",
                format!(
                    "{} of {} {kind}(s) running as created before restrictor",
                    counts.mutated + counts.denied,
                    counts.total()
                ),
            );
        }
    }
    let mut result = json!({
        "source": SOURCE,
        "policy": SOURCE,
        "rule": entry.verdict.rule().unwrap_or("no-matching-rule"),
        "category": CATEGORY,
        "result": result,
        "scored": true,
        "message": crate::admission::truncated(message, MAX_MESSAGE_BYTES),
        "resources": [resource],
        "properties": properties,
        "timestamp": {"seconds": now.unix_timestamp(), "nanos": 0},
    });
    match result["result"].as_str() {
        Some("fail") => result["severity"] = json!("high"),
        Some("warn") => result["severity"] = json!("medium"),
        _ => {}
    }
    result
}

/// Gives each result of `report` the timestamp of the same finding in `existing` (same resource,
/// rule, result and message), so an unchanged cluster yields an unchanged report.
pub fn keep_timestamps(report: &mut Value, existing: &Value) {
    let key = |result: &Value| {
        (
            result["resources"].clone(),
            result["rule"].clone(),
            result["result"].clone(),
            result["message"].clone(),
        )
    };
    let found: Vec<_> = existing["results"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|result| (key(result), result["timestamp"].clone()))
        .collect();
    if let Some(results) = report["results"].as_array_mut() {
        for result in results {
            let wanted = key(result);
            if let Some((_, timestamp)) = found
                .iter()
                .find(|(k, t)| *k == wanted && t["seconds"].is_i64())
            {
                result["timestamp"] = timestamp.clone();
            }
        }
    }
}

/// Whether `existing` (as read from the API server) already says what `report` says: the fields
/// restrictor writes are equal, whatever the server added (`metadata.uid`, managedFields...).
pub fn is_current(report: &Value, existing: &Value) -> bool {
    ["summary", "results"]
        .into_iter()
        .all(|field| report[field] == existing[field])
        && report["metadata"]["labels"] == existing["metadata"]["labels"]
}
