//! Which entries of a MutatingWebhookConfiguration a Kubernetes API server calls for a request, as
//! admissionregistration.k8s.io/v1 specifies: `rules` (operations, groups, versions, resources
//! with subresource, scope), `namespaceSelector`, `objectSelector` (on the new or the old object)
//! and `matchConditions`, CEL evaluated by the `cel` crate with the variables the API server binds
//! for a webhook: `object`, `oldObject` (null on CREATE) and `request`.
//!
//! matchConditions, in the API server's order: any condition false skips the entry; all true call
//! it; otherwise (an evaluation error, none false) failurePolicy Fail rejects the request and Ignore
//! skips the entry. An expression the API server would refuse to store (a syntax error, a variable
//! it does not declare) fails the test, as does `authorizer`, which is not emulated.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde_json::Value;

use super::admission_request::{AdmissionRequest, CLUSTER_SCOPED, gvr, labels_of};

/// The variables a webhook's matchConditions may use, besides `authorizer`.
const DECLARED: [&str; 3] = ["object", "oldObject", "request"];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailurePolicy {
    Fail,
    Ignore,
}

impl FailurePolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fail => "Fail",
            Self::Ignore => "Ignore",
        }
    }
}

/// `clientConfig.service`.
#[derive(Clone, Debug)]
pub struct ServiceRef {
    pub name: String,
    pub namespace: String,
    pub path: String,
    pub port: u16,
}

/// One CEL matchCondition, compiled.
pub struct MatchCondition {
    pub name: String,
    pub expression: String,
    program: cel::Program,
}

/// One entry of `webhooks`.
pub struct Webhook {
    pub name: String,
    pub failure_policy: FailurePolicy,
    pub timeout_seconds: u64,
    pub service: Option<ServiceRef>,
    /// `clientConfig.caBundle`, decoded (PEM).
    pub ca_bundle: Option<Vec<u8>>,
    pub namespace_selector: Value,
    pub object_selector: Value,
    pub rules: Vec<Value>,
    pub match_conditions: Vec<MatchCondition>,
}

/// What one entry's matchConditions decided.
#[derive(Debug, PartialEq)]
pub enum Conditions {
    AllTrue,
    /// This condition was false (errors in others do not matter then).
    False(String),
    /// The first condition that errored, and the error; none was false.
    Error(String, String),
}

/// A matchCondition that errored, and what the entry's failurePolicy made of it.
#[derive(Debug)]
pub struct ConditionError {
    pub webhook: String,
    pub condition: String,
    pub error: String,
    /// failurePolicy Fail: the API server rejects the request (else it skips the entry).
    pub rejects: bool,
}

/// The API server's decision for one request.
#[derive(Default)]
pub struct Routing<'a> {
    /// The entries called, in configuration order (up to a rejection).
    pub called: Vec<&'a Webhook>,
    /// Every matchCondition error met on the way.
    pub condition_errors: Vec<ConditionError>,
}

impl Routing<'_> {
    /// The error that made the API server reject the request, if one did.
    pub fn rejection(&self) -> Option<&ConditionError> {
        self.condition_errors.iter().find(|e| e.rejects)
    }
}

/// The entries of a MutatingWebhookConfiguration (or ValidatingWebhookConfiguration).
pub fn parse_webhooks(config: &Value) -> Vec<Webhook> {
    let hooks = config["webhooks"].as_array().expect("webhooks");
    hooks.iter().map(Webhook::parse).collect()
}

impl Webhook {
    fn parse(hook: &Value) -> Self {
        let name = hook["name"].as_str().expect("webhook name").to_owned();
        let failure_policy = match hook["failurePolicy"].as_str() {
            None | Some("Fail") => FailurePolicy::Fail,
            Some("Ignore") => FailurePolicy::Ignore,
            Some(other) => panic!("{name}: failurePolicy {other}"),
        };
        let client = &hook["clientConfig"];
        let service = client["service"].as_object().map(|svc| ServiceRef {
            name: svc["name"].as_str().expect("service name").to_owned(),
            namespace: svc["namespace"]
                .as_str()
                .expect("service namespace")
                .to_owned(),
            path: svc
                .get("path")
                .and_then(Value::as_str)
                .unwrap_or("/")
                .to_owned(),
            port: svc.get("port").and_then(Value::as_u64).map_or(443, |p| {
                u16::try_from(p).unwrap_or_else(|_| panic!("{name}: port {p}"))
            }),
        });
        let ca_bundle = client["caBundle"].as_str().map(|b64| {
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap_or_else(|e| panic!("{name}: caBundle is not base64: {e}"))
        });
        let match_conditions = hook["matchConditions"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|mc| {
                MatchCondition::compile(
                    &name,
                    mc["name"].as_str().expect("matchCondition name"),
                    mc["expression"]
                        .as_str()
                        .expect("matchCondition expression"),
                )
            })
            .collect();
        Self {
            failure_policy,
            timeout_seconds: hook["timeoutSeconds"].as_u64().unwrap_or(10),
            service,
            ca_bundle,
            namespace_selector: hook["namespaceSelector"].clone(),
            object_selector: hook["objectSelector"].clone(),
            rules: hook["rules"].as_array().cloned().unwrap_or_default(),
            match_conditions,
            name,
        }
    }

    /// Whether `rules`, `namespaceSelector` and `objectSelector` select the request (the
    /// namespace's labels are `namespace_labels`).
    pub fn selects(
        &self,
        request: &AdmissionRequest,
        namespace_labels: &BTreeMap<String, String>,
    ) -> bool {
        let (group, version, resource) = gvr(&request.object);
        let resource = match request.sub_resource {
            Some(sub) => format!("{resource}/{sub}"),
            None => resource,
        };
        let kind = request.object["kind"].as_str().unwrap_or_default();
        let cluster_scoped = CLUSTER_SCOPED.contains(&kind);
        let rule_matches = self.rules.iter().any(|r| {
            list_has(&r["operations"], request.operation)
                && list_has(&r["apiGroups"], &group)
                && list_has(&r["apiVersions"], &version)
                && r["resources"].as_array().is_some_and(|l| {
                    l.iter()
                        .filter_map(Value::as_str)
                        .any(|entry| resource_matches(entry, &resource))
                })
                && match r["scope"].as_str() {
                    None | Some("*") => true,
                    Some("Namespaced") => !cluster_scoped,
                    Some("Cluster") => cluster_scoped,
                    Some(other) => panic!("{}: rule scope {other}", self.name),
                }
        });
        // A Namespace is matched on its own labels; another cluster-scoped object never skips.
        let namespace_ok = if kind == "Namespace" {
            selector_matches(&self.namespace_selector, &labels_of(&request.object))
        } else {
            cluster_scoped || selector_matches(&self.namespace_selector, namespace_labels)
        };
        let object_ok = selector_matches(&self.object_selector, &labels_of(&request.object))
            || request
                .old_object
                .as_ref()
                .is_some_and(|old| selector_matches(&self.object_selector, &labels_of(old)));
        rule_matches && namespace_ok && object_ok
    }

    /// The matchConditions on `request`, in order.
    pub fn conditions(&self, request: &AdmissionRequest) -> Conditions {
        let context = cel_context(request);
        let mut first_error = None;
        for condition in &self.match_conditions {
            match condition.evaluate(&context) {
                Ok(true) => {}
                Ok(false) => return Conditions::False(condition.name.clone()),
                Err(error) => {
                    first_error.get_or_insert((condition.name.clone(), error));
                }
            }
        }
        match first_error {
            Some((name, error)) => Conditions::Error(name, error),
            None => Conditions::AllTrue,
        }
    }
}

impl MatchCondition {
    fn compile(webhook: &str, name: &str, expression: &str) -> Self {
        let program = cel::Program::compile(expression).unwrap_or_else(|e| {
            panic!("matchCondition {name} of {webhook}: the API server refuses {expression:?}: {e}")
        });
        let references = program.references();
        assert!(
            !references.has_variable("authorizer"),
            "matchCondition {name} of {webhook}: `authorizer` is not emulated"
        );
        for variable in references.variables() {
            assert!(
                DECLARED.contains(&variable),
                "matchCondition {name} of {webhook}: the API server refuses {expression:?}: \
                 undeclared variable {variable}"
            );
        }
        Self {
            name: name.to_owned(),
            expression: expression.to_owned(),
            program,
        }
    }

    /// `Ok(result)`, or the evaluation error (a result that is not a bool is one).
    pub fn evaluate(&self, context: &cel::Context) -> Result<bool, String> {
        match self.program.execute(context) {
            Ok(cel::Value::Bool(b)) => Ok(b),
            Ok(other) => Err(format!("{:?} is not a bool", other)),
            // Every declared variable is bound: an undeclared reference is a function the
            // Kubernetes CEL environment has and this one lacks, not an evaluation error.
            Err(cel::ExecutionError::UndeclaredReference(what)) => panic!(
                "matchCondition {}: {what} is not in this CEL environment ({:?})",
                self.name, self.expression
            ),
            Err(error) => Err(error.to_string()),
        }
    }
}

/// The CEL variables the API server binds for a webhook's matchConditions. `request` is the
/// AdmissionRequest without the objects, which are their own variables.
pub fn cel_context(request: &AdmissionRequest) -> cel::Context<'static, 'static> {
    let mut review = request.review("match-conditions");
    let attributes = review["request"].as_object_mut().expect("request");
    attributes.remove("object");
    attributes.remove("oldObject");
    let mut context = cel::Context::default();
    for (name, value) in [
        ("request", &review["request"]),
        ("object", &request.object),
        (
            "oldObject",
            request.old_object.as_ref().unwrap_or(&Value::Null),
        ),
    ] {
        context.add_variable_from_value(
            name,
            cel::to_value(value).unwrap_or_else(|e| panic!("{name} as CEL: {e}")),
        );
    }
    context
}

/// Where the API server sends `request`: every selected entry whose matchConditions pass, in
/// order, until a condition error on a failurePolicy Fail entry rejects the request.
pub fn route<'a>(
    hooks: &'a [Webhook],
    request: &AdmissionRequest,
    namespace_labels: &BTreeMap<String, String>,
) -> Routing<'a> {
    let mut routing = Routing::default();
    for hook in hooks {
        if !hook.selects(request, namespace_labels) {
            continue;
        }
        match hook.conditions(request) {
            Conditions::AllTrue => routing.called.push(hook),
            Conditions::False(_) => {}
            Conditions::Error(condition, error) => {
                let rejects = hook.failure_policy == FailurePolicy::Fail;
                routing.condition_errors.push(ConditionError {
                    webhook: hook.name.clone(),
                    condition,
                    error,
                    rejects,
                });
                if rejects {
                    break;
                }
            }
        }
    }
    routing
}

/// A label selector (`matchLabels` and `matchExpressions`); null selects everything.
pub fn selector_matches(selector: &Value, labels: &BTreeMap<String, String>) -> bool {
    if selector.is_null() {
        return true;
    }
    let labels_ok = selector["matchLabels"]
        .as_object()
        .into_iter()
        .flatten()
        .all(|(k, v)| labels.get(k).map(String::as_str) == v.as_str());
    labels_ok
        && selector["matchExpressions"]
            .as_array()
            .into_iter()
            .flatten()
            .all(|e| {
                let key = e["key"].as_str().expect("matchExpressions key");
                let values: Vec<&str> = e["values"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect();
                let value = labels.get(key).map(String::as_str);
                match e["operator"].as_str().expect("matchExpressions operator") {
                    "In" => value.is_some_and(|v| values.contains(&v)),
                    "NotIn" => value.is_none_or(|v| !values.contains(&v)),
                    "Exists" => value.is_some(),
                    "DoesNotExist" => value.is_none(),
                    op => panic!("selector operator {op}"),
                }
            })
}

/// A rule's `resources` entry against `resource[/subresource]`: `*` is every resource (not its
/// subresources), `*/*` everything, `pods/*` every subresource of pods, `*/scale` that subresource
/// of every resource.
fn resource_matches(entry: &str, resource: &str) -> bool {
    if entry == "*/*" {
        return true;
    }
    let (resource, sub) = resource
        .split_once('/')
        .map_or((resource, None), |(r, s)| (r, Some(s)));
    let (want, want_sub) = entry
        .split_once('/')
        .map_or((entry, None), |(r, s)| (r, Some(s)));
    (want == "*" || want == resource)
        && match (want_sub, sub) {
            (None, None) => true,
            (Some("*"), Some(_)) => true,
            (Some(want_sub), Some(sub)) => want_sub == sub,
            _ => false,
        }
}

fn list_has(list: &Value, item: &str) -> bool {
    list.as_array()
        .is_some_and(|l| l.iter().any(|x| x == "*" || x == item))
}
