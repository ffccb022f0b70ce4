//! Figures, printed and never asserted (timings depend on the host): the failover time, from `crash/master` to
//! the first acknowledged write; the slave replacement time, from `crash/slave` to the first read served by the
//! replacement; the time from a scaling decision to the new slave in sync and to it serving reads, with an empty
//! database and with 100,000 rows; ten runs each, p50 and max.
//!
//! Run with: `cargo test -p e2e --test faults -- --ignored --nocapture figures`

use std::time::{Duration, Instant};

use e2e::{st, Cluster, Options};
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

/// Fills `t (k, v)` with `rows` rows of about 60 bytes, in writes of 5,000 rows (well under the 1 MiB body
/// limit).
async fn fill(c: &Cluster, rows: i64) {
    c.write_ok(vec![st(
        "CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT NOT NULL)",
        vec![],
    )])
    .await;
    for start in (0..rows).step_by(5_000) {
        let values: Vec<String> = (start..rows.min(start + 5_000))
            .map(|k| format!("({k}, 'row {k:08}: a ride from one locality to another')"))
            .collect();
        c.write_ok(vec![st(
            &format!("INSERT INTO t VALUES {}", values.join(",")),
            vec![],
        )])
        .await;
    }
}

/// How many slaves consume readQ, as the broker counts them: a slave consumes it exactly while it may serve.
async fn read_consumers(ch: &lapin::Channel, c: &Cluster) -> u32 {
    let passive = lapin::options::QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    ch.queue_declare(
        c.names.read_queue().as_str().into(),
        passive,
        lapin::types::FieldTable::default(),
    )
    .await
    .expect("readQ")
    .consumer_count()
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "a measurement, not a test: about two minutes; run with --ignored --nocapture"]
async fn figures_time_from_a_scaling_decision_to_the_new_slave_serving_reads() {
    let broker = broker::connect(e2e::AMQP_URL, "e2e-figures", broker::CONNECT_TIMEOUT)
        .await
        .expect("RabbitMQ");
    let ch = broker.create_channel().await.expect("a channel");
    for rows in [0, 100_000] {
        // Long enough that a new slave with 100,000 rows serves before the next decision.
        let c = Cluster::start_opts(Options {
            scale_interval_secs: Some(3),
            max_slaves: Some(2),
            ..Options::new(1)
        })
        .await;
        let filled = Instant::now();
        fill(&c, rows).await;
        let filled = filled.elapsed();
        let (mut in_sync, mut serving) = (Vec::new(), Vec::new());
        for _ in 0..RUNS {
            // 25 reads in one interval (right after a decision for one slave, or the first read starts the
            // clock): the decision at its end asks for a second slave.
            for _ in 0..25 {
                c.read_ok("SELECT count(*) FROM t", vec![]).await;
            }
            // The decision, seen within a millisecond in the orchestrator's target.
            let deadline = Instant::now() + e2e::SETTLE;
            while c.target_slaves() != 2 {
                assert!(Instant::now() < deadline, "no decision for two slaves");
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            let decided = Instant::now();
            // In sync: in the set every write waits for, shown in sync by /api/v1/workers. Then serving: it
            // consumes readQ from the first entry or heartbeat (every 250 ms) it applies after that.
            c.wait_for(|v| v.in_sync_members().len() == 2).await;
            in_sync.push(decided.elapsed());
            while read_consumers(&ch, &c).await != 2 {
                assert!(Instant::now() < deadline, "the new slave never served");
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            serving.push(decided.elapsed());
            // An idle interval: back to one slave (the new one is retired: it has the highest pid), so that the
            // next run starts a fresh slave that copies everything again.
            c.wait_for(|v| v.in_sync_members().len() == 1 && v.workers.len() == 2)
                .await;
            while read_consumers(&ch, &c).await != 1 {
                assert!(
                    Instant::now() < deadline,
                    "the retired slave still consumes"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            assert_eq!(c.target_slaves(), 1);
        }
        let rows_read = c.read_ok("SELECT count(*) FROM t", vec![]).await;
        assert_eq!(rows_read.rows, vec![vec![Value::Integer(rows)]]);
        c.stop().await;
        println!("{rows} rows written in {} ms", filled.as_millis());
        report(
            &format!("scaling decision to the new slave in sync, {rows} rows"),
            in_sync,
        );
        report(
            &format!(
                "scaling decision to the new slave serving reads (consuming readQ), {rows} rows"
            ),
            serving,
        );
    }
    let _ = broker.close(200, "done".into()).await;
}
