//! Replication: read-your-writes across slaves, identical copies after random writes, catch-up of a late slave.

use std::sync::Arc;

use e2e::{st, Cluster, Options};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use protocol::{Statement, Value};
use reqwest::StatusCode;

#[tokio::test(flavor = "multi_thread")]
async fn every_read_sees_the_write_acknowledged_before_it_across_two_slaves() {
    let c = Arc::new(Cluster::start(2).await);
    c.write_ok(vec![st(
        "CREATE TABLE kv (k INTEGER PRIMARY KEY, v INTEGER NOT NULL)",
        vec![],
    )])
    .await;
    // Four clients, each doing 250 write-then-read pairs on its own keys: 1,000 pairs, interleaved.
    let mut tasks = Vec::new();
    for client in 0..4i64 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..250i64 {
                let k = client * 1000 + i % 50;
                let v = i;
                c.write_ok(vec![st(
                    "INSERT INTO kv (k, v) VALUES (?, ?) ON CONFLICT (k) DO UPDATE SET v = excluded.v",
                    vec![Value::Integer(k), Value::Integer(v)],
                )])
                .await;
                let rows = c.read_ok("SELECT v FROM kv WHERE k = ?", vec![Value::Integer(k)]).await;
                assert_eq!(rows.rows, vec![vec![Value::Integer(v)]], "client {client}, pair {i}: stale read");
            }
        }));
    }
    for t in tasks {
        t.await.expect("client task");
    }
    c.assert_all_identical().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_statement_in_the_middle_of_a_write_leaves_no_trace_on_any_worker() {
    let c = Cluster::start(2).await;
    c.write_ok(vec![st(
        "CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT UNIQUE)",
        vec![],
    )])
    .await;
    c.write_ok(vec![st("INSERT INTO t (name) VALUES ('taken')", vec![])])
        .await;
    let before = c.assert_all_identical().await;
    let (status, body) = c
        .write(vec![
            st("INSERT INTO t (name) VALUES ('first')", vec![]),
            st("UPDATE t SET name = 'renamed' WHERE name = 'taken'", vec![]),
            st("INSERT INTO t (name) VALUES ('renamed')", vec![]),
            st("INSERT INTO t (name) VALUES ('last')", vec![]),
        ])
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(c.assert_all_identical().await, before);
    let rows = c.read_ok("SELECT name FROM t ORDER BY name", vec![]).await;
    assert_eq!(rows.rows, vec![vec![Value::Text("taken".into())]]);
}

/// Random writes: inserts, updates, deletes, failing statements and multi-statement transactions on two tables
/// linked by a cascading foreign key.
fn arb_write() -> impl Strategy<Value = Vec<Statement>> {
    let statement = prop_oneof![
        (0..30i64, "[a-d]{1,2}").prop_map(|(n, s)| st(
            "INSERT INTO p (name, n) VALUES (?, ?)",
            vec![Value::Text(s), Value::Integer(n)]
        )),
        (0..30i64, 0..30i64).prop_map(|(a, b)| st(
            "UPDATE p SET n = ? WHERE n = ?",
            vec![Value::Integer(a), Value::Integer(b)]
        )),
        (0..30i64).prop_map(|a| st("DELETE FROM p WHERE n = ?", vec![Value::Integer(a)])),
        (0..40i64, 0..9i64).prop_map(|(p, x)| st(
            "INSERT INTO c (p_id, x) VALUES (?, ?)",
            vec![Value::Integer(p), Value::Integer(x)]
        )),
        (0..9i64).prop_map(|x| st(
            "UPDATE c SET x = x + 1 WHERE x = ?",
            vec![Value::Integer(x)]
        )),
        Just(st("INSERT INTO p (name, n) VALUES (NULL, 1)", vec![])),
        Just(st("DELETE FROM nowhere", vec![])),
    ];
    prop::collection::vec(statement, 1..4)
}

#[tokio::test(flavor = "multi_thread")]
async fn random_writes_leave_every_slave_identical_to_the_master() {
    let c = Arc::new(Cluster::start(2).await);
    c.write_ok(vec![
        st("CREATE TABLE p (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL UNIQUE, n INTEGER)", vec![]),
        st("CREATE TABLE c (id INTEGER PRIMARY KEY, p_id INTEGER REFERENCES p(id) ON DELETE CASCADE, x INTEGER)", vec![]),
    ])
    .await;
    // A fixed seed: the same sequence on every run, so a failure can be replayed.
    let mut runner = TestRunner::deterministic();
    let strategy = prop::collection::vec(arb_write(), 400);
    let writes = strategy.new_tree(&mut runner).expect("writes").current();
    let (mut ok, mut refused) = (0, 0);
    // Eight at a time, so that the master batches them into shared transactions.
    for chunk in writes.chunks(8) {
        let results = futures::future::join_all(chunk.iter().map(|w| c.write(w.clone()))).await;
        for (status, body) in results {
            match status {
                StatusCode::OK => ok += 1,
                StatusCode::BAD_REQUEST => refused += 1,
                other => panic!("unexpected {other}: {body}"),
            }
        }
    }
    assert!(
        ok > 50 && refused > 50,
        "the mix should both apply and fail: {ok} applied, {refused} refused"
    );
    let dump = c.assert_all_identical().await;
    assert!(dump.lines().count() > 50, "{dump}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slave_started_after_ten_thousand_writes_catches_up_and_answers_identically() {
    // Without self-healing the killed slave is not replaced, so the reads below can only be the new slave's.
    let c = Arc::new(
        Cluster::start_opts(Options {
            self_healing: false,
            ..Options::new(1)
        })
        .await,
    );
    c.write_ok(vec![st(
        "CREATE TABLE e (id INTEGER PRIMARY KEY, v TEXT NOT NULL)",
        vec![],
    )])
    .await;
    let mut tasks = Vec::new();
    for client in 0..16i64 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..625i64 {
                c.write_ok(vec![st(
                    "INSERT INTO e (id, v) VALUES (?, ?)",
                    vec![
                        Value::Integer(client * 625 + i),
                        Value::Text(format!("value {client}/{i}")),
                    ],
                )])
                .await;
            }
        }));
    }
    for t in tasks {
        t.await.expect("writer");
    }
    let old_slave = c.slave_ids()[0].clone();
    let new_slave = c.add_slave().await;
    // The late slave holds the same data...
    assert_eq!(c.dump(&new_slave), c.dump(&c.master_id()));
    // ...and answers reads like the others: with the old slave gone, every read is the new slave's.
    c.kill(&old_slave).await;
    c.wait_for(|v| v.in_sync_members() == [new_slave.clone()])
        .await;
    let count = c.read_ok("SELECT count(*), sum(id) FROM e", vec![]).await;
    assert_eq!(
        count.rows,
        vec![vec![Value::Integer(10_000), Value::Integer(49_995_000)]]
    );
    let one = c
        .read_ok("SELECT v FROM e WHERE id = ?", vec![Value::Integer(9_999)])
        .await;
    assert_eq!(one.rows, vec![vec![Value::Text("value 15/624".into())]]);
    c.write_ok(vec![st(
        "INSERT INTO e (id, v) VALUES (10000, 'after')",
        vec![],
    )])
    .await;
    c.assert_all_identical().await;
}

/// Sends one read batch straight to `readQ`, as the orchestrator does, and waits up to `wait` for its answer.
async fn read_batch_directly(
    c: &Cluster,
    wait: std::time::Duration,
) -> protocol::queue::ReadBatchReply {
    let conn = broker::connect(e2e::AMQP_URL, "e2e-reads", broker::CONNECT_TIMEOUT)
        .await
        .expect("connecting to RabbitMQ");
    let rpc = broker::RpcChannel::open(&conn).await.expect("a channel");
    let batch = protocol::queue::ReadBatch {
        reads: vec![protocol::ReadRequest {
            sql: "SELECT count(*) FROM t".into(),
            params: vec![],
        }],
    };
    let body = serde_json::to_vec(&batch).expect("encoding");
    let reply = rpc
        .call(&c.names.read_queue(), &body, wait)
        .await
        .expect("a slave answers");
    let _ = conn.close(200, "done".into()).await;
    serde_json::from_slice(&reply).expect("a read batch reply")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slave_answers_with_the_committed_position_it_read_which_covers_every_acknowledged_write()
{
    let c = Cluster::start(2).await;
    c.write_ok(vec![st("CREATE TABLE t (id INTEGER PRIMARY KEY)", vec![])])
        .await;
    for _ in 0..5 {
        let last = c
            .write_ok(vec![st("INSERT INTO t DEFAULT VALUES", vec![])])
            .await;
        let reply = read_batch_directly(&c, std::time::Duration::from_secs(5)).await;
        assert_eq!(reply.replies.len(), 1);
        assert!(reply.position.seq >= last.seq, "{reply:?} after {last:?}");
        assert!(reply.position.epoch >= 1, "{reply:?}");
    }
    let rows = c.read_ok("SELECT count(*) FROM t", vec![]).await;
    assert_eq!(rows.rows, vec![vec![Value::Integer(5)]]);
    c.stop().await;
}
