//! Command-line flags of `restrictor serve`, for `main.rs` to `#[command(flatten)]`.

use std::net::SocketAddr;
use std::path::PathBuf;

use super::{GoDuration, LogFormat, ServeConfig, TlsSource, defaults};

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            _ => Err(format!("unknown log format {s:?}: use text or json")),
        }
    }
}

/// Flags of `restrictor serve`; each is also an environment variable.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// HTTPS listen address for admission reviews.
    #[arg(long, env = "RESTRICTOR_LISTEN", default_value_t = defaults::LISTEN)]
    pub listen: SocketAddr,
    /// Plain-HTTP listen address for /livez, /readyz and /metrics.
    #[arg(long, env = "RESTRICTOR_ADMIN_LISTEN", default_value_t = defaults::ADMIN_LISTEN)]
    pub admin_listen: SocketAddr,
    /// Serving certificate chain (PEM); reloaded when it changes.
    #[arg(long, env = "RESTRICTOR_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Serving private key (PEM); reloaded when it changes.
    #[arg(long, env = "RESTRICTOR_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Policy file; reloaded when it changes. Without it the built-in policy applies.
    #[arg(long, env = "RESTRICTOR_POLICY")]
    pub policy: Option<PathBuf>,
    /// Largest request body accepted (bytes); larger gets 413.
    #[arg(long, env = "RESTRICTOR_MAX_BODY_BYTES", default_value_t = defaults::MAX_BODY_BYTES)]
    pub max_body_bytes: usize,
    /// Keep-alive connections idle this long are closed (keep above the API server's 90s).
    #[arg(long, env = "RESTRICTOR_IDLE_TIMEOUT", default_value_t = GoDuration(defaults::IDLE_TIMEOUT))]
    pub idle_timeout: GoDuration,
    /// Time a client has to send a request head (slow clients are disconnected).
    #[arg(long, env = "RESTRICTOR_HEADER_READ_TIMEOUT", default_value_t = GoDuration(defaults::HEADER_READ_TIMEOUT))]
    pub header_read_timeout: GoDuration,
    /// On SIGTERM, keep serving while unready for this long before closing the listener.
    #[arg(long, env = "RESTRICTOR_SHUTDOWN_DELAY", default_value_t = GoDuration(defaults::SHUTDOWN_DELAY))]
    pub shutdown_delay: GoDuration,
    /// Longest wait for in-flight requests after SIGTERM.
    #[arg(long, env = "RESTRICTOR_SHUTDOWN_GRACE", default_value_t = GoDuration(defaults::SHUTDOWN_GRACE))]
    pub shutdown_grace: GoDuration,
    /// Log format: text or json.
    #[arg(long, env = "RESTRICTOR_LOG_FORMAT", default_value = "text")]
    pub log_format: LogFormat,
}

impl ServeArgs {
    /// The TLS source named by `--tls-cert`/`--tls-key`, if both are given.
    pub fn tls_files(&self) -> Option<TlsSource> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(TlsSource::Files {
                cert: cert.clone(),
                key: key.clone(),
            }),
            _ => None,
        }
    }

    /// The server configuration these flags describe, with the given TLS source.
    pub fn config(&self, tls: TlsSource) -> ServeConfig {
        let mut c = ServeConfig::new(tls);
        c.listen = self.listen;
        c.admin_listen = self.admin_listen;
        c.policy_path = self.policy.clone();
        c.max_body_bytes = self.max_body_bytes;
        c.idle_timeout = self.idle_timeout.0;
        c.header_read_timeout = self.header_read_timeout.0;
        c.shutdown_delay = self.shutdown_delay.0;
        c.shutdown_grace = self.shutdown_grace.0;
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use std::time::Duration;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    #[test]
    fn flags_parse_into_a_config() {
        let cli = Cli::try_parse_from([
            "serve",
            "--tls-cert",
            "/tls/tls.crt",
            "--tls-key",
            "/tls/tls.key",
            "--shutdown-grace",
            "1m30s",
            "--log-format",
            "json",
        ])
        .unwrap();
        assert_eq!(cli.serve.log_format, LogFormat::Json);
        let tls = cli.serve.tls_files().unwrap();
        let c = cli.serve.config(tls);
        assert_eq!(c.shutdown_grace, Duration::from_secs(90));
        assert_eq!(c.listen.port(), 8443);
        assert_eq!(c.max_body_bytes, 7 * 1024 * 1024);
        assert!(Cli::try_parse_from(["serve", "--tls-cert", "/x"]).is_err());
        assert!(Cli::try_parse_from(["serve", "--idle-timeout", "soon"]).is_err());
    }
}
