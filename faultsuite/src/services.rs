//! The processes of a run on their hosts: ZooKeeper, RabbitMQ and the orchestrator, each a child of the suite
//! in a process group of its own, started again by the suite when the nemesis kills it (the suite is their init
//! system; the orchestrator does the same for its workers). Each host's Rust processes read a wall clock of the
//! host's own: libfaketime with an offset file per host, which the nemesis rewrites to step that clock
//! (monotonic clocks are left alone, as on real hosts).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Child;

use crate::hosts::Host;

/// libfaketime as Debian installs it.
pub const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// How often a faked process re-reads its host's offset file: a clock step takes effect within this long.
const FAKETIME_REREAD_SECS: u32 = 1;

/// How long a service may take to answer after it was started.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Ports, the same on every host (each host has its own network namespace).
pub const ZK_PORT: u16 = 2181;
pub const AMQP_PORT: u16 = 5672;
/// The home of Debian's `rabbitmq` user.
const RABBITMQ_HOME: &str = "/var/lib/rabbitmq";
pub const ORCHESTRATOR_PORT: u16 = 8083;

/// The wall clock of one host, as an offset from the machine's own, in a file its processes read.
#[derive(Debug, Clone)]
pub struct HostClock {
    file: PathBuf,
}

impl HostClock {
    pub fn new(dir: &Path, host: &Host) -> anyhow::Result<HostClock> {
        let clock = HostClock {
            file: dir.join(format!("{}.faketime", host.name)),
        };
        clock.set_offset_ms(0)?;
        Ok(clock)
    }

    /// Sets the host's wall clock to the machine's plus `offset_ms` (negative: behind). A running process sees it
    /// within a second.
    pub fn set_offset_ms(&self, offset_ms: i64) -> anyhow::Result<()> {
        // libfaketime takes a relative offset in seconds, fractions allowed.
        let spec = format!("{:+.3}", offset_ms as f64 / 1000.0);
        let tmp = self.file.with_extension("tmp");
        std::fs::write(&tmp, format!("{spec}\n"))?;
        std::fs::rename(&tmp, &self.file)?;
        Ok(())
    }

    /// The environment that makes a process read this clock.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("LD_PRELOAD".into(), LIBFAKETIME.into()),
            (
                "FAKETIME_TIMESTAMP_FILE".into(),
                self.file.display().to_string(),
            ),
            (
                "FAKETIME_CACHE_DURATION".into(),
                FAKETIME_REREAD_SECS.to_string(),
            ),
            ("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into()),
        ]
    }
}

/// A script that starts a program on a host, with the host's clock, `exec`ing it so that its pid is the
/// program's own: what the orchestrator is given to start workers on worker hosts.
pub fn write_launcher(
    path: &Path,
    host: &Host,
    clock: &HostClock,
    program: &Path,
) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let env: Vec<String> = clock
        .env()
        .into_iter()
        .map(|(k, v)| format!("{k}='{v}'"))
        .collect();
    let script = format!(
        "#!/bin/sh\n# Written by the fault suite: starts {program} on host {host}.\nexec ip netns exec {netns} env {env} '{program}' \"$@\"\n",
        program = program.display(),
        host = host.name,
        netns = host.netns,
        env = env.join(" "),
    );
    std::fs::write(path, script)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}

/// Whether something accepts connections at `addr:port`.
pub async fn answers(addr: Ipv4Addr, port: u16) -> bool {
    tokio::time::timeout(
        Duration::from_secs(1),
        tokio::net::TcpStream::connect((addr, port)),
    )
    .await
    .is_ok_and(|c| c.is_ok())
}

/// ZooKeeper's own readiness: its `srvr` command answers with its mode.
async fn zookeeper_serves(addr: Ipv4Addr) -> bool {
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect((addr, ZK_PORT)).await.ok()?;
        stream.write_all(b"srvr").await.ok()?;
        let mut reply = String::new();
        stream.read_to_string(&mut reply).await.ok()?;
        Some(reply.contains("Mode:"))
    };
    tokio::time::timeout(Duration::from_secs(2), attempt)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

/// What a service is, so that it can be started again the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    ZooKeeper,
    RabbitMq,
    Orchestrator,
}

/// One service of the run on its host.
pub struct Service {
    pub kind: Kind,
    pub host: Host,
    dir: PathBuf,
    command: Vec<String>,
    env: Vec<(String, String)>,
    child: Option<Child>,
    /// Files of the service's own kept outside `dir` (RabbitMQ's), removed with it; it runs in this folder.
    state: Option<tempfile::TempDir>,
}

impl Service {
    /// ZooKeeper on `host`, with its data and logs under `dir`.
    pub fn zookeeper(host: &Host, dir: &Path) -> anyhow::Result<Service> {
        let data = dir.join("data");
        std::fs::create_dir_all(&data)?;
        let config = dir.join("zoo.cfg");
        std::fs::write(
            &config,
            format!(
                "tickTime=2000\ndataDir={}\nclientPort={ZK_PORT}\nclientPortAddress={}\nmaxClientCnxns=0\n\
                 admin.enableServer=false\n4lw.commands.whitelist=srvr\n",
                data.display(),
                host.addr
            ),
        )?;
        Ok(Service {
            kind: Kind::ZooKeeper,
            host: host.clone(),
            dir: dir.to_owned(),
            command: vec![
                "/usr/share/zookeeper/bin/zkServer.sh".into(),
                "start-foreground".into(),
                config.display().to_string(),
            ],
            env: vec![
                ("JMXDISABLE".into(), "true".into()),
                ("ZOO_LOG_DIR".into(), dir.display().to_string()),
            ],
            child: None,
            state: None,
        })
    }

    /// RabbitMQ on `host`, with its output in `dir/out.log`, accepting connections from every host (its default
    /// user is otherwise limited to loopback).
    pub fn rabbitmq(host: &Host, dir: &Path) -> anyhow::Result<Service> {
        std::fs::create_dir_all(dir)?;
        // The broker runs as the `rabbitmq` user (as Debian's service does), which must own its database, and
        // reach it: `dir` may lie under a folder only root may enter (a CI clone in a `mktemp -d` folder, say), so
        // its files go into a folder of its own under its home, which every step down to is open to it.
        let state = tempfile::Builder::new()
            .prefix("faultsuite-")
            .tempdir_in(RABBITMQ_HOME)
            .with_context(|| {
                format!("making a folder in {RABBITMQ_HOME} (is rabbitmq-server installed?)")
            })?;
        let root = state.path();
        std::fs::create_dir_all(root.join("mnesia"))?;
        std::fs::create_dir_all(root.join("log"))?;
        std::fs::write(
            root.join("rabbitmq.conf"),
            format!(
                "loopback_users = none\nlisteners.tcp.default = {}:{AMQP_PORT}\n",
                host.addr
            ),
        )?;
        let chown = std::process::Command::new("chown")
            .args(["-R", "rabbitmq:rabbitmq"])
            .arg(root)
            .status()?;
        anyhow::ensure!(chown.success(), "chown of {} failed", root.display());
        let d = |p: &str| root.join(p).display().to_string();
        Ok(Service {
            kind: Kind::RabbitMq,
            host: host.clone(),
            dir: dir.to_owned(),
            command: vec![
                "runuser".into(),
                "-u".into(),
                "rabbitmq".into(),
                "--".into(),
                "env".into(),
                format!("HOME={RABBITMQ_HOME}"),
                // `localhost` resolves in every namespace; the node talks to its tools over loopback.
                "RABBITMQ_NODENAME=rabbit@localhost".into(),
                format!("RABBITMQ_MNESIA_BASE={}", d("mnesia")),
                format!("RABBITMQ_LOG_BASE={}", d("log")),
                format!("RABBITMQ_CONFIG_FILE={}", d("rabbitmq")),
                format!("RABBITMQ_PID_FILE={}", d("pid")),
                "/usr/lib/rabbitmq/bin/rabbitmq-server".into(),
            ],
            env: Vec::new(),
            child: None,
            state: Some(state),
        })
    }

    /// The orchestrator on `host`: `program` and its arguments, with the host's clock.
    pub fn orchestrator(
        host: &Host,
        dir: &Path,
        clock: &HostClock,
        program: &Path,
        args: Vec<String>,
    ) -> anyhow::Result<Service> {
        std::fs::create_dir_all(dir)?;
        let mut command = vec![program.display().to_string()];
        command.extend(args);
        Ok(Service {
            kind: Kind::Orchestrator,
            host: host.clone(),
            dir: dir.to_owned(),
            command,
            env: clock.env(),
            child: None,
            state: None,
        })
    }

    /// Starts it (again), with its output appended to `<dir>/out.log`, and waits until it answers.
    pub async fn start(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("out.log"))?;
        let mut command = self.host.command(&self.command[0]);
        command
            .args(&self.command[1..])
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(self.state.as_ref().map_or(self.dir.as_path(), |s| s.path()))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            // Its own process group: killed as a whole, and not by a Ctrl-C meant for the suite.
            .process_group(0)
            .kill_on_drop(true);
        self.child = Some(
            command
                .spawn()
                .with_context(|| format!("starting {:?} on {}", self.kind, self.host.name))?,
        );
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        while !self.serves().await {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!(
                    "{:?} on {} exited while starting ({status}); see {}",
                    self.kind,
                    self.host.name,
                    self.dir.join("out.log").display()
                );
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "{:?} on {} did not answer within {START_TIMEOUT:?}",
                    self.kind,
                    self.host.name
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(())
    }

    /// Whether it answers now.
    pub async fn serves(&self) -> bool {
        match self.kind {
            Kind::ZooKeeper => zookeeper_serves(self.host.addr).await,
            Kind::RabbitMq => answers(self.host.addr, AMQP_PORT).await,
            Kind::Orchestrator => answers(self.host.addr, ORCHESTRATOR_PORT).await,
        }
    }

    /// SIGKILLs it, and reaps it. ZooKeeper and RabbitMQ go with their whole process group (the broker is a
    /// few processes deep); the orchestrator alone, as a crash would take it: its workers, in its group, live
    /// on, to be adopted by the next one.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Some(pid) = child.id() {
                let target = match self.kind {
                    Kind::Orchestrator => pid.to_string(),
                    Kind::ZooKeeper | Kind::RabbitMq => format!("-{pid}"),
                };
                let _ = std::process::Command::new("kill")
                    .args(["-KILL", "--", &target])
                    .output();
                let _ = child.wait().await;
                // Its other processes die as soon as the signal reaches them, not with the leader: wait until
                // none is left, so that nothing answers once this returns.
                let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
                while group_alive(&target) && tokio::time::Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }

    /// The main process's pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// Whether its process still runs (a crash the suite did not cause shows as `false`).
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }
}

/// Whether a process (`pid`) or a process group (`-pgid`) still has a process.
fn group_alive(target: &str) -> bool {
    std::process::Command::new("kill")
        .args(["-0", "--", target])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// SIGSTOPs (`pause`) or SIGCONTs every process on a host: the host freezes as a paused VM would.
pub fn signal_host(host: &Host, pause: bool) {
    let Ok(out) = std::process::Command::new("ip")
        .args(["netns", "pids", &host.netns])
        .output()
    else {
        return;
    };
    let signal = if pause { "-STOP" } else { "-CONT" };
    for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
        let _ = std::process::Command::new("kill")
            .args([signal, pid])
            .output();
    }
}
