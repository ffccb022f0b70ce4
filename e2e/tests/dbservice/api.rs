//! Every row of the orchestrator's database API table in api.md, failures included.

use e2e::{st, Cluster, Options};
use protocol::{Role, Value, WorkerInfo};
use reqwest::StatusCode;
use serde_json::json;

const USERS: &str =
    "CREATE TABLE users (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT UNIQUE NOT NULL)";

fn text(s: &str) -> Value {
    Value::Text(s.into())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_write_returns_its_results_and_seq_and_a_read_sees_it() {
    let c = Cluster::start(1).await;
    let schema = c.write_ok(vec![st(USERS, vec![])]).await;
    let (status, body) = c
        .write(vec![
            st("INSERT INTO users (name) VALUES (?)", vec![text("alice")]),
            st(
                "INSERT INTO users (name) VALUES (?), (?)",
                vec![text("bob"), text("carol")],
            ),
        ])
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({"results": [{"rows_affected": 1, "last_insert_id": 1}, {"rows_affected": 2, "last_insert_id": 3}],
               "seq": schema.seq + 1})
    );
    let (status, body) = c
        .read(
            "SELECT id, name FROM users WHERE id >= ? ORDER BY id",
            vec![Value::Integer(2)],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({"columns": ["id", "name"], "rows": [[2, "bob"], [3, "carol"]]})
    );
    c.assert_all_identical().await;
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sql_errors_and_constraint_violations_are_400_and_apply_nothing() {
    let c = Cluster::start(1).await;
    c.write_ok(vec![st(USERS, vec![])]).await;
    c.write_ok(vec![st(
        "INSERT INTO users (name) VALUES ('alice')",
        vec![],
    )])
    .await;
    let before = c.assert_all_identical().await;
    for statements in [
        vec![st("INSERT INTO nope VALUES (1)", vec![])],
        vec![st("INSERT INTO users (name) VALUES ('alice')", vec![])],
        vec![st("INSERT INTO users (name) VALUES (NULL)", vec![])],
        vec![st("INSERT INTO users (name) VALUES (?)", vec![])],
        vec![st("SELEC 1", vec![])],
        vec![st("PRAGMA foreign_keys = OFF", vec![])],
        vec![st("DELETE FROM _rideshare_idempotency", vec![])],
        vec![],
    ] {
        let (status, body) = c.write(statements.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{statements:?}: {body}");
        assert!(
            body["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{body}"
        );
    }
    assert_eq!(c.assert_all_identical().await, before);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn reads_of_bad_sql_or_statements_that_write_are_400() {
    let c = Cluster::start(1).await;
    c.write_ok(vec![
        st(USERS, vec![]),
        st("INSERT INTO users (name) VALUES ('alice')", vec![]),
    ])
    .await;
    let before = c.assert_all_identical().await;
    for sql in [
        "SELECT * FROM nope",
        "DELETE FROM users",
        "INSERT INTO users (name) VALUES ('x')",
        "DROP TABLE users",
        "SELECT ?",
    ] {
        let (status, body) = c.read(sql, vec![]).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{sql}: {body}");
        assert!(body["error"].is_string(), "{body}");
    }
    assert_eq!(c.assert_all_identical().await, before);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_bodies_are_400_and_change_nothing() {
    let c = Cluster::start(1).await;
    c.write_ok(vec![st(USERS, vec![])]).await;
    let before = c.assert_all_identical().await;
    for (path, body) in [
        ("/api/v1/db/write", "not json"),
        ("/api/v1/db/write", "[]"),
        (
            "/api/v1/db/write",
            r#"{"statements": [{"sql": "DELETE FROM users"}], "extra": 1}"#,
        ),
        ("/api/v1/db/write", r#"{"statements": [{"sql": 7}]}"#),
        (
            "/api/v1/db/write",
            r#"{"statements": [{"sql": "INSERT INTO users (name) VALUES (?)", "params": [true]}]}"#,
        ),
        ("/api/v1/db/write", r#"{}"#),
        ("/api/v1/db/read", r#"{"sql": "SELECT 1", "params": {}}"#),
        ("/api/v1/db/read", r#"{"query": "SELECT 1"}"#),
    ] {
        let (status, resp) = c.post_raw(path, body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path} {body}: {resp}");
        assert!(resp["error"].is_string(), "{resp}");
    }
    assert_eq!(c.assert_all_identical().await, before);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retried_write_with_the_same_idempotency_key_applies_once() {
    let c = Cluster::start(1).await;
    c.write_ok(vec![st(USERS, vec![])]).await;
    let insert = vec![st("INSERT INTO users (name) VALUES ('alice')", vec![])];
    let (s1, first) = c.write_with_key("retry-1", insert.clone()).await;
    let (s2, second) = c.write_with_key("retry-1", insert.clone()).await;
    assert_eq!((s1, s2), (StatusCode::OK, StatusCode::OK));
    assert_eq!(first, second);
    let rows = c.read_ok("SELECT count(*) FROM users", vec![]).await;
    assert_eq!(rows.rows, vec![vec![Value::Integer(1)]]);
    // Without the key, the same write is a new write: here it violates the unique name.
    let (s3, _) = c.write(insert).await;
    assert_eq!(s3, StatusCode::BAD_REQUEST);
    let (s4, body) = c
        .write_with_key(&"k".repeat(300), vec![st("SELECT 1", vec![])])
        .await;
    assert_eq!(s4, StatusCode::BAD_REQUEST, "{body}");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn clear_deletes_every_row_on_every_worker() {
    let c = Cluster::start(2).await;
    c.write_ok(vec![
        st(USERS, vec![]),
        st("CREATE TABLE rides (id INTEGER PRIMARY KEY, user INTEGER REFERENCES users(id) ON DELETE CASCADE)", vec![]),
    ])
    .await;
    c.write_ok(vec![
        st("INSERT INTO users (name) VALUES ('a'), ('b')", vec![]),
        st("INSERT INTO rides (user) VALUES (1), (2)", vec![]),
    ])
    .await;
    let (status, body) = c.post("/api/v1/db/clear", &json!({})).await;
    assert_eq!((status, body), (StatusCode::OK, json!({})));
    for table in ["users", "rides"] {
        let rows = c
            .read_ok(&format!("SELECT count(*) FROM {table}"), vec![])
            .await;
        assert_eq!(rows.rows, vec![vec![Value::Integer(0)]], "{table}");
    }
    let dump = c.assert_all_identical().await;
    assert!(!dump.contains("[1,\"a\"]"), "{dump}");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn worker_list_and_workers_show_the_running_processes() {
    let c = Cluster::start(2).await;
    let pids = c.pids().await;
    assert_eq!(pids.len(), 3);
    let (status, body) = c.get("/api/v1/worker/list").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!(pids));
    c.write_ok(vec![st(USERS, vec![])]).await;
    let seq = c
        .write_ok(vec![st("INSERT INTO users (name) VALUES ('a')", vec![])])
        .await
        .seq;
    // applied_seq is refreshed about once a second.
    let deadline = tokio::time::Instant::now() + e2e::SETTLE;
    loop {
        let (status, body) = c.get("/api/v1/workers").await;
        assert_eq!(status, StatusCode::OK);
        let workers: Vec<WorkerInfo> = serde_json::from_value(body).expect("workers");
        let pids_seen: Vec<u32> = workers.iter().map(|w| w.pid).collect();
        assert_eq!(pids_seen, pids);
        assert_eq!(workers.iter().filter(|w| w.role == Role::Master).count(), 1);
        assert!(workers.iter().all(|w| w.in_sync), "{workers:?}");
        if workers.iter().all(|w| w.applied_seq == seq) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "applied_seq never reached {seq}: {workers:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_master_writes_are_503_and_without_an_in_sync_slave_reads_are_503() {
    // A degraded cluster that stays degraded, answering at once: no replacement workers, no retries.
    let c = Cluster::start_opts(Options {
        request_timeout_ms: 1500,
        retry_deadline_ms: Some(0),
        self_healing: false,
        ..Options::new(1)
    })
    .await;
    c.write_ok(vec![st(USERS, vec![])]).await;
    let slave = c.slave_ids()[0].clone();
    c.kill(&slave).await;
    // The master notices on the next write or heartbeat, waits out the slave's lease, then drops it.
    let (status, body) = c
        .write(vec![st("INSERT INTO users (name) VALUES ('a')", vec![])])
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body["error"].is_string());
    c.wait_for(|v| v.in_sync_members().is_empty()).await;
    let (status, body) = c.read("SELECT 1", vec![]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let master = c.master_id();
    c.kill(&master).await;
    let (status, body) = c
        .write(vec![st("INSERT INTO users (name) VALUES ('b')", vec![])])
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn health_is_200_once_a_master_and_an_in_sync_slave_exist() {
    let c = Cluster::start(1).await;
    let (status, _) = c.get("/health").await;
    assert_eq!(status, StatusCode::OK);
    c.stop().await;
}
