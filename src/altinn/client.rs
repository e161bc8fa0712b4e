//! The v1 enduser client-delegation client, acting as a firm's system user.
//!
//! Party ids are UUIDs: the firm is `party`, the client is `from` and the employee is `to`.
//! Every call refreshes the token once on 401 and retries; other failures come back
//! classified (see [`super::error`]) and retrying them is the caller's policy.

use std::time::{Duration, Instant};

use reqwest::{RequestBuilder, StatusCode};
use serde::de::DeserializeOwned;
use uuid::Uuid;

use super::config::ValidatedAltinnConfig;
use super::error::{Error, Result, classify};
use super::http;
use super::maskinporten::{SigningKey, TokenSource};
use super::pace::{CallLimit, CallPermit, Concurrency, Feedback};
use super::paths::{self, Endpoint};
use super::wire::{
    AgentAccess, Assignment, AuthorizedParty, ClientAccess, Delegation, DelegationBatch, Paginated,
    PersonInput,
};

/// More pages than any list of one firm's clients or agents can have: a `links.next` that never
/// ends is an error, not a loop.
const MAX_PAGES: usize = 10_000;

/// Calls in flight until the flush's settings say otherwise (doctor, tests).
const DEFAULT_CONCURRENCY: usize = 16;

/// The firm a call acts for: the org number picks the system user's token, the party UUID
/// goes into `party`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Firm {
    pub org_number: String,
    pub party: Uuid,
}

#[derive(Debug)]
pub struct AltinnClient {
    http: reqwest::Client,
    base_url: String,
    tokens: TokenSource,
    /// Every access-management call goes through it, however many firms and callers.
    pace: CallLimit,
}

impl AltinnClient {
    /// Reads the key file and builds the HTTP client; makes no call yet.
    pub fn new(config: ValidatedAltinnConfig) -> Result<Self> {
        let key = SigningKey::from_file(&config)?;
        Self::with_key(config, key)
    }

    pub fn with_key(config: ValidatedAltinnConfig, key: SigningKey) -> Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(config.request_timeout)
            .build()
            .map_err(Error::HttpClient)?;
        let base_url = config.altinn_base_url.clone();
        Ok(Self {
            tokens: TokenSource::new(http.clone(), config, key),
            http,
            base_url,
            pace: CallLimit::new(Concurrency::Fixed(DEFAULT_CONCURRENCY)),
        })
    }

    /// Sets how many calls go out at once (the flush's settings decide).
    #[must_use]
    pub fn with_concurrency(mut self, concurrency: Concurrency) -> Self {
        self.pace = CallLimit::new(concurrency);
        self
    }

    pub fn pace(&self) -> &CallLimit {
        &self.pace
    }

    pub fn tokens(&self) -> &TokenSource {
        &self.tokens
    }

    /// The firm's party UUID, from the parties its system user may act for.
    pub async fn firm_party(&self, org_number: &str) -> Result<Firm> {
        let parties: Vec<AuthorizedParty> = self
            .list(
                org_number,
                "authorizedparties",
                paths::AUTHORIZED_PARTIES,
                |c, e| c.request(e),
            )
            .await?;
        let party = parties
            .iter()
            .find(|p| p.organization_number.as_deref() == Some(org_number) && !p.is_deleted)
            .ok_or_else(|| Error::FirmLevel {
                reason: format!("the system user is not authorized for firm {org_number}"),
            })?;
        Ok(Firm {
            org_number: org_number.to_owned(),
            party: party.party_uuid,
        })
    }

    /// The firm's clients and the packages each role lets it delegate.
    pub async fn clients(&self, firm: &Firm) -> Result<Vec<ClientAccess>> {
        self.list(&firm.org_number, "clients", paths::CLIENTS, |c, e| {
            c.request(e).query(&[("party", firm.party)])
        })
        .await
    }

    /// The firm's agents (employees who may receive client packages).
    pub async fn agents(&self, firm: &Firm) -> Result<Vec<AgentAccess>> {
        self.list(&firm.org_number, "agents", paths::AGENTS, |c, e| {
            c.request(e).query(&[("party", firm.party)])
        })
        .await
    }

    /// Makes the person an agent of the firm (idempotent); `to_id` is the agent's party UUID.
    ///
    /// Call it only for persons not already among [`Self::agents`]: each failed lookup counts
    /// towards Altinn's hour-long lock-out.
    pub async fn add_agent(&self, firm: &Firm, person: &PersonInput) -> Result<Assignment> {
        self.call(&firm.org_number, "add agent", paths::AGENTS_POST, |c, e| {
            c.request(e).query(&[("party", firm.party)]).json(person)
        })
        .await
    }

    /// Removes the person as the firm's agent (204 also when they were none). `cascade` is
    /// always sent, as Altinn's code and documentation disagree on its default; with `false`
    /// Altinn refuses while the person still holds any package from the firm.
    pub async fn remove_agent(&self, firm: &Firm, agent: Uuid, cascade: bool) -> Result<()> {
        self.send(
            None,
            &firm.org_number,
            "remove agent",
            paths::AGENTS_DELETE,
            |c, e| {
                c.request(e).query(&[
                    ("party", firm.party.to_string()),
                    ("to", agent.to_string()),
                    ("cascade", cascade.to_string()),
                ])
            },
        )
        .await
        .map(drop)
    }

    /// The clients and packages the agent holds from the firm.
    pub async fn agent_packages(&self, firm: &Firm, agent: Uuid) -> Result<Vec<ClientAccess>> {
        self.list(
            &firm.org_number,
            "agent packages",
            paths::DELEGATIONS,
            |c, e| c.request(e).query(&[("party", firm.party), ("to", agent)]),
        )
        .await
    }

    /// Delegates packages from the client to the agent via the firm; idempotent per package.
    pub async fn delegate(
        &self,
        firm: &Firm,
        client: Uuid,
        agent: Uuid,
        batch: &DelegationBatch,
    ) -> Result<Vec<Delegation>> {
        self.change(None, Change::Delegate, firm, (client, agent), batch)
            .await
    }

    /// Revokes packages; already absent ones come back with `changed = false`.
    pub async fn revoke(
        &self,
        firm: &Firm,
        client: Uuid,
        agent: Uuid,
        batch: &DelegationBatch,
    ) -> Result<Vec<Delegation>> {
        self.change(None, Change::Revoke, firm, (client, agent), batch)
            .await
    }

    /// Waits for a place within the call limit, for [`Self::change`]: a caller that must check
    /// something once its call may go out (the outbox's lease) takes the place first.
    pub async fn reserve(&self) -> CallPermit<'_> {
        self.pace.acquire().await
    }

    /// [`Self::delegate`] or [`Self::revoke`] of the client's packages to the agent (`parties`:
    /// client, agent), in the place `reserved` holds (a second send after a 401 waits anew),
    /// or in one it waits for.
    pub async fn change(
        &self,
        reserved: Option<CallPermit<'_>>,
        change: Change,
        firm: &Firm,
        (client, agent): (Uuid, Uuid),
        batch: &DelegationBatch,
    ) -> Result<Vec<Delegation>> {
        let (endpoint, operation) = match change {
            Change::Delegate => (paths::DELEGATIONS_POST, "delegate"),
            Change::Revoke => (paths::DELEGATIONS_DELETE, "revoke"),
        };
        let body = self
            .send(reserved, &firm.org_number, operation, endpoint, |c, e| {
                c.request(e)
                    .query(&[("party", firm.party), ("from", client), ("to", agent)])
                    .json(batch)
            })
            .await?;
        decode(operation, &body)
    }

    fn request(&self, endpoint: Endpoint) -> RequestBuilder {
        self.http.request(
            endpoint.http_method(),
            format!("{}{}", self.base_url, endpoint.route),
        )
    }

    /// Every page of a list, following `links.next`. A page that fails fails the whole list:
    /// a partial list read as the whole one would make the reconcile forget agents.
    async fn list<T, F>(
        &self,
        org_number: &str,
        operation: &'static str,
        endpoint: Endpoint,
        first: F,
    ) -> Result<Vec<T>>
    where
        T: DeserializeOwned,
        F: Fn(&Self, Endpoint) -> RequestBuilder,
    {
        let mut page: Paginated<T> = self.call(org_number, operation, endpoint, first).await?;
        let mut all = std::mem::take(&mut page.data);
        let mut pages = 1;
        while let Some(next) = page.links.next.take().filter(|n| !n.is_empty()) {
            pages += 1;
            if pages > MAX_PAGES {
                return Err(Error::Paging {
                    operation,
                    reason: format!("more than {MAX_PAGES} pages"),
                });
            }
            // `next` may be absolute or relative to the base URL.
            let url = if next.starts_with("http://") || next.starts_with("https://") {
                next
            } else {
                format!("{}{next}", self.base_url)
            };
            page = self
                .call(org_number, operation, endpoint, |c, _| {
                    c.http.get(url.as_str())
                })
                .await?;
            all.append(&mut page.data);
        }
        Ok(all)
    }

    /// [`Self::send`], then reads the answer as JSON.
    async fn call<T, F>(
        &self,
        org_number: &str,
        operation: &'static str,
        endpoint: Endpoint,
        build: F,
    ) -> Result<T>
    where
        T: DeserializeOwned,
        F: Fn(&Self, Endpoint) -> RequestBuilder,
    {
        let body = self
            .send(None, org_number, operation, endpoint, build)
            .await?;
        decode(operation, &body)
    }

    /// Sends with the firm's token, in the `reserved` place or one it waits for; on 401
    /// refreshes the token once and sends again.
    async fn send<F>(
        &self,
        mut reserved: Option<CallPermit<'_>>,
        org_number: &str,
        operation: &'static str,
        endpoint: Endpoint,
        build: F,
    ) -> Result<Vec<u8>>
    where
        F: Fn(&Self, Endpoint) -> RequestBuilder,
    {
        let mut refreshed = false;
        loop {
            let token = self.tokens.token(org_number).await?;
            let request = build(self, endpoint).bearer_auth(token.expose());
            let permit = match reserved.take() {
                Some(permit) => permit,
                None => self.pace.acquire().await,
            };
            let started = Instant::now();
            let answer = http::send(endpoint, Some(org_number), request).await;
            let answer = match answer {
                Ok(answer) => answer,
                Err(e) => {
                    permit
                        .finish(Feedback::Overloaded { retry_after: None })
                        .await;
                    return Err(e);
                }
            };
            let classified = classify(answer.status, &answer.headers, &answer.body);
            permit
                .finish(feedback(answer.status, &classified, started.elapsed()))
                .await;
            match classified {
                Err(Error::Token) if !refreshed => {
                    tracing::info!(
                        firm = org_number,
                        operation,
                        "Altinn answered 401; refreshing the token"
                    );
                    self.tokens.invalidate(org_number).await;
                    refreshed = true;
                }
                Err(err) => return Err(err),
                Ok(()) => return Ok(answer.body),
            }
        }
    }
}

/// Which way a [`AltinnClient::change`] goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Delegate,
    Revoke,
}

fn decode<T: DeserializeOwned>(operation: &'static str, body: &[u8]) -> Result<T> {
    serde_json::from_slice(body).map_err(|source| Error::Decode { operation, source })
}

/// What an answer says of Altinn's load: a 429 that is not the person-lookup lock-out, a 503,
/// and no answer at all (a timeout, a dropped connection) say it is at capacity; any other
/// answer gives a latency.
fn feedback(status: StatusCode, classified: &Result<()>, took: Duration) -> Feedback {
    match classified {
        Err(Error::Transient { retry_after, .. })
            if status == StatusCode::TOO_MANY_REQUESTS
                || status == StatusCode::SERVICE_UNAVAILABLE =>
        {
            Feedback::Overloaded {
                retry_after: *retry_after,
            }
        }
        _ => Feedback::Answered(took),
    }
}
