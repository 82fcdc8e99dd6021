//! One error type for everything that talks to the API server, with a clear message for 403s.

use crate::certs::CertError;

/// Which API call failed: the verb and resource as RBAC names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiCall {
    /// RBAC verb: `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`.
    pub verb: &'static str,
    /// API group, `""` for the core group.
    pub group: &'static str,
    /// Plural resource: `secrets`, `mutatingwebhookconfigurations`, ...
    pub resource: &'static str,
    /// Object name; `None` for collection calls (list, create without a name known).
    pub name: Option<String>,
    /// Namespace; `None` for cluster-scoped resources.
    pub namespace: Option<String>,
}

impl ApiCall {
    pub fn new(verb: &'static str, group: &'static str, resource: &'static str) -> Self {
        Self {
            verb,
            group,
            resource,
            name: None,
            namespace: None,
        }
    }
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = Some(namespace.into());
        self
    }
    /// `resource.group` (`secrets` for the core group), as `kubectl auth can-i` spells it.
    pub fn group_resource(&self) -> String {
        if self.group.is_empty() {
            self.resource.to_string()
        } else {
            format!("{}.{}", self.resource, self.group)
        }
    }
    /// `"name"`, `"name" in namespace "ns"` or `in namespace "ns"`.
    pub fn target(&self) -> String {
        match (&self.name, &self.namespace) {
            (Some(n), Some(ns)) => format!("{n:?} in namespace {ns:?}"),
            (Some(n), None) => format!("{n:?}"),
            (None, Some(ns)) => format!("in namespace {ns:?}"),
            (None, None) => "(all)".to_string(),
        }
    }
    fn rbac_hint(&self) -> String {
        match &self.namespace {
            None => "check the chart's ClusterRole".to_string(),
            Some(ns) => format!("check the chart's Role/ClusterRole bound in namespace {ns:?}"),
        }
    }
}

/// Errors of the cluster side: API calls (a 403 is [`ClusterError::Forbidden`] with the missing
/// permission spelled out) and certificate material.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(
        "forbidden: cannot {verb} {resource} {target} — the ServiceAccount lacks verb {verb:?} on that resource; {hint}",
        verb = .call.verb, resource = .call.group_resource(), target = .call.target(), hint = .call.rbac_hint()
    )]
    Forbidden { call: ApiCall, message: String },
    #[error(
        "{verb} {resource} {target}: the API server answered {code} {reason}: {message}",
        verb = .call.verb, resource = .call.group_resource(), target = .call.target()
    )]
    Api {
        call: ApiCall,
        code: u16,
        reason: String,
        message: String,
    },
    #[error(
        "{verb} {resource} {target}: {source}",
        verb = .call.verb, resource = .call.group_resource(), target = .call.target()
    )]
    Client {
        call: ApiCall,
        #[source]
        source: kube::Error,
    },
    #[error(
        "lost the reconcile lease {lease:?} to another replica; stopped before restarting more workloads"
    )]
    LeaseLost { lease: String },
    #[error("certificate material: {0}")]
    Cert(#[from] CertError),
    #[error("{0}")]
    Other(String),
}

impl ClusterError {
    /// Wraps a `kube` error with the call it came from.
    pub fn from_kube(call: ApiCall, err: kube::Error) -> Self {
        match err {
            kube::Error::Api(status) if status.code == 403 => Self::Forbidden {
                call,
                message: status.message,
            },
            kube::Error::Api(status) => Self::Api {
                call,
                code: status.code,
                reason: status.reason,
                message: status.message,
            },
            source => Self::Client { call, source },
        }
    }
    /// The HTTP status of an API error, if any.
    pub fn code(&self) -> Option<u16> {
        match self {
            Self::Forbidden { .. } => Some(403),
            Self::Api { code, .. } => Some(*code),
            _ => None,
        }
    }
    pub fn is_conflict(&self) -> bool {
        self.code() == Some(409)
    }
    pub fn is_not_found(&self) -> bool {
        self.code() == Some(404)
    }
    /// Whether an admission webhook (restrictor or another) refused the request. The API server
    /// answers such a refusal with the webhook's status, 403 by default, which is no RBAC problem.
    pub fn is_admission_denial(&self) -> bool {
        match self {
            Self::Forbidden { message, .. } | Self::Api { message, .. } => {
                message.contains("admission webhook") && message.contains("denied the request")
            }
            _ => false,
        }
    }
}

/// Runs `fut` and turns its `kube` error into a [`ClusterError`] for `call`.
pub(crate) async fn call<T>(
    call: ApiCall,
    fut: impl std::future::Future<Output = Result<T, kube::Error>>,
) -> Result<T, ClusterError> {
    fut.await.map_err(|e| ClusterError::from_kube(call, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forbidden_message_names_the_permission() {
        let status = kube::core::Status::failure("denied", "Forbidden").with_code(403);
        let err = ClusterError::from_kube(
            ApiCall::new(
                "patch",
                "admissionregistration.k8s.io",
                "mutatingwebhookconfigurations",
            )
            .name("restrictor"),
            kube::Error::Api(Box::new(status)),
        );
        assert_eq!(
            err.to_string(),
            "forbidden: cannot patch mutatingwebhookconfigurations.admissionregistration.k8s.io \"restrictor\" — the ServiceAccount lacks verb \"patch\" on that resource; check the chart's ClusterRole"
        );
    }
}
