//! The RideShare orchestrator: the HTTP database API (`db/write`, `db/read`, `db/clear`) in front of a cluster
//! of SQLite workers, and the control of that cluster (crash APIs, self-healing).
//!
//! A request never touches a database here: a write becomes a `Command` on the master's queue and a read a
//! `ReadRequest` on the slaves' queue, both as RabbitMQ RPCs over one long-lived connection. Whether a worker
//! could answer at all is decided from a cached view of ZooKeeper, so requests never wait on ZooKeeper; during
//! a failover they are retried within a deadline, then answered 503.
//!
//! One task, the supervisor, owns the cluster: it launches one at start when there is none, adopts the
//! running one after an orchestrator restart, restores it after the whole system stopped (from the registry
//! of copies in ZooKeeper and the positions the workers report, never reading a worker's disk, which may be on
//! another host), and replaces dead workers. The workers outlive the orchestrator unless told otherwise.
//!
//! Module map:
//! - [`config`]: the command line and environment ([`Config`]).
//! - [`http`]: routes and handlers.
//! - [`openapi`]: the API's OpenAPI document, served at `/api/openapi.json` (Swagger UI at `/api/docs`).
//! - [`extract`]: strict JSON bodies and `Idempotency-Key` validation.
//! - [`retry`]: the attempts of one request within its deadline.
//! - [`error`]: the HTTP [`Error`] type and its status codes.
//! - [`batch`]: concurrent reads and writes gathered into shared broker messages.
//! - [`rpc`]: the [`rpc::Rpc`] seam between the handlers and the broker crate's reconnecting RPC client.
//! - [`view`]: the cached ZooKeeper view ([`view::ClusterView`]) kept fresh by a watch, and removal of a dead
//!   worker's znodes ([`view::Registry`]).
//! - [`cluster`]: the [`ClusterHandle`] that the API and tests use to look at and change the cluster.
//! - [`supervisor`]: the task that owns the cluster's desired state and heals it.
//! - [`runtime`]: where workers run: the [`runtime::WorkerRuntime`] trait, processes on hosts (local
//!   processes are one host; [`runtime::hosts`]), and Docker containers ([`runtime::docker`]).
//! - [`admin`]: purging a namespace that a tool or a test is done with.
//! - [`events`]: the log of recent failovers, replacements, crash API calls, scaling decisions and restores,
//!   with the epochs seen, each also counted as a Prometheus metric.
//! - [`console`]: the operator console (`GET /console`) and the JSON it polls (`GET /api/v1/cluster`).

pub mod admin;
pub mod batch;
pub mod cluster;
pub mod config;
pub mod console;
pub mod error;
pub mod events;
pub mod extract;
pub mod http;
pub mod openapi;
pub mod retry;
pub mod rpc;
pub mod runtime;
pub mod scaling;
pub mod supervisor;
#[cfg(test)]
mod testing;
pub mod view;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use protocol::Names;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::task::AbortOnDropHandle;

pub use cluster::ClusterHandle;
pub use config::Config;
pub use error::Error;
pub use openapi::openapi;

/// How long a clean shutdown waits for the broker connection to close.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// A started orchestrator: connected to RabbitMQ and ZooKeeper, its supervisor running, not yet serving HTTP.
///
/// Dropping it without [`App::shutdown`] stops its tasks at once and leaves the workers running, as a killed
/// orchestrator would.
pub struct App {
    state: http::AppState,
    console: console::ConsoleState,
    rpc: rpc::ReconnectingRpc,
    cluster: ClusterHandle,
    rpc_task: AbortOnDropHandle<()>,
    /// Held for their drop: they stop with the App.
    _view_task: AbortOnDropHandle<()>,
    _supervisor_task: AbortOnDropHandle<()>,
    _scaler_task: AbortOnDropHandle<()>,
    _observer_task: AbortOnDropHandle<()>,
    stop_workers_on_shutdown: bool,
}

/// Connects to RabbitMQ and ZooKeeper and starts the supervisor, which brings the cluster to one master and
/// `initial_slaves` slaves: adopting the running workers, restarting the copies of stopped ones, or launching
/// new ones.
pub async fn start(config: Config) -> anyhow::Result<App> {
    // Before anything records: a gauge set once at start (the epoch, say) would otherwise be lost.
    telemetry::metrics::handle();
    let names = Names::new(&config.namespace);
    // Named after the namespace, so an operator (or a test) can tell the clusters' connections apart.
    let connection_name = format!("orchestrator-{}", names.namespace());
    let (rpc, rpc_task) =
        rpc::ReconnectingRpc::start(&config.amqp_url, &names, &connection_name).await?;
    let rpc_task = AbortOnDropHandle::new(rpc_task);
    let (view, registry, view_task) = view::spawn(&config.zk, names.clone()).await?;
    let events = events::Events::default();
    let view_task = AbortOnDropHandle::new(view_task);

    let (exits_tx, exits) = mpsc::unbounded_channel();
    // Tests ask for their workers to be stopped; then a test that panics before its shutdown must not leave
    // workers behind either.
    let kill_on_drop = config.stop_workers_on_shutdown;
    let hosts = config.hosts()?;
    let runtime: Arc<dyn runtime::WorkerRuntime> = match config.worker_runtime {
        config::WorkerRuntime::Process => Arc::new(runtime::hosts::Hosts::local(
            config.worker_bin()?,
            &config.data_dir,
            kill_on_drop,
            exits_tx,
        )),
        config::WorkerRuntime::Hosts => {
            Arc::new(runtime::hosts::Hosts::new(hosts, kill_on_drop, exits_tx)?)
        }
        config::WorkerRuntime::Docker => Arc::new(
            runtime::docker::DockerWorkers::connect(
                runtime::docker::DockerSettings {
                    image: config.worker_image.clone(),
                    network: config.docker_network.clone(),
                    data_volume: config.docker_data_volume.clone(),
                    data_dir: config.data_dir.clone(),
                    namespace: config.namespace.clone(),
                },
                exits_tx,
            )
            .await?,
        ),
        config::WorkerRuntime::Swarm => Arc::new(
            runtime::swarm::SwarmWorkers::connect(
                runtime::swarm::SwarmSettings {
                    image: config.worker_image.clone(),
                    network: config.docker_network.clone(),
                    namespace: config.namespace.clone(),
                    zk: config.zk.clone(),
                    node_label: config.swarm_node_label.clone(),
                },
                exits_tx,
            )
            .await?,
        ),
    };
    let max_slaves = match config.max_slaves {
        config::MaxSlaves::Fixed(n) => usize::try_from(n).unwrap_or(usize::MAX),
        config::MaxSlaves::Auto => {
            let cores = runtime.cores().await?;
            let ceiling = scaling::ceiling_for_cores(cores);
            tracing::info!(cores, ceiling, "slave ceiling from the workers' machine");
            ceiling
        }
    };
    let (cluster, supervisor_task) = supervisor::spawn(
        supervisor::Settings {
            template: cluster::WorkerTemplate {
                amqp_url: config.amqp_url.clone(),
                zk: config.zk.clone(),
                namespace: config.namespace.clone(),
            },
            initial_slaves: config.initial_slaves,
            self_healing: config.self_healing,
            events: events.clone(),
        },
        runtime,
        exits,
        view.clone(),
        registry,
    )
    .await?;

    let observer = view::observe::spawn(view.clone(), cluster.watch_target(), events.clone());
    let state = http::AppState::new(
        Arc::new(rpc.clone()),
        Arc::new(cluster.clone()),
        view,
        names,
        http::Timeouts {
            request: config.request_timeout(),
            write_deadline: config.write_deadline(),
            read_deadline: config.read_deadline(),
        },
    );
    let scaler = scaling::spawn(
        state.read_counter.clone(),
        cluster.clone(),
        config.scale_interval(),
        max_slaves,
        events.clone(),
    );
    let console = console::ConsoleState {
        view: state.view.clone(),
        events,
        control: state.control.clone(),
        read_counter: state.read_counter.clone(),
        scale_interval: config.scale_interval(),
    };
    Ok(App {
        state,
        console,
        rpc,
        cluster,
        _scaler_task: AbortOnDropHandle::new(scaler),
        _observer_task: AbortOnDropHandle::new(observer),
        rpc_task,
        _view_task: view_task,
        _supervisor_task: AbortOnDropHandle::new(supervisor_task),
        stop_workers_on_shutdown: config.stop_workers_on_shutdown,
    })
}

impl App {
    /// The HTTP API and the operator console, to serve or to call with `tower::ServiceExt::oneshot`.
    pub fn router(&self) -> axum::Router {
        http::router(self.state.clone()).merge(console::router(self.console.clone()))
    }

    pub fn cluster(&self) -> ClusterHandle {
        self.cluster.clone()
    }

    /// Serves the API on `listener` until `shutdown` completes, then shuts down.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        tracing::info!(
            "orchestrator listening on {}",
            listener.local_addr().context("reading the bound address")?
        );
        let cluster = self.cluster.clone();
        let stop_workers = self.stop_workers_on_shutdown;
        let shutdown = async move {
            shutdown.await;
            // The supervisor stops first, before requests drain: on Ctrl-C the whole process group, workers
            // included, is stopping, and workers replaced now would outlive the orchestrator.
            cluster.shutdown(stop_workers).await;
        };
        let served = axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown)
            .await
            .context("serving HTTP");
        self.shutdown().await?;
        served
    }

    /// Stops the supervisor (killing the workers if configured), closes the broker connection and stops the
    /// background tasks.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        self.cluster.shutdown(self.stop_workers_on_shutdown).await;
        self.rpc.close();
        if tokio::time::timeout(CLOSE_TIMEOUT, &mut self.rpc_task)
            .await
            .is_err()
        {
            tracing::warn!("the RabbitMQ connection did not close in time");
        }
        Ok(())
    }
}

/// Starts the orchestrator and serves on `listener` until `shutdown` completes.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    start(config).await?.serve(listener, shutdown).await
}
