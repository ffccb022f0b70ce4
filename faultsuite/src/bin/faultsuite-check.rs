//! Checks a saved history again: prints every checker's verdict and writes the HTML report. Exits 0 when the
//! history is valid, 1 when a checker found a violation, 2 when one could not decide.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use faultsuite::checker::register::Limits;
use faultsuite::checker::Validity;
use faultsuite::{analyse, report, History};

#[derive(Parser)]
#[command(about = "Check a fault-suite history (JSON lines) and write its HTML report")]
struct Config {
    /// The history a run saved, one JSON entry a line.
    history: PathBuf,
    /// Where to write the report; the history's path with `.html` by default.
    #[arg(long, env = "FAULTSUITE_REPORT")]
    report: Option<PathBuf>,
    /// Configurations the linearizability search of one key may remember before it answers "unknown".
    #[arg(long, env = "FAULTSUITE_MAX_STATES", default_value_t = Limits::default().max_states)]
    max_states: usize,
    /// Seconds the search of one key may take before it answers "unknown" (as much again for its windows).
    #[arg(long, env = "FAULTSUITE_MAX_SECONDS", default_value_t = Limits::default().max_time.as_secs_f64())]
    max_seconds: f64,
}

fn main() -> anyhow::Result<ExitCode> {
    let config = Config::parse();
    let history = History::load(&config.history)?;
    let limits = Limits {
        max_states: config.max_states,
        max_time: Duration::from_secs_f64(config.max_seconds),
    };
    let analysis = analyse(&history, &limits);
    print!("{}", report::text(&history, &analysis));
    let report_path = config
        .report
        .unwrap_or_else(|| config.history.with_extension("html"));
    report::write(&report_path, &history, &analysis)?;
    println!("report: {}", report_path.display());
    Ok(ExitCode::from(match analysis.validity() {
        Validity::Valid => 0,
        Validity::Invalid => 1,
        Validity::Unknown => 2,
    }))
}
