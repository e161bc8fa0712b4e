//! An in-memory Altinn and Maskinporten that speak the real wire format, for tests and dev mode.
//!
//! # Endpoints
//! Maskinporten and Altinn, as the client calls them (`MASKINPORTEN_URL` = `http://ADDR/`,
//! `ALTINN_BASE_URL` = `http://ADDR`):
//! - `POST /token`: JWT grant → Maskinporten token (see [`tokens`] for what is verified).
//! - `GET /authentication/api/v1/exchange/maskinporten`: Maskinporten token → Altinn token.
//! - `GET /accessmanagement/api/v1/enduser/authorizedparties`
//! - `GET /accessmanagement/api/v1/enduser/clientdelegations/clients?party`
//! - `GET|POST /accessmanagement/api/v1/enduser/clientdelegations/agents?party[&to]`
//! - `DELETE /accessmanagement/api/v1/enduser/clientdelegations/agents?party&to&cascade`
//! - `GET|POST|DELETE /accessmanagement/api/v1/enduser/clientdelegations/agents/accesspackages`
//!   `?party&to` (GET) or `?party&from&to` (POST, DELETE)
//!
//! Admin, not part of Altinn:
//! - `PUT /_sim/world`: load a [`World`] (Maskinporten clients with public keys by `kid`, firms,
//!   clients with the ER role they gave each firm, persons with national identity number and
//!   last name). Replaces all agents and delegations.
//! - `GET /_sim/delegations`: the current delegations as [`DelegationRow`]s.
//! - `PUT /_sim/faults`: set [`Faults`] (shares of 503, 429 with `Retry-After`, latency, hangs,
//!   dropped connections, a scope withheld so every firm gets 403); `{}` clears them.
//! - `POST /_sim/tokens/revoke`: every token issued so far now gets 401.
//! - `PUT /_sim/capacity`: set the [`Capacity`], e.g. `{"rate_limit_per_s": 500,
//!   "latency_ms": 100}` (a field left out is 0, an unknown one is refused).
//!   `rate_limit_per_s` counts requests across all the access-management endpoints above, 0 for
//!   unlimited; beyond it they are answered at once, with no latency, 429 with
//!   `Retry-After` (seconds until capacity frees, rounded up, at least 1) and a problem body
//!   with no Altinn code. A new rate starts with a full second's burst. Maskinporten, the token
//!   exchange and `/_sim` are never limited. `latency_ms` is the latency of `PUT /_sim/faults`
//!   (`latencyMs`), added to every Altinn and Maskinporten request let through; requests wait
//!   it out side by side, not one after the other. Start-up values: `--rate-limit`
//!   (`ALTINN_SIM_RATE_LIMIT`) and `--latency-ms` (`ALTINN_SIM_LATENCY_MS`).
//! - `GET /_sim/capacity`: a [`CapacityReport`], the capacity plus `served` (of which
//!   `served_reads`, the GETs) and `rate_limited`,
//!   the access-management requests the limit let through and turned away since start (read it
//!   before and after a run to count the 429s the run caused).
//!
//! # Rules enforced
//! The client must have given the firm the role (else 400 AM.VLD-00032), the role must allow
//! the package (AM.VLD-00026), the national identity number and last name must match
//! (AM.VLD-00034; after two failures in an hour, 429 AM-00026), the employee must be an agent
//! before delegation (AM.VLD-00032). A token without the endpoint's scope, or for another
//! `party`, gets 403; a missing, expired or revoked one 401. Adding and removing are idempotent
//! and say so with `changed`.

mod admin;
mod capacity;
mod delegations;
mod faults;
mod middleware;
mod problem;
mod routes;
mod run;
mod server;
mod simulator;
mod tokens;
mod world;

pub use capacity::{Capacity, CapacityReport};
pub use faults::{Faults, JournalEntry};
pub use run::{SimArgs, run};
pub use server::serve;
pub use simulator::Simulator;
pub use world::{Client, DelegationRow, Firm, FirmRole, MaskinportenClient, Person, World};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("missing, invalid, expired or revoked token")]
    Unauthorized,
    #[error("forbidden: {0}")]
    Forbidden(&'static str),
    #[error("Altinn problem {}", .0.1.code.as_deref().unwrap_or_default())]
    Problem(Box<(axum::http::StatusCode, crate::altinn::wire::ProblemDetails)>),
    #[error("Maskinporten error {error}: {description}")]
    OAuth {
        error: &'static str,
        description: String,
    },
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("failed to listen on {addr}")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to read the world file {path}")]
    ReadWorld {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to parse the world file {path}")]
    ParseWorld {
        path: std::path::PathBuf,
        #[source]
        source: serde_json::Error,
    },
}
