//! The vocabulary of the end-to-end tests: a real cluster — the orchestrator in-process on port 0, real worker
//! processes, the real RabbitMQ and ZooKeeper — and the moves a test makes on it (`cluster.write_ok(..)`,
//! `cluster.kill(..)`, `cluster.add_slave()`, `cluster.assert_all_identical()`).
//!
//! Each cluster lives in its own namespace (queues and znodes) and temporary folder, so tests run in parallel on
//! one broker and one ZooKeeper without seeing each other. Waiting is always polling with a deadline, never a
//! bare sleep.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use orchestrator::view::ClusterView;
use orchestrator::ClusterHandle;
use protocol::{Names, ReadResponse, Statement, Value, WriteResponse};
use reqwest::StatusCode;
use serde_json::json;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How long a cluster may take to reach a state a test waits for. Generous: CI runs tests side by side on two
/// cores, and a worker's ZooKeeper session takes its timeout to expire.
pub const SETTLE: Duration = Duration::from_secs(30);

pub struct Cluster {
    /// `http://127.0.0.1:<port>` of the orchestrator.
    pub base: String,
    pub names: Names,
    http: reqwest::Client,
    handle: ClusterHandle,
    data: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<anyhow::Result<()>>>,
}

/// The worker binary cargo built beside the test binary (`target/<profile>/worker`).
pub fn worker_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let bin = profile_dir.join("worker");
    assert!(
        bin.exists(),
        "{} is missing: build it first with `cargo build --workspace --bins` (scripts/test.sh does)",
        bin.display()
    );
    bin
}

pub fn st(sql: &str, params: Vec<Value>) -> Statement {
    Statement::new(sql, params)
}

impl Cluster {
    /// A cluster with one master and `slaves` slaves, all in sync.
    pub async fn start(slaves: usize) -> Cluster {
        Self::start_with(slaves, 3000).await
    }

    pub async fn start_with(slaves: usize, request_timeout_ms: u64) -> Cluster {
        let namespace = format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let data = tempfile::tempdir().expect("temp dir");
        let mut config = orchestrator::Config::defaults();
        config.namespace = namespace.clone();
        config.data_dir = data.path().to_owned();
        config.worker_bin = Some(worker_bin());
        config.request_timeout_ms = request_timeout_ms;
        config.initial_slaves = slaves;
        config.stop_workers_on_shutdown = true;
        let app = orchestrator::start(config)
            .await
            .expect("the orchestrator starts");
        let handle = app.cluster();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(app.serve(listener, async {
            let _ = stopped.await;
        }));
        let cluster = Cluster {
            base,
            names: Names::new(&namespace),
            http: reqwest::Client::new(),
            handle,
            data,
            stop: Some(stop),
            server: Some(server),
        };
        cluster.wait_for_in_sync(slaves).await;
        cluster
    }

    /// Waits until there is a master and exactly `n` slaves in sync.
    pub async fn wait_for_in_sync(&self, n: usize) -> ClusterView {
        self.wait_for(|v| v.master.is_some() && v.in_sync_members().len() == n)
            .await
    }

    pub async fn wait_for(&self, condition: impl FnMut(&ClusterView) -> bool) -> ClusterView {
        self.handle
            .wait_for(SETTLE, condition)
            .await
            .expect("cluster state")
    }

    pub fn view(&self) -> ClusterView {
        self.handle.view()
    }

    pub fn master_id(&self) -> String {
        self.view().master.expect("a master").id
    }

    pub fn slave_ids(&self) -> Vec<String> {
        self.view().in_sync_members().to_vec()
    }

    /// Starts one more slave and waits until it is in sync.
    pub async fn add_slave(&self) -> String {
        let id = self.handle.start_slave().await.expect("slave starts");
        let wanted = id.clone();
        self.wait_for(move |v| v.in_sync_members().contains(&wanted))
            .await;
        id
    }

    /// SIGKILLs a worker.
    pub async fn kill(&self, id: &str) {
        assert!(
            self.handle.kill_worker(id).await.expect("kill"),
            "worker {id} was not running"
        );
    }

    /// Pids of the live worker processes, ascending.
    pub async fn pids(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = self
            .handle
            .processes()
            .await
            .expect("processes")
            .iter()
            .map(|p| p.pid)
            .collect();
        pids.sort_unstable();
        pids
    }

    pub async fn live_ids(&self) -> Vec<String> {
        self.handle
            .processes()
            .await
            .expect("processes")
            .into_iter()
            .map(|p| p.id)
            .collect()
    }

    pub fn db_path(&self, id: &str) -> PathBuf {
        self.data.path().join("workers").join(id).join("db.sqlite")
    }

    /// Every row of every table of a worker's database file, read directly from disk.
    pub fn dump(&self, id: &str) -> String {
        let conn = worker::db::open_reader(&self.db_path(id)).expect("open worker db");
        worker::db::dump(&conn).expect("dump")
    }

    /// Asserts every live worker holds the same data, and returns it.
    pub async fn assert_all_identical(&self) -> String {
        let ids = self.live_ids().await;
        assert!(ids.len() >= 2, "fewer than two workers: {ids:?}");
        let master = self.master_id();
        let expected = self.dump(&master);
        for id in ids {
            assert_eq!(
                self.dump(&id),
                expected,
                "worker {id} differs from the master {master}"
            );
        }
        expected
    }

    pub async fn post(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> (StatusCode, serde_json::Value) {
        self.request(self.http.post(self.url(path)).json(body))
            .await
    }

    pub async fn post_raw(&self, path: &str, body: &str) -> (StatusCode, serde_json::Value) {
        let req = self
            .http
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body.to_owned());
        self.request(req).await
    }

    pub async fn get(&self, path: &str) -> (StatusCode, serde_json::Value) {
        self.request(self.http.get(self.url(path))).await
    }

    pub async fn write(&self, statements: Vec<Statement>) -> (StatusCode, serde_json::Value) {
        self.post("/api/v1/db/write", &json!({ "statements": statements }))
            .await
    }

    pub async fn write_with_key(
        &self,
        key: &str,
        statements: Vec<Statement>,
    ) -> (StatusCode, serde_json::Value) {
        let req = self
            .http
            .post(self.url("/api/v1/db/write"))
            .header("Idempotency-Key", key)
            .json(&json!({ "statements": statements }));
        self.request(req).await
    }

    pub async fn write_ok(&self, statements: Vec<Statement>) -> WriteResponse {
        let (status, body) = self.write(statements).await;
        assert_eq!(status, StatusCode::OK, "write failed: {body}");
        serde_json::from_value(body).expect("write response")
    }

    pub async fn read(&self, sql: &str, params: Vec<Value>) -> (StatusCode, serde_json::Value) {
        self.post("/api/v1/db/read", &json!({ "sql": sql, "params": params }))
            .await
    }

    pub async fn read_ok(&self, sql: &str, params: Vec<Value>) -> ReadResponse {
        let (status, body) = self.read(sql, params).await;
        assert_eq!(status, StatusCode::OK, "read failed: {body}");
        serde_json::from_value(body).expect("read response")
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn request(&self, req: reqwest::RequestBuilder) -> (StatusCode, serde_json::Value) {
        let resp = req.send().await.expect("orchestrator answers");
        let status = resp.status();
        let text = resp.text().await.expect("body");
        let body = if text.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text))
        };
        (status, body)
    }

    /// Publishes raw bytes on the cluster's broker, as a misbehaving client could.
    pub async fn publish_raw(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
    ) -> anyhow::Result<()> {
        let conn = lapin::Connection::connect(
            "amqp://127.0.0.1:5672/%2f",
            lapin::ConnectionProperties::default(),
        )
        .await
        .context("connecting to RabbitMQ")?;
        let ch = conn.create_channel().await?;
        ch.basic_publish(
            exchange.into(),
            routing_key.into(),
            lapin::options::BasicPublishOptions::default(),
            body,
            lapin::BasicProperties::default(),
        )
        .await?
        .await?;
        conn.close(200, "done".into()).await?;
        Ok(())
    }

    /// Stops the orchestrator and kills the workers.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            server
                .await
                .expect("server task")
                .expect("orchestrator stopped cleanly");
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // A test that panicked never reached stop(): the orchestrator's runtime kills its workers when the
        // test's runtime drops them; sending the stop signal here covers a cluster dropped early on purpose.
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
