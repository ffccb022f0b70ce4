//! The read side: read-only connections, running a read, and dumping a whole database for comparisons.

use std::path::Path;

use anyhow::Context;
use protocol::{ReadRequest, ReadResponse};
use rusqlite::{Connection, OpenFlags};

use super::sql::{from_sql, sql_error, Sql};
use super::{read_position, META_TABLE};

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
