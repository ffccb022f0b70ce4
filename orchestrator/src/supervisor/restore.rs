//! Providing a master when no election can: who could elect one ([`electorate`]), when the supervisor must
//! step in ([`needs_master`]), and from which copy of the database ([`decide`]).
//!
//! The supervisor never reads a copy: it learns how far each got from its worker. A restore goes:
//! 1. every copy in the registry that has no running worker gets one, a slave on its own id, on the host that
//!    holds it (a copy whose worker an earlier orchestrator started is left to register and be adopted). A
//!    slave registers with the position of the copy on its disk, and keeps reporting it while there is no
//!    master to give it a snapshot. Each copy gets one start per restore;
//! 2. it waits until every copy has reported, or [`REPORT_WAIT`] has passed. A worker that was running before
//!    the restore reports once its record has settled ([`RECORD_SETTLE`]);
//! 3. it chooses the furthest (epoch, seq) among the copies that reported ([`choose_master`]). A copy that
//!    never reported (its worker could not be started, ended, or never registered) is left out only if a copy
//!    that did report is named by the last in-sync set (or is that set's master): such a copy holds every
//!    acknowledged write, so the furthest copy does too. Otherwise it refuses to choose, logs why, and tries
//!    again later;
//! 4. it restarts the chosen copy's worker as master, on that copy. The other slaves stay, and copy the new
//!    master's database once it serves.
//!
//! It starts an empty master only when the registry holds no copy at all.

use std::collections::BTreeSet;
use std::time::Duration;

use protocol::coord::RECORD_REFRESH;
use protocol::Role;
use tokio::time::Instant;

use super::{Gone, Supervisor};
use crate::events::What;
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

/// How long a restore waits for the workers it started on the registered copies to report how far their copies
/// got, before it decides without those that have not. A worker registers within a second of its start on an
/// idle host (starting the process, connecting to ZooKeeper, reading one row of its copy); 10 s covers a loaded
/// host many times over, and the ZooKeeper connection of a worker on a host that cannot reach it fails within
/// about that. Longer only delays a restore when a host is down for good.
pub const REPORT_WAIT: Duration = Duration::from_secs(10);

/// How long after the master was lost the record of a worker that was already running shows how far its copy
/// got. A slave rewrites its record every [`RECORD_REFRESH`], so its record may lag behind what it applied by
/// that much, and an in-sync slave applies what the dead master sent it within moments of its death; twice the
/// refresh covers both. (The slaves a restore starts report their copy at once, as they register.)
pub const RECORD_SETTLE: Duration = RECORD_REFRESH.saturating_mul(2);

/// A restore under way: since when, and the copies it started (or tried to start) workers on. Each copy gets
/// one start per restore: one whose worker could not start or ended is waited for like a silent one, not
/// restarted (each failed start holds starts back, which would delay the decision past [`REPORT_WAIT`]).
#[derive(Debug, Clone)]
pub(super) struct Restoring {
    since: Instant,
    started: BTreeSet<String>,
}

/// How far a copy got: the (epoch, seq) of its last log entry. Copies compare by epoch first: a later master's
/// entries supersede anything an earlier master wrote that it never had.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Position {
    pub epoch: u64,
    pub seq: u64,
}

/// What a restore knows of one registered copy: how far it got, as its worker reported it; `None` while no
/// worker on it has reported (yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Copy {
    pub id: String,
    pub at: Option<Position>,
}

/// What a restore does now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Decision {
    /// The registry holds no copy at all: start a new, empty master.
    Empty,
    /// Wait for more copies to report.
    Wait,
    /// Restart this copy's worker as master, on it.
    Master { id: String, at: Position },
    /// Choosing now could drop acknowledged writes, for this reason.
    Refuse(String),
}

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

/// The copy a restored master starts from, among those that reported: the furthest position; on a tie, the
/// smallest id (a stable choice).
fn choose_master(copies: &[Copy]) -> Option<(String, Position)> {
    copies
        .iter()
        .filter_map(|c| Some((c.at?, &c.id)))
        .max_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(a.1)))
        .map(|(at, id)| (id.clone(), at))
}

/// The copies that hold every acknowledged write: the members of the last in-sync set and its master. A write
/// is acknowledged only once every member has applied it, a member is written into the set only once it holds
/// everything committed, and one is taken out of it before anything is acknowledged without it.
pub(super) fn holders(view: &ClusterView) -> BTreeSet<String> {
    view.in_sync
        .as_ref()
        .map(|set| {
            set.members
                .iter()
                .chain(std::iter::once(&set.master))
                .filter(|id| !id.is_empty())
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

/// What a restore does, `waited` after it began, knowing `copies` (the whole registry) and the `holders` of
/// every acknowledged write (see [`holders`]).
pub(super) fn decide(copies: &[Copy], holders: &BTreeSet<String>, waited: Duration) -> Decision {
    if copies.is_empty() {
        return Decision::Empty;
    }
    let missing: Vec<&str> = copies
        .iter()
        .filter(|c| c.at.is_none())
        .map(|c| c.id.as_str())
        .collect();
    if !missing.is_empty() {
        if waited < REPORT_WAIT {
            return Decision::Wait;
        }
        let holder_reported = copies
            .iter()
            .any(|c| c.at.is_some() && holders.contains(&c.id));
        if !holder_reported {
            return Decision::Refuse(format!(
                "no report from copies {missing:?} after {REPORT_WAIT:?}, and none of the copies that \
                 reported is named by the last in-sync set ({holders:?}): a missing copy may be the only one \
                 holding acknowledged writes"
            ));
        }
    }
    match choose_master(copies) {
        Some((id, at)) => Decision::Master { id, at },
        None => Decision::Refuse("no copy reported".to_owned()),
    }
}

/// Whether the record of a worker that ran before the restore began shows its copy's position: once
/// [`RECORD_SETTLE`] has passed since the master was lost.
fn settled(no_master_since: Option<Instant>, now: Instant) -> bool {
    no_master_since.is_some_and(|t| now.saturating_duration_since(t) >= RECORD_SETTLE)
}

/// The copies for the log: `id@epoch:seq`, or `id@?` for one that has not reported.
fn summary(copies: &[Copy]) -> Vec<String> {
    copies
        .iter()
        .map(|c| match c.at {
            Some(p) => format!("{}@{}:{}", c.id, p.epoch, p.seq),
            None => format!("{}@?", c.id),
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

    /// One step of restoring a master (see the module's documentation): starts workers on the copies that have
    /// none, then waits, chooses, or refuses.
    pub(super) async fn restore_master(&mut self, view: &ClusterView) {
        let now = Instant::now();
        if self.restoring.is_none() && !view.copies.is_empty() {
            tracing::info!(
                copies = ?view.copies.keys().collect::<Vec<_>>(),
                "no master and no election can bring one: starting a worker on every copy without one, to \
                 learn how far each got"
            );
        }
        let mut restoring = self.restoring.take().unwrap_or(Restoring {
            since: now,
            started: BTreeSet::new(),
        });
        for id in view.copies.keys() {
            if self.workers.contains_key(id) || restoring.started.contains(id) {
                continue;
            }
            if self.is_running_anywhere(id).await {
                // A worker we do not know runs on it: started by an earlier orchestrator (perhaps as the master
                // it was restoring), not registered yet. It registers within moments and is adopted.
                continue;
            }
            // A copy whose worker cannot be started counts as not reported; the others still go ahead.
            restoring.started.insert(id.clone());
            self.start(id.clone(), Role::Slave).await;
        }
        let copies: Vec<Copy> = view
            .copies
            .keys()
            .map(|id| Copy {
                id: id.clone(),
                at: self.reported(view, id, &restoring, now),
            })
            .collect();
        match decide(&copies, &holders(view), now - restoring.since) {
            Decision::Wait => self.restoring = Some(restoring),
            Decision::Empty => {
                let Some(host) = self.place(view) else {
                    tracing::error!("no host to start a master on");
                    self.hold();
                    return;
                };
                if let Some(id) = self.start_new(Role::Master, host).await {
                    if self.booted {
                        self.events.record(
                            What::Restore {
                                worker: id.clone(),
                                epoch: None,
                                seq: None,
                            },
                            format!(
                                "no master, and no copy of the database anywhere: started {id} as a new, \
                                 empty master"
                            ),
                        );
                    } else {
                        tracing::info!(
                            worker = %id,
                            "no copy of the database anywhere: started a new, empty master"
                        );
                    }
                }
            }
            Decision::Refuse(why) => {
                tracing::error!(
                    copies = ?summary(&copies),
                    "{why}; not restoring a master until they report"
                );
                self.hold();
            }
            Decision::Master { id, at } => {
                tracing::info!(
                    worker = %id,
                    epoch = at.epoch,
                    seq = at.seq,
                    copies = ?summary(&copies),
                    via = ?view.in_sync.as_ref().map(|s| &s.members),
                    "restoring the master from the furthest copy of the database"
                );
                // Its worker runs as a slave (it reported): restarted as master on its own copy.
                if let Some(pid) = self.workers.get(&id).map(|w| w.pid) {
                    match self.runtime.kill(&id).await {
                        Ok(_) => self.on_gone(&id, pid, Gone::Killed).await,
                        Err(e) => {
                            tracing::error!(worker = %id, "killing it: {e:#}");
                            self.hold();
                            return;
                        }
                    }
                }
                if self.start(id.clone(), Role::Master).await {
                    self.events.record(
                        What::Restore {
                            worker: id.clone(),
                            epoch: Some(at.epoch),
                            seq: Some(at.seq),
                        },
                        format!(
                            "no election could bring a master: restarted {id} as master on the furthest copy \
                             (epoch {}, seq {}) among {}",
                            at.epoch,
                            at.seq,
                            summary(&copies).join(", ")
                        ),
                    );
                }
            }
        }
    }

    /// How far copy `id` got, as the worker running on it reports; `None` when no worker run here has
    /// registered on it, or one that ran before the restore has not settled yet.
    fn reported(
        &self,
        view: &ClusterView,
        id: &str,
        restoring: &Restoring,
        now: Instant,
    ) -> Option<Position> {
        let managed = self.workers.get(id)?;
        let record = view.workers.get(id).filter(|r| r.pid == managed.pid)?;
        (restoring.started.contains(id) || settled(self.no_master_since, now)).then_some(Position {
            epoch: record.epoch,
            seq: record.applied_seq,
        })
    }
}

#[cfg(test)]
mod tests {
    use protocol::coord::InSyncSet;

    use super::super::fixtures::view;
    use super::*;

    fn at(epoch: u64, seq: u64, id: &str) -> Copy {
        Copy {
            id: id.to_owned(),
            at: Some(Position { epoch, seq }),
        }
    }

    fn silent(id: &str) -> Copy {
        Copy {
            id: id.to_owned(),
            at: None,
        }
    }

    fn ids(ids: &[&str]) -> BTreeSet<String> {
        ids.iter().map(|id| (*id).to_owned()).collect()
    }

    fn master(id: &str, epoch: u64, seq: u64) -> Decision {
        Decision::Master {
            id: id.to_owned(),
            at: Position { epoch, seq },
        }
    }

    #[test]
    fn the_restored_master_is_the_copy_with_the_highest_epoch_then_seq() {
        let copies = [
            at(1, 500, "old-master"),
            at(2, 10, "elected"),
            at(2, 9, "lagging"),
        ];
        assert_eq!(
            decide(&copies, &ids(&["lagging"]), Duration::ZERO),
            master("elected", 2, 10)
        );
    }

    #[test]
    fn on_a_tie_the_smallest_id_wins() {
        let copies = [at(3, 7, "c"), at(3, 7, "a"), at(3, 7, "b")];
        assert_eq!(
            decide(&copies, &ids(&[]), Duration::ZERO),
            master("a", 3, 7)
        );
    }

    #[test]
    fn an_empty_master_is_started_only_when_the_registry_holds_no_copy() {
        assert_eq!(decide(&[], &ids(&["a"]), Duration::ZERO), Decision::Empty);
        // A copy that holds nothing yet is still a copy: its worker is restarted as master on it.
        let empty = [at(0, 0, "a")];
        assert_eq!(decide(&empty, &ids(&[]), Duration::ZERO), master("a", 0, 0));
    }

    #[test]
    fn a_restore_waits_for_every_copy_to_report_for_a_bounded_time() {
        let copies = [at(2, 10, "a"), silent("b")];
        let holders = ids(&["a", "b"]);
        let almost = REPORT_WAIT - Duration::from_millis(1);
        assert_eq!(decide(&copies, &holders, Duration::ZERO), Decision::Wait);
        assert_eq!(decide(&copies, &holders, almost), Decision::Wait);
        assert_eq!(decide(&copies, &holders, REPORT_WAIT), master("a", 2, 10));
    }

    #[test]
    fn a_silent_copy_is_left_out_only_when_a_copy_of_the_last_in_sync_set_reported() {
        // b, the only member of the last set, never reported: a and c may both lack acknowledged writes.
        let copies = [at(2, 10, "a"), silent("b"), at(2, 12, "c")];
        let decision = decide(&copies, &ids(&["m", "b"]), REPORT_WAIT);
        let Decision::Refuse(why) = decision else {
            panic!("chose without the only holder: {decision:?}")
        };
        assert!(why.contains("\"b\""), "{why}");
        // The set's master reported: it holds every acknowledged write, so the furthest copy does too.
        assert_eq!(
            decide(&copies, &ids(&["a", "b"]), REPORT_WAIT),
            master("c", 2, 12)
        );
        // No set at all: nothing tells which copies hold the acknowledged writes.
        assert!(matches!(
            decide(&copies, &ids(&[]), REPORT_WAIT),
            Decision::Refuse(_)
        ));
        // Nothing reported.
        assert!(matches!(
            decide(&[silent("a")], &ids(&["a"]), REPORT_WAIT),
            Decision::Refuse(_)
        ));
    }

    #[test]
    fn the_holders_are_the_last_in_sync_sets_members_and_its_master() {
        let mut v = view(None, &[], &["a", "b"], &[]);
        v.in_sync = Some(InSyncSet {
            epoch: 3,
            master: "m".into(),
            members: vec!["a".into(), "b".into()],
        });
        assert_eq!(holders(&v), ids(&["a", "b", "m"]));
        v.in_sync = None;
        assert!(holders(&v).is_empty());
    }

    #[test]
    fn a_running_workers_record_counts_once_it_has_settled_after_the_master_was_lost() {
        let lost = Instant::now();
        assert!(!settled(None, lost));
        assert!(!settled(
            Some(lost),
            lost + RECORD_SETTLE - Duration::from_millis(1)
        ));
        assert!(settled(Some(lost), lost + RECORD_SETTLE));
        assert!(RECORD_SETTLE > RECORD_REFRESH);
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
