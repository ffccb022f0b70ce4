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

/// The AMQP heartbeat asked for, in seconds, unless the URL sets one (`?heartbeat=`). RabbitMQ closes a connection
/// that has been silent for two of them, and hands what it had delivered on it to the other consumers. The
/// broker's default, 60 s, lets a paused process (a deposed master in SIGSTOP, say) hold the commands delivered
/// to it for two minutes, and lets a connection cut by a partition look alive as long; 5 s bounds both to about
/// 10 s, and is still far above any pause a loaded host gives a healthy process.
pub const HEARTBEAT_SECS: u16 = 5;

/// The URL with the default heartbeat where it has none.
fn with_heartbeat(url: &str) -> anyhow::Result<lapin::uri::AMQPUri> {
    let mut uri: lapin::uri::AMQPUri = url
        .parse()
        .map_err(|e| anyhow::anyhow!("{url} is not an AMQP URL: {e}"))?;
    uri.query.heartbeat.get_or_insert(HEARTBEAT_SECS);
    Ok(uri)
}

/// Connects once, giving up after `timeout`. `name` is the connection's name in the broker's tools, so an
/// operator (or a test) can tell the processes' connections apart.
pub async fn connect(url: &str, name: &str, timeout: Duration) -> anyhow::Result<Connection> {
    let properties = ConnectionProperties::default().with_connection_name(name.into());
    let uri = with_heartbeat(url)?;
    tokio::time::timeout(timeout, Connection::connect_uri(uri, properties))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_without_a_heartbeat_gets_the_default_and_one_with_keeps_its_own() {
        let uri = with_heartbeat("amqp://127.0.0.1:5672/%2f").unwrap();
        assert_eq!(uri.query.heartbeat, Some(HEARTBEAT_SECS));
        let uri = with_heartbeat("amqp://127.0.0.1:5672/%2f?heartbeat=30").unwrap();
        assert_eq!(uri.query.heartbeat, Some(30));
        assert!(with_heartbeat("http://x").is_err());
    }
}
