//! The users service's data: its model and its queries, all through the orchestrator (parameterized SQL,
//! one `db/write` per change).

use protocol::Statement;
use public_api::db::{text, RowExt};
use public_api::{Db, DbError, PasswordHash, Username};

/// What a registration came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registration {
    Created,
    /// The username is taken: the UNIQUE constraint refused it, so of any number of concurrent
    /// registrations of one name, exactly one is `Created`.
    Taken,
}

pub async fn register(
    db: &Db,
    username: &Username,
    password: &PasswordHash,
) -> Result<Registration, DbError> {
    let insert = Statement::new(
        "INSERT INTO users (username, password) VALUES (?, ?)",
        vec![text(username.as_str()), text(password.as_str())],
    );
    match db.write(vec![insert]).await {
        Ok(_) => Ok(Registration::Created),
        Err(DbError::Rejected(reason)) if reason.contains("UNIQUE") => Ok(Registration::Taken),
        Err(e) => Err(e),
    }
}

/// Deletes a user; their rides and ride memberships go with them (ON DELETE CASCADE), in the same
/// transaction. Returns whether there was such a user.
pub async fn delete(db: &Db, username: &Username) -> Result<bool, DbError> {
    let delete = Statement::new(
        "DELETE FROM users WHERE username = ?",
        vec![text(username.as_str())],
    );
    let written = db.write(vec![delete]).await?;
    Ok(written.results.first().is_some_and(|r| r.rows_affected > 0))
}

/// Every username, in creation order.
pub async fn usernames(db: &Db) -> Result<Vec<String>, DbError> {
    let rows = db
        .read("SELECT username FROM users ORDER BY id", vec![])
        .await?;
    rows.rows
        .iter()
        .map(|row| row.text(0).map(str::to_owned))
        .collect()
}

pub async fn exists(db: &Db, username: &Username) -> Result<bool, DbError> {
    let rows = db
        .read(
            "SELECT 1 FROM users WHERE username = ?",
            vec![text(username.as_str())],
        )
        .await?;
    Ok(!rows.rows.is_empty())
}

/// Deletes every user, and so every ride and membership.
pub async fn delete_all(db: &Db) -> Result<(), DbError> {
    db.write(vec![Statement::new("DELETE FROM users", vec![])])
        .await
        .map(|_| ())
}
