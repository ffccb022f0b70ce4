//! The baseline's data: the shared schema (`public_api::schema`) in one local SQLite file, and the statements the
//! users and rides services send to the orchestrator (`users/src/db.rs`, `rides/src/db.rs`), run here on local
//! connections. Same SQL, same indexes, same constraints doing the same work (UNIQUE for a taken name, foreign
//! keys for an unknown user, ON DELETE CASCADE), so what differs from the system is the path to the data, not
//! the data work.
//!
//! Connections: one writer behind an async lock, and a small fixed pool of read-only readers. SQLite runs one
//! write at a time whatever we do, so a single writer serializes writes in our queue instead of in SQLite's
//! busy-wait; WAL lets the readers read beside it. The pragmas are the workers' (`worker/src/db/mod.rs`): WAL and
//! `synchronous=NORMAL`, so a commit does not wait for the disk there either. Every use of a connection runs on
//! tokio's blocking pool (SQLite calls block), and the connection is taken before the task is spawned, so a
//! request waiting for one holds no thread. A fixed pool rather than a connection per blocking thread: tokio
//! grows that pool to hundreds of threads under load, each connection with its own page cache and prepared
//! statements.

use std::ffi::c_int;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use public_api::{schema, Area, PasswordHash, Timestamp, Username};
use rusqlite::{ffi, params, Connection, ErrorCode, OpenFlags, OptionalExtension};
use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How long a connection waits for a lock SQLite holds (a checkpoint) before failing; the workers' value.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// One line of the upcoming-rides list (`rides::db::RideSummary`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RideSummary {
    #[serde(rename = "rideId")]
    pub id: i64,
    /// The creator.
    pub username: String,
    pub timestamp: Timestamp,
}

/// A ride with its members (`rides::db::Ride`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ride {
    #[serde(rename = "rideId")]
    pub id: i64,
    pub created_by: String,
    /// The users who joined, in join order; not the creator.
    pub users: Vec<String>,
    pub timestamp: Timestamp,
    pub source: Area,
    pub destination: Area,
}

/// A ride to create: each field already valid on its own.
#[derive(Debug, Clone)]
pub struct NewRide {
    pub created_by: Username,
    pub timestamp: Timestamp,
    pub source: Area,
    pub destination: Area,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registration {
    Created,
    /// The UNIQUE constraint refused the name.
    Taken,
}

/// What a join came to (`rides::db::Join`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Join {
    Joined,
    /// The insert found no ride to copy: gone, created by this user, or no longer in the future.
    NotEligible,
    AlreadyMember,
    /// The foreign key refused the membership: not (any longer) a user.
    UnknownUser,
}

/// The database: cheap to clone.
#[derive(Clone)]
pub struct Store {
    writer: Pool,
    readers: Pool,
}

impl Store {
    /// Opens (creating when needed) the database at `path`, creates the schema, and opens `readers` read-only
    /// connections. Blocking.
    pub fn open(path: &Path, readers: usize) -> anyhow::Result<Self> {
        let writer =
            Connection::open(path).with_context(|| format!("opening {}", path.display()))?;
        writer.busy_timeout(BUSY_TIMEOUT)?;
        writer.pragma_update(None, "journal_mode", "WAL")?;
        writer.pragma_update(None, "synchronous", "NORMAL")?;
        // As on the master: cascades and the unknown-user check rest on the foreign keys.
        writer.pragma_update(None, "foreign_keys", true)?;
        for sql in schema::STATEMENTS {
            writer.execute(sql, []).context("creating the schema")?;
        }
        let readers = (0..readers)
            .map(|_| {
                let conn = Connection::open_with_flags(
                    path,
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )
                .with_context(|| format!("opening {} read-only", path.display()))?;
                conn.busy_timeout(BUSY_TIMEOUT)?;
                Ok(conn)
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Self {
            writer: Pool::new(vec![writer]),
            readers: Pool::new(readers),
        })
    }

    pub async fn register(
        &self,
        username: &Username,
        password: &PasswordHash,
    ) -> anyhow::Result<Registration> {
        let (username, password) = (username.as_str().to_owned(), password.as_str().to_owned());
        self.writer
            .run(move |conn| {
                let inserted = conn
                    .prepare_cached("INSERT INTO users (username, password) VALUES (?, ?)")?
                    .execute(params![username, password]);
                match inserted {
                    Ok(_) => Ok(Registration::Created),
                    Err(e) if is_constraint(&e, &[ffi::SQLITE_CONSTRAINT_UNIQUE]) => {
                        Ok(Registration::Taken)
                    }
                    Err(e) => Err(e.into()),
                }
            })
            .await
    }

    /// Deletes a user, their rides and memberships (ON DELETE CASCADE); whether there was such a user.
    pub async fn delete_user(&self, username: &Username) -> anyhow::Result<bool> {
        let username = username.as_str().to_owned();
        self.writer
            .run(move |conn| {
                let deleted = conn
                    .prepare_cached("DELETE FROM users WHERE username = ?")?
                    .execute([username])?;
                Ok(deleted > 0)
            })
            .await
    }

    /// Every username, in creation order.
    pub async fn usernames(&self) -> anyhow::Result<Vec<String>> {
        self.readers
            .run(|conn| {
                let mut stmt = conn.prepare_cached("SELECT username FROM users ORDER BY id")?;
                let names = stmt
                    .query_map([], |row| row.get(0))?
                    .collect::<rusqlite::Result<Vec<String>>>()?;
                Ok(names)
            })
            .await
    }

    pub async fn user_exists(&self, username: &Username) -> anyhow::Result<bool> {
        let username = username.as_str().to_owned();
        self.readers
            .run(move |conn| {
                let found = conn
                    .prepare_cached("SELECT 1 FROM users WHERE username = ?")?
                    .query_row([username], |_| Ok(()))
                    .optional()?;
                Ok(found.is_some())
            })
            .await
    }

    /// Deletes every user, and so every ride and membership.
    pub async fn clear(&self) -> anyhow::Result<()> {
        self.writer
            .run(|conn| {
                conn.execute("DELETE FROM users", [])?;
                Ok(())
            })
            .await
    }

    /// Inserts the ride. `None` when the creator is not (any longer) a user: the foreign key refused it.
    pub async fn insert_ride(&self, ride: &NewRide) -> anyhow::Result<Option<i64>> {
        let ride = ride.clone();
        self.writer
            .run(move |conn| {
                let inserted = conn
                    .prepare_cached(
                        "INSERT INTO rides (created_by, timestamp, source, destination) VALUES (?, ?, ?, ?)",
                    )?
                    .execute(params![
                        ride.created_by.as_str(),
                        ride.timestamp.unix(),
                        ride.source.number(),
                        ride.destination.number(),
                    ]);
                match inserted {
                    Ok(_) => Ok(Some(conn.last_insert_rowid())),
                    Err(e) if is_constraint(&e, &[ffi::SQLITE_CONSTRAINT_FOREIGNKEY]) => Ok(None),
                    Err(e) => Err(e.into()),
                }
            })
            .await
    }

    /// The rides from `source` to `destination` later than `now`, earliest first (ties in creation order).
    pub async fn upcoming(
        &self,
        source: Area,
        destination: Area,
        now: Timestamp,
    ) -> anyhow::Result<Vec<RideSummary>> {
        self.readers
            .run(move |conn| {
                // The rides service's own statement (compiled once per connection; see its comment).
                let mut stmt = conn.prepare_cached(rides::db::UPCOMING_SQL)?;
                let mut rows =
                    stmt.query(params![source.number(), destination.number(), now.unix()])?;
                let mut out = Vec::new();
                while let Some(row) = rows.next()? {
                    out.push(RideSummary {
                        id: row.get(0)?,
                        username: row.get(1)?,
                        timestamp: timestamp(row.get(2)?)?,
                    });
                }
                Ok(out)
            })
            .await
    }

    /// The ride and its members, read in one query (so from one consistent state).
    pub async fn find_ride(&self, id: i64) -> anyhow::Result<Option<Ride>> {
        self.readers
            .run(move |conn| {
                let mut stmt = conn.prepare_cached(rides::db::FIND_SQL)?;
                let mut rows = stmt.query([id])?;
                let Some(first) = rows.next()? else {
                    return Ok(None);
                };
                let mut ride = Ride {
                    id: first.get(0)?,
                    created_by: first.get(1)?,
                    users: Vec::new(),
                    timestamp: timestamp(first.get(2)?)?,
                    source: area(first.get(3)?)?,
                    destination: area(first.get(4)?)?,
                };
                // A ride without members comes back as one row with a NULL member.
                ride.users.extend(first.get::<_, Option<String>>(5)?);
                while let Some(row) = rows.next()? {
                    ride.users.extend(row.get::<_, Option<String>>(5)?);
                }
                Ok(Some(ride))
            })
            .await
    }

    /// Adds `username` to the ride's members, re-checking at write time what the caller checked before (the
    /// ride exists, the user is not its creator, it is still in the future): the rides service's statement.
    pub async fn join(&self, id: i64, username: &Username, now: Timestamp) -> anyhow::Result<Join> {
        let username = username.as_str().to_owned();
        self.writer
            .run(move |conn| {
                let inserted = conn
                    .prepare_cached(
                        "INSERT INTO ride_members (ride_id, username, position) \
                         SELECT id, ?, (SELECT COALESCE(MAX(position), 0) + 1 FROM ride_members WHERE ride_id = ?) \
                         FROM rides WHERE id = ? AND created_by <> ? AND timestamp > ?",
                    )?
                    .execute(params![username, id, id, username, now.unix()]);
                match inserted {
                    Ok(0) => Ok(Join::NotEligible),
                    Ok(_) => Ok(Join::Joined),
                    Err(e)
                        if is_constraint(
                            &e,
                            &[ffi::SQLITE_CONSTRAINT_PRIMARYKEY, ffi::SQLITE_CONSTRAINT_UNIQUE],
                        ) =>
                    {
                        Ok(Join::AlreadyMember)
                    }
                    Err(e) if is_constraint(&e, &[ffi::SQLITE_CONSTRAINT_FOREIGNKEY]) => {
                        Ok(Join::UnknownUser)
                    }
                    Err(e) => Err(e.into()),
                }
            })
            .await
    }

    /// Deletes the ride and its memberships (ON DELETE CASCADE); whether there was such a ride.
    pub async fn delete_ride(&self, id: i64) -> anyhow::Result<bool> {
        self.writer
            .run(move |conn| {
                let deleted = conn
                    .prepare_cached("DELETE FROM rides WHERE id = ?")?
                    .execute([id])?;
                Ok(deleted > 0)
            })
            .await
    }

    pub async fn ride_count(&self) -> anyhow::Result<u64> {
        self.readers
            .run(|conn| {
                let n: i64 = conn
                    .prepare_cached("SELECT COUNT(*) FROM rides")?
                    .query_row([], |row| row.get(0))?;
                Ok(u64::try_from(n)?)
            })
            .await
    }
}

/// Whether `e` is a constraint violation of one of these kinds (extended result codes).
fn is_constraint(e: &rusqlite::Error, kinds: &[c_int]) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if f.code == ErrorCode::ConstraintViolation && kinds.contains(&f.extended_code))
}

fn timestamp(unix: i64) -> anyhow::Result<Timestamp> {
    Timestamp::from_unix(unix).context("a stored timestamp")
}

fn area(n: i64) -> anyhow::Result<Area> {
    let n = u64::try_from(n).with_context(|| format!("stored area {n}"))?;
    Area::new(n).with_context(|| format!("stored area {n}"))
}

/// A fixed set of connections, each used by one task at a time on the blocking pool.
#[derive(Clone)]
struct Pool(Arc<PoolInner>);

struct PoolInner {
    /// Idle connections. A plain mutex: it is held only to push or pop, never across an `.await`.
    idle: Mutex<Vec<Connection>>,
    /// One permit per connection: a task waits here (asynchronously) until one is idle.
    permits: Arc<Semaphore>,
}

impl Pool {
    fn new(connections: Vec<Connection>) -> Self {
        let permits = Arc::new(Semaphore::new(connections.len()));
        Self(Arc::new(PoolInner {
            idle: Mutex::new(connections),
            permits,
        }))
    }

    /// Runs `f` on a connection of the pool, on the blocking pool, once one is idle.
    async fn run<T, F>(&self, f: F) -> anyhow::Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> anyhow::Result<T> + Send + 'static,
    {
        let permit = self
            .0
            .permits
            .clone()
            .acquire_owned()
            .await
            .context("the connection pool is closed")?;
        let conn = self
            .0
            .idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .pop()
            .context("a permit without an idle connection")?;
        let mut lease = Lease {
            conn: Some(conn),
            pool: self.clone(),
            _permit: permit,
        };
        tokio::task::spawn_blocking(move || f(lease.conn.as_mut().expect("taken until dropped")))
            .await
            .context("a database task panicked")?
    }
}

/// A connection taken from a pool; given back when dropped, even by a panic, before its permit is released.
struct Lease {
    conn: Option<Connection>,
    pool: Pool,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.pool
                .0
                .idle
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .push(conn);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str) -> Username {
        Username::parse(name).unwrap()
    }

    fn store(dir: &tempfile::TempDir) -> Store {
        Store::open(&dir.path().join("baseline.db"), 2).unwrap()
    }

    fn later(seconds: i64) -> Timestamp {
        Timestamp::from_unix(Timestamp::now().unix() + seconds).unwrap()
    }

    #[tokio::test]
    async fn the_constraints_do_the_checks_the_services_rely_on() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir);
        let password = PasswordHash::parse(&"a".repeat(40)).unwrap();
        assert_eq!(
            store.register(&user("alice"), &password).await.unwrap(),
            Registration::Created
        );
        assert_eq!(
            store.register(&user("alice"), &password).await.unwrap(),
            Registration::Taken
        );
        store.register(&user("bob"), &password).await.unwrap();
        let ride = |created_by: &str| NewRide {
            created_by: user(created_by),
            timestamp: later(3600),
            source: Area::new(1).unwrap(),
            destination: Area::new(2).unwrap(),
        };
        assert_eq!(store.insert_ride(&ride("nobody")).await.unwrap(), None);
        let id = store.insert_ride(&ride("alice")).await.unwrap().unwrap();
        let now = Timestamp::now();
        assert_eq!(
            store.join(id, &user("alice"), now).await.unwrap(),
            Join::NotEligible
        );
        assert_eq!(
            store.join(id, &user("nobody"), now).await.unwrap(),
            Join::UnknownUser
        );
        assert_eq!(
            store.join(id, &user("bob"), now).await.unwrap(),
            Join::Joined
        );
        assert_eq!(
            store.join(id, &user("bob"), now).await.unwrap(),
            Join::AlreadyMember
        );
        assert_eq!(
            store.find_ride(id).await.unwrap().unwrap().users,
            vec!["bob".to_owned()]
        );
        // Deleting the creator takes the ride with it.
        assert!(store.delete_user(&user("alice")).await.unwrap());
        assert_eq!(store.find_ride(id).await.unwrap(), None);
        assert_eq!(store.ride_count().await.unwrap(), 0);
        assert_eq!(store.usernames().await.unwrap(), vec!["bob".to_owned()]);
    }

    #[tokio::test]
    async fn more_concurrent_reads_than_connections_all_get_one_in_turn() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir);
        let reads: Vec<_> = (0..50)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move { store.ride_count().await })
            })
            .collect();
        for read in reads {
            assert_eq!(read.await.unwrap().unwrap(), 0);
        }
    }
}
