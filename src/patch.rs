//! RFC 6902 JSON Patch operations, built against the original JSON so nothing else of the object is
//! touched (fields k8s-openapi does not know survive because they are never parsed into types).
//!
//! An [`Editor`] holds a working copy of one subtree of the object (the pod template), applies each
//! edit to it at once so later rules see the result, and records the operation that makes the same
//! edit on the original.

use std::borrow::Cow;

use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// One RFC 6902 operation. Paths are RFC 6901 pointers into the whole object.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Op {
    Add { path: String, value: Json },
    Replace { path: String, value: Json },
    Remove { path: String },
}

/// An operation's value, serialized when the operation is recorded. The patch is sent as JSON
/// anyway, so this costs nothing extra, and it saves cloning every value the engine adds into
/// the operation and dropping that clone later (the largest cost of adding mounts and containers).
#[derive(Debug, Clone)]
pub struct Json(Box<RawValue>);

impl Json {
    pub fn of(value: &Value) -> Self {
        // Serializing a `Value` cannot fail (its keys are strings); `null` only keeps this total.
        Self(serde_json::value::to_raw_value(value).unwrap_or_else(|_| RawValue::NULL.to_owned()))
    }

    /// The JSON text.
    pub fn as_str(&self) -> &str {
        self.0.get()
    }
}

impl PartialEq for Json {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Serialize for Json {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl Op {
    pub fn path(&self) -> &str {
        match self {
            Op::Add { path, .. } | Op::Replace { path, .. } | Op::Remove { path } => path,
        }
    }
}

/// Escapes one reference token per RFC 6901 (`~` → `~0`, `/` → `~1`).
pub fn escape(token: &str) -> Cow<'_, str> {
    if token.contains(['~', '/']) {
        Cow::Owned(token.replace('~', "~0").replace('/', "~1"))
    } else {
        Cow::Borrowed(token)
    }
}

fn unescape(token: &str) -> Cow<'_, str> {
    if token.bytes().any(|b| b == b'~') {
        Cow::Owned(token.replace("~1", "/").replace("~0", "~"))
    } else {
        Cow::Borrowed(token)
    }
}

/// RFC 6901 lookups that allocate nothing unless a token is escaped (`Value::pointer` allocates a
/// `String` per token, which dominated the engine's profile).
pub trait Pointer {
    fn at(&self, pointer: &str) -> Option<&Value>;
    fn at_mut(&mut self, pointer: &str) -> Option<&mut Value>;
}

impl Pointer for Value {
    fn at(&self, pointer: &str) -> Option<&Value> {
        if !pointer.is_empty() && !pointer.starts_with('/') {
            return None;
        }
        RawTokens::of(pointer).try_fold(self, |node, token| child(node, &unescape(token)))
    }

    fn at_mut(&mut self, pointer: &str) -> Option<&mut Value> {
        if !pointer.is_empty() && !pointer.starts_with('/') {
            return None;
        }
        RawTokens::of(pointer).try_fold(self, |node, token| child_mut(node, &unescape(token)))
    }
}

/// Array indices per RFC 6901: decimal, no leading zeros (except "0"), no sign.
fn parse_index(token: &str) -> Option<usize> {
    if token.starts_with('+') || (token.len() > 1 && token.starts_with('0')) {
        return None;
    }
    token.parse().ok()
}

/// Edits a working copy of the subtree at `base` and records matching operations.
#[derive(Debug)]
pub struct Editor<'a> {
    base: String,
    doc: &'a mut Value,
    ops: Vec<Op>,
}

impl<'a> Editor<'a> {
    /// Edits `doc` in place; `base` is its pointer inside the whole object (`""` for the object
    /// itself). Editing in place, rather than a copy, saves cloning and dropping the pod template on
    /// every request (over half the engine's cost when it cloned).
    pub fn new(base: impl Into<String>, doc: &'a mut Value) -> Self {
        Self {
            base: base.into(),
            doc,
            ops: Vec::new(),
        }
    }

    /// The working copy, with every edit so far applied.
    pub fn doc(&self) -> &Value {
        self.doc
    }

    pub fn get(&self, pointer: &str) -> Option<&Value> {
        self.doc.at(pointer)
    }

    pub fn into_ops(self) -> Vec<Op> {
        self.ops
    }

    /// Sets the value at `pointer` (relative to the subtree), creating missing or non-object parents.
    /// Returns false when the value is already there (no operation recorded).
    pub fn set(&mut self, pointer: &str, value: Value) -> bool {
        // Split once; every walk below reuses the tokens.
        let tokens: Vec<&str> = RawTokens::of(pointer).collect();
        let Some((leaf, parents)) = tokens.split_last() else {
            // `""` would replace the whole subtree, which no rule does.
            return false;
        };
        // One read-only walk: how deep the parents exist as objects or arrays, and whether the
        // value is already in place. The first missing (or scalar/null) parent is then created
        // whole, with the rest of the path nested inside it, in one operation.
        let mut node = &*self.doc;
        let mut depth = 0;
        for token in parents {
            match child(node, &unescape(token)) {
                Some(next) if next.is_object() || next.is_array() => node = next,
                _ => break,
            }
            depth += 1;
        }
        if depth == parents.len() && child(node, &unescape(leaf)) == Some(&value) {
            return false;
        }

        let mut node = &mut *self.doc;
        for token in &tokens[..depth] {
            node = match child_mut(node, &unescape(token)) {
                Some(next) => next,
                None => return false,
            };
        }
        let key = unescape(tokens[depth]);
        let nested = tokens[depth + 1..]
            .iter()
            .rev()
            .fold(value, |inner, token| {
                Value::Object(Map::from_iter([(unescape(token).into_owned(), inner)]))
            });
        // The pointer is escaped already: the operation's path is its prefix, no re-escaping.
        let prefix_len: usize = tokens[..=depth].iter().map(|token| token.len() + 1).sum();
        let path = format!("{}{}", self.base, &pointer[..prefix_len]);
        let json = Json::of(&nested);
        let op = match node {
            Value::Object(map) => match map.insert(key.into_owned(), nested) {
                Some(_) => Op::Replace { path, value: json },
                None => Op::Add { path, value: json },
            },
            Value::Array(items) => {
                // Arrays are only ever edited in place, at an existing index.
                let Some(slot) = parse_index(&key).and_then(|i| items.get_mut(i)) else {
                    return false;
                };
                *slot = nested;
                Op::Replace { path, value: json }
            }
            _ => return false,
        };
        self.record(op);
        true
    }

    /// Removes the member or element at `pointer`; returns false when it does not exist.
    pub fn remove(&mut self, pointer: &str) -> bool {
        let Some((parent, last)) = pointer.rsplit_once('/') else {
            return false;
        };
        let removed = match self.doc.at_mut(parent) {
            Some(Value::Object(map)) => map.remove(unescape(last).as_ref()).is_some(),
            Some(Value::Array(items)) => match parse_index(last) {
                Some(index) if index < items.len() => {
                    items.remove(index);
                    true
                }
                _ => false,
            },
            _ => false,
        };
        if removed {
            self.record(Op::Remove {
                path: format!("{}{pointer}", self.base),
            });
        }
        removed
    }

    /// Appends to the array at `pointer`, creating it when missing (or not an array).
    pub fn push(&mut self, pointer: &str, value: Value) {
        match self.doc.at_mut(pointer) {
            Some(Value::Array(items)) => {
                let path = format!("{}{pointer}/{}", self.base, items.len());
                let value_json = Json::of(&value);
                items.push(value);
                self.record(Op::Add {
                    path,
                    value: value_json,
                });
            }
            _ => {
                self.set(pointer, Value::Array(vec![value]));
            }
        }
    }

    /// Records `op`, folding it into the previous operation when that one put in place the very
    /// subtree `op` edits: `add securityContext {runAsNonRoot}` then `add securityContext/runAsUser`
    /// become one `add securityContext {runAsNonRoot, runAsUser}`. Only the previous operation is
    /// folded into, so no operation in between can have moved what its path points at; the working
    /// copy then holds exactly the subtree the two operations produce.
    fn record(&mut self, op: Op) {
        if let Some(Op::Add { path, value } | Op::Replace { path, value }) = self.ops.last_mut()
            && is_inside(op.path(), path)
            && let Some(subtree) = path
                .strip_prefix(self.base.as_str())
                .and_then(|relative| self.doc.at(relative))
        {
            *value = Json::of(subtree);
            return;
        }
        self.ops.push(op);
    }
}

/// The reference tokens of a pointer, still escaped; none for `""`.
///
/// Splits on the byte `/` (ASCII, so every token stays on char boundaries): cheaper than
/// `split('/')`, which calls `memchr` per token, or a char predicate, which decodes UTF-8 per char,
/// and pointer walks are the engine's hottest path.
struct RawTokens<'a>(Option<&'a str>);

impl<'a> RawTokens<'a> {
    fn of(pointer: &'a str) -> Self {
        Self(pointer.strip_prefix('/'))
    }
}

impl<'a> Iterator for RawTokens<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let rest = self.0?;
        match rest.bytes().position(|b| b == b'/') {
            Some(end) => {
                self.0 = Some(&rest[end + 1..]);
                Some(&rest[..end])
            }
            None => {
                self.0 = None;
                Some(rest)
            }
        }
    }
}

/// Whether `path` points strictly inside `parent`, by whole tokens.
fn is_inside(path: &str, parent: &str) -> bool {
    path.strip_prefix(parent)
        .is_some_and(|rest| rest.starts_with('/'))
}

fn child<'v>(node: &'v Value, token: &str) -> Option<&'v Value> {
    match node {
        Value::Object(map) => map.get(token),
        Value::Array(items) => items.get(parse_index(token)?),
        _ => None,
    }
}

fn child_mut<'v>(node: &'v mut Value, token: &str) -> Option<&'v mut Value> {
    match node {
        Value::Object(map) => map.get_mut(token),
        Value::Array(items) => items.get_mut(parse_index(token)?),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Applies the recorded operations to `original` with an independent RFC 6902 implementation and
    /// checks the result equals the editor's working copy.
    fn assert_ops_reproduce(original: &Value, base: &str, doc: &Value, ops: Vec<Op>) -> Vec<Op> {
        let patch: json_patch::Patch =
            serde_json::from_value(serde_json::to_value(&ops).expect("ops")).expect("patch");
        let mut applied = original.clone();
        json_patch::patch(&mut applied, &patch).expect("patch applies");
        assert_eq!(applied.at(base), Some(doc));
        ops
    }

    #[test]
    fn set_creates_missing_parents_in_one_operation() {
        let original = json!({"spec": {"template": {"spec": {"containers": [{"name": "a"}]}}}});
        let mut doc = original["spec"]["template"].clone();
        let mut editor = Editor::new("/spec/template", &mut doc);
        assert!(editor.set(
            "/spec/securityContext/seccompProfile/type",
            json!("RuntimeDefault")
        ));
        let ops = editor.into_ops();
        let ops = assert_ops_reproduce(&original, "/spec/template", &doc, ops);
        assert_eq!(
            ops,
            [Op::Add {
                path: "/spec/template/spec/securityContext".into(),
                value: Json::of(&json!({"seccompProfile": {"type": "RuntimeDefault"}})),
            }]
        );
    }

    #[test]
    fn set_replaces_null_and_scalar_parents_and_existing_values() {
        let original = json!({"spec": {"securityContext": null, "containers": [{"securityContext": {"runAsUser": 0}}]}});
        let mut doc = original.clone();
        let mut editor = Editor::new("", &mut doc);
        assert!(editor.set("/spec/securityContext/runAsNonRoot", json!(true)));
        assert!(editor.set("/spec/containers/0/securityContext/runAsUser", json!(1000)));
        assert!(!editor.set("/spec/containers/0/securityContext/runAsUser", json!(1000)));
        let ops = editor.into_ops();
        let ops = assert_ops_reproduce(&original, "", &doc, ops);
        assert_eq!(ops.len(), 2);
        assert!(
            matches!(&ops[1], Op::Replace { path, .. } if path == "/spec/containers/0/securityContext/runAsUser")
        );
    }

    #[test]
    fn edits_inside_what_the_previous_operation_added_fold_into_it() {
        let original = json!({"spec": {"containers": [{"name": "a"}], "volumes": []}});
        let mut doc = original.clone();
        let mut editor = Editor::new("", &mut doc);
        assert!(editor.set("/spec/securityContext/runAsNonRoot", json!(true)));
        assert!(editor.set("/spec/securityContext/runAsUser", json!(1000)));
        editor.push(
            "/spec/securityContext/sysctls",
            json!({"name": "a", "value": "0"}),
        );
        editor.push(
            "/spec/securityContext/sysctls",
            json!({"name": "b", "value": "1"}),
        );
        assert!(editor.remove("/spec/securityContext/runAsUser"));
        // Not inside the previous operation's subtree: a new operation, and later edits inside
        // the security context no longer fold into the earlier one.
        editor.push("/spec/volumes", json!({"name": "v"}));
        assert!(editor.set("/spec/securityContext/fsGroup", json!(1000)));
        let ops = editor.into_ops();
        let ops = assert_ops_reproduce(&original, "", &doc, ops);
        let summary: Vec<(&str, String)> = ops
            .iter()
            .map(|op| match op {
                Op::Add { path, value } | Op::Replace { path, value } => {
                    (path.as_str(), value.as_str().to_owned())
                }
                Op::Remove { path } => (path.as_str(), String::new()),
            })
            .collect();
        assert_eq!(
            summary,
            [
                (
                    "/spec/securityContext",
                    r#"{"runAsNonRoot":true,"sysctls":[{"name":"a","value":"0"},{"name":"b","value":"1"}]}"#
                        .to_owned()
                ),
                ("/spec/volumes/0", r#"{"name":"v"}"#.to_owned()),
                ("/spec/securityContext/fsGroup", "1000".to_owned()),
            ]
        );
    }

    #[test]
    fn a_sibling_with_a_common_prefix_is_not_inside() {
        let original = json!({"spec": {}});
        let mut doc = original.clone();
        let mut editor = Editor::new("", &mut doc);
        assert!(editor.set("/spec/security", json!({})));
        assert!(editor.set("/spec/securityContext", json!({"a": 1})));
        let ops = editor.into_ops();
        assert_eq!(assert_ops_reproduce(&original, "", &doc, ops).len(), 2);
    }

    #[test]
    fn keys_with_slashes_and_tildes_are_escaped() {
        let original = json!({"metadata": {"annotations": {"container.apparmor.security.beta.kubernetes.io/a~b": "unconfined"}}});
        let mut doc = original.clone();
        let mut editor = Editor::new("", &mut doc);
        assert!(
            editor.remove(
                "/metadata/annotations/container.apparmor.security.beta.kubernetes.io~1a~0b"
            )
        );
        assert!(editor.set("/metadata/labels/example.com~1x", json!("y")));
        let ops = editor.into_ops();
        let ops = assert_ops_reproduce(&original, "", &doc, ops);
        assert_eq!(
            ops[0].path(),
            "/metadata/annotations/container.apparmor.security.beta.kubernetes.io~1a~0b"
        );
        assert_eq!(escape("a/b~c"), "a~1b~0c");
    }

    #[test]
    fn push_appends_or_creates_and_remove_deletes_elements() {
        let original = json!({"spec": {"volumes": [{"name": "a"}, {"name": "b"}]}});
        let mut doc = original.clone();
        let mut editor = Editor::new("", &mut doc);
        editor.push("/spec/volumes", json!({"name": "c"}));
        editor.push("/spec/initContainers", json!({"name": "seed"}));
        assert!(editor.remove("/spec/volumes/0"));
        assert!(!editor.remove("/spec/volumes/9"));
        assert!(!editor.remove("/spec/nothing"));
        let ops = editor.into_ops();
        assert_ops_reproduce(&original, "", &doc, ops);
    }

    #[test]
    fn pointers_split_into_escaped_tokens() {
        let split = |pointer| RawTokens::of(pointer).collect::<Vec<_>>();
        assert!(split("").is_empty());
        assert_eq!(split("/"), [""]);
        assert_eq!(split("/a/b~1c"), ["a", "b~1c"]);
        assert_eq!(split("/a//b/"), ["a", "", "b", ""]);
        assert_eq!(split("/ü/x"), ["ü", "x"]);
    }

    #[test]
    fn lookups_follow_rfc_6901() {
        let doc = json!({"a/b": {"m~n": [10, 20]}, "": 1});
        assert_eq!(doc.at(""), Some(&doc));
        assert_eq!(doc.at("/a~1b/m~0n/1"), Some(&json!(20)));
        assert_eq!(doc.at("/"), Some(&json!(1)));
        assert_eq!(doc.at("/a~1b/m~0n/01"), None);
        assert_eq!(doc.at("/a~1b/m~0n/2"), None);
        assert_eq!(doc.at("no-slash"), None);
        for pointer in ["", "/a~1b/m~0n/0", "/x"] {
            assert_eq!(doc.at(pointer), doc.pointer(pointer), "{pointer}");
        }
    }

    #[test]
    fn unknown_fields_are_never_touched() {
        let original =
            json!({"spec": {"futureField": {"x": 1}, "securityContext": {"futureKnob": true}}});
        let mut doc = original.clone();
        let mut editor = Editor::new("", &mut doc);
        editor.set("/spec/securityContext/runAsNonRoot", json!(true));
        let ops = editor.into_ops();
        assert_eq!(doc["spec"]["futureField"], json!({"x": 1}));
        assert_eq!(doc["spec"]["securityContext"]["futureKnob"], json!(true));
        assert_eq!(ops.len(), 1);
    }
}
