//! altinn-sync keeps accountants' Altinn access in line with what they do in AdminFlow.
//!
//! # Layout
//! ```text
//! AdminFlow ──events──▶ adminflow.events ──▶ altinn-sync.events (quorum queue)
//!                                              │ batches of deliveries          ingest
//!                                              ▼
//!                         decode + validate ──poison──▶ altinn-sync.dead-letter    contract
//!                                              │         (+ a dead_letters row with the reason)
//!                                              ▼ one transaction per batch
//!          facts, sequence-guarded, with tombstones ─▶ desired_grants           state, policy
//!                                              │ commit, then ack(multiple)
//! operators ──SyncNow, NightlyReconcile──▶ altinn-sync.commands ──▶ recorded    ingest, state
//!                                              │ (with the Altinn settings)
//!                                              ▼
//!          plan: desired − applied (nightly: − Altinn's actual state) ─▶ outbox   sync
//!          dispatch: claim (SKIP LOCKED + lease) ─▶ Altinn ─▶ outcome + audit     sync, altinn
//! ```
//!
//! - [`contract`]: the AdminFlow messages, decoded and checked (check digits, strict ids).
//! - [`ingest`]: the RabbitMQ topology, consumer loops, batching, dead-lettering, reconnects.
//! - [`state`]: PostgreSQL: facts, `desired_grants`, processed ids, dead letters. SQL lives
//!   next to its caller; migrations are in `schemas/migrations/`.
//! - [`policy`]: which role grants which Altinn access package.
//! - [`sync`]: the flush to Altinn: outbox planning, the dispatcher, the nightly reconcile.
//! - [`altinn`]: the Altinn client: Maskinporten system-user tokens, the client-delegation
//!   endpoints, and every answer classified.
//! - [`sim`]: the Altinn simulator the tests and demos run against.
//! - [`worker`]: `altinn-sync run`, wiring the above with housekeeping.
//! - [`dev`]: `altinn-sync dev`, the worker with the simulator in-process and a demo world.
//! - [`doctor`]: `altinn-sync doctor`, first contact with a real Altinn, step by step.
//! - [`retry`]: the one retry policy every retry uses.
//! - [`publish`], [`cli`], [`telemetry`]: the operator's tools and the process around them.

pub mod admin;
pub mod altinn;
pub mod cli;
pub mod contract;
pub mod dev;
pub mod doctor;
pub mod ingest;
pub mod ops;
pub mod policy;
pub mod publish;
pub mod retry;
pub mod sim;
pub mod state;
pub mod sync;
pub mod telemetry;
pub mod worker;
