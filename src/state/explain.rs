//! "Why is my Altinn access missing?": everything the desired state knows about one employee,
//! so support staff can answer from the system itself.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use super::Result;

/// One employee's facts and what they imply. Holds no identity number.
#[derive(Debug, Serialize)]
pub struct Explanation {
    pub firm: String,
    pub employee_id: Uuid,
    /// Whether the firm is held after a sequence regression (its events are not applied).
    pub firm_held_since: Option<DateTime<Utc>>,
    /// Whether Altinn refused the firm's system user and its flush is paused.
    pub flush_pause: Option<FlushPause>,
    /// Until when Altinn locks the firm out of person lookups (429 AM-00026).
    pub agent_lookups_locked_until: Option<DateTime<Utc>>,
    pub identity: Option<Identity>,
    pub roles: Option<Roles>,
    pub clients: Vec<ClientFacts>,
    /// Dead-lettered messages for the firm, which may include this employee's.
    pub firm_dead_letters: i64,
}

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct FlushPause {
    pub since: DateTime<Utc>,
    /// The next try; a sync-now or `altinn-sync retry` tries at once.
    pub until: Option<DateTime<Utc>>,
    pub reason: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Identity {
    pub last_name: String,
    pub sequence: i64,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Serialize)]
pub struct Roles {
    /// Each role with the package it maps to, or `None` for a role that grants nothing.
    pub roles: Vec<(String, Option<String>)>,
    pub sequence: i64,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, sqlx::FromRow)]
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
    /// Changes on their way to Altinn: "grant regnskapsforer-lonn", "revoke ...".
    pub pending_changes: Vec<String>,
    /// Changes Altinn refused for good, with the explanation.
    pub parked_changes: Vec<String>,
}

/// Gathers the explanation; `None` when the firm has never been seen.
pub async fn explain(pool: &PgPool, firm: &str, employee: Uuid) -> Result<Option<Explanation>> {
    type FirmRow = (
        Option<DateTime<Utc>>,
        Option<DateTime<Utc>>,
        Option<DateTime<Utc>>,
        Option<String>,
        Option<DateTime<Utc>>,
    );
    let firm_row: Option<FirmRow> = sqlx::query_as(
        r#"SELECT held_since, flush_paused_at, flush_paused_until, flush_pause_reason,
                  agent_lookups_locked_until
           FROM firms WHERE org_number = $1"#,
    )
    .bind(firm)
    .fetch_optional(pool)
    .await?;
    let Some((firm_held_since, paused_at, paused_until, pause_reason, locked_until)) = firm_row
    else {
        return Ok(None);
    };
    let flush_pause = paused_at.map(|since| FlushPause {
        since,
        until: paused_until,
        reason: pause_reason,
    });
    let agent_lookups_locked_until = locked_until.filter(|t| *t > Utc::now());
    let identity = sqlx::query_as::<_, (String, i64, DateTime<Utc>)>(
        r#"SELECT last_name, sequence, updated_at FROM employee_identities
           WHERE firm = $1 AND employee_id = $2"#,
    )
    .bind(firm)
    .bind(employee)
    .fetch_optional(pool)
    .await?
    .map(|(last_name, sequence, updated_at)| Identity {
        last_name,
        sequence,
        updated_at,
    });
    let roles = sqlx::query_as::<_, (Vec<String>, Vec<Option<String>>, i64, DateTime<Utc>)>(
        r#"SELECT coalesce(array_agg(u.role ORDER BY ord) FILTER (WHERE u.role IS NOT NULL), '{}'),
                  coalesce(array_agg(m.package ORDER BY ord) FILTER (WHERE u.role IS NOT NULL), '{}'),
                  r.sequence, r.updated_at
           FROM employee_roles r
           LEFT JOIN LATERAL unnest(r.roles) WITH ORDINALITY AS u(role, ord) ON true
           LEFT JOIN role_mapping m USING (role)
           WHERE r.firm = $1 AND r.employee_id = $2
           GROUP BY r.sequence, r.updated_at"#,
    )
    .bind(firm)
    .bind(employee)
    .fetch_optional(pool)
    .await?
    .map(|(names, packages, sequence, updated_at)| Roles {
        roles: names.into_iter().zip(packages).collect(),
        sequence,
        updated_at,
    });
    let clients = sqlx::query_as::<_, ClientFacts>(
        r#"WITH keys AS (
               SELECT client_org_number FROM assignments WHERE firm = $1 AND employee_id = $2
               UNION
               SELECT client_org_number FROM project_accountants
               WHERE firm = $1 AND employee_id = $2
               UNION
               SELECT client_org_number FROM applied_grants WHERE firm = $1 AND employee_id = $2
           )
           SELECT k.client_org_number, c.name AS client_name,
                  a.active AS assigned, a.sequence AS assignment_sequence,
                  a.updated_at AS assignment_updated_at,
                  EXISTS (SELECT 1 FROM project_accountants p
                          WHERE p.firm = $1 AND p.client_org_number = k.client_org_number
                            AND p.employee_id = $2) AS project_accountant,
                  ARRAY(SELECT d.package FROM desired_grants d
                        WHERE d.firm = $1 AND d.employee_id = $2
                          AND d.client_org_number = k.client_org_number
                        ORDER BY d.package) AS desired_packages,
                  ARRAY(SELECT a.package FROM applied_grants a
                        WHERE a.firm = $1 AND a.employee_id = $2
                          AND a.client_org_number = k.client_org_number
                        ORDER BY a.package) AS applied_packages,
                  ARRAY(SELECT o.action || ' ' || o.package FROM outbox o
                        WHERE o.firm = $1 AND o.employee_id = $2
                          AND o.client_org_number = k.client_org_number
                          AND o.status = 'pending'
                        ORDER BY o.id) AS pending_changes,
                  ARRAY(SELECT o.action || ' ' || o.package || ': ' || coalesce(o.explanation, '')
                        FROM outbox o
                        WHERE o.firm = $1 AND o.employee_id = $2
                          AND o.client_org_number = k.client_org_number
                          AND o.status = 'parked'
                        ORDER BY o.id) AS parked_changes
           FROM keys k
           LEFT JOIN assignments a
             ON a.firm = $1 AND a.employee_id = $2 AND a.client_org_number = k.client_org_number
           LEFT JOIN clients c ON c.firm = $1 AND c.org_number = k.client_org_number
           ORDER BY k.client_org_number"#,
    )
    .bind(firm)
    .bind(employee)
    .fetch_all(pool)
    .await?;
    let firm_dead_letters: i64 =
        sqlx::query_scalar("SELECT count(*) FROM dead_letters WHERE firm = $1")
            .bind(firm)
            .fetch_one(pool)
            .await?;
    Ok(Some(Explanation {
        firm: firm.to_owned(),
        employee_id: employee,
        firm_held_since,
        flush_pause,
        agent_lookups_locked_until,
        identity,
        roles,
        clients,
        firm_dead_letters,
    }))
}

fn when(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%SZ").to_string()
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "Firm {}, employee {}", self.firm, self.employee_id)?;
        match &self.firm_held_since {
            None => writeln!(f, "  Firm: events are applied normally")?,
            Some(t) => writeln!(
                f,
                "  Firm: ON HOLD since {} after a sequence regression; its events are dead-lettered \
                 until an operator runs `altinn-sync resequence --firm {}`",
                when(t),
                self.firm
            )?,
        }
        if let Some(p) = &self.flush_pause {
            writeln!(
                f,
                "  Altinn flush: PAUSED since {}: {}; next try {}, or at once on a sync-now or \
                 `altinn-sync retry --firm {}`",
                when(&p.since),
                p.reason
                    .as_deref()
                    .unwrap_or("Altinn refused the firm's system user"),
                p.until.as_ref().map_or_else(|| "now".to_owned(), when),
                self.firm
            )?;
        }
        if let Some(t) = &self.agent_lookups_locked_until {
            writeln!(
                f,
                "  Altinn person lookups: locked out until {} after too many failed lookups \
                 (AM-00026; Altinn counts them per calling user, possibly with other firms' \
                 lookups); new employees are made agents after that",
                when(t)
            )?;
        }
        match &self.identity {
            Some(i) => writeln!(
                f,
                "  Identity: last name {} (sequence {}, {})",
                i.last_name,
                i.sequence,
                when(&i.updated_at)
            )?,
            None => writeln!(
                f,
                "  Identity: unknown; no event carrying this employee has arrived"
            )?,
        }
        match &self.roles {
            None => writeln!(
                f,
                "  Roles: none received; without a RoleChanged event the employee gets no access"
            )?,
            Some(r) if r.roles.is_empty() => writeln!(
                f,
                "  Roles: an empty set (sequence {}, {}): no access",
                r.sequence,
                when(&r.updated_at)
            )?,
            Some(r) => {
                writeln!(
                    f,
                    "  Roles (sequence {}, {}):",
                    r.sequence,
                    when(&r.updated_at)
                )?;
                for (role, package) in &r.roles {
                    match package {
                        Some(p) => writeln!(f, "    {role} -> {p}")?,
                        None => writeln!(f, "    {role} -> no Altinn package")?,
                    }
                }
            }
        }
        if self.clients.is_empty() {
            writeln!(
                f,
                "  Clients: none; the employee is not assigned to any client, nor project accountant"
            )?;
        } else {
            writeln!(f, "  Clients:")?;
        }
        for c in &self.clients {
            let mut facts = Vec::new();
            match (c.assigned, c.assignment_sequence, &c.assignment_updated_at) {
                (Some(true), Some(seq), Some(t)) => {
                    facts.push(format!("assigned (sequence {seq}, {})", when(t)))
                }
                (Some(false), Some(seq), Some(t)) => {
                    facts.push(format!("removed (sequence {seq}, {})", when(t)))
                }
                _ => {}
            }
            if c.project_accountant {
                facts.push("project accountant".to_owned());
            }
            let access = if c.desired_packages.is_empty() {
                "no access".to_owned()
            } else {
                format!("should hold {}", c.desired_packages.join(", "))
            };
            writeln!(
                f,
                "    {} {}: {} -> {access}",
                c.client_org_number,
                c.client_name.as_deref().unwrap_or(""),
                facts.join("; ")
            )?;
            if !c.applied_packages.is_empty() {
                writeln!(f, "      in Altinn: {}", c.applied_packages.join(", "))?;
            }
            for change in &c.pending_changes {
                writeln!(f, "      on its way to Altinn: {change}")?;
            }
            for change in &c.parked_changes {
                writeln!(f, "      refused by Altinn: {change}")?;
            }
        }
        writeln!(
            f,
            "  Dead letters for this firm: {} (see `altinn-sync dead-letters --firm {}`)",
            self.firm_dead_letters, self.firm
        )?;
        write!(
            f,
            "  Altinn changes only on a sync (`altinn-sync sync --firm {0}`); \
             `altinn-sync parked --firm {0}` lists refused changes",
            self.firm
        )
    }
}
