//! End-to-end ingest tests: real RabbitMQ, real PostgreSQL, a fresh database and topology per
//! test, from a published message to the desired-state table.
#![allow(
    // Tests and benchmarks report failure by panicking, and count in small numbers.
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss
)]

#[path = "../common/mod.rs"]
mod common;

mod admin_api;
mod adoption;
mod auto_sync;
mod cli;
mod commands;
mod faults;
mod flush;
mod flush_faults;
mod guard;
mod harness;
mod hostile;
mod listener;
mod maintenance;
mod ordering;
mod poison;
mod progress;
mod reconcile;
mod reconcile_race;
mod replicas;
mod stories;
