//! dbbench's command line.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

/// The two database operations measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Op {
    /// `POST /api/v1/db/write`: insert one row.
    Write,
    /// `POST /api/v1/db/read`: select one row by primary key.
    Read,
}

impl Op {
    pub fn name(self) -> &'static str {
        match self {
            Op::Write => "write",
            Op::Read => "read",
        }
    }
}

/// dbbench: throughput, latency and peak memory of the orchestrator's `db/write` and `db/read`.
///
/// Without --url it starts a cluster in this process (the orchestrator library, which starts worker processes)
/// for each number of slaves, with a namespace of its own on the local RabbitMQ and ZooKeeper.
#[derive(Debug, Clone, Parser)]
#[command(name = "dbbench", version)]
pub struct Config {
    /// Measure an orchestrator that is already running (e.g. http://127.0.0.1:8083) instead of starting one.
    /// Its slaves are whatever it has; the benchmark writes to a table `dbbench_rows` there and drops it at the end.
    #[arg(long)]
    pub url: Option<String>,

    /// Numbers of concurrent clients, comma-separated; each client is a task with its own keep-alive connection.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub clients: Vec<u32>,

    /// Numbers of slaves, comma-separated: one in-process cluster is started for each.
    #[arg(long, value_delimiter = ',', default_value = "1,2", conflicts_with = "url",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub slaves: Vec<u32>,

    /// Operations to measure, comma-separated, in this order.
    #[arg(long, value_delimiter = ',', default_value = "write,read")]
    pub ops: Vec<Op>,

    /// Length of each measured run, in seconds.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    pub seconds: u64,

    /// Length of the warm-up before each measured run (requests sent, not counted), in seconds.
    #[arg(long, default_value_t = 1)]
    pub warmup_seconds: u64,

    /// Rows inserted before the reads; each read selects one of them by a random primary key.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    pub rows: u64,

    /// With --url: the orchestrator's pid, to report its peak memory (otherwise unknown).
    #[arg(long, requires = "url")]
    pub orchestrator_pid: Option<u32>,

    /// RabbitMQ URL of the in-process cluster.
    #[arg(
        long,
        env = "RIDESHARE_AMQP_URL",
        default_value = "amqp://127.0.0.1:5672/%2f"
    )]
    pub amqp_url: String,

    /// ZooKeeper address (HOST:PORT) of the in-process cluster.
    #[arg(long, env = "RIDESHARE_ZK", default_value = "127.0.0.1:2181")]
    pub zk: String,

    /// Worker binary of the in-process cluster [default: `worker` next to this executable].
    #[arg(long, env = "RIDESHARE_WORKER_BIN")]
    pub worker_bin: Option<PathBuf>,
}

impl Config {
    pub fn measured(&self) -> Duration {
        Duration::from_secs(self.seconds)
    }

    pub fn warmup(&self) -> Duration {
        Duration::from_secs(self.warmup_seconds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_definition_is_consistent() {
        use clap::CommandFactory;
        Config::command().debug_assert();
    }

    #[test]
    fn lists_are_comma_separated() {
        let c = Config::try_parse_from([
            "dbbench",
            "--clients",
            "2,8",
            "--slaves",
            "3",
            "--ops",
            "read",
        ])
        .unwrap();
        assert_eq!(c.clients, vec![2, 8]);
        assert_eq!(c.slaves, vec![3]);
        assert_eq!(c.ops, vec![Op::Read]);
        assert_eq!(c.seconds, 5);
    }

    #[test]
    fn slaves_cannot_be_chosen_for_an_orchestrator_already_running() {
        assert!(Config::try_parse_from(["dbbench", "--url", "http://x", "--slaves", "2"]).is_err());
        assert!(Config::try_parse_from(["dbbench", "--url", "http://x"]).is_ok());
    }

    #[test]
    fn zero_clients_is_a_usage_error() {
        assert!(Config::try_parse_from(["dbbench", "--clients", "0"]).is_err());
    }
}
