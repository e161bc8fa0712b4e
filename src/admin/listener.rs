//! The admin listener's accept loop: HTTP/1 on hyper, with a header-read timeout and a bound
//! on open connections (`slots`), so slow or greedy clients cannot starve the probes.
//!
//! The header-read timeout also runs while a kept-alive connection waits for its next
//! request, so an idle connection holds its slot for at most that long. A connection with no
//! slot is closed at once rather than left in the kernel's backlog, where a probe would queue
//! behind every connection a greedy client has opened.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

use super::slots::{Limits, Slot, Slots};
use super::{AdminSettings, Error};
use crate::telemetry::ErrorChain;

/// After an accept error other than a client's own (out of file descriptors, say): the error
/// would come back at once.
const ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

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
            if let Some(slot) = slots.admit() {
                tokio::spawn(connection(stream, app.clone(), slot, shutdown.clone()));
            }
        }
        drop(listener);
        slots.drained().await;
        Ok(())
    }
}

async fn connection(stream: TcpStream, app: Router, slot: Slot, shutdown: CancellationToken) {
    let slot = Arc::new(slot);
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(slot.header_read_timeout)
        .keep_alive(slot.keep_alive);
    let service = hyper::service::service_fn({
        let slot = slot.clone();
        move |request: hyper::Request<Incoming>| {
            slot.in_request();
            app.clone().oneshot(request)
        }
    });
    let conn = http.serve_connection(TokioIo::new(stream), service);
    let mut conn = std::pin::pin!(conn);
    let ended = tokio::select! {
        ended = conn.as_mut() => ended,
        // No request has come: dropping the connection loses no answer.
        () = slot.given_up() => return,
        () = shutdown.cancelled() => {
            // Closes an idle connection now, a busy one after its response.
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    // The client's doing (a header timeout, a reset, a malformed request): not ours to warn of.
    if let Err(e) = ended {
        tracing::debug!(error = %ErrorChain(&e), "admin connection ended");
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
    tracing::warn!(error = %ErrorChain(&e), "the admin listener cannot accept connections; retrying");
    tokio::select! {
        () = shutdown.cancelled() => {}
        () = tokio::time::sleep(ACCEPT_BACKOFF) => {}
    }
}
