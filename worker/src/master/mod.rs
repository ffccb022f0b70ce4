//! The master: takes commands from `writeQ`, runs them in batches (group commit), replicates every batch
//! synchronously to the in-sync slaves, and keeps the in-sync set and the slaves' read leases.
//!
//! The rules live in [`machine`], a state machine tested without a network; this module is the thin loop
//! around it: it decodes deliveries and acknowledgements into events, feeds the machine its clock, and carries
//! out the effects it returns, in order, against RabbitMQ and ZooKeeper.

pub mod machine;
mod round;

use std::cell::Cell;
use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection};
use protocol::coord::{InSyncSet, WorkerRecord};
use protocol::queue::{Command, SyncAck, SyncMessage};
use protocol::{Names, Role};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::coord::{Coord, MasterRole};
use crate::db::Db;
use crate::Config;
use broker::DIRECT_REPLY_TO;
use machine::{Effect, Incoming, Master, Params};

/// How often the master refreshes its registration (its applied seq) in ZooKeeper.
const RECORD_REFRESH: Duration = Duration::from_secs(1);

/// Where the answer to one command goes.
struct ReplyTo {
    queue: String,
    correlation_id: Option<String>,
    /// The HTTP requests the command serves (`broker::REQUEST_IDS_HEADER`), for the log lines about it.
    request_ids: String,
}

/// The I/O side of a master.
struct Io<'a> {
    config: &'a Config,
    zk: &'a Coord,
    role: &'a mut MasterRole,
    names: Names,
    /// Commands are consumed on it, acknowledged on it (as AMQP requires) and answered on it.
    commands: Channel,
    /// The log is published on it; the slaves' acknowledgements come back to it by direct reply-to.
    sync: Channel,
    /// Where to answer each command delivered and not yet acknowledged to the broker, by delivery tag.
    reply_to: BTreeMap<u64, Option<ReplyTo>>,
    /// How long [`Io::ensure_leader`] has waited since the machine was last told (see [`Master::on_stalled`]).
    stalled: Cell<Duration>,
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
    let mut record = WorkerRecord {
        id: config.id.clone(),
        pid: config.pid(),
        role: Role::Master,
        epoch,
        applied_seq: db.position().1,
    };
    zk.update(&record).await?;
    tracing::info!(id = %config.id, epoch, seq = record.applied_seq, "acting as master");
    // The slaves that may hold a lease granted before this run: the previous master's set (when the role was
    // just taken), or our own set (back from a lost broker connection, whose slaves must rejoin).
    let (set, _) = zk.in_sync().await?;
    let clear_set = !set.members.is_empty();
    let previous: Vec<String> = std::mem::take(&mut role.previous)
        .into_iter()
        .chain(set.members)
        .filter(|w| *w != config.id)
        .collect();

    let commands = conn.create_channel().await?;
    // Enough to fill the largest batch twice over, so the next batch is already here when a round ends.
    let prefetch = u16::try_from(config.max_batch.saturating_mul(2)).unwrap_or(u16::MAX);
    commands
        .basic_qos(prefetch, BasicQosOptions::default())
        .await?;
    let sync = conn.create_channel().await?;
    let mut acks = consume_acks(&sync).await?;
    let mut deliveries = consume_commands(&commands, &names, &config.id, epoch).await?;

    let params = Params {
        epoch,
        ack_timeout: config.ack_timeout(),
        heartbeat: config.heartbeat(),
        lease: config.lease(),
        min_in_sync: config.min_in_sync,
    };
    let (mut master, effects) = Master::new(params, db, previous, clear_set, now());
    let mut io = Io {
        config,
        zk,
        role,
        names,
        commands,
        sync,
        reply_to: BTreeMap::new(),
        stalled: Cell::new(Duration::ZERO),
    };
    io.carry_out(effects).await?;
    let mut refresh = tokio::time::interval(RECORD_REFRESH);
    loop {
        let wake = Instant::from_std(master.next_timer());
        let effects = tokio::select! {
            first = deliveries.recv(), if master.ready_for_commands() => {
                let Some(first) = first else { anyhow::bail!("writeQ consumer ended") };
                let mut batch = vec![io.incoming(first)];
                while batch.len() < config.max_batch {
                    match deliveries.try_recv() {
                        Ok(d) => batch.push(io.incoming(d)),
                        Err(_) => break,
                    }
                }
                // A master that may have been replaced does not even change its own copy.
                io.ensure_leader().await?;
                master.on_stalled(io.stalled.take());
                tokio::task::block_in_place(|| master.on_commands(now(), batch))?
            }
            ack = acks.recv() => {
                let Some(ack) = ack else { anyhow::bail!("acknowledgement consumer ended") };
                match serde_json::from_slice::<SyncAck>(&ack.data) {
                    Ok(ack) => master.on_ack(now(), ack),
                    Err(e) => {
                        tracing::warn!("ignoring an undecodable sync ack: {e}");
                        continue;
                    }
                }
            }
            () = tokio::time::sleep_until(wake) => master.on_timer(now()),
            _ = refresh.tick() => {
                record.applied_seq = master.seq();
                if let Err(e) = zk.update(&record).await {
                    tracing::warn!("refreshing our znode: {e:#}");
                }
                continue;
            }
        };
        io.carry_out(effects).await?;
        master.on_stalled(io.stalled.take());
    }
}

/// The clock the machine is fed: tokio's, so that tests can pause it.
fn now() -> std::time::Instant {
    Instant::now().into_std()
}

/// Consumes `writeQ`, forwarding deliveries to the master loop.
async fn consume_commands(
    commands: &Channel,
    names: &Names,
    id: &str,
    epoch: u64,
) -> anyhow::Result<mpsc::UnboundedReceiver<Delivery>> {
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
            format!("master-{id}").as_str().into(),
            BasicConsumeOptions::default(),
            priority,
        )
        .await?;
    Ok(broker::forward(consumer))
}

/// Consumes the slaves' acknowledgements (direct reply-to on the sync channel).
async fn consume_acks(sync: &Channel) -> anyhow::Result<mpsc::UnboundedReceiver<Delivery>> {
    let options = BasicConsumeOptions {
        no_ack: true,
        ..BasicConsumeOptions::default()
    };
    Ok(broker::consume_and_forward(sync, DIRECT_REPLY_TO, options).await?)
}

impl Io<'_> {
    /// Decodes a delivery, remembering where its answer goes.
    fn incoming(&mut self, d: Delivery) -> Incoming {
        let request_ids = broker::request_ids(&d.properties);
        tracing::debug!(
            target: telemetry::REQUEST_TARGET,
            request_ids,
            tag = d.delivery_tag,
            "command received"
        );
        let reply_to = d.properties.reply_to().as_ref().map(|q| ReplyTo {
            queue: q.to_string(),
            correlation_id: d
                .properties
                .correlation_id()
                .as_ref()
                .map(|c| c.to_string()),
            request_ids: request_ids.to_owned(),
        });
        self.reply_to.insert(d.delivery_tag, reply_to);
        Incoming {
            tag: d.delivery_tag,
            command: serde_json::from_slice::<Command>(&d.data).map_err(|e| e.to_string()),
        }
    }

    /// Carries out the machine's effects in order. An error ends this master: a failed in-sync write means
    /// another master wrote the set, a lost leadership or broker means it may no longer act.
    async fn carry_out(&mut self, effects: Vec<Effect>) -> anyhow::Result<()> {
        for effect in effects {
            match effect {
                Effect::Publish(msg) => self.publish(&msg, true).await?,
                Effect::Notify(msg) => self.publish(&msg, false).await?,
                Effect::WriteInSync(members) => {
                    self.ensure_leader().await?;
                    let set = InSyncSet {
                        epoch: self.role.epoch,
                        master: self.config.id.clone(),
                        members,
                    };
                    // A BadVersion here means another master has written the set since: this one is deposed,
                    // and the error ends it.
                    self.role.in_sync_version = self
                        .zk
                        .write_in_sync(&set, Some(self.role.in_sync_version))
                        .await
                        .context("the in-sync set changed behind this master's back")?;
                }
                Effect::Reply(tag, reply) => {
                    // Nothing is answered by a master that may have been replaced meanwhile.
                    self.ensure_leader().await?;
                    let Some(Some(to)) = self.reply_to.get(&tag) else {
                        continue;
                    };
                    let body = serde_json::to_vec(&reply)?;
                    if let Err(e) = broker::reply(
                        &self.commands,
                        &to.queue,
                        to.correlation_id.as_deref(),
                        &body,
                    )
                    .await
                    {
                        // The client times out and retries with its idempotency key.
                        tracing::warn!(request_ids = to.request_ids, "sending a reply: {e:#}");
                    } else {
                        tracing::debug!(
                            target: telemetry::REQUEST_TARGET,
                            request_ids = to.request_ids,
                            tag,
                            "command committed and answered"
                        );
                    }
                }
                Effect::AckCommands(tag) => {
                    self.commands
                        .basic_ack(tag, BasicAckOptions { multiple: true })
                        .await
                        .context("acknowledging commands")?;
                    self.reply_to = self.reply_to.split_off(&(tag + 1));
                }
            }
        }
        Ok(())
    }

    /// Publishes a message of the log; `acknowledged`: with our acknowledgement channel as `reply_to`.
    async fn publish(&self, msg: &SyncMessage, acknowledged: bool) -> anyhow::Result<()> {
        self.ensure_leader().await?;
        let body = serde_json::to_vec(msg)?;
        let mut properties = BasicProperties::default();
        if acknowledged {
            properties = properties.with_reply_to(DIRECT_REPLY_TO.into());
        }
        self.sync
            .basic_publish(
                self.names.sync_exchange().as_str().into(),
                "".into(),
                BasicPublishOptions::default(),
                &body,
                properties,
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
        let start = Instant::now();
        let deadline = start + Duration::from_millis(2 * self.config.zk_session_ms);
        let mut leadership = self.zk.leadership();
        if self.zk.is_leader() {
            return Ok(());
        }
        // Whatever comes of it, the time waited is time the machine's deadlines must not count.
        let _stall = StallGuard(&self.stalled, start);
        while !self.zk.is_leader() {
            anyhow::ensure!(
                Instant::now() < deadline,
                "no longer sure to hold the master role: stepping down"
            );
            // Woken by every renewal; the timeout re-checks a lease that lapsed without a change.
            let _ = tokio::time::timeout(Duration::from_millis(20), leadership.changed()).await;
        }
        Ok(())
    }
}

/// Adds the time from its start to its drop to a stall counter.
struct StallGuard<'a>(&'a Cell<Duration>, Instant);

impl Drop for StallGuard<'_> {
    fn drop(&mut self) {
        self.0.set(self.0.get() + self.1.elapsed());
    }
}
