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

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context};
use protocol::queue::{LogEntry, Payload, Snapshot};
use protocol::{ReadRequest, ReadResponse, Statement, StatementResult, Value, WriteResponse};
use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
use rusqlite::session::{ConflictAction, Session};
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, ToSql};

pub use protocol::disk::META_TABLE;
use protocol::disk::{META_EPOCH, META_SEQ};
pub const IDEMPOTENCY_TABLE: &str = "_rideshare_idempotency";
const INTERNAL_PREFIX: &str = "_rideshare_";
const INTROSPECTION_PRAGMAS: [&str; 6] = [
    "table_info",
    "table_xinfo",
    "index_list",
    "index_info",
    "index_xinfo",
    "foreign_key_list",
];

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

/// What the authorizer saw while a user statement was prepared.
#[derive(Debug, Default)]
struct AuthLog {
    /// Set while users' SQL is prepared; our own statements are not checked.
    user_sql: bool,
    /// The statement changes the schema: replicate it as a statement, not as a changeset.
    schema_change: bool,
    /// Tables the statement inserts into, updates or deletes from.
    written_tables: Vec<String>,
    /// Why the statement was refused, when it was.
    denied: Option<String>,
}

fn authorize(log: &Mutex<AuthLog>, ctx: AuthContext<'_>) -> Authorization {
    // No await and no panic can happen under this lock: plain data only.
    let mut log = log.lock().expect("auth log poisoned");
    if !log.user_sql {
        return Authorization::Allow;
    }
    let mut deny = |why: String| {
        log.denied.get_or_insert(why);
        Authorization::Deny
    };
    let internal = |t: &str| t.starts_with(INTERNAL_PREFIX);
    match ctx.action {
        // The session extension itself reads table_xinfo when a table first changes; the introspection pragmas
        // change nothing, every other one could change this connection or the file behind the log's back.
        AuthAction::Pragma { pragma_name, .. } if INTROSPECTION_PRAGMAS.contains(&pragma_name) => {
            Authorization::Allow
        }
        AuthAction::Pragma { pragma_name, .. } => {
            deny(format!("pragma {pragma_name} is not allowed"))
        }
        AuthAction::Attach { .. } | AuthAction::Detach { .. } => {
            deny("attach and detach are not allowed".into())
        }
        AuthAction::Transaction { .. } | AuthAction::Savepoint { .. } => deny(
            "transactions are managed by the database service: send the statements in one write"
                .into(),
        ),
        AuthAction::CreateTempTable { .. }
        | AuthAction::CreateTempIndex { .. }
        | AuthAction::CreateTempTrigger { .. }
        | AuthAction::CreateTempView { .. }
        | AuthAction::DropTempTable { .. }
        | AuthAction::DropTempIndex { .. }
        | AuthAction::DropTempTrigger { .. }
        | AuthAction::DropTempView { .. } => deny("temporary objects are not allowed".into()),
        AuthAction::CreateVtable { .. } | AuthAction::DropVtable { .. } => {
            deny("virtual tables are not allowed".into())
        }
        AuthAction::Insert { table_name }
        | AuthAction::Delete { table_name }
        | AuthAction::Update { table_name, .. } => {
            if internal(table_name) {
                return deny(format!("table {table_name} is internal"));
            }
            // SQLite's own tables change as a side effect (the schema with DDL, sqlite_sequence with
            // AUTOINCREMENT); a replica's own statements or row changes make the same side effects.
            let bookkeeping = table_name.starts_with("sqlite_");
            if !bookkeeping && !log.written_tables.iter().any(|t| t == table_name) {
                log.written_tables.push(table_name.to_owned());
            }
            Authorization::Allow
        }
        AuthAction::CreateTable { table_name }
        | AuthAction::DropTable { table_name }
        | AuthAction::CreateIndex { table_name, .. }
        | AuthAction::DropIndex { table_name, .. }
        | AuthAction::CreateTrigger { table_name, .. }
        | AuthAction::DropTrigger { table_name, .. }
        | AuthAction::AlterTable { table_name, .. } => {
            if internal(table_name) {
                return deny(format!("table {table_name} is internal"));
            }
            log.schema_change = true;
            Authorization::Allow
        }
        AuthAction::CreateView { .. }
        | AuthAction::DropView { .. }
        | AuthAction::Reindex { .. }
        | AuthAction::Analyze { .. } => {
            log.schema_change = true;
            Authorization::Allow
        }
        _ => Authorization::Allow,
    }
}

struct Sql<'a>(&'a Value);

impl ToSql for Sql<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self.0 {
            Value::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            Value::Integer(i) => ToSqlOutput::Borrowed(ValueRef::Integer(*i)),
            Value::Real(f) => ToSqlOutput::Borrowed(ValueRef::Real(*f)),
            Value::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
        })
    }
}

fn from_sql(v: ValueRef<'_>) -> Value {
    match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::Integer(i),
        ValueRef::Real(f) => Value::Real(f),
        ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => Value::Text(b.iter().map(|x| format!("{x:02x}")).collect()),
    }
}

/// Runs one statement with its parameters, draining any rows it returns.
fn run_statement(conn: &Connection, st: &Statement) -> rusqlite::Result<StatementResult> {
    let mut stmt = conn.prepare(&st.sql)?;
    let expected = stmt.parameter_count();
    if expected != st.params.len() {
        return Err(rusqlite::Error::InvalidParameterCount(
            st.params.len(),
            expected,
        ));
    }
    // sqlite3_changes() keeps the count of the last INSERT, UPDATE or DELETE, even across other statements;
    // the total only moves when this statement changed rows.
    let before = conn.total_changes();
    let mut rows = stmt.query(rusqlite::params_from_iter(st.params.iter().map(Sql)))?;
    while rows.next()?.is_some() {}
    drop(rows);
    let changed = conn.total_changes() != before;
    Ok(StatementResult {
        rows_affected: if changed { conn.changes() } else { 0 },
        last_insert_id: conn.last_insert_rowid(),
    })
}

fn sql_error(e: &rusqlite::Error) -> String {
    match e {
        rusqlite::Error::InvalidParameterCount(got, want) => {
            format!("statement takes {want} parameters, {got} given")
        }
        rusqlite::Error::MultipleStatement => {
            "one statement per entry of statements, please".into()
        }
        rusqlite::Error::SqliteFailure(_, Some(msg)) => msg.clone(),
        other => other.to_string(),
    }
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

/// The statements a job runs; a clear deletes every row of every user table.
fn job_statements(conn: &Connection, job: &Job) -> Result<Vec<Statement>, String> {
    match job {
        Job::Write { statements, .. } if statements.is_empty() => {
            Err("a write needs at least one statement".into())
        }
        Job::Write { statements, .. } => Ok(statements.clone()),
        Job::Clear { .. } => Ok(user_tables(conn)
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|t| {
                Statement::new(
                    format!("DELETE FROM \"{}\"", t.replace('"', "\"\"")),
                    vec![],
                )
            })
            .collect()),
    }
}

fn user_tables(conn: &Connection) -> anyhow::Result<Vec<String>> {
    let mut stmt = conn.prepare(
        "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'
         AND name NOT LIKE '\\_rideshare\\_%' ESCAPE '\\' ORDER BY name",
    )?;
    let names = stmt
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(names)
}

/// Runs users' statements under the authorizer. Returns their results and whether they must be replicated as
/// statements rather than as a changeset.
fn run_user_statements(
    conn: &Connection,
    auth: &Mutex<AuthLog>,
    has_pk: &mut HashMap<String, bool>,
    statements: &[Statement],
) -> Result<(Vec<StatementResult>, bool), String> {
    let mut results = Vec::with_capacity(statements.len());
    let mut as_statements = false;
    for st in statements {
        *auth.lock().expect("auth log poisoned") = AuthLog {
            user_sql: true,
            ..AuthLog::default()
        };
        let res = run_statement(conn, st);
        let log = std::mem::take(&mut *auth.lock().expect("auth log poisoned"));
        match res {
            Ok(r) => results.push(r),
            Err(e) => return Err(log.denied.unwrap_or_else(|| sql_error(&e))),
        }
        if log.schema_change {
            as_statements = true;
            has_pk.clear();
        }
        for table in &log.written_tables {
            if !table_has_pk(conn, has_pk, table).map_err(|e| e.to_string())? {
                as_statements = true;
            }
        }
    }
    Ok((results, as_statements))
}

fn table_has_pk(
    conn: &Connection,
    cache: &mut HashMap<String, bool>,
    table: &str,
) -> anyhow::Result<bool> {
    if let Some(&known) = cache.get(table) {
        return Ok(known);
    }
    // A view or a missing table reports no columns; it cannot be in a changeset either.
    let pk: i64 = conn.query_row(
        "SELECT count(*) FROM pragma_table_info(?1) WHERE pk > 0",
        [table],
        |r| r.get(0),
    )?;
    cache.insert(table.to_owned(), pk > 0);
    Ok(pk > 0)
}

/// Runs one job alone in its own transaction and logs it as statements.
fn run_as_statements(
    conn: &Connection,
    auth: &Mutex<AuthLog>,
    has_pk: &mut HashMap<String, bool>,
    epoch: u64,
    seq: u64,
    key: &str,
    statements: &[Statement],
) -> anyhow::Result<(Outcome, Option<LogEntry>)> {
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let results = match run_user_statements(conn, auth, has_pk, statements) {
        Ok((results, _)) => results,
        Err(e) => {
            conn.execute_batch("ROLLBACK")?;
            return Ok((Outcome::Rejected(e), None));
        }
    };
    let response = WriteResponse { results, seq };
    let record = record_response(conn, key, &response)?;
    set_position(conn, epoch, seq)?;
    conn.execute_batch("COMMIT")?;
    let mut logged = statements.to_vec();
    logged.push(record);
    let entry = LogEntry {
        epoch,
        seq,
        payload: Payload::Statements { statements: logged },
    };
    Ok((Outcome::Applied(response), Some(entry)))
}

fn find_response(conn: &Connection, key: &str) -> anyhow::Result<Option<WriteResponse>> {
    let json: Option<String> = conn
        .query_row(
            &format!("SELECT response FROM {IDEMPOTENCY_TABLE} WHERE key = ?1"),
            [key],
            |r| r.get(0),
        )
        .optional()?;
    json.map(|j| serde_json::from_str(&j).context("stored response is not JSON"))
        .transpose()
}

/// Stores the response under its key and returns the statement that does the same on a replica.
fn record_response(
    conn: &Connection,
    key: &str,
    response: &WriteResponse,
) -> anyhow::Result<Statement> {
    let json = serde_json::to_string(response)?;
    let st = Statement::new(
        format!("INSERT INTO {IDEMPOTENCY_TABLE} (key, seq, response) VALUES (?1, ?2, ?3)"),
        vec![
            Value::Text(key.to_owned()),
            Value::Integer(response.seq as i64),
            Value::Text(json),
        ],
    );
    run_statement(conn, &st)?;
    Ok(st)
}

/// The AUTOINCREMENT counters, when any table has one.
fn sequences(conn: &Connection) -> anyhow::Result<Vec<(String, i64)>> {
    let exists: bool = conn.query_row(
        "SELECT count(*) > 0 FROM sqlite_schema WHERE name = 'sqlite_sequence'",
        [],
        |r| r.get(0),
    )?;
    if !exists {
        return Ok(vec![]);
    }
    let mut stmt = conn.prepare("SELECT name, seq FROM sqlite_sequence ORDER BY name")?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

fn set_sequences(conn: &Connection, sequences: &[(String, i64)]) -> anyhow::Result<()> {
    for (name, seq) in sequences {
        if conn.execute(
            "UPDATE sqlite_sequence SET seq = ?2 WHERE name = ?1",
            params![name, seq],
        )? == 0
        {
            conn.execute(
                "INSERT INTO sqlite_sequence (name, seq) VALUES (?1, ?2)",
                params![name, seq],
            )?;
        }
    }
    Ok(())
}

fn read_position(conn: &Connection) -> anyhow::Result<(u64, u64)> {
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

fn set_position(conn: &Connection, epoch: u64, seq: u64) -> anyhow::Result<()> {
    conn.execute(
        &format!(
            "UPDATE {META_TABLE} SET value = CASE key WHEN '{META_EPOCH}' THEN ?1 ELSE ?2 END"
        ),
        params![epoch as i64, seq as i64],
    )?;
    Ok(())
}

/// The open transaction of a group of changeset-replicated writes.
struct Group<'c> {
    session: Session<'c>,
    changed: bool,
}

impl<'c> Group<'c> {
    fn begin(conn: &'c Connection) -> anyhow::Result<Group<'c>> {
        conn.execute_batch("BEGIN IMMEDIATE")?;
        let mut session = Session::new(conn)?;
        // The position row differs on every copy by design; it is written by each copy itself.
        session.table_filter(Some(|t: &str| t != META_TABLE));
        session.attach(None::<&str>)?;
        Ok(Group {
            session,
            changed: false,
        })
    }

    /// Commits the group as log entry `seq`, or rolls it back when it changed nothing.
    fn finish(
        mut self,
        conn: &Connection,
        epoch: u64,
        seq: u64,
    ) -> anyhow::Result<Option<LogEntry>> {
        if !self.changed {
            drop(self.session);
            conn.execute_batch("ROLLBACK")?;
            return Ok(None);
        }
        if seq.is_multiple_of(IDEMPOTENCY_PRUNE_EVERY) && seq > IDEMPOTENCY_WINDOW_SEQS {
            conn.execute(
                &format!("DELETE FROM {IDEMPOTENCY_TABLE} WHERE seq < ?1"),
                [(seq - IDEMPOTENCY_WINDOW_SEQS) as i64],
            )?;
        }
        let mut bytes = Vec::new();
        self.session.changeset_strm(&mut bytes)?;
        drop(self.session);
        let sequences = sequences(conn)?;
        set_position(conn, epoch, seq)?;
        conn.execute_batch("COMMIT")?;
        Ok(Some(LogEntry {
            epoch,
            seq,
            payload: Payload::Changeset { bytes, sequences },
        }))
    }
}

/// Opens a connection that cannot write, for serving reads.
pub fn open_reader(path: &Path) -> anyhow::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI,
    )
    .with_context(|| format!("opening {} read-only", path.display()))?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(conn)
}

/// The seq of the last entry in the data this connection sees now (inside a read transaction: in its snapshot).
pub fn applied_seq(conn: &Connection) -> anyhow::Result<u64> {
    Ok(read_position(conn)?.1)
}

/// Runs one read. A statement that would write is refused before it runs, and the connection is read-only
/// besides.
pub fn read(conn: &Connection, req: &ReadRequest) -> Result<ReadResponse, String> {
    // Cached: the services send the same few statements over and over.
    let mut stmt = conn.prepare_cached(&req.sql).map_err(|e| sql_error(&e))?;
    if !stmt.readonly() {
        return Err("db/read takes statements that only read; use db/write".into());
    }
    let expected = stmt.parameter_count();
    if expected != req.params.len() {
        return Err(format!(
            "statement takes {expected} parameters, {} given",
            req.params.len()
        ));
    }
    let columns: Vec<String> = stmt.column_names().map(str::to_owned).collect();
    let mut rows = stmt
        .query(rusqlite::params_from_iter(req.params.iter().map(Sql)))
        .map_err(|e| sql_error(&e))?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(|e| sql_error(&e))? {
        let mut values = Vec::with_capacity(columns.len());
        for i in 0..columns.len() {
            values.push(from_sql(row.get_ref(i).map_err(|e| sql_error(&e))?));
        }
        out.push(values);
    }
    Ok(ReadResponse { columns, rows: out })
}

/// Every row of every table in a stable text form (see [`Db::dump`]).
pub fn dump(conn: &Connection) -> anyhow::Result<String> {
    let mut out = String::new();
    let tables: Vec<(String, String)> = {
        let mut stmt = conn.prepare(
            "SELECT name, sql FROM sqlite_schema WHERE type = 'table' AND name != ?1 ORDER BY name",
        )?;
        let rows = stmt.query_map([META_TABLE], |r| {
            Ok((
                r.get(0)?,
                r.get::<_, Option<String>>(1)?.unwrap_or_default(),
            ))
        })?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    for (name, sql) in tables {
        out.push_str(&format!("-- {sql}\n"));
        let all = format!("SELECT * FROM \"{}\"", name.replace('"', "\"\""));
        let n = conn.prepare(&all)?.column_count();
        let order: Vec<String> = (1..=n).map(|i| i.to_string()).collect();
        let q = format!("{all} ORDER BY {}", order.join(", "));
        let resp = read(
            conn,
            &ReadRequest {
                sql: q,
                params: vec![],
            },
        )
        .map_err(anyhow::Error::msg)?;
        for row in resp.rows {
            out.push_str(&serde_json::to_string(&row)?);
            out.push('\n');
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
