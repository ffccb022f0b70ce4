//! One run of the suite: the hosts, the services on them, the clients and the nemesis for the run's length, then
//! every fault healed, the cluster given time to recover, the final reads, and the history saved.
//!
//! The hosts: `zk` (ZooKeeper), `mq` (RabbitMQ), `orch` (the orchestrator) and `w1`…`wN` (one worker each, placed
//! there by the orchestrator's `hosts` runtime through a launcher per host). The clients and the nemesis run on
//! the suite's side of the bridge. The orchestrator's and the workers' hosts each read a wall clock of their own,
//! offset from the machine's by up to the configured bound, and stepped by the nemesis.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use tokio::sync::{mpsc, watch, Notify};
use tokio::time::Instant;

use crate::history::{self, Entry, History};
use crate::hosts::Testbed;
use crate::nemesis::{self, Applied, ClockBounds, Fault, Targets};
use crate::services::{self, HostClock, Kind, Service};
use crate::workload::{self, Db, Recorder, Registers};

/// What a run does.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How long the clients and the nemesis run.
    pub duration: Duration,
    pub seed: u64,
    /// Where the run keeps its files (a folder of its own is made inside).
    pub out: PathBuf,
    /// The folder holding the `worker` and `orchestrator` binaries.
    pub bin_dir: PathBuf,
    /// Hosts for workers (one worker per host; one more than the workers, so a replacement has a free host).
    pub worker_hosts: usize,
    pub slaves: usize,
    pub registers: Registers,
    pub faults: Vec<Fault>,
    pub clock: ClockBounds,
    /// How long a fault holds, at least and at most.
    pub window: (Duration, Duration),
    /// The pause between two faults, at least and at most.
    pub quiet: (Duration, Duration),
    /// After the last fault healed, how long the cluster gets to answer again before the final reads.
    pub recovery: Duration,
    /// Which /24 of `10.77.0.0/16` the hosts use.
    pub subnet: u8,
}

/// What a run left: its folder, its history, and when every fault was healed for good.
pub struct Outcome {
    pub dir: PathBuf,
    pub history: History,
    /// From the last heal to the first moment the cluster answered a read and a write; `None`: it did not
    /// within the recovery time.
    pub recovered_after: Option<Duration>,
}

/// The run's own folder under `out`, as an absolute path: the services are started with paths into it (ZooKeeper's
/// `zkServer.sh`, for one, changes folder before it reads its configuration), so a relative `--out` would point
/// them elsewhere.
fn run_dir(out: &Path, seed: u64, unix_secs: u64) -> anyhow::Result<PathBuf> {
    let out = std::path::absolute(out).with_context(|| format!("resolving {}", out.display()))?;
    Ok(out.join(format!("run-{seed}-{unix_secs}")))
}

/// Runs the suite once. Needs root (network namespaces).
pub async fn run(settings: Settings) -> anyhow::Result<Outcome> {
    let dir = run_dir(
        &settings.out,
        settings.seed,
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    )?;
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut rng = StdRng::seed_from_u64(settings.seed);

    let worker_names: Vec<String> = (1..=settings.worker_hosts)
        .map(|i| format!("w{i}"))
        .collect();
    let mut names = vec!["zk", "mq", "orch"];
    names.extend(worker_names.iter().map(String::as_str));
    let mut bed = Testbed::create(settings.subnet, &names)?;

    // Each host's wall clock, at its own offset.
    let clock_dir = dir.join("clocks");
    std::fs::create_dir_all(&clock_dir)?;
    let mut clocks = BTreeMap::new();
    let mut offsets = BTreeMap::new();
    for name in std::iter::once("orch").chain(worker_names.iter().map(String::as_str)) {
        let clock = HostClock::new(&clock_dir, bed.host(name))?;
        let max = settings.clock.max_offset_ms;
        let offset = if max > 0 {
            rng.random_range(-max..=max)
        } else {
            0
        };
        clock.set_offset_ms(offset)?;
        clocks.insert(name.to_owned(), clock);
        offsets.insert(name.to_owned(), offset);
    }

    let mut zk = Service::zookeeper(bed.host("zk"), &dir.join("zk"))?;
    let mut mq = Service::rabbitmq(bed.host("mq"), &dir.join("mq"))?;
    zk.start().await?;
    mq.start().await?;

    // The orchestrator, with a launcher per worker host.
    let worker_bin = settings.bin_dir.join("worker");
    let mut worker_args = Vec::new();
    for name in &worker_names {
        let host = bed.host(name);
        let launcher = dir.join(format!("launch-worker-{name}"));
        services::write_launcher(&launcher, host, &clocks[name], &worker_bin)?;
        let root = dir.join("hosts").join(name);
        std::fs::create_dir_all(&root)?;
        worker_args.push("--worker-host".to_owned());
        worker_args.push(format!("{name}={}:{}", launcher.display(), root.display()));
    }
    let orch = bed.host("orch").clone();
    let base = format!("http://{}:{}", orch.addr, services::ORCHESTRATOR_PORT);
    let mut args = vec![
        format!("--listen={}:{}", orch.addr, services::ORCHESTRATOR_PORT),
        format!(
            "--amqp-url=amqp://{}:{}/%2f",
            bed.host("mq").addr,
            services::AMQP_PORT
        ),
        format!("--zk={}:{}", bed.host("zk").addr, services::ZK_PORT),
        "--namespace=suite".to_owned(),
        format!("--data-dir={}", dir.join("orch").display()),
        format!("--initial-slaves={}", settings.slaves),
        // Scaling would add and remove slaves on its own schedule; this suite is about faults.
        "--scale-interval-secs=86400".to_owned(),
        "--worker-runtime=hosts".to_owned(),
    ];
    args.extend(worker_args);
    let mut orchestrator = Service::orchestrator(
        &orch,
        &dir.join("orch"),
        &clocks["orch"],
        &settings.bin_dir.join("orchestrator"),
        args,
    )?;
    orchestrator.start().await?;

    let db = Db::new(&base)?;
    db.create_schema(Duration::from_secs(60)).await?;

    // The history, written as it goes.
    let start = Instant::now();
    let (entries_tx, mut entries_rx) = mpsc::unbounded_channel::<Entry>();
    let history_path = dir.join("history.jsonl");
    let writer = {
        let path = history_path.clone();
        tokio::spawn(async move {
            let mut file = std::io::BufWriter::new(std::fs::File::create(&path)?);
            let mut history = History::default();
            while let Some(entry) = entries_rx.recv().await {
                history::write_entry(&mut file, &entry)?;
                match entry {
                    Entry::Op(op) => history.ops.push(op),
                    Entry::Fault(fault) => history.faults.push(fault),
                }
            }
            file.flush()?;
            anyhow::Ok(history)
        })
    };
    let recorder = Recorder::new(start, entries_tx);

    let (stop_tx, stop_rx) = watch::channel(false);
    let registers = tokio::spawn(workload::run_registers(
        db.clone(),
        recorder.clone(),
        settings.registers,
        settings.seed,
        stop_rx.clone(),
    ));
    let read_all = Arc::new(Notify::new());
    let set = tokio::spawn(workload::run_set(
        db.clone(),
        recorder.clone(),
        settings.registers.clients,
        settings.registers.think,
        stop_rx.clone(),
        read_all.clone(),
        settings.recovery,
    ));

    // The nemesis, until the run's end.
    let http = reqwest::Client::new();
    let end = start + settings.duration;
    let mut last_heal = Instant::now();
    while Instant::now() < end && !settings.faults.is_empty() {
        let quiet = random_between(&mut rng, settings.quiet);
        tokio::time::sleep(quiet.min(end.saturating_duration_since(Instant::now()))).await;
        if Instant::now() >= end {
            break;
        }
        let fault = settings.faults[rng.random_range(0..settings.faults.len())];
        let window = random_between(&mut rng, settings.window);
        let targets = match nemesis::worker_hosts(&bed, &http, &base).await {
            Some((master, slaves)) => Targets {
                master,
                slaves,
                worker_hosts: worker_names.clone(),
            },
            None => Targets {
                master: None,
                slaves: Vec::new(),
                worker_hosts: worker_names.clone(),
            },
        };
        let started = recorder.now();
        let applied = nemesis::apply(
            fault,
            &bed,
            &targets,
            &clocks,
            &offsets,
            settings.clock,
            &mut rng,
        )
        .with_context(|| format!("applying {}", fault.name()))?;
        tracing::info!(fault = fault.name(), ?applied, ?window, "fault");
        match applied {
            // A restart: killed, and started again at once; the window is what the restart takes. (Down for
            // longer than the ZooKeeper session timeout is another fault: every session expires with it.)
            Applied::Restart(kind @ (Kind::ZooKeeper | Kind::RabbitMq)) => {
                let service = service(kind, &mut zk, &mut mq, &mut orchestrator);
                service.kill().await;
                service
                    .start()
                    .await
                    .with_context(|| format!("starting {kind:?} again"))?;
            }
            // The orchestrator stays dead for the window, as if its supervisor were slow to start it again.
            Applied::Restart(Kind::Orchestrator) => {
                orchestrator.kill().await;
                tokio::time::sleep(window).await;
                orchestrator
                    .start()
                    .await
                    .context("starting the orchestrator again")?;
            }
            _ => {
                tokio::time::sleep(window).await;
                nemesis::heal(&applied, &bed, &clocks)?;
            }
        }
        last_heal = Instant::now();
        recorder.record(Entry::Fault(history::Fault {
            name: fault.name().to_owned(),
            started,
            healed: recorder.now(),
        }));
    }
    // Everything healed for good; the clients go on while the cluster recovers.
    bed.heal()?;
    for host in bed.hosts() {
        services::signal_host(host, false);
    }
    for (name, clock) in &clocks {
        clock.set_offset_ms(offsets[name])?;
    }
    let recovered_after = wait_for_recovery(&db, last_heal, settings.recovery).await;
    stop_tx.send_replace(true);
    let _ = registers.await;
    read_all.notify_one();
    let _ = set.await;
    drop(recorder);
    let history = writer.await.context("the history writer")??;

    orchestrator.kill().await;
    mq.kill().await;
    zk.kill().await;
    bed.teardown();
    Ok(Outcome {
        dir,
        history,
        recovered_after,
    })
}

fn service<'a>(
    kind: Kind,
    zk: &'a mut Service,
    mq: &'a mut Service,
    orchestrator: &'a mut Service,
) -> &'a mut Service {
    match kind {
        Kind::ZooKeeper => zk,
        Kind::RabbitMq => mq,
        Kind::Orchestrator => orchestrator,
    }
}

fn random_between(rng: &mut StdRng, (low, high): (Duration, Duration)) -> Duration {
    if high <= low {
        return low;
    }
    let ms = rng.random_range(low.as_millis() as u64..=high.as_millis() as u64);
    Duration::from_millis(ms)
}

/// Waits until the cluster answers a read and a write, for at most `within`; returns how long after `since` it
/// did.
async fn wait_for_recovery(db: &Db, since: Instant, within: Duration) -> Option<Duration> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if db.healthy().await {
            return Some(since.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// The folder of the binaries this program was built with (`target/<profile>`).
pub fn own_bin_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().context("the executable has no folder")?;
    Ok(if dir.ends_with("deps") {
        dir.parent().unwrap_or(dir).to_owned()
    } else {
        dir.to_owned()
    })
}

/// Whether `dir` holds the binaries a run needs.
pub fn binaries_present(dir: &Path) -> bool {
    dir.join("worker").is_file() && dir.join("orchestrator").is_file()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_relative_out_folder_gives_an_absolute_run_folder_under_the_current_one() {
        let dir = run_dir(Path::new("target/faultsuite"), 7, 1_700_000_000).unwrap();
        assert!(dir.is_absolute(), "{}", dir.display());
        assert_eq!(
            dir,
            std::env::current_dir()
                .unwrap()
                .join("target/faultsuite/run-7-1700000000")
        );
    }
}
