//! The sequence guard: which events of a batch may change facts. Duplicates and events of a
//! firm on hold are set aside, and an event far behind its firm's high-water mark is refused
//! as a sign that AdminFlow was restored from a backup.

use std::collections::{BTreeSet, HashMap, HashSet};

use sqlx::PgConnection;
use uuid::Uuid;

use super::outcome::ApplyOutcome;
use crate::contract::Event;
use crate::state::Result;

#[derive(Debug, Clone, Copy)]
pub struct ApplyOptions {
    /// An event this far below its firm's high-water mark is treated as a sign that AdminFlow
    /// was restored from a backup: it is dead-lettered and reported, not silently ignored.
    pub regression_threshold: i64,
}

/// Locks the batch's firms and returns the events that may change facts, in input order;
/// the others are counted in `outcome`.
pub(super) async fn admit<'e>(
    conn: &mut PgConnection,
    events: &[&'e Event],
    opts: &ApplyOptions,
    outcome: &mut ApplyOutcome,
) -> Result<Vec<&'e Event>> {
    let firms: Vec<&str> = events
        .iter()
        .map(|e| e.firm.as_str())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let (mut high_water, held) = lock_firms(conn, &firms).await?;
    let (accepted, suspects) = sort(events, &held, &mut high_water, opts, outcome);
    refuse_regressions(conn, events, suspects, outcome).await?;
    Ok(hold_after_regressions(events, accepted, outcome))
}

/// Creates unseen firms and locks every firm in the batch, in a fixed order to avoid deadlocks.
/// Returns each firm's high-water mark, and the firms on hold.
async fn lock_firms(
    conn: &mut PgConnection,
    firms: &[&str],
) -> Result<(HashMap<String, i64>, HashSet<String>)> {
    sqlx::query!(
        r#"INSERT INTO firms (org_number, high_water_sequence)
           SELECT f, -1 FROM unnest($1::text[]) AS f
           ON CONFLICT DO NOTHING"#,
        firms as &[&str]
    )
    .execute(&mut *conn)
    .await?;
    let rows = sqlx::query!(
        r#"SELECT org_number, high_water_sequence, held_since IS NOT NULL AS "held!" FROM firms
           WHERE org_number = ANY($1) ORDER BY org_number FOR UPDATE"#,
        firms as &[&str]
    )
    .fetch_all(&mut *conn)
    .await?;
    let held = rows
        .iter()
        .filter(|r| r.held)
        .map(|r| r.org_number.clone())
        .collect();
    let high_water = rows
        .into_iter()
        .map(|r| (r.org_number, r.high_water_sequence))
        .collect();
    Ok((high_water, held))
}

/// Sorts the batch's indices into accepted and suspected regressions (with the high-water mark
/// each falls behind); duplicates within the batch and events of firms on hold are counted in
/// `outcome`.
fn sort(
    events: &[&Event],
    held: &HashSet<String>,
    high_water: &mut HashMap<String, i64>,
    opts: &ApplyOptions,
    outcome: &mut ApplyOutcome,
) -> (Vec<usize>, Vec<(usize, i64)>) {
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
        // Raised as the batch is read, so a regression is caught whether or not it shares a
        // batch with the events it falls behind.
        let hwm = high_water.entry(e.firm.to_string()).or_insert(-1);
        if hwm.saturating_sub(e.sequence) > opts.regression_threshold {
            suspects.push((i, *hwm));
            continue;
        }
        *hwm = (*hwm).max(e.sequence);
        accepted.push(i);
    }
    (accepted, suspects)
}

/// Refused events, as the columns of `sequence_regressions`.
#[derive(Default)]
struct Regressions {
    firms: Vec<String>,
    ids: Vec<Uuid>,
    sequences: Vec<i64>,
    high_waters: Vec<i64>,
}

/// Refuses the suspects as regressions, holding their firms, unless they were processed before.
async fn refuse_regressions(
    conn: &mut PgConnection,
    events: &[&Event],
    suspects: Vec<(usize, i64)>,
    outcome: &mut ApplyOutcome,
) -> Result<()> {
    // A redelivery of an event processed long ago is a duplicate, not a regression.
    let seen = already_processed(conn, suspects.iter().map(|&(i, _)| events[i])).await?;
    let mut regressions = Regressions::default();
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
        regressions.firms.push(e.firm.to_string());
        regressions.ids.push(e.id);
        regressions.sequences.push(e.sequence);
        regressions.high_waters.push(hwm);
        outcome.regressed.push(i);
    }
    record_regressions(conn, &regressions).await
}

async fn already_processed<'a>(
    conn: &mut PgConnection,
    events: impl Iterator<Item = &'a Event>,
) -> Result<HashSet<(String, Uuid)>> {
    let (firms, ids): (Vec<String>, Vec<Uuid>) = events.map(|e| (e.firm.to_string(), e.id)).unzip();
    if ids.is_empty() {
        return Ok(HashSet::new());
    }
    let rows = sqlx::query!(
        r#"SELECT p.firm, p.event_id FROM processed_events p
           JOIN unnest($1::text[], $2::uuid[]) AS k(firm, event_id)
             ON p.firm = k.firm AND p.event_id = k.event_id"#,
        &firms,
        &ids
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.into_iter().map(|r| (r.firm, r.event_id)).collect())
}

async fn record_regressions(conn: &mut PgConnection, rows: &Regressions) -> Result<()> {
    if rows.ids.is_empty() {
        return Ok(());
    }
    sqlx::query!(
        r#"WITH hold AS (
               UPDATE firms SET held_since = now()
               WHERE org_number = ANY($1) AND held_since IS NULL
           )
           INSERT INTO sequence_regressions (firm, event_id, sequence, high_water_sequence)
           SELECT * FROM unnest($1::text[], $2::uuid[], $3::bigint[], $4::bigint[])"#,
        &rows.firms,
        &rows.ids,
        &rows.sequences,
        &rows.high_waters
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Later events of a regressed firm would be judged against facts from another lineage:
/// hold them too, in this batch and after, until an operator decides. Events queued before
/// the regression belong to the old lineage and are applied.
fn hold_after_regressions<'e>(
    events: &[&'e Event],
    accepted: Vec<usize>,
    outcome: &mut ApplyOutcome,
) -> Vec<&'e Event> {
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
    accepted.into_iter().map(|i| events[i]).collect()
}

/// Raises each firm's high-water mark to the newest accepted sequence and records the events
/// as processed, in one statement; returns how many were new.
pub(super) async fn record_processed(
    conn: &mut PgConnection,
    accepted: &[&Event],
) -> Result<usize> {
    if accepted.is_empty() {
        return Ok(0);
    }
    let mut max: HashMap<&str, i64> = HashMap::new();
    for e in accepted {
        let m = max.entry(e.firm.as_str()).or_insert(e.sequence);
        *m = (*m).max(e.sequence);
    }
    let (hw_firms, hw_seqs): (Vec<&str>, Vec<i64>) = max.into_iter().unzip();
    let firms: Vec<&str> = accepted.iter().map(|e| e.firm.as_str()).collect();
    let ids: Vec<Uuid> = accepted.iter().map(|e| e.id).collect();
    let types: Vec<&str> = accepted.iter().map(|e| e.body.type_name()).collect();
    let seqs: Vec<i64> = accepted.iter().map(|e| e.sequence).collect();
    let at: Vec<_> = accepted.iter().map(|e| e.occurred_at).collect();
    let inserted = sqlx::query_scalar!(
        r#"WITH raised AS (
               UPDATE firms SET high_water_sequence = GREATEST(high_water_sequence, v.s),
                                updated_at = now()
               FROM unnest($1::text[], $2::bigint[]) AS v(f, s)
               WHERE firms.org_number = v.f
           ),
           recorded AS (
               INSERT INTO processed_events (firm, event_id, event_type, sequence, occurred_at)
               SELECT * FROM unnest($3::text[], $4::uuid[], $5::text[], $6::bigint[],
                                    $7::timestamptz[])
               ON CONFLICT DO NOTHING
               RETURNING 1
           )
           SELECT count(*) AS "inserted!" FROM recorded"#,
        &hw_firms as &[&str],
        &hw_seqs,
        &firms as &[&str],
        &ids,
        &types as &[&str],
        &seqs,
        &at
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok(usize::try_from(inserted).unwrap_or(usize::MAX))
}
