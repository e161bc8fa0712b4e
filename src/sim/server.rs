//! The accept loop. It drives hyper per connection itself (rather than `axum::serve`) so that an
//! injected fault can close a connection without answering, as a crashed Altinn node would.

use std::sync::Arc;

use axum::body::Body;
use axum::http::Request;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use super::faults::DropConnection;
use super::simulator::Simulator;

use crate::telemetry::ErrorChain;

/// Serves the simulator on `listener` until `shutdown` is cancelled; then open connections are
/// closed, since a simulator has nothing worth draining.
pub async fn serve(listener: TcpListener, sim: Simulator, shutdown: CancellationToken) {
    let router = sim.router();
    // Owns the connection tasks; dropping it at the end aborts the ones still open.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(serve_connection(stream, router.clone(), shutdown.clone()));
                }
                Err(err) => tracing::warn!(error = %ErrorChain(&err), "simulator failed to accept a connection"),
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    connections.shutdown().await;
}

async fn serve_connection(stream: TcpStream, router: axum::Router, shutdown: CancellationToken) {
    let kill = Arc::new(Notify::new());
    let handle = DropConnection(kill.clone());
    let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
        request.extensions_mut().insert(handle.clone());
        router.clone().oneshot(request.map(Body::new))
    });
    let connection =
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        result = connection => {
            if let Err(err) = result {
                tracing::debug!(error = %ErrorChain(&err), "simulator connection ended with an error");
            }
        }
        // Dropping the connection future closes the socket with the request unanswered.
        _ = kill.notified() => {}
        _ = shutdown.cancelled() => {}
    }
}
