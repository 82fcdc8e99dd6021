//! The AdmissionReview envelope. (Skeleton: replaced by the full implementation on main.)

use crate::policy::Policy;

/// What became of one admission request, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Patched,
    Unchanged,
    Denied,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Patched => "patched",
            Self::Unchanged => "unchanged",
            Self::Denied => "denied",
        }
    }
}

/// The facts about one answered review that logs and metrics print.
#[derive(Debug, Clone)]
pub struct Summary {
    pub uid: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub operation: String,
    pub dry_run: bool,
    pub outcome: Outcome,
    pub changes: Vec<String>,
}

/// A review answered: the serialized `AdmissionReview` response, sent with HTTP 200.
#[derive(Debug)]
pub struct Answer {
    pub body: Vec<u8>,
    pub summary: Summary,
}

/// A request that is not an answerable AdmissionReview (answered with HTTP 400).
#[derive(Debug, thiserror::Error)]
pub enum AdmissionError {
    #[error("request body is empty")]
    EmptyBody,
    #[error("request body is not an AdmissionReview: {0}")]
    Malformed(String),
}

/// Parses one AdmissionReview request body and answers it under `policy`.
pub fn review(body: &[u8], _policy: &Policy) -> Result<Answer, AdmissionError> {
    if body.is_empty() {
        return Err(AdmissionError::EmptyBody);
    }
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| AdmissionError::Malformed(e.to_string()))?;
    let uid = value
        .pointer("/request/uid")
        .and_then(|u| u.as_str())
        .ok_or_else(|| AdmissionError::Malformed("request.uid is missing".into()))?
        .to_owned();
    let response = serde_json::json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": {"uid": uid, "allowed": true},
    });
    Ok(Answer {
        body: response.to_string().into_bytes(),
        summary: Summary {
            uid,
            kind: String::new(),
            namespace: String::new(),
            name: String::new(),
            operation: String::new(),
            dry_run: false,
            outcome: Outcome::Unchanged,
            changes: Vec::new(),
        },
    })
}
