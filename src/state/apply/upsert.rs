//! Writing the batch's newest facts, each kind with one statement. A row changes only for a
//! newer sequence than the one it holds.

use sqlx::PgConnection;
use uuid::Uuid;

use std::collections::HashMap;

use super::facts::{EmployeeKey, Facts, Newest, PairKey};
use crate::contract::Employee;
use crate::state::Result;
use crate::state::desired::RefreshKeys;

/// Writes every fact and returns the keys whose desired grants may have changed.
pub(super) async fn write(conn: &mut PgConnection, facts: Facts<'_>) -> Result<RefreshKeys> {
    let Facts {
        identities,
        roles,
        assignments,
        clients,
        slots,
    } = facts;
    upsert_identities(conn, identities).await?;
    upsert_clients(conn, clients).await?;
    let mut keys = RefreshKeys {
        employees: upsert_roles(conn, roles).await?,
        pairs: upsert_assignments(conn, assignments).await?,
    };
    keys.pairs.extend(upsert_slots(conn, slots).await?);
    Ok(keys)
}

async fn upsert_identities(
    conn: &mut PgConnection,
    identities: HashMap<EmployeeKey, Newest<&Employee>>,
) -> Result<()> {
    if identities.is_empty() {
        return Ok(());
    }
    let n = identities.len();
    let (mut firms, mut ids, mut nins, mut names, mut seqs) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for ((firm, id), newest) in identities {
        firms.push(firm);
        ids.push(id);
        nins.push(newest.value.national_identity_number.expose().to_owned());
        names.push(newest.value.last_name.clone());
        seqs.push(newest.sequence);
    }
    sqlx::query!(
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
        &firms,
        &ids,
        &nins,
        &names,
        &seqs
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn upsert_clients(
    conn: &mut PgConnection,
    clients: HashMap<(String, String), Newest<&str>>,
) -> Result<()> {
    if clients.is_empty() {
        return Ok(());
    }
    let mut firms = Vec::with_capacity(clients.len());
    let mut orgs = Vec::with_capacity(clients.len());
    let mut names = Vec::with_capacity(clients.len());
    let mut seqs = Vec::with_capacity(clients.len());
    for ((firm, org), newest) in clients {
        firms.push(firm);
        orgs.push(org);
        names.push(newest.value.to_owned());
        seqs.push(newest.sequence);
    }
    sqlx::query!(
        r#"INSERT INTO clients (firm, org_number, name, sequence)
           SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[])
           ON CONFLICT (firm, org_number) DO UPDATE
           SET name = excluded.name, sequence = excluded.sequence, updated_at = now()
           WHERE clients.sequence < excluded.sequence"#,
        &firms,
        &orgs,
        &names,
        &seqs
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Returns the employees whose role set actually changed.
async fn upsert_roles(
    conn: &mut PgConnection,
    sets: HashMap<EmployeeKey, Newest<&[String]>>,
) -> Result<Vec<EmployeeKey>> {
    if sets.is_empty() {
        return Ok(Vec::new());
    }
    let mut firms = Vec::with_capacity(sets.len());
    let mut ids = Vec::with_capacity(sets.len());
    let mut roles = Vec::with_capacity(sets.len());
    let mut seqs = Vec::with_capacity(sets.len());
    for ((firm, id), newest) in sets {
        firms.push(firm);
        ids.push(id);
        // A ragged text[][] cannot be bound, so each role set travels as a JSON array.
        roles.push(serde_json::json!(newest.value));
        seqs.push(newest.sequence);
    }
    let changed = sqlx::query!(
        r#"INSERT INTO employee_roles (firm, employee_id, roles, sequence)
           SELECT f, e, ARRAY(SELECT jsonb_array_elements_text(r)), s
           FROM unnest($1::text[], $2::uuid[], $3::jsonb[], $4::bigint[]) AS t(f, e, r, s)
           ON CONFLICT (firm, employee_id) DO UPDATE
           SET roles = excluded.roles, sequence = excluded.sequence, updated_at = now()
           WHERE employee_roles.sequence < excluded.sequence
           RETURNING firm, employee_id"#,
        &firms,
        &ids,
        &roles,
        &seqs
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(changed
        .into_iter()
        .map(|r| (r.firm, r.employee_id))
        .collect())
}

/// Returns the (firm, employee, client) assignments that actually changed.
async fn upsert_assignments(
    conn: &mut PgConnection,
    assignments: HashMap<PairKey, Newest<bool>>,
) -> Result<Vec<PairKey>> {
    if assignments.is_empty() {
        return Ok(Vec::new());
    }
    let n = assignments.len();
    let (mut firms, mut emps, mut clients, mut active, mut seqs) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for ((firm, emp, client), newest) in assignments {
        firms.push(firm);
        emps.push(emp);
        clients.push(client);
        active.push(newest.value);
        seqs.push(newest.sequence);
    }
    let changed = sqlx::query!(
        r#"INSERT INTO assignments (firm, employee_id, client_org_number, active, sequence)
           SELECT * FROM unnest($1::text[], $2::uuid[], $3::text[], $4::bool[], $5::bigint[])
           ON CONFLICT (firm, employee_id, client_org_number) DO UPDATE
           SET active = excluded.active, sequence = excluded.sequence, updated_at = now()
           WHERE assignments.sequence < excluded.sequence
           RETURNING firm, employee_id, client_org_number"#,
        &firms,
        &emps,
        &clients,
        &active,
        &seqs
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(changed
        .into_iter()
        .map(|r| (r.firm, r.employee_id, r.client_org_number))
        .collect())
}

/// Returns the pairs a moved project-accountant slot affects: the new holder and the old one.
async fn upsert_slots(
    conn: &mut PgConnection,
    slots: HashMap<(String, String), Newest<Option<Uuid>>>,
) -> Result<Vec<PairKey>> {
    if slots.is_empty() {
        return Ok(Vec::new());
    }
    let n = slots.len();
    let (mut firms, mut clients, mut emps, mut seqs) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for ((firm, client), newest) in slots {
        firms.push(firm);
        clients.push(client);
        emps.push(newest.value);
        seqs.push(newest.sequence);
    }
    // The old holder comes from the table, not from the event's informational
    // previous_employee_id. The firm lock keeps it stable until the update below.
    let rows = sqlx::query!(
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
           SELECT c.firm AS "firm!", c.client_org_number AS "client_org_number!",
                  c.employee_id AS "new_holder?", o.employee_id AS "old_holder?"
           FROM changed c LEFT JOIN old o USING (firm, client_org_number)"#,
        &firms,
        &clients,
        // A slot may be emptied: NULLs in uuid[], which the macro's check does not know.
        &emps as &[Option<Uuid>],
        &seqs
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut pairs = Vec::with_capacity(rows.len() * 2);
    for row in rows {
        for emp in [row.new_holder, row.old_holder].into_iter().flatten() {
            pairs.push((row.firm.clone(), emp, row.client_org_number.clone()));
        }
    }
    Ok(pairs)
}
