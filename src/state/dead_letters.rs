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

/// Records a dead letter. Its text fields come from the sender, so they are cleaned first: the
/// record of a bad message must not itself be refused (a NUL in a message id would be).
pub async fn record_dead_letter(conn: &mut PgConnection, row: &DeadLetterRow<'_>) -> Result<()> {
    sqlx::query!(
        r#"INSERT INTO dead_letters (queue, routing_key, message_id, firm, reason_code, reason,
                                     body_bytes, redelivered)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"#,
        row.queue,
        printable(row.routing_key, 255),
        row.message_id.map(|m| printable(m, 255)),
        row.firm.map(|f| printable(f, 64)),
        row.reason_code,
        printable(row.reason, 2000),
        i32::try_from(row.body_bytes).unwrap_or(i32::MAX),
        row.redelivered,
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// At most `max` characters, with control characters replaced.
fn printable(text: &str, max: usize) -> String {
    text.chars()
        .take(max)
        .map(|c| if c.is_control() { '\u{FFFD}' } else { c })
        .collect()
}

#[derive(Debug, Clone, serde::Serialize)]
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

/// Dead letters, as `dead-letters` prints them.
#[derive(Debug, serde::Serialize)]
#[serde(transparent)]
pub struct DeadLetters(pub Vec<DeadLetter>);

impl std::fmt::Display for DeadLetters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_empty() {
            return writeln!(f, "no dead letters");
        }
        for r in &self.0 {
            writeln!(
                f,
                "{} {} {} {} firm={} message_id={} {}: {}",
                r.id,
                r.received_at.format("%Y-%m-%dT%H:%M:%SZ"),
                r.queue,
                r.routing_key,
                r.firm.as_deref().unwrap_or("-"),
                r.message_id.as_deref().unwrap_or("-"),
                r.reason_code,
                r.reason
            )?;
        }
        Ok(())
    }
}

/// The newest dead letters first, optionally for one firm.
pub async fn list_dead_letters(
    pool: &PgPool,
    firm: Option<&str>,
    limit: i64,
) -> Result<Vec<DeadLetter>> {
    let rows = sqlx::query_as!(
        DeadLetter,
        r#"SELECT id, queue, routing_key, message_id, firm, reason_code, reason, body_bytes,
                  received_at
           FROM dead_letters
           WHERE $1::text IS NULL OR firm = $1
           ORDER BY id DESC LIMIT $2"#,
        firm,
        limit,
    )
    .fetch_all(pool)
    .await?;
    Ok(rows)
}

#[cfg(test)]
mod tests {
    #[test]
    fn printable_replaces_control_characters_and_caps_length() {
        assert_eq!(super::printable("a\u{0}b\nc", 10), "a\u{FFFD}b\u{FFFD}c");
        assert_eq!(super::printable("abcdef", 3), "abc");
    }
}
