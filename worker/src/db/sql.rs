//! Running one statement with the API's values as parameters, and SQLite's errors as the API reports them.

use protocol::{Statement, StatementResult, Value};
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, ToSql};

/// An API value bound as a SQLite parameter.
pub(super) struct Sql<'a>(pub(super) &'a Value);

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

pub(super) fn from_sql(v: ValueRef<'_>) -> Value {
    match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::Integer(i),
        ValueRef::Real(f) => Value::Real(f),
        ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => Value::Text(b.iter().map(|x| format!("{x:02x}")).collect()),
    }
}

/// Runs one statement with its parameters, draining any rows it returns.
pub(super) fn run_statement(
    conn: &Connection,
    st: &Statement,
) -> rusqlite::Result<StatementResult> {
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

pub(super) fn sql_error(e: &rusqlite::Error) -> String {
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
