//! Leader election: who may stand, the order of candidates, whose turn it is, and taking the master role over.
//!
//! The recipe is ZooKeeper's: each in-sync slave creates an ephemeral candidate znode named by its pid
//! (`election/<pid, ten digits>-<id>`), so candidates sort by pid; each watches only the candidate just before it
//! (no herd when one goes), and the first watches the master znode. When the master znode is gone and a
//! candidate is first, it is that candidate's turn: it takes the role over ([`Election::take_master_role`]),
//! which succeeds only for a member of the last in-sync set, the only slaves sure to hold every acknowledged
//! write. A slave stands once its join is answered (so that a master dying right after can still be replaced)
//! and withdraws whenever it stops being in sync, retires, or resyncs.
//!
//! The orchestrator does not take part; when no election can bring a master (no live member of the set), it
//! restores one from the furthest copy of the database (`orchestrator::supervisor`).

use std::time::Duration;

use anyhow::bail;
use protocol::coord::InSyncSet;
use protocol::coord::MasterRecord;
use zookeeper_client::{Error as ZkError, EventType};

use crate::coord::{ephemeral, ignore_no_node, Coord, MasterRole};

/// What stops a worker from taking the master role.
#[derive(Debug, thiserror::Error)]
pub enum TakeoverError {
    /// Only a slave of the last in-sync set may become master: any other may miss acknowledged writes.
    #[error("not in the in-sync set of the last master")]
    NotInSync,
    #[error("another worker holds the master role")]
    MasterExists,
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// What a candidate waits on, given the sorted candidates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Watch {
    /// Not standing (any more): nothing to wait on.
    NotStanding,
    /// First in line: the master znode; its turn comes when that is gone.
    Master,
    /// The candidate just before it in line.
    Predecessor(String),
}

/// Whom candidate `me` watches among `candidates` (znode names, in any order).
pub fn watch_for(candidates: &[String], me: &str) -> Watch {
    let mut sorted: Vec<&String> = candidates.iter().collect();
    sorted.sort();
    match sorted.iter().position(|c| *c == me) {
        None => Watch::NotStanding,
        Some(0) => Watch::Master,
        Some(i) => Watch::Predecessor(sorted[i - 1].clone()),
    }
}

/// How often a worker that does not stand checks again whether it does (its turn can only come once it does).
const NOT_STANDING_RECHECK: Duration = Duration::from_millis(200);

/// This worker's part in the election.
pub struct Election<'a> {
    zk: &'a Coord,
}

impl<'a> Election<'a> {
    pub fn new(zk: &'a Coord) -> Self {
        Self { zk }
    }

    fn candidate(&self) -> String {
        self.zk.names.zk_candidate(self.zk.pid, &self.zk.id)
    }

    /// Registers as a candidate (an in-sync slave). Idempotent.
    pub async fn stand(&self) -> anyhow::Result<()> {
        match self
            .zk
            .client
            .create(&self.candidate(), &[], &ephemeral())
            .await
        {
            Ok(_) | Err(ZkError::NodeExists) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Withdraws from the election. Idempotent.
    pub async fn withdraw(&self) -> anyhow::Result<()> {
        self.zk
            .client
            .delete(&self.candidate(), None)
            .await
            .or_else(ignore_no_node)?;
        Ok(())
    }

    /// Waits until it is this worker's turn to try to become master: it is the first candidate and there is no
    /// master. Callers that do not stand wait on it until they do.
    pub async fn wait_for_turn(&self) -> anyhow::Result<()> {
        let path = self.candidate();
        let me = path.rsplit('/').next().unwrap_or_default().to_owned();
        let election = self.zk.names.zk_election();
        loop {
            let candidates = match self.zk.client.list_children(&election).await {
                Ok(c) => c,
                Err(ZkError::NoNode) => vec![],
                Err(e) => return Err(e.into()),
            };
            let watched = match watch_for(&candidates, &me) {
                Watch::NotStanding => {
                    tokio::time::sleep(NOT_STANDING_RECHECK).await;
                    continue;
                }
                Watch::Master => self.zk.names.zk_master(),
                Watch::Predecessor(name) => format!("{election}/{name}"),
            };
            let (stat, watcher) = self.zk.client.check_and_watch_stat(&watched).await?;
            if stat.is_none() {
                if watched == self.zk.names.zk_master() {
                    return Ok(());
                }
                continue;
            }
            let event = watcher.changed().await;
            if event.event_type == EventType::Session && event.session_state.is_terminated() {
                bail!("ZooKeeper session ended while waiting for the election");
            }
        }
    }

    /// Takes the master role: claims the master znode, moves to a new epoch, and becomes the only writer of the
    /// in-sync set, with that set read *before* the claim as the compare-and-set reference. With
    /// `must_be_in_sync`, the caller must be a member of that set (a promoted slave); a master restored by the
    /// orchestrator on its own database need not.
    pub async fn take_master_role(
        &self,
        db_epoch: u64,
        must_be_in_sync: bool,
    ) -> Result<MasterRole, TakeoverError> {
        let zk = self.zk;
        let (set, version) = zk.in_sync().await?;
        if must_be_in_sync && !set.members.contains(&zk.id) {
            return Err(TakeoverError::NotInSync);
        }
        let mut record = MasterRecord {
            id: zk.id.clone(),
            pid: zk.pid,
            epoch: set.epoch.max(db_epoch),
        };
        let data = serde_json::to_vec(&record).map_err(anyhow::Error::from)?;
        match zk
            .client
            .create(&zk.names.zk_master(), &data, &ephemeral())
            .await
        {
            Ok(_) => {}
            Err(ZkError::NodeExists) => return Err(TakeoverError::MasterExists),
            Err(e) => return Err(anyhow::Error::from(e).into()),
        }
        zk.renew_leadership().await;
        let taken = async {
            let epoch = zk.bump_epoch(record.epoch).await?;
            let fresh = InSyncSet {
                epoch,
                master: zk.id.clone(),
                members: vec![],
            };
            let in_sync_version = zk.write_in_sync(&fresh, version).await?;
            record.epoch = epoch;
            zk.update_master(&record).await?;
            anyhow::Ok(MasterRole {
                epoch,
                in_sync_version,
                previous: set.members.clone(),
            })
        };
        match taken.await {
            Ok(role) => Ok(role),
            Err(e) => {
                // Give the role back rather than sit on a master znode we cannot act for.
                let _ = zk.client.delete(&zk.names.zk_master(), None).await;
                Err(e.into())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use protocol::Names;

    use super::*;

    fn name(pid: u32, id: &str) -> String {
        let path = Names::default().zk_candidate(pid, id);
        path.rsplit('/').next().unwrap().to_owned()
    }

    #[test]
    fn the_candidate_with_the_lowest_pid_watches_the_master_and_each_other_its_predecessor() {
        let candidates = vec![name(300, "c"), name(20, "a"), name(100, "b")];
        assert_eq!(watch_for(&candidates, &name(20, "a")), Watch::Master);
        assert_eq!(
            watch_for(&candidates, &name(100, "b")),
            Watch::Predecessor(name(20, "a"))
        );
        assert_eq!(
            watch_for(&candidates, &name(300, "c")),
            Watch::Predecessor(name(100, "b"))
        );
    }

    #[test]
    fn candidates_order_by_pid_as_a_number_not_as_text() {
        // 99 < 100 although "99" > "100" as text: the pid is zero-padded.
        let candidates = vec![name(100, "a"), name(99, "z")];
        assert_eq!(watch_for(&candidates, &name(99, "z")), Watch::Master);
    }

    #[test]
    fn a_worker_that_does_not_stand_watches_nothing() {
        assert_eq!(
            watch_for(&[name(1, "a")], &name(2, "b")),
            Watch::NotStanding
        );
        assert_eq!(watch_for(&[], &name(2, "b")), Watch::NotStanding);
    }
}
