//! The RideShare orchestrator: the HTTP database API (`db/write`, `db/read`, `db/clear`) in front of a cluster
//! of SQLite workers, and the control of that cluster.
//!
//! A request never touches a database here: a write becomes a `Command` on the master's queue and a read a
//! `ReadRequest` on the slaves' queue, both as RabbitMQ RPCs over one long-lived connection. Whether a worker
//! could answer at all is decided from a cached view of ZooKeeper, so requests fail fast with 503 when there is
//! no master or no slave in sync, and never wait on ZooKeeper. At start, if ZooKeeper shows no cluster in the
//! namespace, the orchestrator launches one master and `initial_slaves` slaves.
//!
//! Module map:
//! - [`config`]: the command line and environment ([`Config`]).
//! - [`http`]: routes, handlers, strict JSON bodies, `Idempotency-Key` validation.
//! - [`error`]: the HTTP [`Error`] type and its status codes.
//! - [`rpc`]: request/reply over RabbitMQ with direct reply-to ([`rpc::AmqpRpc`]).
//! - [`view`]: the cached ZooKeeper view ([`view::ClusterView`]) kept fresh by a watch.
//! - [`cluster`]: the [`ClusterHandle`] that starts, lists and kills workers.
//! - [`runtime`]: where workers run: the [`runtime::WorkerRuntime`] trait and local child processes.

pub mod cluster;
pub mod config;
pub mod error;
pub mod http;
pub mod rpc;
pub mod runtime;
pub mod view;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use protocol::Names;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use cluster::ClusterHandle;
pub use config::Config;
pub use error::Error;

/// How long to wait for RabbitMQ at start: long enough for a broker that is still booting, short enough that a
/// missing broker is reported rather than waited on forever.
const AMQP_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A started orchestrator: connected to RabbitMQ and ZooKeeper, its workers launched, not yet serving HTTP.
pub struct App {
    state: http::AppState,
    rpc: rpc::AmqpRpc,
    cluster: ClusterHandle,
    /// Kept so it can be closed cleanly at shutdown; the RPC channel lives on it.
    connection: Connection,
    view_task: JoinHandle<()>,
    stop_workers_on_shutdown: bool,
}

/// Connects to RabbitMQ and ZooKeeper, declares the queues, and launches a cluster (one master,
/// `initial_slaves` slaves) when ZooKeeper shows none.
pub async fn start(config: Config) -> anyhow::Result<App> {
    let names = Names::new(&config.namespace);

    let connection = tokio::time::timeout(
        AMQP_CONNECT_TIMEOUT,
        Connection::connect(
            &config.amqp_url,
            ConnectionProperties::default().with_connection_name("orchestrator".into()),
        ),
    )
    .await
    .with_context(|| format!("timed out connecting to RabbitMQ at {}", config.amqp_url))?
    .with_context(|| format!("connecting to RabbitMQ at {}", config.amqp_url))?;
    declare_queues(&connection, &names).await?;
    let rpc = rpc::AmqpRpc::start(&connection).await?;

    let (view, view_task) = view::spawn(&config.zk, names.clone()).await?;

    let runtime = runtime::LocalProcesses::new(
        config.worker_bin()?,
        // Tests ask for their workers to be stopped; then a test that panics before its shutdown must not
        // leave workers behind either.
        config.stop_workers_on_shutdown,
    );
    let cluster = ClusterHandle::new(
        Arc::new(runtime),
        view.clone(),
        cluster::WorkerTemplate {
            data_dir: config.data_dir.clone(),
            amqp_url: config.amqp_url.clone(),
            zk: config.zk.clone(),
            namespace: config.namespace.clone(),
        },
    );

    let current = cluster.view();
    if current.master.is_none() && current.workers.is_empty() {
        tracing::info!(
            namespace = %config.namespace,
            slaves = config.initial_slaves,
            "no cluster in ZooKeeper; launching one"
        );
        cluster.start_master().await?;
        for _ in 0..config.initial_slaves {
            cluster.start_slave().await?;
        }
    } else if current.master.is_none() {
        // Workers without a master: an election is under way (or the master just died). Launching a fresh
        // master now would race the elected one, so leave the cluster to heal itself.
        tracing::warn!(
            workers = current.workers.len(),
            "workers are registered but there is no master; not launching a cluster"
        );
    } else {
        tracing::info!(
            workers = current.workers.len(),
            "found a running cluster in ZooKeeper; adopting it"
        );
    }

    let state = http::AppState {
        rpc: Arc::new(rpc.clone()),
        view,
        names,
        request_timeout: config.request_timeout(),
    };
    Ok(App {
        state,
        rpc,
        cluster,
        connection,
        view_task,
        stop_workers_on_shutdown: config.stop_workers_on_shutdown,
    })
}

/// Declares the queues requests go to, exactly as the workers declare them, so a request published before any
/// worker runs waits in its queue instead of being dropped by the broker.
async fn declare_queues(connection: &Connection, names: &Names) -> anyhow::Result<()> {
    let channel = connection
        .create_channel()
        .await
        .context("opening a channel")?;
    for queue in [names.write_queue(), names.read_queue()] {
        channel
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions {
                    durable: true,
                    exclusive: false,
                    auto_delete: false,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .with_context(|| format!("declaring queue {queue}"))?;
    }
    channel
        .close(200, "declared".into())
        .await
        .context("closing the declaring channel")?;
    Ok(())
}

impl App {
    /// The HTTP API, to serve or to call with `tower::ServiceExt::oneshot`.
    pub fn router(&self) -> axum::Router {
        http::router(self.state.clone())
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
        let served = axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown)
            .await
            .context("serving HTTP");
        self.shutdown().await?;
        served
    }

    /// Stops the background tasks, closes the broker connection and, if configured, kills the workers this
    /// orchestrator started.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        if self.stop_workers_on_shutdown {
            self.cluster
                .kill_all()
                .await
                .context("stopping the workers")?;
        }
        self.view_task.abort();
        self.rpc.expect_close();
        if let Err(e) = self.connection.close(200, "shutting down".into()).await {
            tracing::warn!("closing the RabbitMQ connection: {e}");
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
