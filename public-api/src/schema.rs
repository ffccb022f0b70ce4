//! The one schema both services share, created by whichever starts first, idempotently, in one `db/write`.
//!
//! - `users`: `id` gives creation order; `username` is UNIQUE (case-sensitive, SQLite's BINARY collation), so
//!   of concurrent registrations of one name exactly one commits.
//! - `rides`: AUTOINCREMENT, so a ride id is never reused after a delete; `timestamp` in unix seconds (UTC),
//!   which sort in time order; the creator's rides go when the creator does (ON DELETE CASCADE).
//! - `ride_members`: one row per joined user, primary key `(ride_id, username)`, so a user joins a ride at
//!   most once however many requests race. `position` records the join order explicitly: replication copies
//!   rows by primary key, so a rowid is not guaranteed to be the same on every worker.

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use protocol::Statement;

use crate::db::{Db, DbError};

pub const STATEMENTS: [&str; 6] = [
    "CREATE TABLE IF NOT EXISTS users (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        username TEXT NOT NULL UNIQUE,
        password TEXT NOT NULL
    )",
    "CREATE TABLE IF NOT EXISTS rides (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        created_by TEXT NOT NULL REFERENCES users (username) ON DELETE CASCADE,
        timestamp INTEGER NOT NULL,
        source INTEGER NOT NULL,
        destination INTEGER NOT NULL,
        CHECK (source <> destination)
    )",
    "CREATE INDEX IF NOT EXISTS rides_by_route ON rides (source, destination, timestamp)",
    "CREATE INDEX IF NOT EXISTS rides_by_creator ON rides (created_by)",
    "CREATE TABLE IF NOT EXISTS ride_members (
        ride_id INTEGER NOT NULL REFERENCES rides (id) ON DELETE CASCADE,
        username TEXT NOT NULL REFERENCES users (username) ON DELETE CASCADE,
        position INTEGER NOT NULL,
        PRIMARY KEY (ride_id, username)
    )",
    "CREATE INDEX IF NOT EXISTS ride_members_by_user ON ride_members (username)",
];

/// Creates the schema if it is not there.
pub async fn create(db: &Db) -> Result<(), DbError> {
    let statements = STATEMENTS
        .iter()
        .map(|sql| Statement::new(*sql, vec![]))
        .collect();
    db.write(statements).await.map(|_| ())
}

/// The pauses between attempts to create the schema at start: 100 ms, doubling up to 2 s, without end. Each
/// attempt is a whole database request (its own retries included); a service without its schema cannot serve,
/// so it waits for the orchestrator as long as it takes, and says so in its log.
const START_PAUSES: ExponentialBuilder = ExponentialBuilder::new()
    .with_min_delay(Duration::from_millis(100))
    .with_max_delay(Duration::from_secs(2))
    .without_max_times();

/// [`create`], retried until it succeeds: at start the orchestrator may not be up yet. Only a refusal (the
/// statements themselves are wrong) ends it with an error.
pub async fn create_when_possible(db: &Db) -> Result<(), DbError> {
    (|| create(db))
        .retry(START_PAUSES)
        .when(|e| matches!(e, DbError::Unavailable(_)))
        .notify(|e, pause| tracing::warn!("creating the schema, retrying in {pause:?}: {e:#}"))
        .await
}
