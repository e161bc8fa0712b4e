//! The loop that drains one queue: batch, commit, dead-letter, ack.
//!
//! # Guarantees
//! - A delivery is acked (with `multiple`) only after the transaction holding its effect, or its
//!   dead-letter record, has committed, and after a poison message's copy is confirmed in the
//!   dead-letter queue.
//! - While PostgreSQL is down, the consumer is cancelled: the broker stops sending, and the
//!   deliveries in hand are neither acked nor requeued in a loop. If the outage outlasts
//!   `db_outage_hold`, they are requeued once (so the broker's ack timeout cannot close the
//!   channel), and consuming resumes when PostgreSQL answers again.
//! - When only part of a batch commits (one shard's transaction fails) and the rest is given
//!   back (outage past the hold time, shutdown, fatal error), the committed part is settled
//!   first: its dead letters published and confirmed, its deliveries acked. Only what did not
//!   commit is redelivered, so no dead letter is recorded twice.
//! - On shutdown, the batch in hand is finished; anything not acked is requeued by closing the
//!   channel.

use std::collections::VecDeque;
use std::ops::ControlFlow;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Consumer};
use sqlx::PgPool;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::batch::{self, Item, Status, Stream};
use super::dead_letter::DeadLetterPublisher;
use super::{Error, IngestSettings, Metrics};
use crate::retry::RetryPolicy;
use crate::state::{self, ApplyOptions};
use crate::telemetry;
use crate::telemetry::ErrorChain;

/// Waits between attempts at a batch whose transaction conflicted with another's.
const CONFLICT_RETRY: RetryPolicy =
    RetryPolicy::new(Duration::from_millis(10), Duration::from_secs(1));

pub struct QueueWorker<'a> {
    pub stream: Stream,
    pub queue: String,
    /// The consuming channel. Delivery tags belong to it: a reconnect makes a new worker.
    pub channel: Channel,
    pub dead_letters: DeadLetterPublisher,
    pub pool: PgPool,
    pub settings: &'a IngestSettings,
    pub metrics: &'a Metrics,
}

/// What became of a batch.
enum Handled {
    Acked,
    /// Handed back to the broker (requeued) during a long database outage.
    Requeued,
    /// Shutdown came while the database was down; closing the channel requeues the batch.
    Abandoned,
}

impl QueueWorker<'_> {
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), Error> {
        let result = self.consume_until(&shutdown).await;
        // Closing the channel requeues anything still unacked, at once rather than when the
        // connection goes.
        let _ = self.channel.close(200, "worker stopping".into()).await;
        self.dead_letters.close().await;
        result
    }

    async fn consume_until(&self, shutdown: &CancellationToken) -> Result<(), Error> {
        self.channel
            .basic_qos(self.settings.prefetch, BasicQosOptions::default())
            .await?;
        let mut consumer = Some(self.consume().await?);
        // Deliveries that arrived after the consumer was cancelled, waiting for their turn.
        let mut backlog: VecDeque<Delivery> = VecDeque::new();
        loop {
            let deliveries = tokio::select! {
                biased;
                () = shutdown.cancelled() => return Ok(()),
                batch = self.next_batch(consumer.as_mut(), &mut backlog) => batch?,
            };
            // A root span linked to each message's trace: a batch serves many traces.
            let span = tracing::info_span!(
                parent: None,
                "ingest.batch",
                otel.kind = "consumer",
                queue = %self.queue,
                batch.size = deliveries.len(),
                batch.applied = tracing::field::Empty,
                batch.dead_lettered = tracing::field::Empty,
                outcome = tracing::field::Empty,
            );
            for d in &deliveries {
                telemetry::link_traceparent(&span, d.properties.headers().as_ref());
            }
            let handled = self
                .handle_batch(deliveries, &mut consumer, &mut backlog, shutdown)
                .instrument(span)
                .await?;
            match handled {
                Handled::Abandoned => return Ok(()),
                Handled::Acked | Handled::Requeued if consumer.is_none() && backlog.is_empty() => {
                    tracing::info!(queue = %self.queue, "resuming consumption");
                    consumer = Some(self.consume().await?);
                }
                Handled::Acked | Handled::Requeued => {}
            }
        }
    }

    async fn consume(&self) -> Result<Consumer, Error> {
        Ok(self
            .channel
            .basic_consume(
                self.queue.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?)
    }

    /// Waits for one delivery, then gathers more until the batch is full or the linger time
    /// has passed. The backlog is served first.
    async fn next_batch(
        &self,
        consumer: Option<&mut Consumer>,
        backlog: &mut VecDeque<Delivery>,
    ) -> Result<Vec<Delivery>, Error> {
        let max = self.settings.batch_size;
        if !backlog.is_empty() {
            let n = backlog.len().min(max);
            return Ok(backlog.drain(..n).collect());
        }
        let Some(consumer) = consumer else {
            // Unreachable in practice: the loop re-consumes once the backlog is empty.
            return Ok(Vec::new());
        };
        let first = consumer.next().await.ok_or(Error::ConsumerEnded)??;
        let mut batch = Vec::with_capacity(max);
        batch.push(first);
        let deadline = Instant::now() + self.settings.batch_linger();
        while batch.len() < max {
            match tokio::time::timeout_at(deadline, consumer.next()).await {
                Ok(Some(d)) => batch.push(d?),
                Ok(None) => return Err(Error::ConsumerEnded),
                Err(_) => break,
            }
        }
        Ok(batch)
    }

    async fn handle_batch(
        &self,
        deliveries: Vec<Delivery>,
        consumer: &mut Option<Consumer>,
        backlog: &mut VecDeque<Delivery>,
        shutdown: &CancellationToken,
    ) -> Result<Handled, Error> {
        let Some(last_tag) = deliveries.last().map(|d| d.delivery_tag) else {
            return Ok(Handled::Acked);
        };
        let started = Instant::now();
        let rules = self.settings.rules();
        let mut items: Vec<Item> = deliveries
            .into_iter()
            .map(|d| Item::decode(self.stream, d, &rules))
            .collect();
        let tally = match self
            .commit_retrying(&mut items, consumer, backlog, shutdown)
            .await?
        {
            ControlFlow::Continue(tally) => tally,
            ControlFlow::Break(handled) => return Ok(handled),
        };
        self.acknowledge(&items, last_tag, tally, started).await?;
        Ok(Handled::Acked)
    }

    /// Commits the batch, retrying through conflicts and database outages; breaks with what
    /// became of the batch when shutdown comes first or an outage outlasts the hold time.
    async fn commit_retrying(
        &self,
        items: &mut Vec<Item>,
        consumer: &mut Option<Consumer>,
        backlog: &mut VecDeque<Delivery>,
        shutdown: &CancellationToken,
    ) -> Result<ControlFlow<Handled, batch::Tally>, Error> {
        let opts = ApplyOptions {
            regression_threshold: self.settings.sequence_regression_threshold,
        };
        let mut waits = self.settings.retry_policy().waits();
        // Conflicting transactions (another replica on the same firm) clear in milliseconds.
        let mut conflict_waits = CONFLICT_RETRY.waits();
        let mut outage_started: Option<Instant> = None;
        let tally = loop {
            let parallelism = self.settings.parallelism;
            let wait = match batch::commit(&self.pool, &self.queue, items, &opts, parallelism).await
            {
                Ok(tally) => break tally,
                Err(state::Error::Conflict(e)) => {
                    let wait = conflict_waits.next_wait();
                    tracing::debug!(error = %ErrorChain(&e), retry_in = ?wait,
                        "transaction conflict; retrying the batch");
                    wait
                }
                Err(state::Error::Unavailable(e)) => {
                    let since = *outage_started.get_or_insert_with(Instant::now);
                    if let Some(c) = consumer.take() {
                        tracing::error!(
                            queue = %self.queue, error = %ErrorChain(&e),
                            "PostgreSQL is unavailable; consumer cancelled until it returns"
                        );
                        self.cancel(c, backlog).await?;
                    }
                    if since.elapsed() > self.settings.db_outage_hold() {
                        return self.requeue_and_wait(items, backlog, shutdown).await;
                    }
                    waits.next_wait()
                }
                Err(e) => return Err(self.fatal(items, e).await),
            };
            tokio::select! {
                () = shutdown.cancelled() => {
                    // Closing the channel then requeues the rest.
                    self.settle_committed(items).await?;
                    return Ok(ControlFlow::Break(Handled::Abandoned));
                }
                () = tokio::time::sleep(wait) => {}
            }
        };
        if outage_started.is_some() {
            tracing::info!(queue = %self.queue, "PostgreSQL is back; batch committed");
        }
        Ok(ControlFlow::Continue(tally))
    }

    /// Republishes the batch's poison messages to the dead-letter queue, acks the batch and
    /// records what it did.
    async fn acknowledge(
        &self,
        items: &[Item],
        last_tag: u64,
        tally: batch::Tally,
        started: Instant,
    ) -> Result<(), Error> {
        let committed = Instant::now();
        self.dead_letters.publish(items).await?;
        self.channel
            .basic_ack(last_tag, BasicAckOptions { multiple: true })
            .await?;
        tracing::debug!(
            size = items.len(),
            commit_ms = (committed - started).as_secs_f64() * 1e3,
            ack_ms = committed.elapsed().as_secs_f64() * 1e3,
            "batch done"
        );

        let span = tracing::Span::current();
        span.record("batch.applied", tally.applied);
        span.record("batch.dead_lettered", tally.dead_lettered);
        span.record("outcome", "acked");
        self.metrics
            .record(self.stream, items.len() as u64, tally, committed - started);
        Ok(())
    }

    /// Cancels the consumer and keeps whatever the broker had already sent.
    async fn cancel(
        &self,
        mut consumer: Consumer,
        backlog: &mut VecDeque<Delivery>,
    ) -> Result<(), Error> {
        self.channel
            .basic_cancel(consumer.tag(), BasicCancelOptions::default())
            .await?;
        while let Some(d) = consumer.next().await {
            backlog.push_back(d?);
        }
        Ok(())
    }

    /// Past the outage hold time: gives back what did not commit, then waits for PostgreSQL.
    async fn requeue_and_wait(
        &self,
        items: &[Item],
        backlog: &mut VecDeque<Delivery>,
        shutdown: &CancellationToken,
    ) -> Result<ControlFlow<Handled, batch::Tally>, Error> {
        self.requeue_pending(items, backlog).await?;
        self.wait_for_database(shutdown)
            .await
            .map(ControlFlow::Break)
    }

    /// A database error retrying will not fix: settles what did commit before giving up.
    async fn fatal(&self, items: &[Item], e: state::Error) -> Error {
        if let Err(settling) = self.settle_committed(items).await {
            tracing::warn!(error = %settling, "could not settle the committed deliveries");
        }
        Error::Database(e)
    }

    /// Settles what the batch committed, then hands the rest of it and the backlog back to
    /// the broker (one redelivery each).
    async fn requeue_pending(
        &self,
        items: &[Item],
        backlog: &mut VecDeque<Delivery>,
    ) -> Result<(), Error> {
        let acked = self.settle_committed(items).await?;
        // Every earlier batch is settled, and the committed items of this one are acked now: a
        // `multiple` nack up to the newest unacked tag covers exactly the pending items and the
        // backlog. The tag must be one still unacked, or the broker closes the channel.
        let newest_pending = items
            .iter()
            .filter(|i| matches!(i.status, Status::Pending))
            .map(|i| i.delivery.delivery_tag)
            .max();
        let tag = backlog.back().map(|d| d.delivery_tag).or(newest_pending);
        tracing::warn!(
            queue = %self.queue,
            acked,
            requeued = items.len() - acked + backlog.len(),
            "the database outage outlasted the hold time; requeuing the deliveries not committed"
        );
        if let Some(tag) = tag {
            self.channel
                .basic_nack(
                    tag,
                    BasicNackOptions {
                        multiple: true,
                        requeue: true,
                    },
                )
                .await?;
        }
        backlog.clear();
        Ok(())
    }

    /// Acks the deliveries whose effect or dead-letter row is committed, after publishing the
    /// committed dead letters, when the rest of the batch is not going to commit now. Requeued,
    /// a committed poison message would be recorded a second time; a committed event would be
    /// skipped as a duplicate, at the cost of a redelivery.
    ///
    /// Should the process die at any point here, nothing is lost: until an item is acked, the
    /// broker redelivers it (repeating at most its dead-letter row and copy; events are
    /// deduplicated by id), and whatever is still unacked is requeued when the channel closes.
    async fn settle_committed(&self, items: &[Item]) -> Result<usize, Error> {
        // A dead letter is confirmed in its queue before its delivery is acked.
        self.dead_letters.publish(items).await?;
        let mut acked = 0;
        for item in items {
            if matches!(item.status, Status::Pending) {
                continue;
            }
            self.channel
                .basic_ack(
                    item.delivery.delivery_tag,
                    BasicAckOptions { multiple: false },
                )
                .await?;
            acked += 1;
        }
        Ok(acked)
    }

    async fn wait_for_database(&self, shutdown: &CancellationToken) -> Result<Handled, Error> {
        let mut waits = self.settings.retry_policy().waits();
        loop {
            match sqlx::query_scalar!(r#"SELECT 1 AS "one!""#)
                .fetch_one(&self.pool)
                .await
            {
                Ok(_) => return Ok(Handled::Requeued),
                Err(e) => tracing::debug!(error = %ErrorChain(&e), "PostgreSQL still unavailable"),
            }
            let wait = waits.next_wait();
            tokio::select! {
                () = shutdown.cancelled() => return Ok(Handled::Abandoned),
                () = tokio::time::sleep(wait) => {}
            }
        }
    }
}

impl Metrics {
    fn record(&self, stream: Stream, deliveries: u64, tally: batch::Tally, took: Duration) {
        let counters = match stream {
            Stream::Events => {
                crate::telemetry::metrics::batch(
                    tally.applied,
                    tally.duplicates,
                    tally.dead_lettered,
                    took,
                );
                &self.events
            }
            Stream::Commands => &self.commands,
        };
        counters.acked.fetch_add(deliveries, Ordering::Relaxed);
        counters.applied.fetch_add(tally.applied, Ordering::Relaxed);
        counters
            .duplicates
            .fetch_add(tally.duplicates, Ordering::Relaxed);
        counters
            .dead_lettered
            .fetch_add(tally.dead_lettered, Ordering::Relaxed);
        counters.batches.fetch_add(1, Ordering::Relaxed);
    }
}
