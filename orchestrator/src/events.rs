//! The cluster's recent history, for operators: a bounded in-memory log of what happened to the cluster and why
//! (failovers, replacements of dead workers, crash API calls, scaling decisions, restores of a master), and the
//! epochs this orchestrator has seen, each with its master and since when.
//!
//! Events are recorded where the decision is made: failovers by the view's observer ([`crate::view::observe`]),
//! replacements, crashes and restores by the supervisor, scaling decisions by the scaler. The decisions
//! themselves stay pure functions; the code that carries a decision out records it. Each event also increments
//! a Prometheus counter through the `metrics` facade (a no-op until a recorder is installed):
//! `rideshare_failovers_total`, `rideshare_replacements_total{role}`, `rideshare_crash_requests_total{role}`,
//! `rideshare_scaling_decisions_total{direction}` and `rideshare_restores_total`.
//!
//! The log lives only in this orchestrator's memory: a restarted orchestrator starts with an empty one (the
//! workers' own logs and ZooKeeper keep the lasting record).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use protocol::Role;
use serde::Serialize;

/// Events kept: a few hours of a busy cluster's decisions (a scaling decision every 2 minutes, a few failovers),
/// small enough that the console's poll every second reads them all without weight.
pub const EVENTS_KEPT: usize = 300;

/// Epochs kept in the history: each is a failover, so this covers far more than an operator scrolls through.
pub const EPOCHS_KEPT: usize = 100;

/// A worker as an event names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WorkerRef {
    pub id: String,
    pub pid: u32,
}

/// Which way a scaling decision went, compared with the number of slaves kept before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Up,
    Down,
    Hold,
}

impl Direction {
    pub fn of(previous: usize, desired: usize) -> Self {
        match desired.cmp(&previous) {
            std::cmp::Ordering::Greater => Direction::Up,
            std::cmp::Ordering::Less => Direction::Down,
            std::cmp::Ordering::Equal => Direction::Hold,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Direction::Up => "up",
            Direction::Down => "down",
            Direction::Hold => "hold",
        }
    }
}

/// What happened, with the figures that matter for it. Serialized with a `kind` tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum What {
    /// The master changed: a new epoch with another master than the last one seen (`from`, at `from_epoch`).
    Failover {
        epoch: u64,
        from_epoch: u64,
        from: WorkerRef,
        to: WorkerRef,
    },
    /// A worker that died (`role` is what it was) and the slave started in its place.
    Replacement {
        role: Role,
        died: WorkerRef,
        replaced_by: WorkerRef,
    },
    /// A crash API call: the worker it killed, or none when there was no worker of that role.
    Crash {
        role: Role,
        killed: Option<WorkerRef>,
    },
    /// A scaling decision at the end of an interval: `reads` counted in it made `desired` slaves (from
    /// `previous`), with `actual` registered and `in_sync` serving when it was made.
    Scaling {
        direction: Direction,
        reads: u64,
        desired: usize,
        previous: usize,
        actual: usize,
        in_sync: usize,
    },
    /// The supervisor provided a master itself, no election being able to: from the furthest copy (`epoch`,
    /// `seq`), or a new, empty one when the registry held no copy.
    Restore {
        worker: String,
        epoch: Option<u64>,
        seq: Option<u64>,
    },
}

impl What {
    /// The Prometheus counter this event increments.
    fn count(&self) {
        match self {
            What::Failover { .. } => metrics::counter!("rideshare_failovers_total").increment(1),
            What::Replacement { role, .. } => {
                metrics::counter!("rideshare_replacements_total", "role" => role_label(*role))
                    .increment(1)
            }
            What::Crash { role, .. } => {
                metrics::counter!("rideshare_crash_requests_total", "role" => role_label(*role))
                    .increment(1)
            }
            What::Scaling { direction, .. } => metrics::counter!(
                "rideshare_scaling_decisions_total",
                "direction" => direction.label()
            )
            .increment(1),
            What::Restore { .. } => metrics::counter!("rideshare_restores_total").increment(1),
        }
    }
}

pub fn role_label(role: Role) -> &'static str {
    match role {
        Role::Master => "master",
        Role::Slave => "slave",
    }
}

/// One entry of the log.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// Increasing from 1 in this orchestrator's lifetime: the console tells new events from seen ones by it.
    pub seq: u64,
    /// Wall-clock time, milliseconds since the Unix epoch (this host's clock: for reading, not for ordering).
    pub at_ms: u64,
    #[serde(flatten)]
    pub what: What,
    /// Why, in words, for the operator.
    pub reason: String,
}

/// An epoch as this orchestrator saw it begin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EpochSeen {
    pub epoch: u64,
    pub master: WorkerRef,
    /// When this orchestrator first saw it (wall clock, ms since the Unix epoch): not when the master took the
    /// role, which may be earlier (before an orchestrator restart, say).
    pub since_ms: u64,
}

/// The handle on the log; cheap to clone.
#[derive(Clone, Default)]
pub struct Events {
    /// `std::sync::Mutex`: held only to push or copy entries, never across an `.await`.
    log: Arc<Mutex<Log>>,
}

#[derive(Default)]
struct Log {
    next_seq: u64,
    events: VecDeque<Event>,
    epochs: VecDeque<EpochSeen>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Events {
    /// Records an event now, increments its counter, and logs it.
    pub fn record(&self, what: What, reason: impl Into<String>) {
        let reason = reason.into();
        what.count();
        tracing::info!(event = ?what, "{reason}");
        let mut log = self.log.lock().expect("events lock");
        log.next_seq += 1;
        let event = Event {
            seq: log.next_seq,
            at_ms: now_ms(),
            what,
            reason,
        };
        if log.events.len() == EVENTS_KEPT {
            log.events.pop_front();
        }
        log.events.push_back(event);
    }

    /// Notes that `master` acts under `epoch`. Another master makes an entry; the same one at another epoch
    /// (a takeover settling: the znode is claimed at the old epoch, then moved to the new one) updates its own.
    pub fn epoch_seen(&self, epoch: u64, master: WorkerRef) {
        let mut log = self.log.lock().expect("events lock");
        if let Some(last) = log.epochs.back_mut().filter(|e| e.master == master) {
            last.epoch = epoch;
            return;
        }
        if log.epochs.len() == EPOCHS_KEPT {
            log.epochs.pop_front();
        }
        log.epochs.push_back(EpochSeen {
            epoch,
            master,
            since_ms: now_ms(),
        });
    }

    /// The events kept, newest first.
    pub fn recent(&self) -> Vec<Event> {
        let log = self.log.lock().expect("events lock");
        log.events.iter().rev().cloned().collect()
    }

    /// The epochs seen, newest first.
    pub fn epochs(&self) -> Vec<EpochSeen> {
        let log = self.log.lock().expect("events lock");
        log.epochs.iter().rev().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crash(pid: u32) -> What {
        What::Crash {
            role: Role::Slave,
            killed: Some(WorkerRef {
                id: format!("w-{pid}"),
                pid,
            }),
        }
    }

    #[test]
    fn the_log_keeps_the_newest_events_numbered_in_order() {
        let events = Events::default();
        for pid in 0..(EVENTS_KEPT as u32 + 5) {
            events.record(crash(pid), format!("crash {pid}"));
        }
        let recent = events.recent();
        assert_eq!(recent.len(), EVENTS_KEPT);
        assert_eq!(recent[0].reason, format!("crash {}", EVENTS_KEPT + 4));
        assert_eq!(recent[0].seq, EVENTS_KEPT as u64 + 5);
        assert_eq!(recent.last().unwrap().reason, "crash 5");
        assert!(recent.windows(2).all(|w| w[0].seq == w[1].seq + 1));
    }

    #[test]
    fn an_event_serializes_flat_with_its_kind() {
        let events = Events::default();
        events.record(crash(7), "asked");
        let json = serde_json::to_value(&events.recent()[0]).unwrap();
        assert_eq!(json["kind"], "crash");
        assert_eq!(json["role"], "slave");
        assert_eq!(json["killed"]["pid"], 7);
        assert_eq!(json["reason"], "asked");
        assert!(json["at_ms"].as_u64().unwrap() > 1_700_000_000_000);
    }

    #[test]
    fn the_epoch_history_has_one_entry_per_master_at_its_latest_epoch() {
        let events = Events::default();
        let m = |id: &str, pid| WorkerRef { id: id.into(), pid };
        events.epoch_seen(0, m("a", 10));
        events.epoch_seen(1, m("a", 10));
        events.epoch_seen(1, m("a", 10));
        events.epoch_seen(2, m("b", 20));
        let epochs: Vec<(u64, String)> = events
            .epochs()
            .into_iter()
            .map(|e| (e.epoch, e.master.id))
            .collect();
        assert_eq!(epochs, [(2, "b".to_owned()), (1, "a".to_owned())]);
    }

    #[test]
    fn each_event_increments_its_counter_with_its_label() {
        let w = |pid| WorkerRef {
            id: format!("w-{pid}"),
            pid,
        };
        let scaling = |direction| What::Scaling {
            direction,
            reads: 0,
            desired: 1,
            previous: 1,
            actual: 1,
            in_sync: 1,
        };
        let recorder = metrics_util::debugging::DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        metrics::with_local_recorder(&recorder, || {
            let events = Events::default();
            events.record(crash(1), "");
            events.record(crash(2), "");
            events.record(
                What::Replacement {
                    role: Role::Master,
                    died: w(1),
                    replaced_by: w(3),
                },
                "",
            );
            events.record(scaling(Direction::Hold), "");
            events.record(scaling(Direction::Up), "");
            events.record(scaling(Direction::Hold), "");
        });
        let mut counts: Vec<String> = snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .map(|(key, _, _, value)| {
                let key = key.key();
                let labels: Vec<String> = key
                    .labels()
                    .map(|l| format!("{}={}", l.key(), l.value()))
                    .collect();
                format!("{}{{{}}} {value:?}", key.name(), labels.join(","))
            })
            .collect();
        counts.sort();
        assert_eq!(
            counts,
            [
                "rideshare_crash_requests_total{role=slave} Counter(2)",
                "rideshare_replacements_total{role=master} Counter(1)",
                "rideshare_scaling_decisions_total{direction=hold} Counter(2)",
                "rideshare_scaling_decisions_total{direction=up} Counter(1)",
            ]
        );
    }

    #[test]
    fn directions_compare_with_the_slaves_kept_before() {
        assert_eq!(Direction::of(1, 3), Direction::Up);
        assert_eq!(Direction::of(3, 1), Direction::Down);
        assert_eq!(Direction::of(2, 2), Direction::Hold);
    }
}
