//! Where workers run: the [`WorkerRuntime`] trait, and [`LocalProcesses`], which runs them as child processes.
//!
//! The trait is deliberately narrow (start, kill, list) so a Docker runtime can implement it with the Docker
//! API. It is object-safe (methods return boxed futures) so the cluster code holds an `Arc<dyn WorkerRuntime>`
//! chosen at start-up.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use futures::future::BoxFuture;
use protocol::Role;
use tokio::process::Command;
use tokio::sync::oneshot;

/// Everything a worker needs to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerSpec {
    /// Unique among all workers ever started in the namespace: it names the worker's znode and sync queue.
    pub id: String,
    pub role: Role,
    pub data_dir: PathBuf,
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

pub trait WorkerRuntime: Send + Sync + 'static {
    /// Starts a worker and returns once it runs (not once it has registered in ZooKeeper).
    fn start(&self, spec: WorkerSpec) -> BoxFuture<'_, anyhow::Result<WorkerProcess>>;

    /// Kills a worker started by this runtime the hard way (SIGKILL: no chance to clean up, as in a crash), and
    /// returns once it is gone. `Ok(false)` when no such worker is alive.
    fn kill<'a>(&'a self, id: &'a str) -> BoxFuture<'a, anyhow::Result<bool>>;

    /// The live workers this runtime started, by ascending pid.
    fn list(&self) -> BoxFuture<'_, anyhow::Result<Vec<WorkerProcess>>>;
}

/// Workers as child processes of this one.
///
/// Each child is owned by one task that waits for it to exit (reaping it, so it never lingers as a zombie) or
/// for a kill request; the shared map only holds what `list` and `kill` need. `kill` takes the entry out before
/// it signals the task, and the task removes it when the process exits by itself, so `list` shows live workers
/// only (a worker being killed drops out a moment before it is reaped).
pub struct LocalProcesses {
    worker_bin: PathBuf,
    kill_on_drop: bool,
    /// `std::sync::Mutex`: held only to read or change the map, never across an `.await`.
    children: Arc<Mutex<HashMap<String, Child>>>,
}

struct Child {
    pid: u32,
    /// Asks the owning task to kill the process; it answers once the process is reaped.
    kill: oneshot::Sender<oneshot::Sender<()>>,
}

impl LocalProcesses {
    /// `kill_on_drop`: kill the workers when this runtime's tasks are dropped (the tokio runtime shuts down, a
    /// test panics), so tests leave no stray workers. Off in production, where workers outlive the orchestrator.
    pub fn new(worker_bin: PathBuf, kill_on_drop: bool) -> Self {
        Self {
            worker_bin,
            kill_on_drop,
            children: Arc::default(),
        }
    }

    async fn spawn(&self, spec: WorkerSpec) -> anyhow::Result<WorkerProcess> {
        std::fs::create_dir_all(&spec.data_dir)
            .with_context(|| format!("creating the worker's data directory {:?}", spec.data_dir))?;
        let role = match spec.role {
            Role::Master => "master",
            Role::Slave => "slave",
        };
        let mut child = Command::new(&self.worker_bin)
            .arg("--id")
            .arg(&spec.id)
            .arg("--data-dir")
            .arg(&spec.data_dir)
            .arg("--amqp-url")
            .arg(&spec.amqp_url)
            .arg("--zk")
            .arg(&spec.zk)
            .arg("--namespace")
            .arg(&spec.namespace)
            .arg("--role")
            .arg(role)
            .stdin(Stdio::null())
            // Inherited so the workers' logs show next to the orchestrator's.
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit())
            .kill_on_drop(self.kill_on_drop)
            .spawn()
            .with_context(|| format!("starting worker {:?}", self.worker_bin))?;
        let pid = child
            .id()
            .context("the worker exited before its pid could be read")?;
        let (kill_tx, mut kill_rx) = oneshot::channel::<oneshot::Sender<()>>();
        self.children
            .lock()
            .expect("children map poisoned")
            .insert(spec.id.clone(), Child { pid, kill: kill_tx });

        let children = self.children.clone();
        let id = spec.id.clone();
        tokio::spawn(async move {
            tokio::select! {
                status = child.wait() => {
                    children.lock().expect("children map poisoned").remove(&id);
                    match status {
                        Ok(status) => tracing::warn!(worker = %id, pid, "worker exited: {status}"),
                        Err(e) => tracing::error!(worker = %id, pid, "waiting for worker: {e}"),
                    }
                }
                Ok(done) = &mut kill_rx => {
                    if let Err(e) = child.start_kill() {
                        tracing::error!(worker = %id, pid, "killing worker: {e}");
                    }
                    let _ = child.wait().await;
                    children.lock().expect("children map poisoned").remove(&id);
                    tracing::info!(worker = %id, pid, "worker killed");
                    let _ = done.send(());
                }
            }
        });
        tracing::info!(worker = %spec.id, pid, role, "worker started");
        Ok(WorkerProcess { id: spec.id, pid })
    }

    async fn kill_one(&self, id: &str) -> anyhow::Result<bool> {
        let request = self
            .children
            .lock()
            .expect("children map poisoned")
            .remove(id);
        let Some(child) = request else {
            return Ok(false);
        };
        let (done_tx, done_rx) = oneshot::channel();
        if child.kill.send(done_tx).is_err() {
            // The task ended: the process exited on its own just now.
            return Ok(false);
        }
        // An error here means the task was dropped (runtime shutting down); the process is gone either way
        // when kill_on_drop is set, and there is nothing better to do when it is not.
        let _ = done_rx.await;
        Ok(true)
    }
}

impl WorkerRuntime for LocalProcesses {
    fn start(&self, spec: WorkerSpec) -> BoxFuture<'_, anyhow::Result<WorkerProcess>> {
        Box::pin(self.spawn(spec))
    }

    fn kill<'a>(&'a self, id: &'a str) -> BoxFuture<'a, anyhow::Result<bool>> {
        Box::pin(self.kill_one(id))
    }

    fn list(&self) -> BoxFuture<'_, anyhow::Result<Vec<WorkerProcess>>> {
        let mut live: Vec<WorkerProcess> = self
            .children
            .lock()
            .expect("children map poisoned")
            .iter()
            .map(|(id, child)| WorkerProcess {
                id: id.clone(),
                pid: child.pid,
            })
            .collect();
        live.sort_by_key(|w| w.pid);
        Box::pin(async move { Ok(live) })
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::time::Duration;

    use super::*;

    /// A stand-in worker binary: a shell script that records its arguments and then runs `body`.
    fn fake_worker(dir: &std::path::Path, body: &str) -> PathBuf {
        let path = dir.join("worker");
        let script = format!(
            "#!/bin/sh\necho \"$@\" > \"{}/args\"\n{body}\n",
            dir.display()
        );
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    fn spec(dir: &std::path::Path, id: &str) -> WorkerSpec {
        WorkerSpec {
            id: id.into(),
            role: Role::Slave,
            data_dir: dir.join("workers").join(id),
            amqp_url: "amqp://x".into(),
            zk: "zk:1".into(),
            namespace: "ns".into(),
        }
    }

    fn is_running(pid: u32) -> bool {
        // A reaped process has no /proc entry; a zombie would still have one, with state Z.
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Ok(stat) => !stat.contains(") Z "),
            Err(_) => false,
        }
    }

    #[tokio::test]
    async fn a_started_worker_is_listed_until_it_is_killed() {
        let dir = tempfile::tempdir().unwrap();
        // `exec` so the pid is the sleeping process itself.
        let rt = LocalProcesses::new(fake_worker(dir.path(), "exec sleep 600"), true);
        let w = rt.start(spec(dir.path(), "w-1")).await.unwrap();
        assert!(dir.path().join("workers/w-1").is_dir());
        assert_eq!(rt.list().await.unwrap(), vec![w.clone()]);
        assert!(is_running(w.pid));
        // Let the script record its arguments before it is killed.
        let args_file = dir.path().join("args");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while std::fs::read_to_string(&args_file).map_or(true, |a| !a.ends_with('\n')) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the worker wrote no arguments"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }

        assert!(rt.kill("w-1").await.unwrap());
        assert!(rt.list().await.unwrap().is_empty());
        assert!(
            !is_running(w.pid),
            "killed worker still running or a zombie"
        );
        assert!(!rt.kill("w-1").await.unwrap());

        let args = std::fs::read_to_string(&args_file).unwrap();
        assert!(args.contains("--id w-1 "), "{args}");
        assert!(args.contains("--role slave"), "{args}");
        assert!(args.contains("--namespace ns"), "{args}");
    }

    #[tokio::test]
    async fn a_worker_that_exits_by_itself_leaves_the_list() {
        let dir = tempfile::tempdir().unwrap();
        let rt = LocalProcesses::new(fake_worker(dir.path(), "exit 3"), true);
        let w = rt.start(spec(dir.path(), "w-2")).await.unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !rt.list().await.unwrap().is_empty() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "exited worker still listed"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(!is_running(w.pid));
        assert!(!rt.kill("w-2").await.unwrap());
    }

    #[tokio::test]
    async fn a_missing_binary_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let rt = LocalProcesses::new(dir.path().join("nope"), true);
        assert!(rt.start(spec(dir.path(), "w-3")).await.is_err());
        assert!(rt.list().await.unwrap().is_empty());
    }
}
