//! Starting and retiring slaves until there are `target` of them.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use protocol::Role;

use super::{Idle, Managed, Supervisor};
use crate::cluster::Msg;
use crate::view::ClusterView;

/// How long a retiring slave gets to stop after SIGTERM before it is killed.
const RETIRE_GRACE: Duration = Duration::from_secs(5);

/// What it takes to bring the slaves to the target.
#[derive(Debug, PartialEq, Eq)]
enum Balance {
    Start(usize),
    /// These slaves, by (id, pid).
    Retire(Vec<(String, u32)>),
    Nothing,
}

/// The running slaves (not retiring), by id: every worker run but the master, or the one started to be it, and
/// but a worker whose registration has gone from ZooKeeper although its process lives. That one's session ended
/// (it was paused or cut off past its timeout: a master deposed that way, say); it exits as soon as it runs again,
/// and counting it would retire a healthy slave in its place.
fn slaves(
    view: &ClusterView,
    workers: &BTreeMap<String, Managed>,
    retiring: &BTreeSet<String>,
    pending_master: Option<&str>,
) -> Vec<String> {
    let master = view
        .master
        .as_ref()
        .map(|m| m.id.as_str())
        .or(pending_master);
    workers
        .iter()
        .filter(|(id, w)| !w.registered || view.workers.contains_key(*id))
        .map(|(id, _)| id)
        .filter(|id| Some(id.as_str()) != master && !retiring.contains(*id))
        .cloned()
        .collect()
}

/// From `slaves` (id, pid) to `target` of them. Slaves not in sync are retired first (they serve nothing yet),
/// then those with the highest pids.
fn balance(target: usize, slaves: Vec<(String, u32)>, in_sync: &[String]) -> Balance {
    if slaves.len() < target {
        return Balance::Start(target - slaves.len());
    }
    if slaves.len() == target {
        return Balance::Nothing;
    }
    let excess = slaves.len() - target;
    let mut ranked: Vec<(bool, u32, String)> = slaves
        .into_iter()
        .map(|(id, pid)| (in_sync.contains(&id), pid, id))
        .collect();
    ranked.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
    Balance::Retire(
        ranked
            .into_iter()
            .take(excess)
            .map(|(_, pid, id)| (id, pid))
            .collect(),
    )
}

impl Supervisor {
    pub(super) fn slaves(&self, view: &ClusterView) -> Vec<String> {
        slaves(
            view,
            &self.workers,
            &self.retiring,
            self.pending_master.as_deref(),
        )
    }

    pub(super) async fn balance_slaves(&mut self, view: &ClusterView) {
        let target = *self.target.borrow();
        let slaves: Vec<(String, u32)> = self
            .slaves(view)
            .into_iter()
            .filter_map(|id| Some((id.clone(), self.workers.get(&id)?.pid)))
            .collect();
        let running = slaves.len();
        match balance(target, slaves, view.in_sync_members()) {
            Balance::Start(missing) => {
                tracing::info!(running, target, "starting {missing} slave(s)");
                for _ in 0..missing {
                    let Some(id) = self.start_slave().await else {
                        break;
                    };
                    self.replaced(&id);
                }
            }
            Balance::Retire(slaves) => {
                // Too many slaves: the dead ones are not replaced after all.
                self.departed.clear();
                for (id, pid) in slaves {
                    self.retire(id, pid).await;
                }
            }
            Balance::Nothing => {}
        }
    }

    /// Starts one more slave, on the host [`super::place`] picks: on a copy of an earlier run that host holds
    /// if there is one (it resyncs from the master anyway, and keeping the ids of a restarted cluster makes its
    /// logs readable), else on a new copy there. Its id, or `None` when it could not be started.
    pub(super) async fn start_slave(&mut self) -> Option<String> {
        let view = self.view.borrow().clone();
        let Some(host) = self.place(&view) else {
            tracing::error!("no host to start a slave on");
            self.hold();
            return None;
        };
        let reusable: Vec<String> = self
            .idle
            .iter()
            .filter(|(id, why)| {
                **why == Idle::PreviousRun && view.copies.get(*id).is_some_and(|c| c.host == host)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in reusable {
            if !self.is_running_anywhere(&id).await {
                return self.start(id.clone(), Role::Slave).await.then_some(id);
            }
        }
        self.start_new(Role::Slave, host).await
    }

    async fn retire(&mut self, id: String, pid: u32) {
        tracing::info!(worker = %id, pid, "retiring a slave (scaling down)");
        self.retiring.insert(id.clone());
        match self.runtime.terminate(&id).await {
            Ok(true) => {
                if let Some(me) = self.me.upgrade() {
                    tokio::spawn(async move {
                        tokio::time::sleep(RETIRE_GRACE).await;
                        let _ = me.send(Msg::RetireDue { id, pid }).await;
                    });
                }
            }
            Ok(false) => {}
            Err(e) => tracing::error!(worker = %id, "stopping a retiring slave: {e:#}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{managed, view};
    use super::*;

    fn owned(slaves: &[(&str, u32)]) -> Vec<(String, u32)> {
        slaves
            .iter()
            .map(|(id, pid)| ((*id).to_owned(), *pid))
            .collect()
    }

    #[test]
    fn the_slaves_are_the_workers_run_but_the_master_and_the_retiring() {
        let mut workers = managed(&[("m", 1), ("a", 2), ("b", 3), ("p", 4)]);
        // p has just been started: not registered yet, it counts.
        workers.get_mut("p").unwrap().registered = false;
        let v = view(Some("m"), &[("m", 1), ("a", 2), ("b", 3)], &[], &[]);
        let retiring = BTreeSet::from(["b".to_owned()]);
        assert_eq!(slaves(&v, &workers, &retiring, None), ["a", "p"]);
        // Without a master, the worker started to be one is no slave either.
        let no_master = view(None, &[("a", 2), ("m", 1)], &[], &[]);
        assert_eq!(
            slaves(&no_master, &workers, &retiring, Some("p")),
            ["a", "m"]
        );
    }

    #[test]
    fn a_worker_whose_registration_is_gone_is_no_slave_so_no_healthy_slave_is_retired_for_it() {
        // The old master was paused past its session: a new master (a) took over, b is in sync, and the old
        // master's process (m) lives on without a registration.
        let workers = managed(&[("m", 1), ("a", 2), ("b", 3)]);
        let v = view(Some("a"), &[("a", 2), ("b", 3)], &["b"], &[]);
        let running = slaves(&v, &workers, &BTreeSet::new(), None);
        assert_eq!(running, ["b"]);
        let with_pids = running.into_iter().map(|id| (id, 3)).collect();
        assert_eq!(
            balance(2, with_pids, v.in_sync_members()),
            Balance::Start(1),
            "a replacement, not a retirement"
        );
    }

    #[test]
    fn missing_slaves_are_started_and_none_retired() {
        assert_eq!(balance(3, owned(&[("a", 1)]), &[]), Balance::Start(2));
        assert_eq!(balance(1, owned(&[("a", 1)]), &[]), Balance::Nothing);
    }

    #[test]
    fn slaves_not_in_sync_are_retired_first_then_the_highest_pids() {
        let slaves = owned(&[("a", 10), ("b", 30), ("c", 20), ("d", 5)]);
        let in_sync = ["a".to_owned(), "b".to_owned(), "c".to_owned()];
        assert_eq!(
            balance(1, slaves, &in_sync),
            Balance::Retire(owned(&[("d", 5), ("b", 30), ("c", 20)]))
        );
    }
}
