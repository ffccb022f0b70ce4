//! What a worker's folder holds. Only the worker reads it: the orchestrator learns how far a copy got from the
//! position its worker reports in ZooKeeper (`coord::WorkerRecord`), since the folder may be on another host.

/// The database file in a worker's folder.
pub const DB_FILE: &str = "db.sqlite";

/// The worker's bookkeeping table: rows `(key TEXT PRIMARY KEY, value INTEGER)`, written in the same transaction
/// as each log entry it records.
pub const META_TABLE: &str = "_rideshare_meta";
/// The row of [`META_TABLE`] holding the epoch of the last log entry in the copy.
pub const META_EPOCH: &str = "epoch";
/// The row of [`META_TABLE`] holding the seq of the last log entry in the copy.
pub const META_SEQ: &str = "seq";
