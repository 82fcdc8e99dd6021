//! One accepted TCP connection: TLS handshake under a deadline, then HTTP/1.1 or HTTP/2 by ALPN,
//! with a per-connection watchdog for idle keep-alive, slow request heads and draining.
//!
//! hyper's own `header_read_timeout` also runs while an HTTP/1.1 connection waits idle for its
//! next request, so it would double as a short keep-alive timeout and close connections the API
//! server still considers reusable. The watchdog keeps the two apart: the head deadline starts at
//! the first byte of a request, the idle deadline when the previous answer was handed over.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed};
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64};
use std::sync::{Mutex, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

use super::http::{Shared, handle};

/// How long a connection told to close may take to finish its last requests (the longest
/// `?timeout=` honoured) before it is dropped.
const MAX_CLOSE: Duration = Duration::from_secs(60);

/// Time limits applied to each connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub handshake: Duration,
    pub header_read: Duration,
    pub idle: Duration,
    /// While draining, an HTTP/1.1 connection quiet for this long is closed.
    pub drain_quiet: Duration,
}

impl Limits {
    fn tick(&self) -> Duration {
        (self.header_read.min(self.idle) / 4)
            .clamp(Duration::from_millis(20), Duration::from_secs(1))
    }
}

/// Shutdown signals shared by every connection.
#[derive(Clone)]
pub(crate) struct Signals {
    /// Stop taking new work: close idle connections, answer with `Connection: close`, send GOAWAY.
    pub drain: CancellationToken,
    /// The grace period is over: drop whatever is left.
    pub force: CancellationToken,
}

/// The two protocol builders, chosen per connection by ALPN.
pub(crate) struct Builders {
    pub h1: auto::Builder<TokioExecutor>,
    pub h2: auto::Builder<TokioExecutor>,
}

impl Builders {
    pub fn new(max_h2_streams: u32) -> Self {
        let mut h1 = auto::Builder::new(TokioExecutor::new()).http1_only();
        h1.http1()
            .keep_alive(true)
            .half_close(false)
            .header_read_timeout(None)
            .max_headers(100);
        let mut h2 = auto::Builder::new(TokioExecutor::new()).http2_only();
        h2.http2()
            .timer(hyper_util::rt::TokioTimer::new())
            .max_concurrent_streams(max_h2_streams)
            .max_header_list_size(64 * 1024)
            .keep_alive_interval(None);
        Self { h1, h2 }
    }
}

fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX) + 1
}

/// What the watchdog knows about a connection (milliseconds from [`now_ms`]; 0 = never).
struct ConnState {
    inflight: AtomicU32,
    /// Requests begun on this connection so far.
    requests: AtomicU32,
    /// When the connection last became idle (accepted, or an answer handed over).
    idle_since: AtomicU64,
    /// First byte of a request head received while idle, 0 if none.
    head_start: AtomicU64,
}

impl ConnState {
    fn begin(self: &Arc<Self>) -> InflightGuard {
        self.inflight.fetch_add(1, Relaxed);
        self.requests.fetch_add(1, Relaxed);
        self.head_start.store(0, Relaxed);
        InflightGuard(self.clone())
    }
}

struct InflightGuard(Arc<ConnState>);

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.idle_since.store(now_ms(), Relaxed);
        self.0.inflight.fetch_sub(1, Relaxed);
    }
}

/// The TLS stream, noting when bytes of a new request start to arrive.
struct Tracked {
    inner: TlsStream<TcpStream>,
    state: Arc<ConnState>,
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = res
            && buf.filled().len() > before
            && self.state.inflight.load(Relaxed) == 0
            && self.state.head_start.load(Relaxed) == 0
        {
            self.state.head_start.store(now_ms(), Relaxed);
        }
        res
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

enum Verdict {
    Keep,
    /// Graceful close: finish what is in flight, then close (GOAWAY for HTTP/2).
    Close(&'static str),
    /// Drop the connection now.
    Kill(&'static str),
}

fn judge(state: &ConnState, h2: bool, draining: bool, limits: &Limits) -> Verdict {
    if state.inflight.load(Relaxed) > 0 {
        return Verdict::Keep;
    }
    let now = now_ms();
    let head_start = state.head_start.load(Relaxed);
    let idle_for = Duration::from_millis(now.saturating_sub(state.idle_since.load(Relaxed)));
    if !h2 && head_start != 0 {
        return if Duration::from_millis(now.saturating_sub(head_start)) > limits.header_read {
            Verdict::Kill("request head not received in time")
        } else {
            Verdict::Keep
        };
    }
    if idle_for > limits.idle {
        return Verdict::Close("idle");
    }
    // A client opens a connection to send a request: one that sends none within the head
    // deadline only holds resources.
    if state.requests.load(Relaxed) == 0 && idle_for > limits.header_read {
        return Verdict::Close("no request after the handshake");
    }
    if draining && !h2 && idle_for >= limits.drain_quiet {
        return Verdict::Close("draining");
    }
    Verdict::Keep
}

/// Serves one accepted connection to the end.
pub(crate) async fn serve_connection(
    shared: Arc<Shared>,
    builders: Arc<Builders>,
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    limits: Limits,
    signals: Signals,
) {
    let _ = tcp.set_nodelay(true);
    let metrics = shared.metrics.clone();
    let tls = tokio::select! {
        r = tokio::time::timeout(limits.handshake, acceptor.accept(tcp)) => r,
        _ = signals.drain.cancelled() => return,
    };
    let tls = match tls {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            metrics.tls_handshake_errors.inc();
            tracing::debug!(error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            metrics.tls_handshake_errors.inc();
            tracing::debug!("TLS handshake timed out");
            return;
        }
    };
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    let state = Arc::new(ConnState {
        inflight: AtomicU32::new(0),
        requests: AtomicU32::new(0),
        idle_since: AtomicU64::new(now_ms()),
        head_start: AtomicU64::new(0),
    });
    let io = TokioIo::new(Tracked {
        inner: tls,
        state: state.clone(),
    });
    let svc_state = state.clone();
    let svc_shared = shared.clone();
    let svc = service_fn(move |req| {
        let guard = svc_state.begin();
        let shared = svc_shared.clone();
        async move {
            let resp = handle(&shared, req).await;
            drop(guard);
            Ok::<_, std::convert::Infallible>(resp)
        }
    });
    let builder = if h2 { &builders.h2 } else { &builders.h1 };
    let conn = builder.serve_connection(io, svc);
    tokio::pin!(conn);

    // The watchdog runs beside the connection so that the request path never polls the shared
    // shutdown tokens (each poll of those takes a process-wide lock); it talks to the connection
    // through `Control`, which costs one uncontended per-connection lock per wakeup.
    let control = Arc::new(Control::default());
    let _watchdog = AbortOnDrop(tokio::spawn(watchdog(
        control.clone(),
        state,
        h2,
        limits,
        signals,
    )));
    let mut close_sent = false;
    let res = std::future::poll_fn(|cx| {
        control.register(cx.waker());
        match control.cmd.load(Acquire) {
            CMD_DROP => return Poll::Ready(None),
            CMD_CLOSE if !close_sent => {
                conn.as_mut().graceful_shutdown();
                close_sent = true;
            }
            _ => {}
        }
        conn.as_mut().poll(cx).map(Some)
    })
    .await;
    match res {
        Some(Err(e)) => tracing::debug!(error = %e, "connection ended with an error"),
        None => tracing::debug!("connection dropped"),
        Some(Ok(())) => {}
    }
}

const CMD_RUN: u8 = 0;
const CMD_CLOSE: u8 = 1;
const CMD_DROP: u8 = 2;

/// Commands from the watchdog to its connection.
#[derive(Default)]
struct Control {
    cmd: AtomicU8,
    waker: Mutex<Option<Waker>>,
}

impl Control {
    fn register(&self, waker: &Waker) {
        let mut slot = self.waker.lock().unwrap_or_else(|p| p.into_inner());
        match &*slot {
            Some(w) if w.will_wake(waker) => {}
            _ => *slot = Some(waker.clone()),
        }
    }

    fn send(&self, cmd: u8) {
        self.cmd.fetch_max(cmd, AcqRel);
        let waker = self.waker.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(w) = waker {
            w.wake();
        }
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn watchdog(
    control: Arc<Control>,
    state: Arc<ConnState>,
    h2: bool,
    limits: Limits,
    signals: Signals,
) {
    debug_assert_eq!(control.cmd.load(Relaxed), CMD_RUN);
    let mut draining = false;
    let mut closing_since: Option<Instant> = None;
    let mut tick = tokio::time::interval(limits.tick());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let close = |why: &'static str, closing_since: &mut Option<Instant>| {
        if closing_since.is_none() {
            tracing::debug!(why, "closing connection");
            control.send(CMD_CLOSE);
            *closing_since = Some(Instant::now());
        }
    };
    loop {
        tokio::select! {
            _ = signals.force.cancelled() => {
                tracing::debug!("grace period over; dropping connection");
                control.send(CMD_DROP);
                return;
            }
            _ = signals.drain.cancelled(), if !draining => {
                draining = true;
                if h2 {
                    close("draining", &mut closing_since);
                }
                let fast = Duration::from_millis(20).min(limits.drain_quiet.max(Duration::from_millis(1)));
                tick = tokio::time::interval(fast);
            }
            _ = tick.tick() => {
                if closing_since.is_some_and(|t| t.elapsed() > limits.header_read + MAX_CLOSE) {
                    tracing::debug!("connection did not close in time; dropping it");
                    control.send(CMD_DROP);
                    return;
                }
                match judge(&state, h2, draining, &limits) {
                    Verdict::Keep => {}
                    Verdict::Close(why) => close(why, &mut closing_since),
                    Verdict::Kill(why) => {
                        tracing::debug!(why, "dropping connection");
                        control.send(CMD_DROP);
                        return;
                    }
                }
            }
        }
    }
}
