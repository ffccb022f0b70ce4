//! A worker gone: what its end means (a crash to replace, a failed start to hold back after, a retirement, a
//! kill), forgetting it in ZooKeeper, and removing the copies that no worker needs any more.

use std::collections::BTreeMap;
use std::time::Duration;

use protocol::Role;
use tokio::time::Instant;

use super::{Gone, Idle, Managed, Supervisor};
use crate::view::ClusterView;

/// After a failed start (a worker that ends before it registers in ZooKeeper, a master that ends before it
/// takes the role, or one that cannot be spawned) further starts are held back, from [`HOLD_MIN`] doubling
/// up to [`HOLD_MAX`], so a broken binary, host or copy cannot become a crash loop that eats the host. A worker
/// that died after it registered is a crash, replaced at once.
const HOLD_MIN: Duration = Duration::from_millis(500);
const HOLD_MAX: Duration = Duration::from_secs(30);

/// How long removing a dead worker's znodes (or a removed copy's record) may take before it is left to a later
/// tick.
const FORGET_TIMEOUT: Duration = Duration::from_secs(5);

/// What the end of a worker this supervisor ran means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Departure {
    /// The supervisor killed it: nothing to report.
    Killed,
    /// A slave retired by scaling down stopped, as asked.
    Retired,
    /// It ended before it started properly: starts are held back.
    FailedStart,
    /// The master died: the in-sync slaves elect another, then a slave is added.
    MasterDied,
    /// A slave died: replaced.
    SlaveDied,
}

fn departure(how: Gone, retired: bool, failed_start: bool, was_master: bool) -> Departure {
    match how {
        Gone::Killed => Departure::Killed,
        Gone::Ended if retired => Departure::Retired,
        Gone::Ended if failed_start => Departure::FailedStart,
        Gone::Ended if was_master => Departure::MasterDied,
        Gone::Ended => Departure::SlaveDied,
    }
}

/// How long starts are held back after `setbacks` setbacks in a row: [`HOLD_MIN`], doubling, up to
/// [`HOLD_MAX`].
fn hold_for(setbacks: u32) -> Duration {
    HOLD_MIN
        .saturating_mul(1u32 << setbacks.saturating_sub(1).min(16))
        .min(HOLD_MAX)
}

/// Whether the copies of gone workers may go: a healthy master (not one of them, run by this supervisor)
/// holds every acknowledged write, so they hold nothing that is needed.
fn may_remove_idle_copies(
    view: &ClusterView,
    idle: &BTreeMap<String, Idle>,
    workers: &BTreeMap<String, Managed>,
) -> bool {
    let Some(master) = &view.master else {
        return false;
    };
    !idle.is_empty()
        && !idle.contains_key(&master.id)
        && !view.in_sync_members().is_empty()
        && workers.contains_key(&master.id)
}

impl Supervisor {
    /// A worker process is gone: it is no longer run, its znodes are removed, its copy is idle.
    pub(super) async fn on_gone(&mut self, id: &str, pid: u32, how: Gone) {
        let Some(managed) = self.workers.get(id).filter(|w| w.pid == pid).cloned() else {
            // Reported twice (a kill and its exit), or a process this supervisor never ran: only make sure
            // ZooKeeper forgets it.
            if self
                .view
                .borrow()
                .workers
                .get(id)
                .is_some_and(|w| w.pid == pid)
            {
                self.forget(id, pid).await;
            }
            return;
        };
        self.workers.remove(id);
        let was_master = self
            .view
            .borrow()
            .master
            .as_ref()
            .is_some_and(|m| m.id == id && m.pid == pid);
        let retired = self.retiring.remove(id);
        let mut failed_start = !managed.registered;
        if self.pending_master.as_deref() == Some(id) {
            self.pending_master = None;
            failed_start = true;
            tracing::warn!(
                worker = %id,
                pid,
                "the worker started as master ended before taking the role"
            );
        }
        match departure(how, retired, failed_start, was_master) {
            Departure::Killed => {}
            Departure::Retired => tracing::info!(worker = %id, pid, "retired slave stopped"),
            Departure::FailedStart => {
                tracing::warn!(worker = %id, pid, "worker ended before it started properly");
                self.hold();
            }
            Departure::MasterDied => {
                tracing::warn!(
                    worker = %id,
                    pid,
                    "the master died; the in-sync slaves elect another, then a slave is added"
                );
                self.departed(
                    Role::Master,
                    id,
                    pid,
                    "died; the in-sync slaves elected another master",
                );
            }
            Departure::SlaveDied => {
                tracing::warn!(worker = %id, pid, "a slave died; replacing it");
                self.departed(Role::Slave, id, pid, "died");
            }
        }
        self.idle.insert(id.to_owned(), Idle::Died);
        self.forget(id, pid).await;
    }

    /// Removes a dead worker's znodes; on failure, remembers to retry.
    pub(super) async fn forget(&mut self, id: &str, pid: u32) {
        match tokio::time::timeout(FORGET_TIMEOUT, self.registry.forget(id, pid)).await {
            Ok(Ok(())) => {
                self.unforgotten.remove(id);
            }
            Ok(Err(e)) => {
                tracing::warn!(
                    worker = %id,
                    pid,
                    "removing a dead worker's znodes: {e:#}; will retry"
                );
                self.unforgotten.insert(id.to_owned(), pid);
            }
            Err(_) => {
                tracing::warn!(
                    worker = %id,
                    pid,
                    "removing a dead worker's znodes timed out; will retry"
                );
                self.unforgotten.insert(id.to_owned(), pid);
            }
        }
    }

    pub(super) fn held(&self) -> bool {
        self.hold_until.is_some_and(|t| Instant::now() < t)
    }

    /// Holds starts back after a setback (a failed start, a restore that cannot choose), longer after each one
    /// in a row; the count is reset once the cluster is healthy.
    pub(super) fn hold(&mut self) {
        self.failed_starts += 1;
        let hold = hold_for(self.failed_starts);
        tracing::warn!(
            setbacks = self.failed_starts,
            "holding starts back for {hold:?}"
        );
        self.hold_until = Some(Instant::now() + hold);
    }

    /// Once a healthy master (not one of them) holds every acknowledged write, the copies of dead workers
    /// hold nothing that is needed: the runtime removes each on its host, then it leaves the registry, so
    /// crashes do not fill the disks. A copy the runtime cannot remove stays in the registry (it is tried again
    /// when an orchestrator next starts) rather than being tried every tick.
    pub(super) async fn remove_idle_copies(&mut self, view: &ClusterView) {
        let Some(master) = &view.master else { return };
        if !may_remove_idle_copies(view, &self.idle, &self.workers) {
            return;
        }
        let ids: Vec<String> = self.idle.keys().cloned().collect();
        for id in ids {
            if self.workers.contains_key(&id) || self.is_running_anywhere(&id).await {
                continue;
            }
            let Some(copy) = view.copies.get(&id) else {
                self.idle.remove(&id);
                continue;
            };
            if let Err(e) = self.runtime.remove_copy(&copy.host, &id).await {
                tracing::warn!(
                    worker = %id,
                    host = %copy.host,
                    "removing a gone worker's copy: {e:#}; it stays in the registry"
                );
                self.idle.remove(&id);
                continue;
            }
            match tokio::time::timeout(FORGET_TIMEOUT, self.registry.drop_copy(&id)).await {
                Ok(Ok(())) => {
                    tracing::info!(
                        worker = %id,
                        host = %copy.host,
                        master = %master.id,
                        "removed a gone worker's copy: the master holds everything it held"
                    );
                    self.idle.remove(&id);
                }
                // Left idle: tried again at a later tick (removing a copy that is gone already is done).
                Ok(Err(e)) => {
                    tracing::warn!(worker = %id, "dropping a removed copy's record: {e:#}")
                }
                Err(_) => {
                    tracing::warn!(worker = %id, "dropping a removed copy's record timed out")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{managed, view};
    use super::*;

    #[test]
    fn an_end_is_a_retirement_before_a_failed_start_before_a_death() {
        assert_eq!(departure(Gone::Killed, true, true, true), Departure::Killed);
        assert_eq!(departure(Gone::Ended, true, true, true), Departure::Retired);
        assert_eq!(
            departure(Gone::Ended, false, true, true),
            Departure::FailedStart
        );
        assert_eq!(
            departure(Gone::Ended, false, false, true),
            Departure::MasterDied
        );
        assert_eq!(
            departure(Gone::Ended, false, false, false),
            Departure::SlaveDied
        );
    }

    #[test]
    fn starts_are_held_back_longer_after_each_setback_up_to_a_ceiling() {
        assert_eq!(hold_for(1), HOLD_MIN);
        assert_eq!(hold_for(2), HOLD_MIN * 2);
        assert_eq!(hold_for(3), HOLD_MIN * 4);
        assert_eq!(hold_for(40), HOLD_MAX);
    }

    #[test]
    fn copies_go_only_once_a_healthy_master_run_here_holds_everything() {
        let idle = BTreeMap::from([("dead".to_owned(), Idle::Died)]);
        let workers = managed(&[("m", 1), ("s", 2)]);
        let healthy = view(Some("m"), &[("m", 1), ("s", 2)], &["s"], &[]);
        assert!(may_remove_idle_copies(&healthy, &idle, &workers));
        // No slave in sync: the dead worker's copy may be the only other one.
        let alone = view(Some("m"), &[("m", 1), ("s", 2)], &[], &[]);
        assert!(!may_remove_idle_copies(&alone, &idle, &workers));
        // A master not run here (not adopted yet) or without a master at all.
        assert!(!may_remove_idle_copies(
            &healthy,
            &idle,
            &managed(&[("s", 2)])
        ));
        let none = view(None, &[("s", 2)], &["s"], &[]);
        assert!(!may_remove_idle_copies(&none, &idle, &workers));
        // The master's own copy is idle (it restarted on it): not before it registers as run here.
        let own = BTreeMap::from([("m".to_owned(), Idle::Died)]);
        assert!(!may_remove_idle_copies(&healthy, &own, &workers));
        assert!(!may_remove_idle_copies(
            &healthy,
            &BTreeMap::new(),
            &workers
        ));
    }
}
