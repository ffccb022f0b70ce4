use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use e2e::{st, Cluster};
use protocol::Value;
use reqwest::StatusCode;
use tokio::sync::Mutex;

/// Runs `scripts/services.sh ARGS` from the repository root.
fn services(args: &[&str]) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repo root");
    let status = std::process::Command::new(root.join("scripts/services.sh"))
        .args(args)
        .status()
        .expect("services.sh runs");
    assert!(status.success(), "services.sh {args:?} failed");
}

/// Eight clients inserting numbered rows as fast as they can; the keys of the rows acknowledged with 200.
struct Load {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<i64>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(c: &Arc<Cluster>) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let tasks = (0..8i64)
            .map(|client| {
                let (c, stop, acked) = (c.clone(), stop.clone(), acked.clone());
                tokio::spawn(async move {
                    let mut i = 0;
                    while !stop.load(Ordering::SeqCst) {
                        let k = client * 1_000_000 + i;
                        i += 1;
                        let (status, _) = c
                            .write(vec![st(
                                "INSERT INTO t (k) VALUES (?)",
                                vec![Value::Integer(k)],
                            )])
                            .await;
                        if status == StatusCode::OK {
                            acked.lock().await.push(k);
                        } else {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                })
            })
            .collect();
        Load { stop, acked, tasks }
    }

    async fn acked(&self) -> usize {
        self.acked.lock().await.len()
    }

    /// Stops the clients and returns the acknowledged keys.
    async fn finish(self) -> Vec<i64> {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.tasks {
            t.await.expect("client");
        }
        let mut keys = self.acked.lock().await.clone();
        keys.sort_unstable();
        keys
    }
}

/// Waits until the load has had `more` writes acknowledged beyond `from`.
async fn wait_for_progress(load: &Load, more: usize) {
    let from = load.acked().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    while load.acked().await < from + more {
        assert!(
            tokio::time::Instant::now() < deadline,
            "writes did not resume"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn assert_every_acknowledged_write_is_there(c: &Cluster, keys: &[i64]) {
    c.wait_for_in_sync(2).await;
    c.assert_keys_stored(keys).await;
    c.assert_all_identical().await;
}

async fn loaded_cluster() -> (Arc<Cluster>, Load) {
    let c = Arc::new(Cluster::start(2).await);
    c.write_ok(vec![st("CREATE TABLE t (k INTEGER PRIMARY KEY)", vec![])])
        .await;
    let load = Load::start(&c);
    wait_for_progress(&load, 50).await;
    (c, load)
}

#[tokio::test(flavor = "multi_thread")]
async fn after_a_rabbitmq_restart_under_write_load_the_system_recovers_and_loses_no_acknowledged_write(
) {
    let (c, load) = loaded_cluster().await;
    services(&["stop", "rabbitmq"]);
    services(&["start", "rabbitmq"]);
    wait_for_progress(&load, 50).await;
    let keys = load.finish().await;
    assert_every_acknowledged_write_is_there(&c, &keys).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn after_a_zookeeper_restart_under_write_load_the_system_recovers_and_loses_no_acknowledged_write(
) {
    let (c, load) = loaded_cluster().await;
    services(&["stop", "zookeeper"]);
    services(&["start", "zookeeper"]);
    wait_for_progress(&load, 50).await;
    let keys = load.finish().await;
    assert_every_acknowledged_write_is_there(&c, &keys).await;
}
