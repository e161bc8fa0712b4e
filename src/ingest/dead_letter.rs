//! Republishing poison messages to the dead-letter exchange, with the reason in headers.

use futures_util::future::try_join_all;
use lapin::Confirmation;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::FieldTable;
use lapin::types::{AMQPValue, ShortString};
use lapin::{BasicProperties, Channel, Connection};

use super::Error;
use super::batch::{Item, Status};

/// A channel in confirm mode: a poison message is acked only once the broker has confirmed
/// its copy in the dead-letter queue.
pub struct DeadLetterPublisher {
    channel: Channel,
    exchange: String,
    source_queue: String,
}

impl DeadLetterPublisher {
    pub async fn open(
        conn: &Connection,
        exchange: &str,
        source_queue: &str,
    ) -> Result<Self, Error> {
        let channel = conn.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(Self {
            channel,
            exchange: exchange.to_owned(),
            source_queue: source_queue.to_owned(),
        })
    }

    pub async fn close(&self) {
        let _ = self.channel.close(200, "worker stopping".into()).await;
    }

    /// Publishes every dead-lettered item and waits for all confirms.
    pub async fn publish(&self, items: &[Item]) -> Result<(), Error> {
        let mut confirms = Vec::new();
        for item in items {
            let Status::DeadLettered(poison) = &item.status else {
                continue;
            };
            let d = &item.delivery;
            let mut headers = d.properties.headers().clone().unwrap_or_default();
            let mut put = |k: &str, v: &str| {
                headers.insert(
                    ShortString::from(k.to_owned()),
                    AMQPValue::LongString(v.to_owned().into()),
                );
            };
            put("x-altinn-sync-reason", &poison.reason);
            put("x-altinn-sync-reason-code", poison.code);
            put("x-altinn-sync-source-queue", &self.source_queue);
            put("x-altinn-sync-original-exchange", d.exchange.as_str());
            let props = dead_letter_properties(&d.properties, headers);
            let confirm = self
                .channel
                .basic_publish(
                    self.exchange.as_str().into(),
                    d.routing_key.clone(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..Default::default()
                    },
                    &d.data,
                    props,
                )
                .await?;
            confirms.push(confirm);
        }
        for confirmation in try_join_all(confirms).await? {
            match confirmation {
                Confirmation::Ack(None) => {}
                Confirmation::Ack(Some(_)) => return Err(Error::DeadLetterUnroutable),
                Confirmation::Nack(_) | Confirmation::NotRequested => {
                    return Err(Error::DeadLetterNotConfirmed);
                }
            }
        }
        Ok(())
    }
}

/// The original's properties minus those that would lose the copy or get it refused: a
/// per-message TTL (`expiration`) would let it expire out of the queue, and a `user_id` other
/// than ours would make the broker refuse the publish.
fn dead_letter_properties(original: &BasicProperties, headers: FieldTable) -> BasicProperties {
    let mut props = BasicProperties::default()
        .with_headers(headers)
        .with_delivery_mode(2);
    if let Some(v) = original.content_type() {
        props = props.with_content_type(v.clone());
    }
    if let Some(v) = original.content_encoding() {
        props = props.with_content_encoding(v.clone());
    }
    if let Some(v) = original.message_id() {
        props = props.with_message_id(v.clone());
    }
    if let Some(v) = original.correlation_id() {
        props = props.with_correlation_id(v.clone());
    }
    if let Some(v) = original.timestamp() {
        props = props.with_timestamp(*v);
    }
    if let Some(v) = original.kind() {
        props = props.with_type(v.clone());
    }
    if let Some(v) = original.app_id() {
        props = props.with_app_id(v.clone());
    }
    props
}
