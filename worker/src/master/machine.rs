//! The master's replication logic as a state machine: decoded commands, slaves' acknowledgements and the clock
//! go in; what to publish, what to write to ZooKeeper and what to answer come out, as [`Effect`]s that the I/O
//! loop (`master::run`) carries out in order. Nothing here touches the network, so every rule below is tested
//! in milliseconds with a database in a temporary folder.
//!
//! One round, for a batch of commands taken from `writeQ` at once:
//! 1. leaves first: a retiring slave has given its lease up, so it leaves the in-sync set at once (ZooKeeper
//!    first) and the writes of the batch do not wait for it; snapshots are answered next;
//! 2. the writes run in one SQLite transaction ([`Db::execute_batch`]) and become log entries, published with
//!    the in-sync set and a read lease for each member (see `protocol::lease`);
//! 3. the round waits until every member has acknowledged the last entry, or the ack timeout;
//! 4. a member that did not acknowledge is dropped, but only once every lease granted to it has ended, and the
//!    new set is written to ZooKeeper before anything is acknowledged without it (invariant 4);
//! 5. the writes are answered (`Written` only while at least `min_in_sync` members hold every entry), then the
//!    joins that waited for the round are let in, and the batch's deliveries are acknowledged to the broker.
//!
//! A master that has just taken the role (or reconnected to the broker) may find slaves still holding read
//! leases granted by its predecessor. It answers no write until each of those slaves has acknowledged one of
//! its own messages (which ends the old lease: a slave drops its lease on meeting a new master) or the longest
//! such lease has run out.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use protocol::lease::grantor_hold;
use protocol::queue::{
    Command, CommandReply, LeaseAnchor, LeaseGrant, SyncAck, SyncKind, SyncMessage,
};

use super::round::{Join, Round, Shape, Writes};
use crate::db::{Db, Job};

/// The master's settings (see the worker's `Config` for why each has its value).
#[derive(Debug, Clone, Copy)]
pub struct Params {
    pub epoch: u64,
    pub ack_timeout: Duration,
    pub heartbeat: Duration,
    pub lease: Duration,
    pub min_in_sync: usize,
}

/// A command delivery: its broker tag (which also addresses its answer) and its decoded body.
#[derive(Debug)]
pub struct Incoming {
    pub tag: u64,
    pub command: Result<Command, String>,
}

/// What the I/O loop must do, in the order given. A failed [`Effect::WriteInSync`] means another master wrote
/// the set: this one is deposed and stops, so no later effect is carried out.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Publish on the sync exchange, with our acknowledgement channel as `reply_to`.
    Publish(SyncMessage),
    /// Publish on the sync exchange without `reply_to`: a commit notice, which nobody acknowledges.
    Notify(SyncMessage),
    /// Write the in-sync set (a versioned write) with these members.
    WriteInSync(Vec<String>),
    /// Answer the command delivered under this tag.
    Reply(u64, CommandReply),
    /// Acknowledge to the broker every command delivery up to this tag.
    AckCommands(u64),
}

/// What the master knows of one slave of the in-sync set.
#[derive(Debug, Clone)]
struct Member {
    acked_seq: u64,
    /// Where this master stood when it let the slave in. Entries committed before that did not wait for it;
    /// until it has acknowledged that far it may lack one, so it holds no lease and is not written into the set
    /// in ZooKeeper (which would make it electable). Every entry after waits for its acknowledgement.
    joined_at: u64,
    /// When its last acknowledgement (or its join) was heard.
    heard: Instant,
    /// The last anchor heard from it, echoed by the next grant, and when it was heard.
    anchor: (LeaseAnchor, Instant),
    /// Until when this master counts the leases it granted as held; `None` before the first grant.
    lease_end: Option<Instant>,
}

#[derive(Debug)]
enum Stage {
    Idle,
    /// A round's entries are out; waiting for acknowledgements (and for the predecessor's leases).
    Replicating(Round),
    /// Members were dropped; waiting until the leases granted to them have ended. The round that dropped them,
    /// if any, goes on after.
    Dropping {
        round: Option<Round>,
        until: Instant,
    },
}

/// The master's state. See the module documentation for the rules it keeps.
pub struct Master {
    params: Params,
    db: Db,
    /// The seq this master's epoch started from, sent with every message (`SyncMessage::epoch_start`).
    epoch_start: u64,
    members: BTreeMap<String, Member>,
    /// Slaves that may still hold a lease of the previous master, until each is heard in this master's epoch.
    previous: BTreeSet<String>,
    /// When every lease of the previous master has ended, whoever was heard.
    previous_until: Instant,
    stage: Stage,
    /// Highest seq that every member held while at least `min_in_sync` were in the set.
    replicated_seq: u64,
    /// When recent messages were published, oldest first: a member is silent only if it has acknowledged
    /// nothing since a message published more than the ack timeout ago (measuring from its last ack alone would
    /// call every member silent after a pause of the master's own).
    published: VecDeque<Instant>,
    last_publish: Instant,
    /// The number of the last message published (see `SyncMessage::serial`).
    serial: u64,
}

impl Master {
    /// A master on `db` at `now`. `previous` are the slaves that may hold a lease of an earlier master (the
    /// last in-sync set); `clear_set`: the in-sync set in ZooKeeper still names them and must be emptied first.
    /// Returns the effects to carry out at once: the cleared set, and a first heartbeat that tells every slave
    /// of the new epoch.
    pub fn new(
        params: Params,
        db: Db,
        previous: impl IntoIterator<Item = String>,
        clear_set: bool,
        now: Instant,
    ) -> (Self, Vec<Effect>) {
        let (_, seq) = db.position();
        let mut master = Master {
            params,
            db,
            epoch_start: seq,
            members: BTreeMap::new(),
            previous: previous.into_iter().collect(),
            previous_until: now + grantor_hold(params.lease),
            stage: Stage::Idle,
            replicated_seq: seq,
            published: VecDeque::new(),
            last_publish: now,
            serial: 0,
        };
        let mut effects = Vec::new();
        if clear_set {
            effects.push(Effect::WriteInSync(vec![]));
        }
        effects.push(master.heartbeat(now));
        (master, effects)
    }

    pub fn epoch(&self) -> u64 {
        self.params.epoch
    }

    /// The seq of the last entry in this master's database.
    pub fn seq(&self) -> u64 {
        self.db.position().1
    }

    /// The in-sync set as this master counts it: every entry waits for their acknowledgements.
    pub fn members(&self) -> Vec<String> {
        self.members.keys().cloned().collect()
    }

    /// The members that hold every committed entry: the set written to ZooKeeper, whose members may be elected.
    pub fn electable(&self) -> Vec<String> {
        self.members
            .iter()
            .filter(|(_, m)| m.acked_seq >= m.joined_at)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Whether a new batch of commands may be handed in: one round at a time.
    pub fn ready_for_commands(&self) -> bool {
        matches!(self.stage, Stage::Idle)
    }

    /// When [`Master::on_timer`] must be called next.
    pub fn next_timer(&self) -> Instant {
        let heartbeat = self.last_publish + self.params.heartbeat;
        let stage = match &self.stage {
            Stage::Idle => None,
            Stage::Replicating(round) if !self.behind(round).is_empty() => Some(round.deadline),
            // Acknowledged: only the previous master's leases can hold it (see `advance`).
            Stage::Replicating(_) => Some(self.previous_until),
            Stage::Dropping { until, .. } => Some(*until),
        };
        stage.map_or(heartbeat, |s| s.min(heartbeat))
    }

    /// A batch of commands, taken from the queue at once. Runs its writes (SQLite) and returns what to publish
    /// and answer; an error is the database failing, which ends this master.
    pub fn on_commands(
        &mut self,
        now: Instant,
        batch: Vec<Incoming>,
    ) -> anyhow::Result<Vec<Effect>> {
        assert!(self.ready_for_commands(), "one round at a time");
        let mut effects = Vec::new();
        let mut jobs = Vec::new();
        let mut deliveries = Vec::new();
        let mut joins = Vec::new();
        let mut snapshots = Vec::new();
        let mut leaving = Vec::new();
        let Some(last_tag) = batch.iter().map(|i| i.tag).max() else {
            return Ok(effects);
        };
        for Incoming { tag, command } in batch {
            match command {
                Ok(Command::Writes { writes }) => {
                    deliveries.push((tag, Shape::Batch(writes.len())));
                    jobs.extend(writes.into_iter().map(|w| Job::Write {
                        key: w.key,
                        statements: w.statements,
                    }));
                }
                Ok(Command::Clear { key }) => {
                    deliveries.push((tag, Shape::Single));
                    jobs.push(Job::Clear { key });
                }
                Ok(Command::Snapshot { worker }) => snapshots.push((tag, worker)),
                Ok(Command::Leave { worker }) => leaving.push((tag, worker)),
                Ok(Command::Join {
                    worker,
                    applied_seq,
                    anchor,
                }) => {
                    // A slave asks to join only while it holds no lease (it has just caught up, been dropped,
                    // or met this master's epoch), so it holds none of the previous master's either.
                    self.previous.remove(&worker);
                    joins.push(Join {
                        tag,
                        worker,
                        applied_seq,
                        anchor,
                        heard: now,
                    })
                }
                Err(error) => {
                    tracing::warn!("refusing an undecodable command: {error}");
                    let error = format!("undecodable command: {error}");
                    effects.push(Effect::Reply(tag, CommandReply::Rejected { error }));
                }
            }
        }
        // Leaves first: a retiring slave gave its lease up before asking, so nothing is waited out.
        let left: Vec<_> = leaving
            .iter()
            .filter(|(_, w)| self.members.remove(w).is_some())
            .map(|(_, w)| w.clone())
            .collect();
        if !left.is_empty() {
            tracing::info!(?left, "slaves left the in-sync set");
            effects.push(Effect::WriteInSync(self.electable()));
        }
        effects.extend(
            leaving
                .into_iter()
                .map(|(tag, _)| Effect::Reply(tag, CommandReply::Left)),
        );
        for (tag, worker) in snapshots {
            let mut snapshot = self.db.snapshot()?;
            snapshot.epoch = self.params.epoch;
            tracing::info!(%worker, seq = snapshot.seq, bytes = snapshot.database.len(), "sending a snapshot");
            effects.push(Effect::Reply(tag, CommandReply::Snapshot(snapshot)));
        }
        let mut round = Round {
            writes: Writes::Ran(Vec::new()),
            deliveries,
            joins,
            last_tag,
            seq: None,
            deadline: now + self.params.ack_timeout,
        };
        if self.members.len() < self.params.min_in_sync {
            round.writes = Writes::Refused {
                count: jobs.len(),
                error: format!(
                    "{} slave(s) in sync, {} needed: the write was not applied",
                    self.members.len(),
                    self.params.min_in_sync
                ),
            };
        } else if !jobs.is_empty() {
            let result = self.db.execute_batch(self.params.epoch, &jobs)?;
            round.writes = Writes::Ran(result.outcomes);
            for entry in result.entries {
                round.seq = Some(entry.seq);
                effects.push(self.publish(now, SyncKind::Entry(entry)));
            }
        }
        self.stage = Stage::Replicating(round);
        self.advance(now, &mut effects);
        Ok(effects)
    }

    /// The I/O loop could not act for `stalled` (it waited to be sure it still holds the master role, with
    /// ZooKeeper out of reach): messages the machine had published were sent that much later, and the slaves'
    /// acknowledgements waited unread. Time the master itself stood still does not count against a member:
    /// the silence and round deadlines move on by as much. (The leases do not: they end when they end.)
    pub fn on_stalled(&mut self, stalled: Duration) {
        if stalled.is_zero() {
            return;
        }
        for p in &mut self.published {
            *p += stalled;
        }
        match &mut self.stage {
            Stage::Replicating(round)
            | Stage::Dropping {
                round: Some(round), ..
            } => round.deadline += stalled,
            Stage::Idle | Stage::Dropping { round: None, .. } => {}
        }
    }

    /// A slave's acknowledgement, heard at `now`.
    pub fn on_ack(&mut self, now: Instant, ack: SyncAck) -> Vec<Effect> {
        if ack.epoch != self.params.epoch {
            // Another master's log (or an earlier one of ours, replayed): nothing it says is about ours.
            return Vec::new();
        }
        // It has met this master's epoch, so it holds no lease of the previous one any more.
        self.previous.remove(&ack.worker);
        let mut effects = Vec::new();
        if let Some(m) = self.members.get_mut(&ack.worker) {
            let was_behind = m.acked_seq < m.joined_at;
            m.acked_seq = m.acked_seq.max(ack.seq);
            m.heard = now;
            m.anchor = (ack.anchor, now);
            if was_behind && m.acked_seq >= m.joined_at {
                // It now holds every committed entry: into the set, where it may be elected.
                effects.push(Effect::WriteInSync(self.electable()));
            }
        }
        self.advance(now, &mut effects);
        effects
    }

    /// The clock reached [`Master::next_timer`] (or later): heartbeats, ack deadlines, leases running out.
    pub fn on_timer(&mut self, now: Instant) -> Vec<Effect> {
        let mut effects = Vec::new();
        // Deadlines first: dropping a member publishes a heartbeat that tells it so at once.
        self.advance(now, &mut effects);
        if now >= self.last_publish + self.params.heartbeat {
            effects.push(self.heartbeat(now));
            if matches!(self.stage, Stage::Idle) {
                let silent = self.silent_members(now);
                if !silent.is_empty() {
                    self.drop_members(now, &silent, None, &mut effects);
                }
            }
        }
        effects
    }

    /// A heartbeat: renews the members' leases and tells every slave the last seq and the commit point.
    fn heartbeat(&mut self, now: Instant) -> Effect {
        let kind = SyncKind::Heartbeat {
            epoch: self.params.epoch,
            seq: self.seq(),
        };
        self.publish(now, kind)
    }

    /// A heartbeat that nobody acknowledges, sent when a round's entries are committed so that the slaves may
    /// show them to reads at once rather than at the next message.
    fn commit_notice(&mut self) -> Effect {
        let kind = SyncKind::Heartbeat {
            epoch: self.params.epoch,
            seq: self.seq(),
        };
        Effect::Notify(self.message(kind))
    }

    /// A message for every slave, granting each member a lease on the last anchor heard from it; the members'
    /// acknowledgements are expected.
    fn publish(&mut self, now: Instant, kind: SyncKind) -> Effect {
        let msg = self.message(kind);
        self.published.push_back(now);
        self.last_publish = now;
        Effect::Publish(msg)
    }

    fn message(&mut self, kind: SyncKind) -> SyncMessage {
        let hold = grantor_hold(self.params.lease);
        let mut grants = Vec::with_capacity(self.members.len());
        for (worker, m) in &mut self.members {
            // A member still catching up on what was committed before it joined would serve reads without it.
            if m.acked_seq < m.joined_at {
                continue;
            }
            let (anchor, heard) = m.anchor;
            let end = heard + hold;
            m.lease_end = Some(m.lease_end.map_or(end, |e| e.max(end)));
            grants.push(LeaseGrant {
                worker: worker.clone(),
                anchor,
            });
        }
        self.serial += 1;
        SyncMessage {
            kind,
            serial: self.serial,
            epoch_start: self.epoch_start,
            committed: self.replicated_seq,
            in_sync: self.members(),
            grants,
            lease_ms: u64::try_from(self.params.lease.as_millis()).unwrap_or(u64::MAX),
        }
    }

    /// Members that have acknowledged nothing since a message published more than the ack timeout ago: dead or
    /// cut off, noticed by heartbeats when there are no writes.
    fn silent_members(&mut self, now: Instant) -> Vec<String> {
        let timeout = self.params.ack_timeout;
        // Keep only the newest publish older than the timeout, and those after it.
        while self.published.len() >= 2 && now.duration_since(self.published[1]) > timeout {
            self.published.pop_front();
        }
        let Some(&due) = self
            .published
            .front()
            .filter(|p| now.duration_since(**p) > timeout)
        else {
            return Vec::new();
        };
        self.members
            .iter()
            .filter(|(_, m)| m.heard < due)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Takes members out of the set; the set is written once the leases granted to them have ended.
    fn drop_members(
        &mut self,
        now: Instant,
        ids: &[String],
        round: Option<Round>,
        effects: &mut Vec<Effect>,
    ) {
        let until = ids
            .iter()
            .filter_map(|id| self.members.remove(id))
            .filter_map(|m| m.lease_end)
            .max()
            .unwrap_or(now)
            .max(now);
        tracing::warn!(dropped = ?ids, remaining = ?self.members(), "dropping slaves from the in-sync set");
        self.stage = Stage::Dropping { round, until };
        // Tells the dropped slaves at once (they are no longer named) and renews the others' leases.
        effects.push(self.heartbeat(now));
    }

    /// The members that have not acknowledged the round's last entry.
    fn behind(&self, round: &Round) -> Vec<String> {
        let Some(seq) = round.seq else {
            return Vec::new();
        };
        self.members
            .iter()
            .filter(|(_, m)| m.acked_seq < seq)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Moves the current round on as far as it can go at `now`.
    fn advance(&mut self, now: Instant, effects: &mut Vec<Effect>) {
        if now >= self.previous_until {
            self.previous.clear();
        }
        loop {
            match std::mem::replace(&mut self.stage, Stage::Idle) {
                Stage::Idle => return,
                Stage::Dropping { round, until } => {
                    if now < until {
                        self.stage = Stage::Dropping { round, until };
                        return;
                    }
                    effects.push(Effect::WriteInSync(self.electable()));
                    self.stage = round.map_or(Stage::Idle, Stage::Replicating);
                }
                Stage::Replicating(round) => {
                    let behind = self.behind(&round);
                    if behind.is_empty() {
                        if self.previous.is_empty() || !round.acknowledges() {
                            self.finish(round, effects);
                        } else {
                            // Acknowledged by the members; still waiting for the predecessor's leases.
                            self.stage = Stage::Replicating(round);
                        }
                        return;
                    }
                    if now < round.deadline {
                        self.stage = Stage::Replicating(round);
                        return;
                    }
                    self.drop_members(now, &behind, Some(round), effects);
                }
            }
        }
    }

    /// Answers a round whose entries are acknowledged (or given up on), lets its joins in, and acknowledges its
    /// deliveries.
    fn finish(&mut self, mut round: Round, effects: &mut Vec<Effect>) {
        let seq = self.seq();
        let joins = std::mem::take(&mut round.joins);
        let last_tag = round.last_tag;
        if self.members.len() >= self.params.min_in_sync {
            let lowest = self
                .members
                .values()
                .map(|m| m.acked_seq)
                .min()
                .unwrap_or(seq);
            self.replicated_seq = self.replicated_seq.max(lowest.min(seq));
        }
        let replicated = self.replicated_seq;
        let committed = round.seq.is_some_and(|s| s <= replicated);
        for (tag, reply) in round.answers(replicated) {
            effects.push(Effect::Reply(tag, reply));
        }
        if committed {
            // Right after the answers (not before: the writer does not wait for it), and ahead of any read the
            // writer sends next, which travels through the orchestrator first.
            effects.push(self.commit_notice());
        }
        let mut joined = Vec::new();
        for join in &joins {
            if !self.members.contains_key(&join.worker) {
                tracing::info!(worker = %join.worker, applied_seq = join.applied_seq, seq, "slave joins the in-sync set");
                self.members.insert(
                    join.worker.clone(),
                    Member {
                        acked_seq: join.applied_seq,
                        joined_at: seq,
                        heard: join.heard,
                        anchor: (join.anchor, join.heard),
                        lease_end: None,
                    },
                );
            }
            joined.push(join.tag);
        }
        if !joins.is_empty() {
            effects.push(Effect::WriteInSync(self.electable()));
        }
        for tag in joined {
            effects.push(Effect::Reply(
                tag,
                CommandReply::Joined {
                    epoch: self.params.epoch,
                    seq,
                    serial: self.serial,
                },
            ));
        }
        effects.push(Effect::AckCommands(last_tag));
        self.stage = Stage::Idle;
    }
}

#[cfg(test)]
mod tests;
