//! Request/reply over RabbitMQ: publish a request on a queue, wait for the one reply that carries its
//! correlation id.
//!
//! [`AmqpRpc`] uses RabbitMQ's direct reply-to: one channel consumes the pseudo-queue `amq.rabbitmq.reply-to`
//! (which must happen before that channel publishes with `reply_to` set) and publishes every request. A task
//! reads the replies and hands each to the caller waiting on its correlation id. Handlers depend on the
//! [`Rpc`] trait so the HTTP layer can be tested with a fake.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use futures::future::BoxFuture;
use futures::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicPublishOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection};
use tokio::sync::oneshot;

/// RabbitMQ's pseudo-queue for direct reply-to.
const REPLY_TO: &str = "amq.rabbitmq.reply-to";

/// Why a call got no reply. Every kind is a 503 for the client: the request may or may not have run.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    #[error("no reply within {0:?}")]
    TimedOut(Duration),
    #[error("broker error: {0}")]
    Broker(#[from] lapin::Error),
    /// The reply consumer stopped (the channel or connection closed), so no reply can arrive.
    #[error("the reply channel is closed")]
    Closed,
}

/// Sends one request and waits for its reply.
pub trait Rpc: Send + Sync + 'static {
    /// Publishes `body` on `queue` and returns the reply's body. Gives up after `timeout`, and the request
    /// message expires at the same moment, so a request nobody took in time is not run late.
    fn call<'a>(
        &'a self,
        queue: &'a str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<Vec<u8>, RpcError>>;
}

/// Callers waiting for a reply, by correlation id. A `std::sync::Mutex` is enough: it is held only to insert,
/// remove or take an entry, never across an `.await`.
type Pending = Arc<Mutex<HashMap<String, oneshot::Sender<Vec<u8>>>>>;

/// The RPC client over one AMQP channel. Cheap to clone.
#[derive(Clone)]
pub struct AmqpRpc {
    channel: Channel,
    pending: Pending,
    /// Set before a deliberate shutdown, so the end of the reply consumer is not reported as a failure.
    closing: Arc<AtomicBool>,
}

impl AmqpRpc {
    /// Opens the channel on `connection`, starts consuming replies and spawns the task that dispatches them.
    pub async fn start(connection: &Connection) -> anyhow::Result<Self> {
        let channel = connection
            .create_channel()
            .await
            .context("opening the RPC channel")?;
        let replies = channel
            .basic_consume(
                REPLY_TO.into(),
                "orchestrator-replies".into(),
                // Direct reply-to requires no_ack: replies are not queued, so there is nothing to acknowledge.
                BasicConsumeOptions {
                    no_ack: true,
                    ..BasicConsumeOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .context("consuming amq.rabbitmq.reply-to")?;
        let pending: Pending = Arc::default();
        let closing = Arc::new(AtomicBool::new(false));
        tokio::spawn(dispatch_replies(replies, pending.clone(), closing.clone()));
        Ok(Self {
            channel,
            pending,
            closing,
        })
    }

    /// Announces that the connection is about to be closed on purpose.
    pub fn expect_close(&self) {
        self.closing.store(true, Ordering::Relaxed);
    }

    async fn publish_and_wait(
        &self,
        queue: &str,
        body: &[u8],
        timeout: Duration,
    ) -> Result<Vec<u8>, RpcError> {
        let correlation_id = uuid::Uuid::new_v4().to_string();
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .expect("pending map poisoned")
            .insert(correlation_id.clone(), tx);
        // Removes the entry however this call ends: reply, timeout, or the HTTP client going away (which
        // drops this future), so the map never grows with abandoned calls.
        let _guard = PendingGuard {
            pending: &self.pending,
            id: &correlation_id,
        };
        let properties = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_reply_to(REPLY_TO.into())
            .with_correlation_id(correlation_id.as_str().into())
            .with_expiration(timeout.as_millis().to_string().into());
        // Without publisher confirms the returned confirmation resolves at once; a request lost by the broker
        // shows up as a timeout, like one that no worker took.
        self.channel
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                body,
                properties,
            )
            .await?;
        rx.await.map_err(|_| RpcError::Closed)
    }
}

impl Rpc for AmqpRpc {
    fn call<'a>(
        &'a self,
        queue: &'a str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<Vec<u8>, RpcError>> {
        Box::pin(async move {
            // The timeout covers the publish too: a broker applying flow control can stall it.
            tokio::time::timeout(timeout, self.publish_and_wait(queue, &body, timeout))
                .await
                .unwrap_or(Err(RpcError::TimedOut(timeout)))
        })
    }
}

struct PendingGuard<'a> {
    pending: &'a Pending,
    id: &'a str,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        if let Ok(mut map) = self.pending.lock() {
            map.remove(self.id);
        }
    }
}

/// Hands each reply to its caller until the consumer ends; then fails every waiting caller at once.
async fn dispatch_replies(
    mut replies: lapin::Consumer,
    pending: Pending,
    closing: Arc<AtomicBool>,
) {
    while let Some(delivery) = replies.next().await {
        match delivery {
            Ok(delivery) => {
                let id = delivery
                    .properties
                    .correlation_id()
                    .as_ref()
                    .map(|id| id.as_str().to_owned());
                handle_reply(&pending, id.as_deref(), delivery.data);
            }
            Err(e) => {
                if !closing.load(Ordering::Relaxed) {
                    tracing::error!("the RPC reply consumer failed: {e}");
                }
                break;
            }
        }
    }
    if !closing.load(Ordering::Relaxed) {
        tracing::warn!("the RPC reply consumer stopped; database requests will fail with 503");
    }
    // Dropping the senders wakes every waiting caller with `Closed`.
    pending.lock().expect("pending map poisoned").clear();
}

/// Delivers one reply. A reply nobody waits for (its caller timed out) is dropped: the request it answers was
/// run, and a retry with the same idempotency key will get the same answer.
fn handle_reply(pending: &Pending, correlation_id: Option<&str>, body: Vec<u8>) {
    let Some(id) = correlation_id else {
        tracing::warn!("dropping a reply without correlation id");
        return;
    };
    let waiter = pending.lock().expect("pending map poisoned").remove(id);
    match waiter {
        Some(tx) => {
            // The caller may have given up since; nothing to do then.
            let _ = tx.send(body);
        }
        None => tracing::debug!("dropping a late reply for {id}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_reply_reaches_the_caller_with_its_correlation_id() {
        let pending: Pending = Arc::default();
        let (tx1, rx1) = oneshot::channel();
        let (tx2, rx2) = oneshot::channel();
        pending.lock().unwrap().insert("a".into(), tx1);
        pending.lock().unwrap().insert("b".into(), tx2);
        handle_reply(&pending, Some("b"), b"two".to_vec());
        handle_reply(&pending, Some("a"), b"one".to_vec());
        assert_eq!(rx1.await.unwrap(), b"one");
        assert_eq!(rx2.await.unwrap(), b"two");
        assert!(pending.lock().unwrap().is_empty());
    }

    #[test]
    fn late_and_anonymous_replies_are_dropped() {
        let pending: Pending = Arc::default();
        handle_reply(&pending, Some("gone"), b"x".to_vec());
        handle_reply(&pending, None, b"x".to_vec());
        assert!(pending.lock().unwrap().is_empty());
    }

    #[test]
    fn the_guard_forgets_an_abandoned_call() {
        let pending: Pending = Arc::default();
        let (tx, _rx) = oneshot::channel();
        pending.lock().unwrap().insert("a".into(), tx);
        drop(PendingGuard {
            pending: &pending,
            id: "a",
        });
        assert!(pending.lock().unwrap().is_empty());
    }
}
