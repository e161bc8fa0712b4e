//! Where one package of one client stands: wanted, held, on its way or refused, and why.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::policy::Action;
use crate::state::Result;

/// What `explain` must know of the worker: whether it flushes, and whether revokes are on.
#[derive(Debug, Clone, Copy)]
pub struct ExplainMode {
    pub flush_on: bool,
    pub revokes_enabled: bool,
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

/// Every package the employee is wanted to hold, holds, or has a change on its way or parked
/// for, as (client, facts), ordered by client and package.
pub(super) async fn packages(
    pool: &PgPool,
    firm: &str,
    employee: Uuid,
    mode: ExplainMode,
) -> Result<Vec<(String, PackageFacts)>> {
    let rows = rows(pool, firm, employee).await?;
    Ok(rows.into_iter().map(|row| row.facts(mode)).collect())
}

struct PackageRow {
    client_org_number: String,
    package: String,
    wanted: bool,
    applied_at: Option<DateTime<Utc>>,
    open_action: Option<Action>,
    open_status: Option<String>,
    open_since: Option<DateTime<Utc>>,
    parked_action: Option<Action>,
    parked_at: Option<DateTime<Utc>>,
    parked_reason: Option<String>,
    parked_code: Option<String>,
}

/// Each package with what is wanted, what Altinn holds, the newest change on its way and the
/// newest one Altinn refused (its code split from its reason).
async fn rows(pool: &PgPool, firm: &str, employee: Uuid) -> Result<Vec<PackageRow>> {
    let rows = sqlx::query_as!(
        PackageRow,
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
           SELECT k.client_org_number AS "client_org_number!", k.package AS "package!",
                  EXISTS (SELECT 1 FROM desired_grants d
                          WHERE d.firm = $1 AND d.employee_id = $2
                            AND d.client_org_number = k.client_org_number
                            AND d.package = k.package) AS "wanted!",
                  a.applied_at AS "applied_at?", o.action AS "open_action?: Action",
                  o.status AS "open_status?",
                  o.created_at AS "open_since?", p.action AS "parked_action?: Action",
                  p.finished_at AS "parked_at?",
                  regexp_replace(p.explanation, '^[A-Z][A-Z.]*-[0-9]+: ', '') AS "parked_reason?",
                  substring(p.explanation FROM '^([A-Z][A-Z.]*-[0-9]+): ') AS "parked_code?"
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
        firm,
        employee
    )
    .fetch_all(pool)
    .await?;
    Ok(rows)
}

/// A package's state, since when, and for a refusal Altinn's code and reason.
struct Standing {
    state: PackageState,
    since: Option<DateTime<Utc>>,
    code: Option<String>,
    reason: Option<String>,
}

impl Standing {
    fn at(state: PackageState, since: Option<DateTime<Utc>>) -> Self {
        Self {
            state,
            since,
            code: None,
            reason: None,
        }
    }

    fn held(state: PackageState, since: Option<DateTime<Utc>>, why: &str) -> Self {
        Self {
            reason: Some(why.to_owned()),
            ..Self::at(state, since)
        }
    }
}

impl PackageRow {
    /// The package's facts, with the client they belong to.
    fn facts(self, mode: ExplainMode) -> (String, PackageFacts) {
        let s = self.standing(mode);
        let verdict = sentence(&self.package, &self.client_org_number, &s);
        let facts = PackageFacts {
            package: self.package,
            state: s.state,
            since: s.since,
            code: s.code,
            reason: s.reason,
            verdict,
        };
        (self.client_org_number, facts)
    }

    /// A change on its way decides first; without one, what is wanted against what is held.
    fn standing(&self, mode: ExplainMode) -> Standing {
        use PackageState as S;
        if !mode.flush_on && (self.wanted || self.applied_at.is_some()) {
            return Standing::held(
                S::FlushOff,
                None,
                "the worker runs without the Altinn settings: nothing is sent to Altinn",
            );
        }
        match (self.open_action, self.open_status.as_deref()) {
            (Some(Action::Grant), _) => Standing::at(S::OnItsWay, self.open_since),
            (Some(_), Some("staged")) => Standing::held(
                S::RemovalHeld,
                self.open_since,
                "staged by the mass-revoke guard: an administrator approves or rejects it",
            ),
            (Some(_), _) if !mode.revokes_enabled => Standing::held(
                S::RemovalHeld,
                self.open_since,
                "held by the kill switch: REVOKES_ENABLED is false",
            ),
            (Some(_), _) => Standing::at(S::RemovalOnItsWay, self.open_since),
            (None, _) => self.settled(),
        }
    }

    /// With nothing on its way: what is wanted against what Altinn holds, and any refusal.
    fn settled(&self) -> Standing {
        use PackageState as S;
        let refused = |state| Standing {
            state,
            since: self.parked_at,
            code: self.parked_code.clone(),
            reason: self.parked_reason.clone(),
        };
        let held = self.applied_at.is_some();
        match (self.wanted, held, self.parked_action) {
            (true, true, _) => Standing::at(S::HasAccess, self.applied_at),
            (true, false, Some(Action::Grant)) => refused(S::Refused),
            (true, false, _) => Standing::at(S::WaitingForSync, None),
            (false, true, Some(Action::Revoke)) => refused(S::RemovalRefused),
            (false, true, _) => Standing::at(S::RemovalWaitingForSync, None),
            (false, false, _) => Standing::at(S::None, None),
        }
    }
}

/// The package's state in plain words.
fn sentence(p: &str, c: &str, s: &Standing) -> String {
    use PackageState as S;
    let at = s.since.as_ref().map_or_else(String::new, |t| {
        format!(" since {}", t.format("%Y-%m-%d %H:%M"))
    });
    let why = s
        .reason
        .as_deref()
        .map_or_else(String::new, |r| format!(": {r}"));
    match s.state {
        S::HasAccess => format!("has {p} for {c}{at}"),
        S::WaitingForSync => format!("will be granted {p} for {c} at the next sync"),
        S::OnItsWay => format!("{p} for {c} is on its way to Altinn"),
        S::Refused => format!("Altinn refused {p} for {c}{why}"),
        S::RemovalWaitingForSync => format!("{p} for {c} will be removed at the next sync"),
        S::RemovalOnItsWay => format!("the removal of {p} for {c} is on its way to Altinn"),
        S::RemovalHeld => format!("the removal of {p} for {c} is held{why}"),
        S::RemovalRefused => format!("Altinn refused to remove {p} for {c}{why}"),
        S::FlushOff => format!("{p} for {c} is not sent{why}"),
        S::None => format!("no {p} for {c}"),
    }
}
