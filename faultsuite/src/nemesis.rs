//! The nemesis: faults, seeded, one at a time, each healing by itself at the end of its window.
//!
//! Every fault names what it touches by role (the master, a slave, the orchestrator, the broker, ZooKeeper),
//! found when it starts: the master's host is where the pid the orchestrator lists as master runs. When the
//! orchestrator cannot be asked (it is cut off, paused, or dead), a worker host is picked at random instead.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::RngExt;
use serde::Deserialize;

use crate::hosts::{Cut, Testbed};
use crate::services::{signal_host, HostClock};

/// The kinds of fault, as the report names their windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The master's host cut from every other host.
    PartitionMaster,
    /// One slave's host cut from every other host.
    PartitionSlave,
    /// The master cut from ZooKeeper, not from the broker.
    MasterFromZooKeeper,
    /// The master cut from the broker, not from ZooKeeper.
    MasterFromBroker,
    /// The orchestrator's host cut off (from the clients too).
    PartitionOrchestrator,
    /// Packets from the master to one slave dropped; the other way passes.
    OneWayMasterToSlave,
    PauseMaster,
    PauseSlave,
    PauseOrchestrator,
    KillMaster,
    KillSlave,
    /// The orchestrator killed, and started again at the end of the window.
    KillOrchestrator,
    /// RabbitMQ killed and started again at once (its window is what that takes).
    RestartBroker,
    /// ZooKeeper killed and started again at once.
    RestartZooKeeper,
    /// A host's wall clock stepped by up to the step bound, and back at the heal.
    ClockStep,
    /// Delay (with jitter) and loss on everything the master's host sends (`tc netem`, or where the kernel has
    /// none, a slow token bucket and random drops).
    Netem,
}

impl Fault {
    pub const ALL: [Fault; 16] = [
        Fault::PartitionMaster,
        Fault::PartitionSlave,
        Fault::MasterFromZooKeeper,
        Fault::MasterFromBroker,
        Fault::PartitionOrchestrator,
        Fault::OneWayMasterToSlave,
        Fault::PauseMaster,
        Fault::PauseSlave,
        Fault::PauseOrchestrator,
        Fault::KillMaster,
        Fault::KillSlave,
        Fault::KillOrchestrator,
        Fault::RestartBroker,
        Fault::RestartZooKeeper,
        Fault::ClockStep,
        Fault::Netem,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Fault::PartitionMaster => "partition-master",
            Fault::PartitionSlave => "partition-slave",
            Fault::MasterFromZooKeeper => "master-from-zookeeper",
            Fault::MasterFromBroker => "master-from-broker",
            Fault::PartitionOrchestrator => "partition-orchestrator",
            Fault::OneWayMasterToSlave => "one-way-master-to-slave",
            Fault::PauseMaster => "pause-master",
            Fault::PauseSlave => "pause-slave",
            Fault::PauseOrchestrator => "pause-orchestrator",
            Fault::KillMaster => "kill-master",
            Fault::KillSlave => "kill-slave",
            Fault::KillOrchestrator => "kill-orchestrator",
            Fault::RestartBroker => "restart-broker",
            Fault::RestartZooKeeper => "restart-zookeeper",
            Fault::ClockStep => "clock-step",
            Fault::Netem => "netem",
        }
    }

    pub fn parse(name: &str) -> Option<Fault> {
        Fault::ALL.into_iter().find(|f| f.name() == name)
    }
}

/// One row of the orchestrator's `GET /api/v1/workers`.
#[derive(Debug, Clone, Deserialize)]
pub struct WorkerRow {
    pub pid: u32,
    pub role: String,
    pub in_sync: bool,
}

/// The workers as the orchestrator lists them, if it answers within a second.
pub async fn workers(http: &reqwest::Client, base: &str) -> Option<Vec<WorkerRow>> {
    let response = http
        .get(format!("{base}/api/v1/workers"))
        .timeout(Duration::from_secs(1))
        .send()
        .await
        .ok()?;
    response.json().await.ok()
}

/// The worker hosts by role right now: (the master's, the slaves'), from the orchestrator's list.
pub async fn worker_hosts(
    bed: &Testbed,
    http: &reqwest::Client,
    base: &str,
) -> Option<(Option<String>, Vec<String>)> {
    let rows = workers(http, base).await?;
    let host = |pid: u32| bed.host_of(pid).map(|h| h.name.clone());
    let master = rows
        .iter()
        .find(|r| r.role == "master")
        .and_then(|r| host(r.pid));
    let slaves = rows
        .iter()
        .filter(|r| r.role == "slave")
        .filter_map(|r| host(r.pid))
        .collect();
    Some((master, slaves))
}

/// What a fault touched, to heal it.
#[derive(Debug, Clone)]
pub enum Applied {
    /// Cuts in the network (healed by clearing every cut: faults do not overlap).
    Network,
    /// A paused host.
    Paused(String),
    /// A killed process that the orchestrator replaces by itself: nothing to heal.
    Killed,
    /// A service the suite must start again.
    Restart(crate::services::Kind),
    /// A host's clock stepped from `base` ms: set back to it.
    Clock { host: String, base_ms: i64 },
    /// Nothing could be done (no such worker right now).
    Nothing,
}

/// The bounds of the clock faults.
#[derive(Debug, Clone, Copy)]
pub struct ClockBounds {
    /// Each host's wall clock starts up to this far (ms) ahead or behind.
    pub max_offset_ms: i64,
    /// A step moves a clock by up to this much (ms), either way.
    pub max_step_ms: i64,
}

/// Picks a random element of a non-empty slice.
fn pick<'a, T>(rng: &mut StdRng, items: &'a [T]) -> Option<&'a T> {
    if items.is_empty() {
        None
    } else {
        Some(&items[rng.random_range(0..items.len())])
    }
}

/// Who the fault is aimed at, with the orchestrator's view when it can be had, or a guess.
pub struct Targets {
    pub master: Option<String>,
    pub slaves: Vec<String>,
    /// Every worker host, for guesses.
    pub worker_hosts: Vec<String>,
}

impl Targets {
    fn master_or_guess(&self, rng: &mut StdRng) -> Option<String> {
        self.master
            .clone()
            .or_else(|| pick(rng, &self.worker_hosts).cloned())
    }

    fn slave_or_guess(&self, rng: &mut StdRng) -> Option<String> {
        pick(rng, &self.slaves)
            .or_else(|| pick(rng, &self.worker_hosts))
            .cloned()
    }
}

/// Starts a fault. The caller records the window and calls [`heal`] with what this returns at its end.
pub fn apply(
    fault: Fault,
    bed: &Testbed,
    targets: &Targets,
    clocks: &std::collections::BTreeMap<String, HostClock>,
    offsets: &std::collections::BTreeMap<String, i64>,
    bounds: ClockBounds,
    rng: &mut StdRng,
) -> anyhow::Result<Applied> {
    // Drawn for every fault, so that a seed gives the same schedule whatever the cluster's state.
    let master_host = targets.master_or_guess(rng);
    let master = || master_host.clone();
    Ok(match fault {
        Fault::PartitionMaster => match master() {
            Some(m) => {
                bed.isolate(&m)?;
                Applied::Network
            }
            None => Applied::Nothing,
        },
        Fault::PartitionSlave => match targets.slave_or_guess(rng) {
            Some(s) => {
                bed.isolate(&s)?;
                Applied::Network
            }
            None => Applied::Nothing,
        },
        Fault::MasterFromZooKeeper => match master() {
            Some(m) => {
                bed.cut(&m, "zk", Cut::Both)?;
                Applied::Network
            }
            None => Applied::Nothing,
        },
        Fault::MasterFromBroker => match master() {
            Some(m) => {
                bed.cut(&m, "mq", Cut::Both)?;
                Applied::Network
            }
            None => Applied::Nothing,
        },
        Fault::PartitionOrchestrator => {
            bed.isolate("orch")?;
            Applied::Network
        }
        Fault::OneWayMasterToSlave => match (master(), targets.slave_or_guess(rng)) {
            (Some(m), Some(s)) if m != s => {
                bed.cut(&m, &s, Cut::OneWay)?;
                Applied::Network
            }
            _ => Applied::Nothing,
        },
        Fault::PauseMaster => match master() {
            Some(m) => {
                signal_host(bed.host(&m), true);
                Applied::Paused(m)
            }
            None => Applied::Nothing,
        },
        Fault::PauseSlave => match targets.slave_or_guess(rng) {
            Some(s) => {
                signal_host(bed.host(&s), true);
                Applied::Paused(s)
            }
            None => Applied::Nothing,
        },
        Fault::PauseOrchestrator => {
            signal_host(bed.host("orch"), true);
            Applied::Paused("orch".into())
        }
        Fault::KillMaster => match master() {
            Some(m) => {
                kill_host_processes(bed, &m);
                Applied::Killed
            }
            None => Applied::Nothing,
        },
        Fault::KillSlave => match targets.slave_or_guess(rng) {
            Some(s) => {
                kill_host_processes(bed, &s);
                Applied::Killed
            }
            None => Applied::Nothing,
        },
        Fault::KillOrchestrator => Applied::Restart(crate::services::Kind::Orchestrator),
        Fault::RestartBroker => Applied::Restart(crate::services::Kind::RabbitMq),
        Fault::RestartZooKeeper => Applied::Restart(crate::services::Kind::ZooKeeper),
        Fault::ClockStep => {
            let hosts: Vec<String> = clocks.keys().cloned().collect();
            match pick(rng, &hosts).cloned() {
                Some(host) => {
                    let base_ms = offsets.get(&host).copied().unwrap_or(0);
                    let step = rng.random_range(-bounds.max_step_ms..=bounds.max_step_ms);
                    clocks[&host].set_offset_ms(base_ms + step)?;
                    Applied::Clock { host, base_ms }
                }
                None => Applied::Nothing,
            }
        }
        Fault::Netem => match master() {
            Some(m) => {
                let delay = rng.random_range(20..200);
                let loss = rng.random_range(0..10);
                let how = bed.netem(&m, delay, delay / 2, loss)?;
                tracing::info!(host = %m, delay, loss, ?how, "degraded link");
                Applied::Network
            }
            None => Applied::Nothing,
        },
    })
}

/// SIGKILLs every process on a worker host (its worker).
fn kill_host_processes(bed: &Testbed, host: &str) {
    let netns = &bed.host(host).netns;
    let Ok(out) = std::process::Command::new("ip")
        .args(["netns", "pids", netns])
        .output()
    else {
        return;
    };
    for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", pid])
            .output();
    }
}

/// Ends a fault. Services to start again are the caller's (it owns them).
pub fn heal(
    applied: &Applied,
    bed: &Testbed,
    clocks: &std::collections::BTreeMap<String, HostClock>,
) -> anyhow::Result<()> {
    match applied {
        Applied::Network => bed.heal(),
        Applied::Paused(host) => {
            signal_host(bed.host(host), false);
            Ok(())
        }
        Applied::Clock { host, base_ms } => clocks[host].set_offset_ms(*base_ms),
        Applied::Killed | Applied::Restart(_) | Applied::Nothing => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_fault_has_a_name_that_parses_back() {
        for fault in Fault::ALL {
            assert_eq!(Fault::parse(fault.name()), Some(fault));
        }
        assert_eq!(Fault::parse("meteor"), None);
    }
}
