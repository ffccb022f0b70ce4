//! The orchestrator's own broker connection closed by the broker (as a broker restart does, but for this one
//! connection only, so the other tests sharing the broker are not disturbed): it reconnects by itself, and
//! requests made meanwhile are retried within their deadline instead of failing.

use std::process::Command;

use e2e::{st, wait_until, Cluster};
use protocol::Value;

/// The broker-side ids of the connections named `name`.
fn connections_named(name: &str) -> Vec<String> {
    let out = Command::new("rabbitmqctl")
        .args([
            "list_connections",
            "--quiet",
            "--no-table-headers",
            "pid",
            "client_properties",
        ])
        .output()
        .expect("rabbitmqctl runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let wanted = format!("{{\"connection_name\",\"{name}\"}}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|line| line.contains(&wanted))
        .filter_map(|line| line.split_whitespace().next().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn when_the_broker_closes_the_orchestrators_connection_it_reconnects_and_requests_succeed() {
    let c = Cluster::start(1).await;
    c.write_ok(vec![st("CREATE TABLE t (k INTEGER PRIMARY KEY)", vec![])])
        .await;
    let name = format!("orchestrator-{}", c.names.namespace());
    let before = connections_named(&name);
    assert_eq!(before.len(), 1, "connections named {name}: {before:?}");

    let closed = Command::new("rabbitmqctl")
        .args(["close_connection", &before[0], "closed by a test"])
        .status()
        .expect("rabbitmqctl runs");
    assert!(closed.success());

    // Straight away: the write is held and retried until the new connection is up.
    c.write_ok(vec![st("INSERT INTO t VALUES (1)", vec![])])
        .await;
    let rows = c.read_ok("SELECT count(*) FROM t", vec![]).await;
    assert_eq!(rows.rows, vec![vec![Value::Integer(1)]]);
    wait_until(
        || {
            let now = connections_named(&name);
            now.len() == 1 && now != before
        },
        "one new connection",
    )
    .await;
    c.stop().await;
}
