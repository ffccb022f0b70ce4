//! RabbitMQ plumbing: one connection per process, the shared queue declarations, and a small RPC client for
//! the commands a slave sends to the master (snapshot, join).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use futures::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ExchangeDeclareOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use protocol::queue::{Command, CommandReply};
use protocol::Names;
use tokio::sync::oneshot;

/// The pseudo-queue of RabbitMQ's direct reply-to: replies come straight back to the consuming channel.
pub const DIRECT_REPLY_TO: &str = "amq.rabbitmq.reply-to";

pub async fn connect(url: &str, name: &str) -> anyhow::Result<Connection> {
    let props =
        ConnectionProperties::default().with_connection_name(format!("worker-{name}").into());
    Ok(Connection::connect(url, props).await?)
}

/// Connects, retrying with a growing pause (up to 2 s) for as long as it takes: a worker outlives a broker
/// restart.
pub async fn connect_with_retry(url: &str, name: &str) -> Connection {
    let mut pause = Duration::from_millis(100);
    loop {
        match connect(url, name).await {
            Ok(c) => return c,
            Err(e) => {
                tracing::warn!("connecting to RabbitMQ: {e:#}; retrying in {pause:?}");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// Declares the queues and the exchange every process uses, with the same options everywhere (RabbitMQ refuses a
/// second declaration that differs). Idempotent.
pub async fn declare(conn: &Connection, names: &Names) -> anyhow::Result<()> {
    let ch = conn.create_channel().await?;
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    for q in [names.write_queue(), names.read_queue()] {
        ch.queue_declare(q.as_str().into(), durable, FieldTable::default())
            .await?;
    }
    ch.exchange_declare(
        names.sync_exchange().as_str().into(),
        ExchangeKind::Fanout,
        ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        },
        FieldTable::default(),
    )
    .await?;
    let _ = ch.close(200, "declared".into()).await;
    Ok(())
}

/// Publishes `body` to a reply queue named by a request's `reply_to`, with its correlation id.
pub async fn reply(
    ch: &Channel,
    reply_to: &str,
    correlation_id: Option<&str>,
    body: &[u8],
) -> anyhow::Result<()> {
    let mut props = BasicProperties::default();
    if let Some(id) = correlation_id {
        props = props.with_correlation_id(id.into());
    }
    ch.basic_publish(
        "".into(),
        reply_to.into(),
        BasicPublishOptions::default(),
        body,
        props,
    )
    .await?;
    Ok(())
}

type Pending = Arc<Mutex<HashMap<String, oneshot::Sender<Vec<u8>>>>>;

/// Sends commands to the master on `writeQ` and waits for their replies (direct reply-to).
#[derive(Clone)]
pub struct Rpc {
    channel: Channel,
    queue: String,
    /// Requests waiting for a reply, by correlation id. No await happens under the lock.
    pending: Pending,
}

impl Rpc {
    pub async fn new(conn: &Connection, names: &Names) -> anyhow::Result<Rpc> {
        let channel = conn.create_channel().await?;
        // Direct reply-to needs the consumer on the publishing channel before the first publish.
        let mut replies = channel
            .basic_consume(
                DIRECT_REPLY_TO.into(),
                "".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..BasicConsumeOptions::default()
                },
                FieldTable::default(),
            )
            .await?;
        let pending: Pending = Arc::default();
        let waiting = pending.clone();
        tokio::spawn(async move {
            while let Some(Ok(d)) = replies.next().await {
                let Some(id) = d.properties.correlation_id() else {
                    continue;
                };
                let tx = waiting
                    .lock()
                    .expect("pending poisoned")
                    .remove(id.as_str());
                if let Some(tx) = tx {
                    let _ = tx.send(d.data);
                }
            }
        });
        Ok(Rpc {
            channel,
            queue: names.write_queue(),
            pending,
        })
    }

    pub async fn call(&self, cmd: &Command, timeout: Duration) -> anyhow::Result<CommandReply> {
        let id = uuid::Uuid::new_v4().to_string();
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .expect("pending poisoned")
            .insert(id.clone(), tx);
        let props = BasicProperties::default()
            .with_reply_to(DIRECT_REPLY_TO.into())
            .with_correlation_id(id.as_str().into())
            .with_expiration(timeout.as_millis().to_string().into());
        let body = serde_json::to_vec(cmd)?;
        let sent = self
            .channel
            .basic_publish(
                "".into(),
                self.queue.as_str().into(),
                BasicPublishOptions::default(),
                &body,
                props,
            )
            .await;
        let res = match sent {
            Ok(_) => tokio::time::timeout(timeout, rx).await,
            Err(e) => {
                self.pending.lock().expect("pending poisoned").remove(&id);
                return Err(e.into());
            }
        };
        self.pending.lock().expect("pending poisoned").remove(&id);
        match res {
            Ok(Ok(body)) => {
                serde_json::from_slice(&body).context("undecodable reply from the master")
            }
            Ok(Err(_)) => bail!("reply channel closed"),
            Err(_) => bail!("no reply from the master within {timeout:?}"),
        }
    }
}
