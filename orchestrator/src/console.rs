//! The operator console: `GET /console`, a page that polls the orchestrator every second, and the JSON it
//! reads, `GET /api/v1/cluster`.
//!
//! The page is plain HTML, CSS and JavaScript in `orchestrator/console/`, compiled into the binary (no build
//! step, nothing fetched from elsewhere). It draws the request rate and p99 latency from the orchestrator's
//! Prometheus text at `GET /metrics` when that answers, and says "no metrics" when it does not.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use protocol::Role;
use serde::Serialize;
use tokio::sync::watch;

use crate::cluster::Control;
use crate::events::{EpochSeen, Event, Events, WorkerRef};
use crate::scaling::{ReadCounter, READS_PER_SLAVE};
use crate::view::ClusterView;

const INDEX_HTML: &str = include_str!("../console/index.html");
const CONSOLE_JS: &str = include_str!("../console/console.js");
const CONSOLE_CSS: &str = include_str!("../console/console.css");

/// What the console's routes read; cheap to clone.
#[derive(Clone)]
pub struct ConsoleState {
    pub view: watch::Receiver<ClusterView>,
    pub events: Events,
    pub control: Arc<dyn Control>,
    pub read_counter: Arc<ReadCounter>,
    pub scale_interval: Duration,
}

/// The console's routes, to merge into the API's router (it has no fallback of its own).
pub fn router(state: ConsoleState) -> Router {
    Router::new()
        .route("/api/v1/cluster", get(cluster))
        .route("/console", get(index))
        .route("/console/", get(index))
        .route("/console/console.js", get(script))
        .route("/console/console.css", get(style))
        // As on every other route: a wrong method is a JSON 405 with `Allow`, and each request is counted and
        // carries its id (`telemetry::layer`).
        .method_not_allowed_fallback(|| async { crate::Error::MethodNotAllowed })
        .layer(axum::middleware::from_fn(telemetry::layer))
        .with_state(state)
}

async fn index() -> impl IntoResponse {
    static_file("text/html; charset=utf-8", INDEX_HTML)
}

async fn script() -> impl IntoResponse {
    static_file("text/javascript; charset=utf-8", CONSOLE_JS)
}

async fn style() -> impl IntoResponse {
    static_file("text/css; charset=utf-8", CONSOLE_CSS)
}

fn static_file(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    // `no-cache`: revalidated at each load, so a new orchestrator's console is never mixed with an old one's.
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}

/// The body of `GET /api/v1/cluster` (ext): the cluster as this orchestrator sees it, for the console.
///
/// ```json
/// {
///   "at_ms": 1764759600000,
///   "epoch": 2,
///   "master": {"id": "w-1a2b3c4d", "pid": 4242},
///   "healthy": true,
///   "workers": [
///     {"id": "w-1a2b3c4d", "pid": 4242, "host": "local", "role": "master", "in_sync": true,
///      "candidate": false, "applied_seq": 17, "lag": 0, "lease": "master"},
///     {"id": "w-5e6f7a8b", "pid": 4310, "host": "local", "role": "slave", "in_sync": true,
///      "candidate": true, "applied_seq": 17, "lag": 0, "lease": "serving"}
///   ],
///   "epochs": [{"epoch": 2, "master": {"id": "w-1a2b3c4d", "pid": 4242}, "since_ms": 1764759590000}],
///   "events": [{"seq": 3, "at_ms": 1764759590000, "kind": "failover", "epoch": 2, "from_epoch": 1,
///               "from": {"id": "w-0f0f0f0f", "pid": 4100}, "to": {"id": "w-1a2b3c4d", "pid": 4242},
///               "reason": "master changed: ..."}],
///   "scaling": {"desired": 1, "actual": 1, "in_sync": 1, "reads_this_interval": 5, "interval_secs": 120,
///               "reads_per_slave": 20}
/// }
/// ```
///
/// - `at_ms`: this orchestrator's wall clock when it answered (ms since the Unix epoch), as every `*_ms`.
/// - `epoch`, `master`: the master's znode; `null` while there is none (between a death and an election).
/// - `healthy`: a master and a slave in sync, so both reads and writes are served.
/// - `workers`: every registered worker, the master first, then by ascending pid. `host` is where its copy
///   lives, from the registry of copies (`null` if it has no record there); `in_sync`: in the current master's
///   in-sync set (the master counts as in sync); `candidate`: standing in the election; `applied_seq` and `lag`
///   (the master's `applied_seq` minus its own; `null` without a master) come from the records the workers
///   refresh every second. `lease` is *derived*: the orchestrator does not see the slaves' read leases, only
///   what they imply in ZooKeeper: `master` (the master znode names it), `serving` (in the current master's
///   in-sync set and standing as a candidate: it has heard from this master that it is in sync, so it serves
///   reads under a lease from it), `in_sync_not_standing` (in the set but not standing yet: it may not know,
///   and then serves no reads), `not_in_sync` (catching up or left out: serves no reads).
/// - `epochs`: the epochs this orchestrator has seen begin, newest first (at most
///   [`crate::events::EPOCHS_KEPT`]); `since_ms` is when it first saw each.
/// - `events`: the recent events, newest first (at most [`crate::events::EVENTS_KEPT`]); `kind` is one of
///   `failover`, `replacement`, `crash`, `scaling`, `restore`, with its own fields (see [`crate::events::What`])
///   and a `reason` in words.
/// - `scaling`: as `GET /api/v1/scaling`, with the interval and the reads each slave is counted for.
#[derive(Debug, Serialize)]
pub struct ClusterState {
    pub at_ms: u64,
    pub epoch: Option<u64>,
    pub master: Option<WorkerRef>,
    pub healthy: bool,
    pub workers: Vec<WorkerRow>,
    pub epochs: Vec<EpochSeen>,
    pub events: Vec<Event>,
    pub scaling: ScalingFigures,
}

/// One worker of [`ClusterState`].
#[derive(Debug, Serialize)]
pub struct WorkerRow {
    pub id: String,
    pub pid: u32,
    pub host: Option<String>,
    pub role: Role,
    pub in_sync: bool,
    pub candidate: bool,
    pub applied_seq: u64,
    pub lag: Option<u64>,
    pub lease: LeaseState,
}

/// What the orchestrator can tell of a worker's lease from ZooKeeper (see [`ClusterState`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaseState {
    Master,
    Serving,
    InSyncNotStanding,
    NotInSync,
}

#[derive(Debug, Serialize)]
pub struct ScalingFigures {
    pub desired: usize,
    pub actual: usize,
    pub in_sync: usize,
    pub reads_this_interval: u64,
    pub interval_secs: u64,
    pub reads_per_slave: u64,
}

/// The workers of `view` as the console shows them.
pub fn worker_rows(view: &ClusterView) -> Vec<WorkerRow> {
    let members = view.in_sync_members();
    let mut rows: Vec<WorkerRow> = view
        .workers
        .values()
        .map(|w| {
            let role = view.role_of(w);
            let member = members.contains(&w.id);
            let candidate = view.candidates.contains(&w.id);
            let lease = match role {
                Role::Master => LeaseState::Master,
                Role::Slave if member && candidate => LeaseState::Serving,
                Role::Slave if member => LeaseState::InSyncNotStanding,
                Role::Slave => LeaseState::NotInSync,
            };
            WorkerRow {
                id: w.id.clone(),
                pid: w.pid,
                host: view.copies.get(&w.id).map(|c| c.host.clone()),
                role,
                in_sync: role == Role::Master || member,
                candidate,
                applied_seq: w.applied_seq,
                lag: view.lag_of(w),
                lease,
            }
        })
        .collect();
    rows.sort_by_key(|w| (w.role != Role::Master, w.pid));
    rows
}

async fn cluster(State(state): State<ConsoleState>) -> Json<ClusterState> {
    let view = state.view.borrow().clone();
    let workers = worker_rows(&view);
    let slaves = workers.iter().filter(|w| w.role == Role::Slave);
    let scaling = ScalingFigures {
        desired: state.control.target_slaves(),
        actual: slaves.clone().count(),
        in_sync: slaves.filter(|w| w.in_sync).count(),
        reads_this_interval: state.read_counter.current(),
        interval_secs: state.scale_interval.as_secs(),
        reads_per_slave: READS_PER_SLAVE,
    };
    let at_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    Json(ClusterState {
        at_ms,
        epoch: view.master.as_ref().map(|m| m.epoch),
        master: view.master.as_ref().map(|m| WorkerRef {
            id: m.id.clone(),
            pid: m.pid,
        }),
        healthy: view.is_healthy(),
        workers,
        epochs: state.events.epochs(),
        events: state.events.recent(),
        scaling,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use axum::http::{Method, StatusCode};
    use futures::future::BoxFuture;
    use protocol::coord::{CopyRecord, InSyncSet, MasterRecord, WorkerRecord};

    use super::*;
    use crate::events::What;
    use crate::testing::send;

    struct Keeps(usize);

    impl Control for Keeps {
        fn crash(&self, _role: Role) -> BoxFuture<'_, anyhow::Result<Option<u32>>> {
            Box::pin(async { Ok(None) })
        }

        fn target_slaves(&self) -> usize {
            self.0
        }
    }

    /// A master `m`, slaves `a` (in sync, standing), `b` (in sync, not standing) and `c` (catching up).
    fn view() -> ClusterView {
        let record = |id: &str, pid, role, applied_seq| WorkerRecord {
            id: id.into(),
            pid,
            role,
            epoch: 3,
            applied_seq,
        };
        let workers = BTreeMap::from([
            ("m".to_owned(), record("m", 40, Role::Master, 9)),
            ("a".to_owned(), record("a", 20, Role::Slave, 9)),
            ("b".to_owned(), record("b", 30, Role::Slave, 8)),
            ("c".to_owned(), record("c", 10, Role::Slave, 2)),
        ]);
        let copies = ["m", "a", "b"]
            .iter()
            .map(|id| {
                let host = CopyRecord {
                    host: format!("host-{id}"),
                };
                ((*id).to_owned(), host)
            })
            .collect();
        ClusterView {
            master: Some(MasterRecord {
                id: "m".into(),
                pid: 40,
                epoch: 3,
            }),
            in_sync: Some(InSyncSet {
                epoch: 3,
                master: "m".into(),
                members: vec!["a".into(), "b".into()],
            }),
            workers,
            candidates: ["a".to_owned()].into(),
            copies,
        }
    }

    fn app(view: ClusterView, events: Events) -> Router {
        let (_, rx) = watch::channel(view);
        let read_counter = Arc::new(ReadCounter::default());
        read_counter.record();
        router(ConsoleState {
            view: rx,
            events,
            control: Arc::new(Keeps(2)),
            read_counter,
            scale_interval: Duration::from_secs(120),
        })
    }

    #[test]
    fn the_lease_state_follows_from_the_in_sync_set_and_the_candidacy() {
        let rows: Vec<String> = worker_rows(&view())
            .iter()
            .map(|w| {
                let host = w.host.as_deref().unwrap_or("-");
                let sync = if w.in_sync { "in sync" } else { "behind" };
                format!(
                    "{} {:?} {host} {sync} lag {:?} {:?}",
                    w.id, w.role, w.lag, w.lease
                )
            })
            .collect();
        assert_eq!(
            rows,
            [
                "m Master host-m in sync lag Some(0) Master",
                "c Slave - behind lag Some(7) NotInSync",
                "a Slave host-a in sync lag Some(0) Serving",
                "b Slave host-b in sync lag Some(1) InSyncNotStanding",
            ]
        );
    }

    #[tokio::test]
    async fn the_cluster_route_shows_workers_epochs_events_and_scaling() {
        let events = Events::default();
        events.epoch_seen(
            3,
            WorkerRef {
                id: "m".into(),
                pid: 40,
            },
        );
        events.record(
            What::Crash {
                role: Role::Master,
                killed: None,
            },
            "crash API: there is no master to kill",
        );
        let (status, content_type, body) =
            send(&app(view(), events), Method::GET, "/api/v1/cluster").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(content_type, "application/json");
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json["epoch"], 3);
        assert_eq!(json["master"]["pid"], 40);
        assert_eq!(json["healthy"], true);
        assert_eq!(json["workers"].as_array().unwrap().len(), 4);
        assert_eq!(json["workers"][0]["role"], "master");
        assert_eq!(json["workers"][2]["lease"], "serving");
        assert_eq!(json["workers"][2]["candidate"], true);
        assert_eq!(json["epochs"][0]["master"]["id"], "m");
        assert_eq!(json["events"][0]["kind"], "crash");
        assert_eq!(
            json["scaling"],
            serde_json::json!({"desired": 2, "actual": 3, "in_sync": 2, "reads_this_interval": 1,
                               "interval_secs": 120, "reads_per_slave": 20})
        );
    }

    #[tokio::test]
    async fn without_a_master_the_epoch_is_null_and_nothing_is_healthy() {
        let mut v = view();
        v.master = None;
        let (_, _, body) = send(&app(v, Events::default()), Method::GET, "/api/v1/cluster").await;
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json["epoch"], serde_json::Value::Null);
        assert_eq!(json["healthy"], false);
        assert_eq!(json["workers"][0]["lag"], serde_json::Value::Null);
    }

    #[tokio::test]
    async fn the_console_and_its_files_are_served_with_their_types() {
        for (uri, kind, needle) in [
            ("/console", "text/html", "console.js"),
            ("/console/", "text/html", "console.css"),
            ("/console/console.js", "text/javascript", "/api/v1/cluster"),
            ("/console/console.css", "text/css", "{"),
        ] {
            let (status, content_type, body) =
                send(&app(view(), Events::default()), Method::GET, uri).await;
            assert_eq!(status, StatusCode::OK, "{uri}");
            assert!(content_type.starts_with(kind), "{uri}: {content_type}");
            assert!(body.contains(needle), "{uri}");
        }
    }

    #[tokio::test]
    async fn a_wrong_method_is_a_json_405_with_allow() {
        let app = app(view(), Events::default());
        for uri in ["/api/v1/cluster", "/console"] {
            let request = axum::extract::Request::builder()
                .method(Method::POST)
                .uri(uri)
                .body(axum::body::Body::from("{}"))
                .unwrap();
            let response = tower::ServiceExt::oneshot(app.clone(), request)
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED, "{uri}");
            assert!(
                response.headers()["allow"]
                    .to_str()
                    .unwrap()
                    .contains("GET"),
                "{uri}"
            );
            let body = axum::body::to_bytes(response.into_body(), 1 << 16)
                .await
                .unwrap();
            let body: serde_json::Value = serde_json::from_slice(&body).expect("a JSON body");
            assert!(body["error"].is_string(), "{uri}: {body}");
        }
    }
}
