//! `restrictor serve`: the HTTPS admission webhook server.
//!
//! ```no_run
//! # async fn run() -> Result<(), restrictor::server::ServeError> {
//! use restrictor::server::{ServeConfig, Server, TlsSource, shutdown_signal};
//! let config = ServeConfig::new(TlsSource::Files {
//!     cert: "/tls/tls.crt".into(),
//!     key: "/tls/tls.key".into(),
//! });
//! let server = Server::bind(config).await?;
//! let policy = server.policy(); // what the reconciler follows
//! server.run(shutdown_signal()).await
//! # }
//! ```
//!
//! * HTTPS listener (`listen`): `POST /mutate?timeout=10s` with an AdmissionReview; TLS 1.2/1.3,
//!   ALPN `h2` and `http/1.1`, HTTP/1.1 keep-alive. The certificate comes from files (polled for
//!   changes, kubelet `..data` symlink swaps included) or from a `watch` channel.
//! * Admin listener (`admin_listen`, plain HTTP): `/livez`, `/readyz`, `/metrics`.
//! * Shutdown: when the `shutdown` future completes the server reports unready, stops accepting,
//!   lets in-flight requests finish (HTTP/1.1 answers carry `Connection: close`, HTTP/2 gets
//!   GOAWAY), closes idle keep-alive connections, and returns after at most `shutdown_grace`.

mod admin;
mod args;
mod conn;
mod defaults;
mod duration;
mod http;
mod metrics;
mod policy_source;
mod reload;
mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use admin::{Condition, Readiness};
pub use args::ServeArgs;
pub use duration::GoDuration;
pub use metrics::Metrics;
pub use tls::TlsError;

use crate::admission::{AdmissionError, Answer, DeniedPod, Summary};
use crate::certs::ServingPem;
use crate::policy::{Policy, PolicyError};
use policy_source::PolicySource;

/// The function that answers one review: `crate::admission::review` in production; benchmarks
/// plug in a handler that only echoes `allowed` to measure the ceiling of the same stack.
pub type ReviewFn = fn(&[u8], &Policy) -> Result<Answer, AdmissionError>;

/// Where the serving certificate comes from.
pub enum TlsSource {
    /// PEM files, re-read when their contents change (checked every `reload_interval`).
    Files { cert: PathBuf, key: PathBuf },
    /// Published by another component (the self-managed certificate authority). `None` means
    /// "not yet": the server is unready until the first certificate arrives.
    Channel(watch::Receiver<Option<ServingPem>>),
}

impl std::fmt::Debug for TlsSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Files { cert, key } => f
                .debug_struct("Files")
                .field("cert", cert)
                .field("key", key)
                .finish(),
            Self::Channel(_) => f.write_str("Channel"),
        }
    }
}

/// Everything `serve` needs. Build with [`ServeConfig::new`] and adjust fields.
#[derive(Debug)]
pub struct ServeConfig {
    /// HTTPS listener (default `0.0.0.0:8443`; port 0 picks a free port).
    pub listen: SocketAddr,
    /// Plain-HTTP admin listener for probes and metrics (default `0.0.0.0:8080`).
    pub admin_listen: SocketAddr,
    pub tls: TlsSource,
    /// Policy file, reloaded on change; `None` uses `Policy::builtin()`.
    pub policy_path: Option<PathBuf>,
    /// Answers reviews (default `crate::admission::review`).
    pub handler: ReviewFn,
    /// Largest request body accepted; larger gets 413. Default 7 MiB: an UPDATE carries two
    /// objects of up to 3 MiB each plus the envelope.
    pub max_body_bytes: usize,
    /// Deadline when the request has no `?timeout=` (default 10 s).
    pub default_timeout: Duration,
    /// Time allowed for the TLS handshake (default 10 s).
    pub handshake_timeout: Duration,
    /// Time allowed from the first byte of an HTTP/1.1 request head to its end (default 10 s);
    /// slower clients are disconnected.
    pub header_read_timeout: Duration,
    /// A keep-alive connection with no request for this long is closed (default 120 s, longer
    /// than the API server's own 90 s so that it is the client that closes).
    pub idle_timeout: Duration,
    /// After the shutdown signal, keep serving (while reporting unready) for this long so that
    /// endpoints stop routing here before the listener closes (default 0).
    pub shutdown_delay: Duration,
    /// Longest wait for in-flight requests once draining (default 25 s).
    pub shutdown_grace: Duration,
    /// How often watched files are checked for changes (default 1 s).
    pub reload_interval: Duration,
    /// Most TLS connections open at once; further connections wait in the backlog (default 4096).
    pub max_connections: usize,
    /// Told of every denied pod CREATE (not dry run) made by a controller, on the request path:
    /// it must not block (the Event writer queues with `try_send`). Default none.
    pub on_denied_pod: Option<DeniedPodHook>,
}

/// What [`DeniedPodHook`] calls: the review's summary and the denied pod's controller.
pub type DeniedPodFn = dyn Fn(&Summary, &DeniedPod) + Send + Sync;

/// See [`ServeConfig::on_denied_pod`].
#[derive(Clone)]
pub struct DeniedPodHook(pub Arc<DeniedPodFn>);

impl std::fmt::Debug for DeniedPodHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DeniedPodHook")
    }
}

impl ServeConfig {
    /// The defaults described on each field (`server/defaults.rs`), with the given TLS source.
    pub fn new(tls: TlsSource) -> Self {
        Self {
            listen: defaults::LISTEN,
            admin_listen: defaults::ADMIN_LISTEN,
            tls,
            policy_path: None,
            handler: crate::admission::review,
            max_body_bytes: defaults::MAX_BODY_BYTES,
            default_timeout: defaults::REQUEST_TIMEOUT,
            handshake_timeout: defaults::HANDSHAKE_TIMEOUT,
            header_read_timeout: defaults::HEADER_READ_TIMEOUT,
            idle_timeout: defaults::IDLE_TIMEOUT,
            shutdown_delay: defaults::SHUTDOWN_DELAY,
            shutdown_grace: defaults::SHUTDOWN_GRACE,
            reload_interval: defaults::RELOAD_INTERVAL,
            max_connections: defaults::MAX_CONNECTIONS,
            on_denied_pod: None,
        }
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot read TLS file {path}: {source}")]
    TlsFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid serving certificate: {0}")]
    Tls(#[from] TlsError),
    #[error("cannot build the TLS configuration: {0}")]
    TlsConfig(#[from] rustls::Error),
    #[error(transparent)]
    Policy(#[from] PolicyError),
}

/// Installs rustls' `ring` crypto provider as the process default (for other rustls users such
/// as the Kubernetes client; the server itself names its provider explicitly). Idempotent.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Completes on SIGTERM or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM received; shutting down"),
                    _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received; shutting down"),
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the server");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Log output format for [`init_logging`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Installs a `tracing` subscriber writing to stderr, filtered by `RUST_LOG` (default `info`).
/// Does nothing if a subscriber is already installed.
pub fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colour only for a person at a terminal; log collectors get plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// A bound, loaded server that has not started serving yet: lets callers (tests, benchmarks)
/// learn the addresses and readiness before [`Server::run`].
pub struct Server {
    config: ServeConfig,
    https: TcpListener,
    admin: TcpListener,
    shared: Arc<http::Shared>,
    acceptor: TlsAcceptor,
    tls_applier: tls::TlsApplier,
    tls_feed: TlsFeed,
    policy: PolicySource,
}

/// Where the server takes TLS material from once it runs.
enum TlsFeed {
    /// Poll these files, starting from the contents already applied.
    Files {
        paths: Vec<PathBuf>,
        applied: Vec<Vec<u8>>,
    },
    Channel(watch::Receiver<Option<ServingPem>>),
}

impl Server {
    /// Binds both listeners and loads the TLS material (from files: must succeed; from a channel:
    /// whatever is there now) and the policy (must be valid).
    pub async fn bind(config: ServeConfig) -> Result<Server, ServeError> {
        let metrics = Arc::new(Metrics::new());
        let readiness = Readiness::new();
        let tls_ready = readiness.condition("tls");
        let policy_ready = readiness.condition("policy");

        let resolver = Arc::new(tls::CertResolver::default());
        let tls_applier = tls::TlsApplier {
            resolver: resolver.clone(),
            metrics: metrics.clone(),
            ready: tls_ready,
        };
        let tls_feed = match &config.tls {
            TlsSource::Files { cert, key } => {
                let read = |path: &PathBuf| {
                    std::fs::read(path).map_err(|source| ServeError::TlsFile {
                        path: path.clone(),
                        source,
                    })
                };
                let contents = vec![read(cert)?, read(key)?];
                tls_applier.apply(&pem_of(&contents))?;
                TlsFeed::Files {
                    paths: vec![cert.clone(), key.clone()],
                    applied: contents,
                }
            }
            TlsSource::Channel(rx) => {
                let mut rx = rx.clone();
                let current = rx.borrow_and_update().clone();
                if let Some(pem) = current {
                    // An invalid first certificate is counted and logged; the next one may do.
                    let _ = tls_applier.apply(&pem);
                }
                TlsFeed::Channel(rx)
            }
        };
        let acceptor = TlsAcceptor::from(Arc::new(tls::server_config(resolver)?));

        let policy = PolicySource::open(config.policy_path.clone())?;
        metrics.policy_reloads.inc();
        policy_ready.set(true);

        let https = listen(config.listen).await?;
        let admin = listen(config.admin_listen).await?;

        let shared = Arc::new(http::Shared {
            handler: config.handler,
            policy: ArcSwap::new(policy.subscribe().borrow().clone()),
            metrics,
            readiness,
            max_body_bytes: config.max_body_bytes,
            default_timeout: config.default_timeout,
            on_denied_pod: config.on_denied_pod.clone(),
        });
        Ok(Server {
            config,
            https,
            admin,
            shared,
            acceptor,
            tls_applier,
            tls_feed,
            policy,
        })
    }

    /// The bound HTTPS address.
    pub fn https_addr(&self) -> SocketAddr {
        self.https.local_addr().unwrap_or(self.config.listen)
    }

    /// The bound admin address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin.local_addr().unwrap_or(self.config.admin_listen)
    }

    /// The server's readiness; other components may add conditions with
    /// [`Readiness::condition`] (e.g. `"ca-bundle-injected"`).
    pub fn readiness(&self) -> Readiness {
        self.shared.readiness.clone()
    }

    /// The server's metrics.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.shared.metrics.clone()
    }

    /// The policy in force, and every policy put in force after it while the server runs: the
    /// very values the request path answers with (one parse per change).
    pub fn policy(&self) -> watch::Receiver<Arc<Policy>> {
        self.policy.subscribe()
    }

    /// Serves until `shutdown` completes, then drains (see the module docs) and returns.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), ServeError> {
        let config = &self.config;
        let shared = self.shared;
        let mut background: Vec<JoinHandle<()>> = Vec::new();

        // TLS material: files are polled and published into a channel like any other source.
        let tls_rx = match self.tls_feed {
            TlsFeed::Channel(rx) => rx,
            TlsFeed::Files { paths, applied } => {
                let (tx, rx) = watch::channel(None);
                background.push(tokio::spawn(reload::poll_files(
                    paths,
                    config.reload_interval,
                    Some(applied),
                    move |contents| {
                        tracing::info!("TLS files changed; reloading");
                        tx.send_replace(Some(pem_of(contents)));
                    },
                )));
                rx
            }
        };
        background.push(tokio::spawn(self.tls_applier.follow(tls_rx)));

        background.push(tokio::spawn(feed_request_path(
            self.policy.subscribe(),
            shared.clone(),
        )));
        background.push(tokio::spawn(
            self.policy
                .follow(config.reload_interval, shared.metrics.clone()),
        ));

        // Admin listener: runs until the HTTPS side has drained.
        let admin_stop = CancellationToken::new();
        let admin_task = {
            let router = admin::router(shared.readiness.clone(), shared.metrics.clone());
            let stop = admin_stop.clone();
            tokio::spawn(async move {
                if let Err(e) = axum::serve(self.admin, router)
                    .with_graceful_shutdown(stop.cancelled_owned())
                    .await
                {
                    tracing::error!(error = %e, "admin listener failed");
                }
            })
        };

        let signals = conn::Signals {
            drain: CancellationToken::new(),
            force: CancellationToken::new(),
        };
        let limits = conn::Limits {
            handshake: config.handshake_timeout,
            header_read: config.header_read_timeout,
            idle: config.idle_timeout,
            drain_quiet: Duration::from_millis(250),
        };
        let tracker = TaskTracker::new();
        let builders = Arc::new(conn::Builders::new(256));
        let stop_accepting = CancellationToken::new();
        let accept_task = tokio::spawn(accept_loop(
            self.https,
            self.acceptor,
            shared.clone(),
            builders,
            limits,
            signals.clone(),
            stop_accepting.clone(),
            tracker.clone(),
            config.max_connections.max(1),
        ));
        tracing::info!(
            listen = %config.listen,
            admin_listen = %config.admin_listen,
            "serving admission reviews"
        );

        shutdown.await;
        shared.readiness.set_draining();
        tracing::info!(
            delay_ms = config.shutdown_delay.as_millis() as u64,
            "shutting down: unready"
        );
        if !config.shutdown_delay.is_zero() {
            tokio::time::sleep(config.shutdown_delay).await;
        }
        stop_accepting.cancel();
        let _ = accept_task.await;
        signals.drain.cancel();
        tracker.close();
        let open = tracker.len();
        tracing::info!(
            connections = open,
            grace_ms = config.shutdown_grace.as_millis() as u64,
            "stopped accepting; draining connections"
        );
        if tokio::time::timeout(config.shutdown_grace, tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                connections = tracker.len(),
                "grace period over; dropping the remaining connections"
            );
            signals.force.cancel();
            tracker.wait().await;
        }
        admin_stop.cancel();
        let _ = admin_task.await;
        for task in background {
            task.abort();
        }
        tracing::info!("shut down");
        Ok(())
    }
}

async fn listen(addr: SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })
}

#[allow(clippy::too_many_arguments)]
async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    shared: Arc<http::Shared>,
    builders: Arc<conn::Builders>,
    limits: conn::Limits,
    signals: conn::Signals,
    stop: CancellationToken,
    tracker: TaskTracker,
    max_connections: usize,
) {
    let permits = Arc::new(Semaphore::new(max_connections));
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = stop.cancelled() => break,
        };
        let (tcp, _peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.cancelled() => break,
        };
        let metrics = shared.metrics.clone();
        metrics.open_connections.inc();
        let fut = conn::serve_connection(
            shared.clone(),
            builders.clone(),
            acceptor.clone(),
            tcp,
            limits,
            signals.clone(),
        );
        tracker.spawn(async move {
            fut.await;
            metrics.open_connections.dec();
            drop(permit);
        });
    }
}

fn pem_of(contents: &[Vec<u8>]) -> ServingPem {
    let text = |i: usize| {
        contents
            .get(i)
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default()
    };
    ServingPem {
        cert: text(0),
        key: text(1),
    }
}

/// Keeps the request path's lock-free copy of the policy equal to what `policy` publishes.
async fn feed_request_path(mut policy: watch::Receiver<Arc<Policy>>, shared: Arc<http::Shared>) {
    while policy.changed().await.is_ok() {
        let current = policy.borrow_and_update().clone();
        shared.policy.store(current);
    }
}

#[cfg(test)]
mod tests;
