//! The RabbitMQ topology the worker declares at start-up. Declaring is idempotent.

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, ExchangeKind};

use crate::contract::{COMMAND_TYPES, EVENT_TYPES};

/// Every name the worker uses. Worker-owned names carry the configured prefix so that several
/// environments, or parallel tests, can share one broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    /// AdminFlow's exchange; not prefixed, because AdminFlow owns it.
    pub events_exchange: String,
    pub events_queue: String,
    pub commands_exchange: String,
    pub commands_queue: String,
    pub dead_letter_exchange: String,
    pub dead_letter_queue: String,
    /// Redeliveries after which the broker dead-letters a message: a last resort against a
    /// message that crashes the worker every time.
    pub delivery_limit: i64,
}

impl Topology {
    pub fn new(prefix: &str, events_exchange: &str, delivery_limit: i64) -> Self {
        Self {
            events_exchange: events_exchange.to_owned(),
            events_queue: format!("{prefix}.events"),
            commands_exchange: format!("{prefix}.commands"),
            commands_queue: format!("{prefix}.commands"),
            dead_letter_exchange: format!("{prefix}.dead-letter"),
            dead_letter_queue: format!("{prefix}.dead-letter"),
            delivery_limit,
        }
    }

    /// Declares exchanges, queues and bindings.
    ///
    /// # Errors
    /// A queue or exchange that already exists with other properties closes the channel with
    /// PRECONDITION_FAILED; the broker's message names the property that differs.
    pub async fn declare(&self, ch: &Channel) -> Result<(), lapin::Error> {
        self.declare_exchanges(ch).await?;
        self.declare_dead_letter_queue(ch).await?;
        self.declare_work_queues(ch).await
    }

    async fn declare_exchanges(&self, ch: &Channel) -> Result<(), lapin::Error> {
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        };
        for (exchange, kind) in [
            (&self.events_exchange, ExchangeKind::Topic),
            (&self.commands_exchange, ExchangeKind::Topic),
            (&self.dead_letter_exchange, ExchangeKind::Fanout),
        ] {
            ch.exchange_declare(
                exchange.as_str().into(),
                kind,
                durable,
                FieldTable::default(),
            )
            .await?;
        }
        Ok(())
    }

    async fn declare_dead_letter_queue(&self, ch: &Channel) -> Result<(), lapin::Error> {
        ch.queue_declare(
            self.dead_letter_queue.as_str().into(),
            durable_queue(),
            quorum(),
        )
        .await?;
        ch.queue_bind(
            self.dead_letter_queue.as_str().into(),
            self.dead_letter_exchange.as_str().into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
    }

    /// The events and commands queues, each bound to its exchange by every routing key the
    /// contract knows.
    async fn declare_work_queues(&self, ch: &Channel) -> Result<(), lapin::Error> {
        for (queue_name, exchange, keys) in [
            (&self.events_queue, &self.events_exchange, &EVENT_TYPES[..]),
            (
                &self.commands_queue,
                &self.commands_exchange,
                &COMMAND_TYPES[..],
            ),
        ] {
            ch.queue_declare(
                queue_name.as_str().into(),
                durable_queue(),
                self.work_queue_arguments(),
            )
            .await?;
            for key in keys {
                ch.queue_bind(
                    queue_name.as_str().into(),
                    exchange.as_str().into(),
                    (*key).into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            }
        }
        Ok(())
    }

    fn work_queue_arguments(&self) -> FieldTable {
        let mut args = quorum();
        args.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongLongInt(self.delivery_limit),
        );
        args.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString(self.dead_letter_exchange.clone().into()),
        );
        args
    }
}

fn durable_queue() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..Default::default()
    }
}

fn quorum() -> FieldTable {
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    args
}
