//! ZooKeeper: the worker's registration, the master znode, the epoch, the in-sync set, and the master's
//! leadership lease. Standing for election and taking the role over are in [`crate::election`].
//!
//! Every write that decides who may act (the epoch, the in-sync set) is a versioned set: a worker acting on a
//! stale view gets `BadVersion` instead of overwriting its successor's decision.

use std::time::Duration;

use anyhow::Context;
use protocol::coord::{InSyncSet, MasterRecord, WorkerRecord};
use protocol::lease::LeadershipLease;
use protocol::Names;
use tokio::sync::watch;
use tokio::time::Instant;
use zookeeper_client::{Acls, Client, CreateMode, CreateOptions, Error as ZkError, SessionState};

use crate::Config;

pub(crate) fn persistent() -> CreateOptions<'static> {
    CreateMode::Persistent.with_acls(Acls::anyone_all())
}

pub(crate) fn ephemeral() -> CreateOptions<'static> {
    CreateMode::Ephemeral.with_acls(Acls::anyone_all())
}

pub struct Coord {
    pub(crate) client: Client,
    pub(crate) names: Names,
    pub(crate) id: String,
    pub(crate) pid: u32,
    session_timeout: Duration,
    /// How long this worker is sure its session, and so its master znode, lives (see `protocol::lease`).
    leadership: watch::Sender<LeadershipLease>,
}

/// The master role, as taken in ZooKeeper.
#[derive(Debug, Clone)]
pub struct MasterRole {
    pub epoch: u64,
    /// Version of the in-sync set znode after our last write: every later write must match it.
    pub in_sync_version: i32,
    /// The members of the set as the previous master left it: they may still hold its read leases.
    pub previous: Vec<String>,
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
            leadership: watch::Sender::new(LeadershipLease::default()),
        })
    }

    /// Checks that the master znode is still ours and renews how long we may act on that. The server cannot
    /// expire our session sooner than a session timeout after it heard this request, so until then no other
    /// worker can have become master.
    pub async fn renew_leadership(&self) -> bool {
        let asked = Instant::now().into_std();
        let ours = match self.client.check_stat(&self.names.zk_master()).await {
            Ok(Some(stat)) => stat.ephemeral_owner == self.client.session_id().0,
            _ => false,
        };
        let timeout = self.session_timeout;
        self.leadership.send_modify(|lease| {
            if ours {
                lease.renewed(asked, timeout);
            } else {
                lease.drop_lease();
            }
        });
        ours
    }

    /// Whether this worker may still act as master.
    pub fn is_leader(&self) -> bool {
        self.leadership.borrow().holds(Instant::now().into_std())
    }

    /// Changes to the leadership lease, to wait for its renewal.
    pub fn leadership(&self) -> watch::Receiver<LeadershipLease> {
        self.leadership.subscribe()
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
                        self.leadership.send_modify(LeadershipLease::drop_lease);
                        tracing::warn!(state = ?s, "ZooKeeper connection suspended: not acting as master");
                    } else {
                        self.renew_leadership().await;
                    }
                }
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

pub(crate) fn ignore_no_node(e: ZkError) -> Result<(), ZkError> {
    match e {
        ZkError::NoNode => Ok(()),
        e => Err(e),
    }
}
