//! Recording validated commands. Acting on them is the flush's job.

use sqlx::PgConnection;

use super::Result;
use crate::contract::{Command, CommandKind};

/// Records `commands`; a command id seen before is kept as first recorded.
/// Returns how many were new.
pub async fn record_commands(conn: &mut PgConnection, commands: &[&Command]) -> Result<u64> {
    record_traced_commands(conn, commands, &[]).await
}

/// [`record_commands`], each with the W3C `traceparent` it arrived with (by position; none
/// past the end), so that handling it continues the sender's trace.
pub async fn record_traced_commands(
    conn: &mut PgConnection,
    commands: &[&Command],
    traceparents: &[Option<String>],
) -> Result<u64> {
    if commands.is_empty() {
        return Ok(0);
    }
    let ids: Vec<_> = commands.iter().map(|c| c.id).collect();
    let types: Vec<String> = commands
        .iter()
        .map(|c| c.kind.type_name().to_owned())
        .collect();
    let firms: Vec<Option<String>> = commands
        .iter()
        .map(|c| c.kind.firm().map(|f| f.to_string()))
        .collect();
    let at: Vec<_> = commands.iter().map(|c| c.requested_at).collect();
    let by: Vec<Option<String>> = commands.iter().map(|c| c.requested_by.clone()).collect();
    let after: Vec<Option<i64>> = commands
        .iter()
        .map(|c| match c.kind {
            CommandKind::SyncNow { after_sequence, .. } => after_sequence,
            CommandKind::NightlyReconcile { .. } => None,
        })
        .collect();
    let traceparents: Vec<Option<&str>> = (0..commands.len())
        .map(|i| traceparents.get(i).and_then(|t| t.as_deref()))
        .collect();
    let inserted = sqlx::query!(
        r#"INSERT INTO commands
               (command_id, command_type, firm, requested_at, requested_by, after_sequence,
                traceparent)
           SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[],
                                $5::text[], $6::bigint[], $7::text[])
           ON CONFLICT (command_id) DO NOTHING"#,
        &ids,
        &types,
        // The macro's check knows no arrays with NULLs in them; these are text[] and bigint[].
        &firms as &[Option<String>],
        &at,
        &by as &[Option<String>],
        &after as &[Option<i64>],
        &traceparents as &[Option<&str>],
    )
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(inserted)
}
