//! A slave: catches up from a snapshot, applies the master's log in order, and serves reads while in sync.
//!
//! The rules live in [`machine`], a state machine tested without a network, and the read server in [`reads`];
//! this module is the loop that connects them to RabbitMQ and ZooKeeper: it binds the sync queue, sends the
//! requests the machine asks for (one at a time), hands it the log, the answers and election turns, and publishes
//! what the read server may do after every event.

pub mod machine;
pub mod reads;

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use lapin::message::Delivery;
use lapin::options::{
    BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Connection};
use protocol::coord::{WorkerRecord, RECORD_REFRESH};
use protocol::disk::META_TABLE;
use protocol::queue::{Command, CommandReply, SyncMessage};
use protocol::Role;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::time::Instant;
use tokio_util::task::AbortOnDropHandle;

use crate::coord::{Coord, MasterRole};
use crate::db::Db;
use crate::election::{Election, TakeoverError};
use crate::Config;
use broker::RpcChannel;
use machine::{Effect, Params, Phase, Slave, Takeover};

/// How long a slave waits for a snapshot: a large database takes a while to serialize and ship.
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(30);
const JOIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause before asking again after a failed snapshot or join, so a slave does not hammer a busy master.
const RETRY_PAUSE: Duration = Duration::from_millis(200);
/// How long a retiring slave waits for its reads in flight, and for the master to let it go.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(2);

/// How a slave's run ends.
pub enum End {
    /// It won an election: its database and the master role.
    Promoted(Box<Db>, MasterRole),
    /// It was asked to stop, and left the in-sync set first.
    Left,
}

/// The request to the master that is out, and its answer to come.
enum Request {
    Snapshot,
    Join,
    Leave,
}

type Pending<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The clock the machine is fed: tokio's, so that tests can pause it.
fn now() -> std::time::Instant {
    Instant::now().into_std()
}

/// Runs as a slave until this worker wins an election, or `stop` turns true (then it leaves gracefully).
pub async fn run(
    config: &Config,
    zk: &Coord,
    conn: &Connection,
    stop: &mut watch::Receiver<bool>,
) -> anyhow::Result<End> {
    let names = config.names();
    // Registered with how far the copy on disk got, before anything replaces it: after the whole cluster
    // stopped, the orchestrator restores the master from the furthest copy that the workers report.
    let path = config.db_path();
    let on_disk = tokio::task::spawn_blocking(move || copy_position(&path))
        .await
        .context("reading the copy on disk")?
        .context(
            "the copy on disk cannot be read; not starting as a slave, which would replace it (it may hold \
             writes that no other copy has)",
        )?;
    // Reported until a snapshot replaces the copy: until then the machine holds no database, and the copy on
    // disk is what the orchestrator must know about.
    let mut on_disk = Some(on_disk);
    let mut record = WorkerRecord {
        id: config.id.clone(),
        pid: config.pid(),
        role: Role::Slave,
        epoch: on_disk.map_or(0, |p| p.0),
        applied_seq: on_disk.map_or(0, |p| p.1),
    };
    zk.register(&record).await?;
    tracing::info!(
        epoch = record.epoch,
        seq = record.applied_seq,
        "registered with the position of the copy on disk"
    );
    let election = Election::new(zk);

    // Bind first: every entry published from now on waits in our queue while the snapshot is made.
    let sync = conn.create_channel().await?;
    let queue = names.sync_queue(&config.id);
    let mut log = bind_sync_queue(&sync, &queue, &names.sync_exchange()).await?;

    let rpc = RpcChannel::open(conn).await?;
    let write_queue = names.write_queue();
    let (serving_tx, serving_rx) = watch::channel(machine::Serving::default());
    let readers = config.readers.max(1);
    let permits = Arc::new(Semaphore::new(readers));
    // Stops serving reads however this function ends.
    let _reads = AbortOnDropHandle::new(tokio::spawn(reads::serve(
        conn.create_channel().await?,
        names.read_queue(),
        config.db_path(),
        permits.clone(),
        serving_rx,
    )));

    let params = Params {
        id: config.id.clone(),
        db_path: config.db_path(),
        retry_pause: RETRY_PAUSE,
    };
    let (mut slave, effects) = Slave::new(params, rand_session());
    let mut pending: Option<(Request, Pending<'_, Result<CommandReply, String>>)> = None;
    let mut takeover: Option<Pending<'_, Result<MasterRole, TakeoverError>>> = None;
    let mut turn: Pending<'_, anyhow::Result<()>> = Box::pin(election.wait_for_turn());
    let mut refresh = tokio::time::interval(RECORD_REFRESH);
    let mut stopping = false;
    let mut effects = effects;
    let mut reply_to: Option<String> = None;
    loop {
        // Effects, in order.
        for effect in effects.drain(..) {
            match effect {
                Effect::RequestSnapshot => {
                    let cmd = Command::Snapshot {
                        worker: config.id.clone(),
                    };
                    pending = Some((
                        Request::Snapshot,
                        Box::pin(call(&rpc, &write_queue, cmd, SNAPSHOT_TIMEOUT)),
                    ));
                }
                Effect::RequestJoin {
                    applied_seq,
                    anchor,
                } => {
                    let cmd = Command::Join {
                        worker: config.id.clone(),
                        applied_seq,
                        anchor,
                    };
                    pending = Some((
                        Request::Join,
                        Box::pin(call(&rpc, &write_queue, cmd, JOIN_TIMEOUT)),
                    ));
                }
                Effect::Ack(ack) => {
                    if let (Some(to), Ok(body)) = (&reply_to, serde_json::to_vec(&ack)) {
                        if let Err(e) = broker::reply(&sync, to, None, &body).await {
                            tracing::warn!("sending a sync ack: {e:#}");
                        }
                    }
                }
                Effect::Stand => {
                    if let Err(e) = election.stand().await {
                        tracing::warn!("standing for election: {e:#}");
                    }
                }
                Effect::Withdraw => {
                    if let Err(e) = election.withdraw().await {
                        tracing::warn!("withdrawing from the election: {e:#}");
                    }
                }
                Effect::TakeOver { db_epoch } => {
                    takeover = Some(Box::pin(election.take_master_role(db_epoch, true)));
                }
                Effect::Leave => {
                    let cmd = Command::Leave {
                        worker: config.id.clone(),
                    };
                    let leaving = leave(&election, &rpc, &write_queue, cmd, &permits, readers);
                    pending = Some((Request::Leave, Box::pin(leaving)));
                }
            }
        }
        serving_tx.send_replace(slave.serving());
        if pending.is_none() && slave.phase() == Phase::Following && log.is_empty() {
            effects = slave.on_idle(now());
            if !effects.is_empty() {
                continue;
            }
        }
        let wake = slave.next_timer().map(Instant::from_std);
        effects = tokio::select! {
            _ = stop.changed(), if !stopping => {
                stopping = true;
                slave.on_stop()
            }
            answer = async { pending.as_mut().expect("guarded").1.as_mut().await }, if pending.is_some() => {
                let (request, _) = pending.take().expect("guarded");
                match request {
                    Request::Snapshot => {
                        if matches!(answer, Ok(CommandReply::Snapshot(_))) {
                            // The copy on disk is about to be replaced: from now on the record reports the
                            // machine's position, at once rather than up to a refresh later.
                            on_disk = None;
                            refresh.reset_immediately();
                        }
                        let snapshot = match answer {
                            Ok(CommandReply::Snapshot(s)) => Ok(s),
                            Ok(other) => Err(format!("unexpected answer: {other:?}")),
                            Err(e) => Err(e),
                        };
                        tokio::task::block_in_place(|| slave.on_snapshot(now(), snapshot))
                    }
                    Request::Join => slave.on_join(now(), answer),
                    Request::Leave => {
                        match answer {
                            Ok(CommandReply::Left) => tracing::info!("left the in-sync set"),
                            other => tracing::warn!("leaving the in-sync set: {other:?}"),
                        }
                        slave.on_left();
                        return Ok(End::Left);
                    }
                }
            }
            d = log.recv(), if slave.accepts_sync() => {
                let Some(d) = d else { anyhow::bail!("sync queue consumer ended") };
                handle(&mut slave, &d, &mut reply_to)
            }
            t = &mut turn, if matches!(slave.phase(), Phase::InSync { .. }) && takeover.is_none() => {
                turn = Box::pin(next_turn(&election, t.err()));
                // The master is gone and we are the first candidate. Take in what it sent us first.
                let mut effects = Vec::new();
                while slave.accepts_sync() {
                    let Ok(d) = log.try_recv() else { break };
                    effects.extend(handle(&mut slave, &d, &mut reply_to));
                }
                effects.extend(slave.on_turn());
                effects
            }
            answer = async { takeover.as_mut().expect("guarded").as_mut().await }, if takeover.is_some() => {
                takeover = None;
                match slave.on_takeover(answer) {
                    Takeover::Won(db, role, effects) => {
                        for effect in effects {
                            if effect == Effect::Withdraw {
                                election.withdraw().await?;
                            }
                        }
                        sync.queue_delete(queue.as_str().into(), QueueDeleteOptions::default()).await?;
                        return Ok(End::Promoted(db, role));
                    }
                    Takeover::Lost(effects) => effects,
                }
            }
            () = sleep_until(wake), if wake.is_some() => slave.on_timer(now()),
            _ = refresh.tick() => {
                (record.epoch, record.applied_seq) = on_disk.unwrap_or_else(|| slave.position());
                if let Err(e) = zk.update(&record).await {
                    tracing::warn!("refreshing our znode: {e:#}");
                }
                Vec::new()
            }
        };
    }
}

/// How far the copy at `path` got, read without changing it: (0, 0) when there is no database yet (no file, or
/// one the worker never set up). An error means a file that exists and cannot be read.
fn copy_position(path: &Path) -> anyhow::Result<(u64, u64)> {
    match std::fs::metadata(path) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((0, 0)),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    }
    let conn = crate::db::open_reader(path)?;
    let tables: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = ?1",
            [META_TABLE],
            |r| r.get(0),
        )
        .with_context(|| format!("reading {}", path.display()))?;
    if tables == 0 {
        return Ok((0, 0));
    }
    crate::db::read_position(&conn).with_context(|| format!("reading {}", path.display()))
}

/// Hands one message of the log to the machine, remembering where its acknowledgement goes.
fn handle(slave: &mut Slave, d: &Delivery, reply_to: &mut Option<String>) -> Vec<Effect> {
    *reply_to = d.properties.reply_to().as_ref().map(|q| q.to_string());
    let msg = serde_json::from_slice::<SyncMessage>(&d.data).map_err(|e| e.to_string());
    let ackable = reply_to.is_some();
    tokio::task::block_in_place(|| slave.on_sync(now(), msg, ackable))
}

async fn sleep_until(wake: Option<Instant>) {
    match wake {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// The next election turn; after a failed watch, a pause first.
async fn next_turn(election: &Election<'_>, failed: Option<anyhow::Error>) -> anyhow::Result<()> {
    if let Some(e) = failed {
        tracing::warn!("watching the election: {e:#}");
        tokio::time::sleep(RETRY_PAUSE).await;
    }
    election.wait_for_turn().await
}

/// Sends a command to the master (on `writeQ`) and waits for its answer.
async fn call(
    rpc: &RpcChannel,
    write_queue: &str,
    cmd: Command,
    timeout: Duration,
) -> Result<CommandReply, String> {
    let body = serde_json::to_vec(&cmd).map_err(|e| e.to_string())?;
    let reply = rpc
        .call(write_queue, &body, timeout)
        .await
        .map_err(|e| e.to_string())?;
    serde_json::from_slice(&reply).map_err(|e| format!("undecodable reply from the master: {e}"))
}

/// Retires: lets the reads in flight finish (each checks, after it ran, that it may still answer: it may not,
/// so it hands its read back), withdraws from the election and asks the master to drop this slave now. A slave
/// that cannot leave cleanly is simply dropped after its lease, as a dead one would be.
async fn leave(
    election: &Election<'_>,
    rpc: &RpcChannel,
    write_queue: &str,
    cmd: Command,
    permits: &Semaphore,
    readers: usize,
) -> Result<CommandReply, String> {
    let readers = u32::try_from(readers).unwrap_or(u32::MAX);
    if tokio::time::timeout(LEAVE_TIMEOUT, permits.acquire_many(readers))
        .await
        .is_err()
    {
        tracing::warn!("reads still running after {LEAVE_TIMEOUT:?}; leaving anyway");
    }
    if let Err(e) = election.withdraw().await {
        tracing::warn!("withdrawing from the election: {e:#}");
    }
    call(rpc, write_queue, cmd, LEAVE_TIMEOUT).await
}

/// Declares this slave's own queue, binds it to the sync exchange, and forwards what arrives on it.
async fn bind_sync_queue(
    sync: &Channel,
    queue: &str,
    exchange: &str,
) -> anyhow::Result<mpsc::UnboundedReceiver<Delivery>> {
    sync.queue_declare(
        queue.into(),
        QueueDeclareOptions {
            exclusive: true,
            auto_delete: true,
            ..QueueDeclareOptions::default()
        },
        FieldTable::default(),
    )
    .await?;
    sync.queue_bind(
        queue.into(),
        exchange.into(),
        "".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await?;
    let options = BasicConsumeOptions {
        no_ack: true,
        ..BasicConsumeOptions::default()
    };
    Ok(broker::consume_and_forward(sync, queue, options).await?)
}

/// A session number for this run's lease anchors: random, so no earlier run under the same id shares it.
fn rand_session() -> u64 {
    let bytes = uuid::Uuid::new_v4().into_bytes();
    u64::from_le_bytes(bytes[..8].try_into().expect("eight bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_reports_the_position_recorded_in_it_and_no_copy_reports_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(protocol::disk::DB_FILE);
        assert_eq!(copy_position(&path).unwrap(), (0, 0));
        {
            let conn = rusqlite::Connection::open(&path).unwrap();
            conn.execute_batch("CREATE TABLE t (x)").unwrap();
        }
        assert_eq!(copy_position(&path).unwrap(), (0, 0), "never set up");
        {
            let conn = rusqlite::Connection::open(&path).unwrap();
            conn.pragma_update(None, "journal_mode", "WAL").unwrap();
            conn.execute_batch(&format!(
                "CREATE TABLE {META_TABLE} (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
                 INSERT INTO {META_TABLE} VALUES ('epoch', 2), ('seq', 7);"
            ))
            .unwrap();
            // Still open, as after a crash: the last writes are in the WAL only.
            assert_eq!(copy_position(&path).unwrap(), (2, 7));
            std::mem::forget(conn);
        }
    }

    #[test]
    fn a_file_that_is_not_a_database_is_an_error_not_an_empty_copy() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(protocol::disk::DB_FILE);
        std::fs::write(&path, b"this is not sqlite, but it is not empty either").unwrap();
        assert!(copy_position(&path).is_err());
    }
}
