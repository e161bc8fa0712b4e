//! The simulator's shared state: one handle that every route, middleware and test holds.

use std::sync::{Arc, Mutex as StdMutex};

use tokio::sync::Mutex;

use super::capacity::{Capacity, CapacityReport, Limiter};
use super::faults::{Faults, JournalEntry};
use super::world::{self, DelegationRow, World};

/// A handle on one simulated Altinn; clones share the state.
#[derive(Clone)]
pub struct Simulator {
    pub(super) inner: Arc<Inner>,
}

pub(super) struct Inner {
    /// One lock for the whole world: every call is short, and it keeps the rules simple.
    pub(super) state: Mutex<world::State>,
    pub(super) maskinporten_secret: [u8; 32],
    pub(super) altinn_secret: [u8; 32],
    /// Every answered request, when built with [`Simulator::with_journal`].
    pub(super) journal: Option<StdMutex<Vec<JournalEntry>>>,
    /// Whether delegation changes are held at the door, and how many are held now.
    pub(super) gate_closed: tokio::sync::watch::Sender<bool>,
    pub(super) held_at_gate: tokio::sync::watch::Sender<usize>,
    /// Outside `state`: every access-management request passes it, and must not queue for the
    /// world's lock to be turned away.
    pub(super) limiter: Limiter,
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
            limiter: Limiter::default(),
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

    /// Sets the rate limit (a new one starts with a full second's burst) and the latency, which
    /// is [`Faults::latency_ms`]: the other faults are kept.
    pub async fn set_capacity(&self, capacity: Capacity) {
        self.inner.limiter.set_rate(capacity.rate_limit_per_s);
        self.inner.state.lock().await.faults.latency_ms = capacity.latency_ms;
    }

    pub async fn capacity(&self) -> CapacityReport {
        let latency_ms = self.inner.state.lock().await.faults.latency_ms;
        let (served, served_reads, rate_limited) = self.inner.limiter.counts();
        CapacityReport {
            rate_limit_per_s: self.inner.limiter.rate(),
            latency_ms,
            served,
            served_reads,
            rate_limited,
        }
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
        let mut guard = self.inner.state.lock().await;
        let state = &mut *guard;
        for (i, client) in state.world.clients.iter_mut().enumerate() {
            if client.org_number == client_org {
                state
                    .clients_by_firm
                    .entry(firm_org.to_owned())
                    .or_default()
                    .insert(i);
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
}
