//! Workers as Docker Swarm services: each worker is a service of one replica, `<namespace>-worker-<id>`,
//! pinned to one node of the swarm, with its copy of the database in a volume local to that node,
//! `<namespace>-copy-<id>`, mounted at `/data`.
//!
//! The runtime's hosts are the swarm's nodes that may run workers (ready, availability `active`, and carrying
//! the label `--swarm-node-label` when one is given), named by node id: an id never changes while a node is in
//! the swarm, where a host name may be shared. Which node gets a new copy is the supervisor's placement
//! (`supervisor::place`: a node without a worker first, then the one with fewest), carried out with the
//! placement constraint `node.id==<id>`; a copy never moves, so a worker restarted on its copy goes back to
//! the node that holds its volume. Swarm's own rescheduling is off (restart condition `none`): a worker that
//! ends is the supervisor's to replace, as with every runtime, and a task moved to another node would start
//! on an empty volume.
//!
//! The pid a worker reports is its task's container's main process as its node sees it (the task status's
//! `ContainerStatus.PID`), as the contract asks. It is known only once the task runs, and the worker's volume
//! may be on another node, so the runtime hands it over in ZooKeeper (`/<namespace>/host-pids/<id>`) and the
//! worker waits for it before it registers (`--host-pid-from-zk`).
//!
//! What one engine can and cannot do: the orchestrator speaks to the Docker engine of a manager node. Swarm
//! has no API to signal a task, so a worker on the orchestrator's own node is signalled through that engine
//! (SIGKILL for `kill`, SIGTERM for `terminate`), and one on another node is stopped by removing its service,
//! which Swarm carries out with SIGTERM, then SIGKILL after the service's stop grace period. A volume is
//! removed through the engine of its node: only copies on the orchestrator's node are deleted, one on another
//! node stays in the registry (and is named in a warning) until it is removed there. Task ends are seen by
//! listing the namespace's worker tasks every [`POLL`]: Swarm sends no event for a task.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use bollard::models::{
    EndpointSpec, EndpointSpecModeEnum, HealthConfig, Mount, MountType, NetworkAttachmentConfig,
    Node, NodeSpecAvailabilityEnum, NodeState, ServiceSpec, ServiceSpecMode,
    ServiceSpecModeReplicated, Task, TaskSpec, TaskSpecContainerSpec, TaskSpecPlacement,
    TaskSpecRestartPolicy, TaskSpecRestartPolicyConditionEnum, TaskState,
};
use bollard::query_parameters::{
    KillContainerOptions, ListContainersOptions, ListNodesOptions, ListTasksOptions,
    RemoveVolumeOptions,
};
use bollard::Docker;
use futures::future::BoxFuture;
use protocol::Names;
use tokio::sync::{mpsc, watch};
use tokio_util::task::AbortOnDropHandle;

use super::docker::{role_name, status_of};
use super::{Exited, WorkerProcess, WorkerRuntime, WorkerSpec};

/// Labels on every worker service and its volume: who they belong to (`docker service ls --filter
/// label=org.rideshare.namespace=<ns>`).
const LABEL_NAMESPACE: &str = "org.rideshare.namespace";
const LABEL_WORKER: &str = "org.rideshare.worker-id";

/// Where a worker's volume is mounted in its container: the worker image's data directory.
const DATA_DIR: &str = "/data";

/// How often the tasks of the watched workers, and the swarm's nodes, are listed.
const POLL: Duration = Duration::from_millis(250);

/// How often the list of nodes is refreshed, in polls.
const NODES_EVERY: u32 = 20;

/// How long a new service may take to have its task running (the image is on the node: nothing is pulled).
const START_WAIT: Duration = Duration::from_secs(60);

/// How long `kill` waits for a killed worker's task to be seen ended.
const KILL_WAIT: Duration = Duration::from_secs(30);

/// The time Swarm gives a worker between SIGTERM and SIGKILL when its service is removed: a retiring slave
/// leaves the in-sync set within its reads' time (the supervisor kills it after 5 s anyway).
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Where worker services run.
#[derive(Debug, Clone)]
pub struct SwarmSettings {
    /// The worker image, present on every node that may run workers (nothing is pulled).
    pub image: String,
    /// The network the tasks join: an overlay network of the swarm (where RabbitMQ and ZooKeeper are found by
    /// name), or `host` to share each node's network.
    pub network: String,
    pub namespace: String,
    /// ZooKeeper, where host pids are handed to the workers.
    pub zk: String,
    /// `KEY=VALUE`: only nodes with this label (`docker node update --label-add KEY=VALUE`) run workers.
    pub node_label: Option<(String, String)>,
}

/// A node that may run workers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwarmNode {
    pub id: String,
    pub hostname: String,
    pub cpus: usize,
}

pub struct SwarmWorkers {
    docker: Docker,
    settings: SwarmSettings,
    names: Names,
    /// The node whose engine this runtime speaks to.
    local_node: String,
    /// The nodes that may run workers, as last listed.
    nodes: Arc<Mutex<Vec<SwarmNode>>>,
    /// `std::sync::Mutex`: held only to read or change the map, never across an `.await`.
    workers: Arc<Mutex<HashMap<String, Handle>>>,
    /// Lists the tasks and reports the ends (see [`poll`]).
    _poller: AbortOnDropHandle<()>,
}

#[derive(Clone)]
struct Handle {
    pid: u32,
    /// The service's name (`<namespace>-worker-<id>`).
    service: String,
    task: String,
    container: String,
    node: String,
    /// Turns true once the task has ended and the worker left the map.
    gone: watch::Receiver<bool>,
    /// Held by the map; dropped (after sending `true`) by the poller.
    ended: Arc<watch::Sender<bool>>,
}

impl SwarmWorkers {
    /// Connects to the Docker engine (`DOCKER_HOST`, else its local socket), which must be a manager of a
    /// swarm, and lists the nodes that may run workers (at least one).
    pub async fn connect(
        settings: SwarmSettings,
        exits: mpsc::UnboundedSender<Exited>,
    ) -> anyhow::Result<Self> {
        let docker = Docker::connect_with_defaults()
            .context("connecting to the Docker daemon")?
            .negotiate_version()
            .await
            .context("asking the Docker daemon for its API version")?;
        let info = docker
            .info()
            .await
            .context("asking Docker about its swarm")?;
        let swarm = info.swarm.unwrap_or_default();
        anyhow::ensure!(
            swarm.control_available.unwrap_or(false),
            "the Swarm runtime needs the Docker engine of a swarm manager (`docker swarm init`, or DOCKER_HOST \
             naming a manager)"
        );
        let local_node = swarm
            .node_id
            .filter(|id| !id.is_empty())
            .context("Docker did not say which swarm node it is")?;
        let nodes = list_nodes(&docker, settings.node_label.as_ref()).await?;
        anyhow::ensure!(
            !nodes.is_empty(),
            "no swarm node may run workers (ready, active{})",
            match &settings.node_label {
                Some((k, v)) => format!(", labelled {k}={v}"),
                None => String::new(),
            }
        );
        tracing::info!(
            nodes = ?nodes.iter().map(|n| format!("{} ({})", n.id, n.hostname)).collect::<Vec<_>>(),
            local = %local_node,
            "swarm nodes for workers"
        );
        let names = Names::new(&settings.namespace);
        let nodes = Arc::new(Mutex::new(nodes));
        let workers: Arc<Mutex<HashMap<String, Handle>>> = Arc::default();
        let poller = AbortOnDropHandle::new(tokio::spawn(poll(
            docker.clone(),
            settings.namespace.clone(),
            settings.node_label.clone(),
            nodes.clone(),
            workers.clone(),
            exits,
        )));
        Ok(Self {
            docker,
            settings,
            names,
            local_node,
            nodes,
            workers,
            _poller: poller,
        })
    }

    fn service_name(&self, id: &str) -> String {
        service_name(&self.settings.namespace, id)
    }

    fn volume_name(&self, id: &str) -> String {
        volume_name(&self.settings.namespace, id)
    }

    /// The service's tasks; `None` when there is no such service (asked first, since the engine refuses a task
    /// list filtered by a service that does not exist).
    async fn tasks_of(&self, service: &str) -> anyhow::Result<Option<Vec<Task>>> {
        match self.docker.inspect_service(service, None).await {
            Ok(_) => list_tasks(&self.docker, "service", service).await.map(Some),
            Err(e) if status_of(&e) == Some(404) => Ok(None),
            Err(e) => Err(e).with_context(|| format!("inspecting service {service}")),
        }
    }

    async fn remove_service(&self, service: &str) -> anyhow::Result<()> {
        remove_service(&self.docker, service).await
    }

    async fn spawn(&self, spec: WorkerSpec) -> anyhow::Result<WorkerProcess> {
        anyhow::ensure!(
            self.nodes
                .lock()
                .expect("nodes poisoned")
                .iter()
                .any(|n| n.id == spec.host),
            "worker {} belongs on node {:?}, which may not run workers now",
            spec.id,
            spec.host
        );
        let service = self.service_name(&spec.id);
        // An ended service of an earlier run may still hold the name (its orchestrator died before removing
        // it). The supervisor never starts a worker whose id runs anywhere, so one that runs is a bug to report.
        if let Some(tasks) = self.tasks_of(&service).await? {
            anyhow::ensure!(
                !tasks.iter().any(is_live),
                "service {service} already runs a task"
            );
            self.remove_service(&service).await?;
        }
        // A pid left by an earlier start must not be read by this one.
        let pid_path = self.names.zk_host_pid(&spec.id);
        host_pid(&self.settings.zk, &self.names, &pid_path, None).await?;

        let body = self.service_spec(&spec);
        self.docker
            .create_service(body, None)
            .await
            .with_context(|| format!("creating service {service}"))?;
        let running = match self.wait_running(&service).await {
            Ok(running) => running,
            Err(e) => {
                let _ = self.remove_service(&service).await;
                return Err(e);
            }
        };
        if let Err(e) = host_pid(&self.settings.zk, &self.names, &pid_path, Some(running.pid)).await
        {
            let _ = self.remove_service(&service).await;
            return Err(e);
        }
        let pid = running.pid;
        let node = running.node.clone();
        self.watch(spec.id.clone(), service.clone(), running);
        tracing::info!(worker = %spec.id, pid, role = role_name(spec.role), %service, %node,
            "worker service started");
        Ok(WorkerProcess { id: spec.id, pid })
    }

    fn service_spec(&self, spec: &WorkerSpec) -> ServiceSpec {
        let labels = HashMap::from([
            (LABEL_NAMESPACE.to_owned(), spec.namespace.clone()),
            (LABEL_WORKER.to_owned(), spec.id.clone()),
        ]);
        // In the environment rather than on the command line: the image's health check reads the broker and
        // ZooKeeper addresses from there too.
        let mut env = vec![
            format!("RIDESHARE_WORKER_ID={}", spec.id),
            format!("RIDESHARE_DATA_DIR={DATA_DIR}"),
            format!("RIDESHARE_AMQP_URL={}", spec.amqp_url),
            format!("RIDESHARE_ZK={}", spec.zk),
            format!("RIDESHARE_NAMESPACE={}", spec.namespace),
            format!("RIDESHARE_ROLE={}", role_name(spec.role)),
            "RIDESHARE_HOST_PID_FROM_ZK=true".to_owned(),
        ];
        if let Ok(filter) = std::env::var("RUST_LOG") {
            env.push(format!("RUST_LOG={filter}"));
        }
        let mount = Mount {
            target: Some(DATA_DIR.to_owned()),
            source: Some(self.volume_name(&spec.id)),
            typ: Some(MountType::VOLUME),
            volume_options: Some(bollard::models::MountVolumeOptions {
                labels: Some(labels.clone()),
                ..Default::default()
            }),
            ..Default::default()
        };
        ServiceSpec {
            name: Some(self.service_name(&spec.id)),
            labels: Some(labels.clone()),
            task_template: Some(TaskSpec {
                container_spec: Some(TaskSpecContainerSpec {
                    image: Some(self.settings.image.clone()),
                    env: Some(env),
                    labels: Some(labels),
                    mounts: Some(vec![mount]),
                    stop_grace_period: Some(duration_nanos(STOP_GRACE)),
                    // Not the image's health check: Swarm would kill a worker it finds unhealthy, as one is
                    // while it waits for its pid (before it connects anywhere) or while the broker restarts,
                    // and a worker's liveness is the supervisor's to judge, from ZooKeeper.
                    health_check: Some(HealthConfig {
                        test: Some(vec!["NONE".to_owned()]),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                restart_policy: Some(TaskSpecRestartPolicy {
                    condition: Some(TaskSpecRestartPolicyConditionEnum::NONE),
                    ..Default::default()
                }),
                placement: Some(TaskSpecPlacement {
                    constraints: Some(vec![format!("node.id=={}", spec.host)]),
                    ..Default::default()
                }),
                networks: Some(vec![NetworkAttachmentConfig {
                    target: Some(self.settings.network.clone()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            mode: Some(ServiceSpecMode {
                replicated: Some(ServiceSpecModeReplicated { replicas: Some(1) }),
                ..Default::default()
            }),
            // Nobody connects to a worker (it only connects out), so it needs no virtual IP, which would need
            // the kernel's IPVS.
            endpoint_spec: Some(EndpointSpec {
                mode: Some(EndpointSpecModeEnum::DNSRR),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// Waits until the service's task runs and its container has a pid.
    async fn wait_running(&self, service: &str) -> anyhow::Result<Running> {
        let deadline = tokio::time::Instant::now() + START_WAIT;
        loop {
            let tasks = list_tasks(&self.docker, "service", service).await?;
            for task in &tasks {
                if let Some(running) = running(task) {
                    return Ok(running);
                }
                if let Some(state) = ended(task) {
                    let status = task.status.clone().unwrap_or_default();
                    anyhow::bail!(
                        "the task of service {service} ended as it started ({state}): {}",
                        status.err.or(status.message).unwrap_or_default()
                    );
                }
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "the task of service {service} did not run within {START_WAIT:?} (is the image {} on the \
                 node?)",
                self.settings.image
            );
            // Swarm sends no event when a task starts: asked again, briefly.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Hands the worker to the poller, which reports its end.
    fn watch(&self, id: String, service: String, running: Running) {
        let (ended, gone) = watch::channel(false);
        self.workers.lock().expect("workers map poisoned").insert(
            id,
            Handle {
                pid: running.pid,
                service,
                task: running.task,
                container: running.container,
                node: running.node,
                gone,
                ended: Arc::new(ended),
            },
        );
    }

    fn handle(&self, id: &str) -> Option<Handle> {
        self.workers
            .lock()
            .expect("workers map poisoned")
            .get(id)
            .cloned()
    }

    /// Sends `signal` to the worker's container when it runs on this engine's node, else removes its service
    /// (see the module's documentation).
    async fn signal(&self, handle: &Handle, signal: &str) -> anyhow::Result<()> {
        if handle.node != self.local_node {
            return self.remove_service(&handle.service).await;
        }
        match self
            .docker
            .kill_container(
                &handle.container,
                Some(KillContainerOptions {
                    signal: signal.to_owned(),
                }),
            )
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if matches!(status_of(&e), Some(404 | 409)) => Ok(()),
            Err(e) => Err(e)
                .with_context(|| format!("sending {signal} to container {}", handle.container)),
        }
    }

    async fn kill_one(&self, id: &str) -> anyhow::Result<bool> {
        let Some(handle) = self.handle(id) else {
            return Ok(false);
        };
        self.signal(&handle, "SIGKILL").await?;
        let mut gone = handle.gone.clone();
        tokio::time::timeout(KILL_WAIT, gone.wait_for(|g| *g))
            .await
            .with_context(|| format!("worker {id} was killed but its task is still running"))?
            .ok();
        Ok(true)
    }

    async fn terminate_one(&self, id: &str) -> anyhow::Result<bool> {
        let Some(handle) = self.handle(id) else {
            return Ok(false);
        };
        self.signal(&handle, "SIGTERM").await?;
        Ok(true)
    }

    async fn adopt_one(&self, id: &str, pid: u32) -> anyhow::Result<bool> {
        if self.handle(id).is_some() {
            return Ok(true);
        }
        let service = self.service_name(id);
        // The pid registered in ZooKeeper must be this task's: a worker restarted on the same copy by someone
        // else would be another task.
        let found = self
            .tasks_of(&service)
            .await?
            .unwrap_or_default()
            .iter()
            .filter_map(running)
            .find(|r| r.pid == pid);
        let Some(running) = found else {
            return Ok(false);
        };
        let node = running.node.clone();
        self.watch(id.to_owned(), service.clone(), running);
        tracing::info!(worker = %id, pid, %service, %node, "adopted a running worker service");
        Ok(true)
    }

    /// Whether a container of worker `id` runs on this engine's node.
    async fn runs_locally(&self, id: &str) -> anyhow::Result<bool> {
        let filters = HashMap::from([(
            "label".to_owned(),
            vec![
                format!("{LABEL_NAMESPACE}={}", self.settings.namespace),
                format!("{LABEL_WORKER}={id}"),
            ],
        )]);
        let found = self
            .docker
            .list_containers(Some(ListContainersOptions {
                filters: Some(filters),
                ..Default::default()
            }))
            .await
            .context("listing this node's containers")?;
        Ok(!found.is_empty())
    }

    async fn remove_copy_on(&self, host: &str, id: &str) -> anyhow::Result<()> {
        let volume = self.volume_name(id);
        anyhow::ensure!(
            host == self.local_node,
            "copy {id} is volume {volume} on node {host}, and this engine is node {}: remove it there \
             (`docker volume rm {volume}`)",
            self.local_node
        );
        // A removed service's container may still be on its way out, holding the volume for a moment.
        let deadline = tokio::time::Instant::now() + KILL_WAIT;
        loop {
            match self
                .docker
                .remove_volume(&volume, None::<RemoveVolumeOptions>)
                .await
            {
                Ok(()) => return Ok(()),
                Err(e) if status_of(&e) == Some(404) => return Ok(()),
                Err(e) if status_of(&e) == Some(409) && tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(POLL).await;
                }
                Err(e) => return Err(e).with_context(|| format!("removing volume {volume}")),
            }
        }
    }
}

impl WorkerRuntime for SwarmWorkers {
    fn hosts(&self) -> Vec<String> {
        self.nodes
            .lock()
            .expect("nodes poisoned")
            .iter()
            .map(|n| n.id.clone())
            .collect()
    }

    /// The processors of the nodes that may run workers, together.
    fn cores(&self) -> BoxFuture<'_, anyhow::Result<usize>> {
        let cores = self
            .nodes
            .lock()
            .expect("nodes poisoned")
            .iter()
            .map(|n| n.cpus)
            .sum();
        Box::pin(async move { Ok(cores) })
    }

    fn start(&self, spec: WorkerSpec) -> BoxFuture<'_, anyhow::Result<WorkerProcess>> {
        Box::pin(self.spawn(spec))
    }

    fn adopt<'a>(&'a self, id: &'a str, pid: u32) -> BoxFuture<'a, anyhow::Result<bool>> {
        Box::pin(self.adopt_one(id, pid))
    }

    fn kill<'a>(&'a self, id: &'a str) -> BoxFuture<'a, anyhow::Result<bool>> {
        Box::pin(self.kill_one(id))
    }

    fn terminate<'a>(&'a self, id: &'a str) -> BoxFuture<'a, anyhow::Result<bool>> {
        Box::pin(self.terminate_one(id))
    }

    fn list(&self) -> BoxFuture<'_, anyhow::Result<Vec<WorkerProcess>>> {
        let live = super::by_pid(&self.workers.lock().expect("workers map poisoned"), |h| {
            h.pid
        });
        Box::pin(async move { Ok(live) })
    }

    fn is_running_anywhere<'a>(&'a self, id: &'a str) -> BoxFuture<'a, anyhow::Result<bool>> {
        Box::pin(async move {
            let service = self.service_name(id);
            let tasks = self.tasks_of(&service).await?.unwrap_or_default();
            if tasks.iter().any(is_live) {
                return Ok(true);
            }
            // A removed service's tasks are no longer listed, but its container may still be stopping: on this
            // engine's node that is seen from the containers themselves.
            self.runs_locally(id).await
        })
    }

    fn remove_copy<'a>(&'a self, host: &'a str, id: &'a str) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(self.remove_copy_on(host, id))
    }
}

/// A task that runs, as the runtime keeps it.
struct Running {
    pid: u32,
    task: String,
    container: String,
    node: String,
}

/// The task, if its container runs and has a pid: `running`, or `starting`, which is what Swarm says of a
/// container that runs until its health check first passes.
fn running(task: &Task) -> Option<Running> {
    let status = task.status.as_ref()?;
    if !matches!(status.state, Some(TaskState::RUNNING | TaskState::STARTING)) {
        return None;
    }
    let container = status.container_status.as_ref()?;
    let pid = u32::try_from(container.pid?).ok().filter(|p| *p > 0)?;
    Some(Running {
        pid,
        task: task.id.clone()?,
        container: container.container_id.clone()?,
        node: task.node_id.clone()?,
    })
}

/// The task's final state, if it has ended.
fn ended(task: &Task) -> Option<TaskState> {
    let state = task.status.as_ref()?.state?;
    matches!(
        state,
        TaskState::COMPLETE
            | TaskState::SHUTDOWN
            | TaskState::FAILED
            | TaskState::REJECTED
            | TaskState::REMOVE
            | TaskState::ORPHANED
    )
    .then_some(state)
}

/// Whether the task may be running or about to: it has not ended, whatever Swarm wants of it (one being shut
/// down still runs on its copy).
fn is_live(task: &Task) -> bool {
    ended(task).is_none()
}

/// Lists the workers' tasks every [`POLL`], and reports each watched worker whose task has ended (or is gone
/// with its service) once: its service is removed, it leaves the map, its exit is sent. Refreshes the nodes.
async fn poll(
    docker: Docker,
    namespace: String,
    node_label: Option<(String, String)>,
    nodes: Arc<Mutex<Vec<SwarmNode>>>,
    workers: Arc<Mutex<HashMap<String, Handle>>>,
    exits: mpsc::UnboundedSender<Exited>,
) {
    let prefix = service_name(&namespace, "");
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ticks: u32 = 0;
    loop {
        tick.tick().await;
        ticks = ticks.wrapping_add(1);
        if ticks.is_multiple_of(NODES_EVERY) {
            match list_nodes(&docker, node_label.as_ref()).await {
                Ok(listed) => *nodes.lock().expect("nodes poisoned") = listed,
                Err(e) => tracing::warn!("listing the swarm's nodes: {e:#}"),
            }
        }
        let watched: Vec<(String, Handle)> = workers
            .lock()
            .expect("workers map poisoned")
            .iter()
            .map(|(id, h)| (id.clone(), h.clone()))
            .collect();
        if watched.is_empty() {
            continue;
        }
        let tasks = match list_tasks(&docker, "name", &prefix).await {
            Ok(tasks) => tasks,
            // The daemon restarting: an end must never be reported for a task that runs, so ask again.
            Err(e) => {
                tracing::warn!("listing the workers' tasks: {e:#}");
                continue;
            }
        };
        for (id, handle) in watched {
            let task = tasks.iter().find(|t| t.id.as_deref() == Some(&handle.task));
            if task.is_some_and(|t| ended(t).is_none()) {
                continue;
            }
            if let Err(e) = remove_service(&docker, &handle.service).await {
                tracing::warn!(worker = %id, "removing its ended service: {e:#}");
            }
            workers.lock().expect("workers map poisoned").remove(&id);
            let _ = handle.ended.send(true);
            tracing::info!(worker = %id, pid = handle.pid, state = ?task.and_then(ended),
                "worker task ended");
            let _ = exits.send(WorkerProcess {
                id,
                pid: handle.pid,
            });
        }
    }
}

/// The tasks that match one engine filter: `service` (the tasks of one existing service) or `name` (a prefix;
/// for every worker of the namespace, `<namespace>-worker-`). Ends are watched by name prefix because the
/// engine refuses a filter by service whole when one of the services no longer exists, while a prefix simply
/// finds no task for a service that was removed (by the runtime on another node, or by hand).
async fn list_tasks(docker: &Docker, filter: &str, value: &str) -> anyhow::Result<Vec<Task>> {
    let options = ListTasksOptions {
        filters: Some(HashMap::from([(filter.to_owned(), vec![value.to_owned()])])),
    };
    docker
        .list_tasks(Some(options))
        .await
        .with_context(|| format!("listing the tasks with {filter} {value}"))
}

async fn list_nodes(
    docker: &Docker,
    label: Option<&(String, String)>,
) -> anyhow::Result<Vec<SwarmNode>> {
    let listed = docker
        .list_nodes(None::<ListNodesOptions>)
        .await
        .context("listing the swarm's nodes")?;
    Ok(worker_nodes(listed, label))
}

/// The nodes that may run workers: ready, availability `active` (not paused or drained), and carrying `label`
/// when one is asked for; in the order hosts are offered, by host name then id, so that it does not change
/// between listings. A node's processors are its NanoCPUs, at least one.
fn worker_nodes(listed: Vec<Node>, label: Option<&(String, String)>) -> Vec<SwarmNode> {
    let mut nodes: Vec<SwarmNode> = listed
        .into_iter()
        .filter_map(|node| {
            let spec = node.spec.unwrap_or_default();
            let ready = node.status.and_then(|s| s.state) == Some(NodeState::READY);
            let active = spec.availability == Some(NodeSpecAvailabilityEnum::ACTIVE);
            let labelled = label.is_none_or(|(k, v)| {
                spec.labels
                    .as_ref()
                    .and_then(|labels| labels.get(k))
                    .is_some_and(|found| found == v)
            });
            let description = node.description.unwrap_or_default();
            let cpus = description
                .resources
                .and_then(|r| r.nano_cpus)
                .map_or(1, |n| {
                    usize::try_from(n / 1_000_000_000).unwrap_or(1).max(1)
                });
            (ready && active && labelled).then_some(SwarmNode {
                id: node.id?,
                hostname: description.hostname.unwrap_or_default(),
                cpus,
            })
        })
        .collect();
    nodes.sort_by(|a, b| (&a.hostname, &a.id).cmp(&(&b.hostname, &b.id)));
    nodes
}

async fn remove_service(docker: &Docker, service: &str) -> anyhow::Result<()> {
    match docker.delete_service(service).await {
        Ok(()) => Ok(()),
        Err(e) if status_of(&e) == Some(404) => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing service {service}")),
    }
}

/// Writes the host pid at `path` (`Some`), or removes it (`None`); a session of its own for each, as starts
/// are rare and a session kept open could have expired in between.
async fn host_pid(zk: &str, names: &Names, path: &str, pid: Option<u32>) -> anyhow::Result<()> {
    use zookeeper_client::{Acls, Client, CreateMode, Error as ZkError};
    let client = Client::connect(zk)
        .await
        .context("connecting to ZooKeeper to hand a host pid over")?;
    let options = CreateMode::Persistent.with_acls(Acls::anyone_all());
    client
        .mkdir(&names.zk_host_pids(), &options)
        .await
        .context("creating the host pids' znode")?;
    match client.delete(path, None).await {
        Ok(()) | Err(ZkError::NoNode) => {}
        Err(e) => return Err(e).with_context(|| format!("removing {path}")),
    }
    if let Some(pid) = pid {
        client
            .create(path, pid.to_string().as_bytes(), &options)
            .await
            .with_context(|| format!("writing {path}"))?;
    }
    Ok(())
}

fn duration_nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

pub fn service_name(namespace: &str, id: &str) -> String {
    format!("{namespace}-worker-{id}")
}

pub fn volume_name(namespace: &str, id: &str) -> String {
    format!("{namespace}-copy-{id}")
}

#[cfg(test)]
mod tests {
    use bollard::models::{ContainerStatus, TaskStatus};

    use super::*;

    fn task(state: TaskState, desired: TaskState, pid: i64) -> Task {
        Task {
            id: Some("t1".into()),
            node_id: Some("n1".into()),
            desired_state: Some(desired),
            status: Some(TaskStatus {
                state: Some(state),
                container_status: Some(ContainerStatus {
                    container_id: Some("c1".into()),
                    pid: Some(pid),
                    exit_code: None,
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_running_task_with_a_pid_is_a_running_worker_on_its_node() {
        let r = running(&task(TaskState::RUNNING, TaskState::RUNNING, 4242)).unwrap();
        assert_eq!(
            (
                r.pid,
                r.task.as_str(),
                r.container.as_str(),
                r.node.as_str()
            ),
            (4242, "t1", "c1", "n1")
        );
        // Not yet a pid, or not running: no worker to report.
        assert!(running(&task(TaskState::RUNNING, TaskState::RUNNING, 0)).is_none());
        assert!(running(&task(TaskState::PREPARING, TaskState::RUNNING, 4242)).is_none());
        // Running, its health not known yet.
        assert!(running(&task(TaskState::STARTING, TaskState::RUNNING, 4242)).is_some());
        assert!(running(&task(TaskState::FAILED, TaskState::RUNNING, 4242)).is_none());
    }

    #[test]
    fn a_task_is_live_until_it_ends_or_is_meant_to_stop() {
        assert!(is_live(&task(TaskState::PREPARING, TaskState::RUNNING, 0)));
        assert!(is_live(&task(TaskState::RUNNING, TaskState::RUNNING, 7)));
        for state in [
            TaskState::COMPLETE,
            TaskState::FAILED,
            TaskState::SHUTDOWN,
            TaskState::REJECTED,
            TaskState::ORPHANED,
        ] {
            assert!(!is_live(&task(state, TaskState::RUNNING, 7)), "{state}");
            assert_eq!(ended(&task(state, TaskState::RUNNING, 7)), Some(state));
        }
        // Being shut down, but still running on its copy: no other worker may start on it yet.
        assert!(is_live(&task(TaskState::RUNNING, TaskState::SHUTDOWN, 7)));
    }

    fn node(
        id: &str,
        host: &str,
        state: NodeState,
        availability: NodeSpecAvailabilityEnum,
        labels: &[(&str, &str)],
        nano_cpus: i64,
    ) -> Node {
        use bollard::models::{NodeDescription, NodeSpec, NodeStatus, ResourceObject};
        Node {
            id: Some(id.into()),
            spec: Some(NodeSpec {
                availability: Some(availability),
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect(),
                ),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                state: Some(state),
                ..Default::default()
            }),
            description: Some(NodeDescription {
                hostname: Some(host.into()),
                resources: Some(ResourceObject {
                    nano_cpus: Some(nano_cpus),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn workers_go_to_ready_active_nodes_with_the_label_in_a_stable_order() {
        use NodeSpecAvailabilityEnum::{ACTIVE, DRAIN, PAUSE};
        let db = [("rideshare.db", "yes")];
        let swarm = || {
            vec![
                node("n3", "c", NodeState::READY, ACTIVE, &db, 4_000_000_000),
                node("n1", "a", NodeState::READY, ACTIVE, &db, 2_000_000_000),
                node("n2", "b", NodeState::READY, ACTIVE, &[], 8_000_000_000),
                node("n4", "d", NodeState::DOWN, ACTIVE, &db, 2_000_000_000),
                node("n5", "e", NodeState::READY, DRAIN, &db, 2_000_000_000),
                node("n6", "f", NodeState::READY, PAUSE, &db, 2_000_000_000),
                node("n7", "g", NodeState::READY, ACTIVE, &db, 500_000_000),
            ]
        };
        let ids = |nodes: Vec<SwarmNode>| nodes.into_iter().map(|n| n.id).collect::<Vec<_>>();
        // Down, drained and paused nodes run no new worker; the order is by host name.
        assert_eq!(ids(worker_nodes(swarm(), None)), ["n1", "n2", "n3", "n7"]);
        // With a label, only the nodes that carry it, with that value.
        let label = ("rideshare.db".to_owned(), "yes".to_owned());
        assert_eq!(ids(worker_nodes(swarm(), Some(&label))), ["n1", "n3", "n7"]);
        let other = ("rideshare.db".to_owned(), "no".to_owned());
        assert!(worker_nodes(swarm(), Some(&other)).is_empty());
        // Processors for the ceiling: whole CPUs, at least one.
        let cpus: Vec<usize> = worker_nodes(swarm(), Some(&label))
            .iter()
            .map(|n| n.cpus)
            .collect();
        assert_eq!(cpus, [2, 4, 1]);
    }

    #[test]
    fn services_and_volumes_carry_the_namespace_and_the_worker_id() {
        assert_eq!(service_name("rs", "w-1a"), "rs-worker-w-1a");
        assert_eq!(volume_name("rs", "w-1a"), "rs-copy-w-1a");
    }
}
