//! An in-process fake Kubernetes API server (axum, plain HTTP) for the real `kube::Client`.
//!
//! It stores objects as JSON keyed by their path, implements get/list/watch/create/update/patch/
//! delete with resourceVersions, and authorizes every call against an RBAC-like allow list (the
//! permissions the chart grants). A call outside the list is recorded as unexpected (answered 403)
//! and [`Fake::assert_no_unexpected`] fails the test. Faults (any status, optionally after a hook
//! that mutates the state) can be injected per verb/resource.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::State as AxState;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::broadcast;

/// One API call as RBAC sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub verb: String,
    pub group: String,
    pub resource: String,
    pub namespace: Option<String>,
    pub name: Option<String>,
}

impl std::fmt::Display for Call {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}.{} {}/{}",
            self.verb,
            self.resource,
            self.group,
            self.namespace.as_deref().unwrap_or("-"),
            self.name.as_deref().unwrap_or("*")
        )
    }
}

/// An allow rule: verb, group, resource, and optionally the only name allowed.
#[derive(Debug, Clone)]
pub struct Rule {
    pub verbs: Vec<&'static str>,
    pub group: &'static str,
    pub resource: &'static str,
    pub name: Option<String>,
}

pub fn rule(
    verbs: &[&'static str],
    group: &'static str,
    resource: &'static str,
    name: Option<&str>,
) -> Rule {
    Rule {
        verbs: verbs.to_vec(),
        group,
        resource,
        name: name.map(str::to_string),
    }
}

type Hook = Box<dyn FnMut(&mut Store) + Send>;

pub struct Fault {
    verb: &'static str,
    resource: &'static str,
    status: u16,
    reason: &'static str,
    remaining: usize,
    before: Option<Hook>,
}

#[derive(Clone, Debug)]
struct Event {
    rv: u64,
    collection: String,
    kind: &'static str,
    object: Value,
}

/// The stored objects (path → JSON) and the resourceVersion counter.
pub struct Store {
    pub objects: BTreeMap<String, Value>,
    rv: u64,
    events: Vec<Event>,
    tx: broadcast::Sender<Event>,
}

impl Store {
    /// Inserts or replaces an object at `path` (a full object path), bumping its resourceVersion
    /// and notifying watchers, as if someone else wrote it.
    pub fn put(&mut self, path: &str, mut object: Value) {
        let kind = if self.objects.contains_key(path) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        self.rv += 1;
        object["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        if object["metadata"].get("uid").is_none() {
            object["metadata"]["uid"] = json!(format!("uid-{}", self.rv));
        }
        self.objects.insert(path.to_string(), object.clone());
        self.emit(path, kind, object);
    }

    fn emit(&mut self, path: &str, kind: &'static str, object: Value) {
        let collection = path.rsplit_once('/').map_or("", |(c, _)| c).to_string();
        let event = Event {
            rv: self.rv,
            collection,
            kind,
            object,
        };
        self.events.push(event.clone());
        let _ = self.tx.send(event);
    }

    pub fn get(&self, path: &str) -> Option<&Value> {
        self.objects.get(path)
    }
}

struct Inner {
    store: Store,
    rules: Vec<Rule>,
    faults: Vec<Fault>,
    calls: Vec<Call>,
    unexpected: Vec<String>,
    dry_run_hooks: Vec<(&'static str, DryRunHook)>,
    audit: AuditExtensions,
}

#[derive(Clone)]
pub struct Fake {
    inner: Arc<Mutex<Inner>>,
    pub url: String,
    server: Arc<tokio::task::JoinHandle<()>>,
}

/// The authorizer's 403 message (the API server's `forbiddenMessage`), which restrictor reads as
/// RBAC; admission plugins' 403s read differently.
fn rbac_denial(call: &Call) -> String {
    let group = &call.group;
    let resource = if group.is_empty() {
        call.resource.clone()
    } else {
        format!("{}.{group}", call.resource)
    };
    let scope = match &call.namespace {
        Some(ns) => format!("in the namespace \"{ns}\""),
        None => "at the cluster scope".to_owned(),
    };
    format!(
        "{resource} is forbidden: User \"system:serviceaccount:restrictor:restrictor\" cannot {} resource \"{}\" in API group \"{group}\" {scope}: fake RBAC",
        call.verb, call.resource
    )
}

fn status(code: u16, reason: &str, message: &str) -> Response {
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code});
    (
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn ok(code: StatusCode, v: &Value) -> Response {
    (code, [("content-type", "application/json")], v.to_string()).into_response()
}

/// Path → (group, version, namespace, resource, name).
struct Parsed {
    group: String,
    version: String,
    namespace: Option<String>,
    resource: String,
    name: Option<String>,
    collection: String,
}

fn parse_path(path: &str) -> Option<Parsed> {
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => (String::new(), v.to_string(), rest),
        ["apis", g, v, rest @ ..] => (g.to_string(), v.to_string(), rest),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some(ns.to_string()), rest),
        _ => (None, rest),
    };
    let (resource, name) = match rest {
        [r] => (r.to_string(), None),
        [r, n] => (r.to_string(), Some(n.to_string())),
        _ => return None,
    };
    let prefix = if group.is_empty() {
        format!("/api/{version}")
    } else {
        format!("/apis/{group}/{version}")
    };
    let collection = match &namespace {
        Some(ns) => format!("{prefix}/namespaces/{ns}/{resource}"),
        None => format!("{prefix}/{resource}"),
    };
    Some(Parsed {
        group,
        version,
        namespace,
        resource,
        name,
        collection,
    })
}

fn query_map(uri: &Uri) -> BTreeMap<String, String> {
    uri.query()
        .unwrap_or("")
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            let decode = |s: &str| {
                let s = s.replace('+', " ");
                let bytes = s.as_bytes();
                let mut out = Vec::new();
                let mut i = 0;
                while i < bytes.len() {
                    if bytes[i] == b'%'
                        && i + 2 < bytes.len()
                        && let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16)
                    {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    out.push(bytes[i]);
                    i += 1;
                }
                String::from_utf8_lossy(&out).into_owned()
            };
            (decode(k), decode(v))
        })
        .collect()
}

fn list_kind(resource: &str) -> &'static str {
    match resource {
        "deployments" => "DeploymentList",
        "statefulsets" => "StatefulSetList",
        "daemonsets" => "DaemonSetList",
        "jobs" => "JobList",
        "pods" => "PodList",
        "secrets" => "SecretList",
        "leases" => "LeaseList",
        _ => "List",
    }
}

async fn handle(
    AxState(fake): AxState<Fake>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_string();
    let query = query_map(&uri);
    if let Some(answer) = audit_discovery(&fake, &method, &path) {
        return answer;
    }
    let Some(p) = parse_path(&path) else {
        fake.inner
            .lock()
            .unwrap()
            .unexpected
            .push(format!("{method} {uri}"));
        return status(404, "NotFound", "unknown path");
    };
    let field_name = query
        .get("fieldSelector")
        .and_then(|f| f.strip_prefix("metadata.name="))
        .map(str::to_string);
    let watch = query.get("watch").is_some_and(|w| w == "true" || w == "1");
    let verb = match (&method, &p.name) {
        (&Method::GET, Some(_)) => "get",
        (&Method::GET, None) if watch => "watch",
        (&Method::GET, None) => "list",
        (&Method::POST, None) => "create",
        (&Method::PUT, Some(_)) => "update",
        (&Method::PATCH, Some(_)) => "patch",
        (&Method::DELETE, Some(_)) => "delete",
        _ => "unknown",
    };
    let call = Call {
        verb: verb.to_string(),
        group: p.group.clone(),
        resource: p.resource.clone(),
        namespace: p.namespace.clone(),
        name: p.name.clone().or(field_name.clone()),
    };
    let mut guard = fake.inner.lock().unwrap();
    let inner = &mut *guard;
    inner.calls.push(call.clone());
    let allowed = inner.rules.iter().any(|r| {
        r.verbs.contains(&verb)
            && r.group == p.group
            && r.resource == p.resource
            && (r.name.is_none() || (verb != "create" && r.name == call.name))
    });
    if !allowed {
        inner.unexpected.push(format!("{call} ({method} {uri})"));
        return status(403, "Forbidden", &rbac_denial(&call));
    }
    if let Some(i) = inner
        .faults
        .iter()
        .position(|f| f.verb == verb && f.resource == p.resource && f.remaining > 0)
    {
        let fault = &mut inner.faults[i];
        fault.remaining -= 1;
        let (code, reason) = (fault.status, fault.reason);
        if let Some(hook) = fault.before.as_mut() {
            hook(&mut inner.store);
        }
        // An injected 403 Forbidden stands for RBAC, so it reads as the authorizer writes it.
        let message = if (code, reason) == (403, "Forbidden") {
            rbac_denial(&call)
        } else {
            format!("injected fault for {call}")
        };
        return status(code, reason, &message);
    }
    if verb == "create" && query.contains_key("dryRun") {
        return dry_run_create(inner, &p, &body);
    }
    let store = &mut inner.store;
    let object_path = |name: &str| format!("{}/{}", p.collection, name);
    match verb {
        "get" => {
            let name = p.name.clone().unwrap_or_default();
            match store.objects.get(&object_path(&name)) {
                Some(o) => ok(StatusCode::OK, o),
                None => status(
                    404,
                    "NotFound",
                    &format!("{} {name:?} not found", p.resource),
                ),
            }
        }
        "list" => {
            let prefix = format!("{}/", p.collection);
            let items: Vec<Value> = store
                .objects
                .iter()
                .filter(|(k, _)| {
                    (k.starts_with(&prefix) && !k[prefix.len()..].contains('/'))
                        || (p.namespace.is_none() && in_any_namespace(k, &p))
                })
                .filter(|(_, o)| {
                    field_name
                        .as_ref()
                        .is_none_or(|n| o["metadata"]["name"] == json!(n))
                })
                .map(|(_, o)| {
                    // Like the real API server, list items carry no apiVersion/kind.
                    let mut o = o.clone();
                    if let Some(m) = o.as_object_mut() {
                        m.remove("apiVersion");
                        m.remove("kind");
                    }
                    o
                })
                .collect();
            let api_version = if p.group.is_empty() {
                p.version.clone()
            } else {
                format!("{}/{}", p.group, p.version)
            };
            let (items, continue_token) = paginate(items, &query, inner.audit.page_size);
            let mut metadata = json!({"resourceVersion": store.rv.to_string()});
            if let Some(token) = continue_token {
                metadata["continue"] = json!(token);
            }
            ok(
                StatusCode::OK,
                &json!({"apiVersion": api_version, "kind": list_kind(&p.resource),
                    "metadata": metadata, "items": items}),
            )
        }
        "watch" => {
            let since: u64 = query
                .get("resourceVersion")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let rx = store.tx.subscribe();
            let matches = {
                let collection = p.collection.clone();
                let field_name = field_name.clone();
                move |e: &Event| {
                    e.collection == collection
                        && field_name
                            .as_ref()
                            .is_none_or(|n| e.object["metadata"]["name"] == json!(n))
                }
            };
            let mut initial: Vec<Value> = Vec::new();
            let mut last = since;
            if since == 0 {
                let prefix = format!("{}/", p.collection);
                for (k, o) in &store.objects {
                    if k.starts_with(&prefix)
                        && field_name
                            .as_ref()
                            .is_none_or(|n| o["metadata"]["name"] == json!(n))
                    {
                        initial.push(json!({"type": "ADDED", "object": o}));
                    }
                }
                last = store.rv;
            } else {
                for e in store.events.iter().filter(|e| e.rv > since && matches(e)) {
                    initial.push(json!({"type": e.kind, "object": e.object}));
                }
                last = last.max(store.rv);
            }
            let live = futures::stream::unfold(rx, |mut rx| async move {
                loop {
                    match rx.recv().await {
                        Ok(e) => return Some((e, rx)),
                        Err(broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(broadcast::error::RecvError::Closed) => return None,
                    }
                }
            })
            .filter(move |e| {
                let keep = e.rv > last && matches(e);
                async move { keep }
            })
            .map(|e| json!({"type": e.kind, "object": e.object}));
            let stream = futures::stream::iter(initial)
                .chain(live)
                .map(|v| Ok::<_, std::io::Error>(Bytes::from(format!("{v}\n"))));
            (
                StatusCode::OK,
                [("content-type", "application/json")],
                Body::from_stream(stream),
            )
                .into_response()
        }
        "create" => {
            let Ok(mut obj) = serde_json::from_slice::<Value>(&body) else {
                return status(400, "BadRequest", "body is not JSON");
            };
            let Some(name) = obj["metadata"]["name"].as_str().map(str::to_string) else {
                return status(422, "Invalid", "metadata.name required");
            };
            let path = object_path(&name);
            if store.objects.contains_key(&path) {
                return status(
                    409,
                    "AlreadyExists",
                    &format!("{} {name:?} already exists", p.resource),
                );
            }
            if let Some(ns) = &p.namespace {
                obj["metadata"]["namespace"] = json!(ns);
            }
            obj["metadata"]["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
            store.put(&path, obj);
            ok(StatusCode::CREATED, &store.objects[&path])
        }
        "update" => {
            let Ok(obj) = serde_json::from_slice::<Value>(&body) else {
                return status(400, "BadRequest", "body is not JSON");
            };
            let name = p.name.clone().unwrap_or_default();
            let path = object_path(&name);
            let Some(current) = store.objects.get(&path) else {
                return status(
                    404,
                    "NotFound",
                    &format!("{} {name:?} not found", p.resource),
                );
            };
            let sent = obj["metadata"]["resourceVersion"].as_str().unwrap_or("");
            if sent.is_empty()
                || sent
                    != current["metadata"]["resourceVersion"]
                        .as_str()
                        .unwrap_or("")
            {
                return status(
                    409,
                    "Conflict",
                    "the object has been modified; please apply your changes to the latest version and try again",
                );
            }
            store.put(&path, obj);
            ok(StatusCode::OK, &store.objects[&path])
        }
        "patch" => {
            let name = p.name.clone().unwrap_or_default();
            let path = object_path(&name);
            if is_apply_patch(&headers) {
                let manager = query.get("fieldManager").cloned().unwrap_or_default();
                return server_side_apply(store, &p, &path, &body, &manager);
            }
            let Some(current) = store.objects.get(&path).cloned() else {
                return status(
                    404,
                    "NotFound",
                    &format!("{} {name:?} not found", p.resource),
                );
            };
            let Ok(patch) = serde_json::from_slice::<Value>(&body) else {
                return status(400, "BadRequest", "body is not JSON");
            };
            let ctype = headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let mut doc = current.clone();
            match ctype {
                "application/json-patch+json" => {
                    let Ok(ops) = serde_json::from_value::<json_patch::Patch>(patch) else {
                        return status(400, "BadRequest", "not a JSON patch");
                    };
                    if let Err(e) = json_patch::patch(&mut doc, &ops) {
                        return status(422, "Invalid", &e.to_string());
                    }
                }
                "application/merge-patch+json" | "application/strategic-merge-patch+json" => {
                    json_patch::merge(&mut doc, &patch);
                }
                other => return status(415, "UnsupportedMediaType", other),
            }
            if doc != current {
                store.put(&path, doc);
            }
            ok(StatusCode::OK, &store.objects[&path])
        }
        "delete" => {
            let name = p.name.clone().unwrap_or_default();
            let path = object_path(&name);
            match store.objects.remove(&path) {
                Some(o) => {
                    store.rv += 1;
                    store.emit(&path, "DELETED", o.clone());
                    ok(StatusCode::OK, &o)
                }
                None => status(
                    404,
                    "NotFound",
                    &format!("{} {name:?} not found", p.resource),
                ),
            }
        }
        _ => status(405, "MethodNotAllowed", "unsupported"),
    }
}

// --- Additions for `restrictor audit`, PolicyReports and Events: API discovery of extra groups,
// cluster-wide lists of namespaced resources, list pages, server-side apply. ---

/// What the audit tests switch on.
#[derive(Default)]
struct AuditExtensions {
    /// Group versions served beyond the built-in ones (`wgpolicyk8s.io/v1alpha2`), with the
    /// APIResource entries their discovery document lists.
    served: BTreeMap<String, Vec<Value>>,
    /// Largest page a list returns (the real API server honours `limit`; tests use a small cap
    /// to make the client follow `continue` tokens).
    page_size: Option<usize>,
}

/// `GET /apis/<group>/<version>`: the discovery document of a served extra group, 404 otherwise
/// (as for a CRD that is not installed).
fn audit_discovery(fake: &Fake, method: &Method, path: &str) -> Option<Response> {
    if method != Method::GET {
        return None;
    }
    let (group, version) = path.strip_prefix("/apis/")?.split_once('/')?;
    if version.is_empty() || version.contains('/') {
        return None;
    }
    let group_version = format!("{group}/{version}");
    let inner = fake.inner.lock().unwrap();
    Some(match inner.audit.served.get(&group_version) {
        Some(resources) => ok(
            StatusCode::OK,
            &json!({"kind": "APIResourceList", "apiVersion": "v1",
                "groupVersion": group_version, "resources": resources}),
        ),
        None => status(
            404,
            "NotFound",
            "the server could not find the requested resource",
        ),
    })
}

/// Whether `key` is an object of `p`'s resource in some namespace: a cluster-wide list
/// (`/apis/apps/v1/deployments`) returns those.
fn in_any_namespace(key: &str, p: &Parsed) -> bool {
    let root = if p.group.is_empty() {
        format!("/api/{}/namespaces/", p.version)
    } else {
        format!("/apis/{}/{}/namespaces/", p.group, p.version)
    };
    let Some(rest) = key.strip_prefix(&root) else {
        return false;
    };
    matches!(rest.split('/').collect::<Vec<_>>().as_slice(), [_, resource, _] if *resource == p.resource)
}

/// One page of `items` per `limit` (capped by the test's page size) from the `continue` offset.
fn paginate(
    items: Vec<Value>,
    query: &BTreeMap<String, String>,
    page_size: Option<usize>,
) -> (Vec<Value>, Option<String>) {
    let asked = query.get("limit").and_then(|l| l.parse::<usize>().ok());
    let limit = match (asked, page_size) {
        (Some(a), Some(p)) => Some(a.min(p)),
        (a, p) => a.or(p),
    };
    let offset = query
        .get("continue")
        .and_then(|c| c.strip_prefix("offset-"))
        .and_then(|c| c.parse::<usize>().ok())
        .unwrap_or(0);
    let Some(limit) = limit.filter(|l| *l > 0) else {
        return (items, None);
    };
    let end = (offset + limit).min(items.len());
    let next = (end < items.len()).then(|| format!("offset-{end}"));
    (items.get(offset..end).unwrap_or_default().to_vec(), next)
}

fn is_apply_patch(headers: &HeaderMap) -> bool {
    headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c == "application/apply-patch+yaml")
}

/// Server-side apply as the API server does it for one field manager: creates the object when
/// absent, otherwise sets the fields sent; an apply that changes nothing writes nothing (the
/// resourceVersion stays).
fn server_side_apply(
    store: &mut Store,
    p: &Parsed,
    path: &str,
    body: &[u8],
    manager: &str,
) -> Response {
    let Ok(sent) = serde_json::from_slice::<Value>(body) else {
        return status(400, "BadRequest", "apply body is not JSON");
    };
    if manager.is_empty() {
        return status(
            400,
            "BadRequest",
            "fieldManager is required for apply requests",
        );
    }
    if sent["metadata"]["name"].as_str() != p.name.as_deref() {
        return status(422, "Invalid", "metadata.name does not match the URL");
    }
    let managed = json!([{"manager": manager, "operation": "Apply"}]);
    match store.objects.get(path).cloned() {
        None => {
            let mut object = sent;
            if let Some(ns) = &p.namespace {
                object["metadata"]["namespace"] = json!(ns);
            }
            object["metadata"]["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
            object["metadata"]["managedFields"] = managed;
            store.put(path, object);
            ok(StatusCode::CREATED, &store.objects[path])
        }
        Some(current) => {
            let mut merged = current.clone();
            if let Some(fields) = sent.as_object() {
                for (key, value) in fields {
                    if key == "metadata" {
                        if let Some(labels) = value.get("labels") {
                            merged["metadata"]["labels"] = labels.clone();
                        }
                    } else {
                        merged[key] = value.clone();
                    }
                }
            }
            merged["metadata"]["managedFields"] = managed;
            if merged != current {
                store.put(path, merged);
            }
            ok(StatusCode::OK, &store.objects[path])
        }
    }
}

impl Fake {
    /// Serves `group_version` (e.g. `wgpolicyk8s.io/v1alpha2`) in API discovery with these
    /// plural resource names, as if its CRDs were installed.
    pub fn serve_api(&self, group_version: &str, plurals: &[&str]) {
        let resources = plurals
            .iter()
            .map(|plural| {
                json!({"name": plural, "namespaced": true, "kind": "",
                "verbs": ["get", "list", "patch", "create"]})
            })
            .collect();
        self.inner
            .lock()
            .unwrap()
            .audit
            .served
            .insert(group_version.to_string(), resources);
    }

    /// Caps every list page at `size` items.
    pub fn set_page_size(&self, size: usize) {
        self.inner.lock().unwrap().audit.page_size = Some(size);
    }
}

impl Fake {
    /// Starts the server on 127.0.0.1:0 with the given allow rules.
    pub async fn start(rules: Vec<Rule>) -> Self {
        let (tx, _) = broadcast::channel(1024);
        let inner = Arc::new(Mutex::new(Inner {
            store: Store {
                objects: BTreeMap::new(),
                rv: 100,
                events: Vec::new(),
                tx,
            },
            rules,
            faults: Vec::new(),
            calls: Vec::new(),
            unexpected: Vec::new(),
            dry_run_hooks: Vec::new(),
            audit: AuditExtensions::default(),
        }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (started_tx, started_rx) = tokio::sync::oneshot::channel::<Fake>();
        let server = tokio::spawn(async move {
            let fake = started_rx.await.unwrap();
            let app = axum::Router::new().fallback(handle).with_state(fake);
            axum::serve(listener, app).await.unwrap();
        });
        let fake = Fake {
            inner,
            url,
            server: Arc::new(server),
        };
        started_tx.send(fake.clone()).ok();
        fake
    }

    pub fn client(&self) -> kube::Client {
        let config = kube::Config::new(self.url.parse().unwrap());
        kube::Client::try_from(config).unwrap()
    }

    pub fn with_store<T>(&self, f: impl FnOnce(&mut Store) -> T) -> T {
        f(&mut self.inner.lock().unwrap().store)
    }

    pub fn get(&self, path: &str) -> Option<Value> {
        self.with_store(|s| s.get(path).cloned())
    }

    pub fn put(&self, path: &str, object: Value) {
        self.with_store(|s| s.put(path, object));
    }

    /// Answers the next `times` calls of `verb` on `resource` with `status`/`reason`, running
    /// `before` on the store first.
    pub fn fault(
        &self,
        verb: &'static str,
        resource: &'static str,
        status: u16,
        reason: &'static str,
        times: usize,
        before: Option<Hook>,
    ) {
        self.inner.lock().unwrap().faults.push(Fault {
            verb,
            resource,
            status,
            reason,
            remaining: times,
            before,
        });
    }

    pub fn calls(&self) -> Vec<Call> {
        self.inner.lock().unwrap().calls.clone()
    }

    /// Calls of `verb` on `resource`.
    pub fn count(&self, verb: &str, resource: &str) -> usize {
        self.calls()
            .iter()
            .filter(|c| c.verb == verb && c.resource == resource)
            .count()
    }

    pub fn assert_no_unexpected(&self) {
        let unexpected = self.inner.lock().unwrap().unexpected.clone();
        assert!(
            unexpected.is_empty(),
            "unexpected API calls: {unexpected:#?}"
        );
    }
}

// --- Server-side dry runs (the reconciler's admission probe) -------------------------------------

/// Stands in for admission on a dry-run create: gets the object as the API server would pass it
/// to webhooks (name generated, namespace set) and returns the answer, or `Err((code, reason,
/// message))` for a refusal.
pub type DryRunHook = Box<dyn FnMut(&Value) -> Result<Value, (u16, &'static str, String)> + Send>;

/// A create with `dryRun=All`: admission (the hook for the resource, if any) decides the answer;
/// nothing is stored and no watcher hears of it.
fn dry_run_create(inner: &mut Inner, p: &Parsed, body: &[u8]) -> Response {
    let Ok(mut obj) = serde_json::from_slice::<Value>(body) else {
        return status(400, "BadRequest", "body is not JSON");
    };
    if obj["metadata"]["name"].is_null() {
        let Some(prefix) = obj["metadata"]["generateName"].as_str() else {
            return status(422, "Invalid", "metadata.name or generateName required");
        };
        obj["metadata"]["name"] = json!(format!("{prefix}dry42"));
    }
    if let Some(ns) = &p.namespace {
        obj["metadata"]["namespace"] = json!(ns);
    }
    obj["metadata"]["uid"] = json!("dry-run-uid");
    obj["metadata"]["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
    let hook = inner
        .dry_run_hooks
        .iter_mut()
        .find(|(resource, _)| *resource == p.resource);
    match hook {
        Some((_, hook)) => match hook(&obj) {
            Ok(answer) => ok(StatusCode::CREATED, &answer),
            Err((code, reason, message)) => status(code, reason, &message),
        },
        None => ok(StatusCode::CREATED, &obj),
    }
}

impl Fake {
    /// Answers dry-run creates of `resource` with `hook` (without one: the object unchanged).
    pub fn on_dry_run_create(&self, resource: &'static str, hook: DryRunHook) {
        let mut inner = self.inner.lock().unwrap();
        inner.dry_run_hooks.retain(|(r, _)| *r != resource);
        inner.dry_run_hooks.push((resource, hook));
    }
}
