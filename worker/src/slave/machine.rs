//! The slave's replication logic as a state machine: the master's log, the answers to its own requests, election
//! turns and the clock go in; requests to send, acknowledgements, candidacy changes and the read lease come out.
//! The I/O loop (`slave::run`) carries the [`Effect`]s out; the read server serves while [`Slave::serving`] says
//! so. Nothing here touches the network: every rule is tested with a database in a temporary folder.
//!
//! The phases, in order:
//! - **catching up**: the sync queue is bound (by the I/O loop, first, so nothing is missed) and a snapshot of
//!   the master's database is requested and installed; queued messages wait;
//! - **following**: the queued messages are applied (those the snapshot already holds are skipped); once none is
//!   waiting, it asks to join;
//! - **joining**: the join request is out; messages are still applied;
//! - **in sync**: joined. Once it has applied everything the master had when it let it in (entries committed
//!   before the join need not have reached it yet), it stands for election and holds a read lease for as long as
//!   the grants in the master's messages say (see `protocol::lease`); entries committed after the join waited for
//!   its own acknowledgement, so from then on it misses no acknowledged write;
//! - **promoting**: its election turn came; it asked for the master role;
//! - **leaving**: retiring; it serves nothing, but goes on applying and acknowledging until the master has let
//!   it go (a slave that stopped would hold the write round up, then be dropped after its lease).
//!
//! Every message carries the master's commit point: the entries every in-sync slave holds, which no failover can
//! take back. A read shows data only up to there ([`Serving::committed`]): an entry applied but not yet committed
//! may be lost with its master, and a read that showed it would see a write that then never happened.
//!
//! A gap in the log, an entry that does not apply, or a heartbeat ahead of what it applied sends it back to
//! catching up; a master of a newer epoch that did not start where this copy stands, too. Not being named in the
//! in-sync set any more sends it back to following (it rejoins). Meeting a newer master ends the lease at once:
//! that is what lets the new master acknowledge writes without waiting the old leases out.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use protocol::lease::HolderLease;
use protocol::queue::{
    CommandReply, LeaseAnchor, ReadPosition, Snapshot, SyncAck, SyncKind, SyncMessage,
};

use crate::coord::MasterRole;
use crate::db::{Applied, Db};
use crate::election::TakeoverError;

/// The slave's settings.
#[derive(Debug, Clone)]
pub struct Params {
    pub id: String,
    pub db_path: PathBuf,
    /// Pause before asking again after a failed snapshot or join, so a slave does not hammer a busy master.
    pub retry_pause: Duration,
}

/// What the I/O loop must do, in the order given.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Ask the master for a snapshot; the answer goes to [`Slave::on_snapshot`].
    RequestSnapshot,
    /// Ask the master to join the in-sync set; the answer goes to [`Slave::on_join`].
    RequestJoin {
        applied_seq: u64,
        anchor: LeaseAnchor,
    },
    /// Acknowledge the message just handled, to its `reply_to`.
    Ack(SyncAck),
    /// Stand for election.
    Stand,
    /// Withdraw from the election.
    Withdraw,
    /// Try to take the master role; the answer goes to [`Slave::on_takeover`].
    TakeOver { db_epoch: u64 },
    /// Retire: let the reads in flight finish, withdraw, and ask the master to let this slave go; the answer
    /// goes to [`Slave::on_left`].
    Leave,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// `asked`: a snapshot request is out.
    CatchingUp {
        asked: bool,
    },
    Following,
    Joining,
    /// `named`: a message of the master has named this slave in sync since the join was answered (one published
    /// before the join was let in does not; not being named means something only after being named once).
    InSync {
        named: bool,
    },
    Promoting,
    /// `applying`: still following the log (false once a message could not be applied: then it only waits to
    /// be let go).
    Leaving {
        applying: bool,
    },
    Left,
}

/// What the read server may do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Serving {
    /// Serve only strictly before this instant (`None`: serve nothing).
    pub lease_until: Option<Instant>,
    /// Where the copy stands: the epoch of the master followed and the last seq applied.
    pub position: ReadPosition,
    /// The master's commit point as last heard, in the log this copy follows: a read shows data only up to here
    /// (entries applied beyond it could still be taken back by a failover).
    pub committed: u64,
    /// Bumped each time the database file is replaced by a snapshot: read connections to an older one are stale.
    pub generation: u64,
}

/// How a takeover attempt ended.
pub enum Takeover {
    /// This worker is the master: its database and the role.
    Won(Box<Db>, MasterRole, Vec<Effect>),
    /// It is not: go on as a slave.
    Lost(Vec<Effect>),
}

pub struct Slave {
    params: Params,
    phase: Phase,
    db: Option<Db>,
    /// The newest epoch this copy is known to agree with: messages from older epochs are a deposed master's.
    epoch: u64,
    lease: HolderLease,
    /// The master's commit point as last heard (see [`Serving::committed`]).
    committed: u64,
    /// The seq the master stood at when it let this slave in: until it has applied that far it may miss a
    /// committed entry, so it neither stands nor serves.
    joined_at: u64,
    /// The number of the master's last message before it let this slave in: every later one must name it.
    joined_after: u64,
    /// Whether it stands for election (a `Stand` was sent and no `Withdraw` since).
    standing: bool,
    generation: u64,
    /// When the next snapshot or join request may go out after a failed one.
    retry_at: Option<Instant>,
}

impl Slave {
    /// A slave with no copy yet. `session` must differ from any earlier run's (draw it at random): it tells this
    /// run's lease anchors from an earlier run's under the same id.
    pub fn new(params: Params, session: u64) -> (Self, Vec<Effect>) {
        let slave = Slave {
            params,
            phase: Phase::CatchingUp { asked: true },
            db: None,
            epoch: 0,
            lease: HolderLease::new(session),
            committed: 0,
            joined_at: 0,
            joined_after: 0,
            standing: false,
            generation: 0,
            retry_at: None,
        };
        (slave, vec![Effect::Withdraw, Effect::RequestSnapshot])
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Where the copy stands, (epoch of the last entry, seq), for the registration in ZooKeeper.
    pub fn position(&self) -> (u64, u64) {
        self.db.as_ref().map_or((0, 0), Db::position)
    }

    /// Whether the next message of the log may be handed in now. While catching up or promoting, messages wait
    /// in the queue.
    pub fn accepts_sync(&self) -> bool {
        matches!(
            self.phase,
            Phase::Following
                | Phase::Joining
                | Phase::InSync { .. }
                | Phase::Leaving { applying: true }
        )
    }

    /// What the read server may do. Only an in-sync slave holding a lease serves.
    pub fn serving(&self) -> Serving {
        let lease_until = match self.phase {
            Phase::InSync { .. } if self.caught_up() => self.lease.until(),
            _ => None,
        };
        Serving {
            lease_until,
            position: ReadPosition {
                epoch: self.epoch,
                seq: self.position().1,
            },
            committed: self.committed,
            generation: self.generation,
        }
    }

    /// When [`Slave::on_timer`] must be called next (`None`: nothing is waiting on time).
    pub fn next_timer(&self) -> Option<Instant> {
        self.retry_at
    }

    /// Retries whose pause is over.
    pub fn on_timer(&mut self, now: Instant) -> Vec<Effect> {
        if self.retry_at.is_none_or(|t| now < t) {
            return Vec::new();
        }
        self.retry_at = None;
        match self.phase {
            Phase::CatchingUp { asked: false } => {
                self.phase = Phase::CatchingUp { asked: true };
                vec![Effect::RequestSnapshot]
            }
            // A join is retried when the queue is next idle.
            _ => Vec::new(),
        }
    }

    /// The answer to a snapshot request (or why there is none). Installing it writes the database file.
    pub fn on_snapshot(&mut self, now: Instant, answer: Result<Snapshot, String>) -> Vec<Effect> {
        if self.phase != (Phase::CatchingUp { asked: true }) {
            return Vec::new();
        }
        let installed = answer.and_then(|snapshot| {
            // Close the old copy before its file is replaced.
            self.db = None;
            Db::install_snapshot(&self.params.db_path, &snapshot)
                .map(|db| (db, snapshot))
                .map_err(|e| format!("installing a snapshot: {e:#}"))
        });
        match installed {
            Ok((db, snapshot)) => {
                tracing::info!(
                    seq = snapshot.seq,
                    bytes = snapshot.database.len(),
                    "snapshot installed"
                );
                self.db = Some(db);
                self.epoch = snapshot.epoch;
                // Unknown until the master's next message says: the snapshot may hold an entry a failed round
                // left uncommitted.
                self.committed = 0;
                self.generation += 1;
                self.phase = Phase::Following;
            }
            Err(e) => {
                tracing::warn!("no snapshot yet: {e}");
                self.phase = Phase::CatchingUp { asked: false };
                self.retry_at = Some(now + self.params.retry_pause);
            }
        }
        Vec::new()
    }

    /// No message is waiting in the queue: a slave that caught up asks to join.
    pub fn on_idle(&mut self, now: Instant) -> Vec<Effect> {
        if self.phase != Phase::Following || self.retry_at.is_some_and(|t| now < t) {
            return Vec::new();
        }
        self.retry_at = None;
        self.phase = Phase::Joining;
        vec![Effect::RequestJoin {
            applied_seq: self.position().1,
            anchor: self.lease.anchor(now),
        }]
    }

    /// The answer to a join request.
    pub fn on_join(&mut self, now: Instant, answer: Result<CommandReply, String>) -> Vec<Effect> {
        if self.phase != Phase::Joining {
            return Vec::new();
        }
        match answer {
            Ok(CommandReply::Joined { epoch, seq, serial }) if epoch == self.epoch => {
                tracing::info!(seq, applied = self.position().1, "joined the in-sync set");
                self.phase = Phase::InSync { named: false };
                self.joined_at = seq;
                self.joined_after = serial;
                // Stand as soon as caught up: the master may die before its first message naming us, and an
                // in-sync slave that does not stand could leave the cluster without an election.
                self.stand_if_caught_up()
            }
            other => {
                tracing::warn!("join refused or unanswered: {other:?}");
                self.phase = Phase::Following;
                self.retry_at = Some(now + self.params.retry_pause);
                Vec::new()
            }
        }
    }

    /// One message of the master's log (or why it could not be decoded). `ackable`: it carries a `reply_to`.
    pub fn on_sync(
        &mut self,
        now: Instant,
        msg: Result<SyncMessage, String>,
        ackable: bool,
    ) -> Vec<Effect> {
        assert!(self.accepts_sync(), "no message while {:?}", self.phase);
        let msg = match msg {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!("ignoring an undecodable sync message: {e}");
                return Vec::new();
            }
        };
        let db = self.db.as_mut().expect("a copy once caught up");
        let applied = db.position().1;
        let msg_epoch = match &msg.kind {
            SyncKind::Entry(e) => e.epoch,
            SyncKind::Heartbeat { epoch, .. } => *epoch,
        };
        if msg_epoch < self.epoch {
            tracing::warn!(
                msg_epoch,
                epoch = self.epoch,
                "ignoring a message from a deposed master"
            );
            return Vec::new();
        }
        let mut effects = Vec::new();
        if msg_epoch > self.epoch {
            // A new master: whatever the old one granted ends here.
            self.lease.revoke();
            if applied != msg.epoch_start {
                tracing::warn!(
                    msg_epoch,
                    applied,
                    epoch_start = msg.epoch_start,
                    "new master at another point: resyncing"
                );
                return self.resync();
            }
            tracing::info!(msg_epoch, applied, "following a new master");
            self.epoch = msg_epoch;
            // A new lineage: what the old master committed, the new one starts from (its epoch start).
            self.committed = 0;
            if let Phase::InSync { .. } = self.phase {
                // Its set starts empty: join it.
                self.phase = Phase::Following;
                self.standing = false;
                effects.push(Effect::Withdraw);
            }
        }
        let db = self.db.as_mut().expect("a copy once caught up");
        let lost = match &msg.kind {
            SyncKind::Entry(entry) => match db.apply(entry) {
                Ok(Applied::Applied | Applied::AlreadyApplied) => None,
                Ok(Applied::Gap { expected }) => Some(format!(
                    "gap in the log: expected {expected}, got {}",
                    entry.seq
                )),
                Err(e) => Some(format!("{e:#}")),
            },
            // Entries were lost on the way. (A heartbeat behind us is one that waited in our queue while a
            // snapshot brought us further; being ahead of a new master is caught by the epoch check.)
            SyncKind::Heartbeat { seq, .. } if *seq > applied => {
                Some(format!("behind the master's heartbeat ({seq} > {applied})"))
            }
            SyncKind::Heartbeat { .. } => None,
        };
        if let Some(why) = lost {
            tracing::warn!("{why}: resyncing");
            if let Phase::Leaving { .. } = self.phase {
                self.phase = Phase::Leaving { applying: false };
                return effects;
            }
            effects.extend(self.resync());
            return effects;
        }
        self.committed = self.committed.max(msg.committed);
        if ackable {
            effects.push(Effect::Ack(SyncAck {
                worker: self.params.id.clone(),
                epoch: self.epoch,
                seq: self.position().1,
                anchor: self.lease.anchor(now),
            }));
        }
        // The lease is taken only after the entry is applied: a read served under it sees this entry.
        let named = msg.in_sync.contains(&self.params.id);
        // Not joined (or leaving): a grant is not for us to take. A message published before the join was let in
        // does not name us yet; one published after it that does not name us means the master dropped us (even
        // if none ever named us: we must not go on standing for a set we are not in).
        if let Phase::InSync { named: was_named } = self.phase {
            let after_join = msg.serial > self.joined_after;
            if named {
                self.phase = Phase::InSync { named: true };
                let lease = Duration::from_millis(msg.lease_ms);
                if let Some(grant) = msg.grants.iter().find(|g| g.worker == self.params.id) {
                    self.lease.grant(grant.anchor, lease);
                }
            } else if was_named || after_join {
                tracing::warn!("no longer in the in-sync set: rejoining");
                self.lease.revoke();
                self.phase = Phase::Following;
                self.standing = false;
                effects.push(Effect::Withdraw);
            }
        }
        if let Phase::InSync { .. } = self.phase {
            effects.extend(self.stand_if_caught_up());
        }
        effects
    }

    /// Whether this member has applied everything the master had when it let it in.
    fn caught_up(&self) -> bool {
        self.position().1 >= self.joined_at
    }

    /// Stands for election once caught up (and not already standing).
    fn stand_if_caught_up(&mut self) -> Vec<Effect> {
        if self.standing || !self.caught_up() {
            return Vec::new();
        }
        self.standing = true;
        vec![Effect::Stand]
    }

    /// This copy cannot follow the log any more: start over from a snapshot.
    fn resync(&mut self) -> Vec<Effect> {
        self.standing = false;
        self.lease.revoke();
        self.phase = Phase::CatchingUp { asked: true };
        vec![Effect::Withdraw, Effect::RequestSnapshot]
    }

    /// This slave's election turn came (the master is gone and it is the first candidate); the I/O loop has
    /// handed in every message already queued.
    pub fn on_turn(&mut self) -> Vec<Effect> {
        if !matches!(self.phase, Phase::InSync { .. }) || !self.standing {
            return Vec::new();
        }
        // No read is served while the role changes hands.
        self.lease.revoke();
        self.phase = Phase::Promoting;
        vec![Effect::TakeOver {
            db_epoch: self.position().0,
        }]
    }

    /// How the takeover attempt ended.
    pub fn on_takeover(&mut self, answer: Result<MasterRole, TakeoverError>) -> Takeover {
        if self.phase != Phase::Promoting {
            return Takeover::Lost(Vec::new());
        }
        match answer {
            Ok(role) => {
                tracing::info!(
                    epoch = role.epoch,
                    seq = self.position().1,
                    "won the election"
                );
                self.phase = Phase::Left;
                self.standing = false;
                let db = self.db.take().expect("a copy when in sync");
                Takeover::Won(Box::new(db), role, vec![Effect::Withdraw])
            }
            Err(TakeoverError::NotInSync) => {
                tracing::warn!("not taking the master role: not in the in-sync set; rejoining");
                self.phase = Phase::Following;
                self.standing = false;
                Takeover::Lost(vec![Effect::Withdraw])
            }
            Err(e) => {
                tracing::warn!("not taking the master role: {e}");
                self.phase = Phase::InSync { named: true };
                Takeover::Lost(Vec::new())
            }
        }
    }

    /// Asked to stop (scaling down): retire. Serves nothing from now on.
    pub fn on_stop(&mut self) -> Vec<Effect> {
        if matches!(self.phase, Phase::Leaving { .. } | Phase::Left) {
            return Vec::new();
        }
        self.lease.revoke();
        self.standing = false;
        let applying = self.db.is_some() && self.phase != Phase::Promoting;
        self.phase = Phase::Leaving { applying };
        vec![Effect::Leave]
    }

    /// The master let this slave go (or could not be asked): the run ends.
    pub fn on_left(&mut self) {
        self.phase = Phase::Left;
    }
}

#[cfg(test)]
mod tests;
