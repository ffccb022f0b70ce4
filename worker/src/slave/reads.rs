//! The slave's read server: consumes `readQ` while the slave may serve, and hands every read back to the queue
//! (for another slave) when it may not.
//!
//! What it may do comes from the slave's state machine through a watch channel ([`Serving`]): the lease, where
//! the copy stands, and which database file is current. Two checks make reads safe:
//! - **nothing uncommitted**: a batch is answered only once the master's commit point covers the snapshot it
//!   read, so no read shows a write that a failover could still take back (and that a later read would then miss);
//! - **no stale read**: the lease is checked *after* the reads ran. If it still holds then, it held while they
//!   looked at the data, so no write acknowledged before they began can be missing from what they saw.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
};
use lapin::types::FieldTable;
use lapin::Channel;
use protocol::queue::{ReadBatch, ReadBatchReply, ReadPosition, ReadReply};
use protocol::ReadRequest;
use tokio::sync::{watch, Semaphore};
use tokio::time::Instant;

use super::machine::Serving;
use crate::db;

/// How long a read waits for the master's commit point to cover what it read before handing the batch back.
/// The commit notice of a round follows its last acknowledgement at once, so the wait is usually a round trip;
/// one still uncommitted after this long belongs to a master that is failing, and another slave may try.
const COMMIT_WAIT: Duration = Duration::from_secs(2);

/// Pause after `readQ` could not be consumed, before trying again.
const CONSUME_RETRY: Duration = Duration::from_millis(200);

/// How long deliveries already handed to this slave are waited for after it stopped consuming, to give them back.
const DRAIN_WAIT: Duration = Duration::from_secs(1);

/// Whether the state allows serving at `now`.
fn servable(s: &Serving, now: Instant) -> bool {
    s.lease_until.is_some_and(|until| now.into_std() < until)
}

/// A small pool of read-only connections, reopened when the database file was replaced.
struct Readers {
    path: PathBuf,
    /// Idle connections with the generation of the file they were opened on. Held only to push or pop.
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

async fn requeue(d: &Delivery) {
    let requeue = BasicNackOptions {
        multiple: false,
        requeue: true,
    };
    let _ = d.acker.nack(requeue).await;
}

/// Consumes `queue` while the slave may serve, and stops consuming (handing its reads back) when it may not.
pub async fn serve(
    ch: Channel,
    queue: String,
    path: PathBuf,
    permits: Arc<Semaphore>,
    mut serving: watch::Receiver<Serving>,
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
        // Until a lease holds.
        while !servable(&serving.borrow_and_update(), Instant::now()) {
            if serving.changed().await.is_err() {
                return;
            }
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
                tokio::time::sleep(CONSUME_RETRY).await;
                continue;
            }
        };
        tracing::info!("serving reads");
        loop {
            let until = serving.borrow().lease_until;
            let Some(until) = until.map(Instant::from_std) else {
                break;
            };
            tokio::select! {
                d = consumer.next() => {
                    let Some(Ok(d)) = d else { break };
                    if !servable(&serving.borrow(), Instant::now()) {
                        requeue(&d).await;
                        break;
                    }
                    let permit = permits.clone().acquire_owned().await.expect("semaphore closed");
                    let (pool, serving, ch) = (pool.clone(), serving.clone(), ch.clone());
                    tokio::spawn(async move {
                        read_one(&ch, &pool, serving, d).await;
                        drop(permit);
                    });
                }
                // The lease ran out without a renewal: stop taking reads.
                () = tokio::time::sleep_until(until) => {
                    if !servable(&serving.borrow(), Instant::now()) {
                        break;
                    }
                }
                changed = serving.changed() => {
                    if changed.is_err() || !servable(&serving.borrow(), Instant::now()) {
                        break;
                    }
                }
            }
        }
        tracing::info!("not serving reads");
        let _ = ch
            .basic_cancel(tag.as_str().into(), BasicCancelOptions::default())
            .await;
        // Cancelling does not hand back what was already delivered to us: do it, so another slave serves it.
        while let Ok(Some(Ok(d))) = tokio::time::timeout(DRAIN_WAIT, consumer.next()).await {
            requeue(&d).await;
        }
    }
}

/// Serves one read batch, or hands it back to the queue when this slave may not serve it.
async fn read_one(
    ch: &Channel,
    pool: &Arc<Readers>,
    mut serving: watch::Receiver<Serving>,
    d: Delivery,
) {
    let request_ids = broker::request_ids(&d.properties);
    let batch =
        serde_json::from_slice::<ReadBatch>(&d.data).map_err(|e| format!("undecodable read: {e}"));
    let (position, replies) = match batch {
        Err(error) => (
            serving.borrow().position,
            vec![ReadReply::Rejected { error }],
        ),
        Ok(ReadBatch { reads }) => {
            if !servable(&serving.borrow(), Instant::now()) {
                requeue(&d).await;
                return;
            }
            let generation = serving.borrow().generation;
            let p = pool.clone();
            let res = tokio::task::spawn_blocking(move || p.read(generation, &reads)).await;
            let res = res.context("read task").and_then(|r| r);
            // Not before the master has committed everything the reads saw (usually at once; while a round is
            // out, until its commit notice).
            if let Ok((seq, _)) = &res {
                let seq = *seq;
                let committed = tokio::time::timeout(
                    COMMIT_WAIT,
                    serving.wait_for(|s| s.committed >= seq || s.generation != generation),
                )
                .await;
                if !committed.is_ok_and(|r| r.is_ok_and(|s| s.committed >= seq)) {
                    requeue(&d).await;
                    return;
                }
            }
            // The lease, checked last (see the module documentation). The epoch read now is the one of the data
            // seen, or a later one that continues from it.
            let now = *serving.borrow();
            let ok = servable(&now, Instant::now()) && now.generation == generation;
            match res {
                Ok((seq, replies)) if ok => (
                    ReadPosition {
                        epoch: now.position.epoch,
                        seq,
                    },
                    replies,
                ),
                other => {
                    if let Err(e) = other {
                        tracing::error!(request_ids, "read failed: {e:#}");
                    }
                    requeue(&d).await;
                    return;
                }
            }
        }
    };
    let body = serde_json::to_vec(&ReadBatchReply { replies, position });
    if let (Some(to), Ok(body)) = (d.properties.reply_to(), body) {
        let id = d.properties.correlation_id().as_ref().map(|c| c.as_str());
        if let Err(e) = broker::reply(ch, to.as_str(), id, &body).await {
            tracing::warn!(request_ids, "sending a read reply: {e:#}");
        } else {
            tracing::debug!(
                target: telemetry::REQUEST_TARGET,
                request_ids,
                epoch = position.epoch,
                seq = position.seq,
                "reads answered"
            );
        }
    }
    let _ = d.acker.ack(BasicAckOptions::default()).await;
}
