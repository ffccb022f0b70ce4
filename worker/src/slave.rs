//! A slave: catches up from a snapshot, applies the master's log in order, and serves reads while in sync.
//!
//! States, in order: *catching up* (sync queue bound first so nothing is missed, snapshot installed, queued
//! entries applied), *joining* (asks the master to add it to the in-sync set), *in sync* (serves reads while
//! the lease that every entry and heartbeat naming it renews holds). A gap in the log, an entry that does not
//! apply, or a heartbeat ahead of what it has applied sends it back to catching up.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
    QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Connection};
use protocol::coord::WorkerRecord;
use protocol::queue::{
    Command, CommandReply, ReadBatch, ReadBatchReply, ReadPosition, ReadReply, SyncAck, SyncKind,
    SyncMessage,
};
use protocol::{ReadRequest, Role};
use tokio::sync::{mpsc, watch, Semaphore};

use crate::amqp::{self, Rpc};
use crate::coord::{Coord, MasterRole, TakeoverError};
use crate::db::{self, Applied, Db};
use crate::master::now_ms;
use crate::Config;

/// How long a slave waits for a snapshot: a large database takes a while to serialize and ship.
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(30);
const JOIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause before asking again after a failed snapshot or join, so a slave does not hammer a busy master.
const RETRY_PAUSE: Duration = Duration::from_millis(200);
/// Margin by which a slave stops serving before its lease ends, for the time between checking and replying.
const LEASE_MARGIN_MS: u64 = 50;

/// What the read server needs to know about the apply loop. Written by the apply loop only.
#[derive(Default)]
struct Serving {
    /// Named in the last message from the master.
    in_sync: AtomicBool,
    lease_until_ms: AtomicU64,
    /// Bumped each time the database file is replaced by a snapshot: read connections to an older one are stale.
    generation: AtomicU64,
    /// Where the copy stands for reads: the epoch of the master followed, and the last seq applied. Raised
    /// after each entry is committed, so a read that starts once it shows a position sees at least that.
    position: Mutex<ReadPosition>,
    /// Set once, when the slave starts leaving: it goes on applying entries, which name it in sync until the
    /// master has dropped it, but serves no read again.
    retiring: AtomicBool,
}

impl Serving {
    fn can_serve(&self) -> bool {
        self.in_sync.load(Ordering::SeqCst)
            && !self.retiring.load(Ordering::SeqCst)
            && now_ms() + LEASE_MARGIN_MS < self.lease_until_ms.load(Ordering::SeqCst)
    }

    fn stop(&self) {
        self.in_sync.store(false, Ordering::SeqCst);
    }

    fn position(&self) -> ReadPosition {
        *self.position.lock().expect("position poisoned")
    }

    fn set_position(&self, epoch: u64, seq: u64) {
        *self.position.lock().expect("position poisoned") = ReadPosition { epoch, seq };
    }

    fn retire(&self) {
        self.retiring.store(true, Ordering::SeqCst);
        self.stop();
    }
}

/// How a slave's run ends.
pub enum End {
    /// It won an election: its database and the master role.
    Promoted(Box<Db>, MasterRole),
    /// It was asked to stop, and left the in-sync set first.
    Left,
}

/// How long a retiring slave waits for its reads in flight, and for the master to let it go.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(2);

/// Runs as a slave until this worker wins an election, or `stop` turns true (then it leaves gracefully).
pub async fn run(
    config: &Config,
    zk: &Coord,
    conn: &Connection,
    stop: &mut watch::Receiver<bool>,
) -> anyhow::Result<End> {
    let names = config.names();
    let mut record = WorkerRecord {
        id: config.id.clone(),
        pid: config.pid(),
        role: Role::Slave,
        epoch: 0,
        applied_seq: 0,
    };
    zk.register(&record).await?;

    // Bind first: every entry published from now on waits in our queue while the snapshot is made.
    let sync = conn.create_channel().await?;
    let queue = names.sync_queue(&config.id);
    sync.queue_declare(
        queue.as_str().into(),
        QueueDeclareOptions {
            exclusive: true,
            auto_delete: true,
            ..QueueDeclareOptions::default()
        },
        FieldTable::default(),
    )
    .await?;
    sync.queue_bind(
        queue.as_str().into(),
        names.sync_exchange().as_str().into(),
        "".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await?;
    let mut consumer = sync
        .basic_consume(
            queue.as_str().into(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(Ok(d)) = consumer.next().await {
            if tx.send(d).is_err() {
                break;
            }
        }
    });

    let rpc = Rpc::new(conn, &names).await?;
    let serving = Arc::new(Serving::default());
    let read_channel = conn.create_channel().await?;
    let readers = config.readers.max(1);
    let permits = Arc::new(Semaphore::new(readers));
    let reads = tokio::spawn(serve_reads(
        read_channel,
        names.read_queue(),
        config.db_path(),
        permits.clone(),
        serving.clone(),
    ));
    // Stops serving reads however this function ends.
    let _reads = AbortOnDrop(reads);

    let mut refresh = tokio::time::interval(Duration::from_secs(1));
    loop {
        serving.stop();
        if let Err(e) = zk.withdraw().await {
            tracing::warn!("withdrawing from the election: {e:#}");
        }
        let (mut db, mut follower) = catch_up(config, &rpc).await;
        serving.set_position(follower.epoch, db.position().1);
        serving.generation.fetch_add(1, Ordering::SeqCst);
        let mut joined = false;
        let mut turn = Box::pin(zk.wait_for_turn());
        'apply: loop {
            // Apply whatever is queued before asking to join, so the join finds us close to the master.
            let msg = if joined {
                tokio::select! {
                    m = rx.recv() => m,
                    _ = stop.changed() => {
                        // Entries go on being applied and acknowledged while leaving: until the master has
                        // dropped this slave it waits for its acks, and a slave that stopped applying would
                        // stall every write for a lease.
                        let leaving = leave(config, zk, &rpc, &serving, &permits, readers);
                        tokio::pin!(leaving);
                        loop {
                            tokio::select! {
                                () = &mut leaving => return Ok(End::Left),
                                m = rx.recv() => {
                                    let step = match &m {
                                        Some(d) => follower.on_sync(config, &sync, &mut db, &serving, zk, d).await,
                                        None => Step::Resync,
                                    };
                                    if !matches!(step, Step::Continue) {
                                        // Nothing left to keep up with (a new epoch, a lost consumer): the
                                        // master drops this slave anyway; finish leaving.
                                        (&mut leaving).await;
                                        return Ok(End::Left);
                                    }
                                }
                            }
                        }
                    }
                    _ = refresh.tick() => {
                        (record.epoch, record.applied_seq) = db.position();
                        if let Err(e) = zk.update(&record).await {
                            tracing::warn!("refreshing our znode: {e:#}");
                        }
                        continue;
                    }
                    t = &mut turn => {
                        if let Err(e) = t {
                            tracing::warn!("watching the election: {e:#}");
                            tokio::time::sleep(RETRY_PAUSE).await;
                            turn = Box::pin(zk.wait_for_turn());
                            continue;
                        }
                        // The master is gone and we are the first candidate. Take in what it sent us first.
                        while let Ok(d) = rx.try_recv() {
                            if let Step::Resync = follower.on_sync(config, &sync, &mut db, &serving, zk, &d).await {
                                break 'apply;
                            }
                        }
                        serving.stop();
                        match zk.take_master_role(db.position().0, true).await {
                            Ok(role) => {
                                tracing::info!(epoch = role.epoch, seq = db.position().1, "won the election");
                                zk.withdraw().await?;
                                sync.queue_delete(queue.as_str().into(), QueueDeleteOptions::default()).await?;
                                return Ok(End::Promoted(Box::new(db), role));
                            }
                            Err(e) => {
                                tracing::warn!("not taking the master role: {e}");
                                if matches!(e, TakeoverError::NotInSync) {
                                    zk.withdraw().await?;
                                }
                                turn = Box::pin(zk.wait_for_turn());
                                continue;
                            }
                        }
                    }
                }
            } else {
                match rx.try_recv() {
                    Ok(m) => Some(m),
                    Err(mpsc::error::TryRecvError::Empty) => {
                        joined = join(config, &rpc, &db).await;
                        // Stand at once: the master may die before its first message naming us, and an
                        // in-sync slave that does not stand could leave the cluster without an election.
                        if joined {
                            if let Err(e) = zk.stand().await {
                                tracing::warn!("standing for election: {e:#}");
                            }
                        }
                        continue;
                    }
                    Err(mpsc::error::TryRecvError::Disconnected) => None,
                }
            };
            let Some(d) = msg else {
                anyhow::bail!("sync queue consumer ended")
            };
            match follower
                .on_sync(config, &sync, &mut db, &serving, zk, &d)
                .await
            {
                Step::Continue => {}
                Step::Rejoin => joined = false,
                Step::Resync => break 'apply,
            }
        }
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What a slave has checked of the master it follows.
struct Follower {
    /// The newest epoch this copy is known to agree with: messages from older epochs are a deposed master's.
    epoch: u64,
}

/// Retires this slave: stops serving, lets the reads in flight finish (each checks, after it ran, that it may
/// still answer: it may not, so it hands its read back), withdraws from the election and asks the master to drop
/// it now. A slave that cannot leave cleanly is simply dropped after its lease, as a dead one would be.
async fn leave(
    config: &Config,
    zk: &Coord,
    rpc: &Rpc,
    serving: &Serving,
    permits: &Semaphore,
    readers: usize,
) {
    serving.retire();
    let readers = u32::try_from(readers).unwrap_or(u32::MAX);
    if tokio::time::timeout(LEAVE_TIMEOUT, permits.acquire_many(readers))
        .await
        .is_err()
    {
        tracing::warn!("reads still running after {LEAVE_TIMEOUT:?}; leaving anyway");
    }
    if let Err(e) = zk.withdraw().await {
        tracing::warn!("withdrawing from the election: {e:#}");
    }
    let cmd = Command::Leave {
        worker: config.id.clone(),
    };
    match rpc.call(&cmd, LEAVE_TIMEOUT).await {
        Ok(CommandReply::Left) => tracing::info!("left the in-sync set"),
        other => tracing::warn!("leaving the in-sync set: {other:?}"),
    }
}

/// Loads a snapshot from the master, retrying until one arrives.
async fn catch_up(config: &Config, rpc: &Rpc) -> (Db, Follower) {
    loop {
        let cmd = Command::Snapshot {
            worker: config.id.clone(),
        };
        match rpc.call(&cmd, SNAPSHOT_TIMEOUT).await {
            Ok(CommandReply::Snapshot(snapshot)) => {
                let installed = tokio::task::block_in_place(|| {
                    Db::install_snapshot(&config.db_path(), &snapshot)
                });
                match installed {
                    Ok(db) => {
                        tracing::info!(
                            seq = snapshot.seq,
                            bytes = snapshot.database.len(),
                            "snapshot installed"
                        );
                        return (
                            db,
                            Follower {
                                epoch: snapshot.epoch,
                            },
                        );
                    }
                    Err(e) => tracing::error!("installing a snapshot: {e:#}"),
                }
            }
            Ok(other) => tracing::warn!("unexpected answer to a snapshot request: {other:?}"),
            Err(e) => tracing::warn!("no snapshot yet: {e:#}"),
        }
        tokio::time::sleep(RETRY_PAUSE).await;
    }
}

/// Asks the master to add this slave to the in-sync set.
async fn join(config: &Config, rpc: &Rpc, db: &Db) -> bool {
    let cmd = Command::Join {
        worker: config.id.clone(),
        applied_seq: db.position().1,
    };
    match rpc.call(&cmd, JOIN_TIMEOUT).await {
        Ok(CommandReply::Joined { seq, .. }) => {
            tracing::info!(seq, applied = db.position().1, "joined the in-sync set");
            true
        }
        other => {
            tracing::warn!("join refused or unanswered: {other:?}");
            tokio::time::sleep(RETRY_PAUSE).await;
            false
        }
    }
}

enum Step {
    Continue,
    /// The master no longer counts us in sync: ask to join again.
    Rejoin,
    /// Our copy cannot follow the log any more: start over from a snapshot.
    Resync,
}

impl Follower {
    /// Handles one message from the master's log.
    async fn on_sync(
        &mut self,
        config: &Config,
        ch: &Channel,
        db: &mut Db,
        serving: &Serving,
        zk: &Coord,
        d: &Delivery,
    ) -> Step {
        let msg: SyncMessage = match serde_json::from_slice(&d.data) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!("ignoring an undecodable sync message: {e}");
                return Step::Continue;
            }
        };
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
            return Step::Continue;
        }
        if msg_epoch > self.epoch {
            if applied != msg.epoch_start {
                tracing::warn!(
                    msg_epoch,
                    applied,
                    epoch_start = msg.epoch_start,
                    "new master at another point: resyncing"
                );
                return Step::Resync;
            }
            tracing::info!(msg_epoch, applied, "following a new master");
            self.epoch = msg_epoch;
        }
        match &msg.kind {
            SyncKind::Entry(entry) => match tokio::task::block_in_place(|| db.apply(entry)) {
                Ok(Applied::Applied | Applied::AlreadyApplied) => {}
                Ok(Applied::Gap { expected }) => {
                    tracing::warn!(expected, got = entry.seq, "gap in the log: resyncing");
                    return Step::Resync;
                }
                Err(e) => {
                    tracing::error!("{e:#}: resyncing");
                    return Step::Resync;
                }
            },
            SyncKind::Heartbeat {
                seq: master_seq, ..
            } if *master_seq > applied => {
                // Entries were lost on the way. (A heartbeat behind us is one that waited in our queue while a
                // snapshot brought us further; being ahead of a new master is caught by the epoch check.)
                tracing::warn!(
                    master_seq,
                    applied,
                    "behind the master's heartbeat: resyncing"
                );
                return Step::Resync;
            }
            SyncKind::Heartbeat { .. } => {}
        }
        let seq = db.position().1;
        serving.set_position(self.epoch, seq);
        if let Some(to) = d.properties.reply_to() {
            let ack = SyncAck {
                worker: config.id.clone(),
                epoch: self.epoch,
                seq,
            };
            if let Ok(body) = serde_json::to_vec(&ack) {
                if let Err(e) = amqp::reply(ch, to.as_str(), None, &body).await {
                    tracing::warn!("sending a sync ack: {e:#}");
                }
            }
        }
        // The lease is taken only after the entry is applied: a read served under it sees this entry.
        if msg.in_sync.contains(&config.id) {
            serving
                .lease_until_ms
                .store(msg.lease_until_ms, Ordering::SeqCst);
            // Standing for election happened when the join was answered.
            serving.in_sync.store(true, Ordering::SeqCst);
            Step::Continue
        } else if serving.in_sync.swap(false, Ordering::SeqCst) {
            tracing::warn!("no longer in the in-sync set: rejoining");
            if let Err(e) = zk.withdraw().await {
                tracing::warn!("withdrawing from the election: {e:#}");
            }
            Step::Rejoin
        } else {
            Step::Continue
        }
    }
}

/// A small pool of read-only connections, reopened when the database file was replaced.
struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<(u64, rusqlite::Connection)>>,
}

impl Readers {
    /// Runs reads one after the other on one connection of the pool, in one read transaction (one snapshot);
    /// also returns the seq of the data they saw.
    fn read(&self, generation: u64, reqs: &[ReadRequest]) -> anyhow::Result<(u64, Vec<ReadReply>)> {
        let pooled = self.idle.lock().expect("readers poisoned").pop();
        let conn = match pooled {
            Some((g, c)) if g == generation => c,
            _ => db::open_reader(&self.path)?,
        };
        conn.execute_batch("BEGIN")?;
        let replies = reqs
            .iter()
            .map(|req| match db::read(&conn, req) {
                Ok(rows) => ReadReply::Rows(rows),
                Err(error) => ReadReply::Rejected { error },
            })
            .collect();
        // Read last: within the transaction it is the snapshot's seq. A read that ended the transaction itself
        // (a `COMMIT` is a statement that does not write) made later ones see newer snapshots, and this one is
        // newer still: never less than what any of them saw.
        let seq = db::applied_seq(&conn);
        if !conn.is_autocommit() {
            conn.execute_batch("COMMIT")?;
        }
        let seq = seq?;
        self.idle
            .lock()
            .expect("readers poisoned")
            .push((generation, conn));
        Ok((seq, replies))
    }
}

/// Consumes `readQ` while this slave may serve, and stops consuming (handing its reads back) when it may not.
async fn serve_reads(
    ch: Channel,
    queue: String,
    path: PathBuf,
    permits: Arc<Semaphore>,
    serving: Arc<Serving>,
) {
    let pool = Arc::new(Readers {
        path,
        idle: Mutex::new(Vec::new()),
    });
    let prefetch = u16::try_from(permits.available_permits() * 4).unwrap_or(u16::MAX);
    if let Err(e) = ch.basic_qos(prefetch, BasicQosOptions::default()).await {
        tracing::error!("read channel: {e}");
        return;
    }
    loop {
        while !serving.can_serve() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let tag = uuid::Uuid::new_v4().to_string();
        let consumer = ch
            .basic_consume(
                queue.as_str().into(),
                tag.as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await;
        let mut consumer = match consumer {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("consuming readQ: {e}");
                tokio::time::sleep(RETRY_PAUSE).await;
                continue;
            }
        };
        tracing::info!("serving reads");
        while let Some(Ok(d)) = consumer.next().await {
            if !serving.can_serve() {
                let _ = d
                    .acker
                    .nack(BasicNackOptions {
                        multiple: false,
                        requeue: true,
                    })
                    .await;
                break;
            }
            let permit = permits
                .clone()
                .acquire_owned()
                .await
                .expect("semaphore closed");
            let (pool, serving, ch) = (pool.clone(), serving.clone(), ch.clone());
            tokio::spawn(async move {
                read_one(&ch, &pool, &serving, d).await;
                drop(permit);
            });
        }
        tracing::info!("not serving reads");
        let _ = ch
            .basic_cancel(tag.as_str().into(), BasicCancelOptions::default())
            .await;
        // Cancelling does not hand back what was already delivered to us: do it, so another slave serves it.
        while let Ok(Some(Ok(d))) =
            tokio::time::timeout(Duration::from_secs(1), consumer.next()).await
        {
            let _ = d
                .acker
                .nack(BasicNackOptions {
                    multiple: false,
                    requeue: true,
                })
                .await;
        }
    }
}

/// How long a read waits for this copy to reach the position the batch asks for before handing it back. An
/// in-sync slave is at most a few entries behind another (they apply the same entries as they are published),
/// so the wait is short; a copy still behind after this long lets another slave try.
const CATCH_UP_WAIT: Duration = Duration::from_secs(2);

/// Serves one read, or hands it back to the queue when this slave stopped being allowed to serve meanwhile.
async fn read_one(ch: &Channel, pool: &Arc<Readers>, serving: &Arc<Serving>, d: Delivery) {
    let requeue = || async {
        let requeue = BasicNackOptions {
            multiple: false,
            requeue: true,
        };
        let _ = d.acker.nack(requeue).await;
    };
    let batch =
        serde_json::from_slice::<ReadBatch>(&d.data).map_err(|e| format!("undecodable read: {e}"));
    let (position, replies) = match batch {
        Err(error) => (serving.position(), vec![ReadReply::Rejected { error }]),
        Ok(ReadBatch { reads, at_least }) => {
            // Reads never go back in time: not before this copy has what an earlier read has seen.
            let deadline = tokio::time::Instant::now() + CATCH_UP_WAIT;
            while serving.position() < at_least {
                if !serving.can_serve() || tokio::time::Instant::now() >= deadline {
                    requeue().await;
                    return;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            let generation = serving.generation.load(Ordering::SeqCst);
            let p = pool.clone();
            let res = tokio::task::spawn_blocking(move || p.read(generation, &reads)).await;
            // Checked after the reads: if the lease still holds now, it held when they looked at the data, so
            // no write acknowledged before they began can be missing from what they saw. The epoch read now is
            // the one of the data seen or a later one that continues from it.
            let epoch = serving.position().epoch;
            let servable =
                serving.can_serve() && serving.generation.load(Ordering::SeqCst) == generation;
            match res.context("read task").and_then(|r| r) {
                Ok((seq, replies)) if servable => (ReadPosition { epoch, seq }, replies),
                other => {
                    if let Err(e) = other {
                        tracing::error!("read failed: {e:#}");
                    }
                    requeue().await;
                    return;
                }
            }
        }
    };
    let body = serde_json::to_vec(&ReadBatchReply { replies, position });
    if let (Some(to), Ok(body)) = (d.properties.reply_to(), body) {
        let id = d.properties.correlation_id().as_ref().map(|c| c.as_str());
        if let Err(e) = amqp::reply(ch, to.as_str(), id, &body).await {
            tracing::warn!("sending a read reply: {e:#}");
        }
    }
    let _ = d.acker.ack(BasicAckOptions::default()).await;
}
