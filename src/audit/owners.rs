//! Which listed object owns which: Pod -> ReplicaSet -> Deployment, Pod -> Job -> CronJob, by the
//! controller `ownerReference` the workload controllers set (matched by uid, as the garbage
//! collector matches them).

use std::collections::HashMap;

use serde_json::Value;

/// The uid of the object's controller, from `metadata.ownerReferences[controller=true]`.
pub(super) fn controller_uid(object: &Value) -> Option<String> {
    object
        .pointer("/metadata/ownerReferences")?
        .as_array()?
        .iter()
        .find(|reference| reference.get("controller").and_then(Value::as_bool) == Some(true))?
        .get("uid")?
        .as_str()
        .map(str::to_owned)
}

/// For each object (its uid, its controller's uid), the index of the object it is summarised
/// under: its topmost listed controller, or itself when its controller is not listed (a pod owned
/// by a kind restrictor does not know stays an entry of its own). A cycle (which the API server
/// cannot produce, but a fixture can) ends at the object where it closes.
pub(super) fn roots(objects: &[(Option<&str>, Option<&str>)]) -> Vec<usize> {
    let by_uid: HashMap<&str, usize> = objects
        .iter()
        .enumerate()
        .filter_map(|(index, (uid, _))| Some(((*uid)?, index)))
        .collect();
    (0..objects.len())
        .map(|start| {
            let mut current = start;
            let mut seen = vec![start];
            while let Some(owner) = objects[current].1.and_then(|uid| by_uid.get(uid)) {
                if seen.contains(owner) {
                    break;
                }
                seen.push(*owner);
                current = *owner;
            }
            current
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pods_are_summarised_under_their_topmost_listed_controller() {
        // 0 Deployment, 1 ReplicaSet of 0, 2 Pod of 1, 3 Pod of an unlisted owner, 4 bare Pod.
        let objects = [
            (Some("d"), None),
            (Some("rs"), Some("d")),
            (Some("p1"), Some("rs")),
            (Some("p2"), Some("unlisted")),
            (Some("p3"), None),
        ];
        assert_eq!(roots(&objects), [0, 0, 0, 3, 4]);
    }

    #[test]
    fn an_ownership_cycle_ends_instead_of_looping() {
        let objects = [(Some("a"), Some("b")), (Some("b"), Some("a"))];
        assert_eq!(roots(&objects), [1, 0]);
    }

    #[test]
    fn only_the_controller_reference_counts() {
        let object = json!({"metadata": {"ownerReferences": [
            {"kind": "Other", "uid": "x"},
            {"kind": "ReplicaSet", "uid": "rs", "controller": true}
        ]}});
        assert_eq!(controller_uid(&object).as_deref(), Some("rs"));
        assert_eq!(controller_uid(&json!({"metadata": {}})), None);
    }
}
