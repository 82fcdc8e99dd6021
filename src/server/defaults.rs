//! The server's defaults, written once: [`super::ServeConfig::new`] and the `serve` flags
//! (`--help` shows them) both take them from here.

use std::net::SocketAddr;
use std::time::Duration;

/// HTTPS listener for admission reviews.
pub const LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 8443);
/// Plain-HTTP admin listener for probes and metrics.
pub const ADMIN_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 8080);
/// An UPDATE carries two objects of up to 3 MiB each plus the envelope.
pub const MAX_BODY_BYTES: usize = 7 * 1024 * 1024;
/// Deadline of a review whose request has no `?timeout=`.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Longer than the API server's own 90 s, so that it is the client that closes.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(120);
pub const SHUTDOWN_DELAY: Duration = Duration::ZERO;
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(25);
/// How often watched files (TLS material, the policy) are checked for changes.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(1);
pub const MAX_CONNECTIONS: usize = 4096;
