//! The SQLite side of a worker: running writes on the master and turning them into log entries, applying log
//! entries on a slave, snapshots, and reads.
//!
//! Everything here is synchronous and free of networking, so the replication logic is tested with plain files.
//!
//! Two internal tables live beside the users' tables and are invisible to their SQL:
//! - `_rideshare_meta`: the epoch and sequence number of the last log entry this database contains, updated in the
//!   same transaction as the entry itself, so "applied" and "recorded as applied" can never disagree.
//! - `_rideshare_idempotency`: the response to every applied write, by idempotency key. It is replicated like
//!   any other table, so a retry that reaches a new master after a failover is still answered from it.

mod authorizer;
mod reads;
mod sql;
mod writes;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context};
use protocol::queue::{LogEntry, Payload, Snapshot};
use protocol::{Statement, WriteResponse};
use rusqlite::hooks::AuthContext;
use rusqlite::session::ConflictAction;
use rusqlite::{params, Connection};

pub use protocol::disk::META_TABLE;
use protocol::disk::{META_EPOCH, META_SEQ};
pub use reads::{applied_seq, dump, open_reader, read};

use authorizer::{authorize, AuthLog};
use sql::run_statement;
use writes::{
    find_response, job_statements, record_response, run_as_statements, run_user_statements,
    set_sequences, Group,
};
pub const IDEMPOTENCY_TABLE: &str = "_rideshare_idempotency";
/// How many log entries' worth of idempotency keys are kept. A client retries within seconds; a day of heavy
/// load stays well under this, and the table stays small enough to snapshot quickly.
const IDEMPOTENCY_WINDOW_SEQS: u64 = 100_000;
/// Pruning the idempotency table costs a range delete; doing it every this many entries keeps it off most writes.
const IDEMPOTENCY_PRUNE_EVERY: u64 = 1_000;

/// One write taken from `writeQ`.
#[derive(Debug, Clone)]
pub enum Job {
    Write {
        key: String,
        statements: Vec<Statement>,
    },
    Clear {
        key: String,
    },
}

impl Job {
    fn key(&self) -> &str {
        match self {
            Job::Write { key, .. } | Job::Clear { key } => key,
        }
    }
}

/// What became of one job of a batch.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Applied now, in the log entry `response.seq`.
    Applied(WriteResponse),
    /// The key was seen before; this is the first answer, whose entry is `response.seq`.
    Duplicate(WriteResponse),
    /// SQLite refused it; nothing of it was applied.
    Rejected(String),
}

/// The result of a batch: one outcome per job, and the log entries to replicate, in order.
#[derive(Debug, Default)]
pub struct BatchResult {
    pub outcomes: Vec<Outcome>,
    pub entries: Vec<LogEntry>,
}

/// What applying a log entry on a slave did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Applied; the database is now at the entry's seq.
    Applied,
    /// The entry is at or below the applied seq (a redelivery): nothing to do.
    AlreadyApplied,
    /// The entry is ahead of the next expected one: entries were missed and the slave must resync.
    Gap { expected: u64 },
}

fn configure(conn: &Connection) -> anyhow::Result<()> {
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    // WAL lets the slaves' read connections read while the applier writes; synchronous=NORMAL syncs at
    // checkpoints only, which survives a process crash (kill -9) but not a power cut of the host: across hosts,
    // the in-sync slaves are the redundancy.
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.execute_batch(&format!(
        "CREATE TABLE IF NOT EXISTS {META_TABLE} (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
         INSERT OR IGNORE INTO {META_TABLE} VALUES ('{META_EPOCH}', 0), ('{META_SEQ}', 0);
         CREATE TABLE IF NOT EXISTS {IDEMPOTENCY_TABLE} (
             key TEXT PRIMARY KEY, seq INTEGER NOT NULL, response TEXT NOT NULL);"
    ))?;
    Ok(())
}

/// A worker's database, opened for writing: by the master to run writes, by a slave to apply log entries.
pub struct Db {
    conn: Connection,
    path: PathBuf,
    auth: Arc<Mutex<AuthLog>>,
    /// Whether each table has a declared primary key; the session extension records changes only for those.
    /// Cleared whenever the schema changes.
    has_pk: HashMap<String, bool>,
    epoch: u64,
    seq: u64,
}

impl Db {
    /// Opens (creating when needed) the database at `path` for the master: foreign keys enforced, users' SQL
    /// checked by the authorizer.
    pub fn open_master(path: &Path) -> anyhow::Result<Db> {
        let mut db = Self::open(path)?;
        db.conn.pragma_update(None, "foreign_keys", true)?;
        let auth = db.auth.clone();
        db.conn
            .authorizer(Some(move |ctx: AuthContext<'_>| authorize(&auth, ctx)))?;
        Ok(db)
    }

    /// Opens the database at `path` for a slave: changesets carry the master's cascades and trigger effects
    /// already, so foreign-key actions and triggers are off except while statements are re-executed.
    pub fn open_replica(path: &Path) -> anyhow::Result<Db> {
        let db = Self::open(path)?;
        db.set_replay_mode(false)?;
        Ok(db)
    }

    fn open(path: &Path) -> anyhow::Result<Db> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let conn = Connection::open(path).with_context(|| format!("opening {}", path.display()))?;
        configure(&conn)?;
        let (epoch, seq) = read_position(&conn)?;
        Ok(Db {
            conn,
            path: path.to_owned(),
            auth: Arc::default(),
            has_pk: HashMap::new(),
            epoch,
            seq,
        })
    }

    fn set_replay_mode(&self, statements: bool) -> anyhow::Result<()> {
        self.conn.pragma_update(None, "foreign_keys", statements)?;
        self.conn.set_db_config(
            rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_TRIGGER,
            statements,
        )?;
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The (epoch, seq) of the last log entry this database contains.
    pub fn position(&self) -> (u64, u64) {
        (self.epoch, self.seq)
    }

    /// Runs a batch of jobs as few transactions as possible (group commit) and returns their outcomes and the
    /// log entries that carry them, numbered from the current seq + 1 under `epoch`.
    ///
    /// Writes go into one transaction, each in its own savepoint so that a failing write leaves no trace and
    /// does not disturb its neighbours; the transaction becomes one changeset entry. A write that changes the
    /// schema, or writes a table without a primary key (which changesets cannot carry), is rolled back out of
    /// the group and run alone as a statement entry.
    pub fn execute_batch(&mut self, epoch: u64, jobs: &[Job]) -> anyhow::Result<BatchResult> {
        let Db {
            conn,
            auth,
            has_pk,
            epoch: db_epoch,
            seq: db_seq,
            ..
        } = self;
        let mut out = BatchResult::default();
        let mut group = Group::begin(conn)?;
        for job in jobs {
            let seq = *db_seq + 1;
            if let Some(first) = find_response(conn, job.key())? {
                out.outcomes.push(Outcome::Duplicate(first));
                continue;
            }
            let statements = match job_statements(conn, job) {
                Ok(s) => s,
                Err(e) => {
                    out.outcomes.push(Outcome::Rejected(e));
                    continue;
                }
            };
            conn.execute_batch("SAVEPOINT job")?;
            match run_user_statements(conn, auth, has_pk, &statements) {
                Err(e) => {
                    conn.execute_batch("ROLLBACK TO job; RELEASE job")?;
                    out.outcomes.push(Outcome::Rejected(e));
                }
                Ok((results, false)) => {
                    let response = WriteResponse { results, seq };
                    record_response(conn, job.key(), &response)?;
                    conn.execute_batch("RELEASE job")?;
                    group.changed = true;
                    out.outcomes.push(Outcome::Applied(response));
                }
                Ok((_, true)) => {
                    // Needs a statement entry of its own: undo it here, close the group, and run it alone.
                    conn.execute_batch("ROLLBACK TO job; RELEASE job")?;
                    if let Some(entry) = group.finish(conn, epoch, seq)? {
                        (*db_epoch, *db_seq) = (entry.epoch, entry.seq);
                        out.entries.push(entry);
                    }
                    let seq = *db_seq + 1;
                    let (outcome, entry) =
                        run_as_statements(conn, auth, has_pk, epoch, seq, job.key(), &statements)?;
                    if let Some(entry) = entry {
                        (*db_epoch, *db_seq) = (entry.epoch, entry.seq);
                        out.entries.push(entry);
                    }
                    out.outcomes.push(outcome);
                    group = Group::begin(conn)?;
                }
            }
        }
        if let Some(entry) = group.finish(conn, epoch, *db_seq + 1)? {
            (*db_epoch, *db_seq) = (entry.epoch, entry.seq);
            out.entries.push(entry);
        }
        Ok(out)
    }

    /// Applies one log entry, and records its position, in one transaction.
    pub fn apply(&mut self, entry: &LogEntry) -> anyhow::Result<Applied> {
        if entry.seq <= self.seq {
            return Ok(Applied::AlreadyApplied);
        }
        if entry.seq != self.seq + 1 {
            return Ok(Applied::Gap {
                expected: self.seq + 1,
            });
        }
        match &entry.payload {
            Payload::Changeset { bytes, sequences } => {
                self.conn.execute_batch("BEGIN IMMEDIATE")?;
                let applied = self
                    .conn
                    .apply_strm(
                        &mut &bytes[..],
                        None::<fn(&str) -> bool>,
                        // Any conflict means this copy is not the master's: stop and let the caller resync.
                        |_, _| ConflictAction::SQLITE_CHANGESET_ABORT,
                    )
                    .map_err(anyhow::Error::from)
                    .and_then(|()| set_sequences(&self.conn, sequences));
                if let Err(e) = applied {
                    self.conn.execute_batch("ROLLBACK")?;
                    bail!("changeset of entry {} does not apply: {e}", entry.seq);
                }
            }
            Payload::Statements { statements } => {
                self.set_replay_mode(true)?;
                self.conn.execute_batch("BEGIN IMMEDIATE")?;
                for st in statements {
                    if let Err(e) = run_statement(&self.conn, st) {
                        self.conn.execute_batch("ROLLBACK")?;
                        self.set_replay_mode(false)?;
                        bail!("statement of entry {} failed on replay: {e}", entry.seq);
                    }
                }
            }
        }
        set_position(&self.conn, entry.epoch, entry.seq)?;
        self.conn.execute_batch("COMMIT")?;
        if matches!(entry.payload, Payload::Statements { .. }) {
            self.set_replay_mode(false)?;
        }
        self.epoch = entry.epoch;
        self.seq = entry.seq;
        Ok(Applied::Applied)
    }

    /// A consistent copy of the whole database, with the position it is at.
    pub fn snapshot(&mut self) -> anyhow::Result<Snapshot> {
        let data = self.conn.serialize(rusqlite::MAIN_DB)?;
        Ok(Snapshot {
            epoch: self.epoch,
            seq: self.seq,
            database: data.to_vec(),
        })
    }

    /// Replaces the database at `path` with a snapshot and opens it as a replica.
    pub fn install_snapshot(path: &Path, snapshot: &Snapshot) -> anyhow::Result<Db> {
        let dir = path.parent().context("database path has no folder")?;
        std::fs::create_dir_all(dir)?;
        let tmp = path.with_extension("snapshot");
        std::fs::write(&tmp, &snapshot.database).context("writing snapshot")?;
        std::fs::File::open(&tmp)?.sync_all()?;
        for ext in ["sqlite-wal", "sqlite-shm"] {
            let _ = std::fs::remove_file(path.with_extension(ext));
        }
        std::fs::rename(&tmp, path).context("installing snapshot")?;
        let db = Db::open_replica(path)?;
        if db.position().1 != snapshot.seq {
            bail!(
                "snapshot says seq {} but its database is at {:?}",
                snapshot.seq,
                db.position()
            );
        }
        Ok(db)
    }

    /// Every row of every table (internal ones and `sqlite_sequence` included), in a stable order: two databases
    /// with the same dump hold the same data.
    pub fn dump(&self) -> anyhow::Result<String> {
        dump(&self.conn)
    }
}

pub(crate) fn read_position(conn: &Connection) -> anyhow::Result<(u64, u64)> {
    let get = |k: &str| -> anyhow::Result<u64> {
        let v: i64 = conn.query_row(
            &format!("SELECT value FROM {META_TABLE} WHERE key = ?1"),
            [k],
            |r| r.get(0),
        )?;
        Ok(v as u64)
    };
    Ok((get(META_EPOCH)?, get(META_SEQ)?))
}

pub(crate) fn set_position(conn: &Connection, epoch: u64, seq: u64) -> anyhow::Result<()> {
    conn.execute(
        &format!(
            "UPDATE {META_TABLE} SET value = CASE key WHEN '{META_EPOCH}' THEN ?1 ELSE ?2 END"
        ),
        params![epoch as i64, seq as i64],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests;
