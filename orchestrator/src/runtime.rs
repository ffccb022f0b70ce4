//! Where workers run: the [`WorkerRuntime`] trait, and [`LocalProcesses`], which runs them as processes on this
//! host.
//!
//! The trait is deliberately narrow (start, adopt, signal, list, and a stream of exits) so a Docker runtime can
//! implement it with the Docker API. It is object-safe (methods return boxed futures) so the cluster code holds
//! an `Arc<dyn WorkerRuntime>` chosen at start-up.

pub mod docker;

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use futures::future::BoxFuture;
use protocol::Role;
use rustix::process::{Pid, PidfdFlags, Signal};
use tokio::process::Command;
use tokio::sync::{mpsc, oneshot};

/// Everything a worker needs to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerSpec {
    /// Unique among the workers of the namespace: it names the worker's znode and sync queue. Reused only
    /// when a worker is restarted on its own folder after the whole cluster stopped.
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

/// A worker process ended: it exited, crashed or was killed. Reported once per process.
pub type Exited = WorkerProcess;

pub trait WorkerRuntime: Send + Sync + 'static {
    /// Starts a worker and returns once it runs (not once it has registered in ZooKeeper).
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
    /// by an earlier orchestrator and not registered yet). Asked before a worker's folder is reused or
    /// removed.
    fn is_running_anywhere<'a>(&'a self, id: &'a str) -> BoxFuture<'a, anyhow::Result<bool>>;
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

/// Workers as processes of this host: those it starts are its children, those it adopts are not (their
/// parent, an earlier orchestrator, is gone).
///
/// Each worker is owned by one task that waits for the process to end (reaping a child so it never lingers as
/// a zombie; watching a pidfd for an adopted one) and sends it signals on request. The shared map only holds
/// what `list` and the signalling methods need; the task removes the entry before it reports the exit, so
/// `list` never shows a worker whose exit was reported.
pub struct LocalProcesses {
    worker_bin: PathBuf,
    kill_on_drop: bool,
    /// `std::sync::Mutex`: held only to read or change the map, never across an `.await`.
    workers: Arc<Mutex<HashMap<String, Handle>>>,
    exits: mpsc::UnboundedSender<Exited>,
}

struct Handle {
    pid: u32,
    /// Asks the owning task to send a signal; for SIGKILL it answers once the process is gone.
    signals: mpsc::UnboundedSender<(Signal, Option<oneshot::Sender<()>>)>,
}

/// How often an adopted worker is checked for life. It is not our child, so no exit status comes to us; a
/// tenth of a second is "at once" for replacing it, and reading one small /proc file that often costs nothing.
const ADOPTED_CHECK: Duration = Duration::from_millis(100);

/// How the owning task learns that its process ended.
enum Process {
    Child(tokio::process::Child),
    /// Not our child. The pidfd pins the process, so a signal sent through it can never reach another process
    /// that reused the pid; its end is noticed by polling /proc.
    Adopted {
        pidfd: OwnedFd,
        id: String,
    },
}

impl Process {
    async fn ended(&mut self, pid: u32) {
        match self {
            Process::Child(child) => {
                if let Err(e) = child.wait().await {
                    tracing::error!("waiting for a worker: {e}");
                }
            }
            Process::Adopted { id, .. } => {
                let mut check = tokio::time::interval(ADOPTED_CHECK);
                while runs_worker(pid, id) {
                    check.tick().await;
                }
            }
        }
    }

    fn signal(&self, pid: u32, signal: Signal) -> std::io::Result<()> {
        match self {
            // Our child cannot have been reaped while we hold it, so its pid is still its own.
            Process::Child(_) => {
                let pid = Pid::from_raw(pid as i32).ok_or(std::io::ErrorKind::InvalidInput)?;
                rustix::process::kill_process(pid, signal)?;
            }
            Process::Adopted { pidfd, .. } => rustix::process::pidfd_send_signal(pidfd, signal)?,
        }
        Ok(())
    }
}

impl LocalProcesses {
    /// `kill_on_drop`: kill the workers this runtime starts when their tasks are dropped (the tokio runtime
    /// shuts down, a test panics), so tests leave no stray workers. Off in production, where workers outlive
    /// the orchestrator. Every exit is sent on `exits`.
    pub fn new(
        worker_bin: PathBuf,
        kill_on_drop: bool,
        exits: mpsc::UnboundedSender<Exited>,
    ) -> Self {
        Self {
            worker_bin,
            kill_on_drop,
            workers: Arc::default(),
            exits,
        }
    }

    async fn spawn(&self, spec: WorkerSpec) -> anyhow::Result<WorkerProcess> {
        std::fs::create_dir_all(&spec.data_dir)
            .with_context(|| format!("creating the worker's data directory {:?}", spec.data_dir))?;
        let role = match spec.role {
            Role::Master => "master",
            Role::Slave => "slave",
        };
        let child = Command::new(&self.worker_bin)
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
        self.watch(spec.id.clone(), pid, Process::Child(child));
        tracing::info!(worker = %spec.id, pid, role, "worker started");
        Ok(WorkerProcess { id: spec.id, pid })
    }

    async fn adopt_one(&self, id: &str, pid: u32) -> anyhow::Result<bool> {
        if self
            .workers
            .lock()
            .expect("workers map poisoned")
            .contains_key(id)
        {
            return Ok(true);
        }
        let Some(raw) = Pid::from_raw(pid as i32) else {
            return Ok(false);
        };
        let fd = match rustix::process::pidfd_open(raw, PidfdFlags::NONBLOCK) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::SRCH) => return Ok(false),
            Err(e) => return Err(e).context("opening a pidfd"),
        };
        // Checked after the pidfd is open: from here on the fd and the pid name the same process, so a pid
        // reused between ZooKeeper's record and now is caught here.
        if !runs_worker(pid, id) {
            return Ok(false);
        }
        self.watch(
            id.to_owned(),
            pid,
            Process::Adopted {
                pidfd: fd,
                id: id.to_owned(),
            },
        );
        tracing::info!(worker = %id, pid, "worker adopted");
        Ok(true)
    }

    /// Registers a worker and spawns the task that owns it.
    fn watch(&self, id: String, pid: u32, mut process: Process) {
        let (signals, mut requests) = mpsc::unbounded_channel();
        self.workers
            .lock()
            .expect("workers map poisoned")
            .insert(id.clone(), Handle { pid, signals });
        let workers = self.workers.clone();
        let exits = self.exits.clone();
        tokio::spawn(async move {
            let mut waiting: Vec<oneshot::Sender<()>> = Vec::new();
            loop {
                tokio::select! {
                    () = process.ended(pid) => break,
                    Some((signal, done)) = requests.recv() => {
                        if let Err(e) = process.signal(pid, signal) {
                            tracing::error!(worker = %id, pid, "signalling worker: {e}");
                        }
                        waiting.extend(done);
                    }
                }
            }
            {
                let mut map = workers.lock().expect("workers map poisoned");
                if map.get(&id).is_some_and(|h| h.pid == pid) {
                    map.remove(&id);
                }
            }
            tracing::info!(worker = %id, pid, "worker process ended");
            let _ = exits.send(WorkerProcess { id, pid });
            for done in waiting {
                let _ = done.send(());
            }
        });
    }

    async fn signal(&self, id: &str, signal: Signal, wait: bool) -> anyhow::Result<bool> {
        let (done, gone) = oneshot::channel();
        let sent = {
            let map = self.workers.lock().expect("workers map poisoned");
            match map.get(id) {
                None => false,
                Some(h) => h.signals.send((signal, wait.then_some(done))).is_ok(),
            }
        };
        if !sent {
            return Ok(false);
        }
        if wait {
            // An error means the task was dropped (the runtime is shutting down): nothing better to do.
            let _ = gone.await;
        }
        Ok(true)
    }
}

impl WorkerRuntime for LocalProcesses {
    fn start(&self, spec: WorkerSpec) -> BoxFuture<'_, anyhow::Result<WorkerProcess>> {
        Box::pin(self.spawn(spec))
    }

    fn adopt<'a>(&'a self, id: &'a str, pid: u32) -> BoxFuture<'a, anyhow::Result<bool>> {
        Box::pin(self.adopt_one(id, pid))
    }

    fn kill<'a>(&'a self, id: &'a str) -> BoxFuture<'a, anyhow::Result<bool>> {
        Box::pin(self.signal(id, Signal::KILL, true))
    }

    fn terminate<'a>(&'a self, id: &'a str) -> BoxFuture<'a, anyhow::Result<bool>> {
        Box::pin(self.signal(id, Signal::TERM, false))
    }

    fn list(&self) -> BoxFuture<'_, anyhow::Result<Vec<WorkerProcess>>> {
        let live = by_pid(&self.workers.lock().expect("workers map poisoned"), |h| {
            h.pid
        });
        Box::pin(async move { Ok(live) })
    }

    fn is_running_anywhere<'a>(&'a self, id: &'a str) -> BoxFuture<'a, anyhow::Result<bool>> {
        Box::pin(async move {
            if self
                .workers
                .lock()
                .expect("workers map poisoned")
                .contains_key(id)
            {
                return Ok(true);
            }
            let id = id.to_owned();
            tokio::task::spawn_blocking(move || any_process_runs_worker(&id))
                .await
                .context("scanning /proc")?
        })
    }
}

/// Whether process `pid` is alive: it exists and is not a zombie (dead, not reaped yet).
pub fn is_alive(pid: u32) -> bool {
    process(pid)
        .and_then(|p| p.stat().ok())
        .is_some_and(|stat| stat.state != 'Z')
}

fn process(pid: u32) -> Option<procfs::process::Process> {
    procfs::process::Process::new(i32::try_from(pid).ok()?).ok()
}

/// Whether process `pid` is alive (not a zombie) and is the worker `id`: its command line has `--id <id>`.
/// Worker ids are random, so a process that reused a dead worker's pid does not match.
pub fn runs_worker(pid: u32, id: &str) -> bool {
    // A zombie's command line is empty, so it never matches.
    process(pid)
        .and_then(|p| p.cmdline().ok())
        .is_some_and(|args| has_worker_id(&args, id))
}

/// Whether a command line is a worker's with `--id <id>`.
fn has_worker_id(args: &[String], id: &str) -> bool {
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        if arg == "--id" {
            return args.next().is_some_and(|a| a == id);
        }
    }
    false
}

fn any_process_runs_worker(id: &str) -> anyhow::Result<bool> {
    let all = procfs::process::all_processes().context("listing /proc")?;
    Ok(all
        .filter_map(Result::ok)
        .any(|p| p.cmdline().is_ok_and(|args| has_worker_id(&args, id))))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

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
        is_alive(pid)
    }

    fn runtime(bin: PathBuf) -> (LocalProcesses, mpsc::UnboundedReceiver<Exited>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (LocalProcesses::new(bin, true, tx), rx)
    }

    async fn wait_for_args(dir: &std::path::Path) -> String {
        let args_file = dir.join("args");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(args) = std::fs::read_to_string(&args_file) {
                if args.ends_with('\n') {
                    return args;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the worker wrote no arguments"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn a_started_worker_is_listed_until_it_is_killed_and_its_end_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        // `exec` so the pid is the sleeping process itself.
        let (rt, mut exits) = runtime(fake_worker(dir.path(), "exec sleep 600"));
        let w = rt.start(spec(dir.path(), "w-1")).await.unwrap();
        assert!(dir.path().join("workers/w-1").is_dir());
        assert_eq!(rt.list().await.unwrap(), vec![w.clone()]);
        assert!(is_running(w.pid));
        let args = wait_for_args(dir.path()).await;

        assert!(rt.kill("w-1").await.unwrap());
        assert!(rt.list().await.unwrap().is_empty());
        assert!(
            !is_running(w.pid),
            "killed worker still running or a zombie"
        );
        assert_eq!(exits.recv().await, Some(w.clone()));
        assert!(!rt.kill("w-1").await.unwrap());

        assert!(args.contains("--id w-1 "), "{args}");
        assert!(args.contains("--role slave"), "{args}");
        assert!(args.contains("--namespace ns"), "{args}");
    }

    #[tokio::test]
    async fn a_worker_that_exits_by_itself_leaves_the_list_and_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let (rt, mut exits) = runtime(fake_worker(dir.path(), "exit 3"));
        let w = rt.start(spec(dir.path(), "w-2")).await.unwrap();
        let exited = tokio::time::timeout(Duration::from_secs(10), exits.recv())
            .await
            .expect("the exit is reported");
        assert_eq!(exited, Some(w.clone()));
        assert!(rt.list().await.unwrap().is_empty());
        assert!(!is_running(w.pid));
        assert!(!rt.kill("w-2").await.unwrap());
    }

    #[tokio::test]
    async fn a_worker_started_elsewhere_is_adopted_killed_and_reported() {
        let dir = tempfile::tempdir().unwrap();
        // No `exec`: the shell keeps the worker's command line (`--id w-4`), by which adoption knows it.
        let bin = fake_worker(dir.path(), "while :; do sleep 0.1; done");
        // Started by "an earlier orchestrator": a runtime that is then forgotten.
        let (first, _) = runtime(bin.clone());
        let w = first.start(spec(dir.path(), "w-4")).await.unwrap();
        wait_for_args(dir.path()).await;

        let (rt, mut exits) = runtime(bin);
        assert!(!rt.adopt("w-other", w.pid).await.unwrap(), "wrong id");
        assert!(rt.adopt("w-4", w.pid).await.unwrap());
        assert!(rt.is_running_anywhere("w-4").await.unwrap());
        assert_eq!(rt.list().await.unwrap(), vec![w.clone()]);
        assert!(rt.kill("w-4").await.unwrap());
        assert_eq!(exits.recv().await, Some(w.clone()));
        assert!(rt.list().await.unwrap().is_empty());
        assert!(
            !rt.adopt("w-4", w.pid).await.unwrap(),
            "dead worker adopted"
        );
    }

    #[tokio::test]
    async fn a_terminated_worker_ends_and_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let (rt, mut exits) = runtime(fake_worker(dir.path(), "exec sleep 600"));
        let w = rt.start(spec(dir.path(), "w-5")).await.unwrap();
        wait_for_args(dir.path()).await;
        assert!(rt.terminate("w-5").await.unwrap());
        let exited = tokio::time::timeout(Duration::from_secs(10), exits.recv())
            .await
            .expect("the exit is reported");
        assert_eq!(exited, Some(w));
    }

    #[tokio::test]
    async fn no_process_runs_an_unknown_worker() {
        let dir = tempfile::tempdir().unwrap();
        let (rt, _) = runtime(dir.path().join("nope"));
        assert!(!rt.is_running_anywhere("w-never-started").await.unwrap());
        assert!(!rt.adopt("w-x", std::process::id()).await.unwrap());
    }

    #[tokio::test]
    async fn a_missing_binary_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let (rt, _) = runtime(dir.path().join("nope"));
        assert!(rt.start(spec(dir.path(), "w-3")).await.is_err());
        assert!(rt.list().await.unwrap().is_empty());
    }

    #[test]
    fn the_worker_id_is_read_from_the_command_line() {
        let args = |line: &str| -> Vec<String> { line.split(' ').map(str::to_owned).collect() };
        let cmdline = args("/bin/worker --id w-1 --data-dir /d");
        assert!(has_worker_id(&cmdline, "w-1"));
        assert!(!has_worker_id(&cmdline, "w-"));
        assert!(!has_worker_id(&args("/bin/worker --id"), "w-1"));
        assert!(!has_worker_id(&[], "w-1"));
    }
}
