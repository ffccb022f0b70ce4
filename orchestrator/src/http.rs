//! The HTTP API: routes and handlers (the strict JSON body and the `Idempotency-Key` are in
//! [`crate::extract`], the attempts of a request in [`crate::retry`]).
//!
//! Handlers read the cluster from the cached ZooKeeper view (never from ZooKeeper itself) to know whether a
//! worker could answer, and make RPCs to the workers over RabbitMQ. A request that meets a failover (no
//! master, no slave in sync, no answer, or a master that cannot replicate) is tried again, with the same
//! idempotency key for a write, after a short pause that ends early when the view shows the cluster ready,
//! until its deadline; then it gets 503. A 400 is never retried.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::{Json, Router};
use protocol::queue::{Command, CommandReply, KeyedWrite, ReadReply};
use protocol::{
    ErrorBody, Names, ReadRequest, ReadResponse, Role, WorkerInfo, WriteRequest, WriteResponse,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::watch;
use utoipa_swagger_ui::SwaggerUi;

use crate::batch::{Batcher, Reads, Writes};
use crate::cluster::Control;
use crate::error::Error;
pub use crate::extract::{idempotency_key, JsonBody, MAX_BODY_BYTES, MAX_IDEMPOTENCY_KEY_LEN};
use crate::retry::Attempts;
use crate::rpc::Rpc;
use crate::scaling::ReadCounter;
use crate::view::ClusterView;

/// What every handler needs; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub rpc: Arc<dyn Rpc>,
    /// Reads and writes travel in batches (see [`crate::batch`]); clears and other commands alone.
    pub reads: Batcher<Reads>,
    pub writes: Batcher<Writes>,
    /// `db/read` requests counted for scaling.
    pub read_counter: Arc<ReadCounter>,
    pub control: Arc<dyn Control>,
    pub view: watch::Receiver<ClusterView>,
    pub names: Names,
    /// How long one attempt waits for a worker's answer.
    pub request_timeout: Duration,
    /// How long a write keeps being retried (see `Config::write_deadline_ms`).
    pub write_deadline: Duration,
    /// How long a read keeps being retried (see `Config::read_deadline_ms`).
    pub read_deadline: Duration,
}

/// Read batches out at once: enough to keep a few slaves busy, few enough that batches grow under load.
const READS_IN_FLIGHT: usize = 4;
/// Write batches out at once: the master runs one round at a time, so two keep it fed while one travels.
const WRITES_IN_FLIGHT: usize = 2;
/// Requests in one message at most: bounds a message's size and one round's work.
const MAX_BATCH: usize = 128;

/// How long requests may take (see `Config`).
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// One attempt.
    pub request: Duration,
    /// All the attempts of a write.
    pub write_deadline: Duration,
    /// All the attempts of a read.
    pub read_deadline: Duration,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/api/v1/db/write", post(write))
        .route("/api/v1/db/read", post(read))
        .route("/api/v1/db/clear", post(clear))
        .route("/api/v1/crash/master", post(crash_master))
        .route("/api/v1/crash/slave", post(crash_slave))
        .route("/api/v1/worker/list", get(worker_list))
        .route("/api/v1/workers", get(workers))
        .route("/api/v1/scaling", get(scaling))
        .route("/metrics", get(telemetry::metrics::render))
        .merge(SwaggerUi::new("/api/docs").url("/api/openapi.json", crate::openapi()))
        // Must come after the routes: it applies to the method routers registered so far. axum still adds
        // the `Allow` header to what it returns.
        .method_not_allowed_fallback(|| async { Error::MethodNotAllowed })
        .fallback(|| async { Error::NotFound })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        // After every route and the fallback: request ids and metrics for all of them (see `telemetry::layer`).
        .layer(axum::middleware::from_fn(telemetry::layer))
        .with_state(state)
}

/// `{}`, the body of answers that carry nothing.
#[derive(Serialize, utoipa::ToSchema)]
struct Empty {}

#[utoipa::path(get, path = "/health", tag = "cluster",
    responses(
        (status = 200, description = "a master and at least one slave in sync", body = Empty),
        (status = 503, description = "no master, or no slave in sync", body = ErrorBody),
    ))]
async fn health(State(state): State<AppState>) -> Result<Json<Empty>, Error> {
    let view = state.view.borrow();
    if view.master.is_none() {
        return Err(Error::NoMaster);
    }
    if view.in_sync_members().is_empty() {
        return Err(Error::NoSlaveInSync);
    }
    Ok(Json(Empty {}))
}

#[utoipa::path(post, path = "/api/v1/db/write", tag = "database", request_body = WriteRequest,
    params(("Idempotency-Key" = Option<String>, Header, nullable = false, min_length = 1, max_length = 200,
        pattern = "^[!-~]+$",
        description = "1 to 200 visible ASCII characters: a write sent again with the same key is applied once")),
    responses(
        (status = 200, description = "the statements ran as one transaction on the master, and every slave in \
            the in-sync set applied it", body = WriteResponse),
        (status = 400, description = "an invalid body or Idempotency-Key, or SQLite refused a statement; nothing \
            was applied", body = ErrorBody),
        (status = 503, description = "no master, or the write could not be replicated in time; retrying with \
            the same Idempotency-Key is safe", body = ErrorBody),
        (status = 500, description = "a bug, or an answer from a worker that makes no sense", body = ErrorBody),
    ))]
async fn write(
    State(state): State<AppState>,
    headers: HeaderMap,
    JsonBody(request): JsonBody<WriteRequest>,
) -> Result<Json<WriteResponse>, Error> {
    // Without a key from the client one is made up, so that a retry, ours or the broker's redelivery, still
    // applies once.
    let key = idempotency_key(&headers)?.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let reply = state
        .command(Outgoing::Write(KeyedWrite {
            key,
            statements: request.statements,
        }))
        .await?;
    match reply {
        CommandReply::Written(response) => Ok(Json(response)),
        other => Err(command_failure(other)),
    }
}

#[utoipa::path(post, path = "/api/v1/db/clear", tag = "database",
    responses(
        (status = 200, description = "every row of every table is deleted, on every worker", body = Empty),
        (status = 400, description = "the master refused the clear", body = ErrorBody),
        (status = 503, description = "no master, or the write could not be replicated in time; retrying with \
            the same Idempotency-Key is safe", body = ErrorBody),
        (status = 500, description = "a bug, or an answer from a worker that makes no sense", body = ErrorBody),
    ))]
async fn clear(State(state): State<AppState>) -> Result<Json<Empty>, Error> {
    let key = uuid::Uuid::new_v4().to_string();
    match state.command(Outgoing::Clear { key }).await? {
        CommandReply::Written(_) => Ok(Json(Empty {})),
        other => Err(command_failure(other)),
    }
}

#[utoipa::path(post, path = "/api/v1/db/read", tag = "database", request_body = ReadRequest,
    responses(
        (status = 200, description = "the rows, answered by a slave in sync", body = ReadResponse),
        (status = 400, description = "an invalid body, SQLite refused the statement, or it would write",
            body = ErrorBody),
        (status = 503, description = "no slave in sync answered in time; retry", body = ErrorBody),
        (status = 500, description = "a bug, or an answer from a worker that makes no sense", body = ErrorBody),
    ))]
async fn read(
    State(state): State<AppState>,
    JsonBody(request): JsonBody<ReadRequest>,
) -> Result<Json<ReadResponse>, Error> {
    state.read_counter.record();
    let (state, request) = (&state, &request);
    let rows = state
        .attempts(state.read_deadline, can_read)
        .run(|timeout| async move {
            if state.view.borrow().in_sync_members().is_empty() {
                return Err(Error::NoSlaveInSync);
            }
            match state.reads.call(request.clone(), timeout).await? {
                ReadReply::Rows(rows) => Ok(rows),
                ReadReply::Rejected { error } => Err(Error::BadRequest(error)),
            }
        })
        .await?;
    Ok(Json(rows))
}

#[utoipa::path(post, path = "/api/v1/crash/master", tag = "cluster",
    responses(
        (status = 200, description = "the master was killed: its pid", body = [u32]),
        (status = 400, description = "there is no master", body = ErrorBody),
        (status = 500, description = "a bug, or an answer from a worker that makes no sense", body = ErrorBody),
    ))]
async fn crash_master(State(state): State<AppState>) -> Result<Json<Vec<u32>>, Error> {
    crash(&state, Role::Master).await
}

#[utoipa::path(post, path = "/api/v1/crash/slave", tag = "cluster",
    responses(
        (status = 200, description = "the slave with the highest pid was killed: its pid", body = [u32]),
        (status = 400, description = "there is no slave", body = ErrorBody),
        (status = 500, description = "a bug, or an answer from a worker that makes no sense", body = ErrorBody),
    ))]
async fn crash_slave(State(state): State<AppState>) -> Result<Json<Vec<u32>>, Error> {
    crash(&state, Role::Slave).await
}

async fn crash(state: &AppState, role: Role) -> Result<Json<Vec<u32>>, Error> {
    match state.control.crash(role).await {
        Ok(Some(pid)) => Ok(Json(vec![pid])),
        Ok(None) => Err(Error::BadRequest(match role {
            Role::Master => "there is no master".to_owned(),
            Role::Slave => "there is no slave".to_owned(),
        })),
        Err(e) => Err(Error::Internal(e.context("crashing a worker"))),
    }
}

#[utoipa::path(get, path = "/api/v1/worker/list", tag = "cluster",
    responses((status = 200, description = "every worker's pid, master and slaves, ascending", body = [u32])))]
async fn worker_list(State(state): State<AppState>) -> Json<Vec<u32>> {
    Json(state.view.borrow().pids())
}

/// `GET /api/v1/scaling` (ext): the number of slaves scaling wants, the number registered, the number in sync,
/// and the reads counted so far in this interval.
#[utoipa::path(get, path = "/api/v1/scaling", tag = "cluster",
    responses((status = 200, description = "the slaves scaling wants, those registered, those in sync, and the \
        reads counted so far in this interval", body = Scaling)))]
async fn scaling(State(state): State<AppState>) -> Json<Scaling> {
    let slaves: Vec<WorkerInfo> = state
        .view
        .borrow()
        .worker_infos()
        .into_iter()
        .filter(|w| w.role == Role::Slave)
        .collect();
    Json(Scaling {
        desired: state.control.target_slaves(),
        actual: slaves.len(),
        in_sync: slaves.iter().filter(|w| w.in_sync).count(),
        reads_this_interval: state.read_counter.current(),
    })
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct Scaling {
    desired: usize,
    /// Registered slaves, including new ones still copying the data.
    actual: usize,
    /// Slaves in the in-sync set: those that serve reads.
    in_sync: usize,
    reads_this_interval: u64,
}

#[utoipa::path(get, path = "/api/v1/workers", tag = "cluster",
    responses((status = 200, description = "every worker, by pid", body = [WorkerInfo])))]
async fn workers(State(state): State<AppState>) -> Json<Vec<WorkerInfo>> {
    Json(state.view.borrow().worker_infos())
}

/// The cluster can take a write: a master with a slave in sync.
fn can_write(view: &ClusterView) -> bool {
    view.is_healthy()
}

/// The cluster can serve a read: a slave in sync with the current master.
fn can_read(view: &ClusterView) -> bool {
    !view.in_sync_members().is_empty()
}

/// A command on its way to the master. Writes always travel in batches (`Command::Writes`), with others;
/// a clear alone.
enum Outgoing {
    Write(KeyedWrite),
    Clear { key: String },
}

impl AppState {
    /// Builds the state, starting the batchers (a tokio runtime must be running).
    pub fn new(
        rpc: Arc<dyn Rpc>,
        control: Arc<dyn Control>,
        view: watch::Receiver<ClusterView>,
        names: Names,
        timeouts: Timeouts,
    ) -> Self {
        let reads = Batcher::start(
            Reads,
            rpc.clone(),
            names.read_queue(),
            READS_IN_FLIGHT,
            MAX_BATCH,
        );
        let writes = Batcher::start(
            Writes,
            rpc.clone(),
            names.write_queue(),
            WRITES_IN_FLIGHT,
            MAX_BATCH,
        );
        Self {
            rpc,
            reads,
            writes,
            read_counter: Arc::default(),
            control,
            view,
            names,
            request_timeout: timeouts.request,
            write_deadline: timeouts.write_deadline,
            read_deadline: timeouts.read_deadline,
        }
    }

    /// The attempts of one request within `budget`; pauses end early once the view shows `ready`.
    fn attempts(&self, budget: Duration, ready: fn(&ClusterView) -> bool) -> Attempts {
        Attempts {
            budget,
            request_timeout: self.request_timeout,
            view: self.view.clone(),
            ready,
        }
    }

    /// Sends a command to the master, retrying the very same command (so the same idempotency key: it applies
    /// at most once however many attempts reach a master) while the failure is transient, until the write
    /// deadline. Returns the first answer that is not `Unavailable`, or the last failure.
    async fn command(&self, command: Outgoing) -> Result<CommandReply, Error> {
        let clear = match &command {
            Outgoing::Clear { key } => encode(&Command::Clear { key: key.clone() })?,
            Outgoing::Write(_) => Vec::new(),
        };
        let queue = self.names.write_queue();
        let (command, clear, queue) = (&command, &clear, &queue);
        let attempt = |timeout| async move {
            if self.view.borrow().master.is_none() {
                return Err(Error::NoMaster);
            }
            let answer = match command {
                Outgoing::Clear { .. } => {
                    self.call::<CommandReply>(queue, clear.clone(), timeout)
                        .await
                }
                Outgoing::Write(w) => self.writes.call(w.clone(), timeout).await,
            };
            match answer {
                Ok(CommandReply::Unavailable { error }) => Err(Error::Unavailable(
                    anyhow::anyhow!("the master answered: {error}"),
                )),
                other => other,
            }
        };
        self.attempts(self.write_deadline, can_write)
            .run(attempt)
            .await
    }

    async fn call<Rep: DeserializeOwned>(
        &self,
        queue: &str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<Rep, Error> {
        let request_id = telemetry::request_id::current().unwrap_or_default();
        let reply = self
            .rpc
            .call(queue, &body, &request_id, timeout)
            .await
            .map_err(|e| Error::Unavailable(anyhow::anyhow!("request on {queue}: {e}")))?;
        serde_json::from_slice(&reply).map_err(|e| {
            Error::Internal(anyhow::anyhow!(
                "unreadable reply on {queue}: {e}: {}",
                String::from_utf8_lossy(&reply[..reply.len().min(200)])
            ))
        })
    }
}

fn encode<T: Serialize>(request: &T) -> Result<Vec<u8>, Error> {
    serde_json::to_vec(request)
        .map_err(|e| Error::Internal(anyhow::anyhow!("encoding a request: {e}")))
}

/// The error for a command reply other than `Written`.
fn command_failure(reply: CommandReply) -> Error {
    match reply {
        CommandReply::Rejected { error } => Error::BadRequest(error),
        CommandReply::Unavailable { error } => {
            Error::Unavailable(anyhow::anyhow!("the master answered: {error}"))
        }
        CommandReply::Written(_) => Error::Internal(anyhow::anyhow!("a write is not a failure")),
        CommandReply::Snapshot(_)
        | CommandReply::Joined { .. }
        | CommandReply::Left
        | CommandReply::Batch { .. } => Error::Internal(anyhow::anyhow!(
            "the master answered a write with a snapshot, join or batch reply"
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use axum::body::Body;
    use axum::extract::Request;
    use axum::http::{header, Method, StatusCode};
    use futures::future::BoxFuture;
    use protocol::coord::{InSyncSet, MasterRecord, WorkerRecord};
    use protocol::{ErrorBody, StatementResult, Value};
    use tower::ServiceExt;

    use protocol::queue::ReadBatchReply;

    use super::*;
    use crate::rpc::RpcError;

    /// Answers every call with the same canned reply (or error), and remembers what it was sent.
    struct FakeRpc {
        reply: Box<dyn Fn() -> Result<Vec<u8>, RpcError> + Send + Sync>,
        calls: Mutex<Vec<(String, serde_json::Value)>>,
    }

    impl Rpc for FakeRpc {
        fn call<'a>(
            &'a self,
            queue: &'a str,
            body: &'a [u8],
            _request_ids: &'a str,
            _timeout: Duration,
        ) -> BoxFuture<'a, Result<Vec<u8>, RpcError>> {
            let sent = serde_json::from_slice(body).unwrap();
            self.calls.lock().unwrap().push((queue.to_owned(), sent));
            Box::pin(async move { (self.reply)() })
        }
    }

    fn replying<T: Serialize>(reply: T) -> Arc<FakeRpc> {
        let bytes = serde_json::to_vec(&reply).unwrap();
        Arc::new(FakeRpc {
            reply: Box::new(move || Ok(bytes.clone())),
            calls: Mutex::default(),
        })
    }

    /// A slave answering every read batch with `reply` (for a batch of one read).
    fn answering_reads(reply: ReadReply) -> Arc<FakeRpc> {
        replying(ReadBatchReply {
            replies: vec![reply],
            position: Default::default(),
        })
    }

    fn failing() -> Arc<FakeRpc> {
        Arc::new(FakeRpc {
            reply: Box::new(|| Err(RpcError::TimedOut(Duration::from_millis(1)))),
            calls: Mutex::default(),
        })
    }

    fn healthy_view() -> ClusterView {
        let mut workers = BTreeMap::new();
        for (id, pid, role) in [("m", 200, Role::Master), ("s", 100, Role::Slave)] {
            workers.insert(
                id.to_owned(),
                WorkerRecord {
                    id: id.into(),
                    pid,
                    role,
                    epoch: 1,
                    applied_seq: 4,
                },
            );
        }
        ClusterView {
            master: Some(MasterRecord {
                id: "m".into(),
                pid: 200,
                epoch: 1,
            }),
            in_sync: Some(InSyncSet {
                epoch: 1,
                master: "m".into(),
                members: vec!["s".into()],
            }),
            workers,
            candidates: Default::default(),
            copies: Default::default(),
        }
    }

    /// Answers the crash APIs with a canned pid (or none), and remembers what it was asked.
    #[derive(Default)]
    struct FakeControl {
        pid: Option<u32>,
        asked: Mutex<Vec<Role>>,
    }

    impl Control for FakeControl {
        fn crash(&self, role: Role) -> BoxFuture<'_, anyhow::Result<Option<u32>>> {
            self.asked.lock().unwrap().push(role);
            Box::pin(async move { Ok(self.pid) })
        }

        fn target_slaves(&self) -> usize {
            1
        }
    }

    fn state(rpc: Arc<FakeRpc>, view: watch::Receiver<ClusterView>) -> AppState {
        AppState::new(
            rpc,
            Arc::new(FakeControl::default()),
            view,
            Names::new("test"),
            Timeouts {
                request: Duration::from_millis(100),
                // One attempt: most tests look at what a single answer becomes.
                write_deadline: Duration::ZERO,
                read_deadline: Duration::ZERO,
            },
        )
    }

    fn app(rpc: Arc<FakeRpc>, view: ClusterView) -> Router {
        // A receiver still reads the last value once the sender is gone: a fixed view.
        let (_, rx) = watch::channel(view);
        router(state(rpc, rx))
    }

    /// Answers the calls in turn with `replies`, then with the last one again.
    fn replying_in_turn(replies: Vec<Result<Vec<u8>, RpcError>>) -> Arc<FakeRpc> {
        let replies = Mutex::new(std::collections::VecDeque::from(replies));
        Arc::new(FakeRpc {
            reply: Box::new(move || {
                let mut r = replies.lock().unwrap();
                let next = if r.len() > 1 { r.pop_front() } else { None };
                match next {
                    Some(reply) => reply,
                    None => match r.front().expect("a reply") {
                        Ok(bytes) => Ok(bytes.clone()),
                        Err(_) => Err(RpcError::TimedOut(Duration::from_millis(1))),
                    },
                }
            }),
            calls: Mutex::default(),
        })
    }

    fn bytes<T: Serialize>(reply: T) -> Result<Vec<u8>, RpcError> {
        Ok(serde_json::to_vec(&reply).unwrap())
    }

    async fn send(
        app: Router,
        method: Method,
        uri: &str,
        headers: &[(&str, &str)],
        body: impl Into<Body>,
    ) -> (StatusCode, HeaderMap, serde_json::Value) {
        let mut request = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let response = app
            .oneshot(request.body(body.into()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        (status, headers, json)
    }

    fn error_of(json: &serde_json::Value) -> String {
        serde_json::from_value::<ErrorBody>(json.clone())
            .expect("an error body")
            .error
    }

    const WRITE: &str = r#"{"statements": [{"sql": "insert into t values (?)", "params": [1]}]}"#;

    fn written() -> CommandReply {
        CommandReply::Written(WriteResponse {
            results: vec![StatementResult {
                rows_affected: 1,
                last_insert_id: 9,
            }],
            seq: 3,
        })
    }

    #[tokio::test]
    async fn an_unknown_route_returns_404_with_a_json_error() {
        let (status, _, json) = send(
            app(failing(), healthy_view()),
            Method::GET,
            "/api/v1/nope",
            &[],
            "",
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        error_of(&json);
    }

    #[tokio::test]
    async fn a_wrong_method_returns_405_with_an_allow_header() {
        let (status, headers, json) = send(
            app(failing(), healthy_view()),
            Method::GET,
            "/api/v1/db/write",
            &[],
            "",
        )
        .await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(headers[header::ALLOW], "POST");
        error_of(&json);

        let (status, headers, _) = send(
            app(failing(), healthy_view()),
            Method::DELETE,
            "/api/v1/workers",
            &[],
            "",
        )
        .await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert!(headers[header::ALLOW].to_str().unwrap().contains("GET"));
    }

    #[tokio::test]
    async fn malformed_bodies_return_400_and_reach_no_worker() {
        let big = format!(
            r#"{{"sql": "select ?", "params": ["{}"]}}"#,
            "x".repeat(MAX_BODY_BYTES)
        );
        let cases = [
            ("/api/v1/db/write", "".to_owned()),
            ("/api/v1/db/write", "not json".to_owned()),
            ("/api/v1/db/write", "[]".to_owned()),
            ("/api/v1/db/write", r#"{"statements": 1}"#.to_owned()),
            (
                "/api/v1/db/write",
                r#"{"statements": [], "x": 1}"#.to_owned(),
            ),
            (
                "/api/v1/db/write",
                r#"{"statements": [{"params": []}]}"#.to_owned(),
            ),
            (
                "/api/v1/db/write",
                r#"{"statements": [{"sql": "x", "params": [true]}]}"#.to_owned(),
            ),
            ("/api/v1/db/write", format!("{WRITE} trailing")),
            ("/api/v1/db/read", r#"{"sql": 3}"#.to_owned()),
            ("/api/v1/db/read", r#"{}"#.to_owned()),
            (
                "/api/v1/db/read",
                r#"{"sql": "select 1", "extra": null}"#.to_owned(),
            ),
            ("/api/v1/db/read", big),
        ];
        for (uri, body) in cases {
            let rpc = replying(written());
            let (status, _, json) = send(
                app(rpc.clone(), healthy_view()),
                Method::POST,
                uri,
                &[("content-type", "application/json")],
                body.clone(),
            )
            .await;
            let shown = &body[..body.len().min(60)];
            assert_eq!(status, StatusCode::BAD_REQUEST, "{uri} {shown}");
            assert!(!error_of(&json).is_empty());
            assert!(rpc.calls.lock().unwrap().is_empty(), "{uri} {shown}");
        }
    }

    #[tokio::test]
    async fn a_write_reaches_the_master_with_the_clients_idempotency_key() {
        let rpc = replying(written());
        // No content type at all: accepted, the body is what counts.
        let (status, _, json) = send(
            app(rpc.clone(), healthy_view()),
            Method::POST,
            "/api/v1/db/write",
            &[("idempotency-key", "abc-123")],
            WRITE,
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            json,
            serde_json::json!({"results": [{"rows_affected": 1, "last_insert_id": 9}], "seq": 3})
        );
        let calls = rpc.calls.lock().unwrap();
        assert_eq!(calls[0].0, "test.writeQ");
        let command: Command = serde_json::from_value(calls[0].1.clone()).unwrap();
        assert_eq!(
            command,
            Command::Writes {
                writes: vec![KeyedWrite {
                    key: "abc-123".into(),
                    statements: vec![protocol::Statement::new(
                        "insert into t values (?)",
                        vec![Value::Integer(1)]
                    )],
                }]
            }
        );
    }

    #[tokio::test]
    async fn a_write_without_a_key_gets_a_fresh_one() {
        let rpc = replying(written());
        for _ in 0..2 {
            let (status, _, _) = send(
                app(rpc.clone(), healthy_view()),
                Method::POST,
                "/api/v1/db/write",
                &[],
                WRITE,
            )
            .await;
            assert_eq!(status, StatusCode::OK);
        }
        let keys: Vec<String> = rpc
            .calls
            .lock()
            .unwrap()
            .iter()
            .map(|(_, c)| c["writes"][0]["key"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(keys.len(), 2);
        assert_ne!(keys[0], keys[1]);
        assert!(!keys[0].is_empty());
    }

    #[tokio::test]
    async fn a_bad_idempotency_key_returns_400() {
        let long = "k".repeat(MAX_IDEMPOTENCY_KEY_LEN + 1);
        for key in ["", "has space", "tab\there", long.as_str()] {
            let rpc = replying(written());
            let (status, _, _) = send(
                app(rpc.clone(), healthy_view()),
                Method::POST,
                "/api/v1/db/write",
                &[("idempotency-key", key)],
                WRITE,
            )
            .await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{key:?}");
            assert!(rpc.calls.lock().unwrap().is_empty());
        }
    }

    #[tokio::test]
    async fn the_masters_answers_map_to_statuses() {
        let cases = [
            (
                CommandReply::Rejected {
                    error: "UNIQUE constraint failed: users.name".into(),
                },
                StatusCode::BAD_REQUEST,
            ),
            (
                CommandReply::Unavailable {
                    error: "slave w-1 did not ack".into(),
                },
                StatusCode::SERVICE_UNAVAILABLE,
            ),
            (
                CommandReply::Joined {
                    epoch: 1,
                    seq: 1,
                    serial: 0,
                },
                StatusCode::INTERNAL_SERVER_ERROR,
            ),
        ];
        for (reply, expected) in cases {
            let (status, _, json) = send(
                app(replying(reply.clone()), healthy_view()),
                Method::POST,
                "/api/v1/db/write",
                &[],
                WRITE,
            )
            .await;
            assert_eq!(status, expected, "{reply:?}");
            let error = error_of(&json);
            if expected == StatusCode::BAD_REQUEST {
                assert!(error.contains("UNIQUE"), "{error}");
            } else {
                assert!(!error.contains("w-1"), "{error}");
            }
        }
    }

    #[tokio::test]
    async fn a_timeout_or_garbage_from_the_workers_is_a_server_error() {
        let (status, _, _) = send(
            app(failing(), healthy_view()),
            Method::POST,
            "/api/v1/db/write",
            &[],
            WRITE,
        )
        .await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        let (status, _, _) = send(
            app(failing(), healthy_view()),
            Method::POST,
            "/api/v1/db/read",
            &[],
            r#"{"sql": "select 1"}"#,
        )
        .await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        let (status, _, _) = send(
            app(replying("garbage"), healthy_view()),
            Method::POST,
            "/api/v1/db/read",
            &[],
            r#"{"sql": "select 1"}"#,
        )
        .await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[tokio::test]
    async fn writes_and_clears_without_a_master_return_503_at_once() {
        let mut view = healthy_view();
        view.master = None;
        for uri in ["/api/v1/db/write", "/api/v1/db/clear"] {
            let rpc = replying(written());
            let (status, _, json) = send(
                app(rpc.clone(), view.clone()),
                Method::POST,
                uri,
                &[],
                WRITE,
            )
            .await;
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{uri}");
            assert_eq!(error_of(&json), "no master");
            assert!(rpc.calls.lock().unwrap().is_empty());
        }
    }

    #[tokio::test]
    async fn reads_without_an_in_sync_slave_return_503_at_once() {
        let mut view = healthy_view();
        view.in_sync.as_mut().unwrap().members.clear();
        let rpc = answering_reads(ReadReply::Rows(ReadResponse {
            columns: vec![],
            rows: vec![],
        }));
        let (status, _, json) = send(
            app(rpc.clone(), view),
            Method::POST,
            "/api/v1/db/read",
            &[],
            r#"{"sql": "select 1"}"#,
        )
        .await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(error_of(&json), "no slave in sync");
        assert!(rpc.calls.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_read_goes_to_the_read_queue_and_returns_rows_or_400() {
        let rows = ReadResponse {
            columns: vec!["n".into()],
            rows: vec![vec![Value::Integer(1)], vec![Value::Null]],
        };
        let rpc = answering_reads(ReadReply::Rows(rows));
        let (status, _, json) = send(
            app(rpc.clone(), healthy_view()),
            Method::POST,
            "/api/v1/db/read",
            &[],
            r#"{"sql": "select n from t where n > ?", "params": [0]}"#,
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            json,
            serde_json::json!({"columns": ["n"], "rows": [[1], [null]]})
        );
        assert_eq!(rpc.calls.lock().unwrap()[0].0, "test.readQ");

        let rpc = answering_reads(ReadReply::Rejected {
            error: "attempt to write a readonly database".into(),
        });
        let (status, _, json) = send(
            app(rpc, healthy_view()),
            Method::POST,
            "/api/v1/db/read",
            &[],
            r#"{"sql": "delete from t"}"#,
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(error_of(&json).contains("readonly"));
    }

    #[tokio::test]
    async fn clear_sends_a_clear_command_with_a_fresh_key() {
        let rpc = replying(written());
        let (status, _, json) = send(
            app(rpc.clone(), healthy_view()),
            Method::POST,
            "/api/v1/db/clear",
            &[],
            "",
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(json, serde_json::json!({}));
        let calls = rpc.calls.lock().unwrap();
        assert_eq!(calls[0].1["type"], "clear");
        assert!(!calls[0].1["key"].as_str().unwrap().is_empty());
    }

    #[tokio::test]
    async fn the_worker_lists_come_from_the_view() {
        let (status, _, json) = send(
            app(failing(), healthy_view()),
            Method::GET,
            "/api/v1/worker/list",
            &[],
            "",
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(json, serde_json::json!([100, 200]));

        let (status, _, json) = send(
            app(failing(), healthy_view()),
            Method::GET,
            "/api/v1/workers",
            &[],
            "",
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            json,
            serde_json::json!([
                {"pid": 100, "role": "slave", "in_sync": true, "applied_seq": 4},
                {"pid": 200, "role": "master", "in_sync": true, "applied_seq": 4}
            ])
        );
    }

    #[tokio::test]
    async fn health_needs_a_master_and_an_in_sync_slave() {
        let (status, _, json) = send(
            app(failing(), healthy_view()),
            Method::GET,
            "/health",
            &[],
            "",
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(json, serde_json::json!({}));

        let mut view = healthy_view();
        view.in_sync = None;
        let (status, _, json) = send(app(failing(), view), Method::GET, "/health", &[], "").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        error_of(&json);

        let (status, _, _) = send(
            app(failing(), ClusterView::default()),
            Method::GET,
            "/health",
            &[],
            "",
        )
        .await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_the_master_cannot_replicate_is_retried_with_the_same_key_until_it_succeeds() {
        let unavailable = CommandReply::Unavailable {
            error: "0 slave(s) in sync".into(),
        };
        let rpc = replying_in_turn(vec![
            Err(RpcError::Closed),
            bytes(&unavailable),
            bytes(written()),
        ]);
        let (_, rx) = watch::channel(healthy_view());
        let mut state = state(rpc.clone(), rx);
        state.write_deadline = Duration::from_secs(10);
        let (status, _, json) = send(
            router(state),
            Method::POST,
            "/api/v1/db/write",
            &[("idempotency-key", "k-1")],
            WRITE,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{json}");
        let calls = rpc.calls.lock().unwrap();
        assert_eq!(calls.len(), 3);
        assert!(
            calls.iter().all(|(_, c)| c["writes"][0]["key"] == "k-1"),
            "{calls:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_without_a_master_waits_for_one_within_its_deadline() {
        let mut view = healthy_view();
        view.master = None;
        let (tx, rx) = watch::channel(view);
        let rpc = replying(written());
        let mut state = state(rpc.clone(), rx);
        state.write_deadline = Duration::from_secs(10);
        // In paused time: the election comes 200 ms into the request, between two of its pauses.
        let elected = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            tx.send_replace(healthy_view());
            tx
        });
        let (status, _, _) =
            send(router(state), Method::POST, "/api/v1/db/write", &[], WRITE).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(rpc.calls.lock().unwrap().len(), 1);
        drop(elected.await.unwrap());
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_that_keeps_failing_gets_503_at_its_deadline() {
        let (_, rx) = watch::channel(healthy_view());
        let rpc = failing();
        let mut state = state(rpc.clone(), rx);
        state.write_deadline = Duration::from_millis(600);
        let started = tokio::time::Instant::now();
        let (status, _, _) =
            send(router(state), Method::POST, "/api/v1/db/write", &[], WRITE).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(rpc.calls.lock().unwrap().len() >= 2);
        // Paused time: exactly the deadline, not whatever a loaded machine adds.
        assert!(started.elapsed() <= Duration::from_millis(600));
    }

    #[tokio::test]
    async fn a_rejected_write_is_not_retried() {
        let rpc = replying(CommandReply::Rejected {
            error: "no such table: t".into(),
        });
        let (_, rx) = watch::channel(healthy_view());
        let mut state = state(rpc.clone(), rx);
        state.write_deadline = Duration::from_secs(10);
        let (status, _, _) =
            send(router(state), Method::POST, "/api/v1/db/write", &[], WRITE).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(rpc.calls.lock().unwrap().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_read_waits_for_a_slave_in_sync_within_its_deadline() {
        let mut view = healthy_view();
        view.in_sync.as_mut().unwrap().members.clear();
        let (tx, rx) = watch::channel(view);
        let rpc = answering_reads(ReadReply::Rows(ReadResponse {
            columns: vec!["1".into()],
            rows: vec![vec![Value::Integer(1)]],
        }));
        let mut state = state(rpc.clone(), rx);
        state.read_deadline = Duration::from_secs(10);
        // In paused time: the slave joins 200 ms into the request, between two of its pauses.
        let joined = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            tx.send_replace(healthy_view());
            tx
        });
        let (status, _, _) = send(
            router(state),
            Method::POST,
            "/api/v1/db/read",
            &[],
            r#"{"sql": "select 1"}"#,
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(rpc.calls.lock().unwrap().len(), 1);
        drop(joined.await.unwrap());
    }

    #[tokio::test]
    async fn the_crash_apis_return_the_pid_or_400_when_there_is_no_such_worker() {
        for (pid, expected) in [(Some(42), StatusCode::OK), (None, StatusCode::BAD_REQUEST)] {
            for (uri, role) in [
                ("/api/v1/crash/master", Role::Master),
                ("/api/v1/crash/slave", Role::Slave),
            ] {
                let control = Arc::new(FakeControl {
                    pid,
                    asked: Mutex::default(),
                });
                let (_, rx) = watch::channel(healthy_view());
                let mut state = state(failing(), rx);
                state.control = control.clone();
                let (status, _, json) = send(router(state), Method::POST, uri, &[], "").await;
                assert_eq!(status, expected, "{uri}");
                if expected == StatusCode::OK {
                    assert_eq!(json, serde_json::json!([42]));
                } else {
                    assert!(error_of(&json).starts_with("there is no"), "{json}");
                }
                assert_eq!(*control.asked.lock().unwrap(), vec![role]);
            }
        }
        let (status, headers, _) = send(
            app(failing(), healthy_view()),
            Method::GET,
            "/api/v1/crash/slave",
            &[],
            "",
        )
        .await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(headers[header::ALLOW], "POST");
    }
}
