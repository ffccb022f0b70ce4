//! The orchestrator's command line and environment.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::runtime::hosts::{parse_host, Host};

// One place for each default, shared by the clap attributes and `Config::defaults`.
const DEFAULT_LISTEN: &str = "127.0.0.1:8083";
const DEFAULT_AMQP_URL: &str = "amqp://127.0.0.1:5672/%2f";
const DEFAULT_ZK: &str = "127.0.0.1:2181";
const DEFAULT_DATA_DIR: &str = "./data/orchestrator";
const DEFAULT_REQUEST_TIMEOUT_MS: u64 = 5000;
const DEFAULT_INITIAL_SLAVES: usize = 1;
const DEFAULT_SCALE_INTERVAL_SECS: u64 = 120;
const DEFAULT_WRITE_DEADLINE_MS: u64 = 10_000;
const DEFAULT_READ_DEADLINE_MS: u64 = 10_000;
const DEFAULT_WORKER_IMAGE: &str = "rideshare/worker:latest";
const DEFAULT_DOCKER_NETWORK: &str = "rideshare";
const DEFAULT_DOCKER_DATA_VOLUME: &str = "rideshare-data";

/// Where the workers run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum WorkerRuntime {
    /// Child processes of the orchestrator, on its host (`--worker-bin`), each keeping its copy in
    /// `<data_dir>/workers/<id>`.
    Process,
    /// Processes started on the hosts given by `--worker-host`, each through its host's launcher, each keeping
    /// its copy on its host.
    Hosts,
    /// Docker containers (`--worker-image`), started through the Docker API on `--docker-network`.
    Docker,
    /// Docker Swarm services of one replica each (`--worker-image`), placed across the swarm's nodes, each with
    /// a volume on its node, on `--docker-network` (an overlay network, or `host`); the orchestrator must reach
    /// a manager's Docker engine.
    Swarm,
}

/// RideShare orchestrator: the database API (`db/read`, `db/write`) and control of the worker cluster.
#[derive(Debug, Clone, Parser)]
#[command(name = "orchestrator", version)]
pub struct Config {
    /// Address the HTTP API listens on.
    #[arg(long, env = "RIDESHARE_ORCHESTRATOR_LISTEN", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,

    /// RabbitMQ URL; the virtual host is URL-encoded (`%2f` is `/`). Also handed to every worker started.
    #[arg(long, env = "RIDESHARE_AMQP_URL", default_value = DEFAULT_AMQP_URL)]
    pub amqp_url: String,

    /// ZooKeeper address (HOST:PORT). Also handed to every worker started.
    #[arg(long, env = "RIDESHARE_ZK", default_value = DEFAULT_ZK)]
    pub zk: String,

    /// Prefix of every queue and znode, so several clusters can share one broker and one ZooKeeper
    /// ([A-Za-z0-9_-]).
    #[arg(long, env = "RIDESHARE_NAMESPACE", default_value = protocol::names::DEFAULT_NAMESPACE,
          value_parser = parse_namespace)]
    pub namespace: String,

    /// Directory under which each worker started gets its own data directory, `<DATA_DIR>/workers/<id>` (with
    /// the `process` and `docker` runtimes).
    #[arg(long, env = "RIDESHARE_ORCHESTRATOR_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,

    /// The worker binary to start workers from [default: the `worker` file next to this executable].
    #[arg(long, env = "RIDESHARE_WORKER_BIN")]
    pub worker_bin: Option<PathBuf>,

    /// Where workers run: `process` (children of this process) or `docker` (containers; the orchestrator must
    /// reach the Docker daemon, through DOCKER_HOST or its socket, and its data directory must be the Docker
    /// volume `--docker-data-volume`, mounted at the same path in every worker).
    #[arg(long, env = "RIDESHARE_WORKER_RUNTIME", value_enum, default_value_t = WorkerRuntime::Process)]
    pub worker_runtime: WorkerRuntime,

    /// A host of the `hosts` runtime, `NAME=LAUNCHER:DATA_ROOT` (repeat it for each host; in the environment,
    /// comma-separated). LAUNCHER is an executable that starts the worker binary on that host with the arguments
    /// it is given, exec-ing it (so the pid is the worker's own); worker `id` on that host keeps its copy in
    /// `<DATA_ROOT>/<id>`. Neither path may contain `:` or `,`. A new worker goes to a host that runs none if
    /// there is one, else to the one running the fewest; a copy's worker always restarts on its host.
    #[arg(long = "worker-host", env = "RIDESHARE_WORKER_HOSTS", value_delimiter = ',',
          value_parser = parse_host)]
    pub worker_hosts: Vec<Host>,

    /// The worker image of the Docker runtime.
    #[arg(long, env = "RIDESHARE_WORKER_IMAGE", default_value = DEFAULT_WORKER_IMAGE)]
    pub worker_image: String,

    /// With the Swarm runtime, only nodes carrying this label (`KEY=VALUE`, set with `docker node update
    /// --label-add`) run workers; without it, every ready and active node does.
    #[arg(long, env = "RIDESHARE_SWARM_NODE_LABEL", value_parser = parse_label)]
    pub swarm_node_label: Option<(String, String)>,

    /// The Docker network worker containers join (where RabbitMQ and ZooKeeper are found by name).
    #[arg(long, env = "RIDESHARE_DOCKER_NETWORK", default_value = DEFAULT_DOCKER_NETWORK)]
    pub docker_network: String,

    /// The Docker volume that holds this orchestrator's data directory (the workers' databases), mounted at the
    /// data directory's path in every worker. An orchestrator that runs on the host rather than in a container
    /// gives its data directory itself (an absolute path), which Docker then bind-mounts, with
    /// `--docker-network host` so that the workers reach the broker and ZooKeeper at the same addresses.
    #[arg(long, env = "RIDESHARE_DOCKER_DATA_VOLUME", default_value = DEFAULT_DOCKER_DATA_VOLUME)]
    pub docker_data_volume: String,

    /// How long a `db/read` or `db/write` waits for a worker's answer before giving up with 503. Also the
    /// expiration of the request message, so a request nobody took in time is dropped rather than run late.
    #[arg(long, env = "RIDESHARE_REQUEST_TIMEOUT_MS", default_value_t = DEFAULT_REQUEST_TIMEOUT_MS,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub request_timeout_ms: u64,

    /// How long a `db/write` or `db/clear` keeps trying while there is no master, the master does not answer,
    /// or it answers that it cannot replicate (a failover under way), before answering 503. Every attempt
    /// carries the same idempotency key, so a retry never applies twice. 10 s covers a failover after a real
    /// crash (the ZooKeeper session timeout, 4 s, then the election and a slave rejoining) with room to spare; a
    /// failover started by `crash/master` takes well under a second. 0: one attempt only.
    #[arg(long, env = "RIDESHARE_WRITE_DEADLINE_MS", default_value_t = DEFAULT_WRITE_DEADLINE_MS)]
    pub write_deadline_ms: u64,

    /// How long a `db/read` keeps trying while no slave is in sync or no slave answers, before answering 503.
    /// The same 10 s as writes: a replacement slave catches up and serves within a few seconds. 0: one attempt.
    #[arg(long, env = "RIDESHARE_READ_DEADLINE_MS", default_value_t = DEFAULT_READ_DEADLINE_MS)]
    pub read_deadline_ms: u64,

    /// Number of slaves kept next to the master, until the scaling policy changes it (the supervisor replaces
    /// dead slaves to keep this many). An orchestrator that finds a running cluster with more slaves keeps them.
    #[arg(long, env = "RIDESHARE_INITIAL_SLAVES", default_value_t = DEFAULT_INITIAL_SLAVES)]
    pub initial_slaves: usize,

    /// Length of a scaling interval: at the end of each (the first starts with the first `db/read`), the
    /// number of slaves becomes max(1, ceil(reads / 20)) for that interval's reads.
    #[arg(long, env = "RIDESHARE_SCALE_INTERVAL_SECS", default_value_t = DEFAULT_SCALE_INTERVAL_SECS,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub scale_interval_secs: u64,

    /// The most slaves scaling may ask for, whatever the load: a number, or `auto` for as many as the machine
    /// the workers run on has processors (see `scaling::ceiling_for_cores`). Each slave is a process with its
    /// own copy of the database that applies every write and acknowledges every round, so past the cores more
    /// slaves add contention, not capacity.
    #[arg(long, env = "RIDESHARE_MAX_SLAVES", default_value = "auto", value_parser = parse_max_slaves)]
    pub max_slaves: MaxSlaves,

    /// Replace dead workers and keep the number of slaves at its target. Off only for tests that watch a
    /// cluster degrade; crash APIs and the worker lists work either way.
    #[arg(long, env = "RIDESHARE_SELF_HEALING", default_value_t = true,
          action = clap::ArgAction::Set)]
    pub self_healing: bool,

    /// Kill the workers this process started when it shuts down. Off by default: workers outlive an
    /// orchestrator restart, so the database stays up while the orchestrator is replaced.
    #[arg(
        long,
        env = "RIDESHARE_STOP_WORKERS_ON_SHUTDOWN",
        default_value_t = false
    )]
    pub stop_workers_on_shutdown: bool,
}

impl Config {
    /// The defaults, as if run with no flags and an empty environment (this does not read the environment);
    /// for tests that change a few fields.
    pub fn defaults() -> Self {
        Self {
            listen: DEFAULT_LISTEN.parse().expect("the default address parses"),
            amqp_url: DEFAULT_AMQP_URL.to_owned(),
            zk: DEFAULT_ZK.to_owned(),
            namespace: protocol::names::DEFAULT_NAMESPACE.to_owned(),
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            worker_bin: None,
            worker_runtime: WorkerRuntime::Process,
            worker_hosts: Vec::new(),
            worker_image: DEFAULT_WORKER_IMAGE.to_owned(),
            swarm_node_label: None,
            docker_network: DEFAULT_DOCKER_NETWORK.to_owned(),
            docker_data_volume: DEFAULT_DOCKER_DATA_VOLUME.to_owned(),
            request_timeout_ms: DEFAULT_REQUEST_TIMEOUT_MS,
            write_deadline_ms: DEFAULT_WRITE_DEADLINE_MS,
            read_deadline_ms: DEFAULT_READ_DEADLINE_MS,
            initial_slaves: DEFAULT_INITIAL_SLAVES,
            self_healing: true,
            scale_interval_secs: DEFAULT_SCALE_INTERVAL_SECS,
            max_slaves: MaxSlaves::Auto,
            stop_workers_on_shutdown: false,
        }
    }

    pub fn scale_interval(&self) -> Duration {
        Duration::from_secs(self.scale_interval_secs)
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    pub fn write_deadline(&self) -> Duration {
        Duration::from_millis(self.write_deadline_ms)
    }

    pub fn read_deadline(&self) -> Duration {
        Duration::from_millis(self.read_deadline_ms)
    }

    /// The hosts of the `hosts` runtime; at least one, and only with that runtime.
    pub fn hosts(&self) -> anyhow::Result<Vec<Host>> {
        match self.worker_runtime {
            WorkerRuntime::Hosts => {
                anyhow::ensure!(
                    !self.worker_hosts.is_empty(),
                    "the hosts runtime needs at least one --worker-host NAME=LAUNCHER:DATA_ROOT"
                );
                Ok(self.worker_hosts.clone())
            }
            _ => {
                anyhow::ensure!(
                    self.worker_hosts.is_empty(),
                    "--worker-host is for the hosts runtime (--worker-runtime hosts)"
                );
                Ok(Vec::new())
            }
        }
    }

    /// The worker binary: the configured one, else `worker` in the directory of the running executable (where
    /// cargo puts both binaries of the workspace).
    pub fn worker_bin(&self) -> anyhow::Result<PathBuf> {
        if let Some(bin) = &self.worker_bin {
            return Ok(bin.clone());
        }
        let exe = std::env::current_exe()?;
        let dir = exe
            .parent()
            .ok_or_else(|| anyhow::anyhow!("executable {exe:?} has no parent directory"))?;
        Ok(dir.join("worker"))
    }
}

/// The scaling ceiling as configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaxSlaves {
    /// Follow the processors of the workers' machine.
    Auto,
    Fixed(u64),
}

fn parse_max_slaves(s: &str) -> Result<MaxSlaves, String> {
    match s {
        "auto" => Ok(MaxSlaves::Auto),
        _ => match s.parse::<u64>() {
            Ok(n) if n >= 1 => Ok(MaxSlaves::Fixed(n)),
            _ => Err("must be `auto` or a whole number of at least 1".to_owned()),
        },
    }
}

/// Checked here rather than left to `Names::new`, which panics: a bad flag should be a usage error.
fn parse_namespace(s: &str) -> Result<String, String> {
    if protocol::names::is_valid_name(s) {
        Ok(s.to_owned())
    } else {
        Err("must be non-empty and contain only [A-Za-z0-9_-]".to_owned())
    }
}

/// A node label, `KEY=VALUE`: both non-empty.
fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() && !v.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("a node label is KEY=VALUE, not {s:?}")),
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, FromArgMatches};

    use super::*;

    #[test]
    fn the_command_line_definition_is_consistent() {
        use clap::CommandFactory;
        Config::command().debug_assert();
    }

    #[test]
    fn defaults_match_the_command_line_defaults() {
        // With every `env = ...` lookup off: the test command itself sets RIDESHARE_* variables.
        let command = Config::command().mut_args(|arg| arg.env(None::<&str>));
        let matches = command.try_get_matches_from(["orchestrator"]).unwrap();
        let parsed = Config::from_arg_matches(&matches).unwrap();
        let built = Config::defaults();
        // Compared field by field through Debug: Config has no PartialEq of its own to keep in step.
        assert_eq!(format!("{parsed:?}"), format!("{built:?}"));
    }

    #[test]
    fn the_slave_ceiling_is_auto_by_default_or_a_positive_number() {
        let parse = |args: &[&str]| {
            Config::command()
                .mut_args(|arg| arg.env(None::<&str>))
                .try_get_matches_from([&["orchestrator"], args].concat())
                .map(|m| Config::from_arg_matches(&m).unwrap().max_slaves)
        };
        assert_eq!(parse(&[]).unwrap(), MaxSlaves::Auto);
        assert_eq!(parse(&["--max-slaves", "auto"]).unwrap(), MaxSlaves::Auto);
        assert_eq!(parse(&["--max-slaves", "3"]).unwrap(), MaxSlaves::Fixed(3));
        for bad in ["0", "-1", "1.5", "many", ""] {
            assert!(parse(&["--max-slaves", bad]).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn flags_override_defaults() {
        let c = Config::try_parse_from([
            "orchestrator",
            "--listen",
            "127.0.0.1:0",
            "--namespace",
            "t-1",
            "--request-timeout-ms",
            "200",
            "--stop-workers-on-shutdown",
        ])
        .unwrap();
        assert_eq!(c.listen.port(), 0);
        assert_eq!(c.namespace, "t-1");
        assert_eq!(c.request_timeout(), Duration::from_millis(200));
        assert!(c.stop_workers_on_shutdown);
        assert_eq!(c.initial_slaves, 1);
        assert!(c.self_healing);
    }

    #[test]
    fn the_swarm_runtime_may_be_limited_to_labelled_nodes() {
        let c = Config::try_parse_from([
            "orchestrator",
            "--worker-runtime",
            "swarm",
            "--swarm-node-label",
            "rideshare.db=yes",
        ])
        .unwrap();
        assert_eq!(c.worker_runtime, WorkerRuntime::Swarm);
        assert_eq!(
            c.swarm_node_label,
            Some(("rideshare.db".to_owned(), "yes".to_owned()))
        );
        for bad in ["rideshare.db", "=yes", "rideshare.db="] {
            let parsed = Config::try_parse_from(["orchestrator", "--swarm-node-label", bad]);
            assert!(parsed.is_err(), "{bad}");
        }
    }

    #[test]
    fn the_docker_runtime_is_chosen_by_name() {
        let c = Config::try_parse_from(["orchestrator", "--worker-runtime", "docker"]).unwrap();
        assert_eq!(c.worker_runtime, WorkerRuntime::Docker);
        assert!(Config::try_parse_from(["orchestrator", "--worker-runtime", "podman"]).is_err());
    }

    #[test]
    fn hosts_are_repeated_flags_and_go_with_the_hosts_runtime_only() {
        let c = Config::try_parse_from([
            "orchestrator",
            "--worker-runtime",
            "hosts",
            "--worker-host",
            "a=/l/a.sh:/srv/a",
            "--worker-host",
            "b=/l/b.sh:/srv/b",
        ])
        .unwrap();
        let names: Vec<String> = c.hosts().unwrap().into_iter().map(|h| h.name).collect();
        assert_eq!(names, ["a", "b"]);
        // As the environment gives them: one value, comma-separated.
        let c = Config::try_parse_from([
            "orchestrator",
            "--worker-runtime",
            "hosts",
            "--worker-host",
            "a=/l/a.sh:/srv/a,b=/l/b.sh:/srv/b",
        ])
        .unwrap();
        assert_eq!(c.hosts().unwrap().len(), 2);
        assert!(Config::try_parse_from(["orchestrator", "--worker-host", "a"]).is_err());
        let without =
            Config::try_parse_from(["orchestrator", "--worker-runtime", "hosts"]).unwrap();
        assert!(without.hosts().is_err());
        let misplaced =
            Config::try_parse_from(["orchestrator", "--worker-host", "a=/l/a.sh:/srv/a"]).unwrap();
        assert!(misplaced.hosts().is_err());
    }

    #[test]
    fn self_healing_can_be_turned_off() {
        let c = Config::try_parse_from(["orchestrator", "--self-healing", "false"]).unwrap();
        assert!(!c.self_healing);
    }

    #[test]
    fn a_namespace_with_a_slash_is_a_usage_error() {
        assert!(Config::try_parse_from(["orchestrator", "--namespace", "a/b"]).is_err());
        assert!(Config::try_parse_from(["orchestrator", "--namespace", ""]).is_err());
    }

    #[test]
    fn a_zero_timeout_is_a_usage_error() {
        assert!(Config::try_parse_from(["orchestrator", "--request-timeout-ms", "0"]).is_err());
    }
}
