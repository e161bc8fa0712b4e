//! `desired_grants`: which employee should hold which access package for which client.

use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::Result;
use crate::policy::RoleMapping;

/// Facts that changed in a batch, as the desired-grant keys they may affect.
#[derive(Debug, Default)]
pub(super) struct RefreshKeys {
    /// (firm, employee, client) whose assignment or project-accountant slot changed.
    pub pairs: Vec<(String, Uuid, String)>,
    /// (firm, employee) whose role set changed: every client they work with is affected.
    pub employees: Vec<(String, Uuid)>,
}

/// Recomputes the desired grants for the changed keys and writes only the difference. A firm
/// whose grants changed is marked for the automatic sync (`sync::auto`), in the same
/// transaction; the batch holds its `firms` row already.
// Long because it is one statement: every step feeds the next, and splitting it would pass
// whole key sets back and forth.
pub(super) async fn refresh_desired(conn: &mut PgConnection, keys: RefreshKeys) -> Result<()> {
    if keys.pairs.is_empty() && keys.employees.is_empty() {
        return Ok(());
    }
    let (mut pair_firms, mut pair_emps, mut pair_clients) = (Vec::new(), Vec::new(), Vec::new());
    for (firm, employee, client) in keys.pairs {
        pair_firms.push(firm);
        pair_emps.push(employee);
        pair_clients.push(client);
    }
    let (emp_firms, emp_ids): (Vec<String>, Vec<Uuid>) = keys.employees.into_iter().unzip();
    // Every lookup here is driven by the changed keys through a primary-key index: scalar
    // subqueries and OFFSET 0 fences keep the planner from hashing whole tables, so a batch
    // costs the same however large the tables grow. The last UPDATE marks the firms for the
    // automatic sync: the first change since the last plan, the last one, and a count that
    // lets a plan tell whether it saw them all (as `rebuild` does).
    sqlx::query!(
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
               RETURNING d.firm
           ),
           added AS (
               INSERT INTO desired_grants (firm, employee_id, client_org_number, package)
               SELECT firm, employee_id, client_org_number, package FROM want
               ON CONFLICT DO NOTHING
               RETURNING firm
           )
           UPDATE firms
               SET desired_changed_first = coalesce(desired_changed_first, now()),
                   desired_changed_last = now(), desired_changes = desired_changes + 1
               WHERE org_number IN (SELECT firm FROM gone UNION SELECT firm FROM added)"#,
        &pair_firms,
        &pair_emps,
        &pair_clients,
        &emp_firms,
        &emp_ids,
    )
    // Unprepared, so it is planned for each batch's actual keys: tables grow by orders of
    // magnitude during an initial load, and a plan cached while they were small would stay.
    .persistent(false)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Makes `desired_grants` equal to what the facts imply, keeping `since` on unchanged rows.
/// Firms whose grants change are marked for the automatic sync as in [`refresh_desired`].
async fn rebuild(conn: &mut PgConnection) -> Result<(u64, u64)> {
    let removed = sqlx::query_scalar!(
        r#"WITH gone AS (
               DELETE FROM desired_grants d
               WHERE NOT EXISTS (SELECT 1 FROM desired_grants_expected x
                                 WHERE x.firm = d.firm AND x.employee_id = d.employee_id
                                   AND x.client_org_number = d.client_org_number
                                   AND x.package = d.package)
               RETURNING firm
           ), marked AS (
               UPDATE firms
               SET desired_changed_first = coalesce(desired_changed_first, now()),
                   desired_changed_last = now(), desired_changes = desired_changes + 1
               WHERE org_number IN (SELECT firm FROM gone)
           )
           SELECT count(*) AS "removed!" FROM gone"#
    )
    .fetch_one(&mut *conn)
    .await?;
    let added = sqlx::query_scalar!(
        r#"WITH added AS (
               INSERT INTO desired_grants (firm, employee_id, client_org_number, package)
               SELECT firm, employee_id, client_org_number, package FROM desired_grants_expected
               ON CONFLICT DO NOTHING
               RETURNING firm
           ), marked AS (
               UPDATE firms
               SET desired_changed_first = coalesce(desired_changed_first, now()),
                   desired_changed_last = now(), desired_changes = desired_changes + 1
               WHERE org_number IN (SELECT firm FROM added)
           )
           SELECT count(*) AS "added!" FROM added"#
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok((added.unsigned_abs(), removed.unsigned_abs()))
}

/// What [`align_role_mapping`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Realigned {
    Unchanged,
    /// The grants were rebuilt: the mapping changed, or a rebuild was asked for.
    Rebuilt {
        added: u64,
        removed: u64,
    },
}

/// When [`align_role_mapping`] rebuilds the desired grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rebuild {
    /// At start-up: only a changed mapping costs a rebuild.
    IfMappingChanged,
    /// `rebuild-desired`: the operator asked for one.
    Always,
}

/// Stores `mapping` as the one `desired_grants` is built with, and rebuilds the grants
/// `when` asked.
///
/// The whole run holds `role_mapping` exclusively. Batches take it (shared) before anything
/// else, so they wait, and the rebuild never races a batch's refresh of the same grants.
pub async fn align_role_mapping(
    pool: &PgPool,
    mapping: &RoleMapping,
    when: Rebuild,
) -> Result<Realigned> {
    let mut tx = pool.begin().await?;
    sqlx::query!("LOCK TABLE role_mapping IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *tx)
        .await?;
    let mut stored: Vec<(String, String)> = sqlx::query!("SELECT role, package FROM role_mapping")
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .map(|r| (r.role, r.package))
        .collect();
    // Compared in Rust: the database's collation may order roles differently.
    stored.sort();
    let wanted: Vec<(String, String)> = mapping
        .iter()
        .map(|(r, p)| (r.to_owned(), p.to_owned()))
        .collect();
    let changed = stored != wanted;
    if !changed && when == Rebuild::IfMappingChanged {
        return Ok(Realigned::Unchanged);
    }
    if changed {
        sqlx::query!("DELETE FROM role_mapping")
            .execute(&mut *tx)
            .await?;
        let (roles, packages): (Vec<String>, Vec<String>) = wanted.into_iter().unzip();
        sqlx::query!(
            "INSERT INTO role_mapping (role, package) SELECT * FROM unnest($1::text[], $2::text[])",
            &roles,
            &packages,
        )
        .execute(&mut *tx)
        .await?;
    }
    let (added, removed) = rebuild(&mut tx).await?;
    tx.commit().await?;
    if changed && stored.is_empty() {
        tracing::info!(mapping = %mapping, "role mapping stored");
    } else if changed {
        tracing::warn!(
            mapping = %mapping, grants.added = added, grants.removed = removed,
            "the role mapping changed; desired grants were rebuilt"
        );
    }
    Ok(Realigned::Rebuilt { added, removed })
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DesiredGrant {
    pub employee_id: Uuid,
    pub client_org_number: String,
    pub package: String,
}

/// A firm's desired grants, as `desired` prints them.
#[derive(Debug, serde::Serialize)]
#[serde(transparent)]
pub struct DesiredGrants(pub Vec<DesiredGrant>);

impl std::fmt::Display for DesiredGrants {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_empty() {
            return writeln!(f, "no desired grants");
        }
        writeln!(f, "{:<36}  {:<9}  PACKAGE", "EMPLOYEE_ID", "CLIENT")?;
        for g in &self.0 {
            writeln!(
                f,
                "{}  {:<9}  {}",
                g.employee_id, g.client_org_number, g.package
            )?;
        }
        Ok(())
    }
}

/// The firm's desired grants, sorted by employee id, client and package.
pub async fn desired_grants(pool: &PgPool, firm: &str) -> Result<Vec<DesiredGrant>> {
    let rows = sqlx::query_as!(
        DesiredGrant,
        r#"SELECT employee_id, client_org_number, package FROM desired_grants
           WHERE firm = $1
           ORDER BY employee_id, client_org_number, package"#,
        firm
    )
    .fetch_all(pool)
    .await?;
    Ok(rows)
}
