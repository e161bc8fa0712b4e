//! The nightly reconcile: read what Altinn actually holds, count the drift, and let the normal
//! flush repair it.
//!
//! # Guarantees
//! - Only packages in the role mapping, on persons this worker made agents for the firm, are
//!   compared and repaired. Packages outside the mapping are never touched; mapped packages on
//!   persons AdminFlow does not know are reported, not revoked.

use std::collections::{HashMap, HashSet};

use sqlx::PgPool;
use uuid::Uuid;

use super::dispatch::{Dispatcher, PACKAGE_URN};
use super::plan::{plan_flush, Planned};
use super::Result;
use crate::altinn;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Reconciled {
    /// Desired but missing in Altinn.
    pub missing: u64,
    /// In Altinn but not desired.
    pub extra: u64,
    /// Mapped packages on agents this worker does not know.
    pub unknown: u64,
    pub planned: Planned,
}

pub enum ReadError {
    Altinn(crate::altinn::Error),
    Database(crate::state::Error),
}

/// Reconciles one firm: Altinn's actual state becomes `applied_grants`, then the delta is
/// planned as for a sync-now.
pub async fn reconcile_firm(
    pool: &PgPool,
    dispatcher: &Dispatcher,
    firm: &str,
    cause: Uuid,
) -> std::result::Result<Reconciled, ReadError> {
    let actual = actual(dispatcher, firm).await.map_err(ReadError::Altinn)?;
    apply_actual(pool, firm, cause, &actual)
        .await
        .map_err(ReadError::Database)
}

async fn apply_actual(
    pool: &PgPool,
    firm: &str,
    cause: Uuid,
    actual: &[(Uuid, String, String)],
) -> Result<Reconciled> {
    let mut tx = pool.begin().await?;
    let agents: HashMap<Uuid, Uuid> = sqlx::query_as::<_, (Uuid, Uuid)>(
        "SELECT agent_party, employee_id FROM altinn_agents WHERE firm = $1",
    )
    .bind(firm)
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .collect();
    let managed: HashSet<String> = sqlx::query_scalar("SELECT package FROM role_mapping")
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .collect();
    let mut outcome = Reconciled::default();
    let (mut emps, mut clients, mut packages) = (Vec::new(), Vec::new(), Vec::new());
    for (agent, client, package) in actual {
        if !managed.contains(package) {
            continue;
        }
        match agents.get(agent) {
            Some(employee) => {
                emps.push(*employee);
                clients.push(client.clone());
                packages.push(package.clone());
            }
            None => outcome.unknown += 1,
        }
    }
    // Drift, counted against what the facts want, before the actual state replaces ours.
    let (missing, extra): (i64, i64) = sqlx::query_as(
        r#"WITH actual AS (
               SELECT * FROM unnest($2::uuid[], $3::text[], $4::text[])
                   AS a(employee_id, client_org_number, package)
           )
           SELECT (SELECT count(*) FROM desired_grants d WHERE d.firm = $1 AND NOT EXISTS (
                       SELECT 1 FROM actual a WHERE a.employee_id = d.employee_id
                         AND a.client_org_number = d.client_org_number AND a.package = d.package)),
                  (SELECT count(*) FROM actual a WHERE NOT EXISTS (
                       SELECT 1 FROM desired_grants d WHERE d.firm = $1
                         AND d.employee_id = a.employee_id
                         AND d.client_org_number = a.client_org_number AND d.package = a.package))"#,
    )
    .bind(firm)
    .bind(&emps)
    .bind(&clients)
    .bind(&packages)
    .fetch_one(&mut *tx)
    .await?;
    outcome.missing = missing as u64;
    outcome.extra = extra as u64;
    sqlx::query("DELETE FROM applied_grants WHERE firm = $1")
        .bind(firm)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        r#"INSERT INTO applied_grants (firm, employee_id, client_org_number, package)
           SELECT $1, * FROM unnest($2::uuid[], $3::text[], $4::text[])
           ON CONFLICT DO NOTHING"#,
    )
    .bind(firm)
    .bind(&emps)
    .bind(&clients)
    .bind(&packages)
    .execute(&mut *tx)
    .await?;
    outcome.planned = plan_flush(&mut tx, firm, cause).await?;
    tx.commit().await?;
    if outcome.unknown > 0 {
        tracing::warn!(
            firm,
            packages = outcome.unknown,
            "Altinn shows mapped packages on persons AdminFlow does not know; left alone"
        );
    }
    Ok(outcome)
}

/// The packages Altinn shows on the firm's agents, for reconciling: (agent party, client
/// org number, package without its URN prefix), for every package a role carries.
async fn actual(dispatcher: &Dispatcher, org: &str) -> altinn::Result<Vec<(Uuid, String, String)>> {
    let firm = dispatcher.firm(org).await?;
    let mut out = Vec::new();
    for agent in dispatcher.altinn().agents(&firm).await? {
        let agent_party = agent.agent.id;
        for client in dispatcher
            .altinn()
            .agent_packages(&firm, agent_party)
            .await?
        {
            let Some(client_org) = client.client.organization_identifier.clone() else {
                continue;
            };
            for access in client.access {
                for package in access.packages {
                    let Some(urn) = package.urn else { continue };
                    let name = urn.strip_prefix(PACKAGE_URN).unwrap_or(&urn).to_owned();
                    out.push((agent_party, client_org.clone(), name));
                }
            }
        }
    }
    Ok(out)
}
