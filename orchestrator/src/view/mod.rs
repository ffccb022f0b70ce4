//! A cached view of the cluster as ZooKeeper records it: the master, the in-sync set, the worker registry and
//! the registry of copies.
//!
//! One task owns the ZooKeeper session and publishes [`ClusterView`] snapshots on a `tokio::sync::watch`
//! channel, so the request path reads memory and never waits on ZooKeeper. The task keeps the view fresh with
//! one persistent recursive watch on the namespace's root znode (ZooKeeper 3.6+): each event re-reads only the
//! znode it names. Persistent watches can miss events across a reconnection (ZOOKEEPER-4698), so the whole view
//! is also re-read after every reconnection and every [`RESYNC_INTERVAL`].
//!
//! The same task is the only one that changes ZooKeeper on the orchestrator's behalf, and updates the view
//! before it answers, so that nothing read from the view afterwards contradicts the change:
//! [`Registry::forget`] removes the znodes of a worker known to be dead (nothing read after a confirmed kill
//! still shows it), [`Registry::record_copy`] and [`Registry::drop_copy`] keep the registry of copies.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::Context;
use backon::{ExponentialBuilder, Retryable};
use protocol::coord::{CopyRecord, InSyncSet, MasterRecord, WorkerRecord};
use protocol::{Names, Role, WorkerInfo};
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use zookeeper_client as zk;

pub mod observe;
mod registry;

pub use registry::Registry;
use registry::{drop_copy, forget, record_copy, Change, Request};

/// Safety net against missed watch events: a full re-read costs a few small reads per worker, and a view at
/// most this stale is harmless (it only decides whether to fail fast with 503).
pub const RESYNC_INTERVAL: Duration = Duration::from_secs(5);

/// How long one attempt to reach ZooKeeper may take, at start and when re-establishing an expired session.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The pauses between attempts to re-establish an expired session: 100 ms, doubling up to 1 s, without end.
/// Requests do not wait for ZooKeeper (the view stays as last seen), so there is no budget to fit in; a second
/// between attempts at most keeps the view's staleness after a ZooKeeper restart short.
const RECONNECT: ExponentialBuilder = ExponentialBuilder::new()
    .with_min_delay(Duration::from_millis(100))
    .with_max_delay(Duration::from_secs(1))
    .without_max_times();

/// What ZooKeeper says about the cluster, at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClusterView {
    pub master: Option<MasterRecord>,
    pub in_sync: Option<InSyncSet>,
    /// Registered (live) workers by id.
    pub workers: BTreeMap<String, WorkerRecord>,
    /// Ids of the workers standing in the election (in-sync slaves that have heard from their master).
    pub candidates: BTreeSet<String>,
    /// The registry of copies of the database, by worker id: every copy the orchestrator started a worker on
    /// and has not removed, whether a worker runs on it or not, and the host that holds it.
    pub copies: BTreeMap<String, CopyRecord>,
}

impl ClusterView {
    /// The slaves allowed to serve reads: the in-sync set, but only if it was written by the current master.
    /// The set's znode is persistent, so after a master dies it still names the old master's slaves until the
    /// new master rewrites it; those slaves stop serving once their lease lapses, so counting them would turn
    /// a quick 503 into a timeout.
    pub fn in_sync_members(&self) -> &[String] {
        match (&self.master, &self.in_sync) {
            (Some(master), Some(set)) if set.master == master.id => &set.members,
            _ => &[],
        }
    }

    /// Ready to serve both reads and writes.
    pub fn is_healthy(&self) -> bool {
        self.master.is_some() && !self.in_sync_members().is_empty()
    }

    /// A worker's role: the master znode is the truth when there is one (a worker's own record is refreshed
    /// only every second or so, so it lags behind a failover).
    pub fn role_of(&self, record: &WorkerRecord) -> Role {
        match &self.master {
            Some(master) if master.id == record.id => Role::Master,
            Some(_) => Role::Slave,
            None => record.role,
        }
    }

    /// One row per registered worker, by ascending pid.
    pub fn worker_infos(&self) -> Vec<WorkerInfo> {
        let members = self.in_sync_members();
        let mut rows: Vec<WorkerInfo> = self
            .workers
            .values()
            .map(|w| {
                let role = self.role_of(w);
                WorkerInfo {
                    pid: w.pid,
                    role,
                    in_sync: role == Role::Master || members.contains(&w.id),
                    applied_seq: w.applied_seq,
                }
            })
            .collect();
        rows.sort_by_key(|w| w.pid);
        rows
    }

    /// How far `record`'s worker is behind the master: the master's applied seq minus its own, from the records
    /// the workers refresh every second (so a lag of a few entries under load is only the refresh's age).
    /// `None` without a master or its record.
    pub fn lag_of(&self, record: &WorkerRecord) -> Option<u64> {
        let master = self.workers.get(&self.master.as_ref()?.id)?;
        Some(master.applied_seq.saturating_sub(record.applied_seq))
    }

    /// The pids of all registered workers, ascending.
    pub fn pids(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = self.workers.values().map(|w| w.pid).collect();
        pids.sort_unstable();
        pids
    }
}

/// Connects to ZooKeeper, reads the whole view once, and spawns the task that keeps it fresh. Returns once the
/// first view is in, so the caller can decide on it (for instance whether a cluster must be launched).
pub async fn spawn(
    zk_addr: &str,
    names: Names,
) -> anyhow::Result<(watch::Receiver<ClusterView>, Registry, JoinHandle<()>)> {
    let client = connect(zk_addr, &names).await?;
    let watcher = client
        .watch(&names.zk_root(), zk::AddWatchMode::PersistentRecursive)
        .await
        .context("watching the namespace in ZooKeeper")?;
    let view = read_all(&client, &names)
        .await
        .context("reading the cluster from ZooKeeper")?;
    let (tx, rx) = watch::channel(view);
    // A handful of requests at most are in flight: one supervisor asks, one at a time.
    let (requests, inbox) = mpsc::channel(16);
    let task = tokio::spawn(keep_fresh(
        zk_addr.to_owned(),
        names,
        client,
        watcher,
        tx,
        inbox,
    ));
    Ok((rx, Registry { requests }, task))
}

async fn connect(zk_addr: &str, names: &Names) -> anyhow::Result<zk::Client> {
    let client = tokio::time::timeout(CONNECT_TIMEOUT, zk::Client::connect(zk_addr))
        .await
        .with_context(|| format!("timed out connecting to ZooKeeper at {zk_addr}"))?
        .with_context(|| format!("connecting to ZooKeeper at {zk_addr}"))?;
    // The parents of everything the workers create; making them here too means the watch and the first read
    // see a well-formed tree even before the first worker runs.
    let options = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
    for parent in [names.zk_workers(), names.zk_copies()] {
        client
            .mkdir(&parent, &options)
            .await
            .with_context(|| format!("creating {parent} in ZooKeeper"))?;
    }
    Ok(client)
}

/// The loop of the view task: follows events until the session ends, then reconnects. Ends when every
/// receiver of the view is gone.
async fn keep_fresh(
    zk_addr: String,
    names: Names,
    mut client: zk::Client,
    mut watcher: zk::PersistentWatcher,
    tx: watch::Sender<ClusterView>,
    mut inbox: mpsc::Receiver<Request>,
) {
    loop {
        follow_session(&client, &mut watcher, &names, &tx, &mut inbox).await;
        if tx.is_closed() {
            return;
        }
        tracing::warn!("ZooKeeper session ended; reconnecting");
        // Until a new session is up the view stays as last seen; ephemeral znodes may have gone meanwhile,
        // which the first full read of the new session corrects. Requests wait for the new session.
        let attempt = || async {
            let client = connect(&zk_addr, &names).await?;
            let watcher = client
                .watch(&names.zk_root(), zk::AddWatchMode::PersistentRecursive)
                .await?;
            anyhow::Ok((client, watcher))
        };
        let again = attempt.retry(RECONNECT).notify(|e, pause| {
            tracing::warn!("reconnecting to ZooKeeper: {e:#}; next attempt in {pause:?}")
        });
        (client, watcher) = tokio::select! {
            _ = tx.closed() => return,
            session = again => session.expect("RECONNECT retries without end"),
        };
        resync(&client, &names, &tx).await;
    }
}

/// Applies events of one session, and serves requests, until the session ends (expired, closed) or nobody
/// reads the view any more.
async fn follow_session(
    client: &zk::Client,
    watcher: &mut zk::PersistentWatcher,
    names: &Names,
    tx: &watch::Sender<ClusterView>,
    inbox: &mut mpsc::Receiver<Request>,
) {
    let mut resync_timer = tokio::time::interval(RESYNC_INTERVAL);
    resync_timer.tick().await; // the first tick is immediate, and the view was just read
    loop {
        tokio::select! {
            _ = tx.closed() => return,
            _ = resync_timer.tick() => resync(client, names, tx).await,
            Some(request) = inbox.recv() => {
                let result = match &request.change {
                    Change::Forget { id, pid } => forget(client, names, tx, id, *pid).await,
                    Change::RecordCopy { id, record } => {
                        record_copy(client, names, tx, id, record).await
                    }
                    Change::DropCopy { id } => drop_copy(client, names, tx, id).await,
                };
                let _ = request.done.send(result);
            }
            event = watcher.changed() => {
                if event.event_type == zk::EventType::Session {
                    if event.session_state.is_terminated() {
                        // `changed()` panics once called after a terminal state: leave now.
                        return;
                    }
                    if event.session_state == zk::SessionState::SyncConnected {
                        resync(client, names, tx).await;
                    }
                } else {
                    refresh_path(client, names, tx, &event.path).await;
                }
            }
        }
    }
}

async fn resync(client: &zk::Client, names: &Names, tx: &watch::Sender<ClusterView>) {
    match read_all(client, names).await {
        Ok(view) => {
            tx.send_if_modified(|current| {
                let changed = *current != view;
                *current = view;
                changed
            });
        }
        Err(e) => tracing::warn!("re-reading the cluster from ZooKeeper: {e:#}"),
    }
}

/// Re-reads the one znode an event names. An error falls back on a full re-read at the next resync.
async fn refresh_path(
    client: &zk::Client,
    names: &Names,
    tx: &watch::Sender<ClusterView>,
    path: &str,
) {
    let result: anyhow::Result<()> = async {
        if path == names.zk_master() {
            let master = read_json(client, path).await?;
            tx.send_if_modified(|v| replace(&mut v.master, master));
        } else if path == names.zk_in_sync() {
            let in_sync = read_json(client, path).await?;
            tx.send_if_modified(|v| replace(&mut v.in_sync, in_sync));
        } else if let Some(id) = child_of(&names.zk_workers(), path) {
            let record: Option<WorkerRecord> = read_json(client, path).await?;
            tx.send_if_modified(|v| match record {
                Some(r) => v.workers.insert(id.to_owned(), r.clone()) != Some(r),
                None => v.workers.remove(id).is_some(),
            });
        } else if let Some(id) = child_of(&names.zk_copies(), path) {
            let record: Option<CopyRecord> = read_json(client, path).await?;
            tx.send_if_modified(|v| match record {
                Some(r) => v.copies.insert(id.to_owned(), r.clone()) != Some(r),
                None => v.copies.remove(id).is_some(),
            });
        } else if path == names.zk_election()
            || path.starts_with(&format!("{}/", names.zk_election()))
        {
            let candidates = read_candidates(client, names).await?;
            tx.send_if_modified(|v| replace(&mut v.candidates, candidates));
        } else if path == names.zk_root() || path == names.zk_workers() || path == names.zk_copies()
        {
            // The tree itself was created or deleted (a test tearing down its namespace): read it all.
            let view = read_all(client, names).await?;
            tx.send_if_modified(|v| replace(v, view));
        }
        // Anything else under the root (the epoch, the workers' own bookkeeping) does not change the view.
        Ok(())
    }
    .await;
    if let Err(e) = result {
        tracing::warn!("re-reading {path} from ZooKeeper: {e:#}");
    }
}

/// `Some(id)` when `path` is a direct child of `parent` (a worker's registration znode, a copy's record).
fn child_of<'a>(parent: &str, path: &'a str) -> Option<&'a str> {
    let id = path.strip_prefix(parent)?.strip_prefix('/')?;
    (!id.is_empty() && !id.contains('/')).then_some(id)
}

fn replace<T: PartialEq>(slot: &mut T, value: T) -> bool {
    let changed = *slot != value;
    *slot = value;
    changed
}

async fn read_all(client: &zk::Client, names: &Names) -> anyhow::Result<ClusterView> {
    let master = read_json(client, &names.zk_master()).await?;
    let in_sync = read_json(client, &names.zk_in_sync()).await?;
    let workers = read_children(client, &names.zk_workers()).await?;
    let copies = read_children(client, &names.zk_copies()).await?;
    Ok(ClusterView {
        master,
        in_sync,
        workers,
        candidates: read_candidates(client, names).await?,
        copies,
    })
}

/// The JSON of every child of `parent`, by name; none when `parent` does not exist. A child that vanished
/// between the listing and its read (a worker gone) is simply not there any more.
async fn read_children<T: DeserializeOwned>(
    client: &zk::Client,
    parent: &str,
) -> anyhow::Result<BTreeMap<String, T>> {
    let names = match client.list_children(parent).await {
        Ok(names) => names,
        Err(zk::Error::NoNode) => Vec::new(),
        Err(e) => return Err(e).with_context(|| format!("listing {parent}")),
    };
    let mut children = BTreeMap::new();
    for name in names {
        if let Some(value) = read_json(client, &format!("{parent}/{name}")).await? {
            children.insert(name, value);
        }
    }
    Ok(children)
}

/// The ids of the election candidates: their znodes are named `<pid, 10 digits>-<id>`.
async fn read_candidates(client: &zk::Client, names: &Names) -> anyhow::Result<BTreeSet<String>> {
    let nodes = match client.list_children(&names.zk_election()).await {
        Ok(nodes) => nodes,
        Err(zk::Error::NoNode) => Vec::new(),
        Err(e) => return Err(e).context("listing election candidates"),
    };
    Ok(nodes.iter().filter_map(|n| candidate_id(n)).collect())
}

fn candidate_id(node: &str) -> Option<String> {
    let (pid, id) = node.split_once('-')?;
    (pid.len() == 10 && pid.bytes().all(|b| b.is_ascii_digit()) && !id.is_empty())
        .then(|| id.to_owned())
}

/// The JSON in a znode; `None` when the znode does not exist, or holds something unreadable (logged: a worker
/// writing a format this orchestrator does not know must not take the API down).
async fn read_json<T: DeserializeOwned>(
    client: &zk::Client,
    path: &str,
) -> anyhow::Result<Option<T>> {
    match client.get_data(path).await {
        Ok((data, _stat)) => match serde_json::from_slice(&data) {
            Ok(value) => Ok(Some(value)),
            Err(e) => {
                tracing::warn!("ignoring unreadable znode {path}: {e}");
                Ok(None)
            }
        },
        Err(zk::Error::NoNode) => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {path}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker(id: &str, pid: u32, role: Role, applied_seq: u64) -> WorkerRecord {
        WorkerRecord {
            id: id.into(),
            pid,
            role,
            epoch: 1,
            applied_seq,
        }
    }

    fn view() -> ClusterView {
        let mut workers = BTreeMap::new();
        workers.insert("m".into(), worker("m", 30, Role::Master, 7));
        workers.insert("a".into(), worker("a", 20, Role::Slave, 7));
        workers.insert("b".into(), worker("b", 10, Role::Slave, 3));
        ClusterView {
            master: Some(MasterRecord {
                id: "m".into(),
                pid: 30,
                epoch: 1,
            }),
            in_sync: Some(InSyncSet {
                epoch: 1,
                master: "m".into(),
                members: vec!["a".into()],
            }),
            workers,
            candidates: BTreeSet::new(),
            copies: BTreeMap::new(),
        }
    }

    #[test]
    fn candidate_nodes_name_the_worker_after_its_pid() {
        let names = Names::new("ns");
        let node = names.zk_candidate(42, "w-1a2b");
        let node = node.rsplit('/').next().unwrap();
        assert_eq!(candidate_id(node).as_deref(), Some("w-1a2b"));
        assert_eq!(candidate_id("42-w-1"), None);
        assert_eq!(candidate_id("0000000042-"), None);
        assert_eq!(candidate_id("nonsense"), None);
    }

    #[test]
    fn worker_rows_are_sorted_by_pid_and_flag_the_in_sync_ones() {
        let rows = view().worker_infos();
        let summary: Vec<(u32, Role, bool, u64)> = rows
            .iter()
            .map(|w| (w.pid, w.role, w.in_sync, w.applied_seq))
            .collect();
        assert_eq!(
            summary,
            vec![
                (10, Role::Slave, false, 3),
                (20, Role::Slave, true, 7),
                (30, Role::Master, true, 7)
            ]
        );
        assert_eq!(view().pids(), vec![10, 20, 30]);
        assert!(view().is_healthy());
    }

    #[test]
    fn a_workers_lag_is_how_far_the_masters_record_is_ahead_of_its_own() {
        let v = view();
        assert_eq!(v.lag_of(&v.workers["b"]), Some(4));
        assert_eq!(v.lag_of(&v.workers["a"]), Some(0));
        assert_eq!(v.lag_of(&v.workers["m"]), Some(0));
        let mut headless = view();
        headless.master = None;
        assert_eq!(headless.lag_of(&headless.workers["b"]), None);
    }

    #[test]
    fn an_in_sync_set_left_by_a_previous_master_counts_for_nothing() {
        let mut v = view();
        v.master = Some(MasterRecord {
            id: "a".into(),
            pid: 20,
            epoch: 2,
        });
        assert!(v.in_sync_members().is_empty());
        assert!(!v.is_healthy());
        // The new master's own record still says slave; the master znode wins.
        let roles: Vec<Role> = v.worker_infos().iter().map(|w| w.role).collect();
        assert_eq!(roles, vec![Role::Slave, Role::Master, Role::Slave]);
    }

    #[test]
    fn without_a_master_nothing_is_in_sync_and_records_give_the_roles() {
        let mut v = view();
        v.master = None;
        assert!(!v.is_healthy());
        let rows = v.worker_infos();
        assert_eq!(rows[2].role, Role::Master);
        assert!(rows[2].in_sync);
        assert!(!rows[1].in_sync);
    }

    #[test]
    fn only_direct_children_of_the_workers_znode_are_workers() {
        let workers = Names::new("ns").zk_workers();
        assert_eq!(child_of(&workers, "/ns/workers/w-1"), Some("w-1"));
        assert_eq!(child_of(&workers, "/ns/workers"), None);
        assert_eq!(child_of(&workers, "/ns/workers/"), None);
        assert_eq!(child_of(&workers, "/ns/workers/a/b"), None);
        assert_eq!(child_of(&workers, "/ns/workersX/a"), None);
        assert_eq!(child_of(&workers, "/ns/master"), None);
        let copies = Names::new("ns").zk_copies();
        assert_eq!(child_of(&copies, "/ns/copies/w-1"), Some("w-1"));
        assert_eq!(child_of(&copies, "/ns/workers/w-1"), None);
    }
}
