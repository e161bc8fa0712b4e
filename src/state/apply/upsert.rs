//! Writing the batch's newest facts, every kind in one statement (one round trip per batch). A
//! row changes only for a newer sequence than the one it holds.

use sqlx::PgConnection;
use uuid::Uuid;

use super::facts::Facts;
use crate::state::Result;
use crate::state::desired::RefreshKeys;

/// The facts as the statement's columns, borrowed from the batch (no copies per row).
#[derive(Default)]
struct Columns<'a> {
    id_firms: Vec<&'a str>,
    id_employees: Vec<Uuid>,
    id_nins: Vec<&'a str>,
    id_names: Vec<&'a str>,
    id_seqs: Vec<i64>,
    client_firms: Vec<&'a str>,
    client_orgs: Vec<&'a str>,
    client_names: Vec<&'a str>,
    client_seqs: Vec<i64>,
    role_firms: Vec<&'a str>,
    role_employees: Vec<Uuid>,
    /// A ragged text[][] cannot be bound, so each role set travels as a JSON array.
    role_sets: Vec<serde_json::Value>,
    role_seqs: Vec<i64>,
    pair_firms: Vec<&'a str>,
    pair_employees: Vec<Uuid>,
    pair_clients: Vec<&'a str>,
    pair_active: Vec<bool>,
    pair_seqs: Vec<i64>,
    slot_firms: Vec<&'a str>,
    slot_clients: Vec<&'a str>,
    slot_holders: Vec<Option<Uuid>>,
    slot_seqs: Vec<i64>,
}

impl<'a> Columns<'a> {
    fn of(facts: Facts<'a>) -> Self {
        let mut c = Self::default();
        for ((firm, id), newest) in facts.identities {
            c.id_firms.push(firm);
            c.id_employees.push(id);
            c.id_nins
                .push(newest.value.national_identity_number.expose());
            c.id_names.push(newest.value.last_name.as_str());
            c.id_seqs.push(newest.sequence);
        }
        for ((firm, org), newest) in facts.clients {
            c.client_firms.push(firm);
            c.client_orgs.push(org);
            c.client_names.push(newest.value);
            c.client_seqs.push(newest.sequence);
        }
        for ((firm, id), newest) in facts.roles {
            c.role_firms.push(firm);
            c.role_employees.push(id);
            c.role_sets.push(serde_json::json!(newest.value));
            c.role_seqs.push(newest.sequence);
        }
        for ((firm, emp, client), newest) in facts.assignments {
            c.pair_firms.push(firm);
            c.pair_employees.push(emp);
            c.pair_clients.push(client);
            c.pair_active.push(newest.value);
            c.pair_seqs.push(newest.sequence);
        }
        for ((firm, client), newest) in facts.slots {
            c.slot_firms.push(firm);
            c.slot_clients.push(client);
            c.slot_holders.push(newest.value);
            c.slot_seqs.push(newest.sequence);
        }
        c
    }
}

/// Writes every fact and returns the keys whose desired grants may have changed: the
/// employees whose role set changed, the assignments that changed, and for a moved
/// project-accountant slot both the new holder and the old one.
// Long because it is one statement over five tables, each bound as columns; splitting it
// costs a round trip per table and batch.
pub(super) async fn write(conn: &mut PgConnection, facts: Facts<'_>) -> Result<RefreshKeys> {
    let c = Columns::of(facts);
    // The old slot holder comes from the table, not from the event's informational
    // previous_employee_id. The firm lock keeps it stable until the update. Every CTE sees the
    // snapshot from before the statement, so `old` reads the holders before `slots` moves them.
    let rows = sqlx::query!(
        r#"WITH identities AS (
               INSERT INTO employee_identities
                   (firm, employee_id, national_identity_number, last_name, sequence)
               SELECT * FROM unnest($1::text[], $2::uuid[], $3::text[], $4::text[], $5::bigint[])
               ON CONFLICT (firm, employee_id) DO UPDATE
               SET national_identity_number = excluded.national_identity_number,
                   last_name = excluded.last_name,
                   sequence = excluded.sequence,
                   updated_at = now(),
                   identity_changed_at = CASE
                       WHEN (employee_identities.national_identity_number,
                             employee_identities.last_name)
                            IS DISTINCT FROM (excluded.national_identity_number, excluded.last_name)
                       THEN now() ELSE employee_identities.identity_changed_at END
               WHERE employee_identities.sequence < excluded.sequence
           ),
           clients AS (
               INSERT INTO clients (firm, org_number, name, sequence)
               SELECT * FROM unnest($6::text[], $7::text[], $8::text[], $9::bigint[])
               ON CONFLICT (firm, org_number) DO UPDATE
               SET name = excluded.name, sequence = excluded.sequence, updated_at = now()
               WHERE clients.sequence < excluded.sequence
           ),
           roles AS (
               INSERT INTO employee_roles (firm, employee_id, roles, sequence)
               SELECT f, e, ARRAY(SELECT jsonb_array_elements_text(r)), s
               FROM unnest($10::text[], $11::uuid[], $12::jsonb[], $13::bigint[]) AS t(f, e, r, s)
               ON CONFLICT (firm, employee_id) DO UPDATE
               SET roles = excluded.roles, sequence = excluded.sequence, updated_at = now()
               WHERE employee_roles.sequence < excluded.sequence
               RETURNING firm, employee_id
           ),
           pairs AS (
               INSERT INTO assignments (firm, employee_id, client_org_number, active, sequence)
               SELECT * FROM unnest($14::text[], $15::uuid[], $16::text[], $17::bool[],
                                    $18::bigint[])
               ON CONFLICT (firm, employee_id, client_org_number) DO UPDATE
               SET active = excluded.active, sequence = excluded.sequence, updated_at = now()
               WHERE assignments.sequence < excluded.sequence
               RETURNING firm, employee_id, client_org_number
           ),
           incoming AS (
               SELECT * FROM unnest($19::text[], $20::text[], $21::uuid[], $22::bigint[])
                   AS t(firm, client_org_number, employee_id, sequence)
           ),
           old AS (
               SELECT p.firm, p.client_org_number, p.employee_id
               FROM project_accountants p JOIN incoming i USING (firm, client_org_number)
           ),
           slots AS (
               INSERT INTO project_accountants (firm, client_org_number, employee_id, sequence)
               SELECT firm, client_org_number, employee_id, sequence FROM incoming
               ON CONFLICT (firm, client_org_number) DO UPDATE
               SET employee_id = excluded.employee_id, sequence = excluded.sequence,
                   updated_at = now()
               WHERE project_accountants.sequence < excluded.sequence
               RETURNING firm, client_org_number, employee_id
           )
           SELECT firm AS "firm!", employee_id AS "employee_id!",
                  client_org_number AS "client_org_number?"
           FROM pairs
           UNION ALL
           SELECT firm, employee_id, NULL FROM roles
           UNION ALL
           SELECT s.firm, h.employee_id, s.client_org_number
           FROM slots s LEFT JOIN old o USING (firm, client_org_number)
           CROSS JOIN LATERAL (VALUES (s.employee_id), (o.employee_id)) AS h(employee_id)
           WHERE h.employee_id IS NOT NULL"#,
        &c.id_firms as &[&str],
        &c.id_employees,
        &c.id_nins as &[&str],
        &c.id_names as &[&str],
        &c.id_seqs,
        &c.client_firms as &[&str],
        &c.client_orgs as &[&str],
        &c.client_names as &[&str],
        &c.client_seqs,
        &c.role_firms as &[&str],
        &c.role_employees,
        &c.role_sets,
        &c.role_seqs,
        &c.pair_firms as &[&str],
        &c.pair_employees,
        &c.pair_clients as &[&str],
        &c.pair_active,
        &c.pair_seqs,
        &c.slot_firms as &[&str],
        &c.slot_clients as &[&str],
        // A slot may be emptied: NULLs in uuid[], which the macro's check does not know.
        &c.slot_holders as &[Option<Uuid>],
        &c.slot_seqs,
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut keys = RefreshKeys::default();
    for row in rows {
        match row.client_org_number {
            Some(client) => keys.pairs.push((row.firm, row.employee_id, client)),
            None => keys.employees.push((row.firm, row.employee_id)),
        }
    }
    Ok(keys)
}
