//! How long the register checker takes on a simulated history:
//! `cargo run --release -p faultsuite --example register_speed -- --ops 20000 --keys 20 --clients 5`
//! (`--help` for the rest: unknown share, repeated values, a corrupted read, saving the history).

use std::time::Instant;

use clap::Parser;
use faultsuite::checker::register::{self, Limits, Verdict};
use faultsuite::history::{Op, Outcome, Status};
use faultsuite::sim::{register_history, RegisterWorkload};

#[derive(Parser)]
struct Config {
    #[arg(long, default_value_t = 20_000)]
    ops: usize,
    #[arg(long, default_value_t = 20)]
    keys: u64,
    #[arg(long, default_value_t = 5)]
    clients: usize,
    /// Share of operations with an unknown outcome.
    #[arg(long, default_value_t = 0.02)]
    unknown: f64,
    /// Values drawn from 0..N instead of a new value per write.
    #[arg(long)]
    values: Option<i64>,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Make the first answered read after the middle of the history show a value never written.
    #[arg(long)]
    corrupt: bool,
    /// Also save the history here (JSON lines), for `faultsuite-check`.
    #[arg(long)]
    save: Option<std::path::PathBuf>,
}

fn main() {
    let config = Config::parse();
    let workload = RegisterWorkload {
        keys: config.keys,
        clients: config.clients,
        ops: config.ops,
        unknown: config.unknown,
        values: config.values,
        ..RegisterWorkload::default()
    };
    let mut history = register_history(&workload, config.seed);
    if config.corrupt {
        let middle = history.ops.len() / 2;
        if let Some(op) = history.ops[middle..].iter_mut().find(|op| {
            matches!(
                op.op,
                Op::Read {
                    outcome: Outcome::Ok(_)
                }
            )
        }) {
            op.op = Op::Read {
                outcome: Outcome::Ok(Some(-42)),
            };
        }
    }
    if let Some(path) = &config.save {
        history.save(path).expect("saving the history");
    }
    let unknown = history
        .ops
        .iter()
        .filter(|op| op.op.status() == Status::Unknown)
        .count();
    let started = Instant::now();
    let report = register::check(&history, &Limits::default());
    let elapsed = started.elapsed();
    let slowest = report
        .keys
        .iter()
        .map(|key| key.elapsed)
        .max()
        .unwrap_or_default();
    let states: usize = report.keys.iter().map(|key| key.states).sum();
    let decided = report
        .keys
        .iter()
        .filter(|key| !matches!(key.verdict, Verdict::Unknown { .. }))
        .count();
    for key in &report.keys {
        if let Verdict::NotLinearizable { window } = &key.verdict {
            let shown = window.ops.len();
            println!(
                "key {}: not linearizable, window of {shown} operations, {:.2?}",
                key.key, key.elapsed
            );
        }
    }
    println!(
        "{} operations ({unknown} unknown), {} keys: {} in {elapsed:.2?} (slowest key {slowest:.2?}), {states} configurations, {decided} keys decided",
        history.ops.len(),
        report.keys.len(),
        report.validity().name(),
    );
}
