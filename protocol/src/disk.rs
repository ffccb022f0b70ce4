//! What a worker's folder holds, as far as another process reads it: the orchestrator opens each copy of the
//! database (read-only) to find how far it got when it restarts a stopped cluster.

/// The database file in a worker's folder.
pub const DB_FILE: &str = "db.sqlite";

/// The worker's bookkeeping table: rows `(key TEXT PRIMARY KEY, value INTEGER)`, written in the same transaction
/// as each log entry it records.
pub const META_TABLE: &str = "_rideshare_meta";
/// The row of [`META_TABLE`] holding the epoch of the last log entry in the copy.
pub const META_EPOCH: &str = "epoch";
/// The row of [`META_TABLE`] holding the seq of the last log entry in the copy.
pub const META_SEQ: &str = "seq";
