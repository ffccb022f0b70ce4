//! The whole system deployed for one test run, from the repository's `docker-compose.yml` (a Compose project) or
//! its `docker-stack.yml` (a Swarm stack): unique names, free ports, and everything removed when dropped.

use std::collections::BTreeSet;
use std::process::Stdio;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::Value as Json;

/// A cold start (RabbitMQ and ZooKeeper first, then the orchestrator and its workers) takes about 25 s here.
const HEALTHY_WITHIN: Duration = Duration::from_secs(180);

const SERVICES: [&str; 6] = [
    "rabbitmq",
    "zookeeper",
    "orchestrator",
    "users",
    "rides",
    "gateway",
];

/// What deploys the system.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// `docker-compose` (or `docker compose`) on `docker-compose.yml`: workers are containers of this engine.
    Compose,
    /// `docker stack deploy` on `docker-stack.yml`, on the swarm this engine manages: workers are Swarm
    /// services.
    Swarm,
}

pub struct Project {
    engine: Engine,
    /// The project's (or stack's) name, which is also its network, its namespace and the prefix of its data
    /// volume.
    name: String,
    gateway_port: u16,
    orchestrator_port: u16,
    users_port: u16,
    rides_port: u16,
    pub scale_interval_secs: u64,
    http: reqwest::Client,
}

impl Project {
    pub fn new(engine: Engine, scale_interval_secs: u64) -> Project {
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        Project {
            engine,
            name: format!("rstest-{}", &suffix[..10]),
            gateway_port: free_port(),
            orchestrator_port: free_port(),
            users_port: free_port(),
            rides_port: free_port(),
            scale_interval_secs,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("an HTTP client"),
        }
    }

    /// `docker-compose` on the repository's file, with this project's names and ports (interpolated into the
    /// file by every command, `down` included).
    fn compose(&self) -> std::process::Command {
        let root = e2e::system::repo_root();
        // docker-compose 1.29 (Debian's) when installed, else the `docker compose` plugin.
        let mut cmd = if which("docker-compose") {
            std::process::Command::new("docker-compose")
        } else {
            let mut c = std::process::Command::new("docker");
            c.arg("compose");
            c
        };
        cmd.arg("--project-name")
            .arg(&self.name)
            .arg("--file")
            .arg(root.join("docker-compose.yml"));
        self.with_env(&mut cmd);
        cmd
    }

    /// `scripts/swarm.sh ACTION <name>` with this project's names and ports in the environment (`docker stack
    /// deploy` interpolates them into the file), on the images as they are.
    fn swarm_sh(&self, action: &str) -> std::process::Command {
        let root = e2e::system::repo_root();
        let mut cmd = std::process::Command::new(root.join("scripts/swarm.sh"));
        cmd.args([action, &self.name])
            .env("RIDESHARE_SKIP_BUILD", "1");
        self.with_env(&mut cmd);
        cmd
    }

    fn with_env(&self, cmd: &mut std::process::Command) {
        cmd.env("RIDESHARE_NETWORK", &self.name)
            .env("RIDESHARE_NAMESPACE", &self.name)
            .env("RIDESHARE_DATA_VOLUME", self.data_volume())
            .env("RIDESHARE_GATEWAY_PORT", self.gateway_port.to_string())
            .env(
                "RIDESHARE_ORCHESTRATOR_PORT",
                self.orchestrator_port.to_string(),
            )
            .env("RIDESHARE_USERS_PORT", self.users_port.to_string())
            .env("RIDESHARE_RIDES_PORT", self.rides_port.to_string())
            .env("RIDESHARE_ADMIN_ADDR", "127.0.0.1")
            .env(
                "RIDESHARE_SCALE_INTERVAL_SECS",
                self.scale_interval_secs.to_string(),
            )
            // The scaling check asks for three slaves, whatever this host's processors (the default ceiling).
            .env("RIDESHARE_MAX_SLAVES", "4")
            .stdin(Stdio::null());
    }

    /// The name Swarm gives a service of the stack.
    fn swarm_service(&self, service: &str) -> String {
        format!("{}_{service}", self.name)
    }

    /// The label that picks the containers of one of the system's services.
    fn service_filter(&self, service: &str) -> [String; 2] {
        match self.engine {
            Engine::Compose => [
                format!("label=com.docker.compose.project={}", self.name),
                format!("label=com.docker.compose.service={service}"),
            ],
            Engine::Swarm => [
                format!("label=com.docker.stack.namespace={}", self.name),
                format!(
                    "label=com.docker.swarm.service.name={}",
                    self.swarm_service(service)
                ),
            ],
        }
    }

    fn data_volume(&self) -> String {
        format!("{}-data", self.name)
    }

    async fn run_compose(&self, args: &[&str]) {
        let mut cmd = self.compose();
        cmd.args(args);
        output_ok(cmd.into()).await;
    }

    pub async fn up(&self) {
        match self.engine {
            Engine::Compose => self.run_compose(&["up", "--detach"]).await,
            // The repository's own command, with the images scripts/test.sh has just built.
            Engine::Swarm => {
                output_ok(self.swarm_sh("deploy").into()).await;
            }
        }
    }

    /// `down` (or `stack rm`, waiting until everything of the stack, its workers too, has gone), keeping the
    /// volumes unless `volumes`.
    pub async fn down(&self, volumes: bool) {
        match self.engine {
            Engine::Compose => {
                let mut args = vec!["down", "--remove-orphans"];
                if volumes {
                    args.push("--volumes");
                }
                self.run_compose(&args).await;
            }
            Engine::Swarm => {
                // The repository's own command: it waits until the orchestrator has stopped its workers and
                // removes the network, which `stack rm` cannot while they are attached.
                output_ok(self.swarm_sh("rm").into()).await;
                let stack = format!("label=com.docker.stack.namespace={}", self.name);
                let workers = format!("label=org.rideshare.namespace={}", self.name);
                if volumes {
                    for filter in [&stack, &workers] {
                        let listed = docker(&["volume", "ls", "--quiet", "--filter", filter]).await;
                        for volume in listed.split_whitespace() {
                            docker(&["volume", "rm", volume]).await;
                        }
                    }
                }
            }
        }
    }

    /// Waits until Docker reports every service healthy (each image's HEALTHCHECK) and the public API answers
    /// through the gateway.
    pub async fn wait_healthy(&self) {
        let deadline = Instant::now() + HEALTHY_WITHIN;
        loop {
            let states = self.health_states().await;
            let all_healthy = SERVICES
                .iter()
                .all(|s| states.iter().any(|(name, h)| name == s && h == "healthy"));
            if all_healthy {
                let (status, _) = self.gateway(Method::GET, "/api/v1/users", None).await;
                if status == StatusCode::OK || status == StatusCode::NO_CONTENT {
                    return;
                }
            }
            if Instant::now() > deadline {
                self.print_logs().await;
                panic!("not healthy after {HEALTHY_WITHIN:?}: {states:?}");
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// (service, health) of each running container of the project.
    async fn health_states(&self) -> Vec<(String, String)> {
        let (label, service_label) = match self.engine {
            Engine::Compose => (
                format!("label=com.docker.compose.project={}", self.name),
                "com.docker.compose.service",
            ),
            Engine::Swarm => (
                format!("label=com.docker.stack.namespace={}", self.name),
                "com.docker.swarm.service.name",
            ),
        };
        let ids = docker(&["ps", "--quiet", "--filter", &label]).await;
        if ids.trim().is_empty() {
            return Vec::new();
        }
        let format = format!(
            "{{{{index .Config.Labels \"{service_label}\"}}}} \
             {{{{if .State.Health}}}}{{{{.State.Health.Status}}}}{{{{else}}}}none{{{{end}}}}"
        );
        let mut args = vec!["inspect", "--format", &format];
        args.extend(ids.split_whitespace());
        let prefix = format!("{}_", self.name);
        docker_lenient(&args)
            .await
            .lines()
            .filter_map(|line| line.trim().split_once(' '))
            .map(|(service, health)| {
                let service = service.strip_prefix(&prefix).unwrap_or(service);
                (service.to_owned(), health.to_owned())
            })
            .collect()
    }

    /// The log of one of the system's services (every task's, for a Swarm service), or of all of them.
    async fn logs(&self, service: Option<&str>, tail: Option<usize>) -> String {
        let tail = tail.map(|n| n.to_string());
        match self.engine {
            Engine::Compose => {
                let mut cmd = tokio::process::Command::from(self.compose());
                cmd.args(["logs", "--no-color"]);
                if let Some(n) = &tail {
                    cmd.args(["--tail", n]);
                }
                cmd.args(service);
                let out = cmd.output().await.expect("docker-compose logs");
                String::from_utf8_lossy(&out.stdout).into_owned()
            }
            Engine::Swarm => {
                let mut all = String::new();
                let services: Vec<&str> = service.map_or(SERVICES.to_vec(), |s| vec![s]);
                for s in services {
                    let mut cmd = tokio::process::Command::new("docker");
                    cmd.args(["service", "logs", "--raw"]);
                    if let Some(n) = &tail {
                        cmd.args(["--tail", n]);
                    }
                    cmd.arg(self.swarm_service(s)).stdin(Stdio::null());
                    let out = cmd.output().await.expect("docker service logs");
                    // A service's log is its containers' standard output and error, each on its own.
                    all.push_str(&String::from_utf8_lossy(&out.stdout));
                    all.push_str(&String::from_utf8_lossy(&out.stderr));
                }
                all
            }
        }
    }

    async fn print_logs(&self) {
        eprintln!("{}", self.logs(None, Some(40)).await);
    }

    /// How many lines of `service`'s log so far contain `text`.
    pub async fn log_lines(&self, service: &str, text: &str) -> usize {
        self.logs(Some(service), None)
            .await
            .lines()
            .filter(|line| line.contains(text))
            .count()
    }

    /// Waits until `service`'s log holds `n` lines containing `text`.
    pub async fn wait_for_log_lines(&self, service: &str, text: &str, n: usize, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        while self.log_lines(service, text).await < n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{service} never logged {n} line(s) with {text:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The host pid of a service's (running) container.
    pub async fn service_pid(&self, service: &str) -> u64 {
        let [project, service] = self.service_filter(service);
        let id = docker(&["ps", "--quiet", "--filter", &project, "--filter", &service]).await;
        let pid = docker(&["inspect", "--format", "{{.State.Pid}}", id.trim()]).await;
        pid.trim().parse().expect("a pid")
    }

    pub fn users_admin(&self) -> String {
        format!("http://127.0.0.1:{}", self.users_port)
    }

    pub fn rides_admin(&self) -> String {
        format!("http://127.0.0.1:{}", self.rides_port)
    }

    fn orchestrator_base(&self) -> String {
        format!("http://127.0.0.1:{}", self.orchestrator_port)
    }

    fn gateway_base(&self) -> String {
        format!("http://127.0.0.1:{}", self.gateway_port)
    }

    /// One request; a connection failure is a 599 with the error as the body, so callers that poll can
    /// go on and the others fail with the reason.
    pub async fn request(
        &self,
        method: Method,
        base: &str,
        path: &str,
        body: Option<Json>,
    ) -> (StatusCode, Json) {
        let mut req = self.http.request(method, format!("{base}{path}"));
        if let Some(body) = body {
            req = req.json(&body);
        }
        match req.send().await {
            Ok(res) => {
                let status = res.status();
                let text = res.text().await.unwrap_or_default();
                let json = serde_json::from_str(&text).unwrap_or(Json::String(text));
                (status, json)
            }
            Err(e) => (
                StatusCode::from_u16(599).expect("599"),
                Json::String(e.to_string()),
            ),
        }
    }

    pub async fn gateway(
        &self,
        method: Method,
        path: &str,
        body: Option<Json>,
    ) -> (StatusCode, Json) {
        self.request(method, &self.gateway_base(), path, body).await
    }

    pub async fn orchestrator(
        &self,
        method: Method,
        path: &str,
        body: Option<Json>,
    ) -> (StatusCode, Json) {
        self.request(method, &self.orchestrator_base(), path, body)
            .await
    }

    /// `GET /api/v1/worker/list`.
    pub async fn worker_pids(&self) -> Vec<u64> {
        let (status, body) = self
            .orchestrator(Method::GET, "/api/v1/worker/list", None)
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body.as_array()
            .expect("a list")
            .iter()
            .map(|p| p.as_u64().expect("a pid"))
            .collect()
    }

    pub async fn master_pid(&self) -> u64 {
        let (status, body) = self
            .orchestrator(Method::GET, "/api/v1/workers", None)
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let masters: Vec<u64> = body
            .as_array()
            .expect("a list")
            .iter()
            .filter(|w| w["role"] == "master")
            .map(|w| w["pid"].as_u64().expect("a pid"))
            .collect();
        assert_eq!(masters.len(), 1, "one master: {body}");
        masters[0]
    }

    /// Waits until there are `n` workers, one master and every slave in sync; returns their pids.
    pub async fn wait_for_workers_within(&self, n: usize, within: Duration) -> BTreeSet<u64> {
        let deadline = Instant::now() + within;
        loop {
            let (status, body) = self
                .orchestrator(Method::GET, "/api/v1/workers", None)
                .await;
            if status == StatusCode::OK {
                let workers = body.as_array().cloned().unwrap_or_default();
                let masters = workers.iter().filter(|w| w["role"] == "master").count();
                let in_sync = workers
                    .iter()
                    .filter(|w| w["role"] == "slave" && w["in_sync"] == true)
                    .count();
                if workers.len() == n && masters == 1 && in_sync == n - 1 {
                    return workers
                        .iter()
                        .map(|w| w["pid"].as_u64().expect("a pid"))
                        .collect();
                }
            }
            if Instant::now() > deadline {
                self.print_logs().await;
                panic!("never {n} workers in sync within {within:?}; last: {status} {body}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub async fn wait_for_workers(&self, n: usize) -> BTreeSet<u64> {
        self.wait_for_workers_within(n, HEALTHY_WITHIN).await
    }

    /// The host pids (`State.Pid`) of the running worker containers of this project's namespace.
    pub async fn container_pids(&self) -> BTreeSet<u64> {
        let label = format!("label=org.rideshare.namespace={}", self.name);
        let ids = docker(&["ps", "--quiet", "--filter", &label]).await;
        if ids.trim().is_empty() {
            return BTreeSet::new();
        }
        let mut args = vec!["inspect", "--format", "{{.State.Pid}}"];
        args.extend(ids.split_whitespace());
        docker_lenient(&args)
            .await
            .lines()
            .map(|pid| pid.trim().parse::<u64>().expect("a pid"))
            .filter(|pid| *pid > 0)
            .collect()
    }

    /// Every worker `worker/list` reports is a running container whose main process has that pid on the
    /// host, and every worker container is listed.
    pub async fn assert_pids_are_the_containers(&self) {
        let listed: BTreeSet<u64> = self.worker_pids().await.into_iter().collect();
        assert_eq!(listed, self.container_pids().await);
    }
}

impl Drop for Project {
    /// Removes everything the project created, whatever state the test left it in: the containers (the
    /// workers too, which Compose does not know), the network and the volumes.
    fn drop(&mut self) {
        let run = |program: &str, args: &[&str]| {
            let _ = std::process::Command::new(program)
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        };
        let label = format!("label=org.rideshare.namespace={}", self.name);
        if let Ok(out) = std::process::Command::new("docker")
            .args(["ps", "--all", "--quiet", "--filter", &label])
            .output()
        {
            let ids = String::from_utf8_lossy(&out.stdout).to_string();
            let mut args = vec!["rm", "--force", "--volumes"];
            args.extend(ids.split_whitespace());
            if args.len() > 3 {
                run("docker", &args);
            }
        }
        match self.engine {
            Engine::Compose => {
                let _ = self
                    .compose()
                    .args(["down", "--volumes", "--remove-orphans", "--timeout", "5"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
                let volume = self.data_volume();
                run("docker", &["volume", "rm", "--force", &volume]);
            }
            Engine::Swarm => {
                // The workers' services first (the stack does not know them), then the stack; their
                // containers take a moment to go, and hold the volumes until then.
                if let Ok(out) = std::process::Command::new("docker")
                    .args(["service", "ls", "--quiet", "--filter", &label])
                    .output()
                {
                    let ids = String::from_utf8_lossy(&out.stdout).to_string();
                    let mut args = vec!["service", "rm"];
                    args.extend(ids.split_whitespace());
                    if args.len() > 2 {
                        run("docker", &args);
                    }
                }
                run("docker", &["stack", "rm", &self.name]);
                let stack = format!("label=com.docker.stack.namespace={}", self.name);
                for _ in 0..120 {
                    let left = std::process::Command::new("docker")
                        .args(["ps", "--all", "--quiet", "--filter", &stack])
                        .output()
                        .map(|out| out.stdout)
                        .unwrap_or_default();
                    if left.is_empty() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(500));
                }
                for filter in [&stack, &label] {
                    if let Ok(out) = std::process::Command::new("docker")
                        .args(["volume", "ls", "--quiet", "--filter", filter])
                        .output()
                    {
                        for volume in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                            run("docker", &["volume", "rm", "--force", volume]);
                        }
                    }
                }
            }
        }
        run("docker", &["network", "rm", &self.name]);
    }
}

/// The output of a docker command that may fail in part: a container listed a moment ago may be gone by the
/// time it is inspected (a retired or killed worker); what is left is still the answer.
async fn docker_lenient(args: &[&str]) -> String {
    let out = tokio::process::Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .expect("running docker");
    String::from_utf8(out.stdout).expect("UTF-8")
}

async fn docker(args: &[&str]) -> String {
    let mut cmd = tokio::process::Command::new("docker");
    cmd.args(args).stdin(Stdio::null());
    output_ok(cmd).await
}

/// Runs a command that must succeed; its standard output.
async fn output_ok(mut cmd: tokio::process::Command) -> String {
    let out = cmd.output().await.expect("running docker");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8")
}

fn which(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}
