//! The plain-HTTP admin listener (`/livez`, `/readyz`, `/metrics`) and the readiness state.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use super::metrics::Metrics;

/// Readiness of the server: ready when every registered condition is true and the server is not
/// draining. Cheap to clone; all clones share the same state.
#[derive(Clone, Default)]
pub struct Readiness {
    inner: Arc<ReadinessInner>,
}

#[derive(Default)]
struct ReadinessInner {
    draining: AtomicBool,
    conditions: Mutex<Vec<(String, Arc<AtomicBool>)>>,
}

/// One readiness condition, false until [`Condition::set`] says otherwise.
#[derive(Clone, Debug)]
pub struct Condition {
    flag: Arc<AtomicBool>,
}

impl Condition {
    /// Marks the condition met (`true`) or not.
    pub fn set(&self, ok: bool) {
        self.flag.store(ok, Ordering::SeqCst);
    }
}

impl Readiness {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Registers a condition the server must meet before it reports ready (initially unmet).
    /// Registering the same name again returns the existing condition.
    pub fn condition(&self, name: &str) -> Condition {
        let mut v = self
            .inner
            .conditions
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some((_, flag)) = v.iter().find(|(n, _)| n == name) {
            return Condition { flag: flag.clone() };
        }
        let flag = Arc::new(AtomicBool::new(false));
        v.push((name.to_owned(), flag.clone()));
        Condition { flag }
    }

    /// True when all conditions are met and the server is not draining.
    pub fn is_ready(&self) -> bool {
        self.unmet().is_empty()
    }

    /// The names of the unmet conditions ("draining" while shutting down).
    pub(crate) fn unmet(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.is_draining() {
            out.push("draining".to_owned());
        }
        let v = self
            .inner
            .conditions
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        out.extend(
            v.iter()
                .filter(|(_, f)| !f.load(Ordering::SeqCst))
                .map(|(n, _)| n.clone()),
        );
        out
    }

    pub(crate) fn is_draining(&self) -> bool {
        self.inner.draining.load(Ordering::SeqCst)
    }

    pub(crate) fn set_draining(&self) {
        self.inner.draining.store(true, Ordering::SeqCst);
    }
}

#[derive(Clone)]
struct AdminState {
    readiness: Readiness,
    metrics: Arc<Metrics>,
}

pub(crate) fn router(readiness: Readiness, metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/livez", get(|| async { "ok\n" }))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(AdminState { readiness, metrics })
}

async fn readyz(State(s): State<AdminState>) -> impl IntoResponse {
    let unmet = s.readiness.unmet();
    if unmet.is_empty() {
        (StatusCode::OK, "ok\n".to_owned())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", unmet.join(", ")),
        )
    }
}

async fn metrics_text(State(s): State<AdminState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, super::metrics::CONTENT_TYPE)],
        s.metrics.render(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_needs_every_condition_and_no_drain() {
        let r = Readiness::new();
        assert!(r.is_ready());
        let tls = r.condition("tls");
        let _ca = r.condition("ca-bundle-injected");
        assert_eq!(r.unmet(), vec!["tls", "ca-bundle-injected"]);
        tls.set(true);
        r.condition("ca-bundle-injected").set(true);
        assert!(r.is_ready());
        r.set_draining();
        assert_eq!(r.unmet(), vec!["draining"]);
    }
}
