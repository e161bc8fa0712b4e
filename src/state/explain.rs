//! "Why is my Altinn access missing?": everything the desired state knows about one employee,
//! so support staff can answer from the system itself.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use super::Result;

/// What `explain` must know of the worker: whether it flushes, and whether revokes are on.
#[derive(Debug, Clone, Copy)]
pub struct ExplainMode {
    pub flush_on: bool,
    pub revokes_enabled: bool,
}

/// One employee's facts and what they imply. Holds no identity number.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Explanation {
    pub firm: String,
    pub employee_id: Uuid,
    /// The answer in one line of plain words.
    pub verdict: String,
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

#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
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

/// Where one package stands for one client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PackageState {
    HasAccess,
    WaitingForSync,
    OnItsWay,
    Refused,
    RemovalWaitingForSync,
    RemovalOnItsWay,
    RemovalHeld,
    RemovalRefused,
    FlushOff,
    None,
}

/// One package of one client: its state, since when, and why.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PackageFacts {
    pub package: String,
    pub state: PackageState,
    pub since: Option<DateTime<Utc>>,
    /// Altinn's error code, for a refusal.
    pub code: Option<String>,
    pub reason: Option<String>,
    /// This package's state in plain words.
    pub verdict: String,
}

#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
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
    #[sqlx(skip)]
    pub packages: Vec<PackageFacts>,
}

#[derive(sqlx::FromRow)]
struct PackageRow {
    client_org_number: String,
    package: String,
    wanted: bool,
    applied_at: Option<DateTime<Utc>>,
    open_action: Option<String>,
    open_status: Option<String>,
    open_since: Option<DateTime<Utc>>,
    parked_action: Option<String>,
    parked_at: Option<DateTime<Utc>>,
    parked_reason: Option<String>,
    parked_code: Option<String>,
}

impl PackageRow {
    fn facts(self, mode: ExplainMode) -> PackageFacts {
        use PackageState as S;
        let held = self.applied_at.is_some();
        let (state, since, code, reason) =
            match (self.open_action.as_deref(), self.open_status.as_deref()) {
                _ if !mode.flush_on && (self.wanted || held) => (
                    S::FlushOff,
                    None,
                    None,
                    Some(
                        "the worker runs without the Altinn settings: nothing is sent to Altinn"
                            .to_owned(),
                    ),
                ),
                (Some("grant"), _) => (S::OnItsWay, self.open_since, None, None),
                (Some(_), Some("staged")) => (
                    S::RemovalHeld,
                    self.open_since,
                    None,
                    Some(
                        "staged by the mass-revoke guard: an administrator approves or rejects it"
                            .to_owned(),
                    ),
                ),
                (Some(_), _) if !mode.revokes_enabled => (
                    S::RemovalHeld,
                    self.open_since,
                    None,
                    Some("held by the kill switch: REVOKES_ENABLED is false".to_owned()),
                ),
                (Some(_), _) => (S::RemovalOnItsWay, self.open_since, None, None),
                (None, _) => match (self.wanted, held, self.parked_action.as_deref()) {
                    (true, true, _) => (S::HasAccess, self.applied_at, None, None),
                    (true, false, Some("grant")) => (
                        S::Refused,
                        self.parked_at,
                        self.parked_code,
                        self.parked_reason,
                    ),
                    (true, false, _) => (S::WaitingForSync, None, None, None),
                    (false, true, Some("revoke")) => (
                        S::RemovalRefused,
                        self.parked_at,
                        self.parked_code,
                        self.parked_reason,
                    ),
                    (false, true, _) => (S::RemovalWaitingForSync, None, None, None),
                    (false, false, _) => (S::None, None, None, None),
                },
            };
        let (p, c) = (&self.package, &self.client_org_number);
        let at = |t: &Option<DateTime<Utc>>| {
            t.as_ref().map_or_else(String::new, |t| {
                format!(" since {}", t.format("%Y-%m-%d %H:%M"))
            })
        };
        let why = reason
            .as_deref()
            .map_or_else(String::new, |r| format!(": {r}"));
        let verdict = match state {
            S::HasAccess => format!("has {p} for {c}{}", at(&since)),
            S::WaitingForSync => format!("will be granted {p} for {c} at the next sync"),
            S::OnItsWay => format!("{p} for {c} is on its way to Altinn"),
            S::Refused => format!("Altinn refused {p} for {c}{why}"),
            S::RemovalWaitingForSync => format!("{p} for {c} will be removed at the next sync"),
            S::RemovalOnItsWay => format!("the removal of {p} for {c} is on its way to Altinn"),
            S::RemovalHeld => format!("the removal of {p} for {c} is held{why}"),
            S::RemovalRefused => format!("Altinn refused to remove {p} for {c}{why}"),
            S::FlushOff => format!("{p} for {c} is not sent{why}"),
            S::None => format!("no {p} for {c}"),
        };
        PackageFacts {
            package: self.package,
            state,
            since,
            code,
            reason,
            verdict,
        }
    }
}

/// Gathers the explanation; `None` when the firm has never been seen.
pub async fn explain(
    pool: &PgPool,
    firm: &str,
    employee: Uuid,
    mode: ExplainMode,
) -> Result<Option<Explanation>> {
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
        roles: names
            .into_iter()
            .zip(packages)
            .map(|(role, package)| RoleMapped { role, package })
            .collect(),
        sequence,
        updated_at,
    });
    let mut clients = sqlx::query_as::<_, ClientFacts>(
        r#"WITH keys AS (
               SELECT client_org_number FROM assignments WHERE firm = $1 AND employee_id = $2
               UNION
               SELECT client_org_number FROM project_accountants
               WHERE firm = $1 AND employee_id = $2
               UNION
               SELECT client_org_number FROM applied_grants WHERE firm = $1 AND employee_id = $2
               UNION
               -- So every package the second query finds has its client here.
               SELECT client_org_number FROM outbox
               WHERE firm = $1 AND employee_id = $2 AND status IN ('pending', 'staged', 'parked')
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
                        ORDER BY a.package) AS applied_packages
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
    let packages: Vec<PackageRow> = sqlx::query_as(
        r#"WITH k AS (
               SELECT client_org_number, package FROM desired_grants
               WHERE firm = $1 AND employee_id = $2
               UNION
               SELECT client_org_number, package FROM applied_grants
               WHERE firm = $1 AND employee_id = $2
               UNION
               SELECT client_org_number, package FROM outbox
               WHERE firm = $1 AND employee_id = $2 AND status IN ('pending', 'staged', 'parked')
           )
           SELECT k.client_org_number, k.package,
                  EXISTS (SELECT 1 FROM desired_grants d
                          WHERE d.firm = $1 AND d.employee_id = $2
                            AND d.client_org_number = k.client_org_number
                            AND d.package = k.package) AS wanted,
                  a.applied_at, o.action AS open_action, o.status AS open_status,
                  o.created_at AS open_since, p.action AS parked_action,
                  p.finished_at AS parked_at,
                  regexp_replace(p.explanation, '^[A-Z][A-Z.]*-[0-9]+: ', '') AS parked_reason,
                  substring(p.explanation FROM '^([A-Z][A-Z.]*-[0-9]+): ') AS parked_code
           FROM k
           LEFT JOIN applied_grants a
             ON a.firm = $1 AND a.employee_id = $2 AND a.client_org_number = k.client_org_number
            AND a.package = k.package
           LEFT JOIN LATERAL (
               SELECT action, status, created_at FROM outbox
               WHERE firm = $1 AND employee_id = $2 AND client_org_number = k.client_org_number
                 AND package = k.package AND status IN ('pending', 'staged')
               ORDER BY id DESC LIMIT 1) o ON true
           LEFT JOIN LATERAL (
               SELECT action, finished_at, explanation FROM outbox
               WHERE firm = $1 AND employee_id = $2 AND client_org_number = k.client_org_number
                 AND package = k.package AND status = 'parked'
               ORDER BY id DESC LIMIT 1) p ON true
           ORDER BY k.client_org_number, k.package"#,
    )
    .bind(firm)
    .bind(employee)
    .fetch_all(pool)
    .await?;
    for row in packages {
        if let Some(c) = clients
            .iter_mut()
            .find(|c| c.client_org_number == row.client_org_number)
        {
            c.packages.push(row.facts(mode));
        }
    }
    let firm_dead_letters: i64 =
        sqlx::query_scalar("SELECT count(*) FROM dead_letters WHERE firm = $1")
            .bind(firm)
            .fetch_one(pool)
            .await?;
    let verdict = verdict(
        firm_held_since.is_some(),
        flush_pause.as_ref(),
        roles.as_ref(),
        &clients,
    );
    Ok(Some(Explanation {
        firm: firm.to_owned(),
        employee_id: employee,
        verdict,
        firm_held_since,
        flush_pause,
        agent_lookups_locked_until,
        identity,
        roles,
        clients,
        firm_dead_letters,
    }))
}

/// The whole answer in one line: what blocks everything first, then each package, problems
/// before what is fine.
fn verdict(
    held: bool,
    pause: Option<&FlushPause>,
    roles: Option<&Roles>,
    clients: &[ClientFacts],
) -> String {
    use PackageState as S;
    let mut packages: Vec<&PackageFacts> = clients.iter().flat_map(|c| &c.packages).collect();
    packages.retain(|p| p.state != S::None);
    if packages.is_empty() {
        let why = match roles {
            _ if held => "the firm's events are on hold after a sequence regression",
            None => "no role has been received from AdminFlow for this employee",
            Some(r) if r.roles.iter().all(|m| m.package.is_none()) => {
                "the employee's roles give no Altinn access package"
            }
            Some(_) if clients.is_empty() => "the employee works with no client",
            Some(_) => "nothing is wanted for the employee's clients",
        };
        return format!("has no Altinn access: {why}");
    }
    let rank = |s: S| match s {
        S::Refused | S::RemovalRefused => 0,
        S::RemovalHeld | S::FlushOff => 1,
        S::WaitingForSync | S::RemovalWaitingForSync => 2,
        S::OnItsWay | S::RemovalOnItsWay => 3,
        S::HasAccess | S::None => 4,
    };
    packages.sort_by_key(|p| rank(p.state));
    let mut line = packages
        .iter()
        .map(|p| p.verdict.as_str())
        .collect::<Vec<_>>()
        .join("; ");
    if let Some(p) = pause {
        line.insert_str(
            0,
            &format!(
                "the firm's flush is paused ({}); ",
                p.reason
                    .as_deref()
                    .unwrap_or("Altinn refused the system user")
            ),
        );
    }
    if held {
        line.insert_str(
            0,
            "the firm's events are on hold after a sequence regression; ",
        );
    }
    line
}

fn when(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%SZ").to_string()
}

fn serde_plain(state: PackageState) -> String {
    serde_json::to_value(state)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "Firm {}, employee {}", self.firm, self.employee_id)?;
        writeln!(f, "  Verdict: {}", self.verdict)?;
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
                for RoleMapped { role, package } in &r.roles {
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
            for p in &c.packages {
                writeln!(f, "      {}: {}", serde_plain(p.state), p.verdict)?;
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
