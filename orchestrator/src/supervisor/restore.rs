//! Providing a master when no election can: who could elect one ([`electorate`]), when the supervisor must
//! step in ([`needs_master`]), and from which copy of the database ([`choose_master`]).

use std::time::Duration;

use protocol::Role;
use tokio::time::Instant;

use super::{Gone, Supervisor};
use crate::cluster::new_worker_id;
use crate::folders::Position;
use crate::view::ClusterView;

/// How long the in-sync slaves get to elect a master before the supervisor restores one itself. An election
/// after a death the supervisor saw takes well under a second (it removes the master znode at once); after a
/// death it did not see, a ZooKeeper session timeout (4 s) comes first. 10 s leaves a slow election its
/// chance while bounding how long a stuck one keeps the cluster without a master.
pub const ELECTION_GRACE: Duration = Duration::from_secs(10);

/// How long live in-sync slaves that do not stand as candidates get to do so before the supervisor restores
/// a master itself. A slave stands just after it applied a message naming it in sync, so a master that dies
/// right after acknowledging a write may leave its slaves a few milliseconds short of standing; a second
/// covers that many times over, and one that has not stood by then never will.
pub const STAND_GRACE: Duration = Duration::from_secs(1);

/// Who can elect a master when there is none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Electorate {
    /// No live worker is in the last in-sync set: nobody can.
    Nobody,
    /// Live members of the set, none standing (yet).
    NotStanding,
    /// A live member stands: the election is under way.
    Standing,
}

/// What an election can do without the supervisor: the last in-sync set's live members (`alive`), and
/// whether one of them stands as a candidate. (A slave stands once a message of its master has named it in
/// sync, just after it applied it; one that joined the set just before the master died may never hear so.)
pub(super) fn electorate(view: &ClusterView, alive: impl Fn(&str) -> bool) -> Electorate {
    let live: Vec<&String> = view
        .in_sync
        .as_ref()
        .map(|set| set.members.iter().filter(|m| alive(m)).collect())
        .unwrap_or_default();
    if live.iter().any(|m| view.candidates.contains(*m)) {
        Electorate::Standing
    } else if live.is_empty() {
        Electorate::Nobody
    } else {
        Electorate::NotStanding
    }
}

/// Whether the supervisor must provide a master itself at `now`: there is none, none is on its way
/// (`master_pending`), and no election can bring one, or one has had its chance since `no_master_since`.
pub(super) fn needs_master(
    view: &ClusterView,
    electorate: Electorate,
    master_pending: bool,
    no_master_since: Option<Instant>,
    now: Instant,
) -> bool {
    if view.master.is_some() || master_pending {
        return false;
    }
    let waited = no_master_since.map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
    match electorate {
        Electorate::Nobody => true,
        Electorate::NotStanding => waited >= STAND_GRACE,
        Electorate::Standing => waited >= ELECTION_GRACE,
    }
}

/// The copy a restored master starts from: the furthest position; on a tie, one without a running worker
/// (nothing to kill), then the smallest id (a stable choice).
fn choose_master(copies: &[(Position, bool, String)]) -> Option<(Position, bool, String)> {
    copies
        .iter()
        .max_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)).then(b.2.cmp(&a.2)))
        .cloned()
}

/// The copies for the log: `id@epoch:seq`, and whether a worker runs on it.
fn summary(copies: &[(Position, bool, String)]) -> Vec<String> {
    copies
        .iter()
        .map(|(p, live, id)| {
            format!(
                "{id}@{}:{}{}",
                p.epoch,
                p.seq,
                if *live { " (running)" } else { "" }
            )
        })
        .collect()
}

impl Supervisor {
    pub(super) fn electorate(&self, view: &ClusterView) -> Electorate {
        electorate(view, |id| self.workers.contains_key(id))
    }

    pub(super) fn needs_master(&self, view: &ClusterView) -> bool {
        needs_master(
            view,
            self.electorate(view),
            self.pending_master.is_some(),
            self.no_master_since,
            Instant::now(),
        )
    }

    /// Starts a master on the copy of the database that got furthest, or an empty one when there is no copy
    /// at all.
    pub(super) async fn restore_master(&mut self, view: &ClusterView) {
        let mut candidates: Vec<(String, bool)> = Vec::new();
        let ids = match self.folders.ids() {
            Ok(ids) => ids,
            Err(e) => {
                tracing::error!("listing the workers' folders: {e:#}; not starting a master");
                self.hold();
                return;
            }
        };
        for id in ids {
            let live = self.workers.contains_key(&id);
            if !live && self.is_running_anywhere(&id).await {
                // A worker we do not know runs on it: started by an earlier orchestrator (perhaps as the master
                // it was restoring), not registered yet. It registers within moments and is adopted; choosing
                // without its copy could choose a worse one.
                tracing::info!(
                    worker = %id,
                    "waiting for a running worker to register before restoring a master"
                );
                return;
            }
            candidates.push((id, live));
        }
        let folders = self.folders.clone();
        let read = tokio::task::spawn_blocking(move || {
            candidates
                .into_iter()
                .map(|(id, live)| {
                    let position = folders.position(&id);
                    (id, live, position)
                })
                .collect::<Vec<_>>()
        })
        .await;
        let positions = match read {
            Ok(p) => p,
            Err(e) => {
                tracing::error!("reading the copies' positions: {e}");
                self.hold();
                return;
            }
        };
        let mut unreadable = false;
        let mut copies: Vec<(Position, bool, String)> = Vec::new();
        for (id, live, position) in positions {
            match position {
                Ok(Some(p)) => copies.push((p, live, id)),
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(worker = %id, "{e:#}");
                    unreadable = true;
                }
            }
        }
        let summary = summary(&copies);
        if unreadable {
            // The copy that cannot be read may be the one that got furthest: choosing among the others could
            // drop acknowledged writes. Someone has to look at it.
            tracing::error!(
                readable = ?summary,
                "a copy of the database cannot be read; not restoring a master until it can"
            );
            self.hold();
            return;
        }
        let Some((position, live, id)) = choose_master(&copies) else {
            let id = new_worker_id();
            tracing::info!(
                worker = %id,
                "no copy of the database anywhere: starting a new, empty master"
            );
            self.start(id, Role::Master).await;
            return;
        };
        if live {
            // Only after a failed election: the furthest copy is held by a slave that did not take the role.
            tracing::warn!(
                worker = %id,
                "the furthest copy is a running slave's, not elected: restarting it as master"
            );
            let pid = self.workers.get(&id).map(|w| w.pid);
            match self.runtime.kill(&id).await {
                Ok(_) => {
                    if let Some(pid) = pid {
                        self.on_gone(&id, pid, Gone::Killed).await;
                    }
                }
                Err(e) => {
                    tracing::error!(worker = %id, "killing it: {e:#}");
                    self.hold();
                    return;
                }
            }
        }
        tracing::info!(
            worker = %id,
            epoch = position.epoch,
            seq = position.seq,
            copies = ?summary,
            via = ?view.in_sync.as_ref().map(|s| &s.members),
            "restoring the master from the furthest copy of the database"
        );
        self.start(id, Role::Master).await;
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::view;
    use super::*;

    fn copy(epoch: u64, seq: u64, live: bool, id: &str) -> (Position, bool, String) {
        (Position { epoch, seq }, live, id.to_owned())
    }

    #[test]
    fn the_restored_master_is_the_copy_with_the_highest_epoch_then_seq() {
        let copies = [
            copy(1, 500, false, "old-master"),
            copy(2, 10, false, "elected"),
            copy(2, 9, false, "lagging"),
        ];
        assert_eq!(choose_master(&copies).unwrap().2, "elected");
    }

    #[test]
    fn on_a_tie_a_copy_without_a_running_worker_wins_then_the_smallest_id() {
        let copies = [
            copy(3, 7, true, "a-running"),
            copy(3, 7, false, "c-dead"),
            copy(3, 7, false, "b-dead"),
        ];
        assert_eq!(choose_master(&copies).unwrap().2, "b-dead");
        assert!(choose_master(&[]).is_none());
    }

    #[test]
    fn nobody_can_elect_when_no_member_of_the_last_in_sync_set_is_alive() {
        let v = view(None, &[("a", 1), ("b", 2)], &["a", "b"], &["a"]);
        assert_eq!(electorate(&v, |_| false), Electorate::Nobody);
        assert_eq!(electorate(&v, |id| id == "b"), Electorate::NotStanding);
        assert_eq!(electorate(&v, |_| true), Electorate::Standing);
    }

    #[test]
    fn a_master_is_restored_at_once_when_nobody_can_elect_and_after_the_graces_otherwise() {
        let v = view(None, &[("a", 1)], &["a"], &[]);
        let lost = Instant::now();
        let at = |waited: Duration| lost + waited;
        let needs = |e, waited| needs_master(&v, e, false, Some(lost), at(waited));
        assert!(needs(Electorate::Nobody, Duration::ZERO));
        assert!(!needs(
            Electorate::NotStanding,
            STAND_GRACE - Duration::from_millis(1)
        ));
        assert!(needs(Electorate::NotStanding, STAND_GRACE));
        assert!(!needs(
            Electorate::Standing,
            ELECTION_GRACE - Duration::from_millis(1)
        ));
        assert!(needs(Electorate::Standing, ELECTION_GRACE));
    }

    #[test]
    fn no_master_is_restored_while_there_is_one_or_one_is_on_its_way() {
        let now = Instant::now();
        let with_master = view(Some("m"), &[("m", 1)], &[], &[]);
        assert!(!needs_master(
            &with_master,
            Electorate::Nobody,
            false,
            None,
            now
        ));
        let without = view(None, &[], &[], &[]);
        assert!(!needs_master(
            &without,
            Electorate::Nobody,
            true,
            Some(now),
            now
        ));
    }
}
