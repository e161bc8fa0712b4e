//! From RabbitMQ to PostgreSQL: topology, the consumer loops and their reconnect loop.

mod batch;
mod connection;
mod consumer;
mod counters;
mod dead_letter;
mod settings;
mod topology;

pub use batch::Stream;
pub use connection::{connect, run};
pub use counters::{Counters, Metrics};
pub use settings::{
    BrokerSettings, DEFAULT_EVENTS_EXCHANGE, DEFAULT_TOPOLOGY_PREFIX, IngestSettings,
};
pub use topology::Topology;

use crate::retry::Retryable;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The broker connection or channel failed: reconnect.
    #[error("RabbitMQ failed")]
    Broker(#[from] lapin::Error),
    #[error("the consumer was cancelled by the broker")]
    ConsumerEnded,
    #[error(
        "the dead-letter exchange has no queue bound; the dead-lettered message was not stored"
    )]
    DeadLetterUnroutable,
    #[error("the broker did not confirm a dead-lettered message")]
    DeadLetterNotConfirmed,
    /// The broker has a queue or exchange of ours with other properties: fix the topology.
    #[error(
        "the RabbitMQ topology does not match; delete or fix the queue or exchange the broker names"
    )]
    TopologyMismatch(#[source] lapin::Error),
    /// A database error that retrying will not fix.
    #[error("database failure")]
    Database(#[source] crate::state::Error),
}

impl Retryable for Error {
    fn is_retryable(&self) -> bool {
        !matches!(self, Self::TopologyMismatch(_) | Self::Database(_))
    }
}
