//! The clients: what they ask of the database service and how each answer goes into the history.
//!
//! - **Registers**: `keys` registers, one row each (`reg (k, v)`), read with `db/read`, written and
//!   compared-and-set with `db/write` (`UPDATE … WHERE k = ? AND v = ?`: one row changed is a CAS that took, none
//!   one that did not). Every write carries an idempotency key of its own, so the orchestrator's own retries apply
//!   it once.
//! - **A set**: one client adds distinct elements (`set_elems`), and reads them all once at the end.
//!
//! An answer `200` is `Ok`, `400` is `Fail` (it did not happen), anything else (a `503`, a timeout, a refused or
//! cut connection) is `Info`: it may have happened at any time after it was sent. A client whose operation
//! ended `Info` continues as a new process, as Jepsen's clients do: the old operation may still be in flight.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::history::{Entry, Op, Operation, Outcome};

/// How long a client waits for one answer. Longer than the orchestrator's own budget (10 s), so that its 503
/// comes back rather than a timeout.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(12);

/// The schema the workloads use, created before the history starts.
pub const SCHEMA: [&str; 2] = [
    "CREATE TABLE IF NOT EXISTS reg (k INTEGER PRIMARY KEY, v INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS set_elems (e INTEGER PRIMARY KEY)",
];

/// The orchestrator's database API, as a client sees it.
#[derive(Clone)]
pub struct Db {
    http: reqwest::Client,
    base: String,
}

/// What one request came back with.
enum Answer {
    Ok(Value),
    /// A `400`: the request did not happen.
    Refused(String),
    /// Anything else: it may or may not have happened.
    Unknown(String),
}

impl Db {
    pub fn new(base: &str) -> anyhow::Result<Db> {
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(Duration::from_secs(2))
            .build()?;
        Ok(Db {
            http,
            base: base.trim_end_matches('/').to_owned(),
        })
    }

    async fn post(&self, path: &str, body: Value, key: Option<&str>) -> Answer {
        let mut request = self.http.post(format!("{}{path}", self.base)).json(&body);
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) => return Answer::Unknown(format!("no answer: {e}")),
        };
        let status = response.status();
        let body: Value = match response.json().await {
            Ok(b) => b,
            Err(e) => return Answer::Unknown(format!("{status}, unreadable body: {e}")),
        };
        match status.as_u16() {
            200 => Answer::Ok(body),
            400 => Answer::Refused(body["error"].as_str().unwrap_or("400").to_owned()),
            _ => Answer::Unknown(format!(
                "{status}: {}",
                body["error"].as_str().unwrap_or("")
            )),
        }
    }

    async fn write(&self, sql: &str, params: Value, key: &str) -> Answer {
        let body = json!({"statements": [{"sql": sql, "params": params}]});
        self.post("/api/v1/db/write", body, Some(key)).await
    }

    async fn read(&self, sql: &str, params: Value) -> Answer {
        self.post(
            "/api/v1/db/read",
            json!({"sql": sql, "params": params}),
            None,
        )
        .await
    }

    /// Creates the workloads' tables, retrying until the cluster takes the write (it may still be starting).
    pub async fn create_schema(&self, within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        for (i, sql) in SCHEMA.iter().enumerate() {
            let key = format!("schema-{i}-{}", uuid::Uuid::new_v4());
            loop {
                match self.write(sql, json!([]), &key).await {
                    Answer::Ok(_) => break,
                    Answer::Refused(e) => anyhow::bail!("the schema was refused: {e}"),
                    Answer::Unknown(e) if Instant::now() >= deadline => {
                        anyhow::bail!("the schema could not be created: {e}")
                    }
                    Answer::Unknown(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        }
        Ok(())
    }

    pub async fn register_read(&self, key: u64) -> Outcome<Option<i64>> {
        match self
            .read("SELECT v FROM reg WHERE k = ?", json!([key]))
            .await
        {
            Answer::Ok(body) => match body["rows"].as_array().map(Vec::as_slice) {
                Some([]) => Outcome::Ok(None),
                Some([row]) => match row[0].as_i64() {
                    Some(v) => Outcome::Ok(Some(v)),
                    None => Outcome::Info(format!("not a value: {row}")),
                },
                _ => Outcome::Info(format!("not a register: {body}")),
            },
            Answer::Refused(e) => Outcome::Fail(e),
            Answer::Unknown(e) => Outcome::Info(e),
        }
    }

    pub async fn register_write(&self, key: u64, value: i64) -> Outcome<()> {
        let sql =
            "INSERT INTO reg (k, v) VALUES (?, ?) ON CONFLICT(k) DO UPDATE SET v = excluded.v";
        match self.write(sql, json!([key, value]), &uuid()).await {
            Answer::Ok(_) => Outcome::Ok(()),
            Answer::Refused(e) => Outcome::Fail(e),
            Answer::Unknown(e) => Outcome::Info(e),
        }
    }

    pub async fn register_cas(&self, key: u64, expected: i64, new: i64) -> Outcome<bool> {
        let sql = "UPDATE reg SET v = ? WHERE k = ? AND v = ?";
        match self.write(sql, json!([new, key, expected]), &uuid()).await {
            Answer::Ok(body) => match body["results"][0]["rows_affected"].as_u64() {
                Some(1) => Outcome::Ok(true),
                Some(0) => Outcome::Ok(false),
                _ => Outcome::Info(format!("not a CAS answer: {body}")),
            },
            Answer::Refused(e) => Outcome::Fail(e),
            Answer::Unknown(e) => Outcome::Info(e),
        }
    }

    pub async fn set_add(&self, element: i64) -> Outcome<()> {
        let sql = "INSERT INTO set_elems (e) VALUES (?)";
        match self.write(sql, json!([element]), &uuid()).await {
            Answer::Ok(_) => Outcome::Ok(()),
            Answer::Refused(e) => Outcome::Fail(e),
            Answer::Unknown(e) => Outcome::Info(e),
        }
    }

    pub async fn set_read_all(&self) -> Outcome<BTreeSet<i64>> {
        match self.read("SELECT e FROM set_elems", json!([])).await {
            Answer::Ok(body) => {
                let rows = body["rows"].as_array().cloned().unwrap_or_default();
                let elements: Option<BTreeSet<i64>> = rows.iter().map(|r| r[0].as_i64()).collect();
                match elements {
                    Some(e) => Outcome::Ok(e),
                    None => Outcome::Info(format!("not a set: {body}")),
                }
            }
            Answer::Refused(e) => Outcome::Fail(e),
            Answer::Unknown(e) => Outcome::Info(e),
        }
    }

    /// Whether the cluster answers a read and a write now (the schema's first table, written with a no-op).
    pub async fn healthy(&self) -> bool {
        let read = matches!(self.register_read(u64::MAX >> 1).await, Outcome::Ok(_));
        let write = matches!(
            self.write("DELETE FROM reg WHERE k < 0", json!([]), &uuid())
                .await,
            Answer::Ok(_)
        );
        read && write
    }
}

fn uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Where the clients record what they saw: each entry goes to one writer, with the run's clock.
#[derive(Clone)]
pub struct Recorder {
    start: Instant,
    entries: mpsc::UnboundedSender<Entry>,
}

impl Recorder {
    pub fn new(start: Instant, entries: mpsc::UnboundedSender<Entry>) -> Recorder {
        Recorder { start, entries }
    }

    /// The run's clock: time since it started.
    pub fn now(&self) -> Duration {
        self.start.elapsed()
    }

    pub fn record(&self, entry: Entry) {
        // The writer outlives the clients; if it is gone, the run is ending anyway.
        let _ = self.entries.send(entry);
    }
}

/// The register workload's settings.
#[derive(Debug, Clone, Copy)]
pub struct Registers {
    pub clients: u64,
    pub keys: u64,
    /// A pause between one client's operations, so that a few clients do not saturate two cores.
    pub think: Duration,
}

/// Runs the register clients until `stop` turns true. Returns once all have stopped.
pub async fn run_registers(
    db: Db,
    recorder: Recorder,
    settings: Registers,
    seed: u64,
    stop: watch::Receiver<bool>,
) {
    let clients: Vec<_> = (0..settings.clients)
        .map(|client| {
            let (db, recorder, mut stop) = (db.clone(), recorder.clone(), stop.clone());
            tokio::spawn(async move {
                let mut rng = StdRng::seed_from_u64(seed ^ (client << 32));
                // A value no other client writes: the client's number above, a counter below.
                let mut next_value = (client as i64 + 1) << 32;
                let mut process = client;
                let mut last_seen: Vec<i64> = vec![0; settings.keys as usize];
                while !*stop.borrow() {
                    let key = rng.random_range(0..settings.keys);
                    let invoked = recorder.now();
                    let choice = rng.random_range(0..4);
                    let op = match choice {
                        0 | 1 => {
                            let outcome = db.register_read(key).await;
                            if let Outcome::Ok(Some(v)) = outcome {
                                last_seen[key as usize] = v;
                            }
                            Op::Read { outcome }
                        }
                        2 => {
                            next_value += 1;
                            let value = next_value;
                            Op::Write {
                                value,
                                outcome: db.register_write(key, value).await,
                            }
                        }
                        _ => {
                            next_value += 1;
                            let (expected, new) = (last_seen[key as usize], next_value);
                            Op::Cas {
                                expected,
                                new,
                                outcome: db.register_cas(key, expected, new).await,
                            }
                        }
                    };
                    let unknown = op.status() == crate::history::Status::Unknown;
                    recorder.record(Entry::Op(Operation {
                        process,
                        key,
                        invoked,
                        completed: recorder.now(),
                        op,
                    }));
                    if unknown {
                        process += settings.clients;
                    }
                    tokio::select! {
                        () = tokio::time::sleep(settings.think) => {}
                        _ = stop.changed() => {}
                    }
                }
            })
        })
        .collect();
    for client in clients {
        let _ = client.await;
    }
}

/// The key the set workload records its operations under (registers use `0..keys`).
pub const SET_KEY: u64 = u64::MAX >> 1;

/// Runs the set client until `stop` turns true, then, once `read_all` says so, reads the whole set (retrying
/// until it gets an answer or `read_within` runs out).
pub async fn run_set(
    db: Db,
    recorder: Recorder,
    process: u64,
    think: Duration,
    mut stop: watch::Receiver<bool>,
    read_all: Arc<tokio::sync::Notify>,
    read_within: Duration,
) {
    let mut next = 0i64;
    let mut process = process;
    while !*stop.borrow() {
        next += 1;
        let invoked = recorder.now();
        let outcome = db.set_add(next).await;
        let unknown = matches!(outcome, Outcome::Info(_));
        recorder.record(Entry::Op(Operation {
            process,
            key: SET_KEY,
            invoked,
            completed: recorder.now(),
            op: Op::Add {
                value: next,
                outcome,
            },
        }));
        if unknown {
            process += 1_000;
        }
        tokio::select! {
            () = tokio::time::sleep(think) => {}
            _ = stop.changed() => {}
        }
    }
    read_all.notified().await;
    let deadline = Instant::now() + read_within;
    loop {
        let invoked = recorder.now();
        let outcome = db.set_read_all().await;
        let done = matches!(outcome, Outcome::Ok(_)) || Instant::now() >= deadline;
        recorder.record(Entry::Op(Operation {
            process,
            key: SET_KEY,
            invoked,
            completed: recorder.now(),
            op: Op::ReadAll { outcome },
        }));
        if done {
            return;
        }
        process += 1_000;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
