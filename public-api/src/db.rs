//! The services' way to their data: the orchestrator's `db/write` and `db/read`, over one keep-alive HTTP
//! client.
//!
//! Every write carries a fresh `Idempotency-Key` and is retried with that same key when the orchestrator
//! answers 503 or cannot be reached, so a retry never applies a write twice. Reads are retried the same way
//! (they change nothing). A `400` (an SQL error or a constraint violation: nothing was applied) is returned at
//! once as [`DbError::Rejected`]; the caller decides what it means.

use std::time::Duration;

use anyhow::Context;

use backon::{ExponentialBuilder, Retryable};
use protocol::{ReadRequest, ReadResponse, Statement, Value, WriteRequest, WriteResponse};
use reqwest::StatusCode;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::time::Instant;

/// The pauses between retries: 25 ms, doubling up to 500 ms. The orchestrator itself waits out a failover
/// (see ARCHITECTURE.md, "Retry policy"); what is left to retry here fails fast (an orchestrator restarting
/// refuses connections), and retrying that faster than every half second only adds load.
const PAUSES: ExponentialBuilder = ExponentialBuilder::new()
    .with_min_delay(Duration::from_millis(25))
    .with_max_delay(Duration::from_millis(500))
    .without_max_times();

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The orchestrator refused the statements (SQL error or constraint violation); nothing was applied.
    #[error("the database refused the statement: {0}")]
    Rejected(String),
    /// The orchestrator did not answer, or answered 503, until the retry budget ran out.
    #[error("the database is unavailable: {0:#}")]
    Unavailable(anyhow::Error),
    /// An answer that makes no sense (a bug somewhere): not worth retrying.
    #[error("unexpected answer from the database: {0:#}")]
    Unexpected(anyhow::Error),
}

/// Where the database is and how long to wait for it: the same flags in both services.
#[derive(Debug, Clone, clap::Args)]
pub struct DbConfig {
    /// URL of the orchestrator, whose `db/write` and `db/read` hold all the data.
    #[arg(long, env = "RIDESHARE_ORCHESTRATOR_URL", default_value = DbConfig::DEFAULT_URL)]
    pub orchestrator_url: String,

    /// How long one database request may take. Above the orchestrator's whole budget for a request (10 s of
    /// retries by default, each attempt cut to what is left), so that it answers 503 before this side gives up
    /// on it: the inner layer gives up first, and says why.
    #[arg(long, env = "RIDESHARE_DB_TIMEOUT_MS", default_value_t = DbConfig::DEFAULT_TIMEOUT_MS,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub db_timeout_ms: u64,

    /// How long, from its first attempt, a database request is retried after a 503 or a connection failure
    /// before the client gets a 503: long enough to ride out an orchestrator restart (it refuses connections
    /// for about a second), short enough that a 503 after the orchestrator's own full budget is passed on
    /// rather than waited out a second time.
    #[arg(long, env = "RIDESHARE_DB_RETRY_MS", default_value_t = DbConfig::DEFAULT_RETRY_MS)]
    pub db_retry_ms: u64,
}

impl DbConfig {
    pub const DEFAULT_URL: &'static str = "http://127.0.0.1:8083";
    pub const DEFAULT_TIMEOUT_MS: u64 = 12_000;
    pub const DEFAULT_RETRY_MS: u64 = 3_000;

    /// The defaults, for tests that start a service against a given orchestrator.
    pub fn new(orchestrator_url: impl Into<String>) -> Self {
        Self {
            orchestrator_url: orchestrator_url.into(),
            db_timeout_ms: Self::DEFAULT_TIMEOUT_MS,
            db_retry_ms: Self::DEFAULT_RETRY_MS,
        }
    }

    pub fn client(&self) -> anyhow::Result<Db> {
        Db::new(
            &self.orchestrator_url,
            Duration::from_millis(self.db_timeout_ms),
            Duration::from_millis(self.db_retry_ms),
        )
    }
}

/// A client of the orchestrator's database API; cheap to clone (one connection pool).
#[derive(Clone, Debug)]
pub struct Db {
    http: reqwest::Client,
    // Parsed once: parsing a URL (its host through IDNA) on every request cost about 5 % of a service's CPU
    // under load (bench/profile.sh).
    write_url: reqwest::Url,
    read_url: reqwest::Url,
    /// How long a request keeps being retried after a 503 or a transport failure.
    retry_for: Duration,
}

impl Db {
    /// `base` is the orchestrator's URL (`http://127.0.0.1:8083`); `timeout` bounds each attempt and should
    /// exceed the orchestrator's own request timeout, so that it answers 503 before this client gives up.
    pub fn new(base: &str, timeout: Duration, retry_for: Duration) -> anyhow::Result<Self> {
        let base = base.trim_end_matches('/');
        let url = |path: &str| {
            reqwest::Url::parse(&format!("{base}{path}"))
                .with_context(|| format!("the orchestrator URL {base:?} is not a URL"))
        };
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            .build()?;
        Ok(Self {
            http,
            write_url: url("/api/v1/db/write")?,
            read_url: url("/api/v1/db/read")?,
            retry_for,
        })
    }

    /// Runs `statements` as one transaction, exactly once however often it is retried.
    pub async fn write(&self, statements: Vec<Statement>) -> Result<WriteResponse, DbError> {
        let key = uuid::Uuid::new_v4().to_string();
        self.call(&self.write_url, Some(&key), &WriteRequest { statements })
            .await
    }

    pub async fn read(&self, sql: &str, params: Vec<Value>) -> Result<ReadResponse, DbError> {
        let request = ReadRequest {
            sql: sql.to_owned(),
            params,
        };
        self.call(&self.read_url, None, &request).await
    }

    async fn call<Req: Serialize, Rep: DeserializeOwned>(
        &self,
        url: &reqwest::Url,
        key: Option<&str>,
        body: &Req,
    ) -> Result<Rep, DbError> {
        let deadline = Instant::now() + self.retry_for;
        let result = (|| self.attempt(url, key, body))
            .retry(PAUSES)
            .when(|failure| matches!(failure, Failure::Transient(_)))
            // No pause that would end past the retry window.
            .adjust(move |_, pause| pause.filter(|p| Instant::now() + *p <= deadline))
            .notify(|failure, pause| tracing::debug!("retrying {url} in {pause:?}: {failure:?}"))
            .await;
        result.map_err(|failure| match failure {
            Failure::Final(e) => e,
            Failure::Transient(e) => DbError::Unavailable(e),
        })
    }

    async fn attempt<Req: Serialize, Rep: DeserializeOwned>(
        &self,
        url: &reqwest::Url,
        key: Option<&str>,
        body: &Req,
    ) -> Result<Rep, Failure> {
        let mut request = self.http.post(url.clone()).json(body);
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        // The request being served, so the orchestrator's log lines and the workers' name it too.
        if let Some(id) = telemetry::request_id::current() {
            request = request.header(telemetry::request_id::HEADER, id);
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(e) => {
                return Err(Failure::Transient(
                    anyhow::Error::new(e).context(format!("POST {url}")),
                ))
            }
        };
        let status = response.status();
        let text = match response.text().await {
            Ok(text) => text,
            Err(e) => {
                return Err(Failure::Transient(
                    anyhow::Error::new(e).context(format!("reading {url}")),
                ));
            }
        };
        let result = match status {
            StatusCode::OK => serde_json::from_str(&text)
                .map_err(|e| DbError::Unexpected(anyhow::anyhow!("{url}: {e}: {text:.200}"))),
            StatusCode::BAD_REQUEST => Err(DbError::Rejected(
                serde_json::from_str::<protocol::ErrorBody>(&text)
                    .map(|b| b.error)
                    .unwrap_or(text),
            )),
            StatusCode::SERVICE_UNAVAILABLE
            | StatusCode::BAD_GATEWAY
            | StatusCode::GATEWAY_TIMEOUT => {
                return Err(Failure::Transient(anyhow::anyhow!(
                    "{url} answered {status}: {text:.200}"
                )))
            }
            other => Err(DbError::Unexpected(anyhow::anyhow!(
                "{url} answered {other}: {text:.200}"
            ))),
        };
        result.map_err(Failure::Final)
    }
}

/// Why an attempt failed: for good (returned as is), or in a way worth another attempt.
#[derive(Debug)]
enum Failure {
    Final(DbError),
    Transient(anyhow::Error),
}

/// Typed access to the cells of a [`ReadResponse`] row; a cell of the wrong type is [`DbError::Unexpected`]
/// (the schema and the query disagree).
pub trait RowExt {
    fn int(&self, i: usize) -> Result<i64, DbError>;
    fn text(&self, i: usize) -> Result<&str, DbError>;
}

impl RowExt for [Value] {
    fn int(&self, i: usize) -> Result<i64, DbError> {
        match self.get(i) {
            Some(Value::Integer(n)) => Ok(*n),
            other => Err(DbError::Unexpected(anyhow::anyhow!(
                "column {i}: expected an integer, got {other:?}"
            ))),
        }
    }

    fn text(&self, i: usize) -> Result<&str, DbError> {
        match self.get(i) {
            Some(Value::Text(s)) => Ok(s),
            other => Err(DbError::Unexpected(anyhow::anyhow!(
                "column {i}: expected text, got {other:?}"
            ))),
        }
    }
}

/// Shorthands for statement parameters.
pub fn text(s: &str) -> Value {
    Value::Text(s.to_owned())
}

pub fn int(n: impl Into<i64>) -> Value {
    Value::Integer(n.into())
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use axum::http::HeaderMap;
    use axum::routing::post;
    use axum::{Json, Router};

    use super::*;

    /// A fake orchestrator answering `db/write` from a script of statuses, recording each request's key.
    async fn fake(script: Vec<StatusCode>) -> (String, Arc<Mutex<Vec<Option<String>>>>) {
        let keys: Arc<Mutex<Vec<Option<String>>>> = Arc::default();
        let script = Arc::new(Mutex::new(script.into_iter()));
        let seen = keys.clone();
        let app = Router::new().route(
            "/api/v1/db/write",
            post(move |headers: HeaderMap| async move {
                seen.lock().unwrap().push(
                    headers
                        .get("idempotency-key")
                        .map(|v| v.to_str().unwrap().to_owned()),
                );
                let status = script.lock().unwrap().next().unwrap_or(StatusCode::OK);
                let body = match status {
                    StatusCode::OK => serde_json::json!({"results": [{"rows_affected": 1, "last_insert_id": 7}], "seq": 1}),
                    _ => serde_json::json!({"error": "UNIQUE constraint failed: users.username"}),
                };
                (status, Json(body))
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (base, keys)
    }

    fn insert() -> Vec<Statement> {
        vec![Statement::new("INSERT INTO t VALUES (?)", vec![int(1)])]
    }

    #[tokio::test]
    async fn a_write_is_retried_after_503s_with_the_same_idempotency_key() {
        let (base, keys) = fake(vec![StatusCode::SERVICE_UNAVAILABLE; 2]).await;
        let db = Db::new(&base, Duration::from_secs(5), Duration::from_secs(5)).unwrap();
        let written = db.write(insert()).await.unwrap();
        assert_eq!(written.results[0].last_insert_id, 7);
        let keys = keys.lock().unwrap();
        assert_eq!(keys.len(), 3);
        assert!(keys[0].is_some());
        assert!(keys.iter().all(|k| k == &keys[0]), "{keys:?}");
    }

    #[tokio::test]
    async fn every_attempt_made_while_serving_a_request_carries_its_id() {
        let ids: Arc<Mutex<Vec<Option<String>>>> = Arc::default();
        let seen = ids.clone();
        let attempts = Arc::new(Mutex::new(0));
        let app = Router::new().route(
            "/api/v1/db/read",
            post(move |headers: HeaderMap| async move {
                seen.lock().unwrap().push(
                    headers
                        .get("x-request-id")
                        .map(|v| v.to_str().unwrap().to_owned()),
                );
                let mut n = attempts.lock().unwrap();
                *n += 1;
                if *n == 1 {
                    let body = serde_json::json!({"error": "no slave in sync"});
                    return (StatusCode::SERVICE_UNAVAILABLE, Json(body));
                }
                (
                    StatusCode::OK,
                    Json(serde_json::json!({"columns": [], "rows": []})),
                )
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let db = Db::new(&base, Duration::from_secs(5), Duration::from_secs(5)).unwrap();
        telemetry::request_id::scope("req-42".into(), db.read("SELECT 1", vec![]))
            .await
            .unwrap();
        db.read("SELECT 1", vec![]).await.unwrap();
        let ids = ids.lock().unwrap();
        assert_eq!(
            *ids,
            vec![Some("req-42".to_owned()), Some("req-42".to_owned()), None],
            "the retry carries the id too; a read outside a request carries none"
        );
    }

    #[tokio::test]
    async fn each_write_gets_its_own_key() {
        let (base, keys) = fake(vec![]).await;
        let db = Db::new(&base, Duration::from_secs(5), Duration::from_secs(5)).unwrap();
        db.write(insert()).await.unwrap();
        db.write(insert()).await.unwrap();
        let keys = keys.lock().unwrap();
        assert_ne!(keys[0], keys[1]);
    }

    #[tokio::test]
    async fn a_rejection_is_returned_at_once_with_its_reason() {
        let (base, keys) = fake(vec![StatusCode::BAD_REQUEST]).await;
        let db = Db::new(&base, Duration::from_secs(5), Duration::from_secs(5)).unwrap();
        match db.write(insert()).await {
            Err(DbError::Rejected(reason)) => assert!(reason.contains("UNIQUE"), "{reason}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(keys.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn an_orchestrator_that_stays_unavailable_ends_in_unavailable() {
        let (base, keys) = fake(vec![StatusCode::SERVICE_UNAVAILABLE; 1000]).await;
        let db = Db::new(&base, Duration::from_secs(5), Duration::from_millis(200)).unwrap();
        assert!(matches!(
            db.write(insert()).await,
            Err(DbError::Unavailable(_))
        ));
        assert!(keys.lock().unwrap().len() >= 2, "retried at least once");
    }

    #[tokio::test]
    async fn an_unreachable_orchestrator_is_unavailable() {
        // A port that was just free: nothing listens there.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        drop(listener);
        let db = Db::new(&base, Duration::from_secs(1), Duration::from_millis(100)).unwrap();
        assert!(matches!(
            db.read("SELECT 1", vec![]).await,
            Err(DbError::Unavailable(_))
        ));
    }

    #[test]
    fn cells_are_read_by_type() {
        let row = [Value::Integer(3), Value::Text("a".into()), Value::Null];
        assert_eq!(row.int(0).unwrap(), 3);
        assert_eq!(row.text(1).unwrap(), "a");
        assert!(row.int(1).is_err());
        assert!(row.text(2).is_err());
        assert!(row.int(9).is_err());
    }
}
