//! The `/_sim` endpoints that tests and the dev mode use to set up and inspect the simulator.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;

use super::capacity::{Capacity, CapacityReport};
use super::faults::Faults;
use super::simulator::Simulator;
use super::tokens::revoke_all;
use super::world::{DelegationRow, World};

pub async fn put_world(State(sim): State<Simulator>, Json(world): Json<World>) -> StatusCode {
    sim.load(world).await;
    StatusCode::NO_CONTENT
}

pub async fn get_delegations(State(sim): State<Simulator>) -> Json<Vec<DelegationRow>> {
    Json(sim.delegations().await)
}

pub async fn put_faults(State(sim): State<Simulator>, Json(faults): Json<Faults>) -> StatusCode {
    sim.set_faults(faults).await;
    StatusCode::NO_CONTENT
}

pub async fn put_capacity(
    State(sim): State<Simulator>,
    Json(capacity): Json<Capacity>,
) -> StatusCode {
    sim.set_capacity(capacity).await;
    StatusCode::NO_CONTENT
}

pub async fn get_capacity(State(sim): State<Simulator>) -> Json<CapacityReport> {
    Json(sim.capacity().await)
}

pub async fn revoke_tokens(State(sim): State<Simulator>) -> StatusCode {
    revoke_all(&mut *sim.inner.state.lock().await)
}
