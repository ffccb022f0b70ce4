//! Figures, printed and never asserted (timings depend on the host): the failover time, from `crash/master` to
//! the first acknowledged write, and the slave replacement time, from `crash/slave` to the first read served
//! by the replacement; ten runs each, p50 and max.
//!
//! Run with: `cargo test -p e2e --test faults -- --ignored --nocapture figures`

use std::time::{Duration, Instant};

use e2e::{st, Cluster};
use protocol::Value;

const RUNS: usize = 10;

fn report(what: &str, mut times: Vec<Duration>) {
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let p50 = (ms(times[(times.len() - 1) / 2]) + ms(times[times.len() / 2])) / 2.0;
    let max = ms(*times.last().expect("runs"));
    let all: Vec<String> = times.iter().map(|d| format!("{:.0}", ms(*d))).collect();
    println!(
        "{what} over {} runs: p50 {p50:.0} ms, max {max:.0} ms (all, ms: {})",
        times.len(),
        all.join(" ")
    );
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "a measurement, not a test: about a minute; run with --ignored --nocapture"]
async fn figures_failover_and_slave_replacement_times_over_ten_runs() {
    // Failover: two slaves, so that after the election one is left to be in sync with the new master.
    let c = Cluster::start(2).await;
    c.write_ok(vec![st("CREATE TABLE t (k INTEGER PRIMARY KEY)", vec![])])
        .await;
    let mut failover = Vec::new();
    for run in 0..RUNS as i64 {
        c.wait_for_workers(3).await;
        // The slaves hear they are in sync (and stand in the election) from the entries they apply.
        c.write_ok(vec![st(
            "INSERT INTO t VALUES (?)",
            vec![Value::Integer(2 * run)],
        )])
        .await;
        let started = Instant::now();
        c.crash_master().await;
        // The orchestrator holds the write through the election and retries it: its 200 is the first
        // acknowledged write of the new master.
        c.write_ok(vec![st(
            "INSERT INTO t VALUES (?)",
            vec![Value::Integer(2 * run + 1)],
        )])
        .await;
        failover.push(started.elapsed());
    }
    c.stop().await;

    // Replacement: one slave, so that after crash/slave only the replacement can serve the read.
    let c = Cluster::start(1).await;
    c.write_ok(vec![st("CREATE TABLE t (k INTEGER PRIMARY KEY)", vec![])])
        .await;
    let mut replacement = Vec::new();
    for run in 0..RUNS as i64 {
        c.wait_for_workers(2).await;
        c.write_ok(vec![st(
            "INSERT INTO t VALUES (?)",
            vec![Value::Integer(run)],
        )])
        .await;
        let started = Instant::now();
        c.crash_slave().await;
        let rows = c.read_ok("SELECT count(*) FROM t", vec![]).await;
        replacement.push(started.elapsed());
        assert_eq!(rows.rows, vec![vec![Value::Integer(run + 1)]]);
    }
    c.stop().await;

    report(
        "failover (crash/master to the first acknowledged write)",
        failover,
    );
    report(
        "slave replacement (crash/slave to the first read served by the new slave)",
        replacement,
    );
}
