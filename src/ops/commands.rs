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

/// Publishes the API's `SyncNow`s on one connection and confirm channel, opened at the first
/// and again only when it broke, rather than a connection per call.
pub struct CommandPublisher {
    amqp_url: String,
    exchange: String,
    held: tokio::sync::Mutex<Option<(lapin::Connection, lapin::Channel)>>,
}

impl CommandPublisher {
    pub fn new(amqp_url: &str, topology_prefix: &str) -> Self {
        Self {
            amqp_url: amqp_url.to_owned(),
            exchange: format!("{topology_prefix}.commands"),
            held: tokio::sync::Mutex::default(),
        }
    }

    /// As [`request_sync`], on the held channel; a broken one is reopened and tried once more.
    pub async fn request_sync(
        &self,
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
        #[expect(clippy::expect_used, reason = "a json! value always serialises")]
        let body = serde_json::to_vec(&command).expect("a JSON value serialises");
        let mut held = self.held.lock().await;
        let mut retried = false;
        loop {
            let channel = self.channel(&mut held).await?;
            match self.publish(&channel, command_id, &body).await {
                Ok(()) => return Ok(command_id),
                Err(e @ crate::publish::Error::Broker(_)) => {
                    *held = None;
                    if retried {
                        return Err(e.into());
                    }
                    retried = true;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    async fn channel(
        &self,
        held: &mut Option<(lapin::Connection, lapin::Channel)>,
    ) -> Result<lapin::Channel> {
        if let Some((conn, channel)) = held.as_ref()
            && conn.status().connected()
            && channel.status().connected()
        {
            return Ok(channel.clone());
        }
        let conn = crate::ingest::connect(&self.amqp_url)
            .await
            .map_err(crate::publish::Error::from)?;
        let channel = conn
            .create_channel()
            .await
            .map_err(crate::publish::Error::from)?;
        channel
            .confirm_select(lapin::options::ConfirmSelectOptions::default())
            .await
            .map_err(crate::publish::Error::from)?;
        tracing::info!("admin API: command publisher connected to RabbitMQ");
        *held = Some((conn, channel.clone()));
        Ok(channel)
    }

    async fn publish(
        &self,
        channel: &lapin::Channel,
        command_id: Uuid,
        body: &[u8],
    ) -> Result<(), crate::publish::Error> {
        use lapin::Confirmation;
        let id = command_id.to_string();
        let span = tracing::info_span!("publish", otel.name = "publish SyncNow",
            otel.kind = "producer", messaging.system = "rabbitmq",
            messaging.destination.name = %self.exchange, messaging.message.id = %id);
        let properties = crate::publish::json_properties(Some(&id))
            .with_headers(crate::telemetry::amqp_headers(&span));
        let options = lapin::options::BasicPublishOptions {
            mandatory: true,
            ..Default::default()
        };
        let confirmation = channel
            .basic_publish(
                self.exchange.as_str().into(),
                "SyncNow".into(),
                options,
                body,
                properties,
            )
            .await?
            .await?;
        match confirmation {
            Confirmation::Ack(None) => Ok(()),
            Confirmation::Ack(Some(_)) => Err(crate::publish::Error::Unroutable {
                exchange: self.exchange.clone(),
                routing_key: "SyncNow".to_owned(),
            }),
            Confirmation::Nack(_) | Confirmation::NotRequested => {
                Err(crate::publish::Error::Nacked)
            }
        }
    }
}
