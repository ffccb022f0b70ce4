//! ZooKeeper: the worker's registration, the master znode, the epoch and the in-sync set.
//!
//! Every write that decides who may act (the epoch, the in-sync set) is a versioned set: a worker acting on a
//! stale view gets `BadVersion` instead of overwriting its successor's decision.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use protocol::coord::{InSyncSet, MasterRecord, WorkerRecord};
use protocol::Names;
use zookeeper_client::{
    Acls, Client, CreateMode, CreateOptions, Error as ZkError, EventType, SessionState,
};

use crate::Config;

fn persistent() -> CreateOptions<'static> {
    CreateMode::Persistent.with_acls(Acls::anyone_all())
}

fn ephemeral() -> CreateOptions<'static> {
    CreateMode::Ephemeral.with_acls(Acls::anyone_all())
}

pub struct Coord {
    client: Client,
    names: Names,
    id: String,
    pid: u32,
    session_timeout: Duration,
    /// Until when this worker is sure its session — and so its master znode — is alive (ms since `epoch0`).
    leader_until: Arc<AtomicU64>,
    epoch0: Instant,
}

/// The master role, as taken in ZooKeeper.
#[derive(Debug, Clone, Copy)]
pub struct MasterRole {
    pub epoch: u64,
    /// Version of the in-sync set znode after our last write: every later write must match it.
    pub in_sync_version: i32,
}

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

impl Coord {
    pub async fn connect(config: &Config, names: Names) -> anyhow::Result<Coord> {
        let client = Client::connector()
            .with_session_timeout(Duration::from_millis(config.zk_session_ms))
            .connect(&config.zk)
            .await?;
        client.mkdir(&names.zk_workers(), &persistent()).await?;
        client.mkdir(&names.zk_election(), &persistent()).await?;
        Ok(Coord {
            client,
            names,
            id: config.id.clone(),
            pid: config.pid(),
            session_timeout: Duration::from_millis(config.zk_session_ms),
            leader_until: Arc::default(),
            epoch0: Instant::now(),
        })
    }

    /// Takes the master role: claims the master znode, moves to a new epoch, and becomes the only writer of
    /// the in-sync set, with that set read *before* the claim as the compare-and-set reference. With
    /// `must_be_in_sync`, the caller must be a member of that set (a promoted slave); a fresh master started on
    /// its own database does not.
    pub async fn take_master_role(
        &self,
        db_epoch: u64,
        must_be_in_sync: bool,
    ) -> Result<MasterRole, TakeoverError> {
        let (set, version) = self.in_sync().await?;
        if must_be_in_sync && !set.members.contains(&self.id) {
            return Err(TakeoverError::NotInSync);
        }
        let mut record = MasterRecord {
            id: self.id.clone(),
            pid: self.pid,
            epoch: set.epoch.max(db_epoch),
        };
        let data = serde_json::to_vec(&record).map_err(anyhow::Error::from)?;
        match self
            .client
            .create(&self.names.zk_master(), &data, &ephemeral())
            .await
        {
            Ok(_) => {}
            Err(ZkError::NodeExists) => return Err(TakeoverError::MasterExists),
            Err(e) => return Err(anyhow::Error::from(e).into()),
        }
        self.renew_leadership().await;
        let taken = async {
            let epoch = self.bump_epoch(record.epoch).await?;
            let fresh = InSyncSet {
                epoch,
                master: self.id.clone(),
                members: vec![],
            };
            let in_sync_version = self.write_in_sync(&fresh, version).await?;
            record.epoch = epoch;
            self.update_master(&record).await?;
            anyhow::Ok(MasterRole {
                epoch,
                in_sync_version,
            })
        };
        match taken.await {
            Ok(role) => Ok(role),
            Err(e) => {
                // Give the role back rather than sit on a master znode we cannot act for.
                let _ = self.client.delete(&self.names.zk_master(), None).await;
                Err(e.into())
            }
        }
    }

    /// Checks that the master znode is still ours and renews how long we may act on that. The server cannot
    /// expire our session sooner than a session timeout after it heard this request, so until then no other
    /// worker can have become master.
    pub async fn renew_leadership(&self) -> bool {
        let asked = self.epoch0.elapsed();
        let ours = match self.client.check_stat(&self.names.zk_master()).await {
            Ok(Some(stat)) => stat.ephemeral_owner == self.client.session_id().0,
            _ => false,
        };
        let until = if ours {
            // A fifth of the timeout as margin for the clocks and for acting on a just-checked lease.
            (asked + self.session_timeout - self.session_timeout / 5).as_millis() as u64
        } else {
            0
        };
        self.leader_until.store(until, Ordering::SeqCst);
        ours
    }

    /// Whether this worker may still act as master.
    pub fn is_leader(&self) -> bool {
        (self.epoch0.elapsed().as_millis() as u64) < self.leader_until.load(Ordering::SeqCst)
    }

    /// Renews the leadership lease every quarter session timeout, and drops it at once when the connection to
    /// ZooKeeper is suspended. Runs for as long as the returned future is polled.
    pub async fn keep_leadership(&self) {
        let mut state = self.client.state_watcher();
        let mut tick = tokio::time::interval(self.session_timeout / 4);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if !self.renew_leadership().await {
                        tracing::error!("the master znode is no longer ours");
                    }
                }
                s = state.changed() => {
                    if s != SessionState::SyncConnected {
                        self.leader_until.store(0, Ordering::SeqCst);
                        tracing::warn!(state = ?s, "ZooKeeper connection suspended: not acting as master");
                    } else {
                        self.renew_leadership().await;
                    }
                }
            }
        }
    }

    /// Registers as an election candidate (an in-sync slave). Idempotent.
    pub async fn stand(&self) -> anyhow::Result<()> {
        let path = self.names.zk_candidate(self.pid, &self.id);
        match self.client.create(&path, &[], &ephemeral()).await {
            Ok(_) | Err(ZkError::NodeExists) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Withdraws from the election. Idempotent.
    pub async fn withdraw(&self) -> anyhow::Result<()> {
        let path = self.names.zk_candidate(self.pid, &self.id);
        self.client
            .delete(&path, None)
            .await
            .or_else(ignore_no_node)?;
        Ok(())
    }

    /// Waits until it is this worker's turn to try to become master: it is the candidate with the lowest pid
    /// and there is no master. Each candidate watches only the candidate just before it (no herd effect when
    /// one goes); the first watches the master znode. Returns when the turn comes; callers that are not
    /// candidates simply wait on it forever.
    pub async fn wait_for_turn(&self) -> anyhow::Result<()> {
        let me = self.names.zk_candidate(self.pid, &self.id);
        let me = me.rsplit('/').next().unwrap_or_default().to_owned();
        loop {
            let mut candidates = match self.client.list_children(&self.names.zk_election()).await {
                Ok(c) => c,
                Err(ZkError::NoNode) => vec![],
                Err(e) => return Err(e.into()),
            };
            candidates.sort();
            let watched = match candidates.iter().position(|c| *c == me) {
                None => {
                    // Not standing: check again a little later.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
                Some(0) => self.names.zk_master(),
                Some(i) => format!("{}/{}", self.names.zk_election(), candidates[i - 1]),
            };
            let (stat, watcher) = self.client.check_and_watch_stat(&watched).await?;
            if stat.is_none() {
                if watched == self.names.zk_master() {
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

    /// Resolves when the session ends for good (expired, closed): every ephemeral znode of ours is gone, so
    /// this worker must stop acting on anything it claimed.
    pub async fn session_lost(&self) -> String {
        let mut watcher = self.client.state_watcher();
        loop {
            let state = watcher.changed().await;
            if state.is_terminated() {
                return format!("{state:?}");
            }
            if state == SessionState::Disconnected {
                tracing::warn!(
                    "ZooKeeper disconnected; the session survives if we reconnect in time"
                );
            }
        }
    }

    /// Creates (or replaces, after a restart under the same id) this worker's ephemeral registration.
    pub async fn register(&self, record: &WorkerRecord) -> anyhow::Result<()> {
        let path = self.names.zk_worker(&self.id);
        let data = serde_json::to_vec(record)?;
        match self.client.create(&path, &data, &ephemeral()).await {
            Ok(_) => Ok(()),
            Err(ZkError::NodeExists) => {
                // Left by our previous incarnation, whose session has not expired yet.
                self.client
                    .delete(&path, None)
                    .await
                    .or_else(ignore_no_node)?;
                self.client.create(&path, &data, &ephemeral()).await?;
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    pub async fn update(&self, record: &WorkerRecord) -> anyhow::Result<()> {
        let data = serde_json::to_vec(record)?;
        self.client
            .set_data(&self.names.zk_worker(&self.id), &data, None)
            .await?;
        Ok(())
    }

    /// Updates the master znode once the epoch is known.
    pub async fn update_master(&self, record: &MasterRecord) -> anyhow::Result<()> {
        let data = serde_json::to_vec(record)?;
        self.client
            .set_data(&self.names.zk_master(), &data, None)
            .await?;
        Ok(())
    }

    /// Moves the cluster to a new epoch above both the stored one and `at_least`, with a compare-and-set, and
    /// returns it. Entries and commands stamped with an older epoch are refused from then on.
    pub async fn bump_epoch(&self, at_least: u64) -> anyhow::Result<u64> {
        let path = self.names.zk_epoch();
        loop {
            let (current, version) = match self.client.get_data(&path).await {
                Ok((data, stat)) => {
                    let text = String::from_utf8(data).context("epoch znode is not text")?;
                    (
                        text.trim()
                            .parse::<u64>()
                            .context("epoch znode is not a number")?,
                        stat.version,
                    )
                }
                Err(ZkError::NoNode) => {
                    match self.client.create(&path, b"0", &persistent()).await {
                        Ok(_) | Err(ZkError::NodeExists) => continue,
                        Err(e) => return Err(e.into()),
                    }
                }
                Err(e) => return Err(e.into()),
            };
            let next = current.max(at_least) + 1;
            match self
                .client
                .set_data(&path, next.to_string().as_bytes(), Some(version))
                .await
            {
                Ok(_) => return Ok(next),
                Err(ZkError::BadVersion) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Reads the in-sync set and its version (None when it was never written).
    pub async fn in_sync(&self) -> anyhow::Result<(InSyncSet, Option<i32>)> {
        match self.client.get_data(&self.names.zk_in_sync()).await {
            Ok((data, stat)) => Ok((
                serde_json::from_slice(&data).unwrap_or_default(),
                Some(stat.version),
            )),
            Err(ZkError::NoNode) => Ok((InSyncSet::default(), None)),
            Err(e) => Err(e.into()),
        }
    }

    /// Writes the in-sync set if its version is still `version`; returns the new version. `BadVersion` means
    /// another master wrote it since: we are deposed.
    pub async fn write_in_sync(
        &self,
        set: &InSyncSet,
        version: Option<i32>,
    ) -> anyhow::Result<i32> {
        let data = serde_json::to_vec(set)?;
        let path = self.names.zk_in_sync();
        let stat = match version {
            Some(v) => self
                .client
                .set_data(&path, &data, Some(v))
                .await
                .context("writing the in-sync set")?,
            None => {
                self.client
                    .create(&path, &data, &persistent())
                    .await
                    .context("creating the in-sync set")?
                    .0
            }
        };
        Ok(stat.version)
    }
}

fn ignore_no_node(e: ZkError) -> Result<(), ZkError> {
    match e {
        ZkError::NoNode => Ok(()),
        e => Err(e),
    }
}
