//! The Altinn client against the in-process simulator, and both against Altinn's OpenAPI spec.
#![allow(
    // Tests and benchmarks report failure by panicking, and count in small numbers.
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss
)]

mod capacity;
mod conformance;
mod errors;
mod flow;
mod grant;
mod helpers;
mod pace;
mod sim_process;
