//! Writable directories for containers whose root filesystem becomes read-only: an emptyDir mounted
//! at each path the program writes to, and, where the image ships files there, an init container
//! running the same image that copies them into the emptyDir first.

use serde_json::{Value, json};

use super::{Mutation, Scope};
use crate::policy::WritablePath;
use crate::workload::ContainerAt;

/// Prefix of the init containers restrictor adds; they are compliant as created and must not get
/// writable mounts themselves (a mount at the seeded path would hide the very files they copy).
pub(crate) const SEED_CONTAINER_PREFIX: &str = "restrictor-seed-";

/// Where a seed container mounts the emptyDir it fills.
const SEED_MOUNT: &str = "/restrictor-seed";

/// Kubernetes names (volumes, containers) are DNS labels.
const MAX_NAME: usize = 63;

pub(super) fn apply(m: &mut Mutation<'_, '_>) {
    for (container, writable) in plan(m) {
        mount(m, container, writable);
    }
}

/// Which container gets a mount for which writable path, decided by reading the pod before any
/// mount is added: a pod that needs nothing costs no pointer, name or change line.
fn plan<'p>(m: &Mutation<'p, '_>) -> Vec<(ContainerAt, &'p WritablePath)> {
    let profile = m.profile;
    if profile.writable_paths.is_empty() {
        return Vec::new();
    }
    let spec = m.spec();
    // Each eligible container with its mount paths, including those planned so far: a mount
    // planned for a path makes the paths below it writable too.
    let mut containers: Vec<(ContainerAt, &Value, Vec<&str>)> = crate::workload::containers(spec)
        // Ephemeral containers cannot bring volumes (the pod's volumes are fixed by then).
        .filter(|c| c.list != "ephemeralContainers" && !c.name().starts_with(SEED_CONTAINER_PREFIX))
        .map(|c| (c.at(), c.container, mount_paths(c.container).collect()))
        .collect();
    let mut planned = Vec::new();
    for writable in &profile.writable_paths {
        let path = writable.path.as_str();
        // A workload that mounts something below the path manages that tree itself (Rancher main
        // mounts and seeds local-catalogs/v2): then the path is left alone in every container.
        if writable.skip_if_mounted_below
            && containers
                .iter()
                .any(|(_, _, mounts)| mounts.iter().any(|mount| is_at_or_below(mount, path)))
        {
            continue;
        }
        for (at, container, mounts) in &mut containers {
            if needs_mount(container, mounts, writable) {
                mounts.push(path);
                planned.push((*at, writable));
            }
        }
    }
    planned
}

fn needs_mount(container: &Value, mounts: &[&str], writable: &WritablePath) -> bool {
    let path = writable.path.as_str();
    // A mount at the path or above it already makes the path writable (or is the admin's choice).
    // Checked before the environment, which is longer to scan, as mutated pods have the mount.
    !mounts.iter().any(|mount| is_at_or_below(path, mount))
        && writable
            .when_env
            .as_ref()
            .is_none_or(|variable| env_is_set(container, variable))
}

/// The container's mount paths, without trailing slashes.
fn mount_paths(container: &Value) -> impl Iterator<Item = &str> {
    container
        .get("volumeMounts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|mount| mount.get("mountPath").and_then(Value::as_str))
        .map(|mount| mount.trim_end_matches('/'))
}

/// Whether `path` is `dir` or inside it, by whole path components (`/var/lib/rancher-data` is not
/// inside `/var/lib/rancher`).
fn is_at_or_below(path: &str, dir: &str) -> bool {
    let dir = if dir.is_empty() { "/" } else { dir };
    path == dir
        || dir == "/"
        || path
            .strip_prefix(dir)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// A variable counts as set when its value is non-empty or comes from elsewhere (`valueFrom`).
fn env_is_set(container: &Value, variable: &str) -> bool {
    container
        .get("env")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|env| env.get("name").and_then(Value::as_str) == Some(variable))
        .any(|env| {
            env.get("value")
                .and_then(Value::as_str)
                .is_some_and(|v| !v.is_empty())
                || env.get("valueFrom").is_some()
        })
}

fn mount(m: &mut Mutation<'_, '_>, container: ContainerAt, writable: &WritablePath) {
    let path = writable.path.as_str();
    let (volume, created) = volume_for(m, path);
    m.editor.push(
        &format!("{}/volumeMounts", container.pointer()),
        json!({"name": volume, "mountPath": path}),
    );
    let scope = m.scope_of(container);
    m.change(scope, format!("writable emptyDir {volume:?} at {path}"));
    if created && writable.seed_from_image {
        seed(m, container, path, &volume);
    }
}

/// The emptyDir volume for `path`: the one restrictor made earlier in this pass, or a new one with a
/// name no other volume has. Returns the name and whether it was created now.
fn volume_for(m: &mut Mutation<'_, '_>, path: &str) -> (String, bool) {
    let base = dns_label(&format!("restrictor{}", path.replace('/', "-")));
    // Whether a volume of that name exists, and if so whether it is an emptyDir.
    let existing = |m: &Mutation<'_, '_>, name: &str| {
        m.spec()
            .get("volumes")
            .and_then(Value::as_array)?
            .iter()
            .find(|v| v.get("name").and_then(Value::as_str) == Some(name))
            .map(|v| v.get("emptyDir").is_some())
    };
    let mut candidate = base.clone();
    for n in 2.. {
        match existing(m, &candidate) {
            // Shared by every container that needs this path: restrictor named it after the path.
            Some(true) => return (candidate, false),
            Some(false) => {
                let suffix = format!("-{n}");
                candidate = format!("{}{suffix}", truncate(&base, MAX_NAME - suffix.len()));
            }
            None => break,
        }
    }
    // No change line of its own: the mount's line names the volume.
    m.editor
        .push("/spec/volumes", json!({"name": candidate, "emptyDir": {}}));
    (candidate, true)
}

/// Adds an init container that copies what the image has at `path` into the new emptyDir.
fn seed(m: &mut Mutation<'_, '_>, container: ContainerAt, path: &str, volume: &str) {
    let Some(spec) = m.container(container) else {
        return;
    };
    let image = spec
        .get("image")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if image.is_empty() {
        let scope = m.scope_of(container);
        m.change(
            scope,
            format!("{path} not seeded: the container names no image"),
        );
        return;
    }
    let leaf = path.rsplit('/').next().unwrap_or_default();
    let name = dns_label(&format!("{SEED_CONTAINER_PREFIX}{leaf}"));
    let mut seed = json!({
        "name": name,
        "image": image,
        // Same binary the workload runs, so no other image has to be trusted or pulled.
        "command": ["cp", "-R", format!("{path}/."), SEED_MOUNT],
        "volumeMounts": [{"name": volume, "mountPath": SEED_MOUNT}],
        "securityContext": {
            "allowPrivilegeEscalation": false,
            "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": true,
            "runAsNonRoot": true,
        },
    });
    if let (Some(policy), Some(object)) = (spec.get("imagePullPolicy"), seed.as_object_mut()) {
        object.insert("imagePullPolicy".to_owned(), policy.clone());
    }
    // Copy as the user the workload runs as, so it owns what it finds there.
    for id in ["runAsUser", "runAsGroup"] {
        let own = spec
            .get("securityContext")
            .and_then(|sc| sc.get(id))
            .filter(|v| v.as_i64().is_some_and(|id| id > 0));
        if let (Some(own), Some(sc)) = (
            own,
            seed.get_mut("securityContext")
                .and_then(Value::as_object_mut),
        ) {
            sc.insert(id.to_owned(), own.clone());
        }
    }
    m.editor.push("/spec/initContainers", seed);
    m.change(
        Scope::Pod,
        format!("added init container {name:?} copying {path} from the image"),
    );
}

/// A DNS label: lowercase alphanumerics and '-', at most 63 characters, alphanumeric at both ends.
fn dns_label(raw: &str) -> String {
    let mut label = String::with_capacity(raw.len().min(MAX_NAME));
    for c in raw.chars() {
        let c = match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9') => c,
            _ => '-',
        };
        // Runs of separators collapse to one dash; none at the start.
        if c == '-' && (label.is_empty() || label.ends_with('-')) {
            continue;
        }
        label.push(c);
    }
    truncate(&label, MAX_NAME).trim_end_matches('-').to_owned()
}

fn truncate(text: &str, max: usize) -> &str {
    &text[..text.len().min(max)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_nest_by_whole_components() {
        assert!(is_at_or_below("/var/lib/rancher", "/var/lib/rancher"));
        assert!(is_at_or_below("/var/lib/rancher/x", "/var/lib/rancher"));
        assert!(is_at_or_below("/tmp", "/"));
        assert!(!is_at_or_below("/var/lib/rancher-data", "/var/lib/rancher"));
        assert!(!is_at_or_below("/var/lib", "/var/lib/rancher"));
    }

    #[test]
    fn names_are_dns_labels() {
        assert_eq!(
            dns_label("restrictor-var-lib-rancher"),
            "restrictor-var-lib-rancher"
        );
        assert_eq!(dns_label("restrictor-Var_lib..x"), "restrictor-var-lib-x");
        let long = dns_label(&format!("restrictor-{}", "a/".repeat(60)));
        assert!(long.len() <= 63 && !long.ends_with('-'), "{long}");
    }
}
