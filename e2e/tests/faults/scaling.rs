//! Auto-scaling of the read slaves: the policy's exact counts, reads and writes during scaling, the ceiling.

use std::time::Duration;

use e2e::{st, Cluster, Options};
use protocol::Value;
use reqwest::StatusCode;

/// The orchestrator's scaling state: (desired slaves, registered slaves).
async fn scaling(c: &Cluster) -> (u64, u64) {
    let (status, body) = c.get("/api/v1/scaling").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    (
        body["desired"].as_u64().expect("desired"),
        body["actual"].as_u64().expect("actual"),
    )
}

/// Waits for the next scaling decision to set the desired count to `desired`.
async fn wait_for_desired(c: &Cluster, desired: u64) {
    let deadline = tokio::time::Instant::now() + e2e::SETTLE;
    while scaling(c).await.0 != desired {
        assert!(
            tokio::time::Instant::now() < deadline,
            "desired never became {desired}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn reads(c: &Cluster, n: usize) {
    for _ in 0..n {
        let rows = c.read_ok("SELECT count(*) FROM t", vec![]).await;
        assert_eq!(rows.columns.len(), 1);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_number_of_slaves_follows_the_reads_of_each_interval_with_the_exact_counts_of_the_policy(
) {
    // Long enough that a batch of reads, started right after a decision, ends well before the next one even
    // while a slave starts on a loaded machine.
    let c = Cluster::start_opts(Options {
        scale_interval_secs: Some(6),
        ..Options::new(1)
    })
    .await;
    c.write_ok(vec![st("CREATE TABLE t (id INTEGER PRIMARY KEY)", vec![])])
        .await;
    assert_eq!(scaling(&c).await, (1, 1), "0 reads: 1 slave");
    // Each batch of reads right after a decision, so that it falls within one interval; the cluster grows
    // while the next batch runs, and reads and writes keep working meanwhile.
    for (n, slaves) in [(21, 2), (45, 3), (61, 4)] {
        reads(&c, n).await;
        c.write_ok(vec![st("INSERT INTO t DEFAULT VALUES", vec![])])
            .await;
        wait_for_desired(&c, slaves).await;
    }
    c.wait_for_workers(5).await;
    // An idle interval: back to one slave, the others removed gracefully and not replaced.
    wait_for_desired(&c, 1).await;
    c.wait_for_workers(2).await;
    c.write_ok(vec![st("INSERT INTO t DEFAULT VALUES", vec![])])
        .await;
    let rows = c.read_ok("SELECT count(*) FROM t", vec![]).await;
    assert_eq!(rows.rows, vec![vec![Value::Integer(4)]]);
    assert_eq!(scaling(&c).await, (1, 1));
    c.assert_all_identical().await;
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn scaling_stops_at_the_ceiling() {
    let c = Cluster::start_opts(Options {
        scale_interval_secs: Some(3),
        max_slaves: Some(2),
        ..Options::new(1)
    })
    .await;
    c.write_ok(vec![st("CREATE TABLE t (id INTEGER PRIMARY KEY)", vec![])])
        .await;
    reads(&c, 70).await;
    wait_for_desired(&c, 2).await;
    c.wait_for_workers(3).await;
    c.stop().await;
}
