//! Watching the view for operators: every published view is compared with the master last seen, so that a
//! change of master or epoch is recorded as a failover (and the epoch in the history), and the cluster's gauges
//! are kept current: `rideshare_epoch`, `rideshare_workers{role}`, `rideshare_in_sync_slaves`,
//! `rideshare_worker_applied_seq{worker}`, `rideshare_worker_lag{worker}` and `rideshare_scaling_desired_slaves`.
//!
//! The `metrics` facade cannot remove a series, so a worker that is gone has its two series set to 0 once and
//! never touched again (an exporter configured with an idle timeout for gauges then drops them).

use std::collections::BTreeSet;

use protocol::coord::MasterRecord;
use protocol::Role;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::ClusterView;
use crate::events::{Events, What, WorkerRef};

/// Starts the observer: it looks at every view and target the cluster publishes, until the view's task ends.
pub fn spawn(
    mut view: watch::Receiver<ClusterView>,
    mut target: watch::Receiver<usize>,
    events: Events,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut observer = Observer::new(events);
        loop {
            let current = view.borrow_and_update().clone();
            observer.observe(&current);
            observer.publish(&current, *target.borrow_and_update());
            tokio::select! {
                changed = view.changed() => if changed.is_err() { return },
                changed = target.changed() => if changed.is_err() { return },
            }
        }
    })
}

/// What the observer remembers between views.
pub struct Observer {
    events: Events,
    /// The last master seen: a view without a master (between a death and an election) keeps it.
    last_master: Option<MasterRecord>,
    /// Workers with gauge series, to zero those that are gone.
    series: BTreeSet<String>,
}

/// A change of master between the last one seen and the view's: (from, to). The first master seen is none.
///
/// A new master claims the master znode with the epoch it read, then bumps the epoch and rewrites the znode: a
/// view may show it for a moment at its predecessor's epoch. Only once its epoch has passed its predecessor's
/// is the change a failover; the same worker (id and pid) at a new epoch is that same takeover settling. A
/// worker restarted on its own copy (a restore) has a new pid: that is a change.
pub fn master_change<'a>(
    last: Option<&'a MasterRecord>,
    view: &'a ClusterView,
) -> Option<(&'a MasterRecord, &'a MasterRecord)> {
    let (last, now) = (last?, view.master.as_ref()?);
    let other = last.id != now.id || last.pid != now.pid;
    (other && now.epoch > last.epoch).then_some((last, now))
}

/// Whether the view's master is the last one seen, possibly at a later epoch.
fn same_master(last: Option<&MasterRecord>, now: &MasterRecord) -> bool {
    last.is_some_and(|l| l.id == now.id && l.pid == now.pid)
}

fn worker_ref(m: &MasterRecord) -> WorkerRef {
    WorkerRef {
        id: m.id.clone(),
        pid: m.pid,
    }
}

impl Observer {
    pub fn new(events: Events) -> Self {
        Self {
            events,
            last_master: None,
            series: BTreeSet::new(),
        }
    }

    /// Records a failover when the view's master differs from the last one seen, and the epoch in the history.
    pub fn observe(&mut self, view: &ClusterView) {
        let Some(master) = &view.master else {
            return;
        };
        if let Some((from, to)) = master_change(self.last_master.as_ref(), view) {
            self.events.record(
                What::Failover {
                    epoch: to.epoch,
                    from_epoch: from.epoch,
                    from: worker_ref(from),
                    to: worker_ref(to),
                },
                format!(
                    "master changed: {} (pid {}) at epoch {} was followed by {} (pid {}) at epoch {}",
                    from.id, from.pid, from.epoch, to.id, to.pid, to.epoch
                ),
            );
        } else if self.last_master.is_some() && !same_master(self.last_master.as_ref(), master) {
            // A new master still taking over, at its predecessor's epoch: recorded once it has moved on.
            return;
        }
        self.events.epoch_seen(master.epoch, worker_ref(master));
        self.last_master = Some(master.clone());
    }

    /// Sets the gauges from the view and the number of slaves the supervisor keeps.
    pub fn publish(&mut self, view: &ClusterView, target_slaves: usize) {
        let epoch = view
            .master
            .as_ref()
            .or(self.last_master.as_ref())
            .map_or(0, |m| m.epoch);
        metrics::gauge!("rideshare_epoch").set(epoch as f64);
        let infos = view.worker_infos();
        for role in [Role::Master, Role::Slave] {
            let n = infos.iter().filter(|w| w.role == role).count();
            metrics::gauge!("rideshare_workers", "role" => crate::events::role_label(role))
                .set(n as f64);
        }
        metrics::gauge!("rideshare_in_sync_slaves").set(view.in_sync_members().len() as f64);
        metrics::gauge!("rideshare_scaling_desired_slaves").set(target_slaves as f64);
        for (id, record) in &view.workers {
            metrics::gauge!("rideshare_worker_applied_seq", "worker" => id.clone())
                .set(record.applied_seq as f64);
            if let Some(lag) = view.lag_of(record) {
                metrics::gauge!("rideshare_worker_lag", "worker" => id.clone()).set(lag as f64);
            }
        }
        let now: BTreeSet<String> = view.workers.keys().cloned().collect();
        for gone in self.series.difference(&now) {
            metrics::gauge!("rideshare_worker_applied_seq", "worker" => gone.clone()).set(0.0);
            metrics::gauge!("rideshare_worker_lag", "worker" => gone.clone()).set(0.0);
        }
        self.series = now;
    }
}

#[cfg(test)]
mod tests {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    use metrics_util::CompositeKey;
    use protocol::coord::{InSyncSet, WorkerRecord};

    use super::*;

    fn master(id: &str, pid: u32, epoch: u64) -> MasterRecord {
        MasterRecord {
            id: id.into(),
            pid,
            epoch,
        }
    }

    fn with_master(m: Option<MasterRecord>) -> ClusterView {
        ClusterView {
            in_sync: Some(InSyncSet::default()),
            master: m,
            ..ClusterView::default()
        }
    }

    #[test]
    fn a_new_master_at_a_new_epoch_is_recorded_as_a_failover_from_the_last_one_seen() {
        let events = Events::default();
        let mut observer = Observer::new(events.clone());
        // The first master claims its znode at epoch 0, then moves to epoch 1: one takeover, no failover.
        observer.observe(&with_master(Some(master("a", 10, 0))));
        observer.observe(&with_master(Some(master("a", 10, 1))));
        assert!(
            events.recent().is_empty(),
            "the first master is no failover"
        );
        // The master died: no master for a while, then another one, first at the old epoch, then the next.
        observer.observe(&with_master(None));
        observer.observe(&with_master(Some(master("b", 20, 1))));
        assert!(
            events.recent().is_empty(),
            "not before it moved to its epoch"
        );
        observer.observe(&with_master(Some(master("b", 20, 2))));
        observer.observe(&with_master(Some(master("b", 20, 2))));

        let recent = events.recent();
        assert_eq!(recent.len(), 1, "{recent:?}");
        assert_eq!(
            recent[0].what,
            What::Failover {
                epoch: 2,
                from_epoch: 1,
                from: WorkerRef {
                    id: "a".into(),
                    pid: 10
                },
                to: WorkerRef {
                    id: "b".into(),
                    pid: 20
                },
            }
        );
        assert!(recent[0].reason.contains("a (pid 10) at epoch 1"));
        let epochs: Vec<(u64, String)> = events
            .epochs()
            .into_iter()
            .map(|e| (e.epoch, e.master.id))
            .collect();
        assert_eq!(epochs, [(2, "b".to_owned()), (1, "a".to_owned())]);
    }

    /// The value recorded for `name` with exactly `labels`.
    fn recorded(
        snapshot: &[(CompositeKey, DebugValue)],
        name: &str,
        labels: &[(&str, &str)],
    ) -> Option<f64> {
        snapshot.iter().find_map(|(key, value)| {
            let key = key.key();
            let same_labels = key.labels().count() == labels.len()
                && labels
                    .iter()
                    .all(|(k, v)| key.labels().any(|l| l.key() == *k && l.value() == *v));
            (key.name() == name && same_labels).then_some(match value {
                DebugValue::Counter(n) => *n as f64,
                DebugValue::Gauge(g) => g.0,
                DebugValue::Histogram(_) => f64::NAN,
            })
        })
    }

    #[test]
    fn a_failover_is_counted_and_the_gauges_follow_the_view_zeroing_a_gone_worker() {
        let record = |id: &str, pid, applied_seq| {
            let r = WorkerRecord {
                id: id.into(),
                pid,
                role: Role::Slave,
                epoch: 1,
                applied_seq,
            };
            (id.to_owned(), r)
        };
        let before = ClusterView {
            master: Some(master("a", 10, 1)),
            in_sync: Some(InSyncSet {
                epoch: 1,
                master: "a".into(),
                members: vec!["s".into()],
            }),
            workers: [record("a", 10, 9), record("s", 20, 7)].into(),
            ..ClusterView::default()
        };
        // The master died; s took over at epoch 2 and a new slave n is catching up.
        let after = ClusterView {
            master: Some(master("s", 20, 2)),
            in_sync: Some(InSyncSet {
                epoch: 2,
                master: "s".into(),
                members: vec![],
            }),
            workers: [record("s", 20, 9), record("n", 30, 4)].into(),
            ..ClusterView::default()
        };
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        metrics::with_local_recorder(&recorder, || {
            let mut observer = Observer::new(Events::default());
            observer.observe(&before);
            observer.publish(&before, 1);
            observer.observe(&after);
            observer.publish(&after, 2);
        });
        let snapshot: Vec<(CompositeKey, DebugValue)> = snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .map(|(key, _, _, value)| (key, value))
            .collect();
        let at = |name, labels: &[(&str, &str)]| recorded(&snapshot, name, labels);
        assert_eq!(at("rideshare_failovers_total", &[]), Some(1.0));
        assert_eq!(at("rideshare_epoch", &[]), Some(2.0));
        assert_eq!(at("rideshare_workers", &[("role", "master")]), Some(1.0));
        assert_eq!(at("rideshare_workers", &[("role", "slave")]), Some(1.0));
        assert_eq!(at("rideshare_in_sync_slaves", &[]), Some(0.0));
        assert_eq!(at("rideshare_scaling_desired_slaves", &[]), Some(2.0));
        assert_eq!(
            at("rideshare_worker_applied_seq", &[("worker", "n")]),
            Some(4.0)
        );
        assert_eq!(at("rideshare_worker_lag", &[("worker", "n")]), Some(5.0));
        assert_eq!(at("rideshare_worker_lag", &[("worker", "s")]), Some(0.0));
        // The dead master's series are zeroed, not left at their last values.
        assert_eq!(
            at("rideshare_worker_applied_seq", &[("worker", "a")]),
            Some(0.0)
        );
        assert_eq!(at("rideshare_worker_lag", &[("worker", "a")]), Some(0.0));
    }

    #[test]
    fn a_master_restarted_at_a_new_epoch_is_a_change_but_the_same_one_settling_is_not() {
        let a1 = master("a", 10, 1);
        assert!(master_change(Some(&a1), &with_master(Some(master("a", 11, 2)))).is_some());
        assert!(master_change(Some(&a1), &with_master(Some(master("a", 10, 2)))).is_none());
        assert!(master_change(Some(&a1), &with_master(Some(master("b", 20, 1)))).is_none());
        assert!(master_change(Some(&a1), &with_master(Some(a1.clone()))).is_none());
        assert!(master_change(Some(&a1), &with_master(None)).is_none());
        assert!(master_change(None, &with_master(Some(a1.clone()))).is_none());
    }
}
