//! The admin listener's accept loop: HTTP/1 on hyper, with a header-read timeout and a bound
//! on open connections, so slow or greedy clients cannot starve the probes.
//!
//! Up to `ADMIN_MAX_CONNECTIONS` connections are served as usual, with keep-alive. The
//! header-read timeout also runs while a kept-alive connection waits for its next request,
//! so an idle connection holds its slot for at most that long. Beyond the cap, a few more
//! ([`OVERFLOW`]) are served one request each, without keep-alive and with a short header
//! timeout: a probe still gets its answer while idle connections hold the cap, and a client
//! that only holds connections open gets nothing out of them for long. Beyond those, a new
//! connection is closed at once rather than left in the kernel's backlog, where a probe would
//! queue behind every connection the greedy client has opened.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

use super::{AdminSettings, DEFAULT_HEADER_READ_TIMEOUT_SECS, DEFAULT_MAX_CONNECTIONS, Error};

/// Connections served beyond the cap, one request each.
pub const OVERFLOW: u32 = 16;
/// The header timeout of an overflow connection: a probe sends its request at once.
const OVERFLOW_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(2);
/// After an accept error other than a client's own (out of file descriptors, say): the error
/// would come back at once.
const ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy)]
struct Limits {
    header_read_timeout: Duration,
    max_connections: u32,
}

impl From<&AdminSettings> for Limits {
    fn from(settings: &AdminSettings) -> Self {
        Self {
            header_read_timeout: Duration::from_secs(settings.admin_header_read_timeout_secs),
            max_connections: settings.admin_max_connections,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(DEFAULT_HEADER_READ_TIMEOUT_SECS),
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// A bound admin listener, not yet serving.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    addr: SocketAddr,
    limits: Limits,
}

impl Server {
    /// Binds `addr` with the default limits; failing here ends the process with a non-zero
    /// status.
    pub async fn bind(addr: SocketAddr) -> Result<Self, Error> {
        Self::bind_limited(addr, Limits::default()).await
    }

    /// Binds `ADMIN_LISTEN` with the header-read timeout and connection cap of `settings`.
    pub async fn bind_with(settings: &AdminSettings) -> Result<Self, Error> {
        Self::bind_limited(settings.admin_listen, settings.into()).await
    }

    async fn bind_limited(addr: SocketAddr, limits: Limits) -> Result<Self, Error> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| Error::Bind { addr, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| Error::Bind { addr, source })?;
        tracing::info!(
            admin_listen = %addr,
            header_read_timeout_secs = limits.header_read_timeout.as_secs(),
            max_connections = limits.max_connections,
            "admin listener bound: /healthz /readyz /metrics /v1"
        );
        Ok(Self {
            listener,
            addr,
            limits,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves `app` until `shutdown`, then lets the connections finish the request in hand.
    pub async fn serve(self, app: Router, shutdown: CancellationToken) -> Result<(), Error> {
        let Self {
            listener, limits, ..
        } = self;
        let slots = Slots::new(limits);
        loop {
            let stream = tokio::select! {
                () = shutdown.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        accept_failed(&e, &shutdown).await;
                        continue;
                    }
                },
            };
            // Without a slot the stream is dropped here: closed at once.
            if let Some((permit, http)) = slots.admit() {
                tokio::spawn(connection(
                    stream,
                    app.clone(),
                    http,
                    shutdown.clone(),
                    permit,
                ));
            }
        }
        drop(listener);
        slots.drained().await;
        Ok(())
    }
}

/// The connection slots: the cap, then the overflow.
struct Slots {
    limits: Limits,
    regular: Arc<Semaphore>,
    overflow: Arc<Semaphore>,
    /// Whether the cap was full at the last accept, so it is logged once per episode.
    full: std::sync::atomic::AtomicBool,
}

impl Slots {
    fn new(limits: Limits) -> Self {
        Self {
            limits,
            regular: Arc::new(Semaphore::new(limits.max_connections as usize)),
            overflow: Arc::new(Semaphore::new(OVERFLOW as usize)),
            full: false.into(),
        }
    }

    /// A slot for a new connection and how to serve it; `None` when every slot is taken.
    fn admit(&self) -> Option<(OwnedSemaphorePermit, http1::Builder)> {
        use std::sync::atomic::Ordering::Relaxed;
        if let Ok(permit) = self.regular.clone().try_acquire_owned() {
            self.full.store(false, Relaxed);
            return Some((permit, http(self.limits.header_read_timeout, true)));
        }
        if !self.full.swap(true, Relaxed) {
            tracing::warn!(
                max_connections = self.limits.max_connections,
                overflow = OVERFLOW,
                "the admin listener is at its connection cap (ADMIN_MAX_CONNECTIONS); \
                 serving new connections one request each, closing those beyond the overflow"
            );
        }
        let permit = self.overflow.clone().try_acquire_owned().ok()?;
        let timeout = self
            .limits
            .header_read_timeout
            .min(OVERFLOW_HEADER_READ_TIMEOUT);
        Some((permit, http(timeout, false)))
    }

    /// Waits until every connection has ended: each holds a permit until then.
    async fn drained(&self) {
        let _ = self.regular.acquire_many(self.limits.max_connections).await;
        let _ = self.overflow.acquire_many(OVERFLOW).await;
    }
}

fn http(header_read_timeout: Duration, keep_alive: bool) -> http1::Builder {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .keep_alive(keep_alive);
    builder
}

async fn connection(
    stream: TcpStream,
    app: Router,
    http: http1::Builder,
    shutdown: CancellationToken,
    _slot: OwnedSemaphorePermit,
) {
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        app.clone().oneshot(request)
    });
    let conn = http.serve_connection(TokioIo::new(stream), service);
    let mut conn = std::pin::pin!(conn);
    let ended = tokio::select! {
        ended = conn.as_mut() => ended,
        () = shutdown.cancelled() => {
            // Closes an idle connection now, a busy one after its response.
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    // The client's doing (a header timeout, a reset, a malformed request): not ours to warn of.
    if let Err(e) = ended {
        tracing::debug!(error = %e, "admin connection ended");
    }
}

async fn accept_failed(e: &std::io::Error, shutdown: &CancellationToken) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::warn!(error = %e, "the admin listener cannot accept connections; retrying");
    tokio::select! {
        () = shutdown.cancelled() => {}
        () = tokio::time::sleep(ACCEPT_BACKOFF) => {}
    }
}
