//! Traces from AdminFlow to Altinn (issue 10): a command's `traceparent` reaches the Altinn
//! call and the `traceparent` Altinn receives, and the OTLP export follows the standard
//! variables. Real RabbitMQ and PostgreSQL, the simulator for Altinn.
#![allow(
    // Tests report failure by panicking.
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

#[path = "../common/mod.rs"]
mod common;

mod dev_run;
mod export;
mod propagation;
