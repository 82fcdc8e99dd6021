//! The admission request path: HTTP checks, body reading under the caller's deadline, the review
//! itself (inline: it is pure and takes tens of microseconds), metrics and the log line.

use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, Version, header};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;

use super::ReviewFn;
use super::admin::Readiness;
use super::duration::parse_go_duration;
use super::metrics::{DENIAL_MALFORMED, Metrics};
use crate::admission::{Answer, Disposition};
use crate::policy::Policy;

/// The path the API server posts reviews to.
pub(crate) const MUTATE_PATH: &str = "/mutate";

/// Longest deadline a caller may ask for with `?timeout=` (the API server allows at most 30 s).
const MAX_TIMEOUT: Duration = Duration::from_secs(60);

/// What the request path shares across connections.
pub(crate) struct Shared {
    pub handler: ReviewFn,
    pub policy: ArcSwap<Policy>,
    pub metrics: Arc<Metrics>,
    pub readiness: Readiness,
    pub max_body_bytes: usize,
    pub default_timeout: Duration,
    pub on_denied_pod: Option<super::DeniedPodHook>,
}

type Resp = Response<Full<Bytes>>;

fn text(status: StatusCode, msg: impl Into<Bytes>) -> Resp {
    let mut r = Response::new(Full::new(msg.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// Answers one request. Never panics on anything the request controls; a panic inside the
/// review handler is caught and answered 500.
pub(crate) async fn handle(shared: &Shared, req: Request<Incoming>) -> Resp {
    let start = Instant::now();
    let version = req.version();
    let mut resp = answer(shared, req, start).await;
    if shared.readiness.is_draining() && version <= Version::HTTP_11 {
        // Tell a keep-alive client to go elsewhere once this answer is in.
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

async fn answer(shared: &Shared, req: Request<Incoming>, start: Instant) -> Resp {
    let invalid = |status: StatusCode, msg: String| {
        shared
            .metrics
            .observe("", "", Disposition::Invalid, start.elapsed());
        tracing::warn!(status = status.as_u16(), error = %msg, "admission request rejected");
        text(status, format!("{msg}\n"))
    };

    if req.uri().path() != MUTATE_PATH {
        return invalid(
            StatusCode::NOT_FOUND,
            format!("no such path; reviews go to {MUTATE_PATH}"),
        );
    }
    if req.method() != Method::POST {
        let mut r = invalid(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("method {} not allowed; use POST", req.method()),
        );
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return r;
    }
    if let Err(msg) = check_content_type(req.headers().get(header::CONTENT_TYPE)) {
        return invalid(StatusCode::BAD_REQUEST, msg);
    }
    let timeout = match req.uri().query().map(timeout_param) {
        None | Some(Ok(None)) => shared.default_timeout,
        Some(Ok(Some(t))) => t.min(MAX_TIMEOUT),
        Some(Err(msg)) => return invalid(StatusCode::BAD_REQUEST, msg),
    };
    let deadline = start + timeout;

    let limit = shared.max_body_bytes;
    if let Some(len) = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && len > limit as u64
    {
        return invalid(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body of {len} bytes exceeds the limit of {limit} bytes"),
        );
    }
    let body = Limited::new(req.into_body(), limit);
    let body = match tokio::time::timeout_at(deadline.into(), body.collect()).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) if e.is::<LengthLimitError>() => {
            return invalid(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body exceeds the limit of {limit} bytes"),
            );
        }
        Ok(Err(e)) => {
            return invalid(
                StatusCode::BAD_REQUEST,
                format!("cannot read request body: {e}"),
            );
        }
        Err(_) => {
            return invalid(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "request body not received within the {} ms deadline",
                    timeout.as_millis()
                ),
            );
        }
    };

    let policy = shared.policy.load();
    let handler = shared.handler;
    // The review is the only code on this path a bug could make panic. Catching it here answers
    // 500 with a message and keeps the connection, at no cost per request; tower-http's
    // CatchPanicLayer would box every response body to do the same.
    let result = std::panic::catch_unwind(AssertUnwindSafe(|| handler(&body, &policy)));
    drop(policy);
    match result {
        Ok(Ok(Answer { body, summary: s })) => {
            let took = start.elapsed();
            tracing::info!(
                uid = %s.uid,
                kind = %s.kind,
                namespace = %s.namespace,
                name = %s.name,
                operation = %s.operation,
                outcome = s.disposition.as_str(),
                dry_run = s.dry_run,
                changes = %Joined(&s.changes),
                duration_us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
                "admission"
            );
            if s.disposition == Disposition::Denied {
                shared.metrics.denied(&s.denied_by);
                if let (Some(hook), Some(pod), false) =
                    (&shared.on_denied_pod, &s.denied_pod, s.dry_run)
                {
                    (hook.0)(&s, pod);
                }
            }
            // The summary's own strings become the labels: nothing is copied per request.
            shared
                .metrics
                .observe(s.operation, s.kind, s.disposition, took);
            let mut r = Response::new(Full::new(Bytes::from(body)));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            r
        }
        Ok(Err(e)) => {
            shared.metrics.denied(&[DENIAL_MALFORMED]);
            invalid(StatusCode::BAD_REQUEST, e.to_string())
        }
        Err(_) => {
            shared
                .metrics
                .observe("", "", Disposition::Error, start.elapsed());
            tracing::error!("admission handler panicked; answered 500");
            text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal error while reviewing the request\n",
            )
        }
    }
}

/// `application/json`, optionally with `charset=utf-8`.
fn check_content_type(value: Option<&HeaderValue>) -> Result<(), String> {
    let Some(value) = value else {
        return Err("Content-Type must be application/json (none given)".into());
    };
    let bad = || {
        Err(format!(
            "Content-Type must be application/json, not {:?}",
            String::from_utf8_lossy(value.as_bytes())
        ))
    };
    let Ok(s) = value.to_str() else {
        return bad();
    };
    let mut parts = s.split(';');
    let media = parts.next().unwrap_or("").trim();
    if !media.eq_ignore_ascii_case("application/json") {
        return bad();
    }
    for param in parts {
        let param = param.trim();
        if param.is_empty() {
            continue;
        }
        let (k, v) = param.split_once('=').unwrap_or((param, ""));
        let v = v.trim().trim_matches('"');
        if !(k.trim().eq_ignore_ascii_case("charset") && v.eq_ignore_ascii_case("utf-8")) {
            return bad();
        }
    }
    Ok(())
}

/// The `timeout` query parameter, if present.
fn timeout_param(query: &str) -> Result<Option<Duration>, String> {
    for pair in query.split('&') {
        if let Some(v) = pair.strip_prefix("timeout=") {
            return match parse_go_duration(v) {
                Some(d) if !d.is_zero() => Ok(Some(d)),
                _ => Err(format!(
                    "invalid timeout {v:?}: want a positive duration such as 10s, 1m30s or 500ms"
                )),
            };
        }
    }
    Ok(None)
}

/// Displays a list joined with "; " without building the joined string.
struct Joined<'a, T>(&'a [T]);

impl<T: fmt::Display> fmt::Display for Joined<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, item) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{item}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeout_query() {
        assert_eq!(
            timeout_param("timeout=10s"),
            Ok(Some(Duration::from_secs(10)))
        );
        assert_eq!(
            timeout_param("a=b&timeout=1m"),
            Ok(Some(Duration::from_secs(60)))
        );
        assert_eq!(timeout_param("a=b"), Ok(None));
        assert!(timeout_param("timeout=soon").is_err());
        assert!(timeout_param("timeout=0").is_err());
        assert!(timeout_param("timeout=").is_err());
    }

    #[test]
    fn content_types() {
        let ok = |s: &'static str| check_content_type(Some(&HeaderValue::from_static(s)));
        assert!(ok("application/json").is_ok());
        assert!(ok("Application/JSON").is_ok());
        assert!(ok("application/json; charset=utf-8").is_ok());
        assert!(ok("application/json;charset=\"UTF-8\"").is_ok());
        assert!(ok("application/json; charset=latin1").is_err());
        assert!(ok("text/plain").is_err());
        assert!(ok("application/jsonx").is_err());
        assert!(ok("application/yaml").is_err());
        assert!(check_content_type(None).is_err());
    }

    #[test]
    fn joined() {
        let v = vec!["a".to_owned(), "b".to_owned()];
        assert_eq!(Joined(&v).to_string(), "a; b");
        assert_eq!(Joined::<String>(&[]).to_string(), "");
    }
}
