//! Prometheus metrics, hand-written with atomics: the request path touches only atomics and a
//! short read-locked scan of the label sets seen so far.

use std::fmt::Write as _;
use std::sync::RwLock;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Upper bounds (seconds) of the latency histogram buckets.
const BUCKETS: [f64; 14] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0,
];

/// Label sets beyond this many distinct (operation, kind) pairs are counted under "other", so a
/// client cannot grow the metrics without bound through the kinds it sends.
const MAX_SERIES: usize = 128;

/// The outcome label of `restrictor_admission_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestOutcome {
    Patched,
    Unchanged,
    Denied,
    /// Answered 4xx: not an answerable review.
    Invalid,
    /// Answered 5xx (a handler panic).
    Error,
}

impl RequestOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Patched => "patched",
            Self::Unchanged => "unchanged",
            Self::Denied => "denied",
            Self::Invalid => "invalid",
            Self::Error => "error",
        }
    }
}

impl From<crate::admission::Outcome> for RequestOutcome {
    fn from(o: crate::admission::Outcome) -> Self {
        match o {
            crate::admission::Outcome::Patched => Self::Patched,
            crate::admission::Outcome::Unchanged => Self::Unchanged,
            crate::admission::Outcome::Denied => Self::Denied,
        }
    }
}

struct Series {
    operation: String,
    kind: String,
    outcome: RequestOutcome,
    count: AtomicU64,
}

/// All of the server's metrics.
pub struct Metrics {
    series: RwLock<Vec<Series>>,
    buckets: [AtomicU64; BUCKETS.len()],
    duration_count: AtomicU64,
    duration_sum_nanos: AtomicU64,
    pub tls_reloads: AtomicU64,
    pub tls_reload_errors: AtomicU64,
    pub policy_reloads: AtomicU64,
    pub policy_reload_errors: AtomicU64,
    /// notAfter of the serving certificate (unix seconds), 0 while there is none.
    pub certificate_expiry: AtomicI64,
    pub open_connections: AtomicI64,
    pub tls_handshake_errors: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        Self {
            series: RwLock::new(Vec::new()),
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            duration_count: AtomicU64::new(0),
            duration_sum_nanos: AtomicU64::new(0),
            tls_reloads: AtomicU64::new(0),
            tls_reload_errors: AtomicU64::new(0),
            policy_reloads: AtomicU64::new(0),
            policy_reload_errors: AtomicU64::new(0),
            certificate_expiry: AtomicI64::new(0),
            open_connections: AtomicI64::new(0),
            tls_handshake_errors: AtomicU64::new(0),
        }
    }

    /// Counts one answered request and its latency.
    pub fn observe(&self, operation: &str, kind: &str, outcome: RequestOutcome, took: Duration) {
        self.count(operation, kind, outcome);
        let secs = took.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Relaxed);
        }
        self.duration_count.fetch_add(1, Relaxed);
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.duration_sum_nanos.fetch_add(nanos, Relaxed);
    }

    fn count(&self, operation: &str, kind: &str, outcome: RequestOutcome) {
        let find = |v: &[Series], op: &str, kind: &str| {
            v.iter()
                .find(|s| s.outcome == outcome && s.operation == op && s.kind == kind)
                .map(|s| s.count.fetch_add(1, Relaxed))
                .is_some()
        };
        {
            let v = self.series.read().unwrap_or_else(|p| p.into_inner());
            if find(&v, operation, kind) {
                return;
            }
        }
        let mut v = self.series.write().unwrap_or_else(|p| p.into_inner());
        let (op, kind) = if v.len() >= MAX_SERIES {
            ("other", "other")
        } else {
            (operation, kind)
        };
        if find(&v, op, kind) {
            return;
        }
        v.push(Series {
            operation: op.to_owned(),
            kind: kind.to_owned(),
            outcome,
            count: AtomicU64::new(1),
        });
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        out.push_str("# HELP restrictor_admission_requests_total Admission requests answered, by operation, kind and outcome.\n");
        out.push_str("# TYPE restrictor_admission_requests_total counter\n");
        {
            let v = self.series.read().unwrap_or_else(|p| p.into_inner());
            for s in v.iter() {
                let _ = writeln!(
                    out,
                    "restrictor_admission_requests_total{{operation=\"{}\",kind=\"{}\",outcome=\"{}\"}} {}",
                    escape(&s.operation),
                    escape(&s.kind),
                    s.outcome.as_str(),
                    s.count.load(Relaxed)
                );
            }
        }
        out.push_str("# HELP restrictor_admission_duration_seconds Time from request to answer.\n");
        out.push_str("# TYPE restrictor_admission_duration_seconds histogram\n");
        let mut cumulative = 0;
        for (bound, n) in BUCKETS.iter().zip(&self.buckets) {
            cumulative += n.load(Relaxed);
            let _ = writeln!(
                out,
                "restrictor_admission_duration_seconds_bucket{{le=\"{bound}\"}} {cumulative}"
            );
        }
        let count = self.duration_count.load(Relaxed);
        let _ = writeln!(
            out,
            "restrictor_admission_duration_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let sum = self.duration_sum_nanos.load(Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "restrictor_admission_duration_seconds_sum {sum}");
        let _ = writeln!(out, "restrictor_admission_duration_seconds_count {count}");

        let mut scalar = |name: &str, kind: &str, help: &str, value: String| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        scalar(
            "restrictor_tls_reloads_total",
            "counter",
            "Serving certificates loaded (the first one included).",
            self.tls_reloads.load(Relaxed).to_string(),
        );
        scalar(
            "restrictor_tls_reload_errors_total",
            "counter",
            "Serving certificates rejected (unparsable, or key not matching).",
            self.tls_reload_errors.load(Relaxed).to_string(),
        );
        scalar(
            "restrictor_policy_reloads_total",
            "counter",
            "Policies loaded (the first one included).",
            self.policy_reloads.load(Relaxed).to_string(),
        );
        scalar(
            "restrictor_policy_reload_errors_total",
            "counter",
            "Policy files rejected; the previous policy stayed in force.",
            self.policy_reload_errors.load(Relaxed).to_string(),
        );
        scalar(
            "restrictor_certificate_expiry_timestamp_seconds",
            "gauge",
            "notAfter of the serving certificate, unix seconds (0: none loaded).",
            self.certificate_expiry.load(Relaxed).to_string(),
        );
        scalar(
            "restrictor_open_connections",
            "gauge",
            "TLS connections currently open.",
            self.open_connections.load(Relaxed).to_string(),
        );
        scalar(
            "restrictor_tls_handshake_errors_total",
            "counter",
            "TLS handshakes that failed or timed out.",
            self.tls_handshake_errors.load(Relaxed).to_string(),
        );
        out
    }
}

fn escape(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains(['\\', '"', '\n']) {
        s.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n")
            .into()
    } else {
        s.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counts_and_histogram() {
        let m = Metrics::new();
        m.observe(
            "CREATE",
            "Pod",
            RequestOutcome::Patched,
            Duration::from_micros(30),
        );
        m.observe(
            "CREATE",
            "Pod",
            RequestOutcome::Patched,
            Duration::from_millis(3),
        );
        m.observe("", "", RequestOutcome::Invalid, Duration::from_micros(10));
        let text = m.render();
        assert!(text.contains(
            "restrictor_admission_requests_total{operation=\"CREATE\",kind=\"Pod\",outcome=\"patched\"} 2"
        ));
        assert!(text.contains("outcome=\"invalid\"} 1"));
        assert!(text.contains("restrictor_admission_duration_seconds_bucket{le=\"0.00005\"} 2"));
        assert!(text.contains("restrictor_admission_duration_seconds_bucket{le=\"+Inf\"} 3"));
        assert!(text.contains("restrictor_admission_duration_seconds_count 3"));
        assert!(text.contains("restrictor_policy_reload_errors_total 0"));
    }

    #[test]
    fn label_sets_are_bounded() {
        let m = Metrics::new();
        for i in 0..1000 {
            m.observe(
                "CREATE",
                &format!("Kind{i}"),
                RequestOutcome::Unchanged,
                Duration::ZERO,
            );
        }
        let v = m.series.read().unwrap();
        assert!(v.len() <= MAX_SERIES + 1);
        assert!(v.iter().any(|s| s.kind == "other"));
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
