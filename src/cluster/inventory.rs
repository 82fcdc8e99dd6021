//! Lists every pod-bearing object (the kinds of [`WorkloadKind::ALL`]) in some namespaces or all
//! of them, page by page, as plain JSON: nothing is dropped by a typed schema, and each item gets
//! back the `apiVersion` and `kind` the API server leaves out of list items. The audit lists
//! through it, and so does the reconcile.
//!
//! RBAC: `list` on each of the nine resources, in the namespaces listed (a ClusterRole for
//! `--all-namespaces`). Nothing is written.

use kube::api::{ApiResource, GroupVersionKind, ListParams};
use serde_json::Value;

use crate::workload::WorkloadKind;

/// Items per list page: bounded memory per call, as kubectl pages (it asks for 500).
const PAGE_SIZE: u32 = 500;

/// Which namespaces to list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Namespaces {
    /// One cluster-wide list per kind.
    All,
    /// One list per kind and namespace.
    Only(Vec<String>),
}

/// Where a list was made, for messages: `in namespace "x"` or `in all namespaces`.
fn scope_text(namespace: Option<&str>) -> String {
    match namespace {
        Some(namespace) => format!("in namespace {namespace:?}"),
        None => "in all namespaces".to_owned(),
    }
}

/// A list that failed, naming the resource and where (`deployments.apps in namespace "x"`).
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error(
        "forbidden: cannot list {resource} {scope}: {message} (the audit needs verb \"list\" on {resource})"
    )]
    Forbidden {
        resource: String,
        scope: String,
        message: String,
    },
    #[error("list {resource} {scope}: the API server answered {code} {reason}: {message}")]
    Api {
        resource: String,
        scope: String,
        code: u16,
        reason: String,
        message: String,
    },
    #[error("cannot reach the Kubernetes API server (listing {resource} {scope}): {source}")]
    Unreachable {
        resource: String,
        scope: String,
        #[source]
        source: kube::Error,
    },
    #[error("list {resource} {scope}: the API server's answer is not a list: {detail}")]
    NotAList {
        resource: String,
        scope: String,
        detail: String,
    },
}

/// `deployments.apps`, `pods`: the resource as RBAC and `kubectl auth can-i` name it.
pub fn group_resource(kind: WorkloadKind) -> String {
    match kind.group() {
        "" => kind.plural().to_owned(),
        group => format!("{}.{group}", kind.plural()),
    }
}

fn collection_path(kind: WorkloadKind, namespace: Option<&str>) -> String {
    let prefix = match kind.group() {
        "" => format!("/api/{}", kind.version()),
        group => format!("/apis/{group}/{}", kind.version()),
    };
    match namespace {
        Some(namespace) => format!("{prefix}/namespaces/{namespace}/{}", kind.plural()),
        None => format!("{prefix}/{}", kind.plural()),
    }
}

/// Every object of the nine pod-bearing kinds in `namespaces`, owners' kinds first (the order of
/// [`WorkloadKind::ALL`]), each list in the API server's order.
pub async fn list_pod_bearing(
    client: &kube::Client,
    namespaces: &Namespaces,
) -> Result<Vec<Value>, InventoryError> {
    let scopes: Vec<Option<&str>> = match namespaces {
        Namespaces::All => vec![None],
        Namespaces::Only(names) => names.iter().map(|n| Some(n.as_str())).collect(),
    };
    let mut objects = Vec::new();
    for kind in WorkloadKind::ALL {
        for namespace in &scopes {
            list_kind(client, kind, *namespace, &mut objects).await?;
        }
    }
    Ok(objects)
}

/// One kind in one scope, following `continue` tokens until the last page, appended to `into`.
async fn list_kind(
    client: &kube::Client,
    kind: WorkloadKind,
    namespace: Option<&str>,
    into: &mut Vec<Value>,
) -> Result<(), InventoryError> {
    let items = list_pages(client, kind, namespace)
        .await
        .map_err(|failure| {
            let (resource, scope) = (group_resource(kind), scope_text(namespace));
            match failure {
                ListFailure::Request(error) => classify(error, resource, scope),
                ListFailure::NotAList(detail) => InventoryError::NotAList {
                    resource,
                    scope,
                    detail,
                },
            }
        })?;
    into.extend(items);
    Ok(())
}

/// Why a list failed, for the caller to name in its own terms (the audit's messages, the
/// reconcile's RBAC handling).
#[derive(Debug)]
pub enum ListFailure {
    /// The request failed: the API server's status, or no answer at all.
    Request(kube::Error),
    /// The answer was not a list.
    NotAList(String),
}

/// Every object of `kind` in one scope (a namespace, or all of them with `None`), page by page,
/// each item with the `apiVersion` and `kind` restored.
pub async fn list_pages(
    client: &kube::Client,
    kind: WorkloadKind,
    namespace: Option<&str>,
) -> Result<Vec<Value>, ListFailure> {
    let request = kube::core::Request::new(collection_path(kind, namespace));
    let mut objects = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut params = ListParams::default().limit(PAGE_SIZE);
        if let Some(token) = &token {
            params = params.continue_token(token);
        }
        let http_request = request
            .list(&params)
            .map_err(|error| ListFailure::NotAList(error.to_string()))?;
        let page: Value = client
            .request(http_request)
            .await
            .map_err(ListFailure::Request)?;
        let Some(items) = page.get("items").and_then(Value::as_array) else {
            return Err(ListFailure::NotAList("no items".to_owned()));
        };
        objects.extend(items.iter().map(|item| {
            let mut item = item.clone();
            if let Some(map) = item.as_object_mut() {
                map.insert("apiVersion".into(), kind.api_version().into());
                map.insert("kind".into(), kind.as_str().into());
            }
            item
        }));
        token = page
            .pointer("/metadata/continue")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .map(str::to_owned);
        if token.is_none() {
            return Ok(objects);
        }
    }
}

/// The kind as `kube`'s dynamic API addresses it, for calls on one object (a restart's patch).
pub fn api_resource(kind: WorkloadKind) -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(kind.group(), kind.version(), kind.as_str()),
        kind.plural(),
    )
}

fn classify(error: kube::Error, resource: String, scope: String) -> InventoryError {
    match error {
        kube::Error::Api(status) if status.code == 403 => InventoryError::Forbidden {
            resource,
            scope,
            message: status.message,
        },
        kube::Error::Api(status) => InventoryError::Api {
            resource,
            scope,
            code: status.code,
            reason: status.reason,
            message: status.message,
        },
        kube::Error::SerdeError(error) => InventoryError::NotAList {
            resource,
            scope,
            detail: error.to_string(),
        },
        source => InventoryError::Unreachable {
            resource,
            scope,
            source,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_resource_names_follow_the_kind_table() {
        assert_eq!(
            collection_path(WorkloadKind::Deployment, Some("x")),
            "/apis/apps/v1/namespaces/x/deployments"
        );
        assert_eq!(collection_path(WorkloadKind::Pod, None), "/api/v1/pods");
        assert_eq!(
            collection_path(WorkloadKind::CronJob, None),
            "/apis/batch/v1/cronjobs"
        );
        assert_eq!(group_resource(WorkloadKind::Deployment), "deployments.apps");
        assert_eq!(
            group_resource(WorkloadKind::ReplicationController),
            "replicationcontrollers"
        );
    }

    #[test]
    fn a_403_names_the_resource_verb_and_namespace() {
        let status = kube::core::Status::failure("deployments.apps is forbidden", "Forbidden")
            .with_code(403);
        let error = classify(
            kube::Error::Api(Box::new(status)),
            group_resource(WorkloadKind::Deployment),
            scope_text(Some("team-a")),
        );
        assert!(
            error.to_string().starts_with(
                "forbidden: cannot list deployments.apps in namespace \"team-a\": deployments.apps is forbidden"
            ),
            "{error}"
        );
    }
}
