//! The vocabulary of the end-to-end tests: a real cluster — the orchestrator in-process on port 0, real worker
//! processes, the real RabbitMQ and ZooKeeper — and the moves a test makes on it (`cluster.write_ok(..)`,
//! `cluster.kill(..)`, `cluster.crash_master()`, `cluster.restart_orchestrator()`,
//! `cluster.assert_all_identical()`).
//!
//! Each cluster lives in its own namespace (queues and znodes) and temporary folder, so tests run in parallel on
//! one broker and one ZooKeeper without seeing each other. Its workers run as local processes, or on "hosts"
//! (`Options::hosts`): each a launcher script and a data root of its own, as the fault suite's network
//! namespaces are, minus the namespaces. Waiting is always polling with a deadline, never a
//! bare sleep. However a test ends, no worker of its namespace outlives it (see `Drop for Cluster`).

pub mod system;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, Once, RwLock};
use std::time::Duration;

use orchestrator::view::ClusterView;
use orchestrator::ClusterHandle;
use protocol::{Names, ReadResponse, Statement, Value, WriteResponse};
use reqwest::StatusCode;
use serde_json::json;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The broker and coordinator every test shares (`scripts/services.sh` starts them).
pub const AMQP_URL: &str = "amqp://127.0.0.1:5672/%2f";
pub const ZK_ADDRESS: &str = "127.0.0.1:2181";

/// The variable each host's launcher sets for the workers it starts (see [`Cluster::host_of_worker`]).
const HOST_VARIABLE: &str = "E2E_HOST";

/// How long a cluster may take to reach a state a test waits for. Generous: CI runs tests side by side on two
/// cores, and a worker's ZooKeeper session takes its timeout to expire.
pub const SETTLE: Duration = Duration::from_secs(30);

pub struct Cluster {
    /// `http://127.0.0.1:<port>` of the orchestrator; the same port across orchestrator restarts.
    pub base: String,
    pub names: Names,
    /// Replaced at each orchestrator restart, so that no pooled connection still reaches the old one.
    http: RwLock<reqwest::Client>,
    config: orchestrator::Config,
    /// `std::sync::Mutex`: held only to swap or read the orchestrator, never across an `.await`.
    orchestrator: Mutex<Option<Orchestrator>>,
    /// Held for its drop: the cluster's folder (every host's copies), removed with the cluster.
    _data: tempfile::TempDir,
    /// Where each host keeps its copies, by host name; one host, `local`, when workers run as local processes.
    roots: BTreeMap<String, PathBuf>,
}

/// The orchestrator of the moment, serving in a task of the test's runtime.
struct Orchestrator {
    handle: ClusterHandle,
    stop: oneshot::Sender<()>,
    server: JoinHandle<anyhow::Result<()>>,
}

/// How a test wants its cluster.
#[derive(Debug, Clone)]
pub struct Options {
    pub slaves: usize,
    pub request_timeout_ms: u64,
    /// How long the orchestrator retries a write or a read that meets a failover; `None`: its default.
    pub retry_deadline_ms: Option<u64>,
    /// Whether the orchestrator replaces dead workers (tests that watch a cluster degrade turn it off).
    pub self_healing: bool,
    /// The scaling interval and ceiling; `None`: the orchestrator's defaults (120 s, 16).
    pub scale_interval_secs: Option<u64>,
    pub max_slaves: Option<u64>,
    /// Environment for this cluster's workers only (their flags' `RIDESHARE_*` variables), e.g. a longer
    /// lease: they are started through a wrapper script that sets it, so other tests are not affected.
    pub worker_env: Vec<(String, String)>,
    /// Run the workers on this many hosts (`host-a`, `host-b`, ...; the orchestrator's `hosts` runtime), each a
    /// launcher script that execs the worker binary and a data root of its own; 0: local processes.
    pub hosts: usize,
    /// Run the workers as Docker Swarm services of the image `rideshare/worker:latest`, on the host's network
    /// (where the broker and ZooKeeper are at the same addresses); the Docker engine must be a swarm manager.
    pub swarm: bool,
}

impl Options {
    pub fn new(slaves: usize) -> Self {
        Self {
            slaves,
            request_timeout_ms: 3000,
            retry_deadline_ms: None,
            self_healing: true,
            scale_interval_secs: None,
            max_slaves: None,
            worker_env: Vec::new(),
            hosts: 0,
            swarm: false,
        }
    }
}

/// The worker binary cargo built beside the test binary (`target/<profile>/worker`).
pub fn worker_bin() -> PathBuf {
    binary("worker")
}

/// One of the workspace's binaries (`target/<profile>/<name>`), built beside the test.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let bin = profile_dir.join(name);
    assert!(
        bin.exists(),
        "{} is missing: build it first with `cargo build --workspace --bins` (scripts/test.sh does)",
        bin.display()
    );
    bin
}

/// A script at `path` that starts the worker binary with `env` added to its environment. It execs the worker,
/// so the process (its pid, its command line) is the worker's own.
fn worker_wrapper(path: &Path, env: &[(String, String)]) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let mut script = String::from("#!/bin/sh\n");
    for (name, value) in env {
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && value
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)),
            "a worker variable the wrapper does not quote: {name}={value}"
        );
        script.push_str(&format!("export {name}={value}\n"));
    }
    script.push_str(&format!("exec '{}' \"$@\"\n", worker_bin().display()));
    std::fs::write(path, script).expect("writing the worker wrapper");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .expect("making the worker wrapper executable");
    path.to_owned()
}

pub fn st(sql: &str, params: Vec<Value>) -> Statement {
    Statement::new(sql, params)
}

/// The orchestrator's log, captured per test (shown when a test fails): `RUST_LOG` or, by default, what the
/// supervisor decides and every warning.
fn init_logging() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| "warn,orchestrator=info".into());
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    });
}

/// Whether process `pid` is running (a zombie, dead but not reaped yet, is not).
pub fn is_running(pid: u32) -> bool {
    orchestrator::runtime::is_alive(pid)
}

/// SIGKILLs process `pid` from outside, as a crash would, without telling the orchestrator.
pub fn sigkill(pid: u32) {
    let pid = rustix::process::Pid::from_raw(pid as i32).expect("a valid pid");
    // Gone already is fine: the point is that it is not running.
    let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
}

/// The pids of every process running a worker of `namespace` (by its command line).
pub fn worker_pids_of(namespace: &str) -> Vec<u32> {
    let Ok(all) = procfs::process::all_processes() else {
        return Vec::new();
    };
    all.filter_map(Result::ok)
        .filter(|p| {
            p.cmdline().is_ok_and(|args| {
                args.windows(2)
                    .any(|w| w[0] == "--namespace" && w[1] == namespace)
            })
        })
        .filter_map(|p| u32::try_from(p.pid()).ok())
        .collect()
}

impl Cluster {
    /// A cluster with one master and `slaves` slaves, all in sync.
    pub async fn start(slaves: usize) -> Cluster {
        Self::start_opts(Options::new(slaves)).await
    }

    pub async fn start_with(slaves: usize, request_timeout_ms: u64) -> Cluster {
        Self::start_opts(Options {
            request_timeout_ms,
            ..Options::new(slaves)
        })
        .await
    }

    pub async fn start_opts(options: Options) -> Cluster {
        init_logging();
        let namespace = format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let data = tempfile::tempdir().expect("temp dir");
        let mut config = orchestrator::Config::defaults();
        config.namespace = namespace.clone();
        config.data_dir = data.path().to_owned();
        config.worker_bin = Some(if options.worker_env.is_empty() {
            worker_bin()
        } else {
            worker_wrapper(&data.path().join("worker-wrapper.sh"), &options.worker_env)
        });
        let mut roots = BTreeMap::from([(
            orchestrator::runtime::hosts::LOCAL_HOST.to_owned(),
            data.path().join("workers"),
        )]);
        if options.hosts > 0 {
            roots.clear();
            config.worker_runtime = orchestrator::config::WorkerRuntime::Hosts;
            for letter in ('a'..='z').take(options.hosts) {
                let name = format!("host-{letter}");
                let home = data.path().join("hosts").join(&name);
                std::fs::create_dir_all(&home).expect("a host's folder");
                let mut env = options.worker_env.clone();
                env.push((HOST_VARIABLE.to_owned(), name.clone()));
                let launcher = worker_wrapper(&home.join("launcher.sh"), &env);
                let data_root = home.join("data");
                config
                    .worker_hosts
                    .push(orchestrator::runtime::hosts::Host {
                        name: name.clone(),
                        launcher,
                        data_root: data_root.clone(),
                    });
                roots.insert(name, data_root);
            }
        }
        if options.swarm {
            roots.clear();
            config.worker_runtime = orchestrator::config::WorkerRuntime::Swarm;
            config.docker_network = "host".to_owned();
        }
        config.request_timeout_ms = options.request_timeout_ms;
        if let Some(deadline) = options.retry_deadline_ms {
            config.write_deadline_ms = deadline;
            config.read_deadline_ms = deadline;
        }
        config.initial_slaves = options.slaves;
        config.self_healing = options.self_healing;
        if let Some(secs) = options.scale_interval_secs {
            config.scale_interval_secs = secs;
        }
        if let Some(max) = options.max_slaves {
            config.max_slaves = orchestrator::config::MaxSlaves::Fixed(max);
        }
        config.stop_workers_on_shutdown = true;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let cluster = Cluster {
            base,
            names: Names::new(&namespace),
            http: RwLock::new(reqwest::Client::new()),
            config,
            orchestrator: Mutex::new(None),
            _data: data,
            roots,
        };
        cluster.launch(listener).await;
        cluster.wait_for_in_sync(options.slaves).await;
        cluster
    }

    /// Starts an orchestrator on `listener` with this cluster's configuration.
    async fn launch(&self, listener: tokio::net::TcpListener) {
        let app = orchestrator::start(self.config.clone())
            .await
            .expect("the orchestrator starts");
        let handle = app.cluster();
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(app.serve(listener, async {
            let _ = stopped.await;
        }));
        *self.orchestrator.lock().expect("orchestrator lock") = Some(Orchestrator {
            handle,
            stop,
            server,
        });
    }

    fn handle(&self) -> ClusterHandle {
        self.orchestrator
            .lock()
            .expect("orchestrator lock")
            .as_ref()
            .expect("an orchestrator is running")
            .handle
            .clone()
    }

    /// Stops the orchestrator the hard way, as SIGKILL would: its tasks end at once, nothing is cleaned up,
    /// the workers keep running.
    pub async fn kill_orchestrator(&self) {
        let running = self.orchestrator.lock().expect("orchestrator lock").take();
        if let Some(Orchestrator { stop, server, .. }) = running {
            // Aborting the server drops the App, which stops every task of the orchestrator. The stop signal
            // is dropped only once that is done: dropping it is a clean shutdown's signal.
            server.abort();
            let _ = server.await;
            drop(stop);
        }
    }

    /// Kills the orchestrator (see [`Cluster::kill_orchestrator`]) and starts a new one on the same port,
    /// namespace and data folder. It must adopt whatever runs (or restore whatever was stopped).
    pub async fn restart_orchestrator(&self) {
        self.kill_orchestrator().await;
        *self.http.write().expect("client lock") = reqwest::Client::new();
        let addr = self.base.trim_start_matches("http://").to_owned();
        // The old listener is dropped with the aborted server task; binding again may race that drop.
        let deadline = tokio::time::Instant::now() + SETTLE;
        let listener = loop {
            match tokio::net::TcpListener::bind(&addr).await {
                Ok(l) => break l,
                Err(e) => {
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "could not bind {addr} again: {e}"
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };
        self.launch(listener).await;
    }

    /// Stops the whole system the hard way: the orchestrator as with [`Cluster::kill_orchestrator`], and
    /// every worker with SIGKILL. Only the folders remain (and ZooKeeper's records, until sessions expire).
    pub async fn kill_everything(&self) -> Vec<u32> {
        self.kill_orchestrator().await;
        let pids = worker_pids_of(self.names.namespace());
        for &pid in &pids {
            sigkill(pid);
        }
        for &pid in &pids {
            wait_until(|| !is_running(pid), "a killed worker to end").await;
        }
        pids
    }

    /// Waits until there is a master and exactly `n` slaves in sync.
    pub async fn wait_for_in_sync(&self, n: usize) -> ClusterView {
        self.wait_for(|v| v.master.is_some() && v.in_sync_members().len() == n)
            .await
    }

    /// Waits until exactly `n` workers are registered: a master, and slaves that are all in sync (and no
    /// dead slave still counted in sync).
    pub async fn wait_for_workers(&self, n: usize) -> ClusterView {
        self.wait_for(|v| {
            let Some(master) = &v.master else {
                return false;
            };
            let slaves: BTreeSet<&String> =
                v.workers.keys().filter(|id| **id != master.id).collect();
            let in_sync: BTreeSet<&String> = v.in_sync_members().iter().collect();
            v.workers.len() == n && v.workers.contains_key(&master.id) && slaves == in_sync
        })
        .await
    }

    pub async fn wait_for(&self, condition: impl FnMut(&ClusterView) -> bool) -> ClusterView {
        self.handle()
            .wait_for(SETTLE, condition)
            .await
            .expect("cluster state")
    }

    pub fn view(&self) -> ClusterView {
        self.handle().view()
    }

    pub fn master_id(&self) -> String {
        self.view().master.expect("a master").id
    }

    /// The master's pid, as ZooKeeper records it.
    pub fn master_pid(&self) -> u32 {
        self.view().master.expect("a master").pid
    }

    pub fn slave_ids(&self) -> Vec<String> {
        self.view().in_sync_members().to_vec()
    }

    /// Starts one more slave (the orchestrator keeps it from then on) and waits until it is in sync; returns
    /// its id.
    pub async fn add_slave(&self) -> String {
        let id = self.handle().add_slave().await.expect("slave starts");
        let wanted = id.clone();
        self.wait_for(move |v| v.in_sync_members().contains(&wanted))
            .await;
        id
    }

    /// Sets how many slaves the orchestrator keeps, as the scaling policy does.
    pub async fn set_target_slaves(&self, n: usize) {
        self.handle()
            .set_target_slaves(n)
            .await
            .expect("target set");
    }

    pub fn target_slaves(&self) -> usize {
        self.handle().target_slaves()
    }

    /// Kills a worker with SIGKILL through the orchestrator, which replaces it (when self-healing) like any
    /// dead worker.
    pub async fn kill(&self, id: &str) {
        assert!(
            self.handle().kill_worker(id).await.expect("kill"),
            "worker {id} was not running"
        );
    }

    /// `POST /api/v1/crash/master`: the pid killed, after checking the answer is `200 [pid]`.
    pub async fn crash_master(&self) -> u32 {
        self.crash("/api/v1/crash/master").await
    }

    /// `POST /api/v1/crash/slave`: the pid killed, after checking the answer is `200 [pid]`.
    pub async fn crash_slave(&self) -> u32 {
        self.crash("/api/v1/crash/slave").await
    }

    async fn crash(&self, path: &str) -> u32 {
        let (status, body) = self.post(path, &json!({})).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        let pids: Vec<u32> = serde_json::from_value(body.clone()).expect("[pid]");
        assert_eq!(pids.len(), 1, "{path}: {body}");
        pids[0]
    }

    /// `GET /api/v1/worker/list`.
    pub async fn worker_list(&self) -> Vec<u32> {
        let (status, body) = self.get("/api/v1/worker/list").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        serde_json::from_value(body).expect("a list of pids")
    }

    /// Pids of the live worker processes, ascending.
    pub async fn pids(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = self
            .handle()
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
        self.handle()
            .processes()
            .await
            .expect("processes")
            .into_iter()
            .map(|p| p.id)
            .collect()
    }

    /// The database file of copy `id`, on whichever host holds it (a path that does not exist when none
    /// does).
    pub fn db_path(&self, id: &str) -> PathBuf {
        let folders: Vec<PathBuf> = self.roots.values().map(|root| root.join(id)).collect();
        let folder = folders.iter().find(|f| f.exists()).unwrap_or(&folders[0]);
        folder.join(protocol::disk::DB_FILE)
    }

    /// The hosts, by name, each with the folder under which it keeps its copies.
    pub fn hosts(&self) -> &BTreeMap<String, PathBuf> {
        &self.roots
    }

    /// Makes `host` as good as down: its launcher fails at once from now on, so no worker starts there.
    pub fn take_host_down(&self, host: &str) {
        let root = &self.roots[host];
        let launcher = root.parent().expect("a host's folder").join("launcher.sh");
        assert!(
            launcher.exists(),
            "{host} is not a host of the hosts runtime"
        );
        std::fs::write(&launcher, "#!/bin/sh\nexit 1\n").expect("replacing the launcher");
    }

    /// The host the registry of copies says holds copy `id`.
    pub fn host_of_copy(&self, id: &str) -> Option<String> {
        self.view().copies.get(id).map(|c| c.host.clone())
    }

    /// The host whose launcher started worker process `pid` (it set [`HOST_VARIABLE`] for it), and the data
    /// directory it was given.
    pub fn host_of_worker(pid: u32) -> Option<(String, PathBuf)> {
        let process = procfs::process::Process::new(i32::try_from(pid).ok()?).ok()?;
        let host = process
            .environ()
            .ok()?
            .get(std::ffi::OsStr::new(HOST_VARIABLE))?
            .to_str()?
            .to_owned();
        let args = process.cmdline().ok()?;
        let at = args.iter().position(|a| a == "--data-dir")?;
        Some((host, PathBuf::from(args.get(at + 1)?)))
    }

    /// Every row of every table of a worker's database file, read directly from disk.
    pub fn dump(&self, id: &str) -> String {
        let conn = worker::db::open_reader(&self.db_path(id)).expect("open worker db");
        worker::db::dump(&conn).expect("dump")
    }

    /// Every key in `acked` is in table `t (k INTEGER PRIMARY KEY)`, as a read through the API (so a slave)
    /// sees it; panics naming the lost ones.
    pub async fn assert_keys_stored(&self, acked: &[i64]) {
        let rows = self.read_ok("SELECT k FROM t ORDER BY k", vec![]).await;
        let stored: Vec<i64> = rows
            .rows
            .iter()
            .map(|r| match r[0] {
                Value::Integer(k) => k,
                ref other => panic!("{other:?}"),
            })
            .collect();
        let missing: Vec<&i64> = acked
            .iter()
            .filter(|k| stored.binary_search(k).is_err())
            .collect();
        assert!(
            missing.is_empty(),
            "{} acknowledged writes lost: {missing:?}",
            missing.len()
        );
    }

    /// Asserts every live worker comes to hold the same data as the master, and returns it. A slave may still be
    /// installing a snapshot or applying the last entries (one that resynced rejoins after the writes that went on
    /// without it), so each gets [`SETTLE`] to converge; one that still differs then has diverged.
    pub async fn assert_all_identical(&self) -> String {
        let ids = self.live_ids().await;
        assert!(ids.len() >= 2, "fewer than two workers: {ids:?}");
        let master = self.master_id();
        let expected = self.dump(&master);
        let deadline = tokio::time::Instant::now() + SETTLE;
        for id in ids {
            loop {
                let dump = self.dump(&id);
                if dump == expected {
                    break;
                }
                if tokio::time::Instant::now() >= deadline {
                    assert_eq!(
                        dump, expected,
                        "worker {id} still differs from the master {master} after {SETTLE:?}"
                    );
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        expected
    }

    fn client(&self) -> reqwest::Client {
        self.http.read().expect("client lock").clone()
    }

    pub async fn post(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> (StatusCode, serde_json::Value) {
        self.request(self.client().post(self.url(path)).json(body))
            .await
    }

    pub async fn post_raw(&self, path: &str, body: &str) -> (StatusCode, serde_json::Value) {
        let req = self
            .client()
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body.to_owned());
        self.request(req).await
    }

    pub async fn get(&self, path: &str) -> (StatusCode, serde_json::Value) {
        self.request(self.client().get(self.url(path))).await
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
            .client()
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
        self.try_request(req).await.expect("orchestrator answers")
    }

    /// A write that reports a connection failure (an orchestrator being killed) instead of panicking.
    pub async fn try_write_with_key(
        &self,
        key: &str,
        statements: Vec<Statement>,
    ) -> Result<(StatusCode, serde_json::Value), reqwest::Error> {
        let req = self
            .client()
            .post(self.url("/api/v1/db/write"))
            .header("Idempotency-Key", key)
            .json(&json!({ "statements": statements }));
        self.try_request(req).await
    }

    /// A read that reports a connection failure (an orchestrator being restarted) instead of panicking.
    pub async fn try_read(
        &self,
        sql: &str,
        params: Vec<Value>,
    ) -> Result<(StatusCode, serde_json::Value), reqwest::Error> {
        let req = self
            .client()
            .post(self.url("/api/v1/db/read"))
            .json(&json!({ "sql": sql, "params": params }));
        self.try_request(req).await
    }

    async fn try_request(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<(StatusCode, serde_json::Value), reqwest::Error> {
        let resp = req.send().await?;
        let status = resp.status();
        let text = resp.text().await?;
        let body = if text.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text))
        };
        Ok((status, body))
    }

    /// Publishes raw bytes on the cluster's broker, as a misbehaving client could.
    pub async fn publish_raw(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
    ) -> anyhow::Result<()> {
        let conn = broker::connect(AMQP_URL, "e2e-raw", broker::CONNECT_TIMEOUT).await?;
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
    pub async fn stop(&self) {
        let running = self.orchestrator.lock().expect("orchestrator lock").take();
        if let Some(o) = running {
            let _ = o.stop.send(());
            o.server
                .await
                .expect("server task")
                .expect("orchestrator stopped cleanly");
        }
        // Drop kills any worker left (one the orchestrator did not know of).
    }
}

/// Polls `done` until it holds, for at most [`SETTLE`].
pub async fn wait_until(mut done: impl FnMut() -> bool, what: &str) {
    let deadline = tokio::time::Instant::now() + SETTLE;
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "waited {SETTLE:?} for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // A test that panicked never reached stop(). Its orchestrator's tasks end with the test's runtime (and
        // the workers it started with them), but workers adopted after an orchestrator restart are nobody's
        // children: every process of this namespace is killed here, whoever started it.
        if let Some(o) = self.orchestrator.get_mut().ok().and_then(Option::take) {
            o.server.abort();
        }
        for pid in worker_pids_of(self.names.namespace()) {
            sigkill(pid);
        }
        purge(&self.names);
    }
}

/// Deletes what a cluster leaves on the shared broker and coordinator: its durable queues, its exchange and its
/// znodes, so that test runs do not pile up state on a machine that keeps its RabbitMQ and ZooKeeper. Runs on a
/// thread of its own (it is called from `Drop`, inside the test's runtime), gives up after a few seconds, and
/// ignores failures: it is housekeeping, not part of any test.
pub fn purge(names: &Names) {
    let names = names.clone();
    let housekeeping = std::thread::spawn(move || {
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        runtime.block_on(orchestrator::admin::purge_namespace(
            AMQP_URL,
            ZK_ADDRESS,
            &names,
            Duration::from_secs(5),
        ));
    });
    let _ = housekeeping.join();
}
