//! Bad messages on every queue: no worker crashes, no data changes.

use e2e::{st, Cluster};
use protocol::queue::{LogEntry, Payload, SyncKind, SyncMessage};
use protocol::Value;

#[tokio::test(flavor = "multi_thread")]
async fn undecodable_messages_on_every_queue_neither_crash_a_worker_nor_change_data() {
    let c = Cluster::start(2).await;
    c.write_ok(vec![st(
        "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)",
        vec![],
    )])
    .await;
    c.write_ok(vec![st("INSERT INTO t (v) VALUES ('kept')", vec![])])
        .await;
    let pids = c.pids().await;
    let before = c.assert_all_identical().await;
    let garbage: [&[u8]; 4] = [
        b"",
        b"not json",
        b"{\"type\": \"write\"}",
        &[0xff, 0xfe, 0x00],
    ];
    for body in garbage {
        c.publish_raw("", &c.names.write_queue(), body)
            .await
            .unwrap();
        c.publish_raw("", &c.names.read_queue(), body)
            .await
            .unwrap();
        c.publish_raw(&c.names.sync_exchange(), "", body)
            .await
            .unwrap();
    }
    // Everything still works, on the same processes, with the same data.
    c.write_ok(vec![st("INSERT INTO t (v) VALUES ('after')", vec![])])
        .await;
    let rows = c.read_ok("SELECT v FROM t ORDER BY id", vec![]).await;
    assert_eq!(
        rows.rows,
        vec![
            vec![Value::Text("kept".into())],
            vec![Value::Text("after".into())]
        ]
    );
    assert_eq!(c.pids().await, pids);
    let after = c.assert_all_identical().await;
    assert_ne!(before, after);
    assert!(after.contains("\"kept\""));
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_log_entry_from_an_older_epoch_or_after_a_gap_is_not_applied() {
    let c = Cluster::start(2).await;
    c.write_ok(vec![st(
        "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)",
        vec![],
    )])
    .await;
    let seq = c
        .write_ok(vec![st("INSERT INTO t (v) VALUES ('kept')", vec![])])
        .await
        .seq;
    let pids = c.pids().await;
    let in_sync = c.slave_ids();
    let forged = |epoch: u64, seq: u64| SyncMessage {
        kind: SyncKind::Entry(LogEntry {
            epoch,
            seq,
            payload: Payload::Statements {
                statements: vec![st("DELETE FROM t", vec![])],
            },
        }),
        serial: 0,
        epoch_start: 0,
        committed: 0,
        in_sync: in_sync.clone(),
        grants: vec![],
        lease_ms: u64::MAX,
    };
    // A deposed master's entry (epoch 0), and an entry that skips ahead in the log.
    for msg in [forged(0, seq + 1), forged(1, seq + 5)] {
        c.publish_raw(
            &c.names.sync_exchange(),
            "",
            &serde_json::to_vec(&msg).unwrap(),
        )
        .await
        .unwrap();
    }
    // The slave that saw the gap resyncs from a snapshot and comes back in sync.
    c.wait_for_in_sync(2).await;
    let rows = c.read_ok("SELECT v FROM t", vec![]).await;
    assert_eq!(rows.rows, vec![vec![Value::Text("kept".into())]]);
    c.write_ok(vec![st("INSERT INTO t (v) VALUES ('after')", vec![])])
        .await;
    assert_eq!(c.pids().await, pids);
    let dump = c.assert_all_identical().await;
    assert!(dump.contains("\"kept\""), "{dump}");
    c.stop().await;
}
