//! The worker's log events as a stream, so a test can wait for "consumer cancelled" or
//! "reconnecting" instead of sleeping and hoping.

use std::fmt::Write as _;
use std::sync::OnceLock;

use tokio::sync::broadcast;
use tracing::field::{Field, Visit};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::{Context, SubscriberExt};

static SENDER: OnceLock<broadcast::Sender<String>> = OnceLock::new();

struct Forward(broadcast::Sender<String>);

struct Line(String);

impl Visit for Line {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let _ = write!(self.0, " {}={:?}", field.name(), value);
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        let _ = write!(self.0, " {}={}", field.name(), value);
    }
}

impl<S: tracing::Subscriber> Layer<S> for Forward {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        let mut line = Line(String::new());
        event.record(&mut line);
        let _ = self.0.send(line.0);
    }
}

/// Subscribes to every log event of this test process (all tests share it).
pub fn subscribe() -> broadcast::Receiver<String> {
    SENDER
        .get_or_init(|| {
            let (tx, _) = broadcast::channel(500_000);
            let subscriber = tracing_subscriber::registry()
                .with(Forward(tx.clone()))
                .with(tracing_subscriber::EnvFilter::new("debug"));
            tracing::subscriber::set_global_default(subscriber).expect("one global subscriber");
            tx
        })
        .subscribe()
}

/// Waits for a log line containing every one of `needles`.
pub async fn wait_for(rx: &mut broadcast::Receiver<String>, needles: &[&str]) -> String {
    let deadline = tokio::time::Instant::now() + super::WAIT;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Ok(line)) if needles.iter().all(|n| line.contains(n)) => return line,
            Ok(Ok(_)) | Ok(Err(broadcast::error::RecvError::Lagged(_))) => {}
            Ok(Err(e)) => panic!("log stream closed: {e}"),
            Err(_) => panic!("timed out waiting for a log line with {needles:?}"),
        }
    }
}
