//! Auto-scaling of the read slaves with the read load.
//!
//! `db/read` requests are counted (only those, and each HTTP request once, whatever its retries). The first
//! one starts the clock; at the end of every interval the number of slaves becomes
//! `max(1, ceil(reads / 20))` for the reads of that interval, capped by a ceiling that protects the machine, and
//! the count starts again. The supervisor does the rest: new slaves catch up before they serve, retired ones leave
//! the in-sync set before they exit, and neither is taken for a crash.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::cluster::ClusterHandle;
use crate::events::{Direction, Events, What};

/// Reads per slave per interval, from the original system's policy.
pub const READS_PER_SLAVE: u64 = 20;

/// The slaves wanted for `reads` reads in an interval.
pub fn desired_slaves(reads: u64, ceiling: usize) -> usize {
    let wanted = usize::try_from(reads.div_ceil(READS_PER_SLAVE)).unwrap_or(usize::MAX);
    wanted.max(1).min(ceiling.max(1))
}

/// The read counter, shared by the read handler and the scaler.
#[derive(Default)]
pub struct ReadCounter {
    reads: AtomicU64,
    started: AtomicBool,
    first: Notify,
}

impl ReadCounter {
    /// Counts one `db/read`.
    pub fn record(&self) {
        self.reads.fetch_add(1, Ordering::Relaxed);
        if !self.started.swap(true, Ordering::AcqRel) {
            self.first.notify_one();
        }
    }

    /// The reads counted since the last call, and the count starts again.
    fn take(&self) -> u64 {
        self.reads.swap(0, Ordering::AcqRel)
    }

    /// Reads counted so far in this interval.
    pub fn current(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }
}

/// Starts the scaler: it waits for the first read, then decides at every `interval`, and records each decision
/// in `events`.
/// The ceiling `--max-slaves auto` gives on a machine with `cores` processors: one slave per core. Measured on a
/// 2-core machine (README, "Scaling"): every slave applies every write and acknowledges every round, so past the
/// cores each one makes writes slower and adds no read capacity; at least one, as the cluster needs one slave.
pub fn ceiling_for_cores(cores: usize) -> usize {
    cores.max(1)
}

pub fn spawn(
    counter: Arc<ReadCounter>,
    cluster: ClusterHandle,
    interval: Duration,
    ceiling: usize,
    events: Events,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        counter.first.notified().await;
        tracing::info!(?interval, ceiling, "first read: the scaling clock starts");
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let reads = counter.take();
            let view = cluster.view();
            let slaves: Vec<bool> = view
                .worker_infos()
                .into_iter()
                .filter(|w| w.role == protocol::Role::Slave)
                .map(|w| w.in_sync)
                .collect();
            let now = Figures {
                previous: cluster.target_slaves(),
                actual: slaves.len(),
                in_sync: slaves.iter().filter(|s| **s).count(),
            };
            let desired = decide(reads, ceiling, interval, now, &events);
            if let Err(e) = cluster.set_target_slaves(desired).await {
                tracing::error!("applying a scaling decision: {e:#}");
                return;
            }
        }
    })
}

/// The slaves when a decision is made: kept (the target before it), registered, in sync.
#[derive(Debug, Clone, Copy)]
struct Figures {
    previous: usize,
    actual: usize,
    in_sync: usize,
}

/// The decision for `reads` reads in the `interval` just ended, recorded in `events` with its reason: the number
/// of slaves to keep.
fn decide(reads: u64, ceiling: usize, interval: Duration, now: Figures, events: &Events) -> usize {
    let desired = desired_slaves(reads, ceiling);
    let wanted = usize::try_from(reads.div_ceil(READS_PER_SLAVE)).unwrap_or(usize::MAX);
    let capped = if wanted > ceiling {
        tracing::warn!(
            reads,
            wanted,
            ceiling,
            "scaling decision capped by the ceiling"
        );
        format!(" (capped by the ceiling of {ceiling}; {wanted} wanted)")
    } else {
        String::new()
    };
    let direction = Direction::of(now.previous, desired);
    let verb = match direction {
        Direction::Up => "scale up",
        Direction::Down => "scale down",
        Direction::Hold => "hold",
    };
    events.record(
        What::Scaling {
            direction,
            reads,
            desired,
            previous: now.previous,
            actual: now.actual,
            in_sync: now.in_sync,
        },
        format!(
            "{verb}: {reads} reads in the last {}s want {desired} slave(s) at {READS_PER_SLAVE} reads each{capped}; \
             kept {} before, {} registered, {} in sync",
            interval.as_secs(),
            now.previous,
            now.actual,
            now.in_sync
        ),
    );
    desired
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_gives_one_slave_per_twenty_reads_at_least_one_and_at_most_the_ceiling() {
        for (reads, slaves) in [
            (0, 1),
            (1, 1),
            (20, 1),
            (21, 2),
            (40, 2),
            (41, 3),
            (45, 3),
            (60, 3),
            (61, 4),
        ] {
            assert_eq!(desired_slaves(reads, 16), slaves, "{reads} reads");
        }
        assert_eq!(desired_slaves(10_000, 16), 16);
        assert_eq!(desired_slaves(10_000, 0), 1);
    }

    #[test]
    fn the_automatic_ceiling_is_one_slave_per_core_and_never_none() {
        assert_eq!(ceiling_for_cores(0), 1);
        assert_eq!(ceiling_for_cores(1), 1);
        assert_eq!(ceiling_for_cores(2), 2);
        assert_eq!(ceiling_for_cores(16), 16);
    }

    #[test]
    fn a_scaling_decision_is_recorded_with_its_direction_and_the_reads_that_led_to_it() {
        let events = Events::default();
        let interval = Duration::from_secs(120);
        let before = Figures {
            previous: 1,
            actual: 1,
            in_sync: 1,
        };
        assert_eq!(decide(45, 16, interval, before, &events), 3);
        assert_eq!(decide(3, 16, interval, before, &events), 1);
        let after = Figures {
            previous: 3,
            ..before
        };
        assert_eq!(decide(0, 16, interval, after, &events), 1);
        assert_eq!(decide(400, 4, interval, before, &events), 4);

        let recent = events.recent();
        let summary: Vec<(Direction, u64, usize)> = recent
            .iter()
            .rev()
            .map(|e| match &e.what {
                What::Scaling {
                    direction,
                    reads,
                    desired,
                    ..
                } => (*direction, *reads, *desired),
                other => panic!("not a scaling decision: {other:?}"),
            })
            .collect();
        assert_eq!(
            summary,
            [
                (Direction::Up, 45, 3),
                (Direction::Hold, 3, 1),
                (Direction::Down, 0, 1),
                (Direction::Up, 400, 4)
            ]
        );
        let first = &recent[3].reason;
        assert!(
            first.starts_with("scale up: 45 reads in the last 120s want 3 slave(s)"),
            "{first}"
        );
        assert!(
            first.contains("kept 1 before, 1 registered, 1 in sync"),
            "{first}"
        );
        assert!(recent[0]
            .reason
            .contains("capped by the ceiling of 4; 20 wanted"));
    }

    #[tokio::test]
    async fn the_first_read_starts_the_clock_and_a_take_resets_the_count() {
        let c = ReadCounter::default();
        c.record();
        c.record();
        tokio::time::timeout(Duration::from_secs(1), c.first.notified())
            .await
            .expect("the first read notifies");
        assert_eq!(c.take(), 2);
        assert_eq!(c.current(), 0);
    }
}
