//! Request/reply over RabbitMQ: publish a request on a queue, wait for the one reply that carries its
//! correlation id.
//!
//! [`AmqpRpc`] uses RabbitMQ's direct reply-to: one channel consumes the pseudo-queue `amq.rabbitmq.reply-to`
//! (which must happen before that channel publishes with `reply_to` set) and publishes every request. A task
//! reads the replies and hands each to the caller waiting on its correlation id. Handlers depend on the
//! [`Rpc`] trait so the HTTP layer can be tested with a fake.
//!
//! One task owns the connection. When it drops (a broker restart), the task reconnects with a growing pause,
//! declares the queues again and opens a new channel; meanwhile calls fail at once with
//! [`RpcError::Disconnected`] (callers retry within their deadline), and calls that were waiting for a reply
//! fail with [`RpcError::Closed`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use futures::future::BoxFuture;
use futures::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicPublishOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use protocol::Names;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

/// RabbitMQ's pseudo-queue for direct reply-to.
const REPLY_TO: &str = "amq.rabbitmq.reply-to";

/// How long one connection attempt may take: long enough for a broker that is still booting, short enough that
/// a missing broker is reported (at start) or retried (later) rather than waited on forever.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Pauses between reconnection attempts: from the first, doubling up to the last. A restarted broker is back
/// within seconds; two seconds between attempts at most keeps the gap after it short without hammering it.
const RECONNECT_PAUSE_FIRST: Duration = Duration::from_millis(100);
const RECONNECT_PAUSE_MAX: Duration = Duration::from_secs(2);

/// How often the connection's state is checked, besides the end of the reply consumer.
const CONNECTION_CHECK: Duration = Duration::from_millis(200);

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
    /// Not connected to RabbitMQ right now (reconnecting): nothing was sent.
    #[error("not connected to RabbitMQ")]
    Disconnected,
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

/// The channel requests go out on and the callers waiting on its replies: valid for one connection.
#[derive(Clone)]
struct Link {
    channel: Channel,
    pending: Pending,
}

/// The RPC client. Cheap to clone; every clone uses the connection of the moment.
#[derive(Clone)]
pub struct AmqpRpc {
    link: watch::Receiver<Option<Link>>,
    stop: Arc<watch::Sender<bool>>,
}

impl AmqpRpc {
    /// Connects to RabbitMQ (failing if it cannot within 10 s), declares the request queues, and
    /// spawns the task that keeps the connection: returned so the caller can wait for it after [`close`].
    ///
    /// [`close`]: AmqpRpc::close
    pub async fn start(url: &str, names: &Names) -> anyhow::Result<(Self, JoinHandle<()>)> {
        let closing = Arc::new(AtomicBool::new(false));
        let first = establish(url, names, &closing).await?;
        let (links, link) = watch::channel(Some(first.link.clone()));
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(keep_connected(
            url.to_owned(),
            names.clone(),
            first,
            links,
            stopped,
            closing,
        ));
        Ok((
            Self {
                link,
                stop: Arc::new(stop),
            },
            task,
        ))
    }

    /// Closes the connection for good; the task returned by [`AmqpRpc::start`] ends once it is closed.
    pub fn close(&self) {
        self.stop.send_replace(true);
    }

    async fn publish_and_wait(
        &self,
        queue: &str,
        body: &[u8],
        timeout: Duration,
    ) -> Result<Vec<u8>, RpcError> {
        let Some(link) = self.link.borrow().clone() else {
            return Err(RpcError::Disconnected);
        };
        let correlation_id = uuid::Uuid::new_v4().to_string();
        let (tx, rx) = oneshot::channel();
        link.pending
            .lock()
            .expect("pending map poisoned")
            .insert(correlation_id.clone(), tx);
        // Removes the entry however this call ends: reply, timeout, or the HTTP client going away (which
        // drops this future), so the map never grows with abandoned calls.
        let _guard = PendingGuard {
            pending: &link.pending,
            id: &correlation_id,
        };
        let properties = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_reply_to(REPLY_TO.into())
            .with_correlation_id(correlation_id.as_str().into())
            .with_expiration(timeout.as_millis().to_string().into());
        // Without publisher confirms the returned confirmation resolves at once; a request lost by the broker
        // shows up as a timeout, like one that no worker took.
        link.channel
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

/// One live connection with its RPC channel and the task dispatching its replies.
struct Established {
    connection: Connection,
    link: Link,
    dispatcher: JoinHandle<()>,
}

impl Established {
    /// Resolves when the connection or the reply consumer is gone.
    async fn lost(&mut self) {
        let mut check = tokio::time::interval(CONNECTION_CHECK);
        loop {
            tokio::select! {
                _ = &mut self.dispatcher => return,
                _ = check.tick() => {
                    if !self.connection.status().connected() {
                        return;
                    }
                }
            }
        }
    }
}

/// Connects, declares the queues and starts consuming replies on a new channel.
async fn establish(
    url: &str,
    names: &Names,
    closing: &Arc<AtomicBool>,
) -> anyhow::Result<Established> {
    let connection = tokio::time::timeout(
        CONNECT_TIMEOUT,
        Connection::connect(
            url,
            // Named after the namespace, so an operator (or a test) can tell the clusters' connections apart.
            ConnectionProperties::default()
                .with_connection_name(format!("orchestrator-{}", names.namespace()).into()),
        ),
    )
    .await
    .with_context(|| format!("timed out connecting to RabbitMQ at {url}"))?
    .with_context(|| format!("connecting to RabbitMQ at {url}"))?;
    declare_queues(&connection, names).await?;
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
    let dispatcher = tokio::spawn(dispatch_replies(replies, pending.clone(), closing.clone()));
    Ok(Established {
        connection,
        link: Link { channel, pending },
        dispatcher,
    })
}

/// Declares the queues requests go to, exactly as the workers declare them, so a request published before any
/// worker runs waits in its queue instead of being dropped by the broker.
async fn declare_queues(connection: &Connection, names: &Names) -> anyhow::Result<()> {
    let channel = connection
        .create_channel()
        .await
        .context("opening a channel")?;
    for queue in [names.write_queue(), names.read_queue()] {
        channel
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions {
                    durable: true,
                    exclusive: false,
                    auto_delete: false,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .with_context(|| format!("declaring queue {queue}"))?;
    }
    channel
        .close(200, "declared".into())
        .await
        .context("closing the declaring channel")?;
    Ok(())
}

/// The task that owns the connection: publishes the current link, and reconnects when the connection drops,
/// until [`AmqpRpc::close`].
async fn keep_connected(
    url: String,
    names: Names,
    mut current: Established,
    links: watch::Sender<Option<Link>>,
    mut stop: watch::Receiver<bool>,
    closing: Arc<AtomicBool>,
) {
    loop {
        let lost = tokio::select! {
            () = current.lost() => true,
            _ = stop.wait_for(|s| *s) => false,
        };
        // From now on calls fail fast instead of publishing on a dead channel.
        links.send_replace(None);
        if !lost {
            closing.store(true, Ordering::Relaxed);
            if let Err(e) = current.connection.close(200, "shutting down".into()).await {
                tracing::warn!("closing the RabbitMQ connection: {e}");
            }
            return;
        }
        tracing::warn!("lost the connection to RabbitMQ; reconnecting");
        // No reply can come on the lost connection: wake every waiting caller now (`Closed`) rather than at
        // its timeout.
        current.dispatcher.abort();
        current
            .link
            .pending
            .lock()
            .expect("pending map poisoned")
            .clear();
        let mut pause = RECONNECT_PAUSE_FIRST;
        current = loop {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                attempt = establish(&url, &names, &closing) => match attempt {
                    Ok(established) => break established,
                    Err(e) => tracing::warn!(
                        "reconnecting to RabbitMQ: {e:#}; next attempt in {pause:?}"
                    ),
                },
            }
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                () = tokio::time::sleep(pause) => {}
            }
            pause = (pause * 2).min(RECONNECT_PAUSE_MAX);
        };
        tracing::info!("reconnected to RabbitMQ");
        links.send_replace(Some(current.link.clone()));
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
        tracing::warn!("the RPC reply consumer stopped");
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
