//! The load: concurrent clients sending one kind of request in a closed loop.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use protocol::{ReadRequest, ReadResponse, Statement, Value, WriteRequest};

use crate::config::Op;
use crate::stats::Sample;

/// The benchmark's table. Created (after dropping any leftover) before a cluster is measured.
pub const TABLE: &str = "dbbench_rows";

/// How long one request may take before it counts as an error: longer than the orchestrator's own request
/// timeout (5 s by default), so its 503 is what we see rather than our own give-up.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// Every write inserts a row with this payload: about the size of a ride.
const PAYLOAD: &str = "dbbench payload: alice 08-05-2030:00-53-09 from 17 to 42, and some padding to reach 100 bytes.";

/// One HTTP client with keep-alive: each load task owns one, so each holds its own connection.
pub fn client() -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        // The orchestrator is reached directly, whatever proxy the environment names.
        .no_proxy()
        .build()
        .context("building an HTTP client")
}

/// A write request, as `db/write` takes it, sent as-is (a wrong status is an error).
pub async fn write(
    client: &reqwest::Client,
    url: &str,
    statements: Vec<Statement>,
) -> anyhow::Result<protocol::WriteResponse> {
    let response = client
        .post(format!("{url}/api/v1/db/write"))
        .json(&WriteRequest { statements })
        .send()
        .await
        .context("POST db/write")?;
    let status = response.status();
    let body = response
        .text()
        .await
        .context("reading the db/write answer")?;
    anyhow::ensure!(
        status == reqwest::StatusCode::OK,
        "db/write: {status} {body}"
    );
    serde_json::from_str(&body).with_context(|| format!("db/write answered {body}"))
}

/// Drops any leftover benchmark table, creates it, and inserts `rows` rows; returns their primary keys.
pub async fn prepare_table(url: &str, rows: u64) -> anyhow::Result<Vec<i64>> {
    /// Rows per write while seeding: enough to be quick, small enough to stay far below the 64 KiB body limit.
    const BATCH: u64 = 200;
    let client = client()?;
    write(
        &client,
        url,
        vec![
            Statement::new(format!("DROP TABLE IF EXISTS {TABLE}"), vec![]),
            Statement::new(
                format!("CREATE TABLE {TABLE} (id INTEGER PRIMARY KEY, payload TEXT NOT NULL)"),
                vec![],
            ),
        ],
    )
    .await
    .context("creating the benchmark table")?;
    let mut ids = Vec::with_capacity(rows as usize);
    let mut left = rows;
    while left > 0 {
        let n = left.min(BATCH);
        let statements = (0..n).map(|_| insert()).collect();
        let written = write(&client, url, statements)
            .await
            .context("inserting the rows to read")?;
        ids.extend(written.results.iter().map(|r| r.last_insert_id));
        left -= n;
    }
    Ok(ids)
}

pub async fn drop_table(url: &str) -> anyhow::Result<()> {
    let statement = Statement::new(format!("DROP TABLE IF EXISTS {TABLE}"), vec![]);
    write(&client()?, url, vec![statement]).await?;
    Ok(())
}

fn insert() -> Statement {
    Statement::new(
        format!("INSERT INTO {TABLE} (payload) VALUES (?)"),
        vec![Value::Text(PAYLOAD.to_owned())],
    )
}

/// Runs `clients` concurrent clients for `warmup + measured`, each sending its next request as soon as the last
/// one is answered, and merges what they measured: requests that started within the measured window.
pub async fn run(
    url: &str,
    op: Op,
    clients: u32,
    ids: Arc<Vec<i64>>,
    warmup: Duration,
    measured: Duration,
) -> anyhow::Result<Sample> {
    let start = Instant::now();
    let window = (start + warmup, start + warmup + measured);
    let mut tasks = Vec::with_capacity(clients as usize);
    for n in 0..clients {
        let client = client()?;
        let url = url.to_owned();
        let ids = ids.clone();
        tasks.push(tokio::spawn(async move {
            client_loop(client, url, op, ids, u64::from(n), window).await
        }));
    }
    let mut merged = Sample::default();
    let mut last_end = window.0;
    for task in tasks {
        let (sample, end) = task.await.context("a load task panicked")?;
        merged.latencies_us.extend(sample.latencies_us);
        merged.errors += sample.errors;
        merged.first_error = merged.first_error.or(sample.first_error);
        last_end = last_end.max(end);
    }
    merged.elapsed = last_end - window.0;
    Ok(merged)
}

/// One client: sends requests until the window closes; returns what it measured and when its last counted
/// request ended.
async fn client_loop(
    client: reqwest::Client,
    url: String,
    op: Op,
    ids: Arc<Vec<i64>>,
    seed: u64,
    (from, until): (Instant, Instant),
) -> (Sample, Instant) {
    let endpoint = match op {
        Op::Write => format!("{url}/api/v1/db/write"),
        Op::Read => format!("{url}/api/v1/db/read"),
    };
    let write_body = serde_json::to_vec(&WriteRequest {
        statements: vec![insert()],
    })
    .expect("a write request serializes");
    let mut rng = SplitMix64(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x0DB0_BE4C);
    let mut sample = Sample::default();
    let mut last_end = from;
    loop {
        let started = Instant::now();
        if started >= until {
            break;
        }
        let body = match op {
            Op::Write => write_body.clone(),
            Op::Read => {
                let id = ids[(rng.next() % ids.len() as u64) as usize];
                serde_json::to_vec(&ReadRequest {
                    sql: format!("SELECT id, payload FROM {TABLE} WHERE id = ?"),
                    params: vec![Value::Integer(id)],
                })
                .expect("a read request serializes")
            }
        };
        let outcome = send(&client, &endpoint, op, body).await;
        let ended = Instant::now();
        if started < from {
            continue;
        }
        last_end = ended;
        match outcome {
            Ok(()) => sample
                .latencies_us
                .push((ended - started).as_micros().try_into().unwrap_or(u64::MAX)),
            Err(e) => {
                sample.errors += 1;
                sample.first_error.get_or_insert(format!("{e:#}"));
            }
        }
    }
    (sample, last_end)
}

/// One request; an error unless it got a 200 with the expected body (a read of a seeded key returns one row).
async fn send(
    client: &reqwest::Client,
    endpoint: &str,
    op: Op,
    body: Vec<u8>,
) -> anyhow::Result<()> {
    let response = client
        .post(endpoint)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await?;
    let status = response.status();
    let bytes = response.bytes().await?;
    if status != reqwest::StatusCode::OK {
        anyhow::bail!("{status} {}", String::from_utf8_lossy(&bytes));
    }
    if op == Op::Read {
        let read: ReadResponse = serde_json::from_slice(&bytes)?;
        anyhow::ensure!(
            read.rows.len() == 1,
            "expected 1 row, got {}",
            read.rows.len()
        );
    }
    Ok(())
}

/// A small fast generator for picking keys; statistical quality is all that matters here.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_payload_is_about_a_hundred_bytes() {
        assert!((90..=110).contains(&PAYLOAD.len()), "{}", PAYLOAD.len());
    }

    #[test]
    fn keys_are_spread_over_every_row() {
        let mut rng = SplitMix64(1);
        let mut seen = [false; 10];
        for _ in 0..200 {
            seen[(rng.next() % 10) as usize] = true;
        }
        assert!(seen.iter().all(|&s| s));
    }
}
