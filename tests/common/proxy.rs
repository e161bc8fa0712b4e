//! A TCP proxy the test can cut, to take PostgreSQL or RabbitMQ away from the worker for real
//! (connections die, new ones are refused) without stopping the shared server.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub struct Proxy {
    pub addr: SocketAddr,
    /// Cancelled while the link is cut; replaced by a fresh token when it is restored.
    link: Arc<Mutex<Option<CancellationToken>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let link = Arc::new(Mutex::new(Some(CancellationToken::new())));
        let state = link.clone();
        let accept = tokio::spawn(async move {
            let mut pipes = JoinSet::new();
            loop {
                let Ok((inbound, _)) = listener.accept().await else {
                    return;
                };
                let Some(token) = state.lock().unwrap().clone() else {
                    drop(inbound);
                    continue;
                };
                pipes.spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    let mut inbound = inbound;
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        () = token.cancelled() => {}
                    }
                });
                while pipes.try_join_next().is_some() {}
            }
        });
        Self { addr, link, accept }
    }

    /// Drops every open connection and refuses new ones.
    pub fn cut(&self) {
        if let Some(token) = self.link.lock().unwrap().take() {
            token.cancel();
        }
    }

    pub fn restore(&self) {
        self.link
            .lock()
            .unwrap()
            .get_or_insert_with(CancellationToken::new);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}
