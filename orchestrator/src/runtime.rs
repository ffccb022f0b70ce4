//! Where workers run: the [`WorkerRuntime`] trait; [`hosts::Hosts`], which runs them as processes started
//! through a launcher on each of a set of hosts (local processes are the case of one host, this machine); and
//! [`docker::DockerWorkers`], which runs them as containers on one Docker engine; and [`swarm::SwarmWorkers`],
//! which runs them as Swarm services placed across a swarm's nodes.
//!
//! A worker runs on a host, and its copy of the database lives on that host's disk, under the worker's id: a
//! copy stays where it is, so restarting a copy means starting its worker on the host that holds it. The
//! orchestrator never reads a copy: only the runtime touches a host's disk, to make a worker's folder and to
//! delete a copy that is no longer needed, acting for the host.
//!
//! The trait is deliberately narrow (hosts, start, adopt, signal, list, remove a copy, and a stream of exits).
//! It is object-safe (methods return boxed futures) so the cluster code holds an `Arc<dyn WorkerRuntime>`
//! chosen at start-up.

pub mod docker;
pub mod hosts;
pub mod swarm;

use std::collections::HashMap;

use futures::future::BoxFuture;
use protocol::Role;

pub use hosts::{is_alive, runs_worker};

/// Everything a worker needs to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerSpec {
    /// Unique among the workers of the namespace: it names the worker's znode, its sync queue and its copy of
    /// the database. Reused only when a worker is restarted on its own copy.
    pub id: String,
    pub role: Role,
    /// The host to start it on, one of [`WorkerRuntime::hosts`]: the one that holds its copy.
    pub host: String,
    pub amqp_url: String,
    pub zk: String,
    pub namespace: String,
}

/// A running worker as the runtime knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerProcess {
    pub id: String,
    /// The operating-system process id (for a container: its main process, as seen from the host).
    pub pid: u32,
}

/// A worker process ended: it exited, crashed or was killed. Reported once per process.
pub type Exited = WorkerProcess;

pub trait WorkerRuntime: Send + Sync + 'static {
    /// The hosts workers can be placed on, in the order configured; at least one.
    fn hosts(&self) -> Vec<String>;

    /// The processors of the machine the workers run on, which bound how many slaves are worth running
    /// (`--max-slaves auto`).
    fn cores(&self) -> BoxFuture<'_, anyhow::Result<usize>>;

    /// Starts a worker on `spec.host`, on its copy there (made empty if there is none yet), and returns once it
    /// runs (not once it has registered in ZooKeeper).
    fn start(&self, spec: WorkerSpec) -> BoxFuture<'_, anyhow::Result<WorkerProcess>>;

    /// Takes charge of a worker this runtime did not start (an earlier orchestrator did), as found in
    /// ZooKeeper: from then on it is listed, can be signalled, and its exit is reported. `Ok(false)` when no
    /// live process is that worker (it died, or its pid now belongs to something else).
    fn adopt<'a>(&'a self, id: &'a str, pid: u32) -> BoxFuture<'a, anyhow::Result<bool>>;

    /// Kills a worker the hard way (SIGKILL: no chance to clean up, as in a crash), and returns once it is
    /// gone. `Ok(false)` when no such worker is alive.
    fn kill<'a>(&'a self, id: &'a str) -> BoxFuture<'a, anyhow::Result<bool>>;

    /// Asks a worker to stop (SIGTERM) and returns at once; its exit is reported like any other. `Ok(false)`
    /// when no such worker is alive.
    fn terminate<'a>(&'a self, id: &'a str) -> BoxFuture<'a, anyhow::Result<bool>>;

    /// The live workers this runtime started or adopted, by ascending pid.
    fn list(&self) -> BoxFuture<'_, anyhow::Result<Vec<WorkerProcess>>>;

    /// Whether any process at all runs the worker `id`, including one this runtime does not know (started
    /// by an earlier orchestrator and not registered yet). Asked before a copy is started on or removed.
    fn is_running_anywhere<'a>(&'a self, id: &'a str) -> BoxFuture<'a, anyhow::Result<bool>>;

    /// Deletes copy `id` on `host` (the worker's folder and everything in it); done when it is gone already.
    /// Asked only for a copy no worker runs on, once it is no longer needed.
    fn remove_copy<'a>(&'a self, host: &'a str, id: &'a str) -> BoxFuture<'a, anyhow::Result<()>>;
}

/// A runtime's map of live workers as `list` answers: by ascending pid.
fn by_pid<H>(workers: &HashMap<String, H>, pid: impl Fn(&H) -> u32) -> Vec<WorkerProcess> {
    let mut live: Vec<WorkerProcess> = workers
        .iter()
        .map(|(id, h)| WorkerProcess {
            id: id.clone(),
            pid: pid(h),
        })
        .collect();
    live.sort_by_key(|w| w.pid);
    live
}

/// Removes `<root>/<id>` and everything in it; done when it does not exist. `id` must be a worker id, so the
/// path stays under `root`.
fn remove_folder(root: &std::path::Path, id: &str) -> anyhow::Result<()> {
    use anyhow::Context;
    anyhow::ensure!(
        protocol::names::is_valid_name(id),
        "not a worker id: {id:?}"
    );
    let path = root.join(id);
    match std::fs::remove_dir_all(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removing_a_folder_removes_it_and_no_folder_is_done_already() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("w-a/sub")).unwrap();
        std::fs::write(dir.path().join("w-a/sub/db.sqlite"), b"x").unwrap();
        remove_folder(dir.path(), "w-a").unwrap();
        assert!(!dir.path().join("w-a").exists());
        remove_folder(dir.path(), "w-a").unwrap();
        remove_folder(&dir.path().join("never-created"), "w-b").unwrap();
    }

    #[test]
    fn only_a_worker_id_names_a_folder_to_remove() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("keep")).unwrap();
        assert!(remove_folder(&dir.path().join("keep"), "..").is_err());
        assert!(remove_folder(dir.path(), "a/b").is_err());
        assert!(dir.path().join("keep").exists());
    }
}
