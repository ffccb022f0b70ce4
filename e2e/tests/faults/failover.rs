//! Master failover: a new master is elected among the in-sync slaves and no acknowledged write is lost.

use e2e::{st, Cluster};
use protocol::Value;

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
