//! Workers as processes started on hosts: each host is a launcher, an executable that starts the worker binary
//! on that host, and a data root, the folder on that host under which each worker's copy lives
//! (`<DATA_ROOT>/<id>`). A copy stays on its host: a worker restarted on its copy is started there again.
//!
//! The launcher is given the worker's arguments and must exec the worker (`exec ... worker "$@"`), so that the
//! process started is the worker itself: its pid is the worker's own, the one it registers in ZooKeeper, and
//! signals reach it. The hosts share this machine's process ids (a network namespace per host, say), so killing,
//! watching and adopting work as for local processes; only where a worker starts and where its copy lives
//! differ. Running workers on this machine, the local-process runtime, is the case of one host, `local`, whose
//! launcher is the worker binary itself and whose data root is `<data_dir>/workers` ([`Hosts::local`]).
//!
//! Each worker is owned by one task that waits for the process to end (reaping a child so it never lingers as
//! a zombie; watching a pidfd for an adopted one) and sends it signals on request. The shared map only holds
//! what `list` and the signalling methods need; the task removes the entry before it reports the exit, so
//! `list` never shows a worker whose exit was reported.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use futures::future::BoxFuture;
use protocol::Role;
use rustix::process::{Pid, PidfdFlags, Signal};
use tokio::process::Command;
use tokio::sync::{mpsc, oneshot};

use super::{by_pid, remove_folder, Exited, WorkerProcess, WorkerRuntime, WorkerSpec};

/// The name of the local-process runtime's one host.
pub const LOCAL_HOST: &str = "local";

/// A host workers run on, as configured by `--worker-host NAME=LAUNCHER:DATA_ROOT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// How copies name their host in the registry of copies ([A-Za-z0-9_-]).
    pub name: String,
    /// An executable that starts the worker binary on this host with the arguments it is given, exec-ing it.
    pub launcher: PathBuf,
    /// The folder on this host under which worker `id` keeps its copy, `<data_root>/<id>`.
    pub data_root: PathBuf,
}

impl Host {
    /// The local-process runtime's host: this machine, the worker binary as its own launcher, and
    /// `<data_dir>/workers` as the root.
    pub fn local(worker_bin: PathBuf, data_dir: &Path) -> Host {
        Host {
            name: LOCAL_HOST.to_owned(),
            launcher: worker_bin,
            data_root: data_dir.join("workers"),
        }
    }

    /// Where worker `id` keeps its copy on this host.
    pub fn copy_dir(&self, id: &str) -> PathBuf {
        self.data_root.join(id)
    }
}

/// Parses `NAME=LAUNCHER:DATA_ROOT` (neither path may contain `:`).
pub fn parse_host(s: &str) -> Result<Host, String> {
    let (name, rest) = s
        .split_once('=')
        .ok_or_else(|| format!("expected NAME=LAUNCHER:DATA_ROOT, not {s:?}"))?;
    if !protocol::names::is_valid_name(name) {
        return Err(format!(
            "a host's name must be non-empty [A-Za-z0-9_-], not {name:?}"
        ));
    }
    let (launcher, data_root) = rest
        .split_once(':')
        .ok_or_else(|| format!("expected NAME=LAUNCHER:DATA_ROOT, not {s:?}"))?;
    if launcher.is_empty() || data_root.is_empty() || data_root.contains(':') {
        return Err(format!(
            "expected NAME=LAUNCHER:DATA_ROOT with two paths without ':', not {s:?}"
        ));
    }
    Ok(Host {
        name: name.to_owned(),
        launcher: launcher.into(),
        data_root: data_root.into(),
    })
}

/// Workers as processes on [`Host`]s: those it starts are its children (through their launcher, which execs
/// the worker), those it adopts are not (their parent, an earlier orchestrator, is gone).
pub struct Hosts {
    hosts: Vec<Host>,
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

impl Hosts {
    /// Workers on `hosts` (at least one, each name once). `kill_on_drop`: kill the workers this runtime starts
    /// when their tasks are dropped (the tokio runtime shuts down, a test panics), so tests leave no stray
    /// workers. Off in production, where workers outlive the orchestrator. Every exit is sent on `exits`.
    pub fn new(
        hosts: Vec<Host>,
        kill_on_drop: bool,
        exits: mpsc::UnboundedSender<Exited>,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(!hosts.is_empty(), "no host to run workers on");
        for (i, host) in hosts.iter().enumerate() {
            anyhow::ensure!(
                hosts[..i].iter().all(|h| h.name != host.name),
                "host {:?} is configured twice",
                host.name
            );
        }
        Ok(Self {
            hosts,
            kill_on_drop,
            workers: Arc::default(),
            exits,
        })
    }

    /// Workers as processes of this machine: the one host [`Host::local`].
    pub fn local(
        worker_bin: PathBuf,
        data_dir: &Path,
        kill_on_drop: bool,
        exits: mpsc::UnboundedSender<Exited>,
    ) -> Self {
        Self::new(vec![Host::local(worker_bin, data_dir)], kill_on_drop, exits)
            .expect("one host is a valid set of hosts")
    }

    fn host(&self, name: &str) -> anyhow::Result<&Host> {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .with_context(|| format!("no host {name:?} is configured"))
    }

    async fn spawn(&self, spec: WorkerSpec) -> anyhow::Result<WorkerProcess> {
        let host = self.host(&spec.host)?;
        let data_dir = host.copy_dir(&spec.id);
        std::fs::create_dir_all(&data_dir)
            .with_context(|| format!("creating the worker's data directory {data_dir:?}"))?;
        let role = match spec.role {
            Role::Master => "master",
            Role::Slave => "slave",
        };
        let child = Command::new(&host.launcher)
            .arg("--id")
            .arg(&spec.id)
            .arg("--data-dir")
            .arg(&data_dir)
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
            .with_context(|| {
                format!(
                    "starting worker {} on host {} with {:?}",
                    spec.id, host.name, host.launcher
                )
            })?;
        let pid = child
            .id()
            .context("the worker exited before its pid could be read")?;
        self.watch(spec.id.clone(), pid, Process::Child(child));
        tracing::info!(worker = %spec.id, pid, role, host = %host.name, "worker started");
        Ok(WorkerProcess { id: spec.id, pid })
    }

    /// Whether worker `id` is one this runtime started or adopted, and is alive.
    fn knows(&self, id: &str) -> bool {
        self.workers
            .lock()
            .expect("workers map poisoned")
            .contains_key(id)
    }

    async fn adopt_one(&self, id: &str, pid: u32) -> anyhow::Result<bool> {
        if self.knows(id) {
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

impl WorkerRuntime for Hosts {
    fn hosts(&self) -> Vec<String> {
        self.hosts.iter().map(|h| h.name.clone()).collect()
    }

    /// This machine's: every host's launcher runs here (local processes, or the test bed's hosts, which are
    /// network namespaces sharing this machine's processors).
    fn cores(&self) -> BoxFuture<'_, anyhow::Result<usize>> {
        Box::pin(async { Ok(std::thread::available_parallelism()?.get()) })
    }

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
            if self.knows(id) {
                return Ok(true);
            }
            let id = id.to_owned();
            tokio::task::spawn_blocking(move || any_process_runs_worker(&id))
                .await
                .context("scanning /proc")?
        })
    }

    fn remove_copy<'a>(&'a self, host: &'a str, id: &'a str) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            let root = self.host(host)?.data_root.clone();
            let id = id.to_owned();
            tokio::task::spawn_blocking(move || remove_folder(&root, &id))
                .await
                .context("removing a copy")?
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

    fn spec(id: &str) -> WorkerSpec {
        WorkerSpec {
            id: id.into(),
            role: Role::Slave,
            host: LOCAL_HOST.into(),
            amqp_url: "amqp://x".into(),
            zk: "zk:1".into(),
            namespace: "ns".into(),
        }
    }

    fn is_running(pid: u32) -> bool {
        is_alive(pid)
    }

    /// The local runtime, its data directory the folder `bin` is in.
    fn runtime(bin: PathBuf) -> (Hosts, mpsc::UnboundedReceiver<Exited>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let dir = bin.parent().unwrap().to_owned();
        (Hosts::local(bin, &dir, true, tx), rx)
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
        let w = rt.start(spec("w-1")).await.unwrap();
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
        let w = rt.start(spec("w-2")).await.unwrap();
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
        let w = first.start(spec("w-4")).await.unwrap();
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
        let w = rt.start(spec("w-5")).await.unwrap();
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
        assert!(rt.start(spec("w-3")).await.is_err());
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

    #[tokio::test]
    async fn each_worker_starts_through_its_hosts_launcher_on_its_copy_under_that_hosts_root() {
        let dir = tempfile::tempdir().unwrap();
        let host = |name: &str| {
            let home = dir.path().join(name);
            std::fs::create_dir_all(&home).unwrap();
            Host {
                name: name.to_owned(),
                launcher: fake_worker(&home, "exec sleep 600"),
                data_root: home.join("data"),
            }
        };
        let (a, b) = (host("a"), host("b"));
        let (tx, mut exits) = mpsc::unbounded_channel();
        let rt = Hosts::new(vec![a.clone(), b.clone()], true, tx).unwrap();
        assert_eq!(rt.hosts(), ["a", "b"]);

        let w = rt
            .start(WorkerSpec {
                host: "b".into(),
                ..spec("w-1")
            })
            .await
            .unwrap();
        let args = wait_for_args(&dir.path().join("b")).await;
        assert!(
            args.contains(&format!("--data-dir {}", b.copy_dir("w-1").display())),
            "{args}"
        );
        assert!(b.copy_dir("w-1").is_dir());
        assert!(!dir.path().join("a/args").exists(), "host a's launcher ran");

        // The copy is removed only on the host that holds it.
        std::fs::create_dir_all(a.copy_dir("w-1")).unwrap();
        assert!(rt.kill("w-1").await.unwrap());
        assert_eq!(exits.recv().await, Some(w));
        rt.remove_copy("b", "w-1").await.unwrap();
        assert!(!b.copy_dir("w-1").exists());
        assert!(a.copy_dir("w-1").exists());

        let elsewhere = WorkerSpec {
            host: "c".into(),
            ..spec("w-2")
        };
        assert!(rt.start(elsewhere).await.is_err(), "an unknown host");
        assert!(rt.remove_copy("c", "w-2").await.is_err());
    }

    #[test]
    fn the_local_runtime_is_one_host_whose_launcher_is_the_worker_binary() {
        let host = Host::local("/bin/worker".into(), Path::new("/data"));
        assert_eq!(host.name, LOCAL_HOST);
        assert_eq!(host.launcher, PathBuf::from("/bin/worker"));
        assert_eq!(host.copy_dir("w-1"), PathBuf::from("/data/workers/w-1"));
    }

    #[test]
    fn a_host_is_a_name_a_launcher_and_a_data_root() {
        assert_eq!(
            parse_host("a=/opt/launch-a.sh:/srv/a").unwrap(),
            Host {
                name: "a".into(),
                launcher: "/opt/launch-a.sh".into(),
                data_root: "/srv/a".into(),
            }
        );
        for bad in [
            "",
            "a",
            "a=/launch",
            "=/launch:/srv",
            "a b=/launch:/srv",
            "a=:/srv",
            "a=/launch:",
            "a=/launch:/srv:/x",
        ] {
            assert!(parse_host(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn a_host_configured_twice_or_no_host_is_refused() {
        let (tx, _) = mpsc::unbounded_channel();
        let a = Host::local("/bin/worker".into(), Path::new("/data"));
        assert!(Hosts::new(vec![a.clone(), a], false, tx.clone()).is_err());
        assert!(Hosts::new(vec![], false, tx).is_err());
    }
}
