//! The rides service's command line and environment.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use public_api::{Areas, DbConfig};

const DEFAULT_LISTEN: &str = "127.0.0.1:8082";
const DEFAULT_GATEWAY_URL: &str = "http://127.0.0.1:8080";
const DEFAULT_DATA_DIR: &str = "./data/rides";
const DEFAULT_USERS_TIMEOUT_MS: u64 = 16_000;
const DEFAULT_COUNT_FLUSH_MS: u64 = 100;

/// RideShare rides service: creating, listing, joining and deleting rides.
#[derive(Debug, Clone, Parser)]
#[command(name = "rides", version)]
pub struct Config {
    /// Address the HTTP API listens on.
    #[arg(long, env = "RIDESHARE_RIDES_LISTEN", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,

    #[command(flatten)]
    pub db: DbConfig,

    /// URL of the gateway, through which this service asks the users service whether a user exists.
    #[arg(long, env = "RIDESHARE_GATEWAY_URL", default_value = DEFAULT_GATEWAY_URL)]
    pub gateway_url: String,

    /// This service's public address, sent as the `Origin` of its requests to the users service
    /// [default: http://<the address it listens on>].
    #[arg(long, env = "RIDESHARE_RIDES_PUBLIC_URL")]
    pub public_url: Option<String>,

    /// How long a request to the users service may take before the ride request fails with 503. It covers one
    /// whole request of the users service, whose database budget is 12 s per attempt within a 3 s retry
    /// window (15 s at most): the users service gives up first and answers, rather than this side cutting it
    /// off while it would still succeed. One request per check, never retried here.
    #[arg(long, env = "RIDESHARE_USERS_TIMEOUT_MS", default_value_t = DEFAULT_USERS_TIMEOUT_MS,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub users_timeout_ms: u64,

    /// A file to take the area list from (`number,name` lines after a header, exactly areas 1 to 198)
    /// [default: the list compiled into this binary, public-api/data/AreaNameEnum.csv].
    #[arg(long, env = "RIDESHARE_AREAS_CSV")]
    pub areas_csv: Option<PathBuf>,

    /// Directory holding this service's state: `count.json`, the request counter.
    #[arg(long, env = "RIDESHARE_RIDES_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,

    /// How often the request counter is saved while it changes: the most a crash can lose.
    #[arg(long, env = "RIDESHARE_COUNT_FLUSH_MS", default_value_t = DEFAULT_COUNT_FLUSH_MS,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub count_flush_ms: u64,
}

impl Config {
    /// The defaults with the given orchestrator, gateway and data directory, as a test starts the service.
    pub fn new(
        orchestrator_url: impl Into<String>,
        gateway_url: impl Into<String>,
        data_dir: impl Into<PathBuf>,
    ) -> Self {
        Self {
            listen: DEFAULT_LISTEN.parse().expect("the default address parses"),
            db: DbConfig::new(orchestrator_url),
            gateway_url: gateway_url.into(),
            public_url: None,
            users_timeout_ms: DEFAULT_USERS_TIMEOUT_MS,
            areas_csv: None,
            data_dir: data_dir.into(),
            count_flush_ms: DEFAULT_COUNT_FLUSH_MS,
        }
    }

    /// The area list: the configured file, else the one compiled in.
    pub fn areas(&self) -> anyhow::Result<Areas> {
        match &self.areas_csv {
            Some(path) => Areas::load(path),
            None => Ok(Areas::builtin()),
        }
    }

    pub fn users_timeout(&self) -> Duration {
        Duration::from_millis(self.users_timeout_ms)
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
        let parsed: Config = public_api::testing::parse_without_env(&["rides"]).unwrap();
        let built = Config::new(DbConfig::DEFAULT_URL, DEFAULT_GATEWAY_URL, DEFAULT_DATA_DIR);
        assert_eq!(format!("{parsed:?}"), format!("{built:?}"));
        assert_eq!(parsed.listen.port(), 8082);
    }

    #[test]
    fn without_a_file_the_compiled_in_area_list_is_used_and_a_given_file_must_exist() {
        let config = Config::new("http://o", "http://g", "d");
        assert_eq!(config.areas().unwrap().len(), 198);
        let given = Config::try_parse_from(["rides", "--areas-csv", "/nonexistent/x.csv"]).unwrap();
        let error = given.areas().unwrap_err();
        assert!(
            format!("{error:#}").contains("/nonexistent/x.csv"),
            "{error:#}"
        );
    }
}
