//! Applying a batch of events to the facts, in one transaction, with sequence guards.
//!
//! # Guarantees
//! - A fact changes only when an event's sequence is newer than the one that last changed it, so
//!   duplicates, late and reordered events are harmless, and the order of events inside a batch
//!   does not matter: each fact keeps the newest value.
//! - Batches that touch the same firm are serialised by a row lock on `firms`, so the incremental
//!   refresh of `desired_grants` always sees every committed fact it depends on.
//! - `desired_grants` changes in the same transaction as the facts.

use std::collections::{BTreeSet, HashMap, HashSet};

use sqlx::PgConnection;
use uuid::Uuid;

use super::Result;
use super::desired::{RefreshKeys, refresh_desired};
use crate::contract::{Client, Employee, Event, EventBody};

#[derive(Debug, Clone, Copy)]
pub struct ApplyOptions {
    /// An event this far below its firm's high-water mark is treated as a sign that AdminFlow
    /// was restored from a backup: it is dead-lettered and reported, not silently ignored.
    pub regression_threshold: i64,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct ApplyOutcome {
    /// New events recorded as processed (whether or not they changed a fact).
    pub applied: usize,
    /// Events already processed, in this batch or before.
    pub duplicates: usize,
    /// Indices into the input of events refused as sequence regressions.
    pub regressed: Vec<usize>,
    /// Indices into the input of events refused because their firm is on hold after an
    /// earlier regression.
    pub held: Vec<usize>,
}

/// The newest value seen for one fact in this batch.
struct Newest<T> {
    sequence: i64,
    value: T,
}

fn keep_newest<K: std::hash::Hash + Eq, T>(
    map: &mut HashMap<K, Newest<T>>,
    key: K,
    sequence: i64,
    value: T,
) {
    match map.get(&key) {
        Some(n) if n.sequence >= sequence => {}
        _ => {
            map.insert(key, Newest { sequence, value });
        }
    }
}

type EmployeeKey = (String, Uuid);
type PairKey = (String, Uuid, String);

#[derive(Default)]
struct Facts<'a> {
    identities: HashMap<EmployeeKey, Newest<&'a Employee>>,
    roles: HashMap<EmployeeKey, Newest<&'a [String]>>,
    assignments: HashMap<PairKey, Newest<bool>>,
    clients: HashMap<(String, String), Newest<&'a str>>,
    slots: HashMap<(String, String), Newest<Option<Uuid>>>,
}

impl<'a> Facts<'a> {
    fn add(&mut self, e: &'a Event) {
        let firm = e.firm.as_str();
        let seq = e.sequence;
        match &e.body {
            EventBody::ClientAssigned { employee, client } => {
                self.identity(firm, seq, employee);
                self.client(firm, seq, client);
                let key = (firm.to_owned(), employee.id, client.org_number.to_string());
                keep_newest(&mut self.assignments, key, seq, true);
            }
            EventBody::ClientRemoved {
                employee_id,
                client_org_number,
            } => {
                let key = (firm.to_owned(), *employee_id, client_org_number.to_string());
                keep_newest(&mut self.assignments, key, seq, false);
            }
            EventBody::RoleChanged { employee, roles } => {
                self.identity(firm, seq, employee);
                keep_newest(
                    &mut self.roles,
                    (firm.to_owned(), employee.id),
                    seq,
                    roles.as_slice(),
                );
            }
            EventBody::ProjectAccountantChanged {
                client, employee, ..
            } => {
                self.client(firm, seq, client);
                if let Some(employee) = employee {
                    self.identity(firm, seq, employee);
                }
                let key = (firm.to_owned(), client.org_number.to_string());
                keep_newest(&mut self.slots, key, seq, employee.as_ref().map(|e| e.id));
            }
        }
    }

    fn identity(&mut self, firm: &str, seq: i64, employee: &'a Employee) {
        keep_newest(
            &mut self.identities,
            (firm.to_owned(), employee.id),
            seq,
            employee,
        );
    }

    fn client(&mut self, firm: &str, seq: i64, client: &'a Client) {
        let key = (firm.to_owned(), client.org_number.to_string());
        keep_newest(&mut self.clients, key, seq, client.name.as_str());
    }
}

/// Applies `events` inside the caller's transaction.
///
/// # Errors
/// [`super::Error::Refused`] when PostgreSQL rejects the data; the caller splits the batch to
/// find the event at fault.
pub async fn apply_events(
    conn: &mut PgConnection,
    events: &[&Event],
    opts: &ApplyOptions,
) -> Result<ApplyOutcome> {
    let mut outcome = ApplyOutcome::default();
    if events.is_empty() {
        return Ok(outcome);
    }
    let firms: Vec<String> = events
        .iter()
        .map(|e| e.firm.to_string())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    // Lock order for every writer: role_mapping, then firms. A mapping rebuild takes
    // role_mapping exclusively, so it waits for batches in flight rather than deadlocking.
    sqlx::query("LOCK TABLE role_mapping IN ACCESS SHARE MODE")
        .execute(&mut *conn)
        .await?;
    // Raised as the batch is read, so a regression is caught whether or not it shares a batch
    // with the events it falls behind.
    let (mut high_water, held) = lock_firms(conn, &firms).await?;

    // Duplicates need no lookup before applying: a repeated event carries a sequence that is
    // not newer than the facts it set, so it changes nothing. `record_processed` counts them.
    let mut in_batch = HashSet::new();
    let mut accepted = Vec::with_capacity(events.len());
    let mut suspects = Vec::new();
    for (i, e) in events.iter().enumerate() {
        if !in_batch.insert((e.firm.as_str(), e.id)) {
            outcome.duplicates += 1;
            continue;
        }
        if held.contains(e.firm.as_str()) {
            outcome.held.push(i);
            continue;
        }
        let hwm = high_water.entry(e.firm.to_string()).or_insert(-1);
        if hwm.saturating_sub(e.sequence) > opts.regression_threshold {
            suspects.push((i, *hwm));
            continue;
        }
        *hwm = (*hwm).max(e.sequence);
        accepted.push(i);
    }
    // A redelivery of an event processed long ago is a duplicate, not a regression.
    let seen = already_processed(conn, suspects.iter().map(|&(i, _)| events[i])).await?;
    let mut regressions = Vec::new();
    for (i, hwm) in suspects {
        let e = events[i];
        if seen.contains(&(e.firm.to_string(), e.id)) {
            outcome.duplicates += 1;
            continue;
        }
        tracing::error!(
            firm = %e.firm, event.id = %e.id, event.sequence = e.sequence,
            firm.high_water_sequence = hwm,
            "sequence regression: the event is far below the firm's high-water mark; \
             AdminFlow may have been restored from a backup. The event is dead-lettered; \
             see `altinn-sync resequence --help`"
        );
        regressions.push((e.firm.to_string(), e.id, e.sequence, hwm));
        outcome.regressed.push(i);
    }
    record_regressions(conn, &regressions).await?;
    // Later events of a regressed firm would be judged against facts from another lineage:
    // hold them too, in this batch and after, until an operator decides. Events queued before
    // the regression belong to the old lineage and are applied.
    let mut first_regression: HashMap<&str, usize> = HashMap::new();
    for &i in &outcome.regressed {
        first_regression.entry(events[i].firm.as_str()).or_insert(i);
    }
    let (accepted, later): (Vec<usize>, Vec<usize>) = accepted.into_iter().partition(|&i| {
        first_regression
            .get(events[i].firm.as_str())
            .is_none_or(|&r| i < r)
    });
    outcome.held.extend(later);
    let accepted: Vec<&Event> = accepted.into_iter().map(|i| events[i]).collect();

    let mut facts = Facts::default();
    for e in &accepted {
        facts.add(e);
    }
    let mut keys = RefreshKeys::default();
    upsert_identities(conn, &facts).await?;
    upsert_clients(conn, &facts).await?;
    keys.employees = upsert_roles(conn, &facts).await?;
    keys.pairs = upsert_assignments(conn, &facts).await?;
    keys.pairs.extend(upsert_slots(conn, &facts).await?);
    refresh_desired(conn, keys).await?;
    raise_high_water(conn, &accepted).await?;
    let new = record_processed(conn, &accepted).await?;
    outcome.applied = new;
    outcome.duplicates += accepted.len() - new;
    Ok(outcome)
}

/// Creates unseen firms and locks every firm in the batch, in a fixed order to avoid deadlocks.
/// Returns each firm's high-water mark, and the firms on hold.
async fn lock_firms(
    conn: &mut PgConnection,
    firms: &[String],
) -> Result<(HashMap<String, i64>, HashSet<String>)> {
    sqlx::query(
        r#"INSERT INTO firms (org_number, high_water_sequence)
           SELECT f, -1 FROM unnest($1::text[]) AS f
           ON CONFLICT DO NOTHING"#,
    )
    .bind(firms)
    .execute(&mut *conn)
    .await?;
    let rows: Vec<(String, i64, bool)> = sqlx::query_as(
        r#"SELECT org_number, high_water_sequence, held_since IS NOT NULL FROM firms
           WHERE org_number = ANY($1) ORDER BY org_number FOR UPDATE"#,
    )
    .bind(firms)
    .fetch_all(&mut *conn)
    .await?;
    let held = rows.iter().filter(|r| r.2).map(|r| r.0.clone()).collect();
    Ok((rows.into_iter().map(|(f, h, _)| (f, h)).collect(), held))
}

async fn already_processed<'a>(
    conn: &mut PgConnection,
    events: impl Iterator<Item = &'a Event>,
) -> Result<HashSet<(String, Uuid)>> {
    let (firms, ids): (Vec<&str>, Vec<Uuid>) = events.map(|e| (e.firm.as_str(), e.id)).unzip();
    if ids.is_empty() {
        return Ok(HashSet::new());
    }
    let rows: Vec<(String, Uuid)> = sqlx::query_as(
        r#"SELECT p.firm, p.event_id FROM processed_events p
           JOIN unnest($1::text[], $2::uuid[]) AS k(firm, event_id)
             ON p.firm = k.firm AND p.event_id = k.event_id"#,
    )
    .bind(&firms)
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.into_iter().collect())
}

async fn record_regressions(
    conn: &mut PgConnection,
    rows: &[(String, Uuid, i64, i64)],
) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let (firms, ids, seqs, hwms): (Vec<_>, Vec<_>, Vec<_>, Vec<_>) = unzip4(rows);
    sqlx::query(
        r#"WITH hold AS (
               UPDATE firms SET held_since = now()
               WHERE org_number = ANY($1) AND held_since IS NULL
           )
           INSERT INTO sequence_regressions (firm, event_id, sequence, high_water_sequence)
           SELECT * FROM unnest($1::text[], $2::uuid[], $3::bigint[], $4::bigint[])"#,
    )
    .bind(firms)
    .bind(ids)
    .bind(seqs)
    .bind(hwms)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn upsert_identities(conn: &mut PgConnection, facts: &Facts<'_>) -> Result<()> {
    if facts.identities.is_empty() {
        return Ok(());
    }
    let n = facts.identities.len();
    let (mut firms, mut ids, mut nins, mut names, mut seqs) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for ((firm, id), newest) in &facts.identities {
        firms.push(firm.as_str());
        ids.push(*id);
        nins.push(newest.value.national_identity_number.expose());
        names.push(newest.value.last_name.as_str());
        seqs.push(newest.sequence);
    }
    sqlx::query(
        r#"INSERT INTO employee_identities
               (firm, employee_id, national_identity_number, last_name, sequence)
           SELECT * FROM unnest($1::text[], $2::uuid[], $3::text[], $4::text[], $5::bigint[])
           ON CONFLICT (firm, employee_id) DO UPDATE
           SET national_identity_number = excluded.national_identity_number,
               last_name = excluded.last_name,
               sequence = excluded.sequence,
               updated_at = now(),
               identity_changed_at = CASE
                   WHEN (employee_identities.national_identity_number, employee_identities.last_name)
                        IS DISTINCT FROM (excluded.national_identity_number, excluded.last_name)
                   THEN now() ELSE employee_identities.identity_changed_at END
           WHERE employee_identities.sequence < excluded.sequence"#,
    )
    .bind(firms)
    .bind(ids)
    .bind(nins)
    .bind(names)
    .bind(seqs)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn upsert_clients(conn: &mut PgConnection, facts: &Facts<'_>) -> Result<()> {
    if facts.clients.is_empty() {
        return Ok(());
    }
    let mut firms = Vec::with_capacity(facts.clients.len());
    let mut orgs = Vec::with_capacity(facts.clients.len());
    let mut names = Vec::with_capacity(facts.clients.len());
    let mut seqs = Vec::with_capacity(facts.clients.len());
    for ((firm, org), newest) in &facts.clients {
        firms.push(firm.as_str());
        orgs.push(org.as_str());
        names.push(newest.value);
        seqs.push(newest.sequence);
    }
    sqlx::query(
        r#"INSERT INTO clients (firm, org_number, name, sequence)
           SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[])
           ON CONFLICT (firm, org_number) DO UPDATE
           SET name = excluded.name, sequence = excluded.sequence, updated_at = now()
           WHERE clients.sequence < excluded.sequence"#,
    )
    .bind(firms)
    .bind(orgs)
    .bind(names)
    .bind(seqs)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Returns the employees whose role set actually changed.
async fn upsert_roles(conn: &mut PgConnection, facts: &Facts<'_>) -> Result<Vec<EmployeeKey>> {
    if facts.roles.is_empty() {
        return Ok(Vec::new());
    }
    let mut firms = Vec::with_capacity(facts.roles.len());
    let mut ids = Vec::with_capacity(facts.roles.len());
    let mut roles = Vec::with_capacity(facts.roles.len());
    let mut seqs = Vec::with_capacity(facts.roles.len());
    for ((firm, id), newest) in &facts.roles {
        firms.push(firm.as_str());
        ids.push(*id);
        // A ragged text[][] cannot be bound, so each role set travels as a JSON array.
        roles.push(serde_json::json!(newest.value));
        seqs.push(newest.sequence);
    }
    let changed = sqlx::query_as(
        r#"INSERT INTO employee_roles (firm, employee_id, roles, sequence)
           SELECT f, e, ARRAY(SELECT jsonb_array_elements_text(r)), s
           FROM unnest($1::text[], $2::uuid[], $3::jsonb[], $4::bigint[]) AS t(f, e, r, s)
           ON CONFLICT (firm, employee_id) DO UPDATE
           SET roles = excluded.roles, sequence = excluded.sequence, updated_at = now()
           WHERE employee_roles.sequence < excluded.sequence
           RETURNING firm, employee_id"#,
    )
    .bind(firms)
    .bind(ids)
    .bind(roles)
    .bind(seqs)
    .fetch_all(&mut *conn)
    .await?;
    Ok(changed)
}

/// Returns the (firm, employee, client) assignments that actually changed.
async fn upsert_assignments(conn: &mut PgConnection, facts: &Facts<'_>) -> Result<Vec<PairKey>> {
    if facts.assignments.is_empty() {
        return Ok(Vec::new());
    }
    let n = facts.assignments.len();
    let (mut firms, mut emps, mut clients, mut active, mut seqs) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for ((firm, emp, client), newest) in &facts.assignments {
        firms.push(firm.as_str());
        emps.push(*emp);
        clients.push(client.as_str());
        active.push(newest.value);
        seqs.push(newest.sequence);
    }
    let changed = sqlx::query_as(
        r#"INSERT INTO assignments (firm, employee_id, client_org_number, active, sequence)
           SELECT * FROM unnest($1::text[], $2::uuid[], $3::text[], $4::bool[], $5::bigint[])
           ON CONFLICT (firm, employee_id, client_org_number) DO UPDATE
           SET active = excluded.active, sequence = excluded.sequence, updated_at = now()
           WHERE assignments.sequence < excluded.sequence
           RETURNING firm, employee_id, client_org_number"#,
    )
    .bind(firms)
    .bind(emps)
    .bind(clients)
    .bind(active)
    .bind(seqs)
    .fetch_all(&mut *conn)
    .await?;
    Ok(changed)
}

/// Returns the pairs a moved project-accountant slot affects: the new holder and the old one.
async fn upsert_slots(conn: &mut PgConnection, facts: &Facts<'_>) -> Result<Vec<PairKey>> {
    if facts.slots.is_empty() {
        return Ok(Vec::new());
    }
    let n = facts.slots.len();
    let (mut firms, mut clients, mut emps, mut seqs) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for ((firm, client), newest) in &facts.slots {
        firms.push(firm.as_str());
        clients.push(client.as_str());
        emps.push(newest.value);
        seqs.push(newest.sequence);
    }
    // The old holder comes from the table, not from the event's informational
    // previous_employee_id. The firm lock keeps it stable until the update below.
    let rows: Vec<(String, String, Option<Uuid>, Option<Uuid>)> = sqlx::query_as(
        r#"WITH incoming AS (
               SELECT * FROM unnest($1::text[], $2::text[], $3::uuid[], $4::bigint[])
                   AS t(firm, client_org_number, employee_id, sequence)
           ),
           old AS (
               SELECT p.firm, p.client_org_number, p.employee_id
               FROM project_accountants p JOIN incoming i USING (firm, client_org_number)
           ),
           changed AS (
               INSERT INTO project_accountants (firm, client_org_number, employee_id, sequence)
               SELECT firm, client_org_number, employee_id, sequence FROM incoming
               ON CONFLICT (firm, client_org_number) DO UPDATE
               SET employee_id = excluded.employee_id, sequence = excluded.sequence,
                   updated_at = now()
               WHERE project_accountants.sequence < excluded.sequence
               RETURNING firm, client_org_number, employee_id
           )
           SELECT c.firm, c.client_org_number, c.employee_id, o.employee_id
           FROM changed c LEFT JOIN old o USING (firm, client_org_number)"#,
    )
    .bind(firms)
    .bind(clients)
    .bind(emps)
    .bind(seqs)
    .fetch_all(&mut *conn)
    .await?;
    let mut pairs = Vec::with_capacity(rows.len() * 2);
    for (firm, client, new, old) in rows {
        for emp in [new, old].into_iter().flatten() {
            pairs.push((firm.clone(), emp, client.clone()));
        }
    }
    Ok(pairs)
}

async fn raise_high_water(conn: &mut PgConnection, accepted: &[&Event]) -> Result<()> {
    let mut max: HashMap<&str, i64> = HashMap::new();
    for e in accepted {
        let m = max.entry(e.firm.as_str()).or_insert(e.sequence);
        *m = (*m).max(e.sequence);
    }
    if max.is_empty() {
        return Ok(());
    }
    let (firms, seqs): (Vec<&str>, Vec<i64>) = max.into_iter().unzip();
    sqlx::query(
        r#"UPDATE firms SET high_water_sequence = GREATEST(high_water_sequence, v.s),
                            updated_at = now()
           FROM unnest($1::text[], $2::bigint[]) AS v(f, s)
           WHERE firms.org_number = v.f"#,
    )
    .bind(firms)
    .bind(seqs)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Records the events as processed; returns how many were new.
async fn record_processed(conn: &mut PgConnection, accepted: &[&Event]) -> Result<usize> {
    if accepted.is_empty() {
        return Ok(0);
    }
    let firms: Vec<&str> = accepted.iter().map(|e| e.firm.as_str()).collect();
    let ids: Vec<Uuid> = accepted.iter().map(|e| e.id).collect();
    let types: Vec<&str> = accepted.iter().map(|e| e.body.type_name()).collect();
    let seqs: Vec<i64> = accepted.iter().map(|e| e.sequence).collect();
    let at: Vec<_> = accepted.iter().map(|e| e.occurred_at).collect();
    let inserted = sqlx::query(
        r#"INSERT INTO processed_events (firm, event_id, event_type, sequence, occurred_at)
           SELECT * FROM unnest($1::text[], $2::uuid[], $3::text[], $4::bigint[],
                                $5::timestamptz[])
           ON CONFLICT DO NOTHING"#,
    )
    .bind(firms)
    .bind(ids)
    .bind(types)
    .bind(seqs)
    .bind(at)
    .execute(&mut *conn)
    .await?;
    Ok(usize::try_from(inserted.rows_affected()).unwrap_or(usize::MAX))
}

#[allow(clippy::type_complexity)]
fn unzip4<A: Clone, B: Clone, C: Clone, D: Clone>(
    rows: &[(A, B, C, D)],
) -> (Vec<A>, Vec<B>, Vec<C>, Vec<D>) {
    let mut out = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (a, b, c, d) in rows {
        out.0.push(a.clone());
        out.1.push(b.clone());
        out.2.push(c.clone());
        out.3.push(d.clone());
    }
    out
}
