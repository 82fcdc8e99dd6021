//! Durations as Kubernetes writes them: Go's `time.Duration` syntax (`10s`, `1m30s`, `500ms`), for
//! the API server's `?timeout=` and for the command-line flags.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// A duration flag value: parsed from, and printed (for `--help` defaults) in, Go syntax.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GoDuration(pub Duration);

impl FromStr for GoDuration {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        parse_go_duration(s)
            .map(Self)
            .ok_or_else(|| format!("invalid duration {s:?}: use e.g. 10s, 1m30s, 500ms"))
    }
}

impl fmt::Display for GoDuration {
    /// The shortest exact form among whole seconds, milliseconds and nanoseconds.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        if d.subsec_nanos() == 0 {
            write!(f, "{}s", d.as_secs())
        } else if d.subsec_nanos().is_multiple_of(1_000_000) {
            write!(f, "{}ms", d.as_millis())
        } else {
            write!(f, "{}ns", d.as_nanos())
        }
    }
}

/// Parses a Go `time.Duration` string (`300ms`, `1.5h`, `2h45m`, `10s`); negative durations and
/// anything else are `None`.
pub(crate) fn parse_go_duration(s: &str) -> Option<Duration> {
    let s = s.strip_prefix('+').unwrap_or(s);
    if s == "0" {
        return Some(Duration::ZERO);
    }
    if s.is_empty() {
        return None;
    }
    let mut rest = s;
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let num = &rest[..num_len];
        if num.is_empty() || num == "." || num.matches('.').count() > 1 {
            return None;
        }
        let value: f64 = num.parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let nanos_per = match &rest[..unit_len] {
            "ns" => 1e0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += value * nanos_per;
    }
    // Go's limit: about 290 years.
    if !total.is_finite() || total > i64::MAX as f64 {
        return None;
    }
    Some(Duration::from_nanos(total as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        let ms = |n| Some(Duration::from_millis(n));
        assert_eq!(parse_go_duration("10s"), ms(10_000));
        assert_eq!(parse_go_duration("1m30s"), ms(90_000));
        assert_eq!(parse_go_duration("500ms"), ms(500));
        assert_eq!(parse_go_duration("1.5s"), ms(1_500));
        assert_eq!(parse_go_duration("2h45m"), ms((2 * 3600 + 45 * 60) * 1000));
        assert_eq!(parse_go_duration("100us"), Some(Duration::from_micros(100)));
        assert_eq!(parse_go_duration("100µs"), Some(Duration::from_micros(100)));
        assert_eq!(parse_go_duration("0"), Some(Duration::ZERO));
        for bad in [
            "", "10", "s", "-1s", "10x", "1..5s", ".s", "abc", "10s5", "1e3s", " 10s",
        ] {
            assert_eq!(parse_go_duration(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn flag_values_print_as_they_parse() {
        for d in [
            Duration::ZERO,
            Duration::from_secs(120),
            Duration::from_millis(1_500),
            Duration::from_nanos(7),
        ] {
            assert_eq!(GoDuration(d).to_string().parse(), Ok(GoDuration(d)));
        }
        assert_eq!(GoDuration(Duration::from_secs(25)).to_string(), "25s");
        assert!("soon".parse::<GoDuration>().is_err());
    }
}
