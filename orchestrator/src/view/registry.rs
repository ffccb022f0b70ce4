//! Changes to ZooKeeper on the orchestrator's behalf, made by the view task (the only owner of the session) and
//! shown in the view before they are answered: removing a dead worker's znodes, keeping the registry of copies.

use anyhow::Context;
use protocol::coord::{CopyRecord, MasterRecord, WorkerRecord};
use protocol::Names;
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, oneshot, watch};
use zookeeper_client as zk;

use super::ClusterView;

/// Changes to ZooKeeper, asked of the view task (which owns the session). Cheap to clone.
#[derive(Clone)]
pub struct Registry {
    pub(super) requests: mpsc::Sender<Request>,
}

/// A change asked of the view task, answered on `done` once made and shown in the view.
pub(super) struct Request {
    pub(super) change: Change,
    pub(super) done: oneshot::Sender<anyhow::Result<()>>,
}

pub(super) enum Change {
    /// Remove the znodes of a dead worker.
    Forget { id: String, pid: u32 },
    /// Write a copy's record.
    RecordCopy { id: String, record: CopyRecord },
    /// Remove a copy's record.
    DropCopy { id: String },
}

impl Registry {
    /// Removes what ZooKeeper holds for a worker whose process is known to be dead: its registration, its
    /// election candidacy, and the master znode if it held it. Safe only because the process is dead: a live
    /// worker would act on a role it no longer visibly holds. Removing the master znode at once starts the
    /// election now rather than a session timeout later. Each znode is removed only if it is still that
    /// process's (a worker restarted under the same id has another pid), and the view is updated before this
    /// returns.
    pub async fn forget(&self, id: &str, pid: u32) -> anyhow::Result<()> {
        self.ask(Change::Forget {
            id: id.to_owned(),
            pid,
        })
        .await
    }

    /// Records (or rewrites) copy `id` in the registry of copies: it lives on `record.host`. Made before the
    /// first worker on a new id starts, so that no copy exists that the registry does not know of.
    pub async fn record_copy(&self, id: &str, record: CopyRecord) -> anyhow::Result<()> {
        self.ask(Change::RecordCopy {
            id: id.to_owned(),
            record,
        })
        .await
    }

    /// Removes copy `id` from the registry of copies (done when it is not there): only once the copy itself
    /// is gone, or no longer needed.
    pub async fn drop_copy(&self, id: &str) -> anyhow::Result<()> {
        self.ask(Change::DropCopy { id: id.to_owned() }).await
    }

    async fn ask(&self, change: Change) -> anyhow::Result<()> {
        let (done, answer) = oneshot::channel();
        self.requests
            .send(Request { change, done })
            .await
            .map_err(|_| anyhow::anyhow!("the ZooKeeper task has stopped"))?;
        answer
            .await
            .map_err(|_| anyhow::anyhow!("the ZooKeeper task has stopped"))?
    }
}

/// Removes a dead worker's znodes (see [`Registry::forget`]).
pub(super) async fn forget(
    client: &zk::Client,
    names: &Names,
    tx: &watch::Sender<ClusterView>,
    id: &str,
    pid: u32,
) -> anyhow::Result<()> {
    let worker = names.zk_worker(id);
    let registered = get_versioned::<WorkerRecord>(client, &worker).await?;
    if let Some((record, version)) = registered {
        // An unreadable record is taken as the dead worker's: nothing else writes under its id.
        if record.is_none_or(|r| r.pid == pid) {
            delete_versioned(client, &worker, Some(version)).await?;
        }
    }
    delete_versioned(client, &names.zk_candidate(pid, id), None).await?;
    let master = names.zk_master();
    if let Some((Some(record), version)) = get_versioned::<MasterRecord>(client, &master).await? {
        if record.id == id && record.pid == pid {
            delete_versioned(client, &master, Some(version)).await?;
        }
    }
    tx.send_if_modified(|v| {
        let mut changed = false;
        if v.workers.get(id).is_some_and(|w| w.pid == pid) {
            v.workers.remove(id);
            changed = true;
        }
        if v.master
            .as_ref()
            .is_some_and(|m| m.id == id && m.pid == pid)
        {
            v.master = None;
            changed = true;
        }
        changed |= v.candidates.remove(id);
        changed
    });
    tracing::info!(worker = %id, pid, "removed the dead worker's znodes");
    Ok(())
}

/// A znode's JSON (None when unreadable) and version; None when the znode does not exist.
async fn get_versioned<T: DeserializeOwned>(
    client: &zk::Client,
    path: &str,
) -> anyhow::Result<Option<(Option<T>, i32)>> {
    match client.get_data(path).await {
        Ok((data, stat)) => Ok(Some((serde_json::from_slice(&data).ok(), stat.version))),
        Err(zk::Error::NoNode) => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {path}")),
    }
}

/// Deletes a znode if it is still at `version`; one already gone, or changed since, is left alone.
async fn delete_versioned(
    client: &zk::Client,
    path: &str,
    version: Option<i32>,
) -> anyhow::Result<()> {
    match client.delete(path, version).await {
        Ok(()) | Err(zk::Error::NoNode) | Err(zk::Error::BadVersion) => Ok(()),
        Err(e) => Err(e).with_context(|| format!("deleting {path}")),
    }
}

/// Writes a copy's record: creates its znode, or rewrites it when it exists (see [`Registry::record_copy`]).
pub(super) async fn record_copy(
    client: &zk::Client,
    names: &Names,
    tx: &watch::Sender<ClusterView>,
    id: &str,
    record: &CopyRecord,
) -> anyhow::Result<()> {
    let path = names.zk_copy(id);
    let data = serde_json::to_vec(record).context("encoding a copy's record")?;
    let options = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
    match client.create(&path, &data, &options).await {
        Ok(_) => {}
        Err(zk::Error::NodeExists) => {
            client
                .set_data(&path, &data, None)
                .await
                .with_context(|| format!("writing {path}"))?;
        }
        Err(e) => return Err(e).with_context(|| format!("creating {path}")),
    }
    tx.send_if_modified(|v| {
        v.copies.insert(id.to_owned(), record.clone()).as_ref() != Some(record)
    });
    Ok(())
}

/// Removes a copy's record (see [`Registry::drop_copy`]).
pub(super) async fn drop_copy(
    client: &zk::Client,
    names: &Names,
    tx: &watch::Sender<ClusterView>,
    id: &str,
) -> anyhow::Result<()> {
    delete_versioned(client, &names.zk_copy(id), None).await?;
    tx.send_if_modified(|v| v.copies.remove(id).is_some());
    Ok(())
}
