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
//!
//! # Rules enforced
//! The client must have given the firm the role (else 400 AM.VLD-00032), the role must allow
//! the package (AM.VLD-00026), the national identity number and last name must match
//! (AM.VLD-00034; after two failures in an hour, 429 AM-00026), the employee must be an agent
//! before delegation (AM.VLD-00032). A token without the endpoint's scope, or for another
//! `party`, gets 403; a missing, expired or revoked one 401. Adding and removing are idempotent
//! and say so with `changed`.

mod admin;
mod delegations;
mod faults;
mod problem;
mod run;
mod server;
mod tokens;
mod world;

use std::sync::{Arc, Mutex as StdMutex};

use axum::Router;
use axum::routing::{get, post, put};
use tokio::sync::Mutex;

pub use faults::{Faults, JournalEntry};
pub use run::{SimArgs, run};
pub use server::serve;
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

/// A handle on one simulated Altinn; clones share the state.
#[derive(Clone)]
pub struct Simulator {
    inner: Arc<Inner>,
}

struct Inner {
    /// One lock for the whole world: every call is short, and it keeps the rules simple.
    state: Mutex<world::State>,
    maskinporten_secret: [u8; 32],
    altinn_secret: [u8; 32],
    /// Every answered request, when built with [`Simulator::with_journal`].
    journal: Option<StdMutex<Vec<JournalEntry>>>,
    /// Whether delegation changes are held at the door, and how many are held now.
    gate_closed: tokio::sync::watch::Sender<bool>,
    held_at_gate: tokio::sync::watch::Sender<usize>,
}

impl Default for Simulator {
    fn default() -> Self {
        Self::new()
    }
}

impl Simulator {
    pub fn new() -> Self {
        Self::build(false)
    }

    /// A simulator that keeps every request and answer, for conformance checks.
    pub fn with_journal() -> Self {
        Self::build(true)
    }

    fn build(journal: bool) -> Self {
        let mut secrets = [[0u8; 32]; 2];
        secrets.iter_mut().for_each(|s| rand::fill(s));
        let inner = Inner {
            state: Mutex::default(),
            maskinporten_secret: secrets[0],
            altinn_secret: secrets[1],
            journal: journal.then(StdMutex::default),
            gate_closed: tokio::sync::watch::Sender::new(false),
            held_at_gate: tokio::sync::watch::Sender::new(0),
        };
        Self {
            inner: Arc::new(inner),
        }
    }

    pub async fn load(&self, world: World) {
        self.inner.state.lock().await.load(world);
    }

    pub async fn set_faults(&self, faults: Faults) {
        self.inner.state.lock().await.faults = faults;
    }

    /// Registers another Maskinporten client (a key uploaded under a new kid, say).
    pub async fn add_maskinporten_client(&self, client: world::MaskinportenClient) {
        self.inner
            .state
            .lock()
            .await
            .world
            .maskinporten_clients
            .push(client);
    }

    /// The client gives the firm another role, listed before the ones it has (for
    /// `rettighetshaver`, with the packages it delegated).
    pub async fn give_firm_role(
        &self,
        client_org: &str,
        firm_org: &str,
        role: &str,
        packages: &[&str],
    ) {
        let mut state = self.inner.state.lock().await;
        for client in &mut state.world.clients {
            if client.org_number == client_org {
                client.firm_roles.insert(
                    0,
                    world::FirmRole {
                        firm_org_number: firm_org.to_owned(),
                        role: role.to_owned(),
                        packages: packages.iter().map(|p| (*p).to_owned()).collect(),
                    },
                );
            }
        }
    }

    /// The client drops the firm in the Register of Legal Entities: its roles for the firm end,
    /// and every delegation through them goes with them (Altinn cascades).
    pub async fn drop_firm_from_client(&self, client_org: &str, firm_org: &str) {
        let mut state = self.inner.state.lock().await;
        let firm_party = state.firm(firm_org).map(|f| f.party_uuid);
        let mut client_party = None;
        for client in &mut state.world.clients {
            if client.org_number == client_org {
                client.firm_roles.retain(|r| r.firm_org_number != firm_org);
                client_party = Some(client.party_uuid);
            }
        }
        if let (Some(firm), Some(client)) = (firm_party, client_party) {
            state
                .delegations
                .retain(|(f, c, _), _| !(*f == firm && *c == client));
        }
    }

    /// Holds every delegation change (`POST` or `DELETE agents/accesspackages`) unanswered until
    /// [`Self::open_gate`]: a test's way to have a change in flight for as long as it needs.
    pub fn close_gate(&self) {
        self.inner.gate_closed.send_replace(true);
    }

    pub fn open_gate(&self) {
        self.inner.gate_closed.send_replace(false);
    }

    /// Waits until `n` delegation changes are held at the closed gate.
    pub async fn held_at_gate(&self, n: usize) {
        let mut held = self.inner.held_at_gate.subscribe();
        let _ = held.wait_for(|held| *held >= n).await;
    }

    pub async fn delegations(&self) -> Vec<DelegationRow> {
        self.inner.state.lock().await.delegation_rows()
    }

    /// The requests answered so far (empty without a journal).
    pub fn journal(&self) -> Vec<JournalEntry> {
        let journal = self.inner.journal.as_ref();
        journal
            .map(|j| j.lock().unwrap_or_else(|e| e.into_inner()).clone())
            .unwrap_or_default()
    }

    pub fn router(&self) -> Router {
        const CD: &str = "/accessmanagement/api/v1/enduser/clientdelegations";
        let altinn = Router::new()
            .route("/token", post(tokens::maskinporten_token))
            .route(
                "/authentication/api/v1/exchange/{provider}",
                get(tokens::exchange),
            )
            .route(
                "/accessmanagement/api/v1/enduser/authorizedparties",
                get(delegations::authorized_parties),
            )
            .route(&format!("{CD}/clients"), get(delegations::clients))
            .route(
                &format!("{CD}/agents"),
                get(delegations::agents)
                    .post(delegations::add_agent)
                    .delete(delegations::remove_agent),
            )
            .route(
                &format!("{CD}/agents/accesspackages"),
                get(delegations::agent_packages)
                    .post(delegations::delegate)
                    .delete(delegations::revoke),
            )
            .layer(axum::middleware::from_fn_with_state(
                self.clone(),
                faults::record,
            ))
            .layer(axum::middleware::from_fn_with_state(
                self.clone(),
                faults::inject,
            ));
        let admin = Router::new()
            .route("/_sim/world", put(admin::put_world))
            .route("/_sim/delegations", get(admin::get_delegations))
            .route("/_sim/faults", put(admin::put_faults))
            .route("/_sim/tokens/revoke", post(admin::revoke_tokens));
        altinn.merge(admin).with_state(self.clone())
    }
}
