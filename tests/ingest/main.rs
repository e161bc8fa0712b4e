//! End-to-end ingest tests: real RabbitMQ, real PostgreSQL, a fresh database and topology per
//! test, from a published message to the desired-state table.

#[path = "../common/mod.rs"]
mod common;

mod cli;
mod commands;
mod faults;
mod flush;
mod flush_faults;
mod maintenance;
mod ordering;
mod poison;
mod reconcile;
mod stories;
