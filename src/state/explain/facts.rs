//! What the store knows of the firm and of one employee: identity, roles and clients.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use super::package::PackageFacts;
use crate::state::Result;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FlushPause {
    pub since: DateTime<Utc>,
    /// The next try; a sync-now or `altinn-sync retry` tries at once.
    pub until: Option<DateTime<Utc>>,
    pub reason: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Identity {
    pub last_name: String,
    pub sequence: i64,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Roles {
    /// Each role with the package it maps to, or `None` for a role that grants nothing.
    pub roles: Vec<RoleMapped>,
    pub sequence: i64,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RoleMapped {
    pub role: String,
    /// The Altinn access package the role gives, or null.
    pub package: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ClientFacts {
    pub client_org_number: String,
    pub client_name: Option<String>,
    /// `Some(true)` assigned, `Some(false)` removed (a tombstone), `None` never assigned.
    pub assigned: Option<bool>,
    pub assignment_sequence: Option<i64>,
    pub assignment_updated_at: Option<DateTime<Utc>>,
    pub project_accountant: bool,
    pub desired_packages: Vec<String>,
    /// Packages Altinn has confirmed (empty when the flush is off).
    pub applied_packages: Vec<String>,
    /// Each package wanted, held, on its way or refused, with its state (what is on its way
    /// and what Altinn refused, and why, are here).
    pub packages: Vec<PackageFacts>,
}

/// What stops or slows the whole firm, whoever the employee.
pub(super) struct FirmState {
    pub held_since: Option<DateTime<Utc>>,
    pub flush_pause: Option<FlushPause>,
    /// Only while it lasts.
    pub agent_lookups_locked_until: Option<DateTime<Utc>>,
}

/// `None` when the firm has never been seen.
pub(super) async fn firm(pool: &PgPool, firm: &str) -> Result<Option<FirmState>> {
    let row = sqlx::query!(
        r#"SELECT held_since, flush_paused_at, flush_paused_until, flush_pause_reason,
                  agent_lookups_locked_until
           FROM firms WHERE org_number = $1"#,
        firm
    )
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|row| FirmState {
        held_since: row.held_since,
        flush_pause: row.flush_paused_at.map(|since| FlushPause {
            since,
            until: row.flush_paused_until,
            reason: row.flush_pause_reason,
        }),
        agent_lookups_locked_until: row.agent_lookups_locked_until.filter(|t| *t > Utc::now()),
    }))
}

pub(super) async fn identity(
    pool: &PgPool,
    firm: &str,
    employee: Uuid,
) -> Result<Option<Identity>> {
    let identity = sqlx::query_as!(
        Identity,
        r#"SELECT last_name, sequence, updated_at FROM employee_identities
           WHERE firm = $1 AND employee_id = $2"#,
        firm,
        employee
    )
    .fetch_optional(pool)
    .await?;
    Ok(identity)
}

/// The employee's roles in the order AdminFlow sent them, each with the package it maps to.
pub(super) async fn roles(pool: &PgPool, firm: &str, employee: Uuid) -> Result<Option<Roles>> {
    let row = sqlx::query!(
        r#"SELECT coalesce(array_agg(u.role ORDER BY ord) FILTER (WHERE u.role IS NOT NULL), '{}')
                      AS "names!",
                  coalesce(array_agg(m.package ORDER BY ord) FILTER (WHERE u.role IS NOT NULL), '{}')
                      AS "packages!: Vec<Option<String>>",
                  r.sequence, r.updated_at
           FROM employee_roles r
           LEFT JOIN LATERAL unnest(r.roles) WITH ORDINALITY AS u(role, ord) ON true
           LEFT JOIN role_mapping m USING (role)
           WHERE r.firm = $1 AND r.employee_id = $2
           GROUP BY r.sequence, r.updated_at"#,
        firm,
        employee
    )
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|row| Roles {
        roles: row
            .names
            .into_iter()
            .zip(row.packages)
            .map(|(role, package)| RoleMapped { role, package })
            .collect(),
        sequence: row.sequence,
        updated_at: row.updated_at,
    }))
}

/// Every client the employee works with, worked with, holds access for, or has a change on
/// its way for; their packages are left for `package` to fill in.
pub(super) async fn clients(pool: &PgPool, firm: &str, employee: Uuid) -> Result<Vec<ClientFacts>> {
    let rows = sqlx::query!(
        r#"WITH keys AS (
               SELECT client_org_number FROM assignments WHERE firm = $1 AND employee_id = $2
               UNION
               SELECT client_org_number FROM project_accountants
               WHERE firm = $1 AND employee_id = $2
               UNION
               SELECT client_org_number FROM applied_grants WHERE firm = $1 AND employee_id = $2
               UNION
               -- So every package `package::packages` finds has its client here.
               SELECT client_org_number FROM outbox
               WHERE firm = $1 AND employee_id = $2 AND status IN ('pending', 'staged', 'parked')
           )
           SELECT k.client_org_number AS "client_org_number!", c.name AS "client_name?",
                  a.active AS "assigned?", a.sequence AS "assignment_sequence?",
                  a.updated_at AS "assignment_updated_at?",
                  EXISTS (SELECT 1 FROM project_accountants p
                          WHERE p.firm = $1 AND p.client_org_number = k.client_org_number
                            AND p.employee_id = $2) AS "project_accountant!",
                  ARRAY(SELECT d.package FROM desired_grants d
                        WHERE d.firm = $1 AND d.employee_id = $2
                          AND d.client_org_number = k.client_org_number
                        ORDER BY d.package) AS "desired_packages!",
                  ARRAY(SELECT a.package FROM applied_grants a
                        WHERE a.firm = $1 AND a.employee_id = $2
                          AND a.client_org_number = k.client_org_number
                        ORDER BY a.package) AS "applied_packages!"
           FROM keys k
           LEFT JOIN assignments a
             ON a.firm = $1 AND a.employee_id = $2 AND a.client_org_number = k.client_org_number
           LEFT JOIN clients c ON c.firm = $1 AND c.org_number = k.client_org_number
           ORDER BY k.client_org_number"#,
        firm,
        employee
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| ClientFacts {
            client_org_number: row.client_org_number,
            client_name: row.client_name,
            assigned: row.assigned,
            assignment_sequence: row.assignment_sequence,
            assignment_updated_at: row.assignment_updated_at,
            project_accountant: row.project_accountant,
            desired_packages: row.desired_packages,
            applied_packages: row.applied_packages,
            packages: Vec::new(),
        })
        .collect())
}

/// Dead letters of the whole firm: a message that never parsed names no employee.
pub(super) async fn dead_letters(pool: &PgPool, firm: &str) -> Result<i64> {
    let count = sqlx::query_scalar!(
        r#"SELECT count(*) AS "count!" FROM dead_letters WHERE firm = $1"#,
        firm
    )
    .fetch_one(pool)
    .await?;
    Ok(count)
}
