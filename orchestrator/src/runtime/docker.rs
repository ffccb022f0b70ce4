//! Workers as Docker containers, started, signalled and watched through the Docker Engine API.
//!
//! Each worker is one container, `<namespace>-worker-<id>`, of the worker image, on the Compose network (where
//! it finds RabbitMQ and ZooKeeper by name). Its database lives where it would with local processes,
//! `<data_dir>/workers/<id>`, on the one volume that holds the orchestrator's data directory: that volume is
//! mounted at the same path in every worker container, and is this runtime's one host, [`DOCKER_HOST`]. A
//! container that is removed leaves its database behind. As with every runtime, the supervisor learns how far
//! each copy got from the position its worker reports in ZooKeeper; this runtime touches the volume only to
//! prepare a worker's folder (and its pid file) and to delete a copy that is no longer needed.
//!
//! The pid a worker reports is its container's main process as the host sees it (`State.Pid`), as the
//! contract asks: only known once the container runs, so the runtime writes it to `<folder>/host-pid` and the
//! worker waits for that file before it registers (`--host-pid-file`).
//!
//! An ended container is removed once its end is seen (the database is on the volume, not in the container),
//! so a worker restarted on its folder can take the same name again.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptions, KillContainerOptions, RemoveContainerOptions, WaitContainerOptions,
};
use bollard::Docker;
use futures::future::BoxFuture;
use futures::StreamExt;
use protocol::Role;
use tokio::sync::{mpsc, watch};

use super::{Exited, WorkerProcess, WorkerRuntime, WorkerSpec};

/// The user the worker image runs as (`docker/worker/Dockerfile`): each worker folder is handed to it.
const WORKER_UID: u32 = 10001;
const WORKER_GID: u32 = 10001;

/// Labels on every worker container: who it belongs to, so that a person (or a clean-up script) can find
/// them with `docker ps --filter label=org.rideshare.namespace=<ns>`.
const LABEL_NAMESPACE: &str = "org.rideshare.namespace";
const LABEL_WORKER: &str = "org.rideshare.worker-id";

/// The file, in the worker's folder, that carries its host pid.
pub const HOST_PID_FILE: &str = "host-pid";

/// The name of this runtime's one host in the registry of copies: every copy is on the shared volume.
pub const DOCKER_HOST: &str = "docker";

/// How long `kill` waits for a killed container to be seen gone before it reports an error.
const KILL_WAIT: Duration = Duration::from_secs(30);

/// After the Docker API failed while watching a container (the daemon restarting), how long to wait before
/// asking again.
const RETRY: Duration = Duration::from_secs(1);

/// Where worker containers run and what they mount.
#[derive(Debug, Clone)]
pub struct DockerSettings {
    /// The worker image, e.g. `rideshare/worker:latest`.
    pub image: String,
    /// The Docker network the containers join (the Compose file's network).
    pub network: String,
    /// The volume holding the orchestrator's data directory; mounted at `data_dir` in every worker.
    pub data_volume: String,
    /// The orchestrator's data directory (absolute): worker folders are `<data_dir>/workers/<id>`.
    pub data_dir: PathBuf,
    pub namespace: String,
}

pub struct DockerWorkers {
    docker: Docker,
    settings: DockerSettings,
    /// `std::sync::Mutex`: held only to read or change the map, never across an `.await`.
    workers: Arc<Mutex<HashMap<String, Handle>>>,
    exits: mpsc::UnboundedSender<Exited>,
}

#[derive(Clone)]
struct Handle {
    pid: u32,
    /// The container's id (not its name: a new container may take the name once this one is gone).
    container: String,
    /// Turns true once the container is gone and the worker left the map.
    gone: watch::Receiver<bool>,
}

impl DockerWorkers {
    /// Connects to the Docker daemon (`DOCKER_HOST`, else its local socket) and agrees on an API version
    /// with it, so an older engine (20.10 speaks API 1.41) is not sent requests it rejects.
    pub async fn connect(
        settings: DockerSettings,
        exits: mpsc::UnboundedSender<Exited>,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(
            settings.data_dir.is_absolute(),
            "with the Docker runtime the data directory must be an absolute path (it is mounted at the same \
             path in the workers), not {:?}",
            settings.data_dir
        );
        let docker = Docker::connect_with_defaults()
            .context("connecting to the Docker daemon")?
            .negotiate_version()
            .await
            .context("asking the Docker daemon for its API version")?;
        Ok(Self {
            docker,
            settings,
            workers: Arc::default(),
            exits,
        })
    }

    fn container_name(&self, id: &str) -> String {
        container_name(&self.settings.namespace, id)
    }

    /// `<data_dir>/workers`, where every copy lives.
    fn copies_root(&self) -> PathBuf {
        self.settings.data_dir.join("workers")
    }

    async fn spawn(&self, spec: WorkerSpec) -> anyhow::Result<WorkerProcess> {
        anyhow::ensure!(
            spec.host == DOCKER_HOST,
            "worker {} belongs on host {:?}, but containers run on {DOCKER_HOST:?} only",
            spec.id,
            spec.host
        );
        let data_dir = self.copies_root().join(&spec.id);
        prepare_folder(&data_dir)?;
        let name = self.container_name(&spec.id);
        // An ended container of an earlier run may still hold the name (its orchestrator died before removing
        // it). The supervisor never starts a worker whose id runs anywhere, so one that runs is a bug to report.
        if let Some(state) = self.state(&name).await? {
            anyhow::ensure!(!state.running, "container {name} is already running");
            self.remove(&name).await?;
        }
        let role = role_name(spec.role);
        let pid_file = data_dir.join(HOST_PID_FILE);
        // In the environment rather than on the command line: the image's health check reads the broker and
        // ZooKeeper addresses from there too.
        let mut env = vec![
            format!("RIDESHARE_WORKER_ID={}", spec.id),
            format!("RIDESHARE_DATA_DIR={}", path_str(&data_dir)?),
            format!("RIDESHARE_AMQP_URL={}", spec.amqp_url),
            format!("RIDESHARE_ZK={}", spec.zk),
            format!("RIDESHARE_NAMESPACE={}", spec.namespace),
            format!("RIDESHARE_ROLE={role}"),
            format!("RIDESHARE_HOST_PID_FILE={}", path_str(&pid_file)?),
        ];
        // The workers log as the orchestrator does.
        if let Ok(filter) = std::env::var("RUST_LOG") {
            env.push(format!("RUST_LOG={filter}"));
        }
        let labels = HashMap::from([
            (LABEL_NAMESPACE.to_owned(), spec.namespace.clone()),
            (LABEL_WORKER.to_owned(), spec.id.clone()),
        ]);
        let body = ContainerCreateBody {
            image: Some(self.settings.image.clone()),
            env: Some(env),
            labels: Some(labels),
            host_config: Some(HostConfig {
                network_mode: Some(self.settings.network.clone()),
                binds: Some(vec![format!(
                    "{}:{}",
                    self.settings.data_volume,
                    path_str(&self.settings.data_dir)?
                )]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let created = self
            .docker
            .create_container(
                Some(CreateContainerOptions {
                    name: Some(name.clone()),
                    ..Default::default()
                }),
                body,
            )
            .await
            .with_context(|| format!("creating container {name}"))?;
        let container = created.id;
        if let Err(e) = self.docker.start_container(&container, None).await {
            let _ = self.remove(&container).await;
            return Err(e).with_context(|| format!("starting container {name}"));
        }
        let pid = match self.state(&container).await? {
            Some(State {
                running: true, pid, ..
            }) if pid > 0 => pid,
            _ => {
                let _ = self.remove(&container).await;
                anyhow::bail!("container {name} ended as soon as it started");
            }
        };
        if let Err(e) = write_pid_file(&pid_file, pid) {
            let _ = self.kill_container(&container, "SIGKILL").await;
            let _ = self.remove(&container).await;
            return Err(e);
        }
        self.watch(spec.id.clone(), container, pid);
        tracing::info!(worker = %spec.id, pid, role, container = %name, "worker container started");
        Ok(WorkerProcess { id: spec.id, pid })
    }

    /// Hands the container to a task that waits for its end, then removes it and reports the exit.
    fn watch(&self, id: String, container: String, pid: u32) {
        let (gone_tx, gone) = watch::channel(false);
        self.workers.lock().expect("workers map poisoned").insert(
            id.clone(),
            Handle {
                pid,
                container: container.clone(),
                gone,
            },
        );
        let docker = self.docker.clone();
        let workers = self.workers.clone();
        let exits = self.exits.clone();
        tokio::spawn(async move {
            wait_until_ended(&docker, &container).await;
            if let Err(e) = docker
                .remove_container(
                    &container,
                    Some(RemoveContainerOptions {
                        force: true,
                        ..Default::default()
                    }),
                )
                .await
            {
                if status_of(&e) != Some(404) {
                    tracing::warn!(worker = %id, "removing its ended container: {e}");
                }
            }
            workers.lock().expect("workers map poisoned").remove(&id);
            let _ = gone_tx.send(true);
            tracing::info!(worker = %id, pid, "worker container ended");
            let _ = exits.send(WorkerProcess { id, pid });
        });
    }

    /// Whether a container of that name or id exists, and if so its id, whether it runs and its host pid.
    async fn state(&self, container: &str) -> anyhow::Result<Option<State>> {
        match self.docker.inspect_container(container, None).await {
            Ok(info) => {
                let state = info.state.unwrap_or_default();
                let running = state.running.unwrap_or(false) || state.restarting.unwrap_or(false);
                let pid = state.pid.and_then(|p| u32::try_from(p).ok()).unwrap_or(0);
                let id = info.id.context("a container without an id")?;
                Ok(Some(State { id, running, pid }))
            }
            Err(e) if status_of(&e) == Some(404) => Ok(None),
            Err(e) => Err(e).with_context(|| format!("inspecting container {container}")),
        }
    }

    async fn remove(&self, container: &str) -> anyhow::Result<()> {
        match self
            .docker
            .remove_container(
                container,
                Some(RemoveContainerOptions {
                    force: true,
                    ..Default::default()
                }),
            )
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if status_of(&e) == Some(404) => Ok(()),
            Err(e) => Err(e).with_context(|| format!("removing container {container}")),
        }
    }

    /// Sends `signal`; a container that already stopped (409) or is gone (404) is not an error.
    async fn kill_container(&self, container: &str, signal: &str) -> anyhow::Result<()> {
        match self
            .docker
            .kill_container(
                container,
                Some(KillContainerOptions {
                    signal: signal.to_owned(),
                }),
            )
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if matches!(status_of(&e), Some(404 | 409)) => Ok(()),
            Err(e) => Err(e).with_context(|| format!("sending {signal} to container {container}")),
        }
    }

    fn handle(&self, id: &str) -> Option<Handle> {
        self.workers
            .lock()
            .expect("workers map poisoned")
            .get(id)
            .cloned()
    }

    async fn kill_one(&self, id: &str) -> anyhow::Result<bool> {
        let Some(handle) = self.handle(id) else {
            return Ok(false);
        };
        self.kill_container(&handle.container, "SIGKILL").await?;
        let mut gone = handle.gone;
        tokio::time::timeout(KILL_WAIT, gone.wait_for(|g| *g))
            .await
            .with_context(|| format!("worker {id} was killed but its container is still there"))?
            .ok();
        Ok(true)
    }

    async fn terminate_one(&self, id: &str) -> anyhow::Result<bool> {
        let Some(handle) = self.handle(id) else {
            return Ok(false);
        };
        self.kill_container(&handle.container, "SIGTERM").await?;
        Ok(true)
    }

    async fn adopt_one(&self, id: &str, pid: u32) -> anyhow::Result<bool> {
        if self.handle(id).is_some() {
            return Ok(true);
        }
        let name = self.container_name(id);
        // The pid registered in ZooKeeper must be this container's: a worker restarted on the same folder by
        // someone else would be another container with the same name.
        let Some(State {
            id: container,
            running: true,
            pid: found,
        }) = self.state(&name).await?
        else {
            return Ok(false);
        };
        if found != pid {
            return Ok(false);
        }
        self.watch(id.to_owned(), container, pid);
        tracing::info!(worker = %id, pid, container = %name, "adopted a running worker container");
        Ok(true)
    }
}

impl WorkerRuntime for DockerWorkers {
    fn hosts(&self) -> Vec<String> {
        vec![DOCKER_HOST.to_owned()]
    }

    /// The Docker engine's host's, as `docker info` reports them: the containers run there.
    fn cores(&self) -> BoxFuture<'_, anyhow::Result<usize>> {
        Box::pin(async {
            let info = self
                .docker
                .info()
                .await
                .context("asking Docker for its CPUs")?;
            let ncpu = info
                .ncpu
                .context("Docker did not say how many CPUs it has")?;
            usize::try_from(ncpu).context("Docker reported a negative number of CPUs")
        })
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
            let name = self.container_name(id);
            Ok(self.state(&name).await?.is_some_and(|s| s.running))
        })
    }

    fn remove_copy<'a>(&'a self, host: &'a str, id: &'a str) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            anyhow::ensure!(
                host == DOCKER_HOST,
                "copy {id} is on host {host:?}, not on {DOCKER_HOST:?}"
            );
            let root = self.copies_root();
            let id = id.to_owned();
            tokio::task::spawn_blocking(move || super::remove_folder(&root, &id))
                .await
                .context("removing a copy")?
        })
    }
}

struct State {
    id: String,
    running: bool,
    /// The main process's pid on the host; 0 when it does not run.
    pid: u32,
}

pub fn container_name(namespace: &str, id: &str) -> String {
    format!("{namespace}-worker-{id}")
}

/// Waits until the container no longer runs (or no longer exists). The wait request is repeated when it
/// fails, as it does when the daemon restarts: an end must never be reported for a container that runs.
async fn wait_until_ended(docker: &Docker, container: &str) {
    loop {
        let mut wait = docker.wait_container(
            container,
            Some(WaitContainerOptions {
                condition: "not-running".to_owned(),
            }),
        );
        // Any answer ends the wait: an exit code, an error for a non-zero exit, or a failed request.
        let _ = wait.next().await;
        match docker.inspect_container(container, None).await {
            Ok(info) if info.state.as_ref().and_then(|s| s.running).unwrap_or(false) => {}
            Ok(_) => return,
            Err(e) if status_of(&e) == Some(404) => return,
            Err(e) => tracing::warn!(container, "inspecting a watched container: {e}"),
        }
        tokio::time::sleep(RETRY).await;
    }
}

/// A worker's `--role` value.
pub(super) fn role_name(role: Role) -> &'static str {
    match role {
        Role::Master => "master",
        Role::Slave => "slave",
    }
}

/// The HTTP status of a Docker API error, when the engine answered one.
pub(super) fn status_of(e: &bollard::errors::Error) -> Option<u16> {
    match e {
        bollard::errors::Error::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

fn path_str(path: &Path) -> anyhow::Result<&str> {
    path.to_str()
        .with_context(|| format!("{} is not valid UTF-8", path.display()))
}

/// Creates the worker's folder, hands it to the worker image's user (when we may: the orchestrator runs as
/// root in its container), and removes a pid file left by an earlier container.
fn prepare_folder(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating the worker's folder {}", dir.display()))?;
    if rustix::process::geteuid().is_root() {
        std::os::unix::fs::chown(dir, Some(WORKER_UID), Some(WORKER_GID))
            .with_context(|| format!("handing {} to uid {WORKER_UID}", dir.display()))?;
    }
    let pid_file = dir.join(HOST_PID_FILE);
    match std::fs::remove_file(&pid_file) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing {}", pid_file.display())),
    }
}

/// Written to a temporary file beside `path` then renamed over it (`NamedTempFile::persist`), so the worker
/// never reads half a number. Readable by everyone: the orchestrator may run as root, the worker does not (a
/// temporary file is made readable by its owner alone).
fn write_pid_file(path: &Path, pid: u32) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut file = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    file.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o644))
        .with_context(|| format!("making {} readable", file.path().display()))?;
    writeln!(file, "{pid}").with_context(|| format!("writing {}", file.path().display()))?;
    file.persist(path)
        .with_context(|| format!("writing the host pid to {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pid_file_is_complete_once_it_exists_and_a_restart_removes_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("workers").join("w1");
        prepare_folder(&folder).unwrap();
        let file = folder.join(HOST_PID_FILE);
        write_pid_file(&file, 4242).unwrap();
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "4242\n");
        assert!(!file.with_extension("tmp").exists());
        // The worker in its container is not the orchestrator's user: it must be able to read it.
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o044, 0o044, "mode {mode:o}");
        // A new container on the same folder must not read the previous container's pid.
        prepare_folder(&folder).unwrap();
        assert!(!file.exists());
    }

    #[test]
    fn container_names_carry_the_namespace_and_the_worker_id() {
        assert_eq!(
            container_name("rideshare", "w-12ab"),
            "rideshare-worker-w-12ab"
        );
    }
}
