//! What every handler starts from: the API's shared state and the authenticated caller.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

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
    /// Each token's calls in progress, at most `calls_per_token` at once.
    in_progress: Arc<Mutex<HashMap<String, Arc<Semaphore>>>>,
    calls_per_token: usize,
    /// Syncs requested, per token name.
    syncs: Arc<SyncLimiter>,
    pub(super) publisher: Arc<ops::CommandPublisher>,
}

type SyncLimiter = governor::RateLimiter<
    String,
    governor::state::keyed::HashMapStateStore<String>,
    governor::clock::DefaultClock,
>;

impl Api {
    /// `mode` is the worker's; requested syncs go to the broker and topology ingest reads.
    pub fn new(
        health: Arc<Health>,
        tokens: Tokens,
        mode: ops::Mode,
        broker: &BrokerSettings,
        ingest: &IngestSettings,
        settings: &crate::admin::limits::ApiSettings,
    ) -> Self {
        Self {
            health,
            tokens: Arc::new(tokens),
            mode,
            in_progress: Arc::default(),
            calls_per_token: usize::try_from(settings.admin_calls_per_token).unwrap_or(1),
            syncs: Arc::new(governor::RateLimiter::hashmap(sync_quota(
                settings.admin_syncs_per_minute,
            ))),
            publisher: Arc::new(ops::CommandPublisher::new(
                &broker.amqp_url,
                &ingest.topology_prefix,
            )),
        }
    }

    /// A 429 when `caller` has requested its syncs of the minute already.
    pub(super) fn sync_allowed(&self, caller: &Caller) -> Result<(), Problem> {
        use governor::clock::Clock as _;
        self.syncs.check_key(&caller.name).map_err(|not_until| {
            let wait = not_until.wait_time_from(governor::clock::DefaultClock::default().now());
            Problem::too_many(
                "this token has requested its syncs of the minute (ADMIN_SYNCS_PER_MINUTE)",
                wait,
            )
        })
    }

    pub(super) fn ops(&self) -> Result<Ops, Problem> {
        let pool = self.health.api_pool().ok_or_else(|| {
            Problem::unavailable("the worker is still connecting to PostgreSQL; try again shortly")
        })?;
        Ok(Ops::new(pool.clone(), self.mode.clone()))
    }
}

fn sync_quota(per_minute: u32) -> governor::Quota {
    let n = std::num::NonZeroU32::new(per_minute).unwrap_or(std::num::NonZeroU32::MIN);
    governor::Quota::per_minute(n)
}

/// How long a call waits for its token's earlier calls before it is answered 429.
const TURN_WAIT: Duration = Duration::from_secs(5);

/// The caller, from `Authorization: Bearer <token>`; the first check of every route. It holds
/// one of the token's turns until the answer is made, so one token's flood of calls queues
/// behind itself rather than taking every connection of the API.
pub struct Authenticated(
    pub Caller,
    // Held, never read: dropped with the extractor once the handler has answered.
    #[allow(dead_code)] pub(super) OwnedSemaphorePermit,
);

impl Api {
    async fn turn(&self, caller: &Caller) -> Result<OwnedSemaphorePermit, Problem> {
        let turns = {
            let mut in_progress = self.in_progress.lock().unwrap_or_else(|p| p.into_inner());
            in_progress
                .entry(caller.name.clone())
                .or_insert_with(|| Arc::new(Semaphore::new(self.calls_per_token)))
                .clone()
        };
        match tokio::time::timeout(TURN_WAIT, turns.acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(Problem::too_many(
                "this token has too many calls in progress (ADMIN_CALLS_PER_TOKEN); wait for \
                 their answers",
                TURN_WAIT,
            )),
        }
    }
}

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
        let caller = api
            .tokens
            .authenticate(token)
            .ok_or_else(|| Problem::unauthorized("the token is not valid"))?;
        let turn = api.turn(&caller).await?;
        Ok(Self(caller, turn))
    }
}

/// An operation's answer: its value as JSON, or its failure as a problem.
pub fn reply<T: Serialize>(result: Result<T, ops::Error>) -> Response {
    match result {
        Ok(value) => Json(value).into_response(),
        Err(e) => Problem::from(e).into_response(),
    }
}
