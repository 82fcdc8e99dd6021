//! Shell-style globs for namespaces and images: `*` matches any run of characters (including `/`
//! and `:`, so `*/rancher-agent:*` matches `registry.example.com/rancher/rancher-agent:v2.14.4`),
//! `?` one character; nothing else is special.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(from = "String", into = "String")]
pub struct Glob(String);

impl Glob {
    pub fn new(pattern: impl Into<String>) -> Self {
        Self(pattern.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Iterative matching with single-star backtracking: linear in practice, no allocation,
    /// no exponential blow-up on patterns like `*a*a*a*b`.
    pub fn matches(&self, text: &str) -> bool {
        let pattern = self.0.as_bytes();
        let text = text.as_bytes();
        let (mut p, mut t) = (0, 0);
        let mut star: Option<(usize, usize)> = None;
        while t < text.len() {
            match pattern.get(p) {
                Some(b'*') => {
                    star = Some((p, t));
                    p += 1;
                }
                Some(&c) if c == b'?' || c == text[t] => {
                    p += 1;
                    t += 1;
                }
                _ => match star {
                    Some((star_p, star_t)) => {
                        p = star_p + 1;
                        t = star_t + 1;
                        star = Some((star_p, star_t + 1));
                    }
                    None => return false,
                },
            }
        }
        pattern[p..].iter().all(|&c| c == b'*')
    }
}

impl From<String> for Glob {
    fn from(pattern: String) -> Self {
        Self(pattern)
    }
}

impl From<Glob> for String {
    fn from(glob: Glob) -> Self {
        glob.0
    }
}

#[cfg(test)]
mod tests {
    use super::Glob;

    #[test]
    fn matches_like_a_shell_glob() {
        let cases = [
            ("cattle-system", "cattle-system", true),
            ("cattle-*", "cattle-fleet-system", true),
            ("cattle-*", "cattle-", true),
            ("cattle-*", "kube-system", false),
            ("*/rancher-agent:*", "rancher/rancher-agent:v2.14.4", true),
            (
                "*/rancher-agent:*",
                "registry.local:5000/rancher/rancher-agent:v2.9",
                true,
            ),
            ("*/rancher-agent:*", "rancher/rancher-agent", false),
            ("*/rancher-agent:*", "rancher-agent:v2", false),
            ("*/rancher-agent:*", "rancher/rancher-agent-x:v2", false),
            ("team-?", "team-a", true),
            ("team-?", "team-ab", false),
            ("*", "", true),
            ("", "", true),
            ("", "x", false),
            ("*a*a*a*b", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", false),
        ];
        for (pattern, text, expected) in cases {
            assert_eq!(
                Glob::new(pattern).matches(text),
                expected,
                "{pattern} vs {text}"
            );
        }
    }
}
