//! The crash APIs (`crash/master`, `crash/slave`): which worker to kill, and killing a worker on request.

use std::collections::BTreeSet;

use protocol::Role;

use super::{Gone, Supervisor};
use crate::events::{What, WorkerRef};
use crate::view::ClusterView;

/// The worker a crash API kills, as (id, pid): the master, or the slave with the highest pid that is not
/// retiring (it is leaving anyway). `None`: there is none.
fn victim(view: &ClusterView, role: Role, retiring: &BTreeSet<String>) -> Option<(String, u32)> {
    match role {
        Role::Master => view.master.as_ref().map(|m| {
            let pid = view.workers.get(&m.id).map_or(m.pid, |w| w.pid);
            (m.id.clone(), pid)
        }),
        Role::Slave => view
            .workers
            .values()
            .filter(|w| view.role_of(w) == Role::Slave && !retiring.contains(&w.id))
            .map(|w| (w.id.clone(), w.pid))
            .max_by_key(|(_, pid)| *pid),
    }
}

impl Supervisor {
    /// Kills the master or the slave with the highest pid, for the crash APIs, and records the call. `Ok(None)`:
    /// there is none.
    pub(super) async fn crash(&mut self, role: Role) -> anyhow::Result<Option<u32>> {
        let result = self.crash_victim(role).await;
        let name = crate::events::role_label(role);
        let (killed, reason) = match &result {
            Ok(Some((id, pid))) => (
                Some(WorkerRef {
                    id: id.clone(),
                    pid: *pid,
                }),
                format!("crash API: killed the {name} {id} (pid {pid})"),
            ),
            Ok(None) => (None, format!("crash API: there is no {name} to kill")),
            Err(e) => (None, format!("crash API: killing the {name} failed: {e:#}")),
        };
        self.events.record(What::Crash { role, killed }, reason);
        result.map(|victim| victim.map(|(_, pid)| pid))
    }

    async fn crash_victim(&mut self, role: Role) -> anyhow::Result<Option<(String, u32)>> {
        loop {
            let view = self.view.borrow().clone();
            let victim = victim(&view, role, &self.retiring);
            let Some((id, pid)) = victim else {
                return Ok(None);
            };
            if self.unforgotten.get(&id) == Some(&pid) {
                // Known dead, its znodes not removed yet (ZooKeeper is unreachable): not a worker to kill.
                anyhow::bail!("ZooKeeper still lists worker {id} (pid {pid}), which is dead");
            }
            if self.ensure_managed(&id, pid).await? && self.runtime.kill(&id).await? {
                tracing::info!(worker = %id, pid, ?role, "killed on request (crash API)");
                self.on_gone(&id, pid, Gone::Killed).await;
                self.departed(role, &id, pid, "was killed by the crash API");
                return Ok(Some((id, pid)));
            }
            // It was dead already: forgotten now, so the next look finds the next candidate.
            self.on_gone(&id, pid, Gone::Ended).await;
        }
    }

    /// Kills worker `id` and waits until it is gone. `Ok(false)` when it is not running.
    pub(super) async fn kill(&mut self, id: &str) -> anyhow::Result<bool> {
        let registered = self.view.borrow().workers.get(id).map(|w| w.pid);
        if !self.workers.contains_key(id) {
            match registered {
                Some(pid) if self.ensure_managed(id, pid).await? => {}
                _ => return Ok(false),
            }
        }
        let Some(pid) = self.workers.get(id).map(|w| w.pid) else {
            return Ok(false);
        };
        let role = match &self.view.borrow().master {
            Some(m) if m.id == id => Role::Master,
            _ => Role::Slave,
        };
        let retiring = self.retiring.contains(id);
        if !self.runtime.kill(id).await? {
            return Ok(false);
        }
        self.on_gone(id, pid, Gone::Killed).await;
        if !retiring {
            self.departed(role, id, pid, "was killed on request");
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::view;
    use super::*;

    #[test]
    fn crashing_a_slave_kills_the_one_with_the_highest_pid_that_is_not_retiring() {
        let v = view(
            Some("m"),
            &[("m", 10), ("a", 30), ("b", 20), ("c", 40)],
            &[],
            &[],
        );
        let retiring = BTreeSet::from(["c".to_owned()]);
        assert_eq!(victim(&v, Role::Slave, &retiring), Some(("a".into(), 30)));
        assert_eq!(victim(&v, Role::Master, &retiring), Some(("m".into(), 10)));
    }

    #[test]
    fn there_is_no_victim_without_a_worker_of_the_role() {
        let v = view(None, &[("a", 30)], &[], &[]);
        assert_eq!(victim(&v, Role::Master, &BTreeSet::new()), None);
        let only_master = view(Some("m"), &[("m", 10)], &[], &[]);
        assert_eq!(victim(&only_master, Role::Slave, &BTreeSet::new()), None);
    }
}
