//! The master's side of a write: the statements a job runs under the authorizer, statement entries for what a
//! changeset cannot carry, the idempotency record of every applied write, AUTOINCREMENT counters, and the group
//! transaction that becomes one changeset entry.

use std::collections::HashMap;
use std::sync::Mutex;

use anyhow::Context;
use protocol::queue::{LogEntry, Payload};
use protocol::{Statement, StatementResult, Value, WriteResponse};
use rusqlite::session::Session;
use rusqlite::{params, Connection, OptionalExtension};

use super::authorizer::AuthLog;
use super::sql::{run_statement, sql_error};
use super::{
    set_position, Job, Outcome, IDEMPOTENCY_PRUNE_EVERY, IDEMPOTENCY_TABLE,
    IDEMPOTENCY_WINDOW_SEQS, META_TABLE,
};

/// The statements a job runs; a clear deletes every row of every user table.
pub(super) fn job_statements(conn: &Connection, job: &Job) -> Result<Vec<Statement>, String> {
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
pub(super) fn run_user_statements(
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
pub(super) fn run_as_statements(
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

pub(super) fn find_response(conn: &Connection, key: &str) -> anyhow::Result<Option<WriteResponse>> {
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
pub(super) fn record_response(
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

pub(super) fn set_sequences(conn: &Connection, sequences: &[(String, i64)]) -> anyhow::Result<()> {
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

/// The open transaction of a group of changeset-replicated writes.
pub(super) struct Group<'c> {
    session: Session<'c>,
    pub(super) changed: bool,
}

impl<'c> Group<'c> {
    pub(super) fn begin(conn: &'c Connection) -> anyhow::Result<Group<'c>> {
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
    pub(super) fn finish(
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
