//! One batch of deliveries: decode, commit in as few transactions as possible, and find the
//! message at fault when PostgreSQL refuses a batch.

use lapin::message::Delivery;
use sqlx::PgPool;

use crate::contract::{self, Command, ContractError, Event, Rules};
use crate::state::{self, ApplyOptions, DeadLetterRow};
use crate::telemetry;
use crate::telemetry::ErrorChain;

/// Which queue a batch came from, and so how its messages are decoded and applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Events,
    Commands,
}

#[derive(Debug)]
pub enum Message {
    Event(Event),
    Command(Command),
}

impl Message {
    fn firm(&self) -> Option<&str> {
        match self {
            Self::Event(e) => Some(e.firm.as_str()),
            Self::Command(c) => c.kind.firm().map(|f| f.as_str()),
        }
    }
}

/// Why a delivery goes to the dead-letter queue.
#[derive(Debug, Clone)]
pub struct Poison {
    pub code: &'static str,
    pub reason: String,
}

impl From<&ContractError> for Poison {
    fn from(e: &ContractError) -> Self {
        Self {
            code: e.code(),
            reason: e.to_string(),
        }
    }
}

#[derive(Debug)]
pub enum Status {
    Pending,
    Committed,
    /// Committed as a dead letter; still to be republished to the dead-letter exchange.
    DeadLettered(Poison),
}

#[derive(Debug)]
pub struct Item {
    pub delivery: Delivery,
    decoded: Result<Message, Poison>,
    pub status: Status,
}

impl Item {
    pub fn decode(stream: Stream, delivery: Delivery, rules: &Rules) -> Self {
        let key = delivery.routing_key.as_str();
        let props = &delivery.properties;
        let decoded = contract::check_content(
            props.content_type().as_ref().map(|t| t.as_str()),
            props.content_encoding().as_ref().map(|e| e.as_str()),
        )
        .and_then(|()| match stream {
            Stream::Events => {
                contract::decode_event(key, &delivery.data, rules).map(Message::Event)
            }
            Stream::Commands => {
                contract::decode_command(key, &delivery.data, rules).map(Message::Command)
            }
        })
        .map_err(|e| Poison::from(&e));
        Self {
            delivery,
            decoded,
            status: Status::Pending,
        }
    }

    fn message_id(&self) -> Option<&str> {
        self.delivery
            .properties
            .message_id()
            .as_ref()
            .map(|m| m.as_str())
    }
}

/// What a committed batch did, for the worker's counters.
#[derive(Debug, Default, Clone, Copy)]
pub struct Tally {
    pub applied: u64,
    pub duplicates: u64,
    pub dead_lettered: u64,
}

/// Commits every pending item, in up to `parallelism` concurrent transactions, each over its
/// own share of the firms.
///
/// One PostgreSQL backend uses one core; sharding by firm lets several work at once, and since
/// the shards' firm sets are disjoint, their row locks never meet. Messages without a firm
/// (poison, all-firm commands) go to the first shard. Order within a firm is kept.
///
/// # Errors
/// Unavailable, conflict and fatal database errors. Items already committed are marked, so the
/// caller can call again with the same items after an outage.
pub async fn commit(
    pool: &PgPool,
    queue: &str,
    items: &mut Vec<Item>,
    opts: &ApplyOptions,
    parallelism: usize,
) -> state::Result<Tally> {
    let n = parallelism.max(1);
    if n == 1 {
        return commit_shard(pool, queue, items, opts).await;
    }
    let mut shards: Vec<Vec<Item>> = (0..n).map(|_| Vec::new()).collect();
    for item in items.drain(..) {
        let shard = item
            .decoded
            .as_ref()
            .ok()
            .and_then(Message::firm)
            .map_or(0, |firm| shard_of(firm, n));
        shards[shard].push(item);
    }
    let results = futures_util::future::join_all(
        shards
            .iter_mut()
            .map(|shard| commit_shard(pool, queue, shard, opts)),
    )
    .await;
    items.extend(shards.into_iter().flatten());
    let mut tally = Tally::default();
    for r in results {
        tally.add(r?);
    }
    Ok(tally)
}

fn shard_of(firm: &str, n: usize) -> usize {
    // FNV-1a: stable across processes and releases, unlike the std hasher.
    let hash = firm.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    // The remainder is below `n`, a usize.
    usize::try_from(hash % n as u64).unwrap_or_default()
}

/// Commits one shard, splitting it when PostgreSQL refuses it, so that one bad message is
/// dead-lettered and the rest are applied.
async fn commit_shard(
    pool: &PgPool,
    queue: &str,
    items: &mut [Item],
    opts: &ApplyOptions,
) -> state::Result<Tally> {
    let mut tally = Tally::default();
    // Ranges still to commit; a refused range is split in two, so a bad message costs
    // O(log n) extra transactions.
    let mut ranges: Vec<std::ops::Range<usize>> = Vec::new();
    ranges.push(0..items.len());
    while let Some(range) = ranges.pop() {
        match commit_range(pool, queue, &mut items[range.clone()], opts, None).await {
            Ok(t) => tally.add(t),
            Err(state::Error::Refused(e)) if range.len() > 1 => {
                tracing::debug!(error = %ErrorChain(&e), size = range.len(), "batch refused; splitting it");
                let mid = range.start + range.len() / 2;
                ranges.push(mid..range.end);
                ranges.push(range.start..mid);
            }
            Err(state::Error::Refused(e)) => {
                let poison = Poison {
                    code: "database-refused",
                    reason: refusal_reason(&e),
                };
                let t = commit_range(pool, queue, &mut items[range], opts, Some(poison)).await?;
                tally.add(t);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(tally)
}

/// Commits one transaction. With `refused`, the single item in `items` is dead-lettered instead.
async fn commit_range(
    pool: &PgPool,
    queue: &str,
    items: &mut [Item],
    opts: &ApplyOptions,
    refused: Option<Poison>,
) -> state::Result<Tally> {
    let pending: Vec<usize> = (0..items.len())
        .filter(|&i| matches!(items[i].status, Status::Pending))
        .collect();
    if pending.is_empty() {
        return Ok(Tally::default());
    }
    let mut sorted = Sorted::new(items, &pending, refused.as_ref());
    let mut tx = pool.begin().await?;
    let outcome = state::apply_events(&mut tx, &sorted.events, opts).await?;
    sorted.poison_held_events(&outcome);
    let new_commands =
        state::record_traced_commands(&mut tx, &sorted.commands, &sorted.traceparents).await?;
    for (i, p) in &sorted.poisons {
        state::record_dead_letter(&mut tx, &dead_letter_row(queue, &items[*i], p)).await?;
    }
    // Delivered on commit: lets tests and operators' tools wait for ingest without polling.
    sqlx::query!(r#"SELECT pg_notify('altinn_sync_ingested', $1)"#, queue)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;

    let commands = sorted.commands.len() as u64;
    let poisons = sorted.poisons;
    for &i in &pending {
        items[i].status = Status::Committed;
    }
    let dead_lettered = poisons.len() as u64;
    for (i, p) in poisons {
        tracing::warn!(
            queue, routing_key = %items[i].delivery.routing_key, message_id = ?items[i].message_id(),
            reason_code = p.code, reason = %p.reason, "message dead-lettered"
        );
        items[i].status = Status::DeadLettered(p);
    }
    Ok(Tally {
        applied: outcome.applied as u64 + new_commands,
        duplicates: outcome.duplicates as u64 + (commands - new_commands),
        dead_lettered,
    })
}

/// A range's pending items, sorted by what the transaction does with them.
struct Sorted<'a> {
    events: Vec<&'a Event>,
    /// Each event's index in the range.
    event_index: Vec<usize>,
    commands: Vec<&'a Command>,
    /// The `traceparent` each command arrived with, so its handling continues the sender's
    /// trace.
    traceparents: Vec<Option<String>>,
    /// Items to dead-letter (by index in the range), and why.
    poisons: Vec<(usize, Poison)>,
}

impl<'a> Sorted<'a> {
    fn new(items: &'a [Item], pending: &[usize], refused: Option<&Poison>) -> Self {
        let mut sorted = Self {
            events: Vec::new(),
            event_index: Vec::new(),
            commands: Vec::new(),
            traceparents: Vec::new(),
            poisons: Vec::new(),
        };
        for &i in pending {
            match (&items[i].decoded, refused) {
                (_, Some(p)) | (Err(p), None) => sorted.poisons.push((i, p.clone())),
                (Ok(Message::Event(e)), None) => {
                    sorted.events.push(e);
                    sorted.event_index.push(i);
                }
                (Ok(Message::Command(c)), None) => {
                    sorted.commands.push(c);
                    sorted.traceparents.push(telemetry::amqp_traceparent(
                        items[i].delivery.properties.headers().as_ref(),
                    ));
                }
            }
        }
        sorted
    }

    /// Events the database would not apply for a sequence regression become poisons.
    fn poison_held_events(&mut self, outcome: &state::ApplyOutcome) {
        for &r in &outcome.regressed {
            self.poisons.push((
                self.event_index[r],
                Poison {
                    code: "sequence-regression",
                    reason: "the sequence is far below the firm's high-water mark; AdminFlow may \
                             have been restored from a backup. The firm's events are held until \
                             an operator runs `altinn-sync resequence`"
                        .to_owned(),
                },
            ));
        }
        for &h in &outcome.held {
            self.poisons.push((
                self.event_index[h],
                Poison {
                    code: "sequence-regression",
                    reason: "the firm is on hold after a sequence regression; replay this \
                             message after `altinn-sync resequence`"
                        .to_owned(),
                },
            ));
        }
    }
}

fn dead_letter_row<'a>(queue: &'a str, item: &'a Item, p: &'a Poison) -> DeadLetterRow<'a> {
    DeadLetterRow {
        queue,
        routing_key: item.delivery.routing_key.as_str(),
        message_id: item.message_id(),
        firm: item.decoded.as_ref().ok().and_then(Message::firm),
        reason_code: p.code,
        reason: &p.reason,
        body_bytes: item.delivery.data.len(),
        redelivered: item.delivery.redelivered,
    }
}

impl Tally {
    fn add(&mut self, o: Tally) {
        self.applied += o.applied;
        self.duplicates += o.duplicates;
        self.dead_lettered += o.dead_lettered;
    }
}

fn refusal_reason(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(db) => format!(
            "PostgreSQL refused the message: {} (SQLSTATE {})",
            db.message(),
            db.code().unwrap_or_default()
        ),
        other => format!("PostgreSQL refused the message: {other}"),
    }
}
