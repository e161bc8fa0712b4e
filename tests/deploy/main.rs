//! The deploy files agree with the code. There is no cluster or Docker engine here, so every
//! manifest, the compose file, the alert rules and the dashboard are parsed and compared with
//! what the binary defines: its commands and env names (clap), its routes and its series.
#![allow(
    // Tests report failure by panicking.
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

mod checks;
mod code;
mod compose;
mod host;
mod kubernetes;
mod linters;
mod negative;
mod network;
mod observability;
