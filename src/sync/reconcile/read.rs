//! Reading a firm's actual state from Altinn, and adopting agents given access by hand.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use sqlx::PgPool;
use uuid::Uuid;

use crate::altinn;
use crate::altinn::wire::CompactEntity;
use crate::sync::Result;
use crate::sync::dispatch::{Dispatcher, PACKAGE_URN};

use super::report::LeftAlone;

/// What reading one firm found, besides the grants written to `reconcile_actual`.
pub(super) struct FirmRead {
    /// When it was read, by the database's clock.
    pub(super) at: DateTime<Utc>,
    /// Mapped packages on persons AdminFlow does not know.
    pub(super) unknown: u64,
    pub(super) adopted: u64,
    pub(super) left_alone: Vec<LeftAlone>,
}

/// Reads one firm's actual delegations into `reconcile_actual`, as (employee, client, package)
/// for the mapped packages on the agents this worker manages, adopting the known employees
/// among the agents given access by hand. The outer error is our database's.
pub(super) async fn read_firm(
    pool: &PgPool,
    dispatcher: &Dispatcher,
    org: &str,
    cause: Uuid,
    managed: &HashSet<String>,
) -> Result<altinn::Result<FirmRead>> {
    // By the database's clock, which also stamps deliveries (`finished_at`) and agents
    // (`added_at`): a delivery recorded after this may not show in the reading.
    let read_at = sqlx::query_scalar!(r#"SELECT clock_timestamp() AS "read_at!""#)
        .fetch_one(pool)
        .await?;
    let actual = match actual(dispatcher, org).await {
        Ok(actual) => actual,
        Err(e) => return Ok(Err(e)),
    };
    let mut agents = managed_agents(pool, org).await?;
    forget_gone(pool, dispatcher, org, &actual.agents, read_at).await?;
    // The agents Altinn lists that this worker does not manage, with their identities.
    let (parties, identities): (Vec<Uuid>, Vec<String>) = actual
        .agents
        .iter()
        .filter(|a| !agents.contains_key(&a.id))
        .filter_map(|a| Some((a.id, a.person_identifier.clone()?)))
        .unzip();
    let adopted = adopt(pool, org, parties, identities).await?;
    let adopted_count = adopted.len() as u64;
    agents.extend(adopted);
    let (held, strangers) = sort_packages(actual.packages, managed, &agents);
    write_actual(pool, cause, org, held).await?;
    Ok(Ok(FirmRead {
        at: read_at,
        unknown: strangers.values().sum(),
        adopted: adopted_count,
        left_alone: left_alone(org, &actual.agents, &strangers),
    }))
}

/// The firm's agents this worker manages: employee by agent party.
async fn managed_agents(pool: &PgPool, org: &str) -> Result<HashMap<Uuid, Uuid>> {
    let agents = sqlx::query!(
        r#"SELECT agent_party, employee_id FROM altinn_agents WHERE firm = $1"#,
        org
    )
    .fetch_all(pool)
    .await?
    .into_iter()
    .map(|a| (a.agent_party, a.employee_id))
    .collect();
    Ok(agents)
}

/// Forgets the agents removed in Altinn (by hand, or a simulator that started empty), so the
/// next grant adds the person again. One added since the read began (`read_at`) is kept.
async fn forget_gone(
    pool: &PgPool,
    dispatcher: &Dispatcher,
    org: &str,
    listed: &[CompactEntity],
    read_at: DateTime<Utc>,
) -> Result<()> {
    let listed: Vec<Uuid> = listed.iter().map(|a| a.id).collect();
    let gone = sqlx::query_scalar!(
        r#"DELETE FROM altinn_agents
           WHERE firm = $1 AND agent_party <> ALL($2) AND added_at < $3
           RETURNING employee_id"#,
        org,
        &listed,
        read_at
    )
    .fetch_all(pool)
    .await?;
    for employee in gone {
        dispatcher.forget_agent(org, employee);
    }
    Ok(())
}

/// A mapped package an employee this worker manages holds: (employee, client org number,
/// package).
type Held = (Uuid, String, String);

/// Sorts the mapped packages Altinn lists into those held by the managed `agents`, as
/// (employee, client, package), and a count of packages per agent this worker does not know.
/// Packages outside the mapping are left out.
fn sort_packages(
    packages: Vec<(Uuid, String, String)>,
    managed: &HashSet<String>,
    agents: &HashMap<Uuid, Uuid>,
) -> (Vec<Held>, HashMap<Uuid, u64>) {
    let mut held = Vec::with_capacity(packages.len());
    let mut strangers: HashMap<Uuid, u64> = HashMap::new();
    for (agent, client, package) in packages {
        if !managed.contains(&package) {
            continue;
        }
        match agents.get(&agent) {
            Some(employee) => held.push((*employee, client, package)),
            None => *strangers.entry(agent).or_default() += 1,
        }
    }
    (held, strangers)
}

/// The persons holding mapped packages whom AdminFlow does not know (`strangers`), by party.
fn left_alone(
    org: &str,
    agents: &[CompactEntity],
    strangers: &HashMap<Uuid, u64>,
) -> Vec<LeftAlone> {
    let mut left_alone: Vec<LeftAlone> = agents
        .iter()
        .filter_map(|a| {
            strangers.get(&a.id).map(|&packages| LeftAlone {
                firm: org.to_owned(),
                party: a.id,
                name: a.name.clone(),
                packages,
            })
        })
        .collect();
    left_alone.sort_by_key(|p| p.party);
    left_alone
}

/// Writes what the firm's employees hold to `reconcile_actual`.
async fn write_actual(pool: &PgPool, cause: Uuid, org: &str, mut held: Vec<Held>) -> Result<()> {
    // A package Altinn lists twice (under two roles, say) is held once.
    held.sort_unstable();
    held.dedup();
    let (mut employees, mut clients, mut packages) = (
        Vec::with_capacity(held.len()),
        Vec::with_capacity(held.len()),
        Vec::with_capacity(held.len()),
    );
    for (employee, client, package) in held {
        employees.push(employee);
        clients.push(client);
        packages.push(package);
    }
    sqlx::query!(
        r#"INSERT INTO reconcile_actual (command_id, firm, employee_id, client_org_number, package)
           SELECT $1, $2, * FROM unnest($3::uuid[], $4::text[], $5::text[])"#,
        cause,
        org,
        &employees,
        &clients,
        &packages
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Adopts the agents Altinn lists (`parties`, with their `identities`) that this worker does
/// not manage yet and whose `personIdentifier` is a known employee of the firm: they join
/// `altinn_agents`, as if this worker had added them. Returns (agent party, employee) of each.
pub(super) async fn adopt(
    pool: &PgPool,
    org: &str,
    parties: Vec<Uuid>,
    identities: Vec<String>,
) -> Result<Vec<(Uuid, Uuid)>> {
    if parties.is_empty() {
        return Ok(Vec::new());
    }
    // An employee already managed under another party keeps it (ON CONFLICT): Altinn lists
    // one party per person, so that row is the newer one, added since the read.
    let adopted = sqlx::query!(
        r#"INSERT INTO altinn_agents (firm, employee_id, agent_party)
           SELECT DISTINCT ON (a.party) $1, e.employee_id, a.party
           FROM unnest($2::uuid[], $3::text[]) AS a(party, identity)
           JOIN employee_identities e
             ON e.firm = $1 AND e.national_identity_number = a.identity
           ORDER BY a.party, e.employee_id
           ON CONFLICT (firm, employee_id) DO NOTHING
           RETURNING agent_party, employee_id"#,
        org,
        &parties,
        &identities
    )
    .fetch_all(pool)
    .await?
    .into_iter()
    .map(|a| (a.agent_party, a.employee_id))
    .collect();
    Ok(adopted)
}

pub(super) struct Actual {
    pub(super) agents: Vec<CompactEntity>,
    /// (agent party, client org number, package without its URN prefix).
    pub(super) packages: Vec<(Uuid, String, String)>,
}

/// The firm's agents and every package they hold, the agents read side by side within the
/// flush's limits.
pub(super) async fn actual(dispatcher: &Dispatcher, org: &str) -> altinn::Result<Actual> {
    let firm = dispatcher.firm(org).await?;
    let agents: Vec<CompactEntity> = {
        let _permits = dispatcher.call_permits(org).await;
        dispatcher.altinn().agents(&firm).await?
    }
    .into_iter()
    .map(|a| a.agent)
    .collect();
    // A plain list: a stream over a mapping iterator is a closure held across the awaits, which
    // trips up the compiler's proof that the future is `Send` (rust-lang/rust#102211).
    let ids: Vec<Uuid> = agents.iter().map(|a| a.id).collect();
    let held: Vec<Vec<(Uuid, String, String)>> = futures_util::stream::iter(ids)
        .map(|agent| {
            let firm = &firm;
            async move {
                let _permits = dispatcher.call_permits(org).await;
                let clients = dispatcher.altinn().agent_packages(firm, agent).await?;
                let mut out = Vec::new();
                for client in clients {
                    let Some(client_org) = client.client.organization_identifier else {
                        continue;
                    };
                    for package in client.access.into_iter().flat_map(|a| a.packages) {
                        let Some(urn) = package.urn else { continue };
                        let name = urn.strip_prefix(PACKAGE_URN).unwrap_or(&urn).to_owned();
                        out.push((agent, client_org.clone(), name));
                    }
                }
                Ok::<_, altinn::Error>(out)
            }
        })
        .buffer_unordered(dispatcher.settings().flush_concurrency_per_firm.max(1))
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<altinn::Result<_>>()?;
    Ok(Actual {
        agents,
        packages: held.into_iter().flatten().collect(),
    })
}
