//! What the fault tests share: a write load whose acknowledged rows are remembered, a read load, and the check
//! that every acknowledged write survived everywhere.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use e2e::{st, Cluster, SETTLE};
use protocol::Value;
use reqwest::StatusCode;
use tokio::sync::Mutex;
use tokio::time::Instant;

/// The table the loads write: one row per acknowledged key.
pub async fn create_table(c: &Cluster) {
    c.write_ok(vec![st("CREATE TABLE t (k INTEGER PRIMARY KEY)", vec![])])
        .await;
}

/// Clients inserting numbered rows into `t` as fast as they can, each write with its own idempotency key;
/// remembers the keys acknowledged with 200. A write that fails (503, or no answer at all) is not retried by
/// the client (the orchestrator already retried it within its deadline): its row may or may not exist, and
/// either is fine.
pub struct WriteLoad {
    stop: Arc<AtomicBool>,
    /// Each acknowledged key, with the moment its acknowledgement arrived.
    acked: Arc<Mutex<Vec<(Instant, i64)>>>,
    failed: Arc<AtomicUsize>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl WriteLoad {
    pub fn start(c: &Arc<Cluster>, clients: i64) -> WriteLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let failed = Arc::new(AtomicUsize::new(0));
        let tasks = (0..clients)
            .map(|client| {
                let (c, stop, acked, failed) =
                    (c.clone(), stop.clone(), acked.clone(), failed.clone());
                tokio::spawn(async move {
                    let mut i = 0;
                    while !stop.load(Ordering::SeqCst) {
                        let k = client * 1_000_000 + i;
                        i += 1;
                        let answer = c
                            .try_write_with_key(
                                &format!("load-{k}"),
                                vec![st("INSERT INTO t (k) VALUES (?)", vec![Value::Integer(k)])],
                            )
                            .await;
                        match answer {
                            Ok((StatusCode::OK, _)) => {
                                acked.lock().await.push((Instant::now(), k));
                            }
                            Ok((StatusCode::SERVICE_UNAVAILABLE, _)) => {
                                failed.fetch_add(1, Ordering::SeqCst);
                            }
                            Ok((other, body)) => panic!("write of {k}: {other} {body}"),
                            // The orchestrator was killed: no answer, so nothing acknowledged.
                            Err(_) => {
                                failed.fetch_add(1, Ordering::SeqCst);
                                tokio::time::sleep(Duration::from_millis(10)).await;
                            }
                        }
                    }
                })
            })
            .collect();
        WriteLoad {
            stop,
            acked,
            failed,
            tasks,
        }
    }

    pub async fn acked(&self) -> usize {
        self.acked.lock().await.len()
    }

    /// Waits until `more` writes have been acknowledged since the call.
    pub async fn wait_for_progress(&self, more: usize) {
        let from = self.acked().await;
        let deadline = tokio::time::Instant::now() + SETTLE;
        while self.acked().await < from + more {
            assert!(
                tokio::time::Instant::now() < deadline,
                "writes did not resume: {} acknowledged since, {} answered 503 in all",
                self.acked().await - from,
                self.failed.load(Ordering::SeqCst)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the clients and returns the acknowledged keys, sorted.
    pub async fn finish(self) -> Vec<i64> {
        let mut keys: Vec<i64> = self
            .finish_timed()
            .await
            .into_iter()
            .map(|(_, k)| k)
            .collect();
        keys.sort_unstable();
        keys
    }

    /// Stops the clients and returns the acknowledged keys with the moment each acknowledgement arrived.
    pub async fn finish_timed(self) -> Vec<(Instant, i64)> {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.tasks {
            t.await.expect("a writing client");
        }
        let keys = self.acked.lock().await.clone();
        println!(
            "write load: {} acknowledged, {} unanswered or 503",
            keys.len(),
            self.failed.load(Ordering::SeqCst)
        );
        keys
    }
}

/// Once the cluster is back to a master and `slaves` slaves in sync: every acknowledged key is readable, and
/// every worker holds exactly the same data.
pub async fn assert_every_acknowledged_write_is_everywhere(
    c: &Cluster,
    acked: &[i64],
    slaves: usize,
) {
    c.wait_for_workers(slaves + 1).await;
    c.assert_keys_stored(acked).await;
    let dump = c.assert_all_identical().await;
    assert!(dump.lines().count() > acked.len(), "{dump}");
}

/// Clients reading the table in a loop, counting the reads that succeeded and checking each saw at least
/// `rows` rows. Connection failures (the orchestrator being restarted) and 503s are counted apart.
pub struct ReadLoad {
    stop: Arc<AtomicBool>,
    pub ok: Arc<AtomicUsize>,
    pub unavailable: Arc<AtomicUsize>,
    pub refused: Arc<AtomicUsize>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl ReadLoad {
    pub fn start(c: &Arc<Cluster>, clients: usize, rows: i64) -> ReadLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let unavailable = Arc::new(AtomicUsize::new(0));
        let refused = Arc::new(AtomicUsize::new(0));
        let tasks = (0..clients)
            .map(|_| {
                let (c, stop, ok, unavailable, refused) = (
                    c.clone(),
                    stop.clone(),
                    ok.clone(),
                    unavailable.clone(),
                    refused.clone(),
                );
                tokio::spawn(async move {
                    while !stop.load(Ordering::SeqCst) {
                        match c.try_read("SELECT count(*) FROM t", vec![]).await {
                            Ok((StatusCode::OK, body)) => {
                                let n = body["rows"][0][0].as_i64().expect("a count");
                                assert!(n >= rows, "a read saw {n} rows of {rows}");
                                ok.fetch_add(1, Ordering::SeqCst);
                            }
                            Ok((StatusCode::SERVICE_UNAVAILABLE, _)) => {
                                unavailable.fetch_add(1, Ordering::SeqCst);
                            }
                            Ok((status, body)) => panic!("read: {status} {body}"),
                            Err(_) => {
                                refused.fetch_add(1, Ordering::SeqCst);
                                tokio::time::sleep(Duration::from_millis(10)).await;
                            }
                        }
                    }
                })
            })
            .collect();
        ReadLoad {
            stop,
            ok,
            unavailable,
            refused,
            tasks,
        }
    }

    /// Waits until `more` reads have succeeded since the call.
    pub async fn wait_for_progress(&self, more: usize) {
        let from = self.ok.load(Ordering::SeqCst);
        e2e::wait_until(
            || self.ok.load(Ordering::SeqCst) >= from + more,
            "reads to succeed",
        )
        .await;
    }

    pub async fn finish(self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.tasks {
            t.await.expect("a reading client");
        }
        println!(
            "read load: {} ok, {} answered 503, {} connections refused",
            self.ok.load(Ordering::SeqCst),
            self.unavailable.load(Ordering::SeqCst),
            self.refused.load(Ordering::SeqCst)
        );
    }
}

/// One successful read of how many rows `t` holds: when it was sent, when its answer came, what it said.
#[derive(Debug, Clone, Copy)]
pub struct CountRead {
    pub sent: Instant,
    pub answered: Instant,
    pub rows: i64,
}

/// Clients counting the rows of `t` in a loop, remembering every answer with its times.
pub struct CountReads {
    stop: Arc<AtomicBool>,
    history: Arc<Mutex<Vec<CountRead>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl CountReads {
    pub fn start(c: &Arc<Cluster>, clients: usize) -> CountReads {
        let stop = Arc::new(AtomicBool::new(false));
        let history = Arc::new(Mutex::new(Vec::new()));
        let tasks = (0..clients)
            .map(|_| {
                let (c, stop, history) = (c.clone(), stop.clone(), history.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::SeqCst) {
                        let sent = Instant::now();
                        match c.try_read("SELECT count(*) FROM t", vec![]).await {
                            Ok((StatusCode::OK, body)) => {
                                let rows = body["rows"][0][0].as_i64().expect("a count");
                                let answered = Instant::now();
                                history.lock().await.push(CountRead {
                                    sent,
                                    answered,
                                    rows,
                                });
                            }
                            // Unknown outcome: nothing to check.
                            Ok((StatusCode::SERVICE_UNAVAILABLE, _)) => {}
                            Ok((status, body)) => panic!("read: {status} {body}"),
                            // The orchestrator was being restarted.
                            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                        }
                    }
                })
            })
            .collect();
        CountReads {
            stop,
            history,
            tasks,
        }
    }

    /// Stops the clients and returns every answer.
    pub async fn finish(self) -> Vec<CountRead> {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.tasks {
            t.await.expect("a reading client");
        }
        let history = self.history.lock().await.clone();
        history
    }
}

/// The reads of a table that only grows are linearizable: each saw at least as many rows as any read that was
/// answered before it was sent, and at least as many as writes acknowledged before it was sent. Returns how
/// many reads were checked.
pub fn assert_reads_never_go_back(reads: &[CountRead], acked: &[(Instant, i64)]) -> usize {
    let mut by_answer: Vec<&CountRead> = reads.iter().collect();
    by_answer.sort_by_key(|r| r.answered);
    let mut by_sending: Vec<&CountRead> = reads.iter().collect();
    by_sending.sort_by_key(|r| r.sent);
    let mut acks: Vec<Instant> = acked.iter().map(|(t, _)| *t).collect();
    acks.sort_unstable();
    // Sweep the reads in the order they were sent, taking in the answers and acknowledgements that came before.
    let (mut answered, mut most, mut acknowledged) = (0, 0, 0);
    for read in by_sending {
        while answered < by_answer.len() && by_answer[answered].answered < read.sent {
            most = most.max(by_answer[answered].rows);
            answered += 1;
        }
        while acknowledged < acks.len() && acks[acknowledged] < read.sent {
            acknowledged += 1;
        }
        assert!(
            read.rows >= most,
            "a read sent {:?} after the start saw {} rows, but an earlier read had seen {most}",
            read.sent,
            read.rows
        );
        assert!(
            read.rows >= acknowledged as i64,
            "a read saw {} rows, but {acknowledged} writes were acknowledged before it was sent",
            read.rows
        );
    }
    reads.len()
}
