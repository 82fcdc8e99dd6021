//! The policy file: profiles (what to change in a pod) and ordered rules (which pods get which profile).
//!
//! Parsing is strict: an unknown field, a wrong type or a bad value fails with the field's path and the
//! line it is on, so a typo never silently weakens what restrictor enforces.

mod glob;

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

pub use glob::Glob;

/// The built-in policy, as `restrictor policy` prints it.
pub const BUILTIN_YAML: &str = include_str!("default.yaml");

/// The profile name that leaves matched pods alone.
const NO_PROFILE: &str = "none";

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read policy file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    /// The message carries the field path and, where known, the line.
    #[error("invalid policy: {0}")]
    Invalid(String),
}

/// A loaded and validated policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    profiles: BTreeMap<String, Profile>,
    rules: Vec<Rule>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PolicyFile {
    #[serde(default)]
    profiles: BTreeMap<String, Profile>,
    rules: Vec<Rule>,
}

/// What to change in a pod. Omitted fields take the `restricted` defaults.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Profile {
    pub run_as_user: NonRootId,
    pub run_as_group: NonRootId,
    pub fs_group: NonRootId,
    pub read_only_root_filesystem: bool,
    pub writable_paths: Vec<WritablePath>,
    pub strip_node_affinity: bool,
    /// Toleration keys removed from the pod (the control-plane taints that come with node affinity).
    pub strip_tolerations: Vec<String>,
    /// Pod sysctls ensured (only safe ones: the restricted level allows no others).
    pub sysctls: Vec<Sysctl>,
    pub unfixable: Unfixable,
}

impl Default for Profile {
    fn default() -> Self {
        Self {
            run_as_user: NonRootId::DEFAULT,
            run_as_group: NonRootId::DEFAULT,
            fs_group: NonRootId::DEFAULT,
            read_only_root_filesystem: false,
            writable_paths: Vec::new(),
            strip_node_affinity: false,
            strip_tolerations: Vec::new(),
            sysctls: Vec::new(),
            unfixable: Unfixable::default(),
        }
    }
}

/// A uid or gid that is not root. Zero fails at parse time, naming the field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "i64", into = "i64")]
pub struct NonRootId(u32);

impl NonRootId {
    pub const DEFAULT: Self = Self(1000);

    pub fn get(self) -> i64 {
        i64::from(self.0)
    }
}

impl TryFrom<i64> for NonRootId {
    type Error = String;

    fn try_from(value: i64) -> Result<Self, String> {
        match u32::try_from(value) {
            Ok(0) => Err("must not be 0 (root)".to_owned()),
            // Kubernetes limits ids to int32.
            Ok(id) if id <= i32::MAX as u32 => Ok(Self(id)),
            _ => Err(format!("{value} is not a valid id (1 to 2147483647)")),
        }
    }
}

impl From<NonRootId> for i64 {
    fn from(id: NonRootId) -> Self {
        id.get()
    }
}

/// A directory the program writes to, backed by an emptyDir when the root filesystem is read-only.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WritablePath {
    pub path: AbsolutePath,
    /// Only for containers whose environment sets this variable to a non-empty value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when_env: Option<String>,
    /// Skip when a mount exists anywhere below the path (the workload manages that tree itself).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub skip_if_mounted_below: bool,
    /// Fill the new emptyDir with what the container's image has at the path, by an init container
    /// running the same image, so the mount does not hide files the image ships.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub seed_from_image: bool,
}

/// A string newtype that can hold only what `$check` accepted, because deserialising goes through the
/// check; serialised as the inner string.
macro_rules! checked_string {
    ($(#[$doc:meta])* $name:ident, $check:path) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
        #[serde(try_from = "String")]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = String;

            fn try_from(value: String) -> Result<Self, String> {
                $check(value).map(Self)
            }
        }
    };
}

checked_string!(
    /// An absolute, normalised directory path (no trailing slash, no `.` or `..` parts).
    AbsolutePath,
    absolute_path
);

fn absolute_path(path: String) -> Result<String, String> {
    let trimmed = path.trim_end_matches('/');
    if !path.starts_with('/') || trimmed.is_empty() {
        return Err(format!("{path:?} must be an absolute path other than /"));
    }
    if trimmed
        .split('/')
        .skip(1)
        .any(|part| part.is_empty() || part == "." || part == "..")
    {
        return Err(format!("{path:?} must not contain empty, . or .. parts"));
    }
    Ok(trimmed.to_owned())
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Sysctl {
    pub name: SafeSysctl,
    pub value: String,
}

checked_string!(
    /// A sysctl name from the Pod Security Standards' safe set: anything else would make the pod fail
    /// the very level restrictor enforces.
    SafeSysctl,
    safe_sysctl
);

fn safe_sysctl(name: String) -> Result<String, String> {
    if crate::pss::SAFE_SYSCTLS.contains(&name.as_str()) {
        Ok(name)
    } else {
        Err(format!(
            "{name:?} is not a safe sysctl; allowed: {}",
            crate::pss::SAFE_SYSCTLS.join(", ")
        ))
    }
}

/// What to do with each category of violation that cannot be fixed without changing the workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Unfixable {
    pub host_namespaces: Action,
    pub host_path_volumes: Action,
    pub volume_types: Action,
    pub privileged: Action,
    pub host_ports: Action,
    pub sysctls: Action,
    pub se_linux: Action,
    pub proc_mount: Action,
    pub host_process: Action,
    pub app_armor: Action,
    pub capabilities: Action,
}

impl Default for Unfixable {
    fn default() -> Self {
        Self {
            host_namespaces: Action::Deny,
            host_path_volumes: Action::Deny,
            volume_types: Action::Deny,
            privileged: Action::Deny,
            host_ports: Action::Deny,
            sysctls: Action::Deny,
            se_linux: Action::Deny,
            proc_mount: Action::Deny,
            host_process: Action::Deny,
            app_armor: Action::Deny,
            capabilities: Action::Remove,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Action {
    /// Reject the object, naming the field.
    Deny,
    /// Remove the offending field and warn.
    Remove,
}

/// One ordered rule: pods that `match` get `profile`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rule {
    pub name: String,
    #[serde(default, rename = "match")]
    pub matcher: Match,
    /// A profile name, or `none` to leave matched pods alone.
    pub profile: String,
}

/// Conditions that must all hold; an omitted condition holds for every pod.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Match {
    /// Namespace globs (`*` and `?`); any may match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<Glob>,
    /// Pod labels that must all be present with these values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Object kinds (`Deployment`, `Pod`, ...); any may match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kinds: Vec<String>,
    /// Image globs; matches when any container's image matches any glob.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<Glob>,
}

/// What a rule is matched against: facts about one object and its pod template.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    pub namespace: &'a str,
    pub kind: &'a str,
    pub labels: Option<&'a serde_json::Map<String, serde_json::Value>>,
    /// Images of every container of the pod.
    pub images: &'a [&'a str],
}

/// The profile a rule chose for a subject.
#[derive(Debug, Clone, Copy)]
pub struct Selection<'p> {
    pub rule: &'p str,
    pub profile_name: &'p str,
    pub profile: &'p Profile,
}

impl Match {
    fn matches(&self, subject: &Subject<'_>) -> bool {
        (self.namespaces.is_empty() || self.namespaces.iter().any(|g| g.matches(subject.namespace)))
            && (self.kinds.is_empty() || self.kinds.iter().any(|k| k == subject.kind))
            && self.labels.iter().all(|(key, want)| {
                subject
                    .labels
                    .and_then(|labels| labels.get(key))
                    .and_then(serde_json::Value::as_str)
                    == Some(want.as_str())
            })
            && (self.images.is_empty()
                || subject
                    .images
                    .iter()
                    .any(|image| self.images.iter().any(|g| g.matches(image))))
    }
}

impl Policy {
    /// The built-in policy. It is part of the binary and covered by tests, so it always parses.
    pub fn builtin() -> Self {
        match Self::from_yaml(BUILTIN_YAML) {
            Ok(policy) => policy,
            // Unreachable by construction (`builtin_policy_parses` tests it); failing loudly beats
            // running with a policy nobody wrote.
            Err(error) => panic!("the built-in policy is invalid: {error}"),
        }
    }

    /// Parses and validates a policy; errors name the field and line.
    pub fn from_yaml(text: &str) -> Result<Self, PolicyError> {
        let file: PolicyFile = serde_path_to_error::deserialize(
            serde_yaml_ng::Deserializer::from_str(text),
        )
        .map_err(|error| {
            let path = error.path().to_string();
            let inner = error.into_inner();
            // serde_yaml_ng prefixes its message with the part of the path it tracked itself.
            let message = inner.to_string();
            let message = message
                .strip_prefix(&format!("{path}: "))
                .map_or(message.clone(), str::to_owned);
            PolicyError::Invalid(if path == "." {
                message
            } else {
                format!("{path}: {message}")
            })
        })?;
        Self::validate(file, text)
    }

    /// Reads and parses a policy file (the offline commands; the server parses the bytes its
    /// file watcher settled on with [`Policy::from_bytes`]).
    pub fn load(path: &Path) -> Result<Self, PolicyError> {
        let bytes = std::fs::read(path).map_err(|source| PolicyError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_bytes(&path.display().to_string(), &bytes)
    }

    /// Parses and validates a policy read from `source` (a file name, for the messages); errors
    /// name the source, the field and the line.
    pub fn from_bytes(source: &str, bytes: &[u8]) -> Result<Self, PolicyError> {
        let text = std::str::from_utf8(bytes)
            .map_err(|error| PolicyError::Invalid(format!("{source}: not UTF-8 text ({error})")))?;
        Self::from_yaml(text).map_err(|error| match error {
            PolicyError::Invalid(message) => PolicyError::Invalid(format!("{source}: {message}")),
            other => other,
        })
    }

    fn validate(file: PolicyFile, text: &str) -> Result<Self, PolicyError> {
        let invalid_at = |field: String, line: Option<usize>, message: String| {
            let line = line.map_or(String::new(), |l| format!(" at line {l}"));
            PolicyError::Invalid(format!("{field}{line}: {message}"))
        };
        let invalid = |field: String, needle: &str, message: String| {
            invalid_at(field, line_of(text, needle), message)
        };
        let listed_twice = |field: String, value: &str| {
            invalid_at(
                field,
                line_of_nth(text, value, 1),
                format!("{value:?} is listed twice"),
            )
        };
        if file.profiles.contains_key(NO_PROFILE) {
            return Err(invalid(
                format!("profiles.{NO_PROFILE}"),
                &format!("{NO_PROFILE}:"),
                format!("the name {NO_PROFILE:?} is reserved for rules that leave pods alone"),
            ));
        }
        for (name, profile) in &file.profiles {
            let mut seen = Vec::new();
            for (index, writable) in profile.writable_paths.iter().enumerate() {
                let path = writable.path.as_str();
                if seen.contains(&path) {
                    return Err(listed_twice(
                        format!("profiles.{name}.writablePaths[{index}].path"),
                        path,
                    ));
                }
                seen.push(path);
                if writable.when_env.as_deref() == Some("") {
                    return Err(invalid(
                        format!("profiles.{name}.writablePaths[{index}].whenEnv"),
                        "whenEnv",
                        "must name an environment variable".to_owned(),
                    ));
                }
            }
            // Two values for one sysctl would leave the pod with whichever came last.
            for (index, sysctl) in profile.sysctls.iter().enumerate() {
                let sysctl = sysctl.name.as_str();
                if profile.sysctls[..index]
                    .iter()
                    .any(|earlier| earlier.name.as_str() == sysctl)
                {
                    return Err(listed_twice(
                        format!("profiles.{name}.sysctls[{index}].name"),
                        sysctl,
                    ));
                }
            }
        }
        let mut names = Vec::new();
        for (index, rule) in file.rules.iter().enumerate() {
            if rule.name.is_empty() || names.contains(&rule.name.as_str()) {
                return Err(invalid(
                    format!("rules[{index}].name"),
                    &format!("name: {}", rule.name),
                    format!("rule names must be present and unique ({:?})", rule.name),
                ));
            }
            names.push(&rule.name);
            if rule.profile != NO_PROFILE && !file.profiles.contains_key(&rule.profile) {
                let known: Vec<&str> = file.profiles.keys().map(String::as_str).collect();
                return Err(invalid(
                    format!("rules[{index}].profile"),
                    &format!("profile: {}", rule.profile),
                    format!(
                        "unknown profile {:?}; defined: {}, or {NO_PROFILE:?} to leave pods alone",
                        rule.profile,
                        known.join(", ")
                    ),
                ));
            }
        }
        Ok(Self {
            profiles: file.profiles,
            rules: file.rules,
        })
    }

    /// The first rule matching `subject`, with its profile; `None` when no rule matches or the rule
    /// says `profile: none`.
    pub fn select(&self, subject: &Subject<'_>) -> Option<Selection<'_>> {
        let rule = self.matching_rule(subject)?;
        let (profile_name, profile) = self.profiles.get_key_value(&rule.profile)?;
        Some(Selection {
            rule: &rule.name,
            profile_name,
            profile,
        })
    }

    /// The first rule matching `subject`, whatever its profile (`none` included): the rule that
    /// decides, for reports that name it.
    pub fn matching_rule(&self, subject: &Subject<'_>) -> Option<&Rule> {
        self.rules.iter().find(|rule| rule.matcher.matches(subject))
    }

    /// Namespaces the rules that apply a profile name without wildcards: where workloads created
    /// before restrictor are worth reconciling (`cattle-system` in the built-in policy).
    pub fn literal_namespaces(&self) -> Vec<String> {
        let mut namespaces: Vec<String> = self
            .rules
            .iter()
            .filter(|rule| rule.profile != NO_PROFILE)
            .flat_map(|rule| &rule.matcher.namespaces)
            .map(Glob::as_str)
            .filter(|ns| !ns.contains(['*', '?']))
            .map(str::to_owned)
            .collect();
        namespaces.sort();
        namespaces.dedup();
        namespaces
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    pub fn profile(&self, name: &str) -> Option<&Profile> {
        self.profiles.get(name)
    }
}

/// 1-based line of the first line containing `needle`, to point at semantic errors serde cannot place.
fn line_of(text: &str, needle: &str) -> Option<usize> {
    line_of_nth(text, needle, 0)
}

/// The line of the `n`th (from 0) line containing `needle`: a value listed twice is reported where
/// it is listed the second time.
fn line_of_nth(text: &str, needle: &str, n: usize) -> Option<usize> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| line.contains(needle))
        .nth(n)
        .map(|(index, _)| index + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn subject<'a>(
        namespace: &'a str,
        kind: &'a str,
        labels: Option<&'a serde_json::Map<String, serde_json::Value>>,
        images: &'a [&'a str],
    ) -> Subject<'a> {
        Subject {
            namespace,
            kind,
            labels,
            images,
        }
    }

    /// The policy as YAML, every default spelled out.
    fn printed(policy: &Policy) -> String {
        let file = PolicyFile {
            profiles: policy.profiles.clone(),
            rules: policy.rules.clone(),
        };
        serde_yaml_ng::to_string(&file).expect("yaml")
    }

    /// Asserts that `yaml` is rejected with a message containing every one of `needles`.
    fn error_of(yaml: &str) -> String {
        match Policy::from_yaml(yaml) {
            Ok(policy) => panic!("expected an error, got {policy:?}"),
            Err(error) => error.to_string(),
        }
    }

    #[test]
    fn builtin_policy_parses_and_has_both_profiles() {
        let policy = Policy::from_yaml(BUILTIN_YAML).expect("built-in policy");
        let restricted = policy.profile("restricted").expect("restricted");
        assert_eq!(restricted, &Profile::default());
        let agent = policy.profile("rancher-agent").expect("rancher-agent");
        assert!(agent.read_only_root_filesystem && agent.strip_node_affinity);
        assert_eq!(agent.writable_paths.len(), 5);
        assert_eq!(agent.strip_tolerations.len(), 4);
        assert_eq!(agent.run_as_user.get(), 1000);
    }

    #[test]
    fn builtin_policy_round_trips_through_its_own_yaml() {
        let policy = Policy::builtin();
        let printed = printed(&policy);
        assert_eq!(Policy::from_yaml(&printed).expect("reparse"), policy);
    }

    #[test]
    fn rancher_agent_is_selected_by_namespace_and_label_or_by_image() {
        let policy = Policy::builtin();
        let agent_labels = json!({"app": "cattle-cluster-agent"});
        let agent_labels = agent_labels.as_object();
        let no_images: [&str; 0] = [];
        let agent_image = ["busybox:1", "rancher/rancher-agent:v2.14.4"];

        let by_label = policy.select(&subject(
            "cattle-system",
            "Deployment",
            agent_labels,
            &no_images,
        ));
        assert_eq!(by_label.map(|s| s.profile_name), Some("rancher-agent"));

        let by_image = policy.select(&subject("elsewhere", "Pod", None, &agent_image));
        assert_eq!(by_image.map(|s| s.rule), Some("rancher-agent-image"));

        let label_elsewhere = policy.select(&subject("default", "Pod", agent_labels, &no_images));
        assert_eq!(label_elsewhere.map(|s| s.profile_name), Some("restricted"));
    }

    #[test]
    fn literal_namespaces_are_those_rules_apply_profiles_in() {
        assert_eq!(Policy::builtin().literal_namespaces(), ["cattle-system"]);
        let policy = Policy::from_yaml(
            "profiles: {p: {}}\nrules:\n- {name: a, match: {namespaces: [skip]}, profile: none}\n- {name: b, match: {namespaces: ['team-*', apps, apps]}, profile: p}\n",
        )
        .expect("policy");
        assert_eq!(policy.literal_namespaces(), ["apps"]);
    }

    #[test]
    fn profile_none_and_no_matching_rule_leave_pods_alone() {
        let skip_team = "profiles: {restricted: {}}\nrules:\n- name: skip\n  match: {namespaces: ['team-*']}\n  profile: none\n- name: all\n  profile: restricted\n";
        let only_kinds = "profiles: {restricted: {}}\nrules:\n- name: only-kinds\n  match: {kinds: [Deployment]}\n  profile: restricted\n";
        for (yaml, namespace, kind, selected) in [
            (skip_team, "team-a", "Pod", false),
            (skip_team, "other", "Pod", true),
            (only_kinds, "a", "Pod", false),
            (only_kinds, "a", "Deployment", true),
        ] {
            let policy = Policy::from_yaml(yaml).expect("policy");
            let no_images: [&str; 0] = [];
            let selection = policy.select(&subject(namespace, kind, None, &no_images));
            assert_eq!(
                selection.is_some(),
                selected,
                "{kind} in {namespace}: {yaml}"
            );
        }
    }

    #[test]
    fn a_sysctl_listed_twice_is_rejected_naming_the_second() {
        let text = "profiles:\n  p:\n    sysctls:\n    - {name: net.ipv4.ping_group_range, value: '0 0'}\n    - {name: net.ipv4.ping_group_range, value: '1 1'}\nrules: []\n";
        let error = error_of(text);
        assert!(
            error.ends_with(
                "profiles.p.sysctls[1].name at line 5: \"net.ipv4.ping_group_range\" is listed twice"
            ),
            "{error}"
        );
    }

    #[test]
    fn invalid_policies_are_rejected_naming_what_is_wrong() {
        let cases: [(&str, &str, &[&str]); 9] = [
            (
                "unknown field, with its line",
                "profiles:\n  restricted:\n    runAsUsr: 5\nrules: []\n",
                &["runAsUsr", "line 3"],
            ),
            (
                "root uid",
                "profiles:\n  restricted:\n    runAsUser: 0\nrules: []\n",
                &["runAsUser", "must not be 0", "line 3"],
            ),
            (
                "wrong action",
                "profiles:\n  p:\n    unfixable: {privileged: allow}\nrules: []\n",
                &["privileged", "allow"],
            ),
            (
                "unsafe sysctl",
                "profiles:\n  p:\n    sysctls: [{name: kernel.msgmax, value: '1'}]\nrules: []\n",
                &["kernel.msgmax"],
            ),
            (
                "relative path",
                "profiles:\n  p:\n    writablePaths: [{path: tmp}]\nrules: []\n",
                &["absolute"],
            ),
            (
                "rule with an unknown profile: rule index and line",
                "profiles:\n  restricted: {}\nrules:\n- name: a\n  profile: restricted\n- name: b\n  profile: restircted\n",
                &["rules[1].profile", "line 7", "restircted"],
            ),
            (
                "duplicate rule names",
                "profiles: {p: {}}\nrules:\n- {name: a, profile: p}\n- {name: a, profile: p}\n",
                &["rules[1].name"],
            ),
            (
                "reserved profile name",
                "profiles: {none: {}}\nrules: []\n",
                &["profiles.none"],
            ),
            ("missing rules", "profiles: {p: {}}\n", &["rules"]),
        ];
        for (case, yaml, needles) in cases {
            let message = match Policy::from_yaml(yaml) {
                Ok(policy) => panic!("{case}: expected an error, got {policy:?}"),
                Err(error) => error.to_string(),
            };
            for needle in needles {
                assert!(
                    message.contains(needle),
                    "{case}: {needle:?} not in {message}"
                );
            }
        }
    }

    #[test]
    fn policy_bytes_that_are_not_text_are_rejected_naming_the_source() {
        let error = Policy::from_bytes("policy.yaml", &[0xff, 0xfe])
            .expect_err("not UTF-8")
            .to_string();
        assert!(error.contains("policy.yaml: not UTF-8"), "{error}");
        let error = Policy::from_bytes("policy.yaml", b"rules: 5\n")
            .expect_err("invalid")
            .to_string();
        assert!(
            error.starts_with("invalid policy: policy.yaml: rules"),
            "{error}"
        );
    }

    #[test]
    fn writable_paths_are_normalised() {
        let policy = Policy::from_yaml(
            "profiles:\n  p:\n    writablePaths: [{path: /var/cache/}]\nrules: [{name: a, profile: p}]\n",
        )
        .expect("policy");
        let profile = policy.profile("p").expect("p");
        assert_eq!(profile.writable_paths[0].path.as_str(), "/var/cache");
    }
}
