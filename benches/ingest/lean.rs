//! The lean batched consumer: the ceiling the design allows on this machine, as the ingest
//! bench's second baseline (issue 15, step 5).
//!
//! Up to 2,000 deliveries or 10 ms, whichever comes first; then one transaction of three
//! statements (the event ids with one `UNNEST`, every fact with one, the desired rows with one),
//! commit, and one ack with `multiple`. No sequence guard, no dead letters, no telemetry, no
//! contract validation: a plain serde decode of the fields it needs. It writes the same facts
//! as the product (identities, clients, roles, assignments, project-accountant slots), so the
//! bench can compare the two databases afterwards.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use serde::Deserialize;
use sqlx::PgPool;
use uuid::Uuid;

const BATCH: usize = 2000;
const LINGER: Duration = Duration::from_millis(10);

#[derive(Deserialize)]
struct Envelope<'a> {
    event_id: Uuid,
    event_type: &'a str,
    occurred_at: DateTime<Utc>,
    #[serde(borrow)]
    firm: Org<'a>,
    sequence: i64,
    #[serde(borrow)]
    data: Data<'a>,
}

#[derive(Deserialize)]
struct Org<'a> {
    org_number: &'a str,
    #[serde(default, borrow)]
    name: Option<&'a str>,
}

#[derive(Deserialize)]
struct Person<'a> {
    id: Uuid,
    national_identity_number: &'a str,
    last_name: &'a str,
}

#[derive(Deserialize)]
struct Data<'a> {
    #[serde(default, borrow)]
    employee: Option<Person<'a>>,
    #[serde(default)]
    employee_id: Option<Uuid>,
    #[serde(default, borrow)]
    client: Option<Org<'a>>,
    #[serde(default, borrow)]
    client_org_number: Option<&'a str>,
    #[serde(default, borrow)]
    roles: Option<Vec<&'a str>>,
}

/// The newest value per key in the batch: a row may change only once per statement.
struct Newest<K, V>(HashMap<K, (i64, V)>);

impl<K: std::hash::Hash + Eq, V> Newest<K, V> {
    fn new() -> Self {
        Self(HashMap::new())
    }
    fn keep(&mut self, key: K, seq: i64, value: V) {
        match self.0.get(&key) {
            Some((s, _)) if *s >= seq => {}
            _ => {
                self.0.insert(key, (seq, value));
            }
        }
    }
}

/// Drains `n` messages from `queue`; returns deliveries per second, first delivery to last ack.
pub async fn drain(amqp_url: &str, queue: &str, pool: &PgPool, n: usize) -> f64 {
    let conn = altinn_sync::ingest::connect(amqp_url).await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.basic_qos(8000, BasicQosOptions::default())
        .await
        .unwrap();
    let mut consumer = ch
        .basic_consume(
            queue.into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let started = Instant::now();
    let mut done = 0usize;
    while done < n {
        let first = consumer.next().await.unwrap().unwrap();
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + LINGER;
        while batch.len() < BATCH && done + batch.len() < n {
            match tokio::time::timeout_at(deadline, consumer.next()).await {
                Ok(Some(d)) => batch.push(d.unwrap()),
                Ok(None) => panic!("consumer ended"),
                Err(_) => break,
            }
        }
        let bodies: Vec<&[u8]> = batch.iter().map(|d| d.data.as_slice()).collect();
        commit(pool, &bodies).await;
        let last = batch.last().unwrap().delivery_tag;
        ch.basic_ack(last, BasicAckOptions { multiple: true })
            .await
            .unwrap();
        done += batch.len();
    }
    let rate = done as f64 / started.elapsed().as_secs_f64();
    let _ = ch.queue_delete(queue.into(), Default::default()).await;
    let _ = conn.close(200, "done".into()).await;
    rate
}

/// One batch in one transaction: event ids, facts, desired rows.
async fn commit(pool: &PgPool, bodies: &[&[u8]]) {
    let events: Vec<Envelope> = bodies
        .iter()
        .map(|b| serde_json::from_slice(b).unwrap())
        .collect();
    let mut tx = pool.begin().await.unwrap();
    insert_ids(&mut tx, &events).await;
    let keys = upsert_facts(&mut tx, &events).await;
    refresh(&mut tx, keys).await;
    tx.commit().await.unwrap();
}

async fn insert_ids(conn: &mut sqlx::PgConnection, events: &[Envelope<'_>]) {
    let firms: Vec<&str> = events.iter().map(|e| e.firm.org_number).collect();
    let ids: Vec<Uuid> = events.iter().map(|e| e.event_id).collect();
    let types: Vec<&str> = events.iter().map(|e| e.event_type).collect();
    let seqs: Vec<i64> = events.iter().map(|e| e.sequence).collect();
    let at: Vec<DateTime<Utc>> = events.iter().map(|e| e.occurred_at).collect();
    sqlx::query(
        r#"INSERT INTO processed_events (firm, event_id, event_type, sequence, occurred_at)
           SELECT * FROM unnest($1::text[], $2::uuid[], $3::text[], $4::bigint[],
                                $5::timestamptz[])
           ON CONFLICT DO NOTHING"#,
    )
    .bind(&firms as &[&str])
    .bind(&ids)
    .bind(&types as &[&str])
    .bind(&seqs)
    .bind(&at)
    .execute(&mut *conn)
    .await
    .unwrap();
}

/// Changed keys: (firm, employee, client) pairs, and (firm, employee) with a new role set.
struct Keys<'a> {
    pair_firms: Vec<&'a str>,
    pair_emps: Vec<Uuid>,
    pair_clients: Vec<&'a str>,
    emp_firms: Vec<&'a str>,
    emp_ids: Vec<Uuid>,
}

type Row = (String, Option<Uuid>, Option<String>);

// Long because it is one statement over five fact tables, each bound as columns.
async fn upsert_facts<'a>(conn: &mut sqlx::PgConnection, events: &'a [Envelope<'a>]) -> Vec<Row> {
    let mut identities = Newest::new();
    let mut clients = Newest::new();
    let mut roles = Newest::new();
    let mut assignments = Newest::new();
    let mut slots = Newest::new();
    for e in events {
        let (firm, seq, d) = (e.firm.org_number, e.sequence, &e.data);
        if let Some(p) = &d.employee {
            identities.keep((firm, p.id), seq, (p.national_identity_number, p.last_name));
        }
        if let Some(c) = &d.client {
            clients.keep((firm, c.org_number), seq, c.name.unwrap_or_default());
        }
        match e.event_type {
            "ClientAssigned" => {
                let (p, c) = (d.employee.as_ref().unwrap(), d.client.as_ref().unwrap());
                assignments.keep((firm, p.id, c.org_number), seq, true);
            }
            "ClientRemoved" => {
                let key = (firm, d.employee_id.unwrap(), d.client_org_number.unwrap());
                assignments.keep(key, seq, false);
            }
            "RoleChanged" => {
                let p = d.employee.as_ref().unwrap();
                roles.keep((firm, p.id), seq, d.roles.as_deref().unwrap_or_default());
            }
            _ => {
                let c = d.client.as_ref().unwrap();
                let holder = d.employee.as_ref().map(|p| p.id);
                slots.keep((firm, c.org_number), seq, holder);
            }
        }
    }
    let (mut i_f, mut i_e, mut i_n, mut i_l, mut i_s) = (vec![], vec![], vec![], vec![], vec![]);
    for ((f, e), (s, (n, l))) in identities.0 {
        i_f.push(f);
        i_e.push(e);
        i_n.push(n);
        i_l.push(l);
        i_s.push(s);
    }
    let (mut c_f, mut c_o, mut c_n, mut c_s) = (vec![], vec![], vec![], vec![]);
    for ((f, o), (s, n)) in clients.0 {
        c_f.push(f);
        c_o.push(o);
        c_n.push(n);
        c_s.push(s);
    }
    let (mut r_f, mut r_e, mut r_r, mut r_s) = (vec![], vec![], vec![], vec![]);
    for ((f, e), (s, r)) in roles.0 {
        r_f.push(f);
        r_e.push(e);
        r_r.push(serde_json::json!(r));
        r_s.push(s);
    }
    let (mut a_f, mut a_e, mut a_c, mut a_a, mut a_s) = (vec![], vec![], vec![], vec![], vec![]);
    for ((f, e, c), (s, a)) in assignments.0 {
        a_f.push(f);
        a_e.push(e);
        a_c.push(c);
        a_a.push(a);
        a_s.push(s);
    }
    let (mut p_f, mut p_c, mut p_e, mut p_s) = (vec![], vec![], vec![], vec![]);
    for ((f, c), (s, e)) in slots.0 {
        p_f.push(f);
        p_c.push(c);
        p_e.push(e);
        p_s.push(s);
    }
    sqlx::query_as(
        r#"WITH i AS (
               INSERT INTO employee_identities
                   (firm, employee_id, national_identity_number, last_name, sequence)
               SELECT * FROM unnest($1::text[], $2::uuid[], $3::text[], $4::text[], $5::bigint[])
               ON CONFLICT (firm, employee_id) DO UPDATE
               SET national_identity_number = excluded.national_identity_number,
                   last_name = excluded.last_name, sequence = excluded.sequence,
                   updated_at = now()
               WHERE employee_identities.sequence < excluded.sequence
           ), c AS (
               INSERT INTO clients (firm, org_number, name, sequence)
               SELECT * FROM unnest($6::text[], $7::text[], $8::text[], $9::bigint[])
               ON CONFLICT (firm, org_number) DO UPDATE
               SET name = excluded.name, sequence = excluded.sequence, updated_at = now()
               WHERE clients.sequence < excluded.sequence
           ), r AS (
               INSERT INTO employee_roles (firm, employee_id, roles, sequence)
               SELECT f, e, ARRAY(SELECT jsonb_array_elements_text(r)), s
               FROM unnest($10::text[], $11::uuid[], $12::jsonb[], $13::bigint[]) AS t(f, e, r, s)
               ON CONFLICT (firm, employee_id) DO UPDATE
               SET roles = excluded.roles, sequence = excluded.sequence, updated_at = now()
               WHERE employee_roles.sequence < excluded.sequence
               RETURNING firm, employee_id
           ), a AS (
               INSERT INTO assignments (firm, employee_id, client_org_number, active, sequence)
               SELECT * FROM unnest($14::text[], $15::uuid[], $16::text[], $17::bool[],
                                    $18::bigint[])
               ON CONFLICT (firm, employee_id, client_org_number) DO UPDATE
               SET active = excluded.active, sequence = excluded.sequence, updated_at = now()
               WHERE assignments.sequence < excluded.sequence
               RETURNING firm, employee_id, client_org_number
           ), incoming AS (
               SELECT * FROM unnest($19::text[], $20::text[], $21::uuid[], $22::bigint[])
                   AS t(firm, client_org_number, employee_id, sequence)
           ), old AS (
               SELECT p.firm, p.client_org_number, p.employee_id
               FROM project_accountants p JOIN incoming i USING (firm, client_org_number)
           ), s AS (
               INSERT INTO project_accountants (firm, client_org_number, employee_id, sequence)
               SELECT firm, client_org_number, employee_id, sequence FROM incoming
               ON CONFLICT (firm, client_org_number) DO UPDATE
               SET employee_id = excluded.employee_id, sequence = excluded.sequence,
                   updated_at = now()
               WHERE project_accountants.sequence < excluded.sequence
               RETURNING firm, client_org_number, employee_id
           )
           SELECT firm, employee_id, client_org_number FROM a
           UNION ALL SELECT firm, employee_id, NULL FROM r
           UNION ALL
           SELECT s.firm, x.e, s.client_org_number
           FROM s LEFT JOIN old o USING (firm, client_org_number)
           CROSS JOIN LATERAL (VALUES (s.employee_id), (o.employee_id)) x(e)
           WHERE x.e IS NOT NULL"#,
    )
    .bind(&i_f as &[&str])
    .bind(&i_e)
    .bind(&i_n as &[&str])
    .bind(&i_l as &[&str])
    .bind(&i_s)
    .bind(&c_f as &[&str])
    .bind(&c_o as &[&str])
    .bind(&c_n as &[&str])
    .bind(&c_s)
    .bind(&r_f as &[&str])
    .bind(&r_e)
    .bind(&r_r)
    .bind(&r_s)
    .bind(&a_f as &[&str])
    .bind(&a_e)
    .bind(&a_c as &[&str])
    .bind(&a_a)
    .bind(&a_s)
    .bind(&p_f as &[&str])
    .bind(&p_c as &[&str])
    .bind(&p_e as &[Option<Uuid>])
    .bind(&p_s)
    .fetch_all(&mut *conn)
    .await
    .unwrap()
}

/// The product's incremental refresh of `desired_grants` for the changed keys, without the
/// automatic sync's marks on `firms`.
async fn refresh(conn: &mut sqlx::PgConnection, rows: Vec<Row>) {
    let mut k = Keys {
        pair_firms: vec![],
        pair_emps: vec![],
        pair_clients: vec![],
        emp_firms: vec![],
        emp_ids: vec![],
    };
    for (firm, emp, client) in &rows {
        match client {
            Some(c) => {
                k.pair_firms.push(firm.as_str());
                k.pair_emps.push(emp.unwrap());
                k.pair_clients.push(c.as_str());
            }
            None => {
                k.emp_firms.push(firm.as_str());
                k.emp_ids.push(emp.unwrap());
            }
        }
    }
    if rows.is_empty() {
        return;
    }
    sqlx::query(
        r#"WITH k AS (
               SELECT * FROM unnest($1::text[], $2::uuid[], $3::text[])
                   AS p(firm, employee_id, client_org_number)
               UNION
               SELECT x.firm, x.employee_id, x.client_org_number
               FROM unnest($4::text[], $5::uuid[]) AS e(firm, employee_id)
               CROSS JOIN LATERAL (
                   SELECT a.firm, a.employee_id, a.client_org_number FROM assignments a
                   WHERE a.firm = e.firm AND a.employee_id = e.employee_id AND a.active
                   UNION ALL
                   SELECT p.firm, p.employee_id, p.client_org_number FROM project_accountants p
                   WHERE p.firm = e.firm AND p.employee_id = e.employee_id
                   UNION ALL
                   SELECT d.firm, d.employee_id, d.client_org_number FROM desired_grants d
                   WHERE d.firm = e.firm AND d.employee_id = e.employee_id
                   OFFSET 0
               ) x
           ),
           facts AS (
               SELECT k.firm, k.employee_id, k.client_org_number,
                      (SELECT r.roles FROM employee_roles r
                       WHERE r.firm = k.firm AND r.employee_id = k.employee_id) AS roles,
                      coalesce((SELECT a.active FROM assignments a
                                WHERE a.firm = k.firm AND a.employee_id = k.employee_id
                                  AND a.client_org_number = k.client_org_number), false)
                      OR (SELECT p.employee_id FROM project_accountants p
                          WHERE p.firm = k.firm AND p.client_org_number = k.client_org_number)
                         IS NOT DISTINCT FROM k.employee_id AS works
               FROM k
           ),
           want AS (
               SELECT DISTINCT f.firm, f.employee_id, f.client_org_number, m.package
               FROM facts f JOIN role_mapping m ON m.role = ANY (f.roles)
               WHERE f.works
           ),
           stale AS (
               SELECT cur.* FROM k
               CROSS JOIN LATERAL (
                   SELECT d.firm, d.employee_id, d.client_org_number, d.package
                   FROM desired_grants d
                   WHERE d.firm = k.firm AND d.employee_id = k.employee_id
                     AND d.client_org_number = k.client_org_number
                   OFFSET 0
               ) cur
               EXCEPT
               SELECT * FROM want
           ),
           gone AS (
               DELETE FROM desired_grants d USING stale s
               WHERE d.firm = s.firm AND d.employee_id = s.employee_id
                 AND d.client_org_number = s.client_org_number AND d.package = s.package
           )
           INSERT INTO desired_grants (firm, employee_id, client_org_number, package)
           SELECT firm, employee_id, client_org_number, package FROM want
           ON CONFLICT DO NOTHING"#,
    )
    .bind(&k.pair_firms as &[&str])
    .bind(&k.pair_emps)
    .bind(&k.pair_clients as &[&str])
    .bind(&k.emp_firms as &[&str])
    .bind(&k.emp_ids)
    // As the product: planned for each batch's keys.
    .persistent(false)
    .execute(&mut *conn)
    .await
    .unwrap();
}

/// A digest of each desired-state table, to compare the product's database with the lean one.
pub async fn digest(pool: &PgPool) -> Vec<(&'static str, String)> {
    let tables = [
        (
            "desired_grants",
            "SELECT firm, employee_id, client_org_number, package FROM desired_grants",
        ),
        (
            "assignments",
            "SELECT firm, employee_id, client_org_number, active, sequence FROM assignments",
        ),
        (
            "employee_roles",
            "SELECT firm, employee_id, roles, sequence FROM employee_roles",
        ),
        (
            "project_accountants",
            "SELECT firm, client_org_number, employee_id, sequence FROM project_accountants",
        ),
        (
            "employee_identities",
            "SELECT firm, employee_id, national_identity_number, last_name, sequence \
             FROM employee_identities",
        ),
        (
            "clients",
            "SELECT firm, org_number, name, sequence FROM clients",
        ),
        (
            "processed_events",
            "SELECT firm, event_id, event_type, sequence FROM processed_events",
        ),
    ];
    let mut out = Vec::new();
    for (name, select) in tables {
        let sql = format!(
            "SELECT count(*)::text || ' ' || md5(coalesce(string_agg(t::text, ';' ORDER BY t::text), '')) FROM ({select}) t"
        );
        // Built at run time: the table list above.
        let d: String = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_one(pool)
            .await
            .unwrap();
        out.push((name, d));
    }
    out
}
