//! The master: takes commands from `writeQ`, runs them in batches (group commit), replicates every batch
//! synchronously to the in-sync slaves, and keeps the in-sync set and the slaves' read leases.
//!
//! One round, for a batch of commands taken from the queue at once:
//! 1. the writes run in one SQLite transaction (see [`Db::execute_batch`]) and become log entries;
//! 2. each entry is published on the `syncQ` fanout exchange with the in-sync set and a read lease;
//! 3. the master waits until every in-sync slave has acknowledged the last entry, or the ack timeout;
//! 4. a slave that did not acknowledge is dropped from the set, but only once the lease it holds has run out
//!    (so it cannot serve a read that misses this write), and the new set is written to ZooKeeper first;
//! 5. the writes are answered (`Written` only if enough slaves are in sync) and their deliveries acknowledged.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use futures::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection};
use protocol::coord::{InSyncSet, WorkerRecord};
use protocol::queue::{Command, CommandReply, SyncAck, SyncKind, SyncMessage};
use protocol::{Names, Role};
use tokio::sync::{mpsc, watch};

use crate::amqp::{self, DIRECT_REPLY_TO};
use crate::coord::{Coord, MasterRole};
use crate::db::{Db, Job, Outcome};
use crate::Config;

/// Margin added to a lease before the master treats it as over: covers clock granularity and the time between
/// reading the clock and acting on it.
const LEASE_MARGIN_MS: u64 = 50;

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// What the master knows of one in-sync slave.
#[derive(Debug, Clone, Copy)]
struct Member {
    /// The latest lease this master has handed to the slave (Unix ms).
    lease_until_ms: u64,
}

/// Acknowledgements from slaves, written by the ack consumer and read by the master loop: (seq, when). The lock
/// is held for map operations only, never across an await.
type Acks = Arc<Mutex<HashMap<String, (u64, Instant)>>>;

struct Master<'a> {
    config: &'a Config,
    /// The role as held in ZooKeeper; its in-sync set version is kept current across reconnections.
    role: &'a mut MasterRole,
    names: Names,
    zk: &'a Coord,
    db: Db,
    epoch: u64,
    /// Channel the commands are consumed on (and acknowledged on, as AMQP requires) and replies are sent on.
    commands: Channel,
    /// Channel the log is published on; the slaves' acknowledgements come back to it by direct reply-to.
    sync: Channel,
    members: BTreeMap<String, Member>,
    /// The seq this master started its epoch from; sent with every message (see `SyncMessage::epoch_start`).
    epoch_start: u64,
    acks: Acks,
    ack_signal: watch::Receiver<u64>,
    /// Highest seq that every in-sync slave has acknowledged while enough slaves were in sync.
    replicated_seq: u64,
    /// When recent entries and heartbeats were published, oldest first: a slave is silent only if it has not
    /// acknowledged anything since a message that was sent more than the ack timeout ago. (Measuring from the
    /// last ack alone would call every slave silent after a pause of the master's own.)
    published: VecDeque<Instant>,
    record_refreshed: Instant,
}

/// Serves as master on `db`, with the role already taken in ZooKeeper (see [`Coord::take_master_role`]).
pub async fn run(
    config: &Config,
    zk: &Coord,
    conn: &Connection,
    db: Db,
    role: &mut MasterRole,
) -> anyhow::Result<()> {
    let names = config.names();
    let epoch = role.epoch;
    let (_, seq) = db.position();
    let record = WorkerRecord {
        id: config.id.clone(),
        pid: config.pid(),
        role: Role::Master,
        epoch,
        applied_seq: seq,
    };
    zk.update(&record).await?;
    tracing::info!(id = %config.id, epoch, seq, "acting as master");
    let (set, _) = zk.in_sync().await?;
    if !set.members.is_empty() {
        // Back from a lost broker connection: the slaves of the set have to rejoin. Their leases end first,
        // then the set says what is true.
        tokio::time::sleep(config.lease() + Duration::from_millis(LEASE_MARGIN_MS)).await;
        let empty = InSyncSet {
            epoch,
            master: config.id.clone(),
            members: vec![],
        };
        role.in_sync_version = zk.write_in_sync(&empty, Some(role.in_sync_version)).await?;
    }

    let commands = conn.create_channel().await?;
    // Enough to fill the largest batch twice over, so the next batch is already here when a round ends.
    let prefetch = u16::try_from(config.max_batch.saturating_mul(2)).unwrap_or(u16::MAX);
    commands
        .basic_qos(prefetch, BasicQosOptions::default())
        .await?;
    let sync = conn.create_channel().await?;
    let (ack_tx, ack_signal) = watch::channel(0u64);
    let acks: Acks = Arc::default();
    consume_acks(&sync, acks.clone(), ack_tx, epoch).await?;

    // Consumer priority = epoch: a deposed master that is merely paused still has a consumer on writeQ, and
    // the broker would otherwise deal it every other command; now it only gets what the current master has no
    // room for.
    let mut priority = FieldTable::default();
    priority.insert(
        "x-priority".into(),
        AMQPValue::LongInt(i32::try_from(epoch).unwrap_or(i32::MAX)),
    );
    let consumer = commands
        .basic_consume(
            names.write_queue().as_str().into(),
            format!("master-{}", config.id).as_str().into(),
            BasicConsumeOptions::default(),
            priority,
        )
        .await?;
    let (tx, rx) = mpsc::channel(4096);
    tokio::spawn(async move {
        let mut consumer = consumer;
        while let Some(d) = consumer.next().await {
            match d {
                Ok(d) => {
                    if tx.send(d).await.is_err() {
                        break;
                    }
                }
                Err(e) => {
                    tracing::error!("writeQ consumer failed: {e}");
                    break;
                }
            }
        }
    });

    let mut m = Master {
        config,
        role,
        names,
        zk,
        db,
        epoch,
        commands,
        sync,
        members: BTreeMap::new(),
        epoch_start: seq,
        acks,
        ack_signal,
        replicated_seq: seq,
        published: VecDeque::new(),
        record_refreshed: Instant::now(),
    };
    m.serve(rx, record).await
}

/// Collects the slaves' acknowledgements. Acks from another epoch belong to another master's log: ignored.
async fn consume_acks(
    ch: &Channel,
    acks: Acks,
    signal: watch::Sender<u64>,
    epoch: u64,
) -> anyhow::Result<()> {
    let mut consumer = ch
        .basic_consume(
            DIRECT_REPLY_TO.into(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    tokio::spawn(async move {
        while let Some(Ok(d)) = consumer.next().await {
            let ack: SyncAck = match serde_json::from_slice(&d.data) {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!("ignoring an undecodable sync ack: {e}");
                    continue;
                }
            };
            if ack.epoch != epoch {
                continue;
            }
            {
                let mut acks = acks.lock().expect("acks poisoned");
                let slot = acks.entry(ack.worker).or_insert((0, Instant::now()));
                slot.0 = slot.0.max(ack.seq);
                slot.1 = Instant::now();
            }
            signal.send_modify(|n| *n += 1);
        }
    });
    Ok(())
}

impl Master<'_> {
    async fn serve(
        &mut self,
        mut rx: mpsc::Receiver<Delivery>,
        mut record: WorkerRecord,
    ) -> anyhow::Result<()> {
        let mut heartbeat = tokio::time::interval(self.config.heartbeat());
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                first = rx.recv() => {
                    let Some(first) = first else { anyhow::bail!("writeQ consumer ended") };
                    let mut batch = vec![first];
                    while batch.len() < self.config.max_batch {
                        match rx.try_recv() {
                            Ok(d) => batch.push(d),
                            Err(_) => break,
                        }
                    }
                    self.round(batch).await?;
                }
                _ = heartbeat.tick() => {
                    self.publish(SyncKind::Heartbeat { epoch: self.epoch, seq: self.db.position().1 }).await?;
                    self.drop_silent_members().await?;
                    self.update_replicated();
                }
            }
            if self.record_refreshed.elapsed() >= Duration::from_secs(1) {
                record.applied_seq = self.db.position().1;
                if let Err(e) = self.zk.update(&record).await {
                    tracing::warn!("refreshing our znode: {e:#}");
                }
                self.record_refreshed = Instant::now();
            }
        }
    }

    /// One batch of commands, start to finish.
    async fn round(&mut self, batch: Vec<Delivery>) -> anyhow::Result<()> {
        let mut jobs = Vec::new();
        let mut job_deliveries = Vec::new();
        let mut snapshots = Vec::new();
        let mut joins = Vec::new();
        let mut leaves = Vec::new();
        for d in &batch {
            match serde_json::from_slice::<Command>(&d.data) {
                Ok(Command::Write { key, statements }) => {
                    jobs.push(Job::Write { key, statements });
                    job_deliveries.push((d, None));
                }
                Ok(Command::Writes { writes }) => {
                    let n = writes.len();
                    jobs.extend(writes.into_iter().map(|w| Job::Write {
                        key: w.key,
                        statements: w.statements,
                    }));
                    job_deliveries.push((d, Some(n)));
                }
                Ok(Command::Clear { key }) => {
                    jobs.push(Job::Clear { key });
                    job_deliveries.push((d, None));
                }
                Ok(Command::Snapshot { worker }) => snapshots.push((d, worker)),
                Ok(Command::Leave { worker }) => leaves.push((d, worker)),
                Ok(Command::Join {
                    worker,
                    applied_seq,
                }) => joins.push((d, worker, applied_seq)),
                Err(e) => {
                    tracing::warn!("refusing an undecodable command: {e}");
                    let reply = CommandReply::Rejected {
                        error: format!("undecodable command: {e}"),
                    };
                    self.answer(d, &reply).await;
                }
            }
        }
        // Leaves first: a retiring slave serves no read any more, so the writes of this batch need not wait
        // for its acknowledgement.
        for (d, worker) in leaves {
            if self.members.remove(&worker).is_some() {
                self.acks.lock().expect("acks poisoned").remove(&worker);
                self.write_in_sync().await?;
                tracing::info!(%worker, "slave left the in-sync set");
            }
            self.answer(d, &CommandReply::Left).await;
        }
        if !jobs.is_empty() {
            self.write_round(&jobs, &job_deliveries).await?;
        }
        for (d, worker) in snapshots {
            let mut snapshot = tokio::task::block_in_place(|| self.db.snapshot())?;
            snapshot.epoch = self.epoch;
            tracing::info!(%worker, seq = snapshot.seq, bytes = snapshot.database.len(), "sending a snapshot");
            self.answer(d, &CommandReply::Snapshot(snapshot)).await;
        }
        for (d, worker, applied_seq) in joins {
            let reply = self.join(worker, applied_seq).await?;
            self.answer(d, &reply).await;
        }
        if let Some(last) = batch.last() {
            self.commands
                .basic_ack(last.delivery_tag, BasicAckOptions { multiple: true })
                .await
                .context("acknowledging commands")?;
        }
        Ok(())
    }

    /// Runs the jobs of a round. `deliveries` says where the answers go: a delivery with `None` carried one
    /// job and gets one reply; with `Some(n)`, it carried the next `n` jobs and gets one `Batch` reply.
    async fn write_round(
        &mut self,
        jobs: &[Job],
        deliveries: &[(&Delivery, Option<usize>)],
    ) -> anyhow::Result<()> {
        // A master that may have been replaced does not even change its own copy.
        self.ensure_leader().await?;
        if self.members.len() < self.config.min_in_sync {
            let reply = CommandReply::Unavailable {
                error: format!(
                    "{} slave(s) in sync, {} needed: the write was not applied",
                    self.members.len(),
                    self.config.min_in_sync
                ),
            };
            let replies = vec![reply; jobs.len()];
            self.answer_jobs(deliveries, replies).await;
            return Ok(());
        }
        let result = tokio::task::block_in_place(|| self.db.execute_batch(self.epoch, jobs))?;
        if let Some(last) = result.entries.last().map(|e| e.seq) {
            for entry in result.entries {
                self.publish(SyncKind::Entry(entry)).await?;
            }
            let deadline = tokio::time::Instant::now() + self.config.ack_timeout();
            let laggards = self.wait_for_acks(last, deadline).await;
            if !laggards.is_empty() {
                self.drop_members(&laggards).await?;
            }
        }
        self.update_replicated();
        // Nothing is acknowledged by a master that may have been replaced meanwhile.
        self.ensure_leader().await?;
        let replies = result
            .outcomes
            .into_iter()
            .map(|outcome| match outcome {
                Outcome::Applied(r) | Outcome::Duplicate(r) if r.seq <= self.replicated_seq => {
                    CommandReply::Written(r)
                }
                Outcome::Applied(_) | Outcome::Duplicate(_) => CommandReply::Unavailable {
                    error: "the write could not be replicated to enough slaves in time; \
                            retry with the same Idempotency-Key"
                        .into(),
                },
                Outcome::Rejected(error) => CommandReply::Rejected { error },
            })
            .collect();
        self.answer_jobs(deliveries, replies).await;
        Ok(())
    }

    /// Sends the replies of a round's jobs, in order, grouped back into the deliveries they came in.
    async fn answer_jobs(
        &self,
        deliveries: &[(&Delivery, Option<usize>)],
        replies: Vec<CommandReply>,
    ) {
        let mut replies = replies.into_iter();
        for (d, batched) in deliveries {
            let reply = match batched {
                None => replies.next(),
                Some(n) => Some(CommandReply::Batch {
                    replies: replies.by_ref().take(*n).collect(),
                }),
            };
            if let Some(reply) = reply {
                self.answer(d, &reply).await;
            }
        }
    }

    /// Publishes a log entry or heartbeat to every slave, renewing the in-sync slaves' leases.
    async fn publish(&mut self, kind: SyncKind) -> anyhow::Result<()> {
        let lease_until_ms = now_ms() + self.config.lease_ms;
        for m in self.members.values_mut() {
            m.lease_until_ms = lease_until_ms;
        }
        self.ensure_leader().await?;
        let msg = SyncMessage {
            kind,
            epoch_start: self.epoch_start,
            in_sync: self.members.keys().cloned().collect(),
            lease_until_ms,
        };
        let body = serde_json::to_vec(&msg)?;
        self.published.push_back(Instant::now());
        self.sync
            .basic_publish(
                self.names.sync_exchange().as_str().into(),
                "".into(),
                BasicPublishOptions::default(),
                &body,
                BasicProperties::default().with_reply_to(DIRECT_REPLY_TO.into()),
            )
            .await
            .context("publishing to syncQ")?;
        Ok(())
    }

    /// Fails when this worker may no longer act as master. A suspended ZooKeeper connection gets the session
    /// timeout to come back (the session, and so the role, survives that long); an expired one ends the
    /// process through `session_lost`.
    async fn ensure_leader(&self) -> anyhow::Result<()> {
        // Twice the session timeout: a session that is merely suspended comes back within one; past that it
        // has expired, and `session_lost` ends the process anyway.
        let deadline = Instant::now() + Duration::from_millis(2 * self.config.zk_session_ms);
        while !self.zk.is_leader() {
            anyhow::ensure!(
                Instant::now() < deadline,
                "no longer sure to hold the master role: stepping down"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    fn acked(&self, member: &str) -> Option<(u64, Instant)> {
        self.acks
            .lock()
            .expect("acks poisoned")
            .get(member)
            .copied()
    }

    /// Waits until every in-sync slave has acknowledged `seq`; returns those that had not by the deadline.
    async fn wait_for_acks(&mut self, seq: u64, deadline: tokio::time::Instant) -> Vec<String> {
        loop {
            let behind: Vec<String> = self
                .members
                .keys()
                .filter(|m| self.acked(m).is_none_or(|(s, _)| s < seq))
                .cloned()
                .collect();
            if behind.is_empty() {
                return behind;
            }
            match tokio::time::timeout_at(deadline, self.ack_signal.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return behind,
            }
        }
    }

    /// Drops members that have not acknowledged anything for longer than the ack timeout (a dead or cut-off
    /// slave, noticed by heartbeats when there are no writes).
    async fn drop_silent_members(&mut self) -> anyhow::Result<()> {
        let timeout = self.config.ack_timeout();
        // Keep only the newest publish that is older than the timeout, and those after it.
        while self.published.len() >= 2 && self.published[1].elapsed() > timeout {
            self.published.pop_front();
        }
        let Some(&due) = self.published.front().filter(|p| p.elapsed() > timeout) else {
            return Ok(());
        };
        let silent: Vec<String> = self
            .members
            .keys()
            .filter(|m| self.acked(m).is_none_or(|(_, at)| at < due))
            .cloned()
            .collect();
        if !silent.is_empty() {
            self.drop_members(&silent).await?;
        }
        Ok(())
    }

    /// Removes slaves from the in-sync set: first waits out the leases they hold, then records the new set in
    /// ZooKeeper, and only then lets anything be acknowledged without them.
    async fn drop_members(&mut self, ids: &[String]) -> anyhow::Result<()> {
        let until = ids
            .iter()
            .filter_map(|id| self.members.remove(id))
            .map(|m| m.lease_until_ms)
            .max()
            .unwrap_or(0)
            + LEASE_MARGIN_MS;
        // While the dropped slaves' leases run out, keep renewing the others', so their reads go on; the
        // heartbeats no longer name the dropped ones, which tells them early.
        loop {
            let now = now_ms();
            if now >= until {
                break;
            }
            self.publish(SyncKind::Heartbeat {
                epoch: self.epoch,
                seq: self.db.position().1,
            })
            .await?;
            tokio::time::sleep(Duration::from_millis(
                (until - now).min(self.config.heartbeat_ms),
            ))
            .await;
        }
        for id in ids {
            self.acks.lock().expect("acks poisoned").remove(id);
        }
        tracing::warn!(dropped = ?ids, remaining = ?self.members.keys().collect::<Vec<_>>(),
            "slaves dropped from the in-sync set");
        self.write_in_sync().await
    }

    async fn write_in_sync(&mut self) -> anyhow::Result<()> {
        let set = InSyncSet {
            epoch: self.epoch,
            master: self.config.id.clone(),
            members: self.members.keys().cloned().collect(),
        };
        // A BadVersion here means another master has written the set since: this one is deposed, and the
        // error ends it.
        self.role.in_sync_version = self
            .zk
            .write_in_sync(&set, Some(self.role.in_sync_version))
            .await
            .context("the in-sync set changed behind this master's back")?;
        Ok(())
    }

    /// Adds a caught-up slave to the in-sync set. Its reads start with the next entry or heartbeat that names
    /// it, which it receives after everything this master published before.
    async fn join(&mut self, worker: String, applied_seq: u64) -> anyhow::Result<CommandReply> {
        let seq = self.db.position().1;
        if !self.members.contains_key(&worker) {
            {
                let mut acks = self.acks.lock().expect("acks poisoned");
                let slot = acks
                    .entry(worker.clone())
                    .or_insert((applied_seq, Instant::now()));
                slot.0 = slot.0.max(applied_seq);
                slot.1 = Instant::now();
            }
            self.members
                .insert(worker.clone(), Member { lease_until_ms: 0 });
            self.write_in_sync().await?;
            tracing::info!(%worker, applied_seq, seq, "slave joined the in-sync set");
        }
        Ok(CommandReply::Joined {
            epoch: self.epoch,
            seq,
        })
    }

    fn update_replicated(&mut self) {
        if self.members.len() < self.config.min_in_sync {
            return;
        }
        let seq = self.db.position().1;
        let lowest = self
            .members
            .keys()
            .map(|m| self.acked(m).map_or(0, |(s, _)| s))
            .min()
            .unwrap_or(seq);
        self.replicated_seq = self.replicated_seq.max(lowest.min(seq));
    }

    /// Sends a reply to a command's `reply_to`. A command without one is answered to nobody; a failed reply
    /// is logged: the client times out and retries with its idempotency key.
    async fn answer(&self, d: &Delivery, reply: &CommandReply) {
        let Some(to) = d.properties.reply_to() else {
            return;
        };
        let body = match serde_json::to_vec(reply) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!("encoding a reply: {e}");
                return;
            }
        };
        let id = d.properties.correlation_id().as_ref().map(|c| c.as_str());
        if let Err(e) = amqp::reply(&self.commands, to.as_str(), id, &body).await {
            tracing::warn!("sending a reply: {e:#}");
        }
    }
}
