//! The server's Prometheus metrics: typed `prometheus-client` handles registered once, rendered
//! in the Prometheus text format (0.0.4). The request path touches only atomics and one
//! read-locked lookup of its label set.

use std::borrow::Cow;
use std::fmt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use prometheus_client::encoding::{
    EncodeLabelSet, EncodeLabelValue, EncodeMetric, LabelValueEncoder, MetricEncoder, NoLabelSet,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

use crate::admission::Disposition;

/// The `Content-Type` of [`Metrics::render`]'s output.
pub(crate) const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Upper bounds (seconds) of the latency histogram buckets.
const BUCKETS: [f64; 14] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0,
];

/// Label sets beyond this many distinct (operation, kind, outcome) triples are counted under
/// operation and kind "other", so a client cannot grow the metrics without bound through the
/// kinds it sends.
const MAX_SERIES: usize = 128;

/// The `reason` of a denial whose review could not be read (answered 400).
pub(crate) const DENIAL_MALFORMED: &str = crate::admission::MALFORMED_LABEL;
/// The `reason` of a denial that names no Pod Security control.
pub(crate) const DENIAL_OTHER: &str = "other";

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    operation: Cow<'static, str>,
    kind: Cow<'static, str>,
    outcome: Disposition,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DenialLabels {
    reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ActionLabels {
    action: &'static str,
}

impl EncodeLabelValue for Disposition {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), fmt::Error> {
        fmt::Write::write_str(encoder, self.as_str())
    }
}

/// All of the server's metrics.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    /// How many request label sets exist; locked only to add one, so the bound holds under
    /// concurrency.
    request_series: Mutex<usize>,
    duration: LatencyHistogram,
    denials: Family<DenialLabels, Counter>,
    reconcile_actions: Family<ActionLabels, Counter>,
    pub(crate) tls_reloads: Counter,
    pub(crate) tls_reload_errors: Counter,
    pub(crate) policy_reloads: Counter,
    pub(crate) policy_reload_errors: Counter,
    /// notAfter of the serving certificate, unix seconds; 0 while there is none.
    pub(crate) certificate_expiry: Gauge,
    pub(crate) open_connections: Gauge,
    pub(crate) tls_handshake_errors: Counter,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let metrics = Self {
            registry: Registry::default(),
            requests: Family::default(),
            request_series: Mutex::new(0),
            duration: LatencyHistogram::default(),
            denials: Family::default(),
            reconcile_actions: Family::default(),
            tls_reloads: Counter::default(),
            tls_reload_errors: Counter::default(),
            policy_reloads: Counter::default(),
            policy_reload_errors: Counter::default(),
            certificate_expiry: Gauge::default(),
            open_connections: Gauge::default(),
            tls_handshake_errors: Counter::default(),
        };
        metrics.registered()
    }

    /// Registers every handle once, in the order `/metrics` lists them. Counter names are given
    /// without `_total`: the encoder appends it.
    fn registered(mut self) -> Self {
        let r = &mut self.registry;
        r.register(
            "restrictor_admission_requests",
            "Admission requests answered, by operation, kind and outcome",
            Listed(self.requests.clone()),
        );
        r.register(
            "restrictor_admission_duration_seconds",
            "Time from request to answer",
            self.duration.clone(),
        );
        // One row per metric: name, help, handle.
        #[rustfmt::skip]
        let counters = [
            ("restrictor_tls_reloads", "Serving certificates loaded (the first one included)", &self.tls_reloads),
            ("restrictor_tls_reload_errors", "Serving certificates rejected (unparsable, or key not matching)", &self.tls_reload_errors),
            ("restrictor_policy_reloads", "Policies loaded (the first one included)", &self.policy_reloads),
            ("restrictor_policy_reload_errors", "Policy files rejected; the previous policy stayed in force", &self.policy_reload_errors),
            ("restrictor_tls_handshake_errors", "TLS handshakes that failed or timed out", &self.tls_handshake_errors),
        ];
        for (name, help, counter) in counters {
            r.register(name, help, counter.clone());
        }
        #[rustfmt::skip]
        let gauges = [
            ("restrictor_certificate_expiry_timestamp_seconds", "notAfter of the serving certificate, unix seconds (0: none loaded)", &self.certificate_expiry),
            ("restrictor_open_connections", "TLS connections currently open", &self.open_connections),
        ];
        for (name, help, gauge) in gauges {
            r.register(name, help, gauge.clone());
        }
        r.register(
            "restrictor_admission_denials",
            "Denials, by the Pod Security control that caused them (a denial naming two controls counts under both; malformed: the review could not be read)",
            Listed(self.denials.clone()),
        );
        r.register(
            "restrictor_reconcile_actions",
            "What the reconcile of existing workloads did, by action",
            Listed(self.reconcile_actions.clone()),
        );
        self
    }

    /// Counts one answered request and its latency. Pass the operation and kind the summary
    /// already owns: an owned label is moved, not copied, unless it starts a new series.
    pub(crate) fn observe(
        &self,
        operation: impl Into<Cow<'static, str>>,
        kind: impl Into<Cow<'static, str>>,
        outcome: Disposition,
        took: Duration,
    ) {
        self.count_request(RequestLabels {
            operation: operation.into(),
            kind: kind.into(),
            outcome,
        });
        self.duration.observe(took);
    }

    fn count_request(&self, labels: RequestLabels) {
        if let Some(counter) = self.requests.get(&labels) {
            counter.inc();
            return;
        }
        let mut series = self
            .request_series
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let labels = if *series >= MAX_SERIES && self.requests.get(&labels).is_none() {
            RequestLabels {
                operation: Cow::Borrowed("other"),
                kind: Cow::Borrowed("other"),
                outcome: labels.outcome,
            }
        } else {
            labels
        };
        if self.requests.get(&labels).is_none() {
            *series += 1;
        }
        self.requests.get_or_create(&labels).inc();
    }

    /// Counts one denial under each control it names (a Pod Security control, or
    /// [`DENIAL_MALFORMED`]); a denial naming none is counted under [`DENIAL_OTHER`]. Only names
    /// written into the binary can be labels, so the set is bounded.
    pub(crate) fn denied(&self, reasons: &[&'static str]) {
        let count = |reason| self.denials.get_or_create(&DenialLabels { reason }).inc();
        if reasons.is_empty() {
            count(DENIAL_OTHER);
        }
        for reason in reasons {
            count(reason);
        }
    }

    /// Counts one action of the reconcile of existing workloads (`ReconcileEvent::action()`:
    /// restarted, reported, failed, waiting-for-webhook, still-failing).
    pub fn reconcile_action(&self, action: &'static str) {
        self.reconcile_actions
            .get_or_create(&ActionLabels { action })
            .inc();
    }

    /// The Prometheus text exposition (format 0.0.4, [`CONTENT_TYPE`]).
    pub(crate) fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        // Writing into a String cannot fail, and every registered metric encodes infallibly.
        if let Err(error) =
            prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
        {
            tracing::error!(%error, "cannot encode the metrics");
        }
        out
    }
}

/// A family whose `# HELP` and `# TYPE` lines are listed before its first series, as the
/// hand-written exposition did (prometheus-client leaves an empty family out).
#[derive(Debug)]
struct Listed<F>(F);

impl<F: EncodeMetric> EncodeMetric for Listed<F> {
    fn encode(&self, encoder: MetricEncoder) -> Result<(), fmt::Error> {
        self.0.encode(encoder)
    }

    fn metric_type(&self) -> MetricType {
        self.0.metric_type()
    }
}

/// A histogram with fixed buckets counted in atomics. prometheus-client's own `Histogram` takes a
/// mutex on every observation, which every admission request would contend for.
#[derive(Debug, Clone, Default)]
struct LatencyHistogram {
    inner: std::sync::Arc<HistogramCounts>,
}

#[derive(Debug, Default)]
struct HistogramCounts {
    /// Observations per bucket (not cumulative); the last slot is above the largest bound.
    buckets: [AtomicU64; BUCKETS.len() + 1],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

impl LatencyHistogram {
    fn observe(&self, took: Duration) {
        let secs = took.as_secs_f64();
        let slot = BUCKETS
            .iter()
            .position(|bound| secs <= *bound)
            .unwrap_or(BUCKETS.len());
        let counts = &self.inner;
        counts.buckets[slot].fetch_add(1, Relaxed);
        counts.count.fetch_add(1, Relaxed);
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        counts.sum_nanos.fetch_add(nanos, Relaxed);
    }
}

impl TypedMetric for LatencyHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for LatencyHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), fmt::Error> {
        let counts = &self.inner;
        let buckets: Vec<(f64, u64)> = BUCKETS
            .iter()
            .chain(std::iter::once(&f64::INFINITY))
            .zip(&counts.buckets)
            .map(|(bound, n)| (*bound, n.load(Relaxed)))
            .collect();
        let sum = counts.sum_nanos.load(Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, counts.count.load(Relaxed), &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The exposition holds each of `expected`; a failure shows which is missing, and the text.
    fn assert_renders(m: &Metrics, expected: &[&str]) {
        let text = m.render();
        for needle in expected {
            assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
        }
    }

    #[test]
    fn renders_counts_and_histogram() {
        let m = Metrics::new();
        m.observe(
            "CREATE",
            "Pod",
            Disposition::Patched,
            Duration::from_micros(30),
        );
        m.observe(
            "CREATE",
            "Pod",
            Disposition::Patched,
            Duration::from_millis(3),
        );
        m.observe("", "", Disposition::Invalid, Duration::from_micros(10));
        assert_renders(
            &m,
            &[
                "restrictor_admission_requests_total{operation=\"CREATE\",kind=\"Pod\",outcome=\"patched\"} 2",
                "outcome=\"invalid\"} 1",
                // The bound is written as client_golang writes it (was "0.00005" before prometheus-client).
                "restrictor_admission_duration_seconds_bucket{le=\"5e-05\"} 2",
                "restrictor_admission_duration_seconds_bucket{le=\"+Inf\"} 3",
                "restrictor_admission_duration_seconds_count 3",
                "restrictor_policy_reload_errors_total 0",
            ],
        );
    }

    #[test]
    fn the_exposition_keeps_its_names_types_and_format() {
        let m = Metrics::new();
        m.certificate_expiry.set(1_900_000_000);
        m.tls_reloads.inc();
        m.open_connections.inc();
        m.observe(
            "UPDATE",
            "Deployment",
            Disposition::Unchanged,
            Duration::from_secs(2),
        );
        let text = m.render();
        for line in [
            "# HELP restrictor_admission_requests_total Admission requests answered, by operation, kind and outcome.",
            "# TYPE restrictor_admission_requests_total counter",
            "# TYPE restrictor_admission_duration_seconds histogram",
            "restrictor_admission_duration_seconds_bucket{le=\"1\"} 0",
            "restrictor_admission_duration_seconds_bucket{le=\"+Inf\"} 1",
            "restrictor_tls_reloads_total 1",
            "# TYPE restrictor_certificate_expiry_timestamp_seconds gauge",
            "restrictor_certificate_expiry_timestamp_seconds 1900000000",
            "restrictor_open_connections 1",
            "restrictor_tls_handshake_errors_total 0",
            "# TYPE restrictor_admission_denials_total counter",
            "# TYPE restrictor_reconcile_actions_total counter",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line:?} missing from:\n{text}"
            );
        }
        let sum = text
            .lines()
            .find_map(|l| l.strip_prefix("restrictor_admission_duration_seconds_sum "))
            .and_then(|v| v.parse::<f64>().ok());
        assert_eq!(sum, Some(2.0), "{text}");
        assert!(!text.contains("# EOF"), "{text}");
    }

    #[test]
    fn denials_and_reconcile_actions_are_counted_by_label() {
        let m = Metrics::new();
        m.denied(&["Host Namespaces", "HostPorts"]);
        m.denied(&["Host Namespaces"]);
        m.denied(&[DENIAL_MALFORMED]);
        m.denied(&[]);
        m.reconcile_action("restarted");
        assert_renders(
            &m,
            &[
                "restrictor_admission_denials_total{reason=\"Host Namespaces\"} 2",
                "restrictor_admission_denials_total{reason=\"HostPorts\"} 1",
                "restrictor_admission_denials_total{reason=\"malformed\"} 1",
                "restrictor_admission_denials_total{reason=\"other\"} 1",
                "restrictor_reconcile_actions_total{action=\"restarted\"} 1",
            ],
        );
    }

    #[test]
    fn label_sets_are_bounded() {
        let m = Metrics::new();
        for i in 0..1000 {
            m.observe(
                "CREATE",
                format!("Kind{i}"),
                Disposition::Unchanged,
                Duration::ZERO,
            );
        }
        let text = m.render();
        let series = text
            .lines()
            .filter(|l| l.starts_with("restrictor_admission_requests_total{"))
            .count();
        assert!(series <= MAX_SERIES + 1, "{series}");
        assert!(text.contains("kind=\"other\""));
    }

    #[test]
    fn label_values_are_escaped() {
        let m = Metrics::new();
        m.observe("CREATE", "a\"b\\c\nd", Disposition::Denied, Duration::ZERO);
        assert!(m.render().contains("kind=\"a\\\"b\\\\c\\nd\""));
    }
}
