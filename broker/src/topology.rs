//! The queues and the exchange of a namespace, declared in one place: RabbitMQ refuses a second declaration of a
//! queue with different options, so every process must declare them exactly alike.

use anyhow::Context;
use lapin::options::{
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{Connection, ExchangeKind};
use protocol::Names;

/// Declares the durable `writeQ` and `readQ` queues and the durable fanout `syncQ` exchange of `names`'s
/// namespace. Idempotent. Whoever sends requests declares them too, so a request published before any worker
/// runs waits in its queue instead of being dropped by the broker.
pub async fn declare(connection: &Connection, names: &Names) -> anyhow::Result<()> {
    let channel = connection
        .create_channel()
        .await
        .context("opening a channel to declare queues")?;
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    for queue in [names.write_queue(), names.read_queue()] {
        channel
            .queue_declare(queue.as_str().into(), durable, FieldTable::default())
            .await
            .with_context(|| format!("declaring queue {queue}"))?;
    }
    let exchange = names.sync_exchange();
    channel
        .exchange_declare(
            exchange.as_str().into(),
            ExchangeKind::Fanout,
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .with_context(|| format!("declaring exchange {exchange}"))?;
    channel
        .close(200, "declared".into())
        .await
        .context("closing the declaring channel")
}

/// Deletes what [`declare`] made, for a tool or test done with its namespace. Best effort: each deletion that
/// fails is skipped (part of it may be gone already).
pub async fn delete(connection: &Connection, names: &Names) {
    let Ok(channel) = connection.create_channel().await else {
        return;
    };
    for queue in [names.write_queue(), names.read_queue()] {
        let _ = channel
            .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
            .await;
    }
    let _ = channel
        .exchange_delete(
            names.sync_exchange().as_str().into(),
            ExchangeDeleteOptions::default(),
        )
        .await;
    // Closed before the connection: closing both at once makes lapin log a spurious error.
    let _ = channel.close(200, "deleted".into()).await;
}
