//! The crash APIs as the contract states them: `POST /api/v1/crash/master` and `/crash/slave` answer
//! `200 [pid]` with the pid killed, `400` when there is no such worker, and `GET /api/v1/worker/list` never shows
//! a dead worker once the answer is out.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use e2e::{is_running, st, Cluster, Options};
use protocol::{Role, Value};
use reqwest::StatusCode;
use serde_json::json;

/// Polls `worker/list` until stopped, checking every answer is ascending and never names `dead`; returns how
/// many lists it read.
fn watch_worker_list(
    c: &Arc<Cluster>,
    dead: u32,
    stop: &Arc<AtomicBool>,
) -> tokio::task::JoinHandle<usize> {
    let (c, stop) = (c.clone(), stop.clone());
    tokio::spawn(async move {
        let mut seen = 0;
        while !stop.load(Ordering::SeqCst) {
            let pids = c.worker_list().await;
            assert!(
                pids.windows(2).all(|w| w[0] < w[1]),
                "not ascending: {pids:?}"
            );
            assert!(
                !pids.contains(&dead),
                "the dead pid {dead} is listed: {pids:?}"
            );
            seen += 1;
        }
        seen
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn crash_master_kills_the_master_answers_its_pid_and_worker_list_stops_showing_it_at_once() {
    let c = Arc::new(Cluster::start(2).await);
    // A write names the slaves in sync to themselves: from then on they stand in the election.
    c.write_ok(vec![st("CREATE TABLE t (x)", vec![])]).await;
    let before = c.worker_list().await;
    assert_eq!(before, c.pids().await);
    assert_eq!(before.len(), 3);
    let master = c.master_pid();

    let killed = c.crash_master().await;
    assert_eq!(killed, master);
    assert!(!is_running(killed), "the master still runs");
    let after = c.worker_list().await;
    assert!(!after.contains(&killed), "{after:?}");
    assert_eq!(after.len(), 2, "{after:?}");

    // Throughout the election and the replacement, no list shows the dead master.
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = watch_worker_list(&c, killed, &stop);
    let view = c.wait_for_workers(3).await;
    stop.store(true, Ordering::SeqCst);
    assert!(watcher.await.expect("the list watcher") > 0);
    let new_master = view.master.expect("a master");
    assert_ne!(new_master.pid, killed);
    assert!(
        before.contains(&new_master.pid),
        "the new master is an old slave"
    );
    let now = c.worker_list().await;
    assert_eq!(now.len(), 3);
    assert!(!now.contains(&killed));
    c.write_ok(vec![st("INSERT INTO t VALUES (1)", vec![])])
        .await;
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn crash_slave_kills_the_slave_with_the_highest_pid_and_a_replacement_joins() {
    let c = Arc::new(Cluster::start(2).await);
    let view = c.view();
    let highest_slave = view
        .worker_infos()
        .into_iter()
        .filter(|w| w.role == Role::Slave)
        .map(|w| w.pid)
        .max()
        .expect("a slave");

    let killed = c.crash_slave().await;
    assert_eq!(killed, highest_slave);
    assert!(!is_running(killed), "the slave still runs");
    let after = c.worker_list().await;
    assert!(!after.contains(&killed), "{after:?}");

    let stop = Arc::new(AtomicBool::new(false));
    let watcher = watch_worker_list(&c, killed, &stop);
    let view = c.wait_for_workers(3).await;
    stop.store(true, Ordering::SeqCst);
    watcher.await.expect("the list watcher");
    assert_eq!(view.pids().len(), 3);
    assert!(!view.pids().contains(&killed));
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_crash_apis_answer_400_when_there_is_no_such_worker() {
    // Without self-healing nothing replaces the victims, so the cluster runs out of workers.
    let c = Cluster::start_opts(Options {
        self_healing: false,
        ..Options::new(1)
    })
    .await;
    let master = c.master_pid();
    let slave = c.crash_slave().await;
    assert_ne!(slave, master);
    assert_eq!(c.worker_list().await, vec![master]);

    let (status, body) = c.post("/api/v1/crash/slave", &json!({})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["error"].is_string(), "{body}");

    assert_eq!(c.crash_master().await, master);
    assert_eq!(c.worker_list().await, Vec::<u32>::new());
    for path in ["/api/v1/crash/master", "/api/v1/crash/slave"] {
        let (status, body) = c.post(path, &json!({})).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {body}");
        assert!(body["error"].is_string(), "{body}");
    }
    let (status, _) = c.get("/api/v1/crash/master").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn after_crash_master_the_cluster_keeps_every_acknowledged_write() {
    let c = Arc::new(Cluster::start(2).await);
    c.write_ok(vec![st("CREATE TABLE t (k INTEGER PRIMARY KEY)", vec![])])
        .await;
    for k in 0..50 {
        c.write_ok(vec![st(
            "INSERT INTO t VALUES (?)",
            vec![Value::Integer(k)],
        )])
        .await;
    }
    c.crash_master().await;
    // The write waits in the orchestrator through the election: no 503 for the client.
    c.write_ok(vec![st("INSERT INTO t VALUES (50)", vec![])])
        .await;
    c.wait_for_workers(3).await;
    let rows = c.read_ok("SELECT count(*) FROM t", vec![]).await;
    assert_eq!(rows.rows, vec![vec![Value::Integer(51)]]);
    c.assert_all_identical().await;
    c.stop().await;
}
