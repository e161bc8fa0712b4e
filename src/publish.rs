//! `altinn-sync publish`: put one JSON message on an exchange, with a publisher confirm and the
//! W3C `traceparent` of its span, so the worker's handling joins the trace (`sync` and
//! `reconcile` publish through here too).

use lapin::BasicProperties;
use lapin::Confirmation;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use tracing::Instrument;

use crate::{ingest, telemetry};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the message is not valid JSON")]
    NotJson(#[source] serde_json::Error),
    #[error("RabbitMQ failed (does the exchange exist? the worker declares it at start-up)")]
    Broker(#[from] lapin::Error),
    #[error(
        "no queue is bound to exchange {exchange:?} for routing key {routing_key:?}; the message was dropped by the broker (is the worker's topology declared?)"
    )]
    Unroutable {
        exchange: String,
        routing_key: String,
    },
    #[error("the broker refused the message (nack)")]
    Nacked,
}

/// Properties of a persistent JSON message, as AdminFlow publishes them.
pub fn json_properties(message_id: Option<&str>) -> BasicProperties {
    let props = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_delivery_mode(2);
    match message_id {
        Some(id) => props.with_message_id(id.into()),
        None => props,
    }
}

/// Publishes `body` as a persistent JSON message and waits for the broker's confirm.
/// The message id is the body's `event_id` or `command_id` when it has one; the message
/// carries the `traceparent` of its producer span.
pub async fn publish(
    amqp_url: &str,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
) -> Result<(), Error> {
    let json: serde_json::Value = serde_json::from_slice(body).map_err(Error::NotJson)?;
    let message_id = ["event_id", "command_id"]
        .iter()
        .find_map(|k| json.get(k).and_then(|v| v.as_str()))
        .map(str::to_owned);
    let span = tracing::info_span!(
        "publish",
        otel.name = %format_args!("publish {routing_key}"),
        otel.kind = "producer",
        messaging.system = "rabbitmq",
        messaging.destination.name = exchange,
        messaging.rabbitmq.destination.routing_key = routing_key,
        messaging.message.id = message_id.as_deref(),
    );
    let properties =
        json_properties(message_id.as_deref()).with_headers(telemetry::amqp_headers(&span));
    send(amqp_url, exchange, routing_key, body, properties)
        .instrument(span)
        .await
}

async fn send(
    amqp_url: &str,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    properties: BasicProperties,
) -> Result<(), Error> {
    let conn = ingest::connect(amqp_url).await?;
    let channel = conn.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let confirmation = channel
        .basic_publish(
            exchange.into(),
            routing_key.into(),
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            body,
            properties,
        )
        .await?
        .await?;
    let _ = conn.close(200, "published".into()).await;
    match confirmation {
        Confirmation::Ack(None) => Ok(()),
        Confirmation::Ack(Some(_)) => Err(Error::Unroutable {
            exchange: exchange.to_owned(),
            routing_key: routing_key.to_owned(),
        }),
        Confirmation::Nack(_) | Confirmation::NotRequested => Err(Error::Nacked),
    }
}
