//! What is measured: a cluster started in this process, or an orchestrator already running.

use std::time::{Duration, Instant};

use anyhow::Context;
use protocol::{Role, WorkerInfo};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::load;

/// How long a new cluster may take to have its master and every slave in sync.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// How long deleting a finished run's queues and znodes may take.
const PURGE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the in-process orchestrator may take to stop its workers and return.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(20);

pub struct Target {
    /// Base URL of the orchestrator, without a trailing slash.
    pub url: String,
    /// The orchestrator's pid when known: this process for an in-process cluster.
    pub orchestrator_pid: Option<u32>,
    in_process: Option<InProcess>,
}

struct InProcess {
    namespace: String,
    amqp_url: String,
    zk: String,
    shutdown: oneshot::Sender<()>,
    task: JoinHandle<anyhow::Result<()>>,
    /// The workers' data; deleted when the benchmark ends.
    _data_dir: tempfile::TempDir,
}

impl Target {
    pub fn remote(url: &str, orchestrator_pid: Option<u32>) -> Self {
        Self {
            url: url.trim_end_matches('/').to_owned(),
            orchestrator_pid,
            in_process: None,
        }
    }

    /// Starts an orchestrator in this process on a free loopback port, with a namespace of its own, and waits
    /// until its master and `slaves` slaves are in sync.
    pub async fn start(config: &Config, slaves: u32) -> anyhow::Result<Self> {
        let data_dir = tempfile::Builder::new()
            .prefix("dbbench-")
            .tempdir()
            .context("creating a data directory")?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding a port for the orchestrator")?;
        let addr = listener.local_addr()?;
        let namespace = format!("dbbench-{}", uuid::Uuid::new_v4().simple());

        let mut oc = orchestrator::Config::defaults();
        oc.listen = addr;
        oc.amqp_url = config.amqp_url.clone();
        oc.zk = config.zk.clone();
        oc.namespace = namespace.clone();
        oc.data_dir = data_dir.path().to_owned();
        oc.worker_bin = config.worker_bin.clone();
        oc.initial_slaves = slaves as usize;
        oc.stop_workers_on_shutdown = true;
        let worker_bin = oc.worker_bin()?;
        anyhow::ensure!(
            worker_bin.is_file(),
            "no worker binary at {}: build it first (cargo build --release -p worker) or pass --worker-bin",
            worker_bin.display()
        );

        let (shutdown, shutdown_rx) = oneshot::channel::<()>();
        let task = tokio::spawn(orchestrator::run(listener, oc, async {
            let _ = shutdown_rx.await;
        }));
        let target = Self {
            url: format!("http://{addr}"),
            orchestrator_pid: Some(std::process::id()),
            in_process: Some(InProcess {
                namespace,
                amqp_url: config.amqp_url.clone(),
                zk: config.zk.clone(),
                shutdown,
                task,
                _data_dir: data_dir,
            }),
        };
        if let Err(e) = target.wait_ready(slaves).await {
            target.stop().await.ok();
            return Err(e);
        }
        Ok(target)
    }

    pub fn describe(&self) -> String {
        match &self.in_process {
            Some(p) => format!(
                "in-process orchestrator at {}, namespace {}",
                self.url, p.namespace
            ),
            None => format!("orchestrator at {}", self.url),
        }
    }

    /// Polls `GET /api/v1/workers` until there is a master and `slaves` slaves in sync.
    async fn wait_ready(&self, slaves: u32) -> anyhow::Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(p) = &self.in_process {
                anyhow::ensure!(
                    !p.task.is_finished(),
                    "the orchestrator stopped during start-up"
                );
            }
            let last = match self.workers().await {
                Ok(workers) => {
                    let masters = workers.iter().filter(|w| w.role == Role::Master).count();
                    let in_sync = workers
                        .iter()
                        .filter(|w| w.role == Role::Slave && w.in_sync)
                        .count();
                    if masters == 1 && in_sync == slaves as usize {
                        return Ok(());
                    }
                    format!("{masters} master(s), {in_sync} slave(s) in sync")
                }
                Err(e) => format!("{e:#}"),
            };
            anyhow::ensure!(
                Instant::now() < deadline,
                "the cluster was not ready (a master and {slaves} slave(s) in sync) within {READY_TIMEOUT:?}: {last}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The cluster's workers, from `GET /api/v1/workers`.
    pub async fn workers(&self) -> anyhow::Result<Vec<WorkerInfo>> {
        let response = load::client()?
            .get(format!("{}/api/v1/workers", self.url))
            .send()
            .await
            .context("GET /api/v1/workers")?;
        let status = response.status();
        anyhow::ensure!(
            status == reqwest::StatusCode::OK,
            "GET /api/v1/workers: {status}"
        );
        response.json().await.context("reading the worker list")
    }

    /// Stops an in-process orchestrator and its workers; nothing to do for a remote one.
    pub async fn stop(self) -> anyhow::Result<()> {
        let Some(p) = self.in_process else {
            return Ok(());
        };
        let _ = p.shutdown.send(());
        let stopped = tokio::time::timeout(SHUTDOWN_TIMEOUT, p.task)
            .await
            .context("the orchestrator did not stop in time")
            .and_then(|joined| joined.context("the orchestrator panicked")?);
        // The namespace was this run's alone: its queues and znodes would otherwise pile up on the shared
        // broker and ZooKeeper, one set per run.
        orchestrator::admin::purge_namespace(
            &p.amqp_url,
            &p.zk,
            &protocol::Names::new(&p.namespace),
            PURGE_TIMEOUT,
        )
        .await;
        stopped
    }
}
