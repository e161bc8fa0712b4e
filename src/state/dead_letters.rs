//! The record of what went to the dead-letter queue, and why.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};

use super::Result;

/// A dead-lettered delivery, without its body (which may hold personal data).
#[derive(Debug, Clone)]
pub struct DeadLetterRow<'a> {
    pub queue: &'a str,
    pub routing_key: &'a str,
    pub message_id: Option<&'a str>,
    pub firm: Option<&'a str>,
    pub reason_code: &'a str,
    pub reason: &'a str,
    pub body_bytes: usize,
    pub redelivered: bool,
}

pub async fn record_dead_letter(conn: &mut PgConnection, row: &DeadLetterRow<'_>) -> Result<()> {
    sqlx::query(
        r#"INSERT INTO dead_letters (queue, routing_key, message_id, firm, reason_code, reason,
                                     body_bytes, redelivered)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"#,
    )
    .bind(row.queue)
    .bind(row.routing_key)
    .bind(row.message_id)
    .bind(row.firm)
    .bind(row.reason_code)
    .bind(row.reason)
    .bind(i32::try_from(row.body_bytes).unwrap_or(i32::MAX))
    .bind(row.redelivered)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct DeadLetter {
    pub id: i64,
    pub queue: String,
    pub routing_key: String,
    pub message_id: Option<String>,
    pub firm: Option<String>,
    pub reason_code: String,
    pub reason: String,
    pub body_bytes: i32,
    pub received_at: DateTime<Utc>,
}

/// The newest dead letters first, optionally for one firm.
pub async fn list_dead_letters(
    pool: &PgPool,
    firm: Option<&str>,
    limit: i64,
) -> Result<Vec<DeadLetter>> {
    let rows = sqlx::query_as(
        r#"SELECT id, queue, routing_key, message_id, firm, reason_code, reason, body_bytes,
                  received_at
           FROM dead_letters
           WHERE $1::text IS NULL OR firm = $1
           ORDER BY id DESC LIMIT $2"#,
    )
    .bind(firm)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows)
}
