//! Connecting to RabbitMQ, once or until it works.

use std::time::Duration;

use anyhow::Context;
use backon::{ExponentialBuilder, Retryable};
use lapin::{Connection, ConnectionProperties};

/// How long one connection attempt may take: long enough for a broker that is still booting, short enough that
/// a missing broker is reported (at start) or retried (later) rather than waited on forever.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The pauses between attempts to reach RabbitMQ again: 100 ms, doubling up to 2 s, for as long as it takes
/// (a process outlives a broker restart). A restarted broker is back within seconds; two seconds between
/// attempts at most keeps the gap after it short without hammering it.
pub const RECONNECT: ExponentialBuilder = ExponentialBuilder::new()
    .with_min_delay(Duration::from_millis(100))
    .with_max_delay(Duration::from_secs(2))
    .without_max_times();

/// Connects once, giving up after `timeout`. `name` is the connection's name in the broker's tools, so an
/// operator (or a test) can tell the processes' connections apart.
pub async fn connect(url: &str, name: &str, timeout: Duration) -> anyhow::Result<Connection> {
    let properties = ConnectionProperties::default().with_connection_name(name.into());
    tokio::time::timeout(timeout, Connection::connect(url, properties))
        .await
        .with_context(|| format!("timed out connecting to RabbitMQ at {url}"))?
        .with_context(|| format!("connecting to RabbitMQ at {url}"))
}

/// Connects, retrying with the pauses of [`RECONNECT`] until it succeeds.
pub async fn connect_with_backoff(url: &str, name: &str) -> Connection {
    let attempt = || connect(url, name, CONNECT_TIMEOUT);
    let connected = attempt
        .retry(RECONNECT)
        .notify(|e, pause: Duration| {
            tracing::warn!("connecting to RabbitMQ: {e:#}; next attempt in {pause:?}");
        })
        .await;
    connected.expect("RECONNECT retries without end")
}
