//! Master failover: a new master is elected among the in-sync slaves and no acknowledged write is lost.

use std::sync::Arc;

use e2e::{st, Cluster};
use protocol::Value;

use crate::helpers::{self, WriteLoad};

#[tokio::test(flavor = "multi_thread")]
async fn killing_the_master_elects_the_lowest_pid_in_sync_slave_and_keeps_every_write() {
    let c = Cluster::start(2).await;
    c.write_ok(vec![st(
        "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)",
        vec![],
    )])
    .await;
    for i in 0..20 {
        c.write_ok(vec![st(
            "INSERT INTO t (v) VALUES (?)",
            vec![Value::Text(format!("v{i}"))],
        )])
        .await;
    }
    let old = c.master_id();
    let view = c.view();
    let lowest = view
        .workers
        .values()
        .filter(|w| w.id != old)
        .min_by_key(|w| w.pid)
        .expect("a slave")
        .id
        .clone();
    c.kill(&old).await;
    let v = c
        .wait_for(|v| v.master.as_ref().is_some_and(|m| m.id != old))
        .await;
    assert_eq!(v.master.as_ref().unwrap().id, lowest);
    c.wait_for(|v| !v.in_sync_members().is_empty()).await;
    c.write_ok(vec![st("INSERT INTO t (v) VALUES ('after')", vec![])])
        .await;
    let rows = c.read_ok("SELECT count(*) FROM t", vec![]).await;
    assert_eq!(rows.rows, vec![vec![Value::Integer(21)]]);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn killing_the_master_with_sigkill_while_eight_clients_write_loses_no_acknowledged_write() {
    let c = Arc::new(Cluster::start(2).await);
    helpers::create_table(&c).await;
    let load = WriteLoad::start(&c, 8);
    load.wait_for_progress(100).await;

    let old = c.view().master.expect("a master");
    // From outside, as a crash: the orchestrator learns it from the process's exit.
    e2e::sigkill(old.pid);
    c.wait_for(|v| v.master.as_ref().is_some_and(|m| m.id != old.id))
        .await;
    load.wait_for_progress(100).await;

    let acked = load.finish().await;
    helpers::assert_every_acknowledged_write_is_everywhere(&c, &acked, 2).await;
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn killing_the_master_then_the_new_master_under_write_load_loses_no_acknowledged_write() {
    let c = Arc::new(Cluster::start(2).await);
    helpers::create_table(&c).await;
    let load = WriteLoad::start(&c, 8);
    load.wait_for_progress(100).await;

    let mut masters = Vec::new();
    for _ in 0..2 {
        let old = c.view().master.expect("a master");
        e2e::sigkill(old.pid);
        c.wait_for(|v| v.master.as_ref().is_some_and(|m| m.id != old.id))
            .await;
        // The replacement slave joins, so the next kill again leaves an in-sync slave to elect.
        c.wait_for_workers(3).await;
        load.wait_for_progress(100).await;
        masters.push(old.id);
    }
    assert!(!masters.contains(&c.master_id()));

    let acked = load.finish().await;
    helpers::assert_every_acknowledged_write_is_everywhere(&c, &acked, 2).await;
    c.stop().await;
}
