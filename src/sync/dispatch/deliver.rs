//! One Altinn call per group of rows: the firm and client parties, the agent, the call, and
//! one more try after a refusal a stale cache could explain.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use uuid::Uuid;

use super::Result;
use super::dispatcher::{Dispatcher, PACKAGE_URN, closed, database, permanent};
use super::locked::Locked;
use super::row::{GroupKey, People, Person, Row, Verdict};
use crate::altinn::wire::PersonInput;
use crate::altinn::{self, Change, Class, Firm};
use crate::policy::Action;

impl Dispatcher {
    /// What delivering to the claimed rows' employees needs, in one query: the agent party if
    /// the person is one already, else the identity to add them with.
    pub(super) async fn people(&self, rows: &[Row]) -> Result<People> {
        let (firms, employees): (Vec<&str>, Vec<Uuid>) = rows
            .iter()
            .map(|r| (r.firm.as_str(), r.employee_id))
            .unzip();
        let found = sqlx::query!(
            r#"SELECT k.firm AS "firm!", k.employee_id AS "employee_id!",
                      a.agent_party AS "agent_party?",
                      e.national_identity_number AS "national_identity_number?",
                      e.last_name AS "last_name?",
                      extract(epoch FROM f.agent_lookups_locked_until - now())::float8
                        AS "locked_secs?"
               FROM (SELECT DISTINCT * FROM unnest($1::text[], $2::uuid[]))
                    AS k(firm, employee_id)
               LEFT JOIN firms f
                      ON f.org_number = k.firm AND f.agent_lookups_locked_until > now()
               LEFT JOIN altinn_agents a
                      ON a.firm = k.firm AND a.employee_id = k.employee_id
               LEFT JOIN employee_identities e
                      ON e.firm = k.firm AND e.employee_id = k.employee_id"#,
            &firms as &[&str],
            &employees
        )
        .fetch_all(&self.pool)
        .await?;
        let mut locks = self.lookup_locks.locked();
        Ok(found
            .into_iter()
            .map(|found| {
                let firm = found.firm;
                if let Some(secs) = found.locked_secs {
                    locks.insert(firm.clone(), Instant::now() + Duration::from_secs_f64(secs));
                }
                let identity = match (found.national_identity_number, found.last_name) {
                    (Some(nin), Some(last_name)) => Some(PersonInput {
                        person_identifier: nin,
                        last_name,
                    }),
                    _ => None,
                };
                let person = match (found.agent_party, identity) {
                    (Some(party), identity) => Person::Agent { party, identity },
                    (None, Some(identity)) => Person::ToAdd(identity),
                    (None, None) => Person::Unknown,
                };
                ((firm, found.employee_id), person)
            })
            .collect())
    }

    /// The per-firm permit for one Altinn call for `firm`, shared with the deliveries; the
    /// limit over all firms is the client's.
    pub(in crate::sync) async fn call_permits(
        &self,
        firm: &str,
    ) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.firm_permit(firm).await.ok()
    }

    pub(super) async fn firm_permit(
        &self,
        firm: &str,
    ) -> Result<tokio::sync::OwnedSemaphorePermit> {
        let limit = self
            .firm_calls
            .locked()
            .entry(firm.to_owned())
            .or_insert_with(|| {
                Arc::new(Semaphore::new(
                    self.settings.flush_concurrency_per_firm.max(1),
                ))
            })
            .clone();
        limit.acquire_owned().await.map_err(|_| closed())
    }

    /// Delivers one group in one call; a batch refused for one package is delivered package
    /// by package, so the others still go through.
    /// Rows whose lease was lost on the way get no verdict: they are another holder's.
    pub(super) async fn deliver_group(
        &self,
        key: &GroupKey<'_>,
        rows: Vec<Row>,
        agent: altinn::Result<Uuid>,
        people: &People,
    ) -> Vec<(Row, Verdict)> {
        let agent = match agent {
            Ok(agent) => agent,
            Err(e) => return self.verdicts(key, rows, &Err(e)).await,
        };
        let (outcome, agent) = self.deliver_fresh(key, &rows, agent, people).await;
        if key.lease.lost() {
            return Vec::new();
        }
        match (outcome, agent) {
            (Err(e), Some(agent)) if e.class() == Class::Permanent && rows.len() > 1 => {
                let mut out = Vec::with_capacity(rows.len());
                for row in rows {
                    let outcome = self.deliver(key, std::slice::from_ref(&row), agent).await;
                    if key.lease.lost() {
                        break;
                    }
                    let verdict = self.verdict(key, &row, &outcome).await;
                    out.push((row, verdict));
                }
                out
            }
            (outcome, _) => self.verdicts(key, rows, &outcome).await,
        }
    }

    /// [`Self::deliver`], and once more after a refusal that stale knowledge could explain:
    /// another replica removed the agent, or the client changed the roles it gave the firm.
    /// Only then is anything parked. Returns the outcome and the agent used last, if any.
    pub(super) async fn deliver_fresh(
        &self,
        key: &GroupKey<'_>,
        rows: &[Row],
        agent: Uuid,
        people: &People,
    ) -> (altinn::Result<Option<String>>, Option<Uuid>) {
        let outcome = self.deliver(key, rows, agent).await;
        let code = match &outcome {
            Err(altinn::Error::Permanent(r)) => r.code.clone(),
            _ => None,
        };
        let stale = matches!(
            code.as_deref(),
            Some(MISSING_ASSIGNMENT | ROLE_LACKS_PACKAGE)
        );
        if !stale {
            return (outcome, Some(agent));
        }
        tracing::info!(firm = %key.firm, client = %key.client, employee.id = %key.employee,
            code = ?code, "Altinn refused what a stale cache could explain; refreshing and trying once more");
        self.parties.forget_clients(key.firm).await;
        let agent = if code.as_deref() == Some(MISSING_ASSIGNMENT) {
            self.agent_again(key, people)
                .await
                .map(|a| a.unwrap_or(agent))
        } else {
            Ok(agent)
        };
        match agent {
            Ok(agent) => (self.deliver(key, rows, agent).await, Some(agent)),
            Err(e) => (Err(e), None),
        }
    }

    /// Makes the employee the firm's agent again, when their identity is known.
    pub(super) async fn agent_again(
        &self,
        key: &GroupKey<'_>,
        people: &People,
    ) -> altinn::Result<Option<Uuid>> {
        let Some(Person::Agent {
            identity: Some(identity),
            ..
        }) = people.get(&(key.firm.to_owned(), key.employee))
        else {
            return Ok(None);
        };
        self.forget_agent(key.firm, key.employee);
        self.parties.forget_agents(key.firm).await;
        let firm = self.firm(key.firm).await?;
        self.agent(&firm, key.employee, identity).await.map(Some)
    }

    /// The employee's agent party: known, or added now (with a permit, as it is a call).
    pub(super) async fn agent_for(
        &self,
        key: &GroupKey<'_>,
        people: &People,
    ) -> altinn::Result<Uuid> {
        match people.get(&(key.firm.to_owned(), key.employee)) {
            Some(Person::Agent { party, .. }) => Ok(*party),
            Some(Person::ToAdd(person)) => {
                let firm = self.firm(key.firm).await?;
                self.agent(&firm, key.employee, person).await
            }
            Some(Person::Unknown) | None => Err(permanent(
                "no identity is known for the employee; AdminFlow has sent none",
            )),
        }
    }

    /// One Altinn call for the group. A revoke of what Altinn no longer holds is done, with a
    /// note why: delegations go with the firm's ER role on the client, and with the agent.
    pub(super) async fn deliver(
        &self,
        key: &GroupKey<'_>,
        rows: &[Row],
        agent: Uuid,
    ) -> altinn::Result<Option<String>> {
        let revoke = key.action == Action::Revoke;
        let firm = self.firm(key.firm).await?;
        let Some(client) = self.parties.client(&self.altinn, &firm, key.client).await? else {
            return if revoke {
                Ok(Some(NO_LONGER_A_CLIENT.to_owned()))
            } else {
                Err(not_a_client(key.client))
            };
        };
        let packages: Vec<String> = rows
            .iter()
            .map(|r| format!("{PACKAGE_URN}{}", r.package))
            .collect();
        let batch = match client.batch(&packages) {
            Ok(batch) => batch,
            Err(_) if revoke => return Ok(Some(NO_ROLE_LEFT.to_owned())),
            Err(uncovered) => {
                return Err(permanent(&format!(
                    "the client has not given the firm a role that lets it delegate {} (roles \
                     given: {})",
                    uncovered.join(", "),
                    client.role_codes().join(", ")
                )));
            }
        };
        // The wait for a place can outlast the lease: another holder may have the rows now.
        let place = self.altinn.reserve().await;
        self.check_lease(key.lease, rows).await?;
        let change = if revoke {
            Change::Revoke
        } else {
            Change::Delegate
        };
        let outcome = self
            .altinn
            .change(Some(place), change, &firm, (client.party, agent), &batch)
            .await;
        match outcome {
            Ok(_) => Ok(None),
            Err(altinn::Error::Permanent(r))
                if revoke && r.code.as_deref() == Some(MISSING_ASSIGNMENT) =>
            {
                Ok(Some(NOT_AN_AGENT.to_owned()))
            }
            Err(e) => Err(e),
        }
    }

    pub(in crate::sync) async fn firm(&self, org: &str) -> altinn::Result<Firm> {
        self.parties.firm(&self.altinn, org).await
    }

    /// Makes the person the firm's agent, once: a lane that waited on the same person uses the
    /// party the first one got. Within Altinn's lock-out no person is looked up at all.
    pub(super) async fn agent(
        &self,
        firm: &Firm,
        employee: Uuid,
        person: &PersonInput,
    ) -> altinn::Result<Uuid> {
        let key = (firm.org_number.clone(), employee);
        let lock = self
            .agent_locks
            .lock()
            .await
            .entry(key.clone())
            .or_default()
            .clone();
        let _one_per_person = lock.lock().await;
        if let Some(agent) = self.added.locked().get(&key) {
            return Ok(*agent);
        }
        // A person Altinn already lists as the firm's agent costs no lookup.
        let permits = self.firm_permit(&firm.org_number);
        let listed = self
            .parties
            .agent_by_identity(&self.altinn, firm, &person.person_identifier, permits)
            .await?;
        if let Some(agent) = listed {
            self.remember_agent(key, agent);
            return Ok(agent);
        }
        let locked_until = self.lookup_locks.locked().get(&firm.org_number).copied();
        if let Some(left) = locked_until.and_then(|t| t.checked_duration_since(Instant::now())) {
            return Err(altinn::Error::LockedOut { retry_after: left });
        }
        let assignment = {
            let _firm = self.firm_permit(&firm.org_number).await;
            self.altinn.add_agent(firm, person).await
        };
        let assignment = match assignment {
            Err(altinn::Error::LockedOut { retry_after }) => {
                return Err(self.locked_out(&firm.org_number, retry_after).await);
            }
            other => other?,
        };
        // Saved with the step's outcomes; should that fail, the next attempt adds the person
        // again, which Altinn answers with the same agent.
        self.remember_agent(key, assignment.to_id);
        Ok(assignment.to_id)
    }

    /// Keeps the agent of (firm, employee) for the lanes that wait on the person, and for the
    /// step's outcomes to save.
    fn remember_agent(&self, key: (String, Uuid), agent: Uuid) {
        self.unsaved_agents
            .locked()
            .push((key.0.clone(), key.1, agent));
        self.added.locked().insert(key, agent);
    }

    /// Altinn's person-lookup lock-out for the firm, kept for every replica and remembered
    /// here, so no person of the firm is looked up until it ends. Returns the error to report.
    async fn locked_out(&self, firm: &str, retry_after: Duration) -> altinn::Error {
        let recorded = sqlx::query!(
            r#"UPDATE firms SET agent_lookups_locked_until = now() + make_interval(secs => $2)
               WHERE org_number = $1"#,
            firm,
            retry_after.as_secs_f64()
        )
        .execute(&self.pool)
        .await;
        if let Err(e) = recorded {
            return database(e);
        }
        self.lookup_locks
            .locked()
            .insert(firm.to_owned(), Instant::now() + retry_after);
        altinn::Error::LockedOut { retry_after }
    }
}

/// Altinn's MissingAssignment: the firm lacks the role on the client, or the person is not
/// the firm's agent.
const MISSING_ASSIGNMENT: &str = "AM.VLD-00032";

/// UserNotAuthorized: the named role does not let the firm delegate the package.
const ROLE_LACKS_PACKAGE: &str = "AM.VLD-00026";

const NO_LONGER_A_CLIENT: &str = "nothing left to revoke: the client no longer lists the firm \
     (its registration as accountant in ER ended), and Altinn removed the delegations with it";

const NO_ROLE_LEFT: &str = "nothing left to revoke: the client no longer gives the firm a role \
     with this package, and Altinn removed the delegations with the role";

const NOT_AN_AGENT: &str = "nothing left to revoke: the person is no longer the firm's agent, \
     and Altinn removed the delegations with the agent";

fn not_a_client(client_org: &str) -> altinn::Error {
    permanent(&format!(
        "{client_org} is not among the firm's clients in Altinn: the firm is not registered as \
         accountant for this client in the Register of Legal Entities"
    ))
}
