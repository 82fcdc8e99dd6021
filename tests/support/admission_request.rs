//! The admission requests a Kubernetes API server makes, and the AdmissionReview v1 it POSTs for
//! one (the shape of `examples/agent-pod.admissionreview.yaml`).

use std::collections::BTreeMap;

use serde_json::{Value, json};

/// Kinds without a namespace, among those the fixtures and the chart hold.
pub const CLUSTER_SCOPED: &[&str] = &[
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "PriorityClass",
    "CustomResourceDefinition",
    "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration",
    "APIService",
    "StorageClass",
    "PersistentVolume",
    "Node",
];

/// (group, version, resource) of an object's kind, as the API server's REST mapping names it.
pub fn gvr(object: &Value) -> (String, String, String) {
    let api_version = object["apiVersion"].as_str().unwrap_or("v1");
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let kind = object["kind"].as_str().unwrap_or_default();
    let resource = match kind {
        "PodSecurityPolicy" => "podsecuritypolicies".to_owned(),
        "NetworkPolicy" => "networkpolicies".to_owned(),
        "PriorityClass" => "priorityclasses".to_owned(),
        k if k.ends_with('s') => format!("{}es", k.to_lowercase()),
        k if k.ends_with('y') => format!("{}ies", &k.to_lowercase()[..k.len() - 1]),
        k => format!("{}s", k.to_lowercase()),
    };
    (group.to_owned(), version.to_owned(), resource)
}

/// An object's labels (a label with a non-string value reads as empty).
pub fn labels_of(object: &Value) -> BTreeMap<String, String> {
    object["metadata"]["labels"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

/// One admission request the API server is about to make.
#[derive(Clone, Debug)]
pub struct AdmissionRequest {
    /// What the test calls it, for messages.
    pub what: String,
    pub operation: &'static str,
    /// Empty for a cluster-scoped object.
    pub namespace: String,
    pub object: Value,
    pub old_object: Option<Value>,
    pub sub_resource: Option<&'static str>,
}

impl AdmissionRequest {
    pub fn create(what: impl Into<String>, namespace: &str, object: Value) -> Self {
        Self {
            what: what.into(),
            operation: "CREATE",
            namespace: namespace.to_owned(),
            object,
            old_object: None,
            sub_resource: None,
        }
    }

    pub fn update(what: impl Into<String>, namespace: &str, old: Value, new: Value) -> Self {
        Self {
            what: what.into(),
            operation: "UPDATE",
            namespace: namespace.to_owned(),
            object: new,
            old_object: Some(old),
            sub_resource: None,
        }
    }

    /// The AdmissionReview v1 the API server sends; `subResource` and `name` are omitted when
    /// empty, as the API server's JSON (omitempty) omits them.
    pub fn review(&self, uid: &str) -> Value {
        let (group, version, resource) = gvr(&self.object);
        let kind = json!({"group": group, "version": version, "kind": self.object["kind"]});
        let res = json!({"group": group, "version": version, "resource": resource});
        let mut req = json!({
            "uid": uid,
            "kind": kind,
            "resource": res,
            "requestKind": kind,
            "requestResource": res,
            "namespace": self.namespace,
            "operation": self.operation,
            "userInfo": {
                "username": "system:serviceaccount:kube-system:replicaset-controller",
                "uid": "e2b4c6d8-0f1a-4b3c-8d5e-7f9a1b3c5d7e",
                "groups": ["system:serviceaccounts", "system:serviceaccounts:kube-system", "system:authenticated"],
            },
            "object": self.object,
            "oldObject": self.old_object.clone().unwrap_or(Value::Null),
            "dryRun": false,
            "options": {
                "apiVersion": "meta.k8s.io/v1",
                "kind": if self.operation == "CREATE" { "CreateOptions" } else { "UpdateOptions" },
            },
        });
        if let Some(sub) = self.sub_resource {
            req["subResource"] = json!(sub);
            req["requestSubResource"] = json!(sub);
        }
        if let Some(name) = self.object["metadata"]["name"].as_str() {
            req["name"] = json!(name);
        }
        json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": req})
    }
}
