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
    if token.contains('~') {
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
        if pointer.is_empty() {
            return Some(self);
        }
        let rest = pointer.strip_prefix('/')?;
        rest.split('/').try_fold(self, |node, token| match node {
            Value::Object(map) => map.get(unescape(token).as_ref()),
            Value::Array(items) => items.get(parse_index(token)?),
            _ => None,
        })
    }

    fn at_mut(&mut self, pointer: &str) -> Option<&mut Value> {
        if pointer.is_empty() {
            return Some(self);
        }
        let rest = pointer.strip_prefix('/')?;
        rest.split('/').try_fold(self, |node, token| match node {
            Value::Object(map) => map.get_mut(unescape(token).as_ref()),
            Value::Array(items) => items.get_mut(parse_index(token)?),
            _ => None,
        })
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

    pub fn ops(&self) -> &[Op] {
        &self.ops
    }

    pub fn into_ops(self) -> Vec<Op> {
        self.ops
    }

    /// Sets the value at `pointer` (relative to the subtree), creating missing or non-object parents.
    /// Returns false when the value is already there (no operation recorded).
    pub fn set(&mut self, pointer: &str, value: Value) -> bool {
        if self.doc.at(pointer) == Some(&value) {
            return false;
        }
        let tokens: Vec<Cow<'_, str>> = pointer.split('/').skip(1).map(unescape).collect();
        let Some(parents) = tokens.len().checked_sub(1).map(|n| &tokens[..n]) else {
            return false;
        };
        // Walk down while parents exist as objects or arrays; the first missing (or scalar/null)
        // parent is created whole with the remaining path nested inside it.
        let mut node = &mut *self.doc;
        let mut depth = 0;
        let mut path = self.base.clone();
        for token in parents {
            let exists = match node {
                Value::Object(map) => map
                    .get(token.as_ref())
                    .is_some_and(|child| child.is_object() || child.is_array()),
                Value::Array(items) => token.parse::<usize>().is_ok_and(|i| i < items.len()),
                _ => false,
            };
            if !exists {
                break;
            }
            path.push('/');
            path.push_str(&escape(token));
            node = match node {
                Value::Object(map) => match map.get_mut(token.as_ref()) {
                    Some(child) => child,
                    None => return false,
                },
                Value::Array(items) => {
                    match token.parse::<usize>().ok().and_then(|i| items.get_mut(i)) {
                        Some(child) => child,
                        None => return false,
                    }
                }
                _ => return false,
            };
            depth += 1;
        }
        // Build the nested value for the part of the path that does not exist yet.
        let mut nested = value;
        for token in tokens[depth + 1..].iter().rev() {
            let mut map = Map::new();
            map.insert(token.to_string(), nested);
            nested = Value::Object(map);
        }
        let key = &tokens[depth];
        path.push('/');
        path.push_str(&escape(key));
        let map = match node {
            Value::Object(map) => map,
            Value::Array(items) => {
                // Arrays are only ever edited in place, at an existing index.
                let Some(slot) = key.parse::<usize>().ok().and_then(|i| items.get_mut(i)) else {
                    return false;
                };
                self.ops.push(Op::Replace {
                    path,
                    value: Json::of(&nested),
                });
                *slot = nested;
                return true;
            }
            _ => return false,
        };
        let value = Json::of(&nested);
        let op = if map.contains_key(key.as_ref()) {
            Op::Replace { path, value }
        } else {
            Op::Add { path, value }
        };
        map.insert(key.to_string(), nested);
        self.ops.push(op);
        true
    }

    /// Removes the member or element at `pointer`; returns false when it does not exist.
    pub fn remove(&mut self, pointer: &str) -> bool {
        let Some((parent, last)) = pointer.rsplit_once('/') else {
            return false;
        };
        let removed = match self.doc.at_mut(parent) {
            Some(Value::Object(map)) => map.remove(unescape(last).as_ref()).is_some(),
            Some(Value::Array(items)) => match last.parse::<usize>() {
                Ok(index) if index < items.len() => {
                    items.remove(index);
                    true
                }
                _ => false,
            },
            _ => false,
        };
        if removed {
            self.ops.push(Op::Remove {
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
                self.ops.push(Op::Add {
                    path,
                    value: Json::of(&value),
                });
                items.push(value);
            }
            _ => {
                self.set(pointer, Value::Array(vec![value]));
            }
        }
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
