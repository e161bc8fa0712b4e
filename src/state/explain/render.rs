//! The explanation as `altinn-sync explain` prints it.

use std::fmt;

use chrono::{DateTime, Utc};

use super::explanation::Explanation;
use super::facts::{ClientFacts, Identity, RoleMapped, Roles};
use super::package::PackageState;

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
        self.write_firm(f)?;
        write_identity(f, self.identity.as_ref())?;
        write_roles(f, self.roles.as_ref())?;
        if self.clients.is_empty() {
            writeln!(
                f,
                "  Clients: none; the employee is not assigned to any client, nor project accountant"
            )?;
        } else {
            writeln!(f, "  Clients:")?;
        }
        for c in &self.clients {
            write_client(f, c)?;
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

impl Explanation {
    /// What holds up the whole firm: a hold, a paused flush, a lookup lock-out.
    fn write_firm(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
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
        Ok(())
    }
}

fn write_identity(f: &mut fmt::Formatter<'_>, identity: Option<&Identity>) -> fmt::Result {
    match identity {
        Some(i) => writeln!(
            f,
            "  Identity: last name {} (sequence {}, {})",
            i.last_name,
            i.sequence,
            when(&i.updated_at)
        ),
        None => writeln!(
            f,
            "  Identity: unknown; no event carrying this employee has arrived"
        ),
    }
}

fn write_roles(f: &mut fmt::Formatter<'_>, roles: Option<&Roles>) -> fmt::Result {
    match roles {
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
    Ok(())
}

/// The client's line (why the employee works with it, what they should hold), then what
/// Altinn holds and each package's state.
fn write_client(f: &mut fmt::Formatter<'_>, c: &ClientFacts) -> fmt::Result {
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
    Ok(())
}
