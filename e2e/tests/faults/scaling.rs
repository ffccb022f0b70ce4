//! Auto-scaling of the read slaves: the policy's exact counts, the ceiling, reads and writes checked for errors and
//! stale answers while slaves are added and retired, a crash while the cluster grows, and no respawn after a
//! scale-down.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use e2e::{st, Cluster, Options, SETTLE};
use protocol::{Role, Value, WorkerInfo};
use reqwest::StatusCode;
use tokio::task::JoinHandle;

/// The orchestrator's scaling state: (desired slaves, registered slaves).
async fn scaling(c: &Cluster) -> (u64, u64) {
    let (status, body) = c.get("/api/v1/scaling").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    (
        body["desired"].as_u64().expect("desired"),
        body["actual"].as_u64().expect("actual"),
    )
}

/// Waits for the next scaling decision to set the desired count to `desired`.
async fn wait_for_desired(c: &Cluster, desired: u64) {
    let deadline = tokio::time::Instant::now() + e2e::SETTLE;
    while scaling(c).await.0 != desired {
        assert!(
            tokio::time::Instant::now() < deadline,
            "desired never became {desired}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn reads(c: &Cluster, n: usize) {
    for _ in 0..n {
        let rows = c.read_ok("SELECT count(*) FROM t", vec![]).await;
        assert_eq!(rows.columns.len(), 1);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_number_of_slaves_follows_the_reads_of_each_interval_with_the_exact_counts_of_the_policy(
) {
    // Long enough that a batch of reads, started right after a decision, ends well before the next one even
    // while a slave starts on a loaded machine.
    let c = Cluster::start_opts(Options {
        scale_interval_secs: Some(6),
        // The policy's counts, up to four slaves, whatever this machine's cores (the default ceiling).
        max_slaves: Some(4),
        ..Options::new(1)
    })
    .await;
    c.write_ok(vec![st("CREATE TABLE t (id INTEGER PRIMARY KEY)", vec![])])
        .await;
    assert_eq!(scaling(&c).await, (1, 1), "0 reads: 1 slave");
    // Each batch of reads right after a decision, so that it falls within one interval; the cluster grows
    // while the next batch runs, and reads and writes keep working meanwhile.
    for (n, slaves) in [(21, 2), (45, 3), (61, 4)] {
        reads(&c, n).await;
        c.write_ok(vec![st("INSERT INTO t DEFAULT VALUES", vec![])])
            .await;
        wait_for_desired(&c, slaves).await;
    }
    c.wait_for_workers(5).await;
    // An idle interval: back to one slave, the others removed gracefully and not replaced.
    wait_for_desired(&c, 1).await;
    c.wait_for_workers(2).await;
    c.write_ok(vec![st("INSERT INTO t DEFAULT VALUES", vec![])])
        .await;
    let rows = c.read_ok("SELECT count(*) FROM t", vec![]).await;
    assert_eq!(rows.rows, vec![vec![Value::Integer(4)]]);
    assert_eq!(scaling(&c).await, (1, 1));
    let (_, body) = c.get("/api/v1/scaling").await;
    assert_eq!(body["in_sync"], 1, "the one slave left serves: {body}");
    c.assert_all_identical().await;
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn scaling_stops_at_the_ceiling() {
    let c = Cluster::start_opts(Options {
        scale_interval_secs: Some(3),
        max_slaves: Some(2),
        ..Options::new(1)
    })
    .await;
    c.write_ok(vec![st("CREATE TABLE t (id INTEGER PRIMARY KEY)", vec![])])
        .await;
    reads(&c, 70).await;
    wait_for_desired(&c, 2).await;
    c.wait_for_workers(3).await;
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn by_default_scaling_stops_at_one_slave_per_core() {
    let cores = std::thread::available_parallelism().unwrap().get();
    let c = Cluster::start_opts(Options {
        // Long enough for the reads below to fall within one interval (as in the exact-counts test).
        scale_interval_secs: Some(6),
        ..Options::new(1)
    })
    .await;
    c.write_ok(vec![st("CREATE TABLE t (id INTEGER PRIMARY KEY)", vec![])])
        .await;
    // Enough for two slaves more than the cores: the policy asks for cores + 2, the ceiling gives the cores.
    reads(&c, 20 * (cores + 2) + 1).await;
    wait_for_desired(&c, cores as u64).await;
    c.wait_for_workers(cores + 1).await;
    c.stop().await;
}

/// The table the scaling loads write: one counter per writer.
async fn create_counters(c: &Cluster) {
    c.write_ok(vec![st(
        "CREATE TABLE counters (id INTEGER PRIMARY KEY, v INTEGER NOT NULL)",
        vec![],
    )])
    .await;
    c.write_ok(
        (0..WRITERS)
            .map(|w| {
                st(
                    "INSERT INTO counters VALUES (?, 0)",
                    vec![Value::Integer(w)],
                )
            })
            .collect(),
    )
    .await;
}

const WRITERS: i64 = 3;
const READERS: usize = 2;

/// The scaling interval of the load test: long enough that three slaves retire well within it, even at the
/// 1.5 s that a retirement under writes takes now, so that the test sees them gone before the next decision.
const INTERVAL_SECS: u64 = 5;

/// How often each client reads while the load is light. Five clients reading at most once per 1.7 s make at
/// most 15 reads in a 5 s interval: an interval of light load always decides one slave. Writes are not counted
/// by the policy, so the writers keep writing flat out.
const LIGHT_PACE: Duration = Duration::from_millis(1700);

/// Writers and readers running against a cluster while it scales, checking every answer as it comes: any
/// status but 200, a connection error or a stale read panics the client, and the test with it.
///
/// Each writer sets its own counter to 1, 2, 3, ... and, after each acknowledged write (every one while the
/// load is heavy, one per [`LIGHT_PACE`] otherwise), reads its counter back: a read sent after the
/// acknowledgement must see exactly that value. Each reader notes every writer's last acknowledged value, then
/// reads all counters: each must be at least what was acknowledged before the read was sent, and at least
/// what this reader saw before (reads never go back in time, even while a write is in flight).
struct Load {
    stop: Arc<AtomicBool>,
    heavy: Arc<AtomicBool>,
    acked: Arc<Vec<AtomicI64>>,
    writes: Arc<AtomicUsize>,
    reads: Arc<AtomicUsize>,
    tasks: Vec<JoinHandle<()>>,
}

impl Load {
    /// Starts the clients, heavy.
    fn start(c: &Arc<Cluster>) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let heavy = Arc::new(AtomicBool::new(true));
        let acked: Arc<Vec<AtomicI64>> =
            Arc::new((0..WRITERS).map(|_| AtomicI64::new(0)).collect());
        let writes = Arc::new(AtomicUsize::new(0));
        let reads = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for w in 0..WRITERS {
            let (c, stop, heavy, acked, writes, reads) = (
                c.clone(),
                stop.clone(),
                heavy.clone(),
                acked.clone(),
                writes.clone(),
                reads.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let mut checked: Option<Instant> = None;
                let mut v = 0;
                while !stop.load(Ordering::SeqCst) {
                    v += 1;
                    let (status, body) = c
                        .write(vec![st(
                            "UPDATE counters SET v = ? WHERE id = ?",
                            vec![Value::Integer(v), Value::Integer(w)],
                        )])
                        .await;
                    assert_eq!(status, StatusCode::OK, "writer {w}, write of {v}: {body}");
                    acked[w as usize].store(v, Ordering::SeqCst);
                    writes.fetch_add(1, Ordering::SeqCst);
                    if !heavy.load(Ordering::SeqCst)
                        && checked.is_some_and(|t| t.elapsed() < LIGHT_PACE)
                    {
                        continue;
                    }
                    checked = Some(Instant::now());
                    let (status, body) = c
                        .read(
                            "SELECT v FROM counters WHERE id = ?",
                            vec![Value::Integer(w)],
                        )
                        .await;
                    assert_eq!(
                        status,
                        StatusCode::OK,
                        "writer {w}, read after the write of {v}: {body}"
                    );
                    let seen = body["rows"][0][0].as_i64().expect("a counter");
                    assert_eq!(
                        seen, v,
                        "stale read: counter {w} was acknowledged at {v} before the read was sent"
                    );
                    reads.fetch_add(1, Ordering::SeqCst);
                }
            }));
        }
        for r in 0..READERS {
            let (c, stop, heavy, acked, reads) = (
                c.clone(),
                stop.clone(),
                heavy.clone(),
                acked.clone(),
                reads.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let mut seen = vec![0; WRITERS as usize];
                let mut last: Option<Instant> = None;
                while !stop.load(Ordering::SeqCst) {
                    // Pacing, not waiting for a state: a light load must stay under the policy's 21 reads.
                    while !stop.load(Ordering::SeqCst)
                        && !heavy.load(Ordering::SeqCst)
                        && last.is_some_and(|t| t.elapsed() < LIGHT_PACE)
                    {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    let floor: Vec<i64> = acked.iter().map(|a| a.load(Ordering::SeqCst)).collect();
                    last = Some(Instant::now());
                    let (status, body) = c
                        .read("SELECT id, v FROM counters ORDER BY id", vec![])
                        .await;
                    assert_eq!(status, StatusCode::OK, "reader {r}: {body}");
                    let rows = body["rows"].as_array().expect("rows");
                    assert_eq!(rows.len(), WRITERS as usize, "reader {r}: {body}");
                    for row in rows {
                        let id = row[0].as_i64().expect("an id") as usize;
                        let v = row[1].as_i64().expect("a counter");
                        assert!(
                            v >= floor[id],
                            "stale read: reader {r} saw counter {id} at {v}, acknowledged at {} before the \
                             read was sent",
                            floor[id]
                        );
                        // The higher value may still be unacknowledged (applied by one slave, not yet by
                        // another): once a read has shown it, no later read may miss it.
                        assert!(
                            v >= seen[id],
                            "reader {r}: counter {id} went back from {} to {v} (acknowledged: {})",
                            seen[id],
                            floor[id]
                        );
                        seen[id] = v;
                    }
                    reads.fetch_add(1, Ordering::SeqCst);
                }
            }));
        }
        Load {
            stop,
            heavy,
            acked,
            writes,
            reads,
            tasks,
        }
    }

    fn set_heavy(&self, heavy: bool) {
        self.heavy.store(heavy, Ordering::SeqCst);
    }

    fn writes(&self) -> usize {
        self.writes.load(Ordering::SeqCst)
    }

    fn reads(&self) -> usize {
        self.reads.load(Ordering::SeqCst)
    }

    /// Polls `done` until it holds, for at most [`SETTLE`]. A client that stopped has failed: its panic is the
    /// test's failure, reported at once.
    async fn until(&mut self, what: &str, mut done: impl FnMut() -> bool) {
        let deadline = tokio::time::Instant::now() + SETTLE;
        loop {
            if let Some(i) = self.tasks.iter().position(|t| t.is_finished()) {
                let failed = self.tasks.swap_remove(i);
                failed.await.expect("a client of the load");
                panic!("a client of the load stopped without failing");
            }
            if done() {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "waited {SETTLE:?} for {what}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Waits until both more writes and more reads than now have been checked.
    async fn progress(&mut self, writes: usize, reads: usize) {
        let (w, r) = (self.writes() + writes, self.reads() + reads);
        let (wc, rc) = (self.writes.clone(), self.reads.clone());
        self.until("the load to go on", || {
            wc.load(Ordering::SeqCst) >= w && rc.load(Ordering::SeqCst) >= r
        })
        .await;
    }

    /// Stops the clients (a failure of one is the test's) and returns the last value acknowledged per writer.
    async fn finish(self) -> Vec<i64> {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.tasks {
            t.await.expect("a client of the load");
        }
        println!(
            "load: {} writes and {} reads, all 200, none stale, none going back",
            self.writes.load(Ordering::SeqCst),
            self.reads.load(Ordering::SeqCst),
        );
        self.acked
            .iter()
            .map(|a| a.load(Ordering::SeqCst))
            .collect()
    }
}

/// What a client polling `GET /api/v1/scaling` and `GET /api/v1/workers` saw, with how far the load had got.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Sample {
    at: Duration,
    desired: u64,
    actual: u64,
    /// Slaves shown in sync by `/api/v1/workers`.
    in_sync: usize,
    writes: usize,
    reads: usize,
}

impl Sample {
    fn state(&self) -> (u64, u64, usize) {
        (self.desired, self.actual, self.in_sync)
    }
}

/// Polls the two endpoints every few milliseconds until stopped; returns every sample.
struct Monitor {
    stop: Arc<AtomicBool>,
    task: JoinHandle<Vec<Sample>>,
}

impl Monitor {
    fn start(c: &Arc<Cluster>, load: &Load) -> Monitor {
        let stop = Arc::new(AtomicBool::new(false));
        let (c, stop2, writes, reads) = (
            c.clone(),
            stop.clone(),
            load.writes.clone(),
            load.reads.clone(),
        );
        let task = tokio::spawn(async move {
            let started = Instant::now();
            let mut samples = Vec::new();
            while !stop2.load(Ordering::SeqCst) {
                let (desired, actual) = scaling(&c).await;
                let (status, body) = c.get("/api/v1/workers").await;
                assert_eq!(status, StatusCode::OK, "{body}");
                let workers: Vec<WorkerInfo> = serde_json::from_value(body).expect("workers");
                let in_sync = workers
                    .iter()
                    .filter(|w| w.role == Role::Slave && w.in_sync)
                    .count();
                samples.push(Sample {
                    at: started.elapsed(),
                    desired,
                    actual,
                    in_sync,
                    writes: writes.load(Ordering::SeqCst),
                    reads: reads.load(Ordering::SeqCst),
                });
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            samples
        });
        Monitor { stop, task }
    }

    async fn finish(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.expect("the monitor")
    }
}

/// The index of the first sample from `from` on that satisfies `what`.
fn find(samples: &[Sample], from: usize, what: impl Fn(&Sample) -> bool) -> Option<usize> {
    samples[from..].iter().position(what).map(|i| from + i)
}

/// The samples `margin` before sample `from` and `margin` after sample `to` (or the first and last ones).
fn around(samples: &[Sample], from: usize, to: usize, margin: Duration) -> (Sample, Sample) {
    let start = samples[from].at.saturating_sub(margin);
    let end = samples[to].at + margin;
    let before = samples[..=from].iter().rev().find(|s| s.at <= start);
    let after = samples[to..].iter().find(|s| s.at >= end);
    (
        *before.unwrap_or(&samples[0]),
        *after.unwrap_or(samples.last().expect("samples")),
    )
}

/// The longest time over which the samples show no new acknowledged write.
fn longest_write_pause(samples: &[Sample]) -> Duration {
    let mut longest = Duration::ZERO;
    let mut since = samples[0].at;
    for pair in samples.windows(2) {
        if pair[1].writes == pair[0].writes {
            longest = longest.max(pair[1].at - since);
        } else {
            since = pair[1].at;
        }
    }
    longest
}

#[tokio::test(flavor = "multi_thread")]
async fn reads_and_writes_keep_succeeding_without_a_stale_read_while_slaves_are_added_and_removed()
{
    let c = Arc::new(
        Cluster::start_opts(Options {
            scale_interval_secs: Some(INTERVAL_SECS),
            max_slaves: Some(4),
            ..Options::new(1)
        })
        .await,
    );
    create_counters(&c).await;
    let mut load = Load::start(&c);
    let monitor = Monitor::start(&c, &load);
    let cluster = c.clone();
    let state = move || {
        let v = cluster.view();
        (
            cluster.target_slaves(),
            v.workers.len(),
            v.in_sync_members().len(),
        )
    };

    // Heavy: the first decision asks for the ceiling, and three slaves join while the load runs.
    load.until("four slaves in sync", || state() == (4, 5, 4))
        .await;
    load.progress(50, 50).await;
    // Light: the first interval wholly light decides one slave.
    load.set_heavy(false);
    load.until("a decision for one slave", || state().0 == 1)
        .await;
    // Heavy again at once, while three slaves retire: the reads they hold must go to the slave that stays.
    load.set_heavy(true);
    load.until("one slave left", || state() == (1, 2, 1)).await;
    load.progress(50, 50).await;
    // That interval was heavy: the cluster grows again; once it does, light, until it is back to one slave.
    load.until("a decision to grow again", || state().0 > 1)
        .await;
    load.set_heavy(false);
    load.until("one slave again", || state() == (1, 2, 1)).await;
    load.progress(20, 2).await;

    let acked = load.finish().await;
    let samples = monitor.finish().await;
    let mut changes: Vec<Sample> = Vec::new();
    for s in &samples {
        if changes.last().map(Sample::state) != Some(s.state()) {
            changes.push(*s);
        }
    }
    for s in &changes {
        println!(
            "{:>6} ms: desired {} actual {} in sync {} ({} writes, {} reads)",
            s.at.as_millis(),
            s.desired,
            s.actual,
            s.in_sync,
            s.writes,
            s.reads
        );
    }
    // What the endpoints showed, in order: four slaves in sync, back to one, growing again, back to one; the load
    // running before each change started and after it ended.
    let up = find(&samples, 0, |s| s.desired == 4).expect("a decision for four slaves");
    let up_done = find(&samples, up, |s| s.state() == (4, 4, 4)).expect("four slaves in sync");
    let down = find(&samples, up_done, |s| s.desired == 1).expect("a decision for one slave");
    let down_done = find(&samples, down, |s| s.state() == (1, 1, 1)).expect("one slave left");
    let again = find(&samples, down_done, |s| s.desired > 1).expect("a decision to grow again");
    let last_down =
        find(&samples, again, |s| s.desired == 1).expect("a second decision for one slave");
    let last_done = find(&samples, last_down, |s| s.state() == (1, 1, 1)).expect("one slave again");
    for (what, from, to) in [
        ("slaves were added", up, up_done),
        ("slaves were retired", down, down_done),
        ("slaves were retired again", last_down, last_done),
    ] {
        // Each light client reads at least once per LIGHT_PACE: with that much margin on both sides, reads as
        // well as writes must have gone on around the change.
        let (before, after) = around(&samples, from, to, LIGHT_PACE);
        assert!(
            after.writes > before.writes && after.reads > before.reads,
            "no load while {what}: {before:?} .. {after:?}"
        );
        // Printed, not asserted (a timing): how long writes went unacknowledged around the change. That a
        // retirement never waits out a lease is asserted by the test below.
        println!(
            "{what} in {} ms, from the decision seen to the change done; no acknowledged write for {} ms at \
             most meanwhile",
            (samples[to].at - samples[from].at).as_millis(),
            longest_write_pause(&samples[from.saturating_sub(1)..=to]).as_millis()
        );
    }
    assert_eq!(samples.last().expect("samples").state(), (1, 1, 1));

    // Every acknowledged value is the one stored, everywhere.
    let rows = c
        .read_ok("SELECT v FROM counters ORDER BY id", vec![])
        .await;
    let stored: Vec<Value> = acked.iter().map(|&v| Value::Integer(v)).collect();
    assert_eq!(rows.rows.concat(), stored);
    c.assert_all_identical().await;
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slave_crashed_while_the_cluster_grows_is_replaced_and_retired_slaves_are_never_respawned(
) {
    let c = Cluster::start_opts(Options {
        scale_interval_secs: Some(3),
        max_slaves: Some(4),
        ..Options::new(1)
    })
    .await;
    c.write_ok(vec![st(
        "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)",
        vec![],
    )])
    .await;
    // Some data, so that a new slave takes a moment to copy it: the crash below finds the new slaves catching up.
    for chunk in 0..4 {
        let values: Vec<String> = (chunk * 5_000..(chunk + 1) * 5_000)
            .map(|k| format!("({k}, 'row {k:08} of the scaling tests')"))
            .collect();
        c.write_ok(vec![st(
            &format!("INSERT INTO t VALUES {}", values.join(",")),
            vec![],
        )])
        .await;
    }
    reads(&c, 61).await;

    // The next decision asks for four slaves; as soon as one of the new ones registers, a slave crashes.
    let deadline = tokio::time::Instant::now() + e2e::SETTLE;
    let growing = loop {
        let view = c.view();
        if c.target_slaves() == 4 && view.workers.len() > 2 {
            break view;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no new slave registered"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    let victim = c.crash_slave().await;
    let in_sync = growing.in_sync_members();
    assert!(
        in_sync.len() < 4,
        "the cluster had grown already: {growing:?}"
    );
    let victim_was_in_sync = in_sync.iter().any(|id| growing.workers[id].pid == victim);
    println!(
        "crashed slave pid {victim} ({}) with {} of 4 slaves in sync",
        if victim_was_in_sync {
            "in sync"
        } else {
            "catching up"
        },
        in_sync.len()
    );
    // Reads go on until the replacement has joined: a decision that falls before then still asks for four
    // slaves (the ceiling), whatever the machine's speed.
    let deadline = tokio::time::Instant::now() + e2e::SETTLE;
    loop {
        let rows = c.read_ok("SELECT count(*) FROM t", vec![]).await;
        assert_eq!(rows.rows, vec![vec![Value::Integer(20_000)]]);
        let view = c.view();
        if view.workers.len() == 5 && view.in_sync_members().len() == 4 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "four slaves never in sync: {view:?}"
        );
    }
    let view = c.wait_for_workers(5).await;
    assert!(view.workers.values().all(|w| w.pid != victim), "{view:?}");
    assert_eq!(scaling(&c).await, (4, 4));
    c.assert_all_identical().await;

    // No reads from now: a decision goes back to one slave, the three others retire.
    wait_for_desired(&c, 1).await;
    c.wait_for_workers(2).await;
    // Two more decisions, each on a few reads, and a moment after the last: the supervisor never starts a slave
    // to replace the retired ones, at their exit or at a decision (healing.rs checks the first moments after a
    // target set by hand; this follows the scaler over intervals).
    let mut decisions = 0;
    let mut quiet_until = None;
    reads(&c, 5).await;
    let deadline = tokio::time::Instant::now() + e2e::SETTLE;
    while quiet_until.is_none_or(|t| tokio::time::Instant::now() < t) {
        let (status, body) = c.get("/api/v1/scaling").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(
            (&body["desired"], &body["actual"]),
            (&serde_json::json!(1), &serde_json::json!(1)),
            "after {decisions} decisions: {body}"
        );
        assert_eq!(c.pids().await.len(), 2, "after {decisions} decisions");
        assert_eq!(c.view().workers.len(), 2, "after {decisions} decisions");
        if quiet_until.is_none() && body["reads_this_interval"] == 0 {
            // The count was taken: a decision.
            decisions += 1;
            if decisions == 2 {
                quiet_until = Some(tokio::time::Instant::now() + Duration::from_secs(1));
            } else {
                reads(&c, 5).await;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "saw {decisions} decisions"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    c.stop().await;
}

/// A retiring slave leaves the in-sync set at once, while writes flow, instead of being dropped once its read
/// lease has run out. The lease here (20 s) is longer than a write may wait (the orchestrator's 10 s deadline), so
/// a retirement that waited it out would fail the writes meanwhile.
#[tokio::test(flavor = "multi_thread")]
async fn retiring_slaves_under_writes_leave_without_the_writes_waiting_out_their_lease() {
    let c = Arc::new(
        Cluster::start_opts(Options {
            worker_env: vec![("RIDESHARE_LEASE_MS".into(), "20000".into())],
            ..Options::new(3)
        })
        .await,
    );
    c.write_ok(vec![st("CREATE TABLE t (id INTEGER PRIMARY KEY)", vec![])])
        .await;
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicUsize::new(0));
    let writers: Vec<JoinHandle<()>> = (0..4)
        .map(|_| {
            let (c, stop, acked) = (c.clone(), stop.clone(), acked.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    let (status, body) = c
                        .write(vec![st("INSERT INTO t DEFAULT VALUES", vec![])])
                        .await;
                    assert_eq!(
                        status,
                        StatusCode::OK,
                        "a write while slaves retire: {body}"
                    );
                    acked.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();
    let wait_for_more_writes = |n: usize| {
        let acked = acked.clone();
        async move {
            let target = acked.load(Ordering::SeqCst) + n;
            let deadline = Instant::now() + SETTLE;
            while acked.load(Ordering::SeqCst) < target {
                assert!(Instant::now() < deadline, "the writes stalled");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    wait_for_more_writes(50).await;
    c.set_target_slaves(1).await;
    c.wait_for_workers(2).await;
    wait_for_more_writes(50).await;
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.await.expect("a writer");
    }
    let rows = c.read_ok("SELECT count(*) FROM t", vec![]).await;
    assert_eq!(
        rows.rows,
        vec![vec![Value::Integer(
            i64::try_from(acked.load(Ordering::SeqCst)).expect("a count")
        )]]
    );
    c.assert_all_identical().await;
    c.stop().await;
}
