//! What every handler starts from: the API's shared state and the authenticated caller.

use std::sync::Arc;

use axum::Json;
use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::admin::problem::Problem;
use crate::admin::tokens::Caller;
use crate::admin::{Health, Tokens};
use crate::ingest::{BrokerSettings, IngestSettings};
use crate::ops::{self, Ops};

/// What the API needs: the pool (once connected), the tokens, the mode and the broker.
#[derive(Clone)]
pub struct Api {
    health: Arc<Health>,
    tokens: Arc<Tokens>,
    mode: ops::Mode,
    pub(super) amqp_url: String,
    pub(super) topology_prefix: String,
}

impl Api {
    /// `mode` is the worker's; requested syncs go to the broker and topology ingest reads.
    pub fn new(
        health: Arc<Health>,
        tokens: Tokens,
        mode: ops::Mode,
        broker: &BrokerSettings,
        ingest: &IngestSettings,
    ) -> Self {
        Self {
            health,
            tokens: Arc::new(tokens),
            mode,
            amqp_url: broker.amqp_url.clone(),
            topology_prefix: ingest.topology_prefix.clone(),
        }
    }

    pub(super) fn ops(&self) -> Result<Ops, Problem> {
        let pool = self.health.pool().ok_or_else(|| {
            Problem::unavailable("the worker is still connecting to PostgreSQL; try again shortly")
        })?;
        Ok(Ops::new(pool.clone(), self.mode.clone()))
    }
}

/// The caller, from `Authorization: Bearer <token>`; the first check of every route.
pub struct Authenticated(pub Caller);

impl FromRequestParts<Api> for Authenticated {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, api: &Api) -> Result<Self, Problem> {
        let header = parts
            .headers
            .get(header::AUTHORIZATION)
            .ok_or_else(|| Problem::unauthorized("send Authorization: Bearer <token>"))?;
        let token = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                Problem::unauthorized("the Authorization header is not `Bearer <token>`")
            })?;
        if api.tokens.is_empty() {
            return Err(Problem::unauthorized(
                "no admin tokens are configured on this worker (ADMIN_TOKENS_FILE)",
            ));
        }
        api.tokens
            .authenticate(token)
            .map(Self)
            .ok_or_else(|| Problem::unauthorized("the token is not valid"))
    }
}

/// An operation's answer: its value as JSON, or its failure as a problem.
pub fn reply<T: Serialize>(result: Result<T, ops::Error>) -> Response {
    match result {
        Ok(value) => Json(value).into_response(),
        Err(e) => Problem::from(e).into_response(),
    }
}
