//! A database worker: one copy of the RideShare database, acting as the master or as a slave.
//!
//! The same binary plays both roles; the role is decided at start (and, with leader election, at run time).
//! - The **master** takes commands from `writeQ`, runs writes in SQLite transactions, turns each transaction
//!   into a log entry stamped (epoch, seq), publishes it on the `syncQ` fanout exchange and answers only once
//!   every in-sync slave has applied it (synchronous replication).
//! - A **slave** binds its own queue to `syncQ`, catches up from a snapshot, joins the in-sync set, applies
//!   entries strictly in order, and serves reads from `readQ` while its read lease holds.
//!
//! Modules:
//! - [`db`]: SQLite: running batches, changesets, applying entries, snapshots, reads (no networking).
//! - [`master`]: the master: its rules as a state machine ([`master::machine`]: group commit, replication
//!   rounds, the in-sync set and read leases) and the loop that connects it to the broker and ZooKeeper.
//! - [`slave`]: the slave: its rules as a state machine ([`slave::machine`]: catch-up, applying the log, the
//!   read lease, retiring), its loop, and the read server ([`slave::reads`]).
//! - [`election`]: standing for election, whose turn it is, and taking the master role over.
//! - [`coord`]: ZooKeeper: registration, the epoch, the in-sync set and the master's leadership lease.

pub mod coord;
pub mod db;
pub mod election;
pub mod master;
pub mod slave;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use protocol::{Names, Role};

/// Command-line and environment configuration of a worker.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "worker", about = "RideShare database worker (master or slave)")]
pub struct Config {
    /// Unique id of this worker ([A-Za-z0-9_-]); names its znode and its sync queue.
    #[arg(long, env = "RIDESHARE_WORKER_ID")]
    pub id: String,
    /// Folder holding this worker's database (`db.sqlite`).
    #[arg(long, env = "RIDESHARE_DATA_DIR")]
    pub data_dir: PathBuf,
    /// RabbitMQ URL.
    #[arg(
        long,
        env = "RIDESHARE_AMQP_URL",
        default_value = "amqp://127.0.0.1:5672/%2f"
    )]
    pub amqp_url: String,
    /// ZooKeeper address (host:port, or a comma-separated ensemble).
    #[arg(long, env = "RIDESHARE_ZK", default_value = "127.0.0.1:2181")]
    pub zk: String,
    /// Namespace of queue and znode names; clusters with different namespaces share nothing.
    #[arg(long, env = "RIDESHARE_NAMESPACE", default_value = protocol::names::DEFAULT_NAMESPACE)]
    pub namespace: String,
    /// Role to start in.
    #[arg(long, env = "RIDESHARE_ROLE", value_parser = parse_role)]
    pub role: Role,
    /// Process id to report (in ZooKeeper and `worker/list`) instead of our own: a worker in a container sees
    /// itself as pid 1, but the contract wants the pid on the host.
    #[arg(long, env = "RIDESHARE_REPORTED_PID")]
    pub reported_pid: Option<u32>,
    /// A file to read the pid to report from, waiting for it to appear: the orchestrator's Docker runtime
    /// learns the container's pid on the host only once the container runs, and writes it there. The worker
    /// waits for it before registering anywhere; without it, after `HOST_PID_WAIT`, the worker gives up.
    #[arg(long, env = "RIDESHARE_HOST_PID_FILE", conflicts_with = "reported_pid")]
    pub host_pid_file: Option<PathBuf>,
    /// Read the pid to report from ZooKeeper (`/<namespace>/host-pids/<id>`), waiting for it to appear: the
    /// orchestrator's Swarm runtime learns the task's container pid on its node once it runs, and cannot write
    /// into a volume that may be on another node. As with the file, the worker registers nowhere before it.
    #[arg(long, env = "RIDESHARE_HOST_PID_FROM_ZK", default_value_t = false,
          action = clap::ArgAction::Set, conflicts_with_all = ["reported_pid", "host_pid_file"])]
    pub host_pid_from_zk: bool,
    /// How long the master waits for a slave's acknowledgement before it gives up on that slave. Short enough
    /// that a dead slave stalls writes briefly, long enough that a busy slave on a loaded 2-core host (GC-free,
    /// but sharing the CPU with the broker) is not dropped by mistake.
    #[arg(long, env = "RIDESHARE_ACK_TIMEOUT_MS", default_value_t = 1000)]
    pub ack_timeout_ms: u64,
    /// Read lease granted to in-sync slaves by every entry and heartbeat. A dropped slave stops serving reads
    /// at most this long after its last renewal; the master waits this long before acknowledging writes
    /// without it. Shorter means faster recovery from a dead slave, longer means fewer heartbeats matter.
    #[arg(long, env = "RIDESHARE_LEASE_MS", default_value_t = 1500)]
    pub lease_ms: u64,
    /// How often an idle master sends heartbeats: well under the lease so that one lost heartbeat does not
    /// cost a lease.
    #[arg(long, env = "RIDESHARE_HEARTBEAT_MS", default_value_t = 250)]
    pub heartbeat_ms: u64,
    /// The most commands the master takes into one transaction and one replication round.
    #[arg(long, env = "RIDESHARE_MAX_BATCH", default_value_t = 256)]
    pub max_batch: usize,
    /// Writes are acknowledged only while at least this many slaves are in sync: with 0, a write acknowledged
    /// by a lone master would be lost if that master died.
    #[arg(long, env = "RIDESHARE_MIN_IN_SYNC", default_value_t = 1)]
    pub min_in_sync: usize,
    /// ZooKeeper session timeout. A worker that is killed or cut off loses its znodes (and a master its role)
    /// this long after it went silent; see ARCHITECTURE.md for the trade-off.
    #[arg(long, env = "RIDESHARE_ZK_SESSION_MS", default_value_t = 4000)]
    pub zk_session_ms: u64,
    /// Reads a slave runs at once (one SQLite connection each).
    #[arg(long, env = "RIDESHARE_READERS", default_value_t = 4)]
    pub readers: usize,
}

fn parse_role(s: &str) -> Result<Role, String> {
    match s {
        "master" => Ok(Role::Master),
        "slave" => Ok(Role::Slave),
        _ => Err(format!("role must be master or slave, not {s:?}")),
    }
}

impl Config {
    pub fn names(&self) -> Names {
        Names::new(&self.namespace)
    }

    pub fn db_path(&self) -> PathBuf {
        self.data_dir.join(protocol::disk::DB_FILE)
    }

    pub fn pid(&self) -> u32 {
        self.reported_pid.unwrap_or_else(std::process::id)
    }

    pub fn ack_timeout(&self) -> Duration {
        Duration::from_millis(self.ack_timeout_ms)
    }

    pub fn lease(&self) -> Duration {
        Duration::from_millis(self.lease_ms)
    }

    pub fn heartbeat(&self) -> Duration {
        Duration::from_millis(self.heartbeat_ms)
    }
}

/// How long a worker in a container waits for its host pid. The orchestrator writes it right after the
/// container starts; an orchestrator that died in between never will, and the worker then exits rather than
/// register a wrong pid (its folder is reused by the next start).
const HOST_PID_WAIT: Duration = Duration::from_secs(30);

/// Reads the pid the orchestrator wrote to `path` (decimal, written to a temporary file then renamed, so a
/// file that exists is complete).
async fn wait_for_host_pid(path: &std::path::Path) -> anyhow::Result<u32> {
    let deadline = tokio::time::Instant::now() + HOST_PID_WAIT;
    loop {
        match tokio::fs::read_to_string(path).await {
            Ok(text) => {
                return text.trim().parse().with_context(|| {
                    format!(
                        "the host pid in {} is not a number: {text:?}",
                        path.display()
                    )
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "no host pid in {} after {HOST_PID_WAIT:?}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Reads the pid the orchestrator wrote to this worker's host-pid znode, waiting for it (on a watch, not by
/// asking again) up to [`HOST_PID_WAIT`]. A session of its own, closed once read: the registration's session
/// starts afterwards, with the pid it must carry.
async fn wait_for_host_pid_znode(config: &Config) -> anyhow::Result<u32> {
    let client = zookeeper_client::Client::connector()
        .with_session_timeout(Duration::from_millis(config.zk_session_ms))
        .connect(&config.zk)
        .await
        .context("connecting to ZooKeeper for the host pid")?;
    let path = config.names().zk_host_pid(&config.id);
    let deadline = tokio::time::Instant::now() + HOST_PID_WAIT;
    loop {
        let (stat, watcher) = client.check_and_watch_stat(&path).await?;
        if stat.is_some() {
            let (data, _) = client.get_data(&path).await?;
            let text = String::from_utf8_lossy(&data);
            return text
                .trim()
                .parse()
                .with_context(|| format!("the host pid in {path} is not a number: {text:?}"));
        }
        tokio::time::timeout_at(deadline, watcher.changed())
            .await
            .map_err(|_| anyhow::anyhow!("no host pid in {path} after {HOST_PID_WAIT:?}"))?;
    }
}

/// Runs the worker until `shutdown` resolves or a fatal error (lost ZooKeeper session, lost broker) happens.
pub async fn run(
    mut config: Config,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    // Before anything else: the id names the host-pid znode read next.
    anyhow::ensure!(
        protocol::names::is_valid_name(&config.id),
        "worker id must be non-empty [A-Za-z0-9_-]"
    );
    if let Some(path) = config.host_pid_file.take() {
        config.reported_pid = Some(wait_for_host_pid(&path).await?);
    }
    if config.host_pid_from_zk {
        config.reported_pid = Some(wait_for_host_pid_znode(&config).await?);
        config.host_pid_from_zk = false;
    }
    let names = config.names();
    let zk = coord::Coord::connect(&config, names.clone())
        .await
        .context("connecting to ZooKeeper")?;
    // Turned true on shutdown: a slave then leaves the in-sync set before it exits (scaling down must not look
    // like a crash, nor stall writes while its lease runs out).
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let work = async {
        let mut stop = stop_rx;
        // The master role, once held, outlives a lost broker connection: the role lives in ZooKeeper.
        let mut role: Option<coord::MasterRole> = None;
        if config.role == Role::Master {
            let db = db::Db::open_master(&config.db_path())?;
            let (epoch, seq) = db.position();
            zk.register(&protocol::coord::WorkerRecord {
                id: config.id.clone(),
                pid: config.pid(),
                role: Role::Master,
                epoch,
                applied_seq: seq,
            })
            .await?;
            role = Some(
                election::Election::new(&zk)
                    .take_master_role(epoch, false)
                    .await
                    .context("taking the master role")?,
            );
        }
        loop {
            let amqp =
                broker::connect_with_backoff(&config.amqp_url, &format!("worker-{}", config.id))
                    .await;
            let broker_lost = async {
                while amqp.status().connected() {
                    tokio::time::sleep(BROKER_CHECK).await;
                }
            };
            let served = async {
                broker::declare(&amqp, &names)
                    .await
                    .context("declaring queues")?;
                if role.is_none() {
                    match slave::run(&config, &zk, &amqp, &mut stop).await? {
                        slave::End::Promoted(replica, won) => {
                            drop(replica);
                            role = Some(won);
                        }
                        slave::End::Left => return Ok(()),
                    }
                }
                let role = role.as_mut().expect("the master role is held");
                // Reopened for writing: foreign keys, triggers and the authorizer are the master's.
                let db = db::Db::open_master(&config.db_path())?;
                tokio::select! {
                    res = master::run(&config, &zk, &amqp, db, role) => res,
                    () = zk.keep_leadership() => unreachable!("keep_leadership runs forever"),
                    _ = stop.changed() => Ok(()),
                }
            };
            let res = tokio::select! {
                res = served => res,
                () = broker_lost => Err(anyhow::anyhow!("connection to RabbitMQ lost")),
            };
            match res {
                Err(e) if !amqp.status().connected() => {
                    // A slave starts over from a snapshot (its sync queue died with the connection); a master
                    // keeps its role and its members rejoin.
                    tracing::warn!("{e:#}: reconnecting to RabbitMQ");
                }
                other => return other,
            }
        }
    };
    let mut work = std::pin::pin!(work);
    tokio::select! {
        res = &mut work => res,
        lost = zk.session_lost() => Err(anyhow::anyhow!("ZooKeeper session lost: {lost}")),
        () = shutdown => {
            let _ = stop_tx.send(true);
            // A slave in sync leaves within its reads' and the master's time; anything else just stops.
            match tokio::time::timeout(GRACEFUL_STOP, &mut work).await {
                Ok(res) => res,
                Err(_) => Ok(()),
            }
        }
    }
}

/// How long a stopping worker may take to leave gracefully.
const GRACEFUL_STOP: Duration = Duration::from_secs(5);

/// How often the connection to RabbitMQ is checked.
const BROKER_CHECK: Duration = Duration::from_millis(200);

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[tokio::test]
    async fn the_host_pid_is_read_once_the_orchestrator_writes_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("host-pid");
        let writer = {
            let path = path.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                std::fs::write(&path, "31337\n").unwrap();
            })
        };
        assert_eq!(wait_for_host_pid(&path).await.unwrap(), 31337);
        writer.await.unwrap();
    }

    #[tokio::test]
    async fn a_host_pid_file_that_is_not_a_number_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("host-pid");
        std::fs::write(&path, "pid one\n").unwrap();
        let e = wait_for_host_pid(&path).await.unwrap_err();
        assert!(format!("{e:#}").contains("not a number"), "{e:#}");
    }

    /// A worker told to read its host pid from ZooKeeper, in a namespace of its own on the ZooKeeper that
    /// `scripts/test.sh` starts.
    fn znode_config(namespace: &str) -> Config {
        Config::try_parse_from([
            "worker",
            "--id",
            "w-pid",
            "--data-dir",
            "/nonexistent",
            "--role",
            "slave",
            "--namespace",
            namespace,
            "--host-pid-from-zk",
            "true",
        ])
        .unwrap()
    }

    async fn zk_client(config: &Config) -> zookeeper_client::Client {
        let client = zookeeper_client::Client::connect(&config.zk).await.unwrap();
        let options = coord::persistent();
        client
            .mkdir(&config.names().zk_host_pids(), &options)
            .await
            .unwrap();
        client
    }

    #[tokio::test]
    async fn the_host_pid_znode_is_waited_for_and_read_once_the_orchestrator_writes_it() {
        let namespace = format!("hostpid-{}", std::process::id());
        let config = znode_config(&namespace);
        let client = zk_client(&config).await;
        let path = config.names().zk_host_pid(&config.id);
        let reader = tokio::spawn({
            let config = config.clone();
            async move { wait_for_host_pid_znode(&config).await }
        });
        // Whether the reader already waits on its watch or looks only now, it reads the pid once written.
        tokio::task::yield_now().await;
        client
            .create(&path, b"4711", &coord::persistent())
            .await
            .unwrap();
        assert_eq!(reader.await.unwrap().unwrap(), 4711);
        client.delete(&path, None).await.unwrap();
        client
            .create(&path, b"pid", &coord::persistent())
            .await
            .unwrap();
        let e = wait_for_host_pid_znode(&config).await.unwrap_err();
        assert!(format!("{e:#}").contains("not a number"), "{e:#}");
        client.delete(&path, None).await.unwrap();
        client
            .delete(&config.names().zk_host_pids(), None)
            .await
            .unwrap();
        client
            .delete(&config.names().zk_root(), None)
            .await
            .unwrap();
    }

    #[test]
    fn the_pid_comes_from_one_place_only() {
        let both = Config::try_parse_from([
            "worker",
            "--id",
            "w",
            "--data-dir",
            "d",
            "--role",
            "slave",
            "--host-pid-file",
            "f",
            "--host-pid-from-zk",
            "true",
        ]);
        assert!(both.is_err());
    }
}
