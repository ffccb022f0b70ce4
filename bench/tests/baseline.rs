//! The baseline over HTTP, as a client sees it: what one would check first that it answers like the system.
//! The whole contract is the e2e suite's, against the system; these check the baseline keeps to it on the
//! paths the benchmark takes and the failures next to them.

use std::path::{Path, PathBuf};

use bench::baseline::{self, Config};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const PASSWORD: &str = "3d0f3b9ddcacec30c4008c5e030e6c13a478cb4f";
const FUTURE: &str = "01-01-2999:00-00-00";

struct App {
    base: String,
    http: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<anyhow::Result<()>>,
}

/// The baseline on a free port, with its data in `dir` (a fresh temporary directory when `None`).
async fn spawn_app(dir: Option<&Path>) -> App {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let config = Config {
        data_dir: dir.map(Path::to_owned),
        ..Config::new()
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(baseline::run(listener, config, async {
        let _ = stopped.await;
    }));
    App {
        base,
        http: reqwest::Client::new(),
        stop: Some(stop),
        task,
    }
}

impl App {
    async fn send(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request.body(body.to_string());
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        let json = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}: {text}"))
        };
        (status, json)
    }

    async fn register(&self, name: &str) -> (StatusCode, Value) {
        let body = json!({"username": name, "password": PASSWORD});
        self.send(Method::PUT, "/api/v1/users", Some(body)).await
    }

    async fn create_ride(&self, created_by: &str) -> (StatusCode, Value) {
        let body =
            json!({"created_by": created_by, "timestamp": FUTURE, "source": 1, "destination": "2"});
        self.send(Method::POST, "/api/v1/rides", Some(body)).await
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap().unwrap();
    }
}

fn assert_error(answer: &(StatusCode, Value), status: StatusCode) {
    assert_eq!(answer.0, status, "{answer:?}");
    assert!(
        answer.1["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{answer:?}"
    );
}

#[tokio::test]
async fn users_register_once_and_list_in_order() {
    let app = spawn_app(None).await;
    assert_eq!(
        app.send(Method::GET, "/api/v1/users", None).await,
        (StatusCode::NO_CONTENT, Value::Null)
    );
    assert_eq!(
        app.register("carol").await,
        (StatusCode::CREATED, json!({}))
    );
    assert_eq!(
        app.register("alice").await,
        (StatusCode::CREATED, json!({}))
    );
    assert_error(&app.register("alice").await, StatusCode::BAD_REQUEST);
    assert_error(
        &app.send(
            Method::PUT,
            "/api/v1/users",
            Some(json!({"username": "bob", "password": "abc"})),
        )
        .await,
        StatusCode::BAD_REQUEST,
    );
    assert_eq!(
        app.send(Method::GET, "/api/v1/users", None).await,
        (StatusCode::OK, json!(["carol", "alice"]))
    );
    assert_eq!(
        app.send(Method::GET, "/api/v1/users/carol", None).await,
        (StatusCode::OK, json!({"username": "carol"}))
    );
    assert_error(
        &app.send(Method::GET, "/api/v1/users/nobody", None).await,
        StatusCode::NOT_FOUND,
    );
    app.stop().await;
}

#[tokio::test]
async fn a_ride_is_created_listed_joined_shown_and_deleted() {
    let app = spawn_app(None).await;
    app.register("alice").await;
    app.register("bob").await;
    assert_error(&app.create_ride("nobody").await, StatusCode::BAD_REQUEST);
    let (status, created) = app.create_ride("alice").await;
    assert_eq!(status, StatusCode::CREATED);
    let id = created["rideId"].as_i64().expect("a ride id");
    assert!(id > 0);

    assert_eq!(
        app.send(Method::GET, "/api/v1/rides?source=1&destination=2", None)
            .await,
        (
            StatusCode::OK,
            json!([{"rideId": id, "username": "alice", "timestamp": FUTURE}])
        )
    );
    assert_eq!(
        app.send(Method::GET, "/api/v1/rides?source=2&destination=1", None)
            .await,
        (StatusCode::NO_CONTENT, Value::Null)
    );

    let ride = format!("/api/v1/rides/{id}");
    let join = |name: &str| Some(json!({ "username": name }));
    assert_eq!(
        app.send(Method::POST, &ride, join("bob")).await,
        (StatusCode::OK, json!({}))
    );
    assert_error(
        &app.send(Method::POST, &ride, join("bob")).await,
        StatusCode::BAD_REQUEST,
    );
    assert_error(
        &app.send(Method::POST, &ride, join("alice")).await,
        StatusCode::BAD_REQUEST,
    );
    assert_error(
        &app.send(Method::POST, &ride, join("nobody")).await,
        StatusCode::BAD_REQUEST,
    );
    assert_eq!(
        app.send(Method::GET, &ride, None).await,
        (
            StatusCode::OK,
            json!({"rideId": id, "created_by": "alice", "users": ["bob"], "timestamp": FUTURE,
                   "source": 1, "destination": 2})
        )
    );
    assert_eq!(
        app.send(Method::GET, "/api/v1/rides/count", None).await,
        (StatusCode::OK, json!([1]))
    );

    assert_eq!(
        app.send(Method::DELETE, &ride, None).await,
        (StatusCode::OK, json!({}))
    );
    assert_eq!(
        app.send(Method::GET, &ride, None).await,
        (StatusCode::NO_CONTENT, Value::Null)
    );
    assert_error(
        &app.send(Method::DELETE, &ride, None).await,
        StatusCode::BAD_REQUEST,
    );
    assert_error(
        &app.send(Method::GET, "/api/v1/rides/0", None).await,
        StatusCode::BAD_REQUEST,
    );
    app.stop().await;
}

#[tokio::test]
async fn deleting_a_user_takes_their_rides_and_clear_takes_everything() {
    let app = spawn_app(None).await;
    app.register("alice").await;
    let id = app.create_ride("alice").await.1["rideId"].as_i64().unwrap();
    assert_eq!(
        app.send(Method::DELETE, "/api/v1/users/alice", None).await,
        (StatusCode::OK, json!({}))
    );
    assert_eq!(
        app.send(Method::GET, &format!("/api/v1/rides/{id}"), None)
            .await
            .0,
        StatusCode::NO_CONTENT
    );
    assert_error(
        &app.send(Method::DELETE, "/api/v1/users/alice", None).await,
        StatusCode::BAD_REQUEST,
    );
    app.register("bob").await;
    app.create_ride("bob").await;
    assert_eq!(
        app.send(Method::POST, "/api/v1/db/clear", None).await,
        (StatusCode::OK, json!({}))
    );
    assert_eq!(
        app.send(Method::GET, "/api/v1/users", None).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.send(Method::GET, "/api/v1/rides/count", None).await,
        (StatusCode::OK, json!([0]))
    );
    app.stop().await;
}

#[tokio::test]
async fn the_counter_counts_api_requests_failures_included_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app(Some(dir.path())).await;
    app.register("alice").await; // 1
    app.create_ride("alice").await; // 2: the existence check is a query, not a request
    app.send(Method::GET, "/api/v1/rides?source=1", None).await; // 3: a 400
    let (status, headers) = {
        let response = app
            .http
            .patch(format!("{}/api/v1/users", app.base))
            .send()
            .await
            .unwrap();
        (response.status(), response.headers().clone())
    }; // 4: a 405
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(headers["allow"].to_str().unwrap().contains("PUT"));
    // Not counted: unknown routes, the counter itself, db/clear, health.
    assert_error(
        &app.send(Method::GET, "/api/v1/nothing", None).await,
        StatusCode::NOT_FOUND,
    );
    app.send(Method::GET, "/health", None).await;
    assert_eq!(
        app.send(Method::GET, "/api/v1/_count", None).await,
        (StatusCode::OK, json!([4]))
    );
    app.stop().await;

    let app = spawn_app(Some(dir.path())).await;
    assert_eq!(
        app.send(Method::GET, "/api/v1/_count", None).await,
        (StatusCode::OK, json!([4]))
    );
    assert_eq!(
        app.send(Method::GET, "/api/v1/users", None).await,
        (StatusCode::OK, json!(["alice"])),
        "the data is kept in a given directory"
    );
    assert_eq!(
        app.send(Method::DELETE, "/api/v1/_count", None).await,
        (StatusCode::OK, json!({}))
    );
    assert_eq!(
        app.send(Method::GET, "/api/v1/_count", None).await.1,
        json!([0])
    );
    app.stop().await;
    let files: Vec<PathBuf> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(
        files.iter().any(|f| f.ends_with(baseline::DB_FILE)),
        "{files:?}"
    );
}
