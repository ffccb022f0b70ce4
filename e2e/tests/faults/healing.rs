//! Self-healing: a dead slave is replaced at once by one that catches up and serves the same reads; a master
//! failover is followed by a new slave; scaling down is not mistaken for a crash.

use std::sync::Arc;

use e2e::{st, wait_until, Cluster};
use protocol::Value;

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_slave_is_replaced_by_one_that_catches_up_and_serves_identical_reads() {
    let c = Arc::new(Cluster::start(2).await);
    c.write_ok(vec![st(
        "CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT NOT NULL)",
        vec![],
    )])
    .await;
    for k in 0..200i64 {
        c.write_ok(vec![st(
            "INSERT INTO t VALUES (?, ?)",
            vec![Value::Integer(k), Value::Text(format!("row {k}"))],
        )])
        .await;
    }
    let victim = c.slave_ids()[0].clone();
    let victim_pid = c.view().workers[&victim].pid;
    let survivor = c.slave_ids()[1].clone();

    e2e::sigkill(victim_pid);
    c.wait_for(|v| !v.workers.contains_key(&victim)).await;
    let view = c.wait_for_workers(3).await;
    let replacement = view
        .in_sync_members()
        .iter()
        .find(|id| **id != survivor)
        .expect("a replacement")
        .clone();
    assert_ne!(replacement, victim);
    assert!(!c.worker_list().await.contains(&victim_pid));

    // Reads go round-robin to both slaves: many of them reach the replacement.
    for _ in 0..20 {
        let rows = c.read_ok("SELECT count(*), sum(k) FROM t", vec![]).await;
        assert_eq!(
            rows.rows,
            vec![vec![Value::Integer(200), Value::Integer(19_900)]]
        );
    }
    assert_eq!(c.dump(&replacement), c.dump(&c.master_id()));
    c.write_ok(vec![st("INSERT INTO t VALUES (200, 'after')", vec![])])
        .await;
    c.assert_all_identical().await;

    // The dead slave's folder goes once the cluster is healthy without it: crashes do not fill the disk.
    let folder = c.db_path(&victim);
    wait_until(|| !folder.exists(), "the dead slave's folder to be removed").await;
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn after_a_master_failover_a_new_slave_brings_the_count_back_to_the_target() {
    let c = Cluster::start(2).await;
    c.write_ok(vec![st("CREATE TABLE t (x)", vec![])]).await;
    let before: Vec<String> = c.view().workers.keys().cloned().collect();
    let old = c.master_id();
    c.kill(&old).await;
    let view = c.wait_for_workers(3).await;
    let master = view.master.expect("a master").id;
    assert_ne!(master, old);
    assert!(before.contains(&master), "the new master is an old slave");
    let new: Vec<&String> = view
        .workers
        .keys()
        .filter(|id| !before.contains(id))
        .collect();
    assert_eq!(new.len(), 1, "one new slave: {new:?}");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn slaves_removed_by_scaling_down_are_not_replaced() {
    let c = Cluster::start(3).await;
    c.write_ok(vec![st("CREATE TABLE t (x)", vec![])]).await;
    c.set_target_slaves(1).await;
    c.wait_for(|v| v.workers.len() == 2 && v.in_sync_members().len() == 1)
        .await;
    assert_eq!(c.target_slaves(), 1);
    // Writes go on with the one slave left; had the retired slaves counted as crashes, replacements would
    // be starting now and show up below.
    for _ in 0..20 {
        c.write_ok(vec![st("INSERT INTO t VALUES (1)", vec![])])
            .await;
    }
    assert_eq!(c.pids().await.len(), 2);
    assert_eq!(c.view().workers.len(), 2);
    c.stop().await;
}
