//! `faultsuite`: one seeded run of the fault suite against the real system on hosts of its own (needs root),
//! checked: prints every checker's verdict and the availability figures, writes the history and the HTML report
//! in the run's folder. Exits 0 when the history is valid and the cluster recovered after the last heal, 1 on a
//! violation or no recovery, 2 when a checker could not decide.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use faultsuite::checker::register::Limits;
use faultsuite::checker::Validity;
use faultsuite::nemesis::{ClockBounds, Fault};
use faultsuite::run::{self, Settings};
use faultsuite::workload::Registers;
use faultsuite::{analyse, report};

/// Runs the database service across simulated hosts under a seeded nemesis, records what the clients saw,
/// checks it, and writes a report.
#[derive(Debug, Parser)]
#[command(name = "faultsuite", version)]
struct Args {
    /// How long the clients and the nemesis run, in seconds.
    #[arg(long, default_value_t = 120)]
    seconds: u64,
    /// The seed of the schedule: the same seed gives the same faults in the same order.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Where the run's folder (history, report, logs) is made.
    #[arg(long, default_value = "target/faultsuite")]
    out: PathBuf,
    /// The folder of the `worker` and `orchestrator` binaries [default: this program's own].
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Hosts for workers (one worker per host).
    #[arg(long, default_value_t = 4)]
    worker_hosts: usize,
    #[arg(long, default_value_t = 2)]
    slaves: usize,
    /// Register clients.
    #[arg(long, default_value_t = 5)]
    clients: u64,
    /// Registers (keys).
    #[arg(long, default_value_t = 8)]
    keys: u64,
    /// A pause between one client's operations, in milliseconds.
    #[arg(long, default_value_t = 10)]
    think_ms: u64,
    /// The faults to draw from, by name [default: all of them].
    #[arg(long, value_delimiter = ',')]
    faults: Vec<String>,
    /// Each host's wall clock starts up to this far ahead or behind, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    max_clock_offset_ms: i64,
    /// A clock step moves a host's wall clock by up to this much, in milliseconds.
    #[arg(long, default_value_t = 5_000)]
    max_clock_step_ms: i64,
    /// Which /24 of 10.77.0.0/16 the hosts use (runs side by side need different ones).
    #[arg(long, default_value_t = 150)]
    subnet: u8,
}

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    telemetry::logging::init("info").map_err(anyhow::Error::msg)?;
    let args = Args::parse();
    let faults = if args.faults.is_empty() {
        Fault::ALL.to_vec()
    } else {
        args.faults
            .iter()
            .map(|name| {
                Fault::parse(name).ok_or_else(|| anyhow::anyhow!("no fault named {name:?}"))
            })
            .collect::<anyhow::Result<_>>()?
    };
    let bin_dir = match args.bin_dir {
        Some(dir) => dir,
        None => run::own_bin_dir()?,
    };
    anyhow::ensure!(
        run::binaries_present(&bin_dir),
        "no worker and orchestrator binaries in {} (cargo build --bins first)",
        bin_dir.display()
    );
    let settings = Settings {
        duration: Duration::from_secs(args.seconds),
        seed: args.seed,
        out: args.out,
        bin_dir,
        worker_hosts: args.worker_hosts,
        slaves: args.slaves,
        registers: Registers {
            clients: args.clients,
            keys: args.keys,
            think: Duration::from_millis(args.think_ms),
        },
        faults,
        clock: ClockBounds {
            max_offset_ms: args.max_clock_offset_ms,
            max_step_ms: args.max_clock_step_ms,
        },
        window: (Duration::from_secs(3), Duration::from_secs(10)),
        quiet: (Duration::from_secs(2), Duration::from_secs(5)),
        recovery: Duration::from_secs(60),
        subnet: args.subnet,
    };
    let outcome = run::run(settings).await?;
    let analysis = analyse(&outcome.history, &Limits::default());
    print!("{}", report::text(&outcome.history, &analysis));
    let report_path = outcome.dir.join("report.html");
    report::write(&report_path, &outcome.history, &analysis)?;
    match outcome.recovered_after {
        Some(after) => println!("recovered {after:.1?} after the last heal"),
        None => println!("NOT RECOVERED: no read and write answered after the last heal"),
    }
    println!(
        "{} operations, {} faults; history and report in {}",
        outcome.history.ops.len(),
        outcome.history.faults.len(),
        outcome.dir.display()
    );
    Ok(ExitCode::from(match analysis.validity() {
        Validity::Valid if outcome.recovered_after.is_some() => 0,
        Validity::Valid | Validity::Invalid => 1,
        Validity::Unknown => 2,
    }))
}
