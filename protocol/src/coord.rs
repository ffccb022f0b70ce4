//! What the workers and the orchestrator keep in ZooKeeper, as JSON.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::http::Role;

/// Data of a worker's ephemeral znode `/<ns>/workers/<id>`. The znode's existence says the worker's ZooKeeper
/// session is alive.
///
/// `(epoch, applied_seq)` is how far the worker's copy of the database got: the orchestrator learns it from
/// here, never from the worker's disk (which may be on another host). A slave registers with the position of
/// the copy on its disk as it starts, and keeps reporting that until a snapshot replaces the copy; from then
/// on, and for a master, it is the position of the database the worker holds open. It is refreshed every
/// [`RECORD_REFRESH`], not on every write: it is for humans and for restoring a master after the whole cluster
/// stopped, not for the write path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerRecord {
    pub id: String,
    pub pid: u32,
    pub role: Role,
    pub epoch: u64,
    pub applied_seq: u64,
}

/// How often a slave rewrites its [`WorkerRecord`] (and at once when a snapshot replaced its copy). A record
/// read more than this after the slave last applied anything shows where its copy stands.
pub const RECORD_REFRESH: Duration = Duration::from_secs(1);

/// Data of `/<ns>/copies/<id>` (persistent): a copy of the database that the orchestrator started a worker on,
/// and where it lives. Written before the first worker on a new id starts, removed once the copy is no longer
/// needed (its folder removed by the runtime). After the whole system stopped, this registry is how a new
/// orchestrator finds the copies; each copy's worker is restarted on the host that holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyRecord {
    /// The host (as the worker runtime names it) whose disk holds the copy.
    pub host: String,
}

/// Data of `/<ns>/master` (ephemeral): who the master is and under which epoch it acts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MasterRecord {
    pub id: String,
    pub pid: u32,
    pub epoch: u64,
}

/// Data of `/<ns>/insync` (persistent): the slaves the master waits for on every write. Written by the master
/// with a versioned set, so a deposed master cannot overwrite its successor's set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InSyncSet {
    pub epoch: u64,
    pub master: String,
    pub members: Vec<String>,
}
