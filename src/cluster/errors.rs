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
        "{verb} {resource} {target}: the API server's answer cannot be read: {detail}",
        verb = .call.verb, resource = .call.group_resource(), target = .call.target()
    )]
    Unreadable { call: ApiCall, detail: String },
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
    /// Wraps a `kube` error with the call it came from. Only a 403 from the authorizer is
    /// [`ClusterError::Forbidden`]: admission plugins (PodSecurity, ResourceQuota, LimitRanger,
    /// ValidatingAdmissionPolicy, webhooks) answer 403 too, and those say nothing about RBAC.
    pub fn from_kube(call: ApiCall, err: kube::Error) -> Self {
        match err {
            kube::Error::Api(status)
                if status.code == 403 && is_authorization_failure(&status.message) =>
            {
                Self::Forbidden {
                    call,
                    message: status.message,
                }
            }
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
    /// Whether the ServiceAccount lacks a permission (RBAC): the only API error that no retry
    /// can cure, so the one that stops a reconcile.
    pub fn is_rbac(&self) -> bool {
        matches!(self, Self::Forbidden { .. })
    }
}

/// Whether a 403's message has the authorizer's shape, `<resource> is forbidden: User "<user>"
/// cannot <verb> resource "<resource>" ...` (or `... cannot <verb> path "<path>"`), as the API
/// server's `forbiddenMessage` writes it. An admission plugin's 403 reads `<resource> "<name>" is
/// forbidden: <the plugin's reason>` instead.
pub(crate) fn is_authorization_failure(message: &str) -> bool {
    let Some((_, rest)) = message.split_once("is forbidden: User \"") else {
        return false;
    };
    let Some((_, after_user)) = rest.split_once("\" cannot ") else {
        return false;
    };
    let mut words = after_user.splitn(3, ' ');
    let verb = words.next().unwrap_or_default();
    let noun = words.next().unwrap_or_default();
    let target = words.next().unwrap_or_default();
    !verb.is_empty() && matches!(noun, "resource" | "path") && target.starts_with('"')
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

    const RBAC_DENIAL: &str = "mutatingwebhookconfigurations.admissionregistration.k8s.io \"restrictor\" is forbidden: User \"system:serviceaccount:restrictor:restrictor\" cannot patch resource \"mutatingwebhookconfigurations\" in API group \"admissionregistration.k8s.io\" at the cluster scope";

    #[test]
    fn only_the_authorizers_403_is_rbac() {
        assert!(is_authorization_failure(RBAC_DENIAL));
        assert!(is_authorization_failure(
            "pods is forbidden: User \"system:serviceaccount:r:r\" cannot create resource \"pods\" in API group \"\" in the namespace \"n\""
        ));
        for admission in [
            "pods \"restrictor-probe-x\" is forbidden: violates PodSecurity \"restricted:latest\": allowPrivilegeEscalation != false (container \"probe-0\" must set securityContext.allowPrivilegeEscalation=false)",
            "pods \"restrictor-probe-x\" is forbidden: exceeded quota: compute, requested: pods=1, used: pods=10, limited: pods=10",
            "pods \"restrictor-probe-x\" is forbidden: failed quota: compute: must specify limits.cpu for: probe-0",
            "pods \"restrictor-probe-x\" is forbidden: ValidatingAdmissionPolicy 'limits' with binding 'limits' denied request: no limits",
            "admission webhook \"kyverno.svc\" denied the request: no",
            "Forbidden",
        ] {
            assert!(!is_authorization_failure(admission), "{admission}");
            let status = kube::core::Status::failure(admission, "Forbidden").with_code(403);
            let err = ClusterError::from_kube(
                ApiCall::new("create", "", "pods").namespace("n"),
                kube::Error::Api(Box::new(status)),
            );
            assert!(!err.is_rbac(), "{err}");
            assert_eq!(err.code(), Some(403));
        }
    }

    #[test]
    fn forbidden_message_names_the_permission() {
        let status = kube::core::Status::failure(RBAC_DENIAL, "Forbidden").with_code(403);
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
