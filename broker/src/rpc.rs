//! Request/reply over RabbitMQ on one channel: publish a request with a fresh correlation id and
//! `reply_to` = direct reply-to, and hand the one reply that carries that id back to its caller.
//!
//! Direct reply-to (the pseudo-queue [`DIRECT_REPLY_TO`]) needs no queue of its own: the broker routes a reply
//! straight to the channel that published the request, provided that channel consumes the pseudo-queue (without
//! acknowledgements) before it publishes. So the channel that publishes is the channel that consumes, and an
//! [`RpcChannel`] is both.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lapin::options::{BasicConsumeOptions, BasicPublishOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::task::AbortOnDropHandle;

use crate::consume::consume_and_forward;

/// The AMQP header naming the HTTP requests a message carries (their `X-Request-Id`s, space-separated, in the
/// order of the message's items). Absent when the sender served no request, as in tests and benchmarks.
pub const REQUEST_IDS_HEADER: &str = "x-request-ids";

/// The request ids a delivered message names ([`REQUEST_IDS_HEADER`]), or `""`.
pub fn request_ids(properties: &BasicProperties) -> &str {
    properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get(REQUEST_IDS_HEADER))
        .and_then(|v| match v {
            AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok(),
            _ => None,
        })
        .unwrap_or("")
}
/// RabbitMQ's pseudo-queue for direct reply-to: replies come straight back to the consuming channel.
pub const DIRECT_REPLY_TO: &str = "amq.rabbitmq.reply-to";

/// Why a call got no reply. For an HTTP client every kind is a 503: the request may or may not have run.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    #[error("no reply within {0:?}")]
    TimedOut(Duration),
    #[error("broker error: {0}")]
    Broker(#[from] lapin::Error),
    /// The channel's reply consumer stopped (the channel or connection closed), so no reply can arrive.
    #[error("the reply channel is closed")]
    Closed,
    /// Not connected to RabbitMQ right now (a [`crate::ReconnectingRpc`] reconnecting): nothing was sent.
    #[error("not connected to RabbitMQ")]
    Disconnected,
}

/// Publishes `body` to the queue named by a request's `reply_to`, with the request's correlation id.
pub async fn reply(
    channel: &Channel,
    reply_to: &str,
    correlation_id: Option<&str>,
    body: &[u8],
) -> lapin::Result<()> {
    let mut properties = BasicProperties::default();
    if let Some(id) = correlation_id {
        properties = properties.with_correlation_id(id.into());
    }
    channel
        .basic_publish(
            "".into(),
            reply_to.into(),
            BasicPublishOptions::default(),
            body,
            properties,
        )
        .await?;
    Ok(())
}

/// Callers waiting for a reply, by correlation id, until the channel closes. A `std::sync::Mutex` is enough:
/// it is held only to insert, remove or take entries, never across an `.await`.
#[derive(Default)]
struct Waiting {
    callers: HashMap<String, oneshot::Sender<Vec<u8>>>,
    /// Set when the reply consumer ended: from then on a call fails at once instead of waiting out its
    /// timeout.
    closed: bool,
}

struct Shared {
    waiting: Mutex<Waiting>,
    closed: watch::Sender<bool>,
}

/// Correlation-id RPC on one channel of one connection. Cheap to clone. Once the channel closes (or its
/// connection does) every waiting call and every later one fails with [`RpcError::Closed`]; a new one must then
/// be opened on a new connection.
#[derive(Clone)]
pub struct RpcChannel {
    channel: Channel,
    shared: Arc<Shared>,
    /// The task that hands replies to callers; stops with the last clone.
    _dispatcher: Arc<AbortOnDropHandle<()>>,
}

impl RpcChannel {
    /// Opens a channel on `connection` and starts consuming its replies.
    pub async fn open(connection: &Connection) -> lapin::Result<Self> {
        let channel = connection.create_channel().await?;
        let replies = consume_and_forward(
            &channel,
            DIRECT_REPLY_TO,
            // Direct reply-to requires no_ack: replies are not queued, so there is nothing to acknowledge.
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
        )
        .await?;
        let shared = Arc::new(Shared {
            waiting: Mutex::default(),
            closed: watch::Sender::new(false),
        });
        let dispatcher = tokio::spawn(dispatch(replies, shared.clone()));
        Ok(Self {
            channel,
            shared,
            _dispatcher: Arc::new(AbortOnDropHandle::new(dispatcher)),
        })
    }

    /// Publishes `body` on `queue` and returns the reply's body. Gives up after `timeout`, which covers the
    /// publish too (a broker applying flow control can stall it); the request expires in the broker at the same
    /// moment, so a request nobody took in time is not run late.
    pub async fn call(
        &self,
        queue: &str,
        body: &[u8],
        timeout: Duration,
    ) -> Result<Vec<u8>, RpcError> {
        self.call_for(queue, body, "", timeout).await
    }

    /// [`RpcChannel::call`] on behalf of the HTTP requests `request_ids` (space-separated, empty for none),
    /// named in the message's [`REQUEST_IDS_HEADER`] so that the side answering can log them.
    pub async fn call_for(
        &self,
        queue: &str,
        body: &[u8],
        request_ids: &str,
        timeout: Duration,
    ) -> Result<Vec<u8>, RpcError> {
        tokio::time::timeout(
            timeout,
            self.publish_and_wait(queue, body, request_ids, timeout),
        )
        .await
        .unwrap_or(Err(RpcError::TimedOut(timeout)))
    }

    /// Whether the reply consumer has ended: every call fails from then on.
    pub fn is_closed(&self) -> bool {
        *self.shared.closed.borrow()
    }

    /// Resolves once the reply consumer has ended (the channel or its connection closed).
    pub async fn closed(&self) {
        let mut closed = self.shared.closed.subscribe();
        // The sender lives in `shared`, which this value holds: the wait cannot fail.
        let _ = closed.wait_for(|c| *c).await;
    }

    /// Fails every waiting call and every later one with [`RpcError::Closed`], as the end of the channel does:
    /// for an owner that knows the connection is gone before the channel's consumer does.
    pub fn abandon(&self) {
        close(&self.shared);
    }

    /// The channel requests go out on.
    pub fn channel(&self) -> &Channel {
        &self.channel
    }

    async fn publish_and_wait(
        &self,
        queue: &str,
        body: &[u8],
        request_ids: &str,
        timeout: Duration,
    ) -> Result<Vec<u8>, RpcError> {
        let correlation_id = uuid::Uuid::new_v4().to_string();
        let (tx, rx) = oneshot::channel();
        {
            let mut waiting = self
                .shared
                .waiting
                .lock()
                .expect("waiting callers poisoned");
            if waiting.closed {
                return Err(RpcError::Closed);
            }
            waiting.callers.insert(correlation_id.clone(), tx);
        }
        // Removes the entry however this call ends: reply, timeout, or the caller going away (which drops this
        // future), so the map never grows with abandoned calls.
        let _forget = Forget {
            shared: &self.shared,
            id: &correlation_id,
        };
        let mut properties = BasicProperties::default()
            .with_reply_to(DIRECT_REPLY_TO.into())
            .with_correlation_id(correlation_id.as_str().into())
            .with_expiration(timeout.as_millis().to_string().into());
        if !request_ids.is_empty() {
            let mut headers = FieldTable::default();
            headers.insert(
                REQUEST_IDS_HEADER.into(),
                AMQPValue::LongString(request_ids.into()),
            );
            properties = properties.with_headers(headers);
        }
        // Without publisher confirms the returned confirmation resolves at once; a request lost by the broker
        // shows up as a timeout, like one that nobody took.
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

struct Forget<'a> {
    shared: &'a Shared,
    id: &'a str,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        if let Ok(mut waiting) = self.shared.waiting.lock() {
            waiting.callers.remove(self.id);
        }
    }
}

/// Hands each reply to its caller until the consumer ends; then fails every waiting caller at once.
async fn dispatch(
    mut replies: mpsc::UnboundedReceiver<lapin::message::Delivery>,
    shared: Arc<Shared>,
) {
    while let Some(delivery) = replies.recv().await {
        let id = delivery
            .properties
            .correlation_id()
            .as_ref()
            .map(|id| id.as_str().to_owned());
        hand_over(&shared.waiting, id.as_deref(), delivery.data);
    }
    close(&shared);
}

fn close(shared: &Shared) {
    {
        let mut waiting = shared.waiting.lock().expect("waiting callers poisoned");
        waiting.closed = true;
        // Dropping the senders wakes every waiting caller with `Closed`.
        waiting.callers.clear();
    }
    shared.closed.send_replace(true);
}

/// Delivers one reply. A reply nobody waits for (its caller timed out) is dropped: the request it answers
/// was run, and a retry with the same idempotency key gets the same answer.
fn hand_over(waiting: &Mutex<Waiting>, correlation_id: Option<&str>, body: Vec<u8>) {
    let Some(id) = correlation_id else {
        tracing::warn!("dropping a reply without correlation id");
        return;
    };
    let caller = waiting
        .lock()
        .expect("waiting callers poisoned")
        .callers
        .remove(id);
    match caller {
        // The caller may have given up since; nothing to do then.
        Some(tx) => {
            let _ = tx.send(body);
        }
        None => tracing::debug!("dropping a late reply for {id}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiting_for(ids: &[&str]) -> (Mutex<Waiting>, Vec<oneshot::Receiver<Vec<u8>>>) {
        let mut waiting = Waiting::default();
        let receivers = ids
            .iter()
            .map(|id| {
                let (tx, rx) = oneshot::channel();
                waiting.callers.insert((*id).to_owned(), tx);
                rx
            })
            .collect();
        (Mutex::new(waiting), receivers)
    }

    #[tokio::test]
    async fn a_reply_reaches_the_caller_with_its_correlation_id() {
        let (waiting, mut receivers) = waiting_for(&["a", "b"]);
        hand_over(&waiting, Some("b"), b"two".to_vec());
        hand_over(&waiting, Some("a"), b"one".to_vec());
        assert_eq!(receivers.remove(0).await.unwrap(), b"one");
        assert_eq!(receivers.remove(0).await.unwrap(), b"two");
        assert!(waiting.lock().unwrap().callers.is_empty());
    }

    #[test]
    fn late_and_anonymous_replies_are_dropped() {
        let (waiting, _receivers) = waiting_for(&["a"]);
        hand_over(&waiting, Some("gone"), b"x".to_vec());
        hand_over(&waiting, None, b"x".to_vec());
        assert_eq!(waiting.lock().unwrap().callers.len(), 1);
    }

    #[test]
    fn an_abandoned_call_is_forgotten() {
        let (waiting, _receivers) = waiting_for(&["a"]);
        let shared = Shared {
            waiting,
            closed: watch::Sender::new(false),
        };
        drop(Forget {
            shared: &shared,
            id: "a",
        });
        assert!(shared.waiting.lock().unwrap().callers.is_empty());
    }
}
