//! The users service's command line and environment.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use public_api::DbConfig;

const DEFAULT_LISTEN: &str = "127.0.0.1:8081";
const DEFAULT_DATA_DIR: &str = "./data/users";
const DEFAULT_COUNT_FLUSH_MS: u64 = 100;

/// RideShare users service: registration, deletion and listing of users.
#[derive(Debug, Clone, Parser)]
#[command(name = "users", version)]
pub struct Config {
    /// Address the HTTP API listens on.
    #[arg(long, env = "RIDESHARE_USERS_LISTEN", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,

    #[command(flatten)]
    pub db: DbConfig,

    /// Directory holding this service's state: `count.json`, the request counter.
    #[arg(long, env = "RIDESHARE_USERS_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,

    /// How often the request counter is saved while it changes: the most a crash can lose.
    #[arg(long, env = "RIDESHARE_COUNT_FLUSH_MS", default_value_t = DEFAULT_COUNT_FLUSH_MS,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub count_flush_ms: u64,
}

impl Config {
    /// The defaults with the given orchestrator and data directory, as a test starts the service.
    pub fn new(orchestrator_url: impl Into<String>, data_dir: impl Into<PathBuf>) -> Self {
        Self {
            listen: DEFAULT_LISTEN.parse().expect("the default address parses"),
            db: DbConfig::new(orchestrator_url),
            data_dir: data_dir.into(),
            count_flush_ms: DEFAULT_COUNT_FLUSH_MS,
        }
    }

    pub fn count_flush(&self) -> Duration {
        Duration::from_millis(self.count_flush_ms)
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
        let parsed: Config = public_api::testing::parse_without_env(&["users"]).unwrap();
        let built = Config::new(DbConfig::DEFAULT_URL, DEFAULT_DATA_DIR);
        assert_eq!(format!("{parsed:?}"), format!("{built:?}"));
        assert_eq!(parsed.listen.port(), 8081);
    }

    #[test]
    fn flags_override_defaults() {
        let c = Config::try_parse_from([
            "users",
            "--listen",
            "127.0.0.1:0",
            "--orchestrator-url",
            "http://10.0.0.1:9",
            "--data-dir",
            "/tmp/u",
            "--count-flush-ms",
            "5",
        ])
        .unwrap();
        assert_eq!(c.listen.port(), 0);
        assert_eq!(c.db.orchestrator_url, "http://10.0.0.1:9");
        assert_eq!(c.data_dir, PathBuf::from("/tmp/u"));
        assert_eq!(c.count_flush(), Duration::from_millis(5));
    }
}
