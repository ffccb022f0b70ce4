//! dbbench: how fast the orchestrator's database API is, and how much memory the cluster takes.
//!
//! For each number of slaves it starts a cluster in this process (or uses the orchestrator given by `--url`),
//! fills a table, then for each operation and number of clients runs a closed loop of requests (a warm-up, then
//! the measured window) and prints one table row: throughput, latency percentiles, and the peak resident memory
//! of the master, the slaves and the orchestrator. Nothing is asserted: the numbers are for reading.
//!
//! - [`config`]: the command line.
//! - [`target`]: the cluster measured, started in-process through the orchestrator library or already running.
//! - [`load`]: the benchmark table and the concurrent clients.
//! - [`stats`]: throughput and percentiles of one run.
//! - [`memory`]: peak resident memory (`VmHWM`) from `/proc`.
//!
//! Beside it, [`baseline`]: the public API in one process on a local SQLite file (the `baseline` binary), the
//! figure `bench/compare.sh` sets the system against.

pub mod baseline;
pub mod config;
pub mod load;
pub mod memory;
pub mod stats;
pub mod target;

use std::sync::Arc;

use protocol::Role;

pub use config::{Config, Op};
use stats::Summary;
use target::Target;

pub async fn run(config: Config) -> anyhow::Result<()> {
    match &config.url {
        Some(url) => {
            eprintln!(
                "dbbench: note: the orchestrator scales slaves to ceil(reads / 20) per scaling interval; run it with a \
                 long RIDESHARE_SCALE_INTERVAL_SECS so the reads measured here do not start a crowd of slaves"
            );
            let target = Target::remote(url, config.orchestrator_pid);
            let slaves = target
                .workers()
                .await?
                .iter()
                .filter(|w| w.role == Role::Slave)
                .count();
            print_header();
            let result = measure(&config, &target, slaves as u32).await;
            let dropped = load::drop_table(&target.url).await;
            result?;
            dropped?;
        }
        None => {
            print_header();
            for &slaves in &config.slaves {
                let target = Target::start(&config, slaves).await?;
                eprintln!(
                    "dbbench: {}, 1 master and {slaves} slave(s)",
                    target.describe()
                );
                let result = measure(&config, &target, slaves).await;
                target.stop().await?;
                result?;
            }
            println!(
                "orch MiB: the orchestrator runs inside dbbench, so its peak includes the load generator's clients"
            );
        }
    }
    Ok(())
}

async fn measure(config: &Config, target: &Target, slaves: u32) -> anyhow::Result<()> {
    let ids = Arc::new(load::prepare_table(&target.url, config.rows).await?);
    for &op in &config.ops {
        for &clients in &config.clients {
            let sample = load::run(
                &target.url,
                op,
                clients,
                ids.clone(),
                config.warmup(),
                config.measured(),
            )
            .await?;
            if let Some(e) = &sample.first_error {
                eprintln!(
                    "dbbench: {} with {clients} client(s), first error: {e}",
                    op.name()
                );
            }
            let memory = Memory::of(target).await;
            print_row(op, slaves, clients, &sample.summary(), &memory);
        }
    }
    Ok(())
}

/// Peak resident memory in KiB, each `None` when unknown.
struct Memory {
    master: Option<u64>,
    /// The largest of the slaves' peaks.
    slave: Option<u64>,
    orchestrator: Option<u64>,
}

impl Memory {
    async fn of(target: &Target) -> Self {
        let workers = target.workers().await.unwrap_or_default();
        let peak = |role| {
            workers
                .iter()
                .filter(|w| w.role == role)
                .filter_map(|w| memory::peak_rss_kib(w.pid))
                .max()
        };
        Self {
            master: peak(Role::Master),
            slave: peak(Role::Slave),
            orchestrator: target.orchestrator_pid.and_then(memory::peak_rss_kib),
        }
    }
}

fn print_header() {
    println!(
        "{:<5} {:>6} {:>7} {:>8} {:>6} {:>12} {:>8} {:>8} {:>10} {:>9} {:>8}",
        "op",
        "slaves",
        "clients",
        "requests",
        "errors",
        "throughput/s",
        "p50 ms",
        "p99 ms",
        "master MiB",
        "slave MiB",
        "orch MiB"
    );
}

fn print_row(op: Op, slaves: u32, clients: u32, s: &Summary, m: &Memory) {
    let mib = |kib: Option<u64>| {
        kib.map_or_else(|| "-".to_owned(), |k| format!("{:.1}", k as f64 / 1024.0))
    };
    println!(
        "{:<5} {:>6} {:>7} {:>8} {:>6} {:>12.1} {:>8.2} {:>8.2} {:>10} {:>9} {:>8}",
        op.name(),
        slaves,
        clients,
        s.requests,
        s.errors,
        s.throughput,
        s.p50_ms,
        s.p99_ms,
        mib(m.master),
        mib(m.slave),
        mib(m.orchestrator)
    );
}
