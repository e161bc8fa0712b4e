//! `altinn-sync dev`: the simulator in-process with the demo world, and the worker against it,
//! the local RabbitMQ and the local PostgreSQL. The README's "try it".
//!
//! Start-up, in order, each failing fast with a hint: bind the simulator (so a taken port is
//! the first thing said), write the demo key where the worker reads it, migrate, ask for a
//! reconcile of every firm already known (the simulator starts empty, the database may not),
//! declare the queues (so the guide's `publish` works the moment it is printed), print the guide,
//! then run the worker. On shutdown the worker stops first, then the simulator, so deliveries
//! in flight are answered.

mod demo;
mod guide;
mod stack;

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::worker::{self, WorkerSettings};
use crate::{admin, sim, state};

pub use stack::run;

#[derive(Debug, Clone, clap::Args)]
pub struct DevArgs {
    /// Where the in-process simulator listens (Maskinporten and Altinn both). Port 0 picks a
    /// free one; the guide printed at start names it.
    #[arg(long, env = "ALTINN_SIM_LISTEN", default_value = "127.0.0.1:8090")]
    pub sim_listen: SocketAddr,
    /// The worker's settings, as for `run`. The Altinn and Maskinporten ones are replaced by the
    /// simulator's.
    #[command(flatten)]
    pub worker: WorkerSettings,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the simulator could not start (is the port taken? choose another with --sim-listen)")]
    Simulator(#[from] sim::Error),
    #[error("could not write the demo key to {path}")]
    Key {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("could not prepare the database (is PostgreSQL running? see --database-url)")]
    Database(#[from] state::Error),
    #[error("could not reach RabbitMQ or declare the queues (is it running? see --amqp-url)")]
    Broker(#[from] lapin::Error),
    #[error(transparent)]
    Worker(#[from] worker::Error),
    #[error(transparent)]
    Admin(#[from] admin::Error),
    #[error("could not make the dev admin token")]
    Token(#[source] admin::tokens::Error),
}
