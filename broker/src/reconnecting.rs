//! The orchestrator's RPC client: one connection, kept by one task, reopened after a broker restart.
//!
//! The task connects, declares the namespace's queues and opens an [`RpcChannel`]; every clone of the
//! [`ReconnectingRpc`] calls on the channel of the moment. When the connection drops, the task reconnects with
//! the pauses of [`RECONNECT`] and declares again; meanwhile calls fail at once with
//! [`RpcError::Disconnected`] (callers retry within their own budget), and calls that were waiting for a reply
//! fail with [`RpcError::Closed`].

use std::sync::Arc;
use std::time::Duration;

use backon::Retryable;
use lapin::Connection;
use protocol::Names;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::connect::{connect, CONNECT_TIMEOUT, RECONNECT};
use crate::rpc::{RpcChannel, RpcError};
use crate::topology::declare;

/// How often the connection's state is checked, besides the end of the reply consumer: a connection can drop
/// without closing the channel's consumer at once.
const CONNECTION_CHECK: Duration = Duration::from_millis(200);

/// The RPC client. Cheap to clone; every clone uses the connection of the moment.
#[derive(Clone)]
pub struct ReconnectingRpc {
    current: watch::Receiver<Option<RpcChannel>>,
    stop: Arc<watch::Sender<bool>>,
}

/// What to connect to and what to declare there, each time.
struct Target {
    url: String,
    names: Names,
    connection_name: String,
}

impl ReconnectingRpc {
    /// Connects to RabbitMQ (failing if it cannot within [`CONNECT_TIMEOUT`]), declares the namespace's queues,
    /// and spawns the task that keeps the connection: returned so the caller can wait for it after
    /// [`close`](ReconnectingRpc::close). `connection_name` names the connection in the broker's tools.
    pub async fn start(
        url: &str,
        names: &Names,
        connection_name: &str,
    ) -> anyhow::Result<(Self, JoinHandle<()>)> {
        let target = Target {
            url: url.to_owned(),
            names: names.clone(),
            connection_name: connection_name.to_owned(),
        };
        let first = target.establish().await?;
        let (publish, current) = watch::channel(Some(first.1.clone()));
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(keep_connected(target, first, publish, stopped));
        Ok((
            Self {
                current,
                stop: Arc::new(stop),
            },
            task,
        ))
    }

    /// Publishes `body` on `queue` and returns the reply's body, as [`RpcChannel::call`]; fails at once with
    /// [`RpcError::Disconnected`] while reconnecting.
    pub async fn call(
        &self,
        queue: &str,
        body: &[u8],
        timeout: Duration,
    ) -> Result<Vec<u8>, RpcError> {
        self.call_for(queue, body, "", timeout).await
    }

    /// [`ReconnectingRpc::call`] on behalf of HTTP requests, as [`RpcChannel::call_for`].
    pub async fn call_for(
        &self,
        queue: &str,
        body: &[u8],
        request_ids: &str,
        timeout: Duration,
    ) -> Result<Vec<u8>, RpcError> {
        let Some(rpc) = self.current.borrow().clone() else {
            return Err(RpcError::Disconnected);
        };
        rpc.call_for(queue, body, request_ids, timeout).await
    }

    /// Whether a connection is up right now.
    pub fn is_connected(&self) -> bool {
        self.current.borrow().is_some()
    }

    /// Resolves once a connection is up (at once if one is).
    pub async fn connected(&self) {
        let mut current = self.current.clone();
        let _ = current.wait_for(Option::is_some).await;
    }

    /// Closes the connection for good; the task returned by [`ReconnectingRpc::start`] ends once it is closed.
    pub fn close(&self) {
        self.stop.send_replace(true);
    }
}

impl Target {
    async fn establish(&self) -> anyhow::Result<(Connection, RpcChannel)> {
        let connection = connect(&self.url, &self.connection_name, CONNECT_TIMEOUT).await?;
        declare(&connection, &self.names).await?;
        let rpc = RpcChannel::open(&connection).await?;
        Ok((connection, rpc))
    }
}

/// Resolves when the connection or the reply consumer is gone.
async fn lost(connection: &Connection, rpc: &RpcChannel) {
    let mut check = tokio::time::interval(CONNECTION_CHECK);
    loop {
        tokio::select! {
            () = rpc.closed() => return,
            _ = check.tick() => {
                if !connection.status().connected() {
                    return;
                }
            }
        }
    }
}

/// The task that owns the connection: publishes the current channel, and reconnects when the connection drops,
/// until [`ReconnectingRpc::close`].
async fn keep_connected(
    target: Target,
    first: (Connection, RpcChannel),
    publish: watch::Sender<Option<RpcChannel>>,
    mut stop: watch::Receiver<bool>,
) {
    let (mut connection, mut rpc) = first;
    loop {
        let lost = tokio::select! {
            () = lost(&connection, &rpc) => true,
            _ = stop.wait_for(|s| *s) => false,
        };
        // From now on calls fail fast instead of publishing on a dead channel.
        publish.send_replace(None);
        // No reply can come on a lost connection: callers still waiting are woken (`Closed`) now rather than at
        // their timeout.
        rpc.abandon();
        drop(rpc);
        if !lost {
            if let Err(e) = connection.close(200, "shutting down".into()).await {
                tracing::warn!("closing the RabbitMQ connection: {e}");
            }
            return;
        }
        tracing::warn!("lost the connection to RabbitMQ; reconnecting");
        let again = (|| target.establish())
            .retry(RECONNECT)
            .notify(|e, pause: Duration| {
                tracing::warn!("reconnecting to RabbitMQ: {e:#}; next attempt in {pause:?}");
            });
        (connection, rpc) = tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            established = again => established.expect("RECONNECT retries without end"),
        };
        tracing::info!("reconnected to RabbitMQ");
        publish.send_replace(Some(rpc.clone()));
    }
}
