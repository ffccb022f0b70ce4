//! The whole product as a client sees it: a [`Cluster`] (orchestrator and workers), the users and rides
//! services in-process on port 0, and the real nginx gateway in front of them (a child process started with
//! `scripts/gateway.sh`, stopped on drop). Tests talk to the gateway, as clients do, and read the request
//! counters and the data behind it directly.
//!
//! The vocabulary: `system.register("alice")`, `system.create_ride(..)`, `system.users_count()`,
//! `system.restart_users()`, `system.data()`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use public_api::Timestamp;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value as Json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::{Cluster, SETTLE};

/// A password hash that satisfies the contract (40 hex digits), for users whose password does not matter.
pub const PASSWORD: &str = "3d0f3b9ddcacec30c4008c5e030e6c13a478cb4f";

pub struct System {
    pub cluster: Cluster,
    /// `http://127.0.0.1:<port>` of the gateway: where clients send requests.
    pub gateway: String,
    /// `http://<addr>` of each service itself, for `_count` and `db/clear` (api.md: not through the gateway).
    pub users_url: String,
    pub rides_url: String,
    users: InProcess,
    rides: InProcess,
    nginx: Nginx,
    http: reqwest::Client,
    users_config: users::Config,
    rides_config: rides::Config,
    /// Holds every service's data directory and the gateway's runtime directory.
    _dir: tempfile::TempDir,
}

/// A service running as a task of the test's runtime.
struct InProcess {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl InProcess {
    fn spawn<F>(
        listener: TcpListener,
        run: impl FnOnce(TcpListener, oneshot::Receiver<()>) -> F,
    ) -> Self
    where
        F: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let addr = listener.local_addr().expect("bound address");
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(run(listener, stopped));
        Self {
            addr,
            stop: Some(stop),
            task: Some(task),
        }
    }

    async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await
                .expect("the service task")
                .expect("the service stopped cleanly");
        }
    }
}

/// What a shutdown future is made of: the end of the test's stop signal, whichever way it ends.
async fn until(stopped: oneshot::Receiver<()>) {
    let _ = stopped.await;
}

impl System {
    /// A cluster with one master and one slave, both services, and the gateway, all ready.
    pub async fn start() -> System {
        let cluster = Cluster::start(1).await;
        let dir = tempfile::tempdir().expect("temp dir");
        let users_listener = bind("127.0.0.1:0".parse().unwrap()).await;
        let rides_listener = bind("127.0.0.1:0".parse().unwrap()).await;
        let users_addr = users_listener.local_addr().unwrap();
        let rides_addr = rides_listener.local_addr().unwrap();
        // The gateway first: the rides service needs its address.
        let nginx = Nginx::start(&dir.path().join("gateway"), users_addr, rides_addr);
        let gateway = format!("http://{}", nginx.addr);

        let users_config = users::Config::new(&cluster.base, dir.path().join("users"));
        let rides_config = rides::Config::new(&cluster.base, &gateway, dir.path().join("rides"));
        let users = spawn_users(users_listener, users_config.clone());
        let rides = spawn_rides(rides_listener, rides_config.clone());

        let system = System {
            cluster,
            gateway,
            users_url: format!("http://{users_addr}"),
            rides_url: format!("http://{rides_addr}"),
            users,
            rides,
            nginx,
            // A bound on every request, so a service that hangs fails the test instead of stalling it.
            http: reqwest::Client::builder()
                .timeout(SETTLE)
                .build()
                .expect("an HTTP client"),
            users_config,
            rides_config,
            _dir: dir,
        };
        system.wait_until_ready().await;
        system
    }

    /// Polls `/health` of both services directly and of the gateway (which routes it to rides; no counted
    /// route is touched) until all answer 200.
    async fn wait_until_ready(&self) {
        for url in [&self.users_url, &self.rides_url, &self.gateway] {
            let health = format!("{url}/health");
            let deadline = Instant::now() + SETTLE;
            loop {
                if let Ok(r) = self.http.get(&health).send().await {
                    if r.status() == StatusCode::OK {
                        break;
                    }
                }
                assert!(
                    Instant::now() < deadline,
                    "{health} did not answer 200 within {SETTLE:?}; gateway log:\n{}",
                    self.nginx.log()
                );
                self.nginx.assert_running();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }

    /// Stops the users service (it saves its counter on the way out); its address is left unserved.
    pub async fn stop_users(&mut self) {
        self.users.stop().await;
    }

    /// Starts the users service again, on the same address and data directory, and waits until it is ready.
    pub async fn start_users(&mut self) {
        let listener = bind(self.users.addr).await;
        self.users = spawn_users(listener, self.users_config.clone());
        self.wait_until_ready().await;
    }

    pub async fn restart_users(&mut self) {
        self.stop_users().await;
        self.start_users().await;
    }

    pub async fn restart_rides(&mut self) {
        self.rides.stop().await;
        let listener = bind(self.rides.addr).await;
        self.rides = spawn_rides(listener, self.rides_config.clone());
        self.wait_until_ready().await;
    }

    pub fn users_data_dir(&self) -> &Path {
        &self.users_config.data_dir
    }

    pub fn rides_data_dir(&self) -> &Path {
        &self.rides_config.data_dir
    }

    // --- requests through the gateway ---------------------------------------------------------------------

    /// Sends `method path` through the gateway with `body` as it is (no content type), and returns the
    /// status and the body as JSON (`Json::Null` for an empty body; a string for a body that is not JSON).
    pub async fn send(&self, method: Method, path: &str, body: Option<&str>) -> (StatusCode, Json) {
        let mut request = self.http.request(method, format!("{}{path}", self.gateway));
        if let Some(body) = body {
            request = request.body(body.to_owned());
        }
        response(request).await
    }

    /// Like [`System::send`], with a body that need not be text.
    pub async fn send_bytes(
        &self,
        method: Method,
        path: &str,
        body: Vec<u8>,
    ) -> (StatusCode, Json) {
        response(
            self.http
                .request(method, format!("{}{path}", self.gateway))
                .body(body),
        )
        .await
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Json) {
        self.send(Method::GET, path, None).await
    }

    pub async fn delete(&self, path: &str) -> (StatusCode, Json) {
        self.send(Method::DELETE, path, None).await
    }

    pub async fn post(&self, path: &str, body: &Json) -> (StatusCode, Json) {
        self.send(Method::POST, path, Some(&body.to_string())).await
    }

    pub async fn put(&self, path: &str, body: &Json) -> (StatusCode, Json) {
        self.send(Method::PUT, path, Some(&body.to_string())).await
    }

    /// `PUT /api/v1/users` with a valid password.
    pub async fn put_user(&self, username: &str) -> (StatusCode, Json) {
        self.put(
            "/api/v1/users",
            &json!({"username": username, "password": PASSWORD}),
        )
        .await
    }

    /// Registers a user, asserting the contract's `201 {}`.
    pub async fn register(&self, username: &str) {
        let (status, body) = self.put_user(username).await;
        assert_eq!(
            (status, &body),
            (StatusCode::CREATED, &json!({})),
            "registering {username:?}"
        );
    }

    pub async fn create_ride_raw(
        &self,
        created_by: &str,
        timestamp: &str,
        source: Json,
        destination: Json,
    ) -> (StatusCode, Json) {
        let body = json!({"created_by": created_by, "timestamp": timestamp, "source": source,
                          "destination": destination});
        self.post("/api/v1/rides", &body).await
    }

    /// Creates a ride, asserting `201 {"rideId": n}`, and returns n.
    pub async fn create_ride(
        &self,
        created_by: &str,
        timestamp: &str,
        source: u8,
        destination: u8,
    ) -> i64 {
        let (status, body) = self
            .create_ride_raw(created_by, timestamp, json!(source), json!(destination))
            .await;
        assert_eq!(status, StatusCode::CREATED, "creating a ride: {body}");
        let id = body["rideId"]
            .as_i64()
            .unwrap_or_else(|| panic!("no rideId in {body}"));
        assert_eq!(body, json!({"rideId": id}));
        id
    }

    /// Joins a ride, asserting `200 {}`.
    pub async fn join(&self, ride_id: i64, username: &str) {
        let (status, body) = self
            .post(
                &format!("/api/v1/rides/{ride_id}"),
                &json!({"username": username}),
            )
            .await;
        assert_eq!(
            (status, &body),
            (StatusCode::OK, &json!({})),
            "{username} joining {ride_id}"
        );
    }

    /// Stores a ride whose time has already passed, as a ride created earlier would be by now; straight into
    /// the database, since the API (rightly) refuses to create one.
    pub async fn insert_past_ride(
        &self,
        created_by: &str,
        seconds_ago: i64,
        source: u8,
        destination: u8,
    ) -> i64 {
        let written = self
            .cluster
            .write_ok(vec![crate::st(
                "INSERT INTO rides (created_by, timestamp, source, destination) VALUES (?, ?, ?, ?)",
                vec![
                    protocol::Value::Text(created_by.to_owned()),
                    protocol::Value::Integer(Timestamp::now().unix() - seconds_ago),
                    protocol::Value::Integer(source.into()),
                    protocol::Value::Integer(destination.into()),
                ],
            )])
            .await;
        written.results[0].last_insert_id
    }

    // --- each service directly ----------------------------------------------------------------------------

    pub async fn users_count(&self) -> u64 {
        self.count_of(&self.users_url).await
    }

    pub async fn rides_count(&self) -> u64 {
        self.count_of(&self.rides_url).await
    }

    async fn count_of(&self, base: &str) -> u64 {
        let (status, body) = response(self.http.get(format!("{base}/api/v1/_count"))).await;
        assert_eq!(status, StatusCode::OK, "{base}/api/v1/_count: {body}");
        let counts: Vec<u64> = serde_json::from_value(body).expect("[n]");
        assert_eq!(counts.len(), 1);
        counts[0]
    }

    /// Sends a request to a service directly (for `_count` and `db/clear`).
    pub async fn send_direct(&self, base: &str, method: Method, path: &str) -> (StatusCode, Json) {
        response(self.http.request(method, format!("{base}{path}"))).await
    }

    /// Every row of the three tables, read through the orchestrator: what "nothing changed" compares.
    pub async fn data(&self) -> Json {
        let mut all = serde_json::Map::new();
        for (table, order) in [
            ("users", "id"),
            ("rides", "id"),
            ("ride_members", "ride_id, position"),
        ] {
            let rows = self
                .cluster
                .read_ok(&format!("SELECT * FROM {table} ORDER BY {order}"), vec![])
                .await;
            all.insert(table.to_owned(), json!(rows.rows));
        }
        Json::Object(all)
    }

    /// Stops everything: the services (saving their counters), the gateway, then the cluster.
    pub async fn stop(mut self) {
        self.users.stop().await;
        self.rides.stop().await;
        self.nginx.stop();
        let System { cluster, .. } = self;
        cluster.stop().await;
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn spawn_users(listener: TcpListener, config: users::Config) -> InProcess {
    InProcess::spawn(listener, |listener, stopped| {
        users::run(listener, config, until(stopped))
    })
}

fn spawn_rides(listener: TcpListener, config: rides::Config) -> InProcess {
    InProcess::spawn(listener, |listener, stopped| {
        rides::run(listener, config, until(stopped))
    })
}

/// Binds `addr`, retrying briefly: a port just released by a stopped service can take a moment to be free.
async fn bind(addr: SocketAddr) -> TcpListener {
    let deadline = Instant::now() + SETTLE;
    loop {
        match TcpListener::bind(addr).await {
            Ok(listener) => return listener,
            Err(e) => {
                assert!(Instant::now() < deadline, "binding {addr}: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

async fn response(request: reqwest::RequestBuilder) -> (StatusCode, Json) {
    let response = request.send().await.expect("the request is answered");
    let status = response.status();
    let text = response.text().await.expect("a body");
    let body = if text.is_empty() {
        Json::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Json::String(text))
    };
    (status, body)
}

/// Asserts an error answer: `status` with a body of exactly `{"error": "<non-empty reason>"}`.
#[track_caller]
pub fn assert_error(answer: &(StatusCode, Json), status: StatusCode, context: &str) {
    assert_eq!(answer.0, status, "{context}: {}", answer.1);
    let reason = answer
        .1
        .get("error")
        .and_then(Json::as_str)
        .unwrap_or_default();
    assert!(
        !reason.is_empty() && answer.1.as_object().is_some_and(|o| o.len() == 1),
        "{context}: not an error body: {}",
        answer.1
    );
}

/// The repository root (the parent of this crate).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("e2e/ has a parent")
        .to_owned()
}

/// A timestamp `seconds` from now, in the contract's format (negative: in the past).
pub fn timestamp_in(seconds: i64) -> String {
    Timestamp::from_unix(Timestamp::now().unix() + seconds)
        .expect("a representable time")
        .to_string()
}

/// The nginx gateway, run by `scripts/gateway.sh` (which execs nginx, so the child is nginx's master).
pub struct Nginx {
    pub addr: SocketAddr,
    child: Child,
    runtime_dir: PathBuf,
}

impl Nginx {
    /// Starts nginx on a free port; if another process takes the port between choosing it and nginx binding
    /// it, tries another.
    pub fn start(runtime_dir: &Path, users: SocketAddr, rides: SocketAddr) -> Nginx {
        let script = repo_root().join("scripts/gateway.sh");
        for _ in 0..5 {
            let addr = free_port();
            std::fs::create_dir_all(runtime_dir).expect("gateway runtime dir");
            let stderr =
                std::fs::File::create(runtime_dir.join("gateway.stderr")).expect("stderr file");
            let child = Command::new(&script)
                .arg("--listen")
                .arg(addr.to_string())
                .arg("--users")
                .arg(users.to_string())
                .arg("--rides")
                .arg(rides.to_string())
                .arg("--runtime-dir")
                .arg(runtime_dir)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(stderr)
                .spawn()
                .unwrap_or_else(|e| panic!("starting {}: {e}", script.display()));
            let mut nginx = Nginx {
                addr,
                child,
                runtime_dir: runtime_dir.to_owned(),
            };
            if nginx.wait_listening() {
                return nginx;
            }
            nginx.stop();
        }
        panic!("nginx did not start; its log:\n{}", log_of(runtime_dir));
    }

    /// Waits until the port accepts connections (true), or nginx exits (false).
    fn wait_listening(&mut self) -> bool {
        let deadline = std::time::Instant::now() + SETTLE;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if std::net::TcpStream::connect(self.addr).is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    fn assert_running(&self) {
        let pid = self.child.id();
        assert!(
            crate::is_running(pid),
            "nginx (pid {pid}) exited; its log:\n{}",
            self.log()
        );
    }

    pub fn log(&self) -> String {
        log_of(&self.runtime_dir)
    }

    /// The access log (one JSON object per request; nginx writes it out at least every second).
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.runtime_dir.join("access.log")).unwrap_or_default()
    }

    /// SIGTERM (nginx's fast shutdown: the master stops its workers, then exits), then SIGKILL if it is
    /// still there after a while. Killing the master alone would leave its workers serving.
    fn stop(&mut self) {
        terminate(&mut self.child);
    }
}

/// Stops a child process: SIGTERM, then SIGKILL if it has not exited within 10 s.
pub fn terminate(child: &mut Child) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.stop();
    }
}

fn log_of(runtime_dir: &Path) -> String {
    ["gateway.stderr", "error.log"]
        .iter()
        .map(|f| std::fs::read_to_string(runtime_dir.join(f)).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr")
}
