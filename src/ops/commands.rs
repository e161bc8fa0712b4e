//! Requesting a sync or a reconcile: a command published to the worker's command exchange.

use chrono::Utc;
use uuid::Uuid;

use super::Result;

/// Publishes a `SyncNow` for `firm` and waits for the broker's confirm; returns its id.
pub async fn request_sync(
    amqp_url: &str,
    topology_prefix: &str,
    firm: &str,
    after_sequence: Option<i64>,
    requested_by: &str,
) -> Result<Uuid> {
    let command_id = Uuid::new_v4();
    let command = serde_json::json!({
        "command_id": command_id,
        "command_type": "SyncNow",
        "requested_at": now(),
        "requested_by": requested_by,
        "firm": {"org_number": firm},
        "after_sequence": after_sequence,
    });
    send_command(amqp_url, topology_prefix, &command).await?;
    Ok(command_id)
}

/// Publishes a `NightlyReconcile`, for one firm or (without) every firm; returns its id.
pub async fn request_reconcile(
    amqp_url: &str,
    topology_prefix: &str,
    firm: Option<&str>,
    requested_by: &str,
) -> Result<Uuid> {
    let command_id = Uuid::new_v4();
    let command = serde_json::json!({
        "command_id": command_id,
        "command_type": "NightlyReconcile",
        "requested_at": now(),
        "requested_by": requested_by,
        "firm": firm.map(|f| serde_json::json!({"org_number": f})),
    });
    send_command(amqp_url, topology_prefix, &command).await?;
    Ok(command_id)
}

async fn send_command(amqp_url: &str, prefix: &str, command: &serde_json::Value) -> Result<()> {
    let exchange = format!("{prefix}.commands");
    let kind = command["command_type"].as_str().unwrap_or_default();
    #[expect(clippy::expect_used, reason = "a json! value always serialises")]
    let body = serde_json::to_vec(command).expect("a JSON value serialises");
    crate::publish::publish(amqp_url, &exchange, kind, &body).await?;
    Ok(())
}

fn now() -> String {
    Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}
