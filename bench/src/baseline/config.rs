//! The baseline's command line and environment.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

const DEFAULT_LISTEN: &str = "127.0.0.1:8090";
const DEFAULT_READERS: usize = 4;
const DEFAULT_COUNT_FLUSH_MS: u64 = 100;

/// RideShare baseline: the public API (users, rides, `_count`) in one process on one local SQLite file, to
/// compare the replicated system with.
#[derive(Debug, Clone, Parser)]
#[command(name = "baseline", version)]
pub struct Config {
    /// Address the HTTP API listens on.
    #[arg(long, env = "RIDESHARE_BASELINE_LISTEN", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,

    /// Directory holding the SQLite database (`baseline.db`) and `count.json`, created if missing and kept at
    /// exit [default: a new temporary directory, deleted at exit].
    #[arg(long, env = "RIDESHARE_BASELINE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,

    /// Read-only SQLite connections, the most reads that run at once. Reads are CPU-bound once the pages are
    /// cached, so a few more than the cores keeps every core busy without a crowd of threads contending.
    #[arg(long, env = "RIDESHARE_BASELINE_READERS", default_value_t = DEFAULT_READERS,
          value_parser = parse_readers)]
    pub readers: usize,

    /// How often the request counter is saved while it changes: the most a crash can lose (as in the services).
    #[arg(long, env = "RIDESHARE_COUNT_FLUSH_MS", default_value_t = DEFAULT_COUNT_FLUSH_MS,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub count_flush_ms: u64,
}

impl Config {
    /// The defaults, with a temporary data directory: what a test starts.
    pub fn new() -> Self {
        Self {
            listen: DEFAULT_LISTEN.parse().expect("the default address parses"),
            data_dir: None,
            readers: DEFAULT_READERS,
            count_flush_ms: DEFAULT_COUNT_FLUSH_MS,
        }
    }

    pub fn count_flush(&self) -> Duration {
        Duration::from_millis(self.count_flush_ms)
    }
}

impl Default for Config {
    fn default() -> Self {
        Self::new()
    }
}

fn parse_readers(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if (1..=256).contains(&n) => Ok(n),
        _ => Err(format!(
            "expected a number of connections from 1 to 256, got {s:?}"
        )),
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
    fn defaults_match_the_command_line_defaults() {
        // Every `env = ...` lookup off: the test command may set RIDESHARE_* variables.
        let command = <Config as clap::CommandFactory>::command().mut_args(|a| a.env(None::<&str>));
        let matches = command.try_get_matches_from(["baseline"]).unwrap();
        let parsed = <Config as clap::FromArgMatches>::from_arg_matches(&matches).unwrap();
        assert_eq!(format!("{parsed:?}"), format!("{:?}", Config::new()));
        assert_eq!(parsed.listen.port(), 8090);
        assert!(Config::try_parse_from(["baseline", "--readers", "0"]).is_err());
    }
}
