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
//!          plan: desired against applied + on its way (nightly: Altinn's state) ─▶ outbox sync
//!          dispatch: claim (SKIP LOCKED + lease) ─▶ Altinn ─▶ outcome + audit     sync, altinn
//! ```
//!
//! # Layers
//! Imports point down only, and no two files import each other, directly or round a circle
//! (`tests/architecture/` checks both on every `cargo test`):
//! ```text
//! main                                   the process: parse, telemetry, signals, dispatch
//! admin, cli, worker, dev, doctor        the faces: HTTP API, command line, the worker process
//! ops                                    status, explain, plan, audit, approve...: typed answers
//! sync, ingest, publish                  the pipeline: flush to Altinn, consume from RabbitMQ
//! altinn, sim                            the Altinn client and the simulator
//! state                                  PostgreSQL: facts, desired grants, commands
//! contract, telemetry, retry, policy     messages, logs/traces/metrics, backoff, role mapping
//! ```
//!
//! - [`contract`]: the AdminFlow messages, decoded and checked (check digits, strict ids).
//! - [`telemetry`]: tracing, the W3C trace context, and every metric the pipeline records.
//! - [`retry`]: the one retry policy every retry uses.
//! - [`policy`]: which role grants which Altinn access package.
//! - [`state`]: PostgreSQL: facts, `desired_grants`, processed ids, dead letters. SQL lives
//!   next to its caller; migrations are in `schemas/migrations/`.
//! - [`altinn`]: the Altinn client: Maskinporten system-user tokens, the client-delegation
//!   endpoints, every answer classified, and the adaptive limit on calls in flight.
//! - [`sim`]: the Altinn simulator the tests and demos run against.
//! - [`ingest`]: the RabbitMQ topology, consumer loops, batching, dead-lettering, reconnects.
//! - [`sync`]: the flush to Altinn: outbox planning (desired against applied and on-the-way
//!   changes), the dispatcher, the nightly reconcile.
//! - [`publish`]: publishing one message with a publisher confirm.
//! - [`ops`]: the operations the CLI and the admin API share, each a typed, serialisable answer.
//! - [`admin`]: the admin listener: health, `/metrics` and the `/v1` API.
//! - [`cli`]: the command line and running one command.
//! - [`worker`]: `altinn-sync run`, wiring the above with housekeeping and progress.
//! - [`dev`]: `altinn-sync dev`, the worker with the simulator in-process and a demo world.
//! - [`doctor`]: `altinn-sync doctor`, first contact with a real Altinn, step by step.

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
