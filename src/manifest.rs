//! Reading Kubernetes manifests: multi-document YAML or JSON, with `List` kinds expanded, into
//! untyped JSON values (nothing is lost to a schema).

use serde::Deserialize;
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{source_name}: document {document}: {message}")]
    Parse {
        source_name: String,
        document: usize,
        message: String,
    },
}

/// The `ownerReferences` entry of `object` marked `controller: true`: the workload that made it.
pub fn controller_reference(object: &Value) -> Option<&Value> {
    object
        .pointer("/metadata/ownerReferences")?
        .as_array()?
        .iter()
        .find(|reference| reference.get("controller").and_then(Value::as_bool) == Some(true))
}

/// Every object in `text` (YAML documents or a JSON value), in order; empty documents are skipped
/// and `List` kinds (`v1/List`, `DeploymentList`, ...) contribute their items.
pub fn parse(source_name: &str, text: &str) -> Result<Vec<Value>, ManifestError> {
    let mut objects = Vec::new();
    for (index, document) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let value = Value::deserialize(document).map_err(|error| ManifestError::Parse {
            source_name: source_name.to_owned(),
            document: index + 1,
            message: error.to_string(),
        })?;
        push_expanded(&mut objects, value);
    }
    Ok(objects)
}

fn push_expanded(objects: &mut Vec<Value>, value: Value) {
    match value {
        Value::Null => {}
        Value::Object(mut map)
            if map
                .get("kind")
                .and_then(Value::as_str)
                .is_some_and(|kind| kind.ends_with("List"))
                && map.get("items").is_some_and(Value::is_array) =>
        {
            if let Some(Value::Array(items)) = map.remove("items") {
                for item in items {
                    push_expanded(objects, item);
                }
            }
        }
        other => objects.push(other),
    }
}

/// `Kind namespace/name` for messages; a `generateName` shows as `prefix*`.
pub fn describe(object: &Value) -> String {
    let kind = object
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("object");
    let metadata = object.get("metadata");
    let field = |name: &str| metadata.and_then(|m| m.get(name)).and_then(Value::as_str);
    let name = match (field("name"), field("generateName")) {
        (Some(name), _) if !name.is_empty() => name.to_owned(),
        (_, Some(prefix)) => format!("{prefix}*"),
        _ => "<unnamed>".to_owned(),
    };
    match field("namespace") {
        Some(namespace) if !namespace.is_empty() => format!("{kind} {namespace}/{name}"),
        _ => format!("{kind} {name}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_multi_document_yaml_with_comments_and_empty_documents() {
        let text = "# source: somewhere\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: b, namespace: a}\n";
        let objects = parse("x.yaml", text).expect("parse");
        assert_eq!(objects.len(), 2);
        assert_eq!(describe(&objects[1]), "ConfigMap a/b");
    }

    #[test]
    fn reads_json_and_expands_lists() {
        let text = r#"{"apiVersion":"v1","kind":"List","items":[{"kind":"Pod","metadata":{"generateName":"p-","namespace":"n"}},{"kind":"DeploymentList","items":[{"kind":"Deployment","metadata":{"name":"d"}}]}]}"#;
        let objects = parse("x.json", text).expect("parse");
        assert_eq!(objects.len(), 2);
        assert_eq!(describe(&objects[0]), "Pod n/p-*");
        assert_eq!(
            objects[1],
            json!({"kind": "Deployment", "metadata": {"name": "d"}})
        );
    }

    #[test]
    fn a_syntax_error_names_the_source_and_document() {
        let error = parse("bad.yaml", "a: 1\n---\nb: [unclosed\n").expect_err("error");
        let message = error.to_string();
        assert!(message.starts_with("bad.yaml: document 2:"), "{message}");
    }
}
