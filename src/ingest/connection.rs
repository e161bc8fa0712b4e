//! The reconnect loop: one connection, both consumers, and a fresh start on any broker failure.

use std::sync::atomic::Ordering;

use lapin::{Connection, ConnectionProperties};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::consumer::QueueWorker;
use super::dead_letter::DeadLetterPublisher;
use super::{Error, IngestSettings, Metrics, Stream, Topology};
use crate::retry::{Retryable, Waits};
use crate::telemetry::ErrorChain;

/// Consumes both queues until `shutdown`, reconnecting with backoff whenever RabbitMQ fails.
///
/// # Errors
/// Only what reconnecting cannot fix: a topology that conflicts with the broker's, or a fatal
/// database error.
pub async fn run(
    amqp_url: &str,
    settings: &IngestSettings,
    pool: PgPool,
    metrics: &Metrics,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let topology = settings.topology();
    let mut waits = settings.retry_policy().waits();
    'reconnect: loop {
        if shutdown.is_cancelled() {
            return Ok(());
        }
        let result = connect_and_consume(
            amqp_url, settings, &topology, &pool, metrics, &shutdown, &mut waits,
        )
        .await;
        match result {
            Ok(()) => return Ok(()),
            Err(e) if e.is_retryable() => {
                let wait = waits.next_wait();
                tracing::warn!(
                    error = %ErrorChain(&e),
                    retry_in = ?wait, "RabbitMQ connection lost; reconnecting"
                );
                tokio::select! {
                    () = shutdown.cancelled() => return Ok(()),
                    () = tokio::time::sleep(wait) => continue 'reconnect,
                }
            }
            Err(e) => return Err(e),
        }
    }
}

async fn connect_and_consume(
    amqp_url: &str,
    settings: &IngestSettings,
    topology: &Topology,
    pool: &PgPool,
    metrics: &Metrics,
    shutdown: &CancellationToken,
    waits: &mut Waits,
) -> Result<(), Error> {
    // Connecting can hang on a half-open socket, so shutdown may interrupt it. Once consuming,
    // the queue loops watch the token themselves and finish the batch in hand.
    let conn = tokio::select! {
        conn = connect(amqp_url) => conn?,
        () = shutdown.cancelled() => return Ok(()),
    };
    let declare = conn.create_channel().await?;
    topology
        .declare(&declare)
        .await
        .map_err(|e| match e.kind() {
            lapin::ErrorKind::ProtocolError(amqp) if amqp.get_id() == 406 => {
                Error::TopologyMismatch(e)
            }
            _ => Error::Broker(e),
        })?;
    let _ = declare.close(200, "declared".into()).await;
    tracing::info!(
        events_queue = %topology.events_queue, commands_queue = %topology.commands_queue,
        "connected to RabbitMQ; topology declared"
    );
    waits.reset();

    let conn_ref = &conn;
    let worker = |stream, queue: String| async move {
        Ok::<_, Error>(QueueWorker {
            stream,
            channel: conn_ref.create_channel().await?,
            dead_letters: DeadLetterPublisher::open(
                conn_ref,
                &topology.dead_letter_exchange,
                &queue,
            )
            .await?,
            queue,
            pool: pool.clone(),
            settings,
            metrics,
        })
    };
    let events = worker(Stream::Events, topology.events_queue.clone()).await?;
    let commands = worker(Stream::Commands, topology.commands_queue.clone()).await?;
    // If one loop fails, the other is dropped; closing the connection then requeues whatever
    // either had in hand. Transactions in flight roll back when dropped.
    metrics.consumers_attached.store(true, Ordering::SeqCst);
    let result = tokio::try_join!(events.run(shutdown.clone()), commands.run(shutdown.clone()));
    metrics.consumers_attached.store(false, Ordering::SeqCst);
    let _ = conn.close(200, "worker stopping".into()).await;
    result.map(|_| ())
}

/// Opens a connection on lapin's default runtime, tokio.
///
/// lapin 4 can recover connections and channels itself; that stays off and the loop in [`run`]
/// reconnects instead. A delivery tag is only valid on the channel that delivered it: after a
/// recovery the batch in hand would ack (`multiple`) tags of the new channel, acknowledging
/// messages whose effect was never committed. Starting over on a fresh connection, with the
/// broker requeuing everything unacked, cannot do that.
pub async fn connect(amqp_url: &str) -> Result<Connection, lapin::Error> {
    let props = ConnectionProperties::default().with_connection_name("altinn-sync".into());
    Connection::connect(amqp_url, props).await
}
