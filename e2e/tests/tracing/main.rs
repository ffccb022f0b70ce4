//! One request followed by its id through every log it touches, with the product's own binaries as separate
//! processes (as `./run.sh` runs them), JSON log lines (`RIDESHARE_LOG_FORMAT=json`) and the per-request lines
//! turned on (`RUST_LOG=info,rideshare::request=debug`): the gateway's access log, the users or rides service,
//! the orchestrator, and the worker that ran it (the workers write to the orchestrator's stderr, which they
//! inherit).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use e2e::system::{free_port, terminate, timestamp_in, Nginx, PASSWORD};
use e2e::{binary, purge, sigkill, worker_pids_of, SETTLE};
use protocol::Names;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::time::Instant;

/// A service binary running with its log lines (JSON) in a file.
struct Process {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Process {
    fn start(name: &'static str, dir: &Path, args: &[String]) -> Process {
        let log = dir.join(format!("{name}.log"));
        let child = Command::new(binary(name))
            .args(args)
            .env("RUST_LOG", "info,rideshare::request=debug")
            .env("RIDESHARE_LOG_FORMAT", "json")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        Process { name, child, log }
    }

    /// Every log line, parsed: each must be one JSON object.
    fn lines(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| {
                serde_json::from_str(l).unwrap_or_else(|e| {
                    panic!("{}: a log line that is not JSON ({e}): {l}", self.name)
                })
            })
            .collect()
    }
}

impl Drop for Process {
    /// SIGTERM (the orchestrator stops its workers on the way out), then SIGKILL after a while.
    fn drop(&mut self) {
        terminate(&mut self.child);
    }
}

/// Polls until `found` holds, or fails with `what` and the context `describe` gives.
async fn eventually(what: &str, mut found: impl FnMut() -> bool, describe: impl Fn() -> String) {
    let deadline = Instant::now() + SETTLE;
    while !found() {
        assert!(
            Instant::now() < deadline,
            "{what} within {SETTLE:?}:\n{}",
            describe()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The request id of the span a JSON log line was written in.
fn span_id(line: &Value) -> Option<&str> {
    line["span"]["request_id"].as_str()
}

/// Whether a worker's line names `id` among its batch's request ids.
fn names_in_batch(line: &Value, id: &str) -> bool {
    line["request_ids"]
        .as_str()
        .is_some_and(|ids| ids.split(' ').any(|i| i == id))
}

struct Stack {
    gateway: String,
    /// Each service's own address, where its `/metrics` is.
    users_url: String,
    rides_url: String,
    orchestrator_url: String,
    nginx: Nginx,
    orchestrator: Process,
    users: Process,
    rides: Process,
    names: Names,
    _dir: tempfile::TempDir,
}

impl Stack {
    async fn start() -> Stack {
        let dir = tempfile::tempdir().expect("temp dir");
        let namespace = format!("tr{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
        let names = Names::new(&namespace);
        let (orchestrator_addr, users_addr, rides_addr) = (free_port(), free_port(), free_port());
        let orchestrator = Process::start(
            "orchestrator",
            dir.path(),
            &[
                format!("--listen={orchestrator_addr}"),
                format!("--namespace={namespace}"),
                format!("--data-dir={}", dir.path().join("orchestrator").display()),
                format!("--worker-bin={}", binary("worker").display()),
                "--initial-slaves=1".into(),
                "--stop-workers-on-shutdown".into(),
            ],
        );
        let nginx = Nginx::start(&dir.path().join("gateway"), users_addr, rides_addr);
        let gateway = format!("http://{}", nginx.addr);
        let orchestrator_url = format!("http://{orchestrator_addr}");
        let users = Process::start(
            "users",
            dir.path(),
            &[
                format!("--listen={users_addr}"),
                format!("--orchestrator-url={orchestrator_url}"),
                format!("--data-dir={}", dir.path().join("users").display()),
            ],
        );
        let rides = Process::start(
            "rides",
            dir.path(),
            &[
                format!("--listen={rides_addr}"),
                format!("--orchestrator-url={orchestrator_url}"),
                format!("--gateway-url={gateway}"),
                format!("--data-dir={}", dir.path().join("rides").display()),
            ],
        );
        let stack = Stack {
            gateway,
            users_url: format!("http://{users_addr}"),
            rides_url: format!("http://{rides_addr}"),
            orchestrator_url: orchestrator_url.clone(),
            nginx,
            orchestrator,
            users,
            rides,
            names,
            _dir: dir,
        };
        // Healthy: the orchestrator has a master and a slave in sync; the services answer through the gateway.
        let mut stack = stack;
        let http = reqwest::Client::new();
        for url in [
            format!("{orchestrator_url}/health"),
            format!("http://{users_addr}/health"),
            format!("{}/health", stack.gateway),
        ] {
            let deadline = Instant::now() + SETTLE;
            loop {
                let ok = http
                    .get(&url)
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == StatusCode::OK);
                if ok {
                    break;
                }
                for p in [&mut stack.orchestrator, &mut stack.users, &mut stack.rides] {
                    if let Ok(Some(status)) = p.child.try_wait() {
                        panic!(
                            "{} exited ({status}):\n{}",
                            p.name,
                            std::fs::read_to_string(&p.log).unwrap_or_default()
                        );
                    }
                }
                assert!(
                    Instant::now() < deadline,
                    "{url} not healthy within {SETTLE:?}; orchestrator log:\n{}",
                    std::fs::read_to_string(&stack.orchestrator.log).unwrap_or_default()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        stack
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // The orchestrator first: on SIGTERM it stops its workers. Any worker still running then would outlive
        // the test; it is killed, then the namespace purged.
        terminate(&mut self.orchestrator.child);
        for pid in worker_pids_of(self.names.namespace()) {
            sigkill(pid);
        }
        purge(&self.names);
    }
}

#[tokio::test]
async fn one_request_is_followed_by_its_id_from_the_gateway_to_the_worker_that_ran_it() {
    let stack = Stack::start().await;
    let http = reqwest::Client::new();

    // A registration without an id: the gateway makes one up and answers with it.
    let answer = http
        .put(format!("{}/api/v1/users", stack.gateway))
        .json(&json!({"username": "trace-alice", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::CREATED);
    let register_id = answer.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(!register_id.is_empty());

    // A ride with the client's own id: the rides service passes it on to its check of the user (through the
    // gateway again) and to the orchestrator.
    let ride_id = "trace-ride-1";
    let answer = http
        .post(format!("{}/api/v1/rides", stack.gateway))
        .header("x-request-id", ride_id)
        .json(&json!({
            "created_by": "trace-alice",
            "timestamp": timestamp_in(3600),
            "source": "1",
            "destination": "2",
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::CREATED);
    assert_eq!(answer.headers()["x-request-id"], ride_id);

    // A read: served by a slave.
    let list_id = "trace-list-1";
    let answer = http
        .get(format!("{}/api/v1/users", stack.gateway))
        .header("x-request-id", list_id)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);

    let access = |id: &str| -> Vec<Value> {
        stack
            .nginx
            .access_log()
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).expect("access log lines are JSON"))
            .filter(|l| l["request_id"] == id)
            .collect()
    };
    let describe = || {
        format!(
            "access log:\n{}\norchestrator and workers:\n{}",
            stack.nginx.access_log(),
            std::fs::read_to_string(&stack.orchestrator.log).unwrap_or_default()
        )
    };

    // 1. The gateway's access log.
    eventually(
        "the registration in the access log",
        || access(&register_id).len() == 1,
        describe,
    )
    .await;
    eventually(
        "the ride and its user check in the access log",
        || {
            let uris: Vec<String> = access(ride_id)
                .iter()
                .map(|l| l["uri"].to_string())
                .collect();
            uris.iter().any(|u| u.contains("/api/v1/rides"))
                && uris.iter().any(|u| u.contains("/api/v1/users/trace-alice"))
        },
        describe,
    )
    .await;
    eventually(
        "the list in the access log",
        || access(list_id).len() == 1,
        describe,
    )
    .await;

    // 2. The services that served them.
    let served_in = |p: &Process, id: &str| {
        p.lines()
            .iter()
            .any(|l| span_id(l) == Some(id) && l["message"] == "served")
    };
    eventually(
        "the registration in the users log",
        || served_in(&stack.users, &register_id),
        describe,
    )
    .await;
    eventually(
        "the ride in the rides log",
        || served_in(&stack.rides, ride_id),
        describe,
    )
    .await;
    eventually(
        "the user check in the users log",
        || served_in(&stack.users, ride_id),
        describe,
    )
    .await;
    eventually(
        "the list in the users log",
        || served_in(&stack.users, list_id),
        describe,
    )
    .await;

    // 3. The orchestrator, and 4. the worker that ran each: the master for writes, a slave for the read.
    for (id, worker_line) in [
        (register_id.as_str(), "command committed and answered"),
        (ride_id, "command committed and answered"),
        (list_id, "reads answered"),
    ] {
        eventually(
            &format!("{id} in the orchestrator's log"),
            || served_in(&stack.orchestrator, id),
            describe,
        )
        .await;
        eventually(
            &format!("{id} in a worker's {worker_line:?} line"),
            || {
                stack
                    .orchestrator
                    .lines()
                    .iter()
                    .any(|l| l["message"] == worker_line && names_in_batch(l, id))
            },
            describe,
        )
        .await;
    }
}

/// The value of the first sample of `metric` whose labels include every one of `labels`, in Prometheus text.
fn sample(text: &str, metric: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")) || l.starts_with(&format!("{metric} ")))
        .find(|l| labels.iter().all(|label| l.contains(label)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn each_service_counts_what_it_served_in_its_own_metrics() {
    let stack = Stack::start().await;
    let http = reqwest::Client::new();
    let scrape = |base: String| {
        let http = http.clone();
        async move {
            let answer = http.get(format!("{base}/metrics")).send().await.unwrap();
            assert_eq!(answer.status(), StatusCode::OK, "{base}/metrics");
            answer.text().await.unwrap()
        }
    };
    let registered = |text: &str| {
        sample(
            text,
            "http_requests_total",
            &[
                r#"route="/api/v1/users""#,
                r#"method="PUT""#,
                r#"status="201""#,
            ],
        )
        .unwrap_or(0.0)
    };
    let before = registered(&scrape(stack.users_url.clone()).await);
    for name in ["metrics-ann", "metrics-bob", "metrics-cy"] {
        let answer = http
            .put(format!("{}/api/v1/users", stack.gateway))
            .json(&json!({"username": name, "password": PASSWORD}))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::CREATED);
    }
    let answer = http
        .get(format!("{}/api/v1/rides/12345", stack.gateway))
        .send()
        .await
        .unwrap();
    assert_eq!(
        answer.status(),
        StatusCode::NO_CONTENT,
        "no such ride (api.md)"
    );

    // Each service shows its own requests, by route pattern.
    let users = scrape(stack.users_url.clone()).await;
    assert_eq!(registered(&users) - before, 3.0, "{users}");
    let rides = scrape(stack.rides_url.clone()).await;
    assert!(
        sample(
            &rides,
            "http_requests_total",
            &[r#"route="/api/v1/rides/{ride_id}""#, r#"status="204""#]
        ) >= Some(1.0),
        "{rides}"
    );
    assert_eq!(
        registered(&rides),
        0.0,
        "the rides service counts only its own requests"
    );
    // The orchestrator: the writes behind the registrations, their latency histogram and their batches.
    let orchestrator = scrape(stack.orchestrator_url.clone()).await;
    let writes = sample(
        &orchestrator,
        "http_requests_total",
        &[r#"route="/api/v1/db/write""#, r#"status="200""#],
    );
    assert!(writes >= Some(3.0), "{orchestrator}");
    let timed = sample(
        &orchestrator,
        "http_request_duration_seconds_count",
        &[r#"route="/api/v1/db/write""#, r#"status="200""#],
    );
    assert_eq!(timed, writes, "every write is timed: {orchestrator}");
    assert!(
        sample(
            &orchestrator,
            "rideshare_batch_size_count",
            &[r#"kind="write""#]
        ) >= Some(1.0),
        "{orchestrator}"
    );
    assert_eq!(
        sample(&orchestrator, "rideshare_in_sync_slaves", &[]),
        Some(1.0),
        "{orchestrator}"
    );

    // Not for the public: the gateway does not forward /metrics.
    let answer = http
        .get(format!("{}/metrics", stack.gateway))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::NOT_FOUND);
}
