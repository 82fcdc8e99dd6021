//! End-to-end test of the Helm chart's webhook configuration (issue 5): render the chart in
//! `tls.mode=secret` with a CA made here, start the real server with a certificate from that CA,
//! and act as the vcluster's API server for every object of the fixtures: decide from the rendered
//! MutatingWebhookConfiguration which entry (if any) is called — rules, namespaceSelector,
//! objectSelector and the CEL matchConditions — send the AdmissionReview the API server would send
//! to the Service (resolved to the loopback port) over TLS verified against the rendered caBundle,
//! and apply the returned JSON patch.
//!
//! Needs helm: `RESTRICTOR_HELM`, else `ci/.tools/bin/helm` (ci/install-k8s-tools.sh). Without
//! it the test fails when `CI` is set and is skipped (with the reason printed) otherwise.

mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::Full;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use restrictor::pss::{Level, check_object};
use restrictor::server::{ServeConfig, TlsSource};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde::Deserialize;
use serde_json::{Value, json};
use support::{TempDir, TestServer, read};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

const RELEASE: &str = "restrictor";
const RELEASE_NS: &str = "restrictor-system";
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

// ---------------------------------------------------------------------------------------------
// helm

fn helm_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("RESTRICTOR_HELM") {
        return Some(PathBuf::from(p));
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("ci/.tools/bin/helm");
    p.exists().then_some(p)
}

fn yaml_docs(text: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|doc| Value::deserialize(doc).expect("YAML document"))
        .filter(|v| !v.is_null())
        .collect()
}

fn helm_template(helm: &Path, args: &[String]) -> Vec<Value> {
    let chart = Path::new(env!("CARGO_MANIFEST_DIR")).join("charts/restrictor");
    let out = std::process::Command::new(helm)
        .args(["template", RELEASE])
        .arg(&chart)
        .args(["--namespace", RELEASE_NS, "--kube-version", "1.30.0"])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", helm.display()));
    assert!(
        out.status.success(),
        "helm template failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    yaml_docs(&String::from_utf8(out.stdout).unwrap())
}

// ---------------------------------------------------------------------------------------------
// A tiny CEL evaluator for exactly the expressions the chart uses. Anything else (another
// function, operator or literal kind) makes the test fail instead of being guessed at.

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    LParen,
    RParen,
    Dot,
    Bang,
    EqEq,
    NotEq,
    AndAnd,
    OrOr,
    Question,
    Colon,
}

fn lex(src: &str) -> Result<Vec<Tok>, String> {
    let chars: Vec<char> = src.chars().collect();
    let mut i = 0;
    let mut out = Vec::new();
    while i < chars.len() {
        let c = chars[i];
        let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
        match c {
            c if c.is_whitespace() => i += 1,
            '(' => (out.push(Tok::LParen), i += 1).1,
            ')' => (out.push(Tok::RParen), i += 1).1,
            '.' => (out.push(Tok::Dot), i += 1).1,
            '?' => (out.push(Tok::Question), i += 1).1,
            ':' => (out.push(Tok::Colon), i += 1).1,
            _ if two == "==" => (out.push(Tok::EqEq), i += 2).1,
            _ if two == "!=" => (out.push(Tok::NotEq), i += 2).1,
            _ if two == "&&" => (out.push(Tok::AndAnd), i += 2).1,
            _ if two == "||" => (out.push(Tok::OrOr), i += 2).1,
            '!' => (out.push(Tok::Bang), i += 1).1,
            '\'' | '"' => {
                let end = chars[i + 1..]
                    .iter()
                    .position(|&x| x == c)
                    .ok_or_else(|| format!("unterminated string in CEL {src:?}"))?;
                let s: String = chars[i + 1..i + 1 + end].iter().collect();
                if s.contains('\\') {
                    return Err(format!("escapes in CEL strings unsupported: {src:?}"));
                }
                out.push(Tok::Str(s));
                i += end + 2;
            }
            c if c.is_ascii_alphabetic() || c == '_' => {
                let end = chars[i..]
                    .iter()
                    .position(|x| !(x.is_ascii_alphanumeric() || *x == '_'))
                    .map_or(chars.len(), |p| i + p);
                out.push(Tok::Ident(chars[i..end].iter().collect()));
                i = end;
            }
            _ => {
                return Err(format!(
                    "CEL the test does not understand: {c:?} in {src:?}"
                ));
            }
        }
    }
    Ok(out)
}

#[derive(Debug, Clone)]
enum Expr {
    Lit(Value),
    Var(String),
    Select(Box<Expr>, String),
    Has(Box<Expr>, String),
    StartsWith(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Eq(Box<Expr>, Box<Expr>, bool),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Cond(Box<Expr>, Box<Expr>, Box<Expr>),
}

struct Parser<'a> {
    toks: Vec<Tok>,
    pos: usize,
    src: &'a str,
    /// The first thing the parser did not understand.
    error: Option<String>,
}

impl Parser<'_> {
    /// Parses `src`, or says what in it this evaluator does not understand.
    fn parse(src: &str) -> Result<Expr, String> {
        let mut p = Parser {
            toks: lex(src)?,
            pos: 0,
            src,
            error: None,
        };
        let e = p.cond();
        if p.pos != p.toks.len() {
            p.fail("trailing tokens");
        }
        match p.error {
            Some(e) => Err(e),
            None => Ok(e),
        }
    }
    fn fail(&mut self, what: impl std::fmt::Display) -> Expr {
        if self.error.is_none() {
            self.error = Some(format!("{what} in CEL {:?}", self.src));
        }
        self.pos = self.toks.len();
        Expr::Lit(Value::Null)
    }
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }
    fn eat(&mut self, t: &Tok) -> bool {
        if self.peek() == Some(t) {
            self.pos += 1;
            true
        } else {
            false
        }
    }
    fn expect(&mut self, t: &Tok) {
        if !self.eat(t) {
            self.fail(format!("expected {t:?}"));
        }
    }
    fn cond(&mut self) -> Expr {
        let c = self.or();
        if self.eat(&Tok::Question) {
            let a = self.cond();
            self.expect(&Tok::Colon);
            let b = self.cond();
            return Expr::Cond(Box::new(c), Box::new(a), Box::new(b));
        }
        c
    }
    fn or(&mut self) -> Expr {
        let mut e = self.and();
        while self.eat(&Tok::OrOr) {
            e = Expr::Or(Box::new(e), Box::new(self.and()));
        }
        e
    }
    fn and(&mut self) -> Expr {
        let mut e = self.rel();
        while self.eat(&Tok::AndAnd) {
            e = Expr::And(Box::new(e), Box::new(self.rel()));
        }
        e
    }
    fn rel(&mut self) -> Expr {
        let e = self.unary();
        if self.eat(&Tok::EqEq) {
            return Expr::Eq(Box::new(e), Box::new(self.unary()), true);
        }
        if self.eat(&Tok::NotEq) {
            return Expr::Eq(Box::new(e), Box::new(self.unary()), false);
        }
        e
    }
    fn unary(&mut self) -> Expr {
        if self.eat(&Tok::Bang) {
            return Expr::Not(Box::new(self.unary()));
        }
        self.member()
    }
    fn member(&mut self) -> Expr {
        let mut e = self.primary();
        while self.eat(&Tok::Dot) {
            let Some(Tok::Ident(field)) = self.peek().cloned() else {
                return self.fail("expected a field name");
            };
            self.pos += 1;
            if self.eat(&Tok::LParen) {
                if field != "startsWith" {
                    return self.fail(format!("CEL method the test does not understand: {field}"));
                }
                let arg = self.cond();
                self.expect(&Tok::RParen);
                e = Expr::StartsWith(Box::new(e), Box::new(arg));
            } else {
                e = Expr::Select(Box::new(e), field);
            }
        }
        e
    }
    fn primary(&mut self) -> Expr {
        match self.peek().cloned() {
            Some(Tok::Str(s)) => {
                self.pos += 1;
                Expr::Lit(Value::String(s))
            }
            Some(Tok::LParen) => {
                self.pos += 1;
                let e = self.cond();
                self.expect(&Tok::RParen);
                e
            }
            Some(Tok::Ident(id)) => {
                self.pos += 1;
                match id.as_str() {
                    "true" => Expr::Lit(Value::Bool(true)),
                    "false" => Expr::Lit(Value::Bool(false)),
                    "null" => Expr::Lit(Value::Null),
                    "has" => {
                        self.expect(&Tok::LParen);
                        let Expr::Select(base, field) = self.member() else {
                            return self.fail("has() needs a field selection");
                        };
                        self.expect(&Tok::RParen);
                        Expr::Has(base, field)
                    }
                    "request" | "object" | "oldObject" => Expr::Var(id),
                    _ if self.peek() == Some(&Tok::LParen) => {
                        self.fail(format!("CEL function the test does not understand: {id}"))
                    }
                    _ => self.fail(format!("unknown CEL variable {id}")),
                }
            }
            t => self.fail(format!("unexpected {t:?}")),
        }
    }
}

/// CEL evaluation: `Err` is an evaluation error (the API server then applies failurePolicy).
/// `&&`/`||` absorb errors as CEL does (commutatively).
fn eval(e: &Expr, env: &BTreeMap<&str, Value>) -> Result<Value, String> {
    let boolean = |e: &Expr| -> Result<bool, String> {
        match eval(e, env)? {
            Value::Bool(b) => Ok(b),
            v => Err(format!("no such overload: {v} is not a bool")),
        }
    };
    match e {
        Expr::Lit(v) => Ok(v.clone()),
        Expr::Var(name) => Ok(env[name.as_str()].clone()),
        Expr::Select(base, field) => match eval(base, env)? {
            Value::Object(map) => map
                .get(field)
                .cloned()
                .ok_or_else(|| format!("no such key: {field}")),
            v => Err(format!("cannot select {field} from {v}")),
        },
        Expr::Has(base, field) => match eval(base, env)? {
            Value::Object(map) => Ok(Value::Bool(map.contains_key(field))),
            v => Err(format!("has({field}) on {v}")),
        },
        Expr::StartsWith(s, p) => match (eval(s, env)?, eval(p, env)?) {
            (Value::String(s), Value::String(p)) => Ok(Value::Bool(s.starts_with(&p))),
            (s, p) => Err(format!("no such overload: {s}.startsWith({p})")),
        },
        Expr::Not(x) => Ok(Value::Bool(!boolean(x)?)),
        Expr::Eq(a, b, want) => Ok(Value::Bool((eval(a, env)? == eval(b, env)?) == *want)),
        Expr::And(a, b) => match (boolean(a), boolean(b)) {
            (Ok(false), _) | (_, Ok(false)) => Ok(Value::Bool(false)),
            (Ok(true), Ok(true)) => Ok(Value::Bool(true)),
            (Err(e), _) | (_, Err(e)) => Err(e),
        },
        Expr::Or(a, b) => match (boolean(a), boolean(b)) {
            (Ok(true), _) | (_, Ok(true)) => Ok(Value::Bool(true)),
            (Ok(false), Ok(false)) => Ok(Value::Bool(false)),
            (Err(e), _) | (_, Err(e)) => Err(e),
        },
        Expr::Cond(c, a, b) => {
            if boolean(c)? {
                eval(a, env)
            } else {
                eval(b, env)
            }
        }
    }
}

#[test]
fn the_cel_evaluator_follows_cel() {
    let env: BTreeMap<&str, Value> = [
        (
            "request",
            json!({"operation": "UPDATE", "namespace": "cattle-x"}),
        ),
        ("object", json!({"metadata": {}})),
        ("oldObject", Value::Null),
    ]
    .into();
    let run = |s: &str| eval(&Parser::parse(s).unwrap(), &env);
    assert_eq!(
        run("request.namespace.startsWith('cattle-')"),
        Ok(json!(true))
    );
    assert_eq!(
        run("!request.namespace.startsWith('cattle-')"),
        Ok(json!(false))
    );
    assert!(run("request.subResource == 'x'").is_err(), "absent field");
    assert_eq!(
        run("request.subResource == 'x' || true"),
        Ok(json!(true)),
        "|| absorbs errors"
    );
    assert_eq!(
        run("has(request.subResource) && request.subResource == 'x'"),
        Ok(json!(false))
    );
    assert!(run("has(oldObject.spec)").is_err(), "has() on null");
    assert_eq!(
        run("true && false ? 'a' : (true ? 'b' : 'c')"),
        Ok(json!("b"))
    );
    for unknown in [
        "size(object) > 1",
        "request.name.endsWith('x')",
        "object.spec.replicas == 1",
        "request.namespace in ['a']",
        "self.x",
    ] {
        assert!(Parser::parse(unknown).is_err(), "{unknown} must be refused");
    }
}

// ---------------------------------------------------------------------------------------------
// The rendered webhook configuration, and the API server's decision

struct Webhook {
    name: String,
    failure_policy: String,
    timeout_seconds: u64,
    service: (String, String, String, u16),
    ca_pem: Vec<u8>,
    namespace_selector: Value,
    object_selector: Value,
    rules: Vec<Value>,
    match_conditions: Vec<(String, Expr)>,
}

fn parse_webhooks(config: &Value) -> Vec<Webhook> {
    let hooks = config["webhooks"].as_array().expect("webhooks");
    hooks
        .iter()
        .map(|h| {
            let svc = &h["clientConfig"]["service"];
            assert!(
                h["clientConfig"]["url"].is_null(),
                "the chart uses a service reference"
            );
            let ca_b64 = h["clientConfig"]["caBundle"]
                .as_str()
                .expect("caBundle rendered in secret mode");
            assert_eq!(h["admissionReviewVersions"], json!(["v1"]));
            assert_eq!(h["matchPolicy"], "Equivalent");
            Webhook {
                name: h["name"].as_str().unwrap().to_owned(),
                failure_policy: h["failurePolicy"].as_str().unwrap().to_owned(),
                timeout_seconds: h["timeoutSeconds"].as_u64().unwrap(),
                service: (
                    svc["name"].as_str().unwrap().to_owned(),
                    svc["namespace"].as_str().unwrap().to_owned(),
                    svc["path"].as_str().unwrap_or("/").to_owned(),
                    svc["port"].as_u64().unwrap_or(443) as u16,
                ),
                ca_pem: B64.decode(ca_b64).expect("caBundle is base64"),
                namespace_selector: h["namespaceSelector"].clone(),
                object_selector: h["objectSelector"].clone(),
                rules: h["rules"].as_array().unwrap().clone(),
                match_conditions: h["matchConditions"]
                    .as_array()
                    .map(|mcs| {
                        mcs.iter()
                            .map(|mc| {
                                let name = mc["name"].as_str().unwrap().to_owned();
                                let expr = Parser::parse(mc["expression"].as_str().unwrap())
                                    .unwrap_or_else(|e| {
                                        panic!("matchCondition {name} of {}: {e}", h["name"])
                                    });
                                (name, expr)
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
            }
        })
        .collect()
}

fn selector_matches(selector: &Value, labels: &BTreeMap<String, String>) -> bool {
    if selector.is_null() {
        return true;
    }
    if let Some(ml) = selector["matchLabels"].as_object() {
        for (k, v) in ml {
            if labels.get(k).map(String::as_str) != v.as_str() {
                return false;
            }
        }
    }
    for e in selector["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let key = e["key"].as_str().unwrap();
        let values: Vec<&str> = e["values"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let v = labels.get(key).map(String::as_str);
        let ok = match e["operator"].as_str().unwrap() {
            "In" => v.is_some_and(|v| values.contains(&v)),
            "NotIn" => v.is_none_or(|v| !values.contains(&v)),
            "Exists" => v.is_some(),
            "DoesNotExist" => v.is_none(),
            op => panic!("selector operator {op}"),
        };
        if !ok {
            return false;
        }
    }
    true
}

fn labels_of(obj: &Value) -> BTreeMap<String, String> {
    obj["metadata"]["labels"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

fn list_has(list: &Value, item: &str) -> bool {
    list.as_array()
        .is_some_and(|l| l.iter().any(|x| x == "*" || x == item))
}

/// (group, version, resource) of a kind, as the API server's REST mapping names it.
fn gvr(obj: &Value) -> (String, String, String) {
    let api_version = obj["apiVersion"].as_str().unwrap_or("v1");
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let kind = obj["kind"].as_str().unwrap_or_default();
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

const CLUSTER_SCOPED: &[&str] = &[
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

/// One admission request the API server is about to make.
#[derive(Clone)]
struct Request {
    what: String,
    operation: &'static str,
    namespace: String,
    object: Value,
    old_object: Option<Value>,
    sub_resource: Option<&'static str>,
}

impl Request {
    fn create(what: impl Into<String>, namespace: &str, object: Value) -> Self {
        Self {
            what: what.into(),
            operation: "CREATE",
            namespace: namespace.to_owned(),
            object,
            old_object: None,
            sub_resource: None,
        }
    }

    fn update(what: impl Into<String>, namespace: &str, old: Value, new: Value) -> Self {
        Self {
            what: what.into(),
            operation: "UPDATE",
            namespace: namespace.to_owned(),
            object: new,
            old_object: Some(old),
            sub_resource: None,
        }
    }

    /// The AdmissionReview v1 the API server sends (tests/fixtures/vcluster/01-*.yaml).
    fn review(&self, uid: &str) -> Value {
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

/// What the API server does with a request: which entry it calls, if any.
fn route<'a>(
    hooks: &'a [Webhook],
    req: &Request,
    ns_labels: &BTreeMap<String, String>,
) -> Option<&'a Webhook> {
    let (group, version, resource) = gvr(&req.object);
    let resource = match req.sub_resource {
        Some(sub) => format!("{resource}/{sub}"),
        None => resource,
    };
    let kind = req.object["kind"].as_str().unwrap_or_default();
    if CLUSTER_SCOPED.contains(&kind) {
        // every rule of the chart is `scope: Namespaced`
        return None;
    }
    let review = req.review("routing");
    let env: BTreeMap<&str, Value> = [
        ("request", review["request"].clone()),
        ("object", req.object.clone()),
        ("oldObject", req.old_object.clone().unwrap_or(Value::Null)),
    ]
    .into();
    let mut called: Vec<&Webhook> = Vec::new();
    for h in hooks {
        let rule_matches = h.rules.iter().any(|r| {
            list_has(&r["operations"], req.operation)
                && list_has(&r["apiGroups"], &group)
                && list_has(&r["apiVersions"], &version)
                && list_has(&r["resources"], &resource)
                && r["scope"]
                    .as_str()
                    .is_none_or(|s| s == "*" || s == "Namespaced")
        });
        if !rule_matches || !selector_matches(&h.namespace_selector, ns_labels) {
            continue;
        }
        // For UPDATE the API server matches the object selector on the new or the old object.
        let object_ok = selector_matches(&h.object_selector, &labels_of(&req.object))
            || req
                .old_object
                .as_ref()
                .is_some_and(|o| selector_matches(&h.object_selector, &labels_of(o)));
        if !object_ok {
            continue;
        }
        let mut all = true;
        for (name, expr) in &h.match_conditions {
            match eval(expr, &env) {
                Ok(Value::Bool(b)) => all &= b,
                other => panic!(
                    "{}: matchCondition {name} of {} does not evaluate to a bool ({other:?}): the API server would apply failurePolicy {}",
                    req.what, h.name, h.failure_policy
                ),
            }
        }
        if all {
            called.push(h);
        }
    }
    assert!(
        called.len() <= 1,
        "{}: called by {} entries (each request must be sent once)",
        req.what,
        called.len()
    );
    called.pop()
}

// ---------------------------------------------------------------------------------------------
// The API server's HTTPS client, with the Service resolved to the loopback server

struct ApiServerClient {
    https: std::net::SocketAddr,
    conns: HashMap<String, http1::SendRequest<Full<Bytes>>>,
    connections_opened: usize,
}

struct Answer {
    allowed: bool,
    message: String,
    patched: Value,
    patch_ops: usize,
}

impl ApiServerClient {
    async fn call(&mut self, hook: &Webhook, req: &Request, uid: &str) -> Answer {
        let (svc, ns, path, port) = &hook.service;
        let host = format!("{svc}.{ns}.svc");
        let key = format!("{host}:{port}");
        let mut reusable = false;
        if let Some(send) = self.conns.get_mut(&key) {
            reusable = !send.is_closed() && send.ready().await.is_ok();
        }
        if !reusable {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(&hook.ca_pem) {
                roots.add(cert.unwrap()).unwrap();
            }
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let mut tls = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
            tls.alpn_protocols = vec![b"http/1.1".to_vec()];
            let tcp = TcpStream::connect(self.https).await.unwrap();
            let stream = TlsConnector::from(Arc::new(tls))
                .connect(ServerName::try_from(host.clone()).unwrap(), tcp)
                .await
                .unwrap_or_else(|e| panic!("TLS to {host} verified against the caBundle: {e}"));
            let (send, conn) = http1::handshake(TokioIo::new(stream)).await.unwrap();
            tokio::spawn(conn);
            self.conns.insert(key.clone(), send);
            self.connections_opened += 1;
        }
        let send = self.conns.get_mut(&key).unwrap();
        let body = serde_json::to_vec(&req.review(uid)).unwrap();
        let http_req = http::Request::post(format!("{path}?timeout={}s", hook.timeout_seconds))
            .header("host", &key)
            .header("content-type", "application/json")
            .header("accept", "application/json, */*")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let (status, _, body) = read(send.send_request(http_req).await.unwrap()).await;
        assert_eq!(
            status,
            200,
            "{}: {}",
            req.what,
            String::from_utf8_lossy(&body)
        );
        let review: Value = serde_json::from_slice(&body).unwrap();
        let resp = &review["response"];
        assert_eq!(review["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(resp["uid"], uid, "{}: uid echoed", req.what);
        let allowed = resp["allowed"].as_bool().expect("allowed");
        let mut patched = req.object.clone();
        let mut patch_ops = 0;
        if let Some(patch) = resp["patch"].as_str() {
            assert_eq!(resp["patchType"], "JSONPatch");
            assert!(allowed, "{}: a patch on a denial", req.what);
            let patch: json_patch::Patch =
                serde_json::from_slice(&B64.decode(patch).unwrap()).unwrap();
            patch_ops = patch.0.len();
            json_patch::patch(&mut patched, &patch)
                .unwrap_or_else(|e| panic!("{}: patch does not apply: {e}", req.what));
        }
        Answer {
            allowed,
            message: resp["status"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            patched,
            patch_ops,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Objects and what the controllers make of them

fn pod_template(obj: &Value) -> Option<&Value> {
    match obj["kind"].as_str()? {
        "Deployment"
        | "ReplicaSet"
        | "StatefulSet"
        | "DaemonSet"
        | "Job"
        | "ReplicationController" => Some(&obj["spec"]["template"]),
        "CronJob" => Some(&obj["spec"]["jobTemplate"]["spec"]["template"]),
        "PodTemplate" => Some(&obj["template"]),
        _ => None,
    }
}

fn pod_spec(obj: &Value) -> Option<&Value> {
    if obj["kind"] == "Pod" {
        Some(&obj["spec"])
    } else {
        pod_template(obj).map(|t| &t["spec"])
    }
}

/// What no security context can fix in the fixtures: host network and hostPath volumes.
fn needs_host(obj: &Value) -> bool {
    pod_spec(obj).is_some_and(|spec| {
        spec["hostNetwork"] == true
            || spec["volumes"]
                .as_array()
                .is_some_and(|v| v.iter().any(|v| !v["hostPath"].is_null()))
    })
}

/// The pod a workload's controller creates from its (stored) template.
fn pod_from(workload: &Value) -> Option<Value> {
    let template = pod_template(workload)?;
    let name = workload["metadata"]["name"].as_str().unwrap_or("x");
    let mut meta = template["metadata"].clone();
    if !meta.is_object() {
        meta = json!({});
    }
    meta["generateName"] = json!(format!("{name}-"));
    meta["namespace"] = workload["metadata"]["namespace"].clone();
    meta["ownerReferences"] = json!([{
        "apiVersion": workload["apiVersion"], "kind": workload["kind"], "name": name,
        "uid": "00000000-0000-0000-0000-000000000001", "controller": true, "blockOwnerDeletion": true,
    }]);
    Some(json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": template["spec"]}))
}

fn fixture_objects(dir: &str) -> Vec<(String, Value)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(dir);
    let mut files: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no fixtures in {}", root.display());
    let mut out = Vec::new();
    for f in files {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        for (i, doc) in yaml_docs(&std::fs::read_to_string(&f).unwrap())
            .into_iter()
            .enumerate()
        {
            out.push((format!("{dir}/{name}#{i}"), doc));
        }
    }
    out
}

fn describe(obj: &Value) -> String {
    let m = &obj["metadata"];
    format!(
        "{} {}/{}",
        obj["kind"].as_str().unwrap_or("?"),
        m["namespace"].as_str().unwrap_or("-"),
        m["name"]
            .as_str()
            .or(m["generateName"].as_str())
            .unwrap_or("?")
    )
}

fn is_agent(obj: &Value) -> bool {
    let name = obj["metadata"]["name"]
        .as_str()
        .or(obj["metadata"]["generateName"].as_str())
        .unwrap_or_default();
    name.starts_with("cattle-cluster-agent")
}

// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct Tally {
    sent: usize,
    not_sent: usize,
    by_namespace_policy: BTreeMap<String, BTreeSet<String>>,
    denied: BTreeSet<String>,
    expected_denied: BTreeSet<String>,
    compliant_agents: usize,
    kube_system_handled: usize,
    release_namespace_checked: usize,
    patched: usize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rendered_webhook_configuration_drives_restrictor_like_the_api_server() {
    let Some(helm) = helm_binary().filter(|p| p.exists()) else {
        if std::env::var_os("CI").is_some() {
            panic!(
                "helm not found (RESTRICTOR_HELM or ci/.tools/bin/helm) but CI is set: run ci/install-k8s-tools.sh"
            );
        }
        eprintln!(
            "SKIPPED: helm not found (set RESTRICTOR_HELM or run ci/install-k8s-tools.sh); set CI=1 to make this a failure"
        );
        return;
    };

    // A CA and a serving certificate for the chart's Service, made now.
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "chart e2e CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let leaf_names: Vec<String> = [
        RELEASE.to_owned(),
        format!("{RELEASE}.{RELEASE_NS}"),
        format!("{RELEASE}.{RELEASE_NS}.svc"),
        format!("{RELEASE}.{RELEASE_NS}.svc.cluster.local"),
    ]
    .into();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(leaf_names)
        .unwrap()
        .signed_by(&leaf_key, &ca)
        .unwrap();
    let ca_b64 = B64.encode(ca.pem());

    // The chart in secret mode, caBundle = that CA.
    let rendered = helm_template(
        &helm,
        &[
            "--set".into(),
            "tls.mode=secret".into(),
            "--set".into(),
            "tls.secretName=restrictor-tls".into(),
            "--set".into(),
            format!("tls.caBundle={ca_b64}"),
        ],
    );
    let configs: Vec<&Value> = rendered
        .iter()
        .filter(|d| d["kind"] == "MutatingWebhookConfiguration")
        .collect();
    assert_eq!(configs.len(), 1, "one MutatingWebhookConfiguration");
    let hooks: Vec<Webhook> = configs.iter().flat_map(|c| parse_webhooks(c)).collect();
    assert!(
        hooks.len() >= 3,
        "rancher, workloads and kube-system entries"
    );
    let service = rendered
        .iter()
        .find(|d| d["kind"] == "Service" && d["metadata"]["name"] == hooks[0].service.0.as_str())
        .expect("the Service the webhooks call is rendered");
    for h in &hooks {
        assert_eq!(h.service.1, RELEASE_NS);
        assert_eq!(h.ca_pem, ca.pem().as_bytes(), "caBundle is tls.caBundle");
        let port = service["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["port"] == h.service.3)
            .expect("the webhook's port is a Service port");
        assert_eq!(
            port["targetPort"], "https",
            "the Service routes to the https port"
        );
    }
    let deployment = rendered.iter().find(|d| d["kind"] == "Deployment").unwrap();
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert!(
        container["args"]
            .as_array()
            .unwrap()
            .contains(&json!("--tls-cert=/etc/restrictor/tls/tls.crt"))
    );

    // restrictor serve with those certificates (the files the Secret would mount), loopback.
    let dir = TempDir::new("chart-e2e");
    std::fs::write(dir.path().join("tls.crt"), leaf.pem()).unwrap();
    std::fs::write(dir.path().join("tls.key"), leaf_key.serialize_pem()).unwrap();
    let server = TestServer::start(ServeConfig::new(TlsSource::Files {
        cert: dir.path().join("tls.crt"),
        key: dir.path().join("tls.key"),
    }))
    .await;
    let mut client = ApiServerClient {
        https: server.https,
        conns: HashMap::new(),
        connections_opened: 0,
    };

    // The API server's namespaces: every namespace carries kubernetes.io/metadata.name, plus the
    // labels a fixture's Namespace object gives it.
    let mut requests: Vec<Request> = Vec::new();
    let mut namespaces: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut fixture_review: Option<Value> = None;
    for dir in ["rancher", "vcluster"] {
        for (what, doc) in fixture_objects(dir) {
            let obj = if doc["kind"] == "AdmissionReview" {
                fixture_review = Some(doc.clone());
                doc["request"]["object"].clone()
            } else {
                doc
            };
            let kind = obj["kind"].as_str().unwrap_or_default().to_owned();
            if kind == "Namespace" {
                let name = obj["metadata"]["name"].as_str().unwrap().to_owned();
                namespaces.entry(name).or_default().extend(labels_of(&obj));
            }
            let ns = if CLUSTER_SCOPED.contains(&kind.as_str()) {
                String::new()
            } else {
                obj["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or("default")
                    .to_owned()
            };
            requests.push(Request::create(
                format!("{what} {}", describe(&obj)),
                &ns,
                obj,
            ));
        }
    }
    // The release namespace: restrictor's own objects, and worse ones, are never sent.
    let mut release_ns_requests: Vec<Request> = rendered
        .iter()
        .filter(|d| d["metadata"]["namespace"] == RELEASE_NS)
        .map(|d| Request::create(format!("chart {}", describe(d)), RELEASE_NS, d.clone()))
        .collect();
    let agent = requests
        .iter()
        .find(|r| r.object["kind"] == "Deployment" && is_agent(&r.object))
        .expect("the agent Deployment is in the fixtures")
        .object
        .clone();
    let mut agent_here = agent.clone();
    agent_here["metadata"]["namespace"] = json!(RELEASE_NS);
    release_ns_requests.push(Request::create(
        "agent Deployment in the release namespace",
        RELEASE_NS,
        agent_here.clone(),
    ));
    let mut host_pod = pod_from(&agent_here).unwrap();
    host_pod["spec"]["hostNetwork"] = json!(true);
    release_ns_requests.push(Request::create(
        "hostNetwork pod in the release namespace",
        RELEASE_NS,
        host_pod,
    ));
    let release_count = release_ns_requests.len();
    requests.extend(release_ns_requests);
    // An ordinary namespace (the workloads entry, webhook.failurePolicy = Fail by default).
    let mut agent_elsewhere = agent.clone();
    agent_elsewhere["metadata"]["namespace"] = json!("team-a");
    requests.push(Request::create(
        "agent Deployment in team-a",
        "team-a",
        agent_elsewhere,
    ));
    // A namespace opted out by label: never sent.
    let mut agent_opted_out = agent.clone();
    agent_opted_out["metadata"]["namespace"] = json!("legacy");
    namespaces.insert(
        "legacy".into(),
        [("restrictor.dev/ignore".to_owned(), "true".to_owned())].into(),
    );
    requests.push(Request::create(
        "agent Deployment in the opted-out namespace legacy",
        "legacy",
        agent_opted_out,
    ));
    // kube-system beyond the CoreDNS pod: its Deployment (vcluster's CoreDNS is one), whose
    // pods the loop below derives, all through the Ignore entry.
    let coredns = requests
        .iter()
        .find(|r| r.namespace == "kube-system" && r.object["kind"] == "Pod")
        .expect("the vcluster CoreDNS pod is in the fixtures")
        .object
        .clone();
    let mut labels = coredns["metadata"]["labels"].clone();
    if let Some(l) = labels.as_object_mut() {
        l.remove("pod-template-hash");
    }
    let coredns_deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "coredns", "namespace": "kube-system", "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": coredns["spec"]},
        },
    });
    requests.push(Request::create(
        "kube-system Deployment coredns",
        "kube-system",
        coredns_deployment,
    ));
    for r in &requests {
        if !r.namespace.is_empty() {
            let labels = namespaces.entry(r.namespace.clone()).or_default();
            labels.insert("kubernetes.io/metadata.name".into(), r.namespace.clone());
        }
    }

    // The fixture review and the review this test builds for the same pod have the same shape.
    let fixture_review = fixture_review.expect("vcluster/01 AdmissionReview fixture");
    let built = Request::create(
        "agent pod",
        "cattle-system",
        fixture_review["request"]["object"].clone(),
    )
    .review(fixture_review["request"]["uid"].as_str().unwrap());
    let keys = |v: &Value| -> BTreeSet<String> { v.as_object().unwrap().keys().cloned().collect() };
    assert_eq!(
        keys(&built["request"]),
        keys(&fixture_review["request"]),
        "request fields"
    );
    for k in [
        "kind",
        "resource",
        "requestKind",
        "requestResource",
        "namespace",
        "operation",
        "object",
        "oldObject",
        "options",
    ] {
        assert_eq!(built["request"][k], fixture_review["request"][k], "{k}");
    }

    let mut tally = Tally::default();
    let mut uid = 0u32;
    let mut queue: std::collections::VecDeque<(Request, u8)> =
        requests.into_iter().map(|r| (r, 0)).collect();
    while let Some((req, depth)) = queue.pop_front() {
        uid += 1;
        let ns_labels = namespaces.get(&req.namespace).cloned().unwrap_or_default();
        let hook = route(&hooks, &req, &ns_labels);
        if req.namespace == RELEASE_NS {
            tally.release_namespace_checked += 1;
            assert!(
                hook.is_none(),
                "{}: the release namespace is sent to {}",
                req.what,
                hook.map_or("", |h| h.name.as_str())
            );
        }
        let Some(hook) = hook else {
            tally.not_sent += 1;
            let sendable = ["Pod", "Deployment", "DaemonSet", "StatefulSet", "Job"]
                .contains(&req.object["kind"].as_str().unwrap_or_default())
                && req.operation == "CREATE";
            assert!(
                !sendable
                    || req.namespace == RELEASE_NS
                    || labels_of(&req.object).contains_key("restrictor.dev/ignore")
                    || ns_labels.contains_key("restrictor.dev/ignore"),
                "{}: a workload CREATE outside the release namespace is not sent",
                req.what
            );
            continue;
        };
        tally.sent += 1;
        assert!(
            !ns_labels.contains_key("restrictor.dev/ignore")
                && !labels_of(&req.object).contains_key("restrictor.dev/ignore"),
            "{}: opted out, but sent",
            req.what
        );
        tally
            .by_namespace_policy
            .entry(req.namespace.clone())
            .or_default()
            .insert(hook.failure_policy.clone());
        let answer = client.call(hook, &req, &format!("uid-{uid}")).await;
        if needs_host(&req.object) {
            tally.expected_denied.insert(req.what.clone());
        }
        if !answer.allowed {
            assert!(
                !answer.message.is_empty(),
                "{}: a denial says why",
                req.what
            );
            tally.denied.insert(req.what.clone());
            // Its pods, had it been created before restrictor, are denied too.
            if depth == 0
                && let Some(pod) = pod_from(&req.object)
            {
                queue.push_back((
                    Request::create(format!("pod of {}", req.what), &req.namespace, pod),
                    1,
                ));
            }
            continue;
        }
        if answer.patch_ops > 0 {
            tally.patched += 1;
        } else if req.operation == "CREATE" && is_agent(&req.object) {
            assert!(
                check_object(&req.object, Level::Restricted).is_some_and(|v| v.is_empty()),
                "{}: a non-compliant agent admitted without a patch",
                req.what
            );
        }
        if req.namespace == "kube-system" {
            assert_eq!(hook.failure_policy, "Ignore");
            tally.kube_system_handled += 1;
        }
        // Every admitted pod or template restrictor handled passes restricted.
        if let Some(violations) = check_object(&answer.patched, Level::Restricted) {
            assert!(
                violations.is_empty(),
                "{}: still fails restricted after restrictor: {violations:?}",
                req.what
            );
            if is_agent(&answer.patched) {
                tally.compliant_agents += 1;
            }
        }
        if depth > 0 {
            continue;
        }
        // What follows an admitted request in the cluster:
        let obj = &req.object;
        if pod_template(obj).is_some() && req.operation == "CREATE" {
            // the controller creates pods from the stored (mutated) template...
            if let Some(pod) = pod_from(&answer.patched) {
                queue.push_back((
                    Request::create(format!("pod of {}", req.what), &req.namespace, pod),
                    1,
                ));
            }
            // ...and from the template as it was, as for a workload created before restrictor.
            if let Some(pod) = pod_from(obj) {
                queue.push_back((
                    Request::create(
                        format!("pod of unmutated {}", req.what),
                        &req.namespace,
                        pod,
                    ),
                    1,
                ));
            }
            // A metadata-only UPDATE (a controller's label) is not sent.
            let mut relabelled = answer.patched.clone();
            relabelled["metadata"]["labels"]["e2e/touched"] = json!("yes");
            queue.push_back((
                Request::update(
                    format!("label update of {}", req.what),
                    &req.namespace,
                    answer.patched.clone(),
                    relabelled,
                ),
                1,
            ));
            // A finalizer removal of an object being deleted is not sent.
            let mut deleting = answer.patched.clone();
            deleting["metadata"]["deletionTimestamp"] = json!("2026-11-25T07:00:00Z");
            let mut finalized = deleting.clone();
            deleting["metadata"]["finalizers"] = json!(["e2e/finalizer"]);
            finalized["metadata"]["finalizers"] = json!([]);
            queue.push_back((
                Request::update(
                    format!("finalizer removal of {}", req.what),
                    &req.namespace,
                    deleting,
                    finalized,
                ),
                1,
            ));
            // `kubectl rollout restart` of the unmutated object (reconcileExisting) is sent.
            if obj["kind"] == "Deployment" {
                let mut restarted = obj.clone();
                restarted["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"] =
                    json!("2026-11-25T07:00:00Z");
                queue.push_back((
                    Request::update(
                        format!("rollout restart of unmutated {}", req.what),
                        &req.namespace,
                        obj.clone(),
                        restarted,
                    ),
                    1,
                ));
            }
        }
        if obj["kind"] == "Pod" && is_agent(obj) {
            // `kubectl debug` on the agent pod: pods/ephemeralcontainers UPDATE is sent.
            let old = answer.patched.clone();
            let mut new = old.clone();
            new["spec"]["ephemeralContainers"] = json!([{
                "name": "debugger", "image": "busybox:1.36", "targetContainerName": "cluster-register",
            }]);
            let mut r = Request::update(
                format!("ephemeral container on {}", req.what),
                &req.namespace,
                old,
                new,
            );
            r.sub_resource = Some("ephemeralcontainers");
            queue.push_back((r, 1));
            // The same pod opted out by label is not sent.
            let mut opted_out = obj.clone();
            opted_out["metadata"]["labels"]["restrictor.dev/ignore"] = json!("true");
            queue.push_back((
                Request::create(format!("opted-out {}", req.what), &req.namespace, opted_out),
                1,
            ));
        }
    }

    eprintln!(
        "chart e2e: {} requests sent ({} patched, {} denied), {} not sent, {} connection(s), agents compliant {}, kube-system handled {}, release namespace checked {}",
        tally.sent,
        tally.patched,
        tally.denied.len(),
        tally.not_sent,
        client.connections_opened,
        tally.compliant_agents,
        tally.kube_system_handled,
        tally.release_namespace_checked
    );
    eprintln!("denied: {:#?}", tally.denied);
    eprintln!(
        "failurePolicy per namespace: {:?}",
        tally.by_namespace_policy
    );
    assert_eq!(
        tally.denied, tally.expected_denied,
        "denied objects are exactly the hostNetwork/hostPath ones"
    );
    assert!(
        !tally.denied.is_empty(),
        "the fixtures hold hostNetwork/hostPath workloads"
    );
    assert!(
        tally.compliant_agents >= 10,
        "the Rancher agent came out compliant ({} times)",
        tally.compliant_agents
    );
    assert!(
        tally.kube_system_handled >= 4,
        "kube-system pods are handled (Ignore entry)"
    );
    assert_eq!(
        tally.release_namespace_checked, release_count,
        "every release-namespace object was routed (and none sent)"
    );
    assert!(
        release_count >= 5,
        "the chart's own objects were routed too"
    );
    // failurePolicy per namespace as issue 5 says.
    for (ns, policies) in &tally.by_namespace_policy {
        let want = if ns == "kube-system" {
            "Ignore"
        } else {
            // cattle-* always Fail; every other namespace the default webhook.failurePolicy=Fail
            "Fail"
        };
        assert_eq!(
            policies,
            &BTreeSet::from([want.to_owned()]),
            "failurePolicy in {ns}"
        );
    }
    for ns in [
        "cattle-system",
        "cattle-fleet-system",
        "kube-system",
        "team-a",
    ] {
        assert!(
            tally.by_namespace_policy.contains_key(ns),
            "nothing was sent for {ns}"
        );
    }
    assert_eq!(
        client.connections_opened, 1,
        "one keep-alive connection served every request"
    );
    server.shutdown().await.unwrap();
}
