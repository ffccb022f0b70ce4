//! The authorizer that keeps users' SQL away from the machinery (invariant 5): it refuses pragmas (but the
//! read-only introspection ones the session extension uses), `ATTACH`, transaction control, temporary objects,
//! virtual tables and any access to the internal `_rideshare_*` tables, and notes what a statement changes so the
//! master knows whether it can travel as a changeset.

use std::sync::Mutex;

use rusqlite::hooks::{AuthAction, AuthContext, Authorization};

pub(super) const INTERNAL_PREFIX: &str = "_rideshare_";
const INTROSPECTION_PRAGMAS: [&str; 6] = [
    "table_info",
    "table_xinfo",
    "index_list",
    "index_info",
    "index_xinfo",
    "foreign_key_list",
];

/// What the authorizer saw while a user statement was prepared.
#[derive(Debug, Default)]
pub(super) struct AuthLog {
    /// Set while users' SQL is prepared; our own statements are not checked.
    pub(super) user_sql: bool,
    /// The statement changes the schema: replicate it as a statement, not as a changeset.
    pub(super) schema_change: bool,
    /// Tables the statement inserts into, updates or deletes from.
    pub(super) written_tables: Vec<String>,
    /// Why the statement was refused, when it was.
    pub(super) denied: Option<String>,
}

pub(super) fn authorize(log: &Mutex<AuthLog>, ctx: AuthContext<'_>) -> Authorization {
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
