//! Node affinity and control-plane tolerations: together they steer a tenant's pod onto the host's
//! control-plane nodes, which a vcluster tenant must never target. Pod anti-affinity and other
//! tolerations are kept.

use serde_json::Value;

use super::{Mutation, Scope};

pub(super) fn apply(m: &mut Mutation<'_, '_>) {
    if m.profile.strip_node_affinity {
        strip_node_affinity(m);
    }
    if !m.profile.strip_tolerations.is_empty() {
        strip_tolerations(m);
    }
}

fn strip_node_affinity(m: &mut Mutation<'_, '_>) {
    let Some(affinity) = m.spec().get("affinity").and_then(Value::as_object) else {
        return;
    };
    if !affinity.contains_key("nodeAffinity") {
        return;
    }
    // Leave no empty `affinity: {}` behind when node affinity was all there was.
    if affinity.len() == 1 {
        m.editor.remove("/spec/affinity");
    } else {
        m.editor.remove("/spec/affinity/nodeAffinity");
    }
    m.change(Scope::Pod, "removed affinity.nodeAffinity");
}

fn strip_tolerations(m: &mut Mutation<'_, '_>) {
    let keys = &m.profile.strip_tolerations;
    let stripped: Vec<(usize, String)> = m
        .spec()
        .get("tolerations")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
        .filter_map(|(index, toleration)| {
            let key = toleration.get("key").and_then(Value::as_str)?;
            keys.iter()
                .any(|k| k == key)
                .then(|| (index, key.to_owned()))
        })
        .collect();
    // Highest index first, so each removal leaves the indices still to remove valid.
    for (index, _) in stripped.iter().rev() {
        m.editor.remove(&format!("/spec/tolerations/{index}"));
    }
    for (_, key) in stripped {
        m.change(Scope::Pod, format!("removed toleration {key}"));
    }
}
