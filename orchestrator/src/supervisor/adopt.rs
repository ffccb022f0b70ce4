//! Adopting the workers that run already: after an orchestrator restart every registered worker whose process
//! is alive is taken over as if this supervisor had started it; one whose process is gone is forgotten.

use std::collections::BTreeSet;

use super::{Idle, Managed, Supervisor};
use crate::view::ClusterView;

/// Every (id, pid) ZooKeeper shows: the registered workers, and the master (whose own record may lag).
fn registered(view: &ClusterView) -> BTreeSet<(String, u32)> {
    let mut registered: BTreeSet<(String, u32)> = view
        .workers
        .values()
        .map(|w| (w.id.clone(), w.pid))
        .collect();
    if let Some(m) = &view.master {
        registered.insert((m.id.clone(), m.pid));
    }
    registered
}

impl Supervisor {
    /// Adopts every registered worker (and the master) not run by this supervisor whose process is alive,
    /// and forgets those whose process is not.
    pub(super) async fn adopt_registered(&mut self) {
        let registered = registered(&self.view.borrow());
        for (id, pid) in registered {
            if self.unforgotten.get(&id) == Some(&pid) {
                continue;
            }
            if let Some(w) = self.workers.get(&id) {
                if w.pid != pid {
                    // An earlier process under this id (we restarted it on its copy): never alive at the same
                    // time as ours, since a copy is started on only when nothing runs it.
                    tracing::info!(
                        worker = %id,
                        pid,
                        "removing the znodes of an earlier process of this worker"
                    );
                    self.forget(&id, pid).await;
                }
                continue;
            }
            match self.ensure_managed(&id, pid).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!(
                        worker = %id,
                        pid,
                        "registered worker is not running; removing its znodes"
                    );
                    if self.view.borrow().copies.contains_key(&id) {
                        self.idle.entry(id.clone()).or_insert(Idle::Died);
                    }
                    self.forget(&id, pid).await;
                }
                Err(e) => tracing::warn!(worker = %id, pid, "checking a registered worker: {e:#}"),
            }
        }
    }

    /// Whether worker `id` (pid `pid`) is one this supervisor runs, adopting it if it is alive.
    pub(super) async fn ensure_managed(&mut self, id: &str, pid: u32) -> anyhow::Result<bool> {
        if let Some(w) = self.workers.get(id) {
            return Ok(w.pid == pid);
        }
        if !self.runtime.adopt(id, pid).await? {
            return Ok(false);
        }
        tracing::info!(worker = %id, pid, "adopted a running worker");
        self.workers.insert(
            id.to_owned(),
            Managed {
                pid,
                registered: true,
            },
        );
        self.idle.remove(id);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::view;
    use super::*;

    #[test]
    fn the_master_is_adopted_under_the_pid_of_its_master_record() {
        let mut v = view(Some("m"), &[("m", 10), ("s", 11)], &["s"], &[]);
        // Its worker record still shows the pid of an earlier process on the same id.
        v.workers.get_mut("m").unwrap().pid = 9;
        let found: Vec<(String, u32)> = registered(&v).into_iter().collect();
        assert_eq!(
            found,
            [("m", 9), ("m", 10), ("s", 11)].map(|(id, pid)| (id.to_owned(), pid))
        );
    }
}
