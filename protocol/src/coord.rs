//! What the workers keep in ZooKeeper, as JSON.

use serde::{Deserialize, Serialize};

use crate::http::Role;

/// Data of a worker's ephemeral znode `/<ns>/workers/<id>`. The znode's existence says the worker's ZooKeeper
/// session is alive; `applied_seq` is refreshed periodically, not on every write (it is for humans and for
/// choosing the most up-to-date worker, not for correctness of the write path).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerRecord {
    pub id: String,
    pub pid: u32,
    pub role: Role,
    pub epoch: u64,
    pub applied_seq: u64,
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
