//! The workers' data folders, `<data_dir>/workers/<id>`: which exist, how far each copy of the database got,
//! and removing those no longer needed.
//!
//! A folder outlives its worker. After a crash of the whole system the folders are all that is left, and the
//! copy that got furthest must become the master again; while the cluster runs, the folder of a dead worker
//! is removed once a healthy master holds everything it held.

use std::path::{Path, PathBuf};

use anyhow::Context;
use protocol::disk::{DB_FILE, META_EPOCH, META_SEQ, META_TABLE};
use rusqlite::{OpenFlags, OptionalExtension};

/// How far a copy of the database got: the (epoch, seq) of its last log entry. Copies compare by epoch first:
/// a later master's entries supersede anything an earlier master wrote that it never had.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    pub epoch: u64,
    pub seq: u64,
}

#[derive(Debug, Clone)]
pub struct Folders {
    /// `<data_dir>/workers`
    root: PathBuf,
}

impl Folders {
    pub fn new(data_dir: &Path) -> Self {
        Self {
            root: data_dir.join("workers"),
        }
    }

    pub fn path(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }

    /// The ids of every worker folder, sorted; none when the data directory does not exist yet.
    pub fn ids(&self) -> anyhow::Result<Vec<String>> {
        let entries = match std::fs::read_dir(&self.root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("listing {}", self.root.display())),
        };
        let mut ids = Vec::new();
        for entry in entries {
            let entry = entry.with_context(|| format!("listing {}", self.root.display()))?;
            let name = entry.file_name();
            let Some(id) = name.to_str() else { continue };
            if protocol::names::is_valid_name(id) && entry.path().is_dir() {
                ids.push(id.to_owned());
            }
        }
        ids.sort();
        Ok(ids)
    }

    /// How far the copy in folder `id` got; `None` when the folder holds no database (a slave that died
    /// before its first snapshot). An error means there is a file that could not be read: it may hold data,
    /// so the caller must not act as if there were none.
    pub fn position(&self, id: &str) -> anyhow::Result<Option<Position>> {
        let path = self.path(id).join(DB_FILE);
        match std::fs::metadata(&path) {
            Ok(m) if m.len() == 0 => return Ok(None),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        }
        read_position(&path).with_context(|| format!("reading the position of {}", path.display()))
    }

    /// Removes folder `id` and everything in it.
    pub fn remove(&self, id: &str) -> anyhow::Result<()> {
        let path = self.path(id);
        match std::fs::remove_dir_all(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| format!("removing {}", path.display())),
        }
    }
}

/// Read-only, so that looking at a copy never changes it (the worker it belongs to may still be running).
fn read_position(path: &Path) -> anyhow::Result<Option<Position>> {
    let conn = rusqlite::Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    let has_meta: Option<String> = conn
        .query_row(
            "SELECT name FROM sqlite_schema WHERE type = 'table' AND name = ?1",
            [META_TABLE],
            |r| r.get(0),
        )
        .optional()?;
    if has_meta.is_none() {
        // A database file the worker never set up: no log entry in it.
        return Ok(Some(Position { epoch: 0, seq: 0 }));
    }
    let get = |key: &str| -> anyhow::Result<u64> {
        let value: Option<i64> = conn
            .query_row(
                &format!("SELECT value FROM {META_TABLE} WHERE key = ?1"),
                [key],
                |r| r.get(0),
            )
            .optional()?;
        Ok(u64::try_from(value.unwrap_or(0)).unwrap_or(0))
    };
    Ok(Some(Position {
        epoch: get(META_EPOCH)?,
        seq: get(META_SEQ)?,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn make_db(dir: &Path, id: &str, epoch: i64, seq: i64) {
        let folder = dir.join("workers").join(id);
        std::fs::create_dir_all(&folder).unwrap();
        let conn = rusqlite::Connection::open(folder.join(DB_FILE)).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        conn.execute_batch(&format!(
            "CREATE TABLE {META_TABLE} (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
             INSERT INTO {META_TABLE} VALUES ('epoch', {epoch}), ('seq', {seq});
             CREATE TABLE t (x);"
        ))
        .unwrap();
        // Left open on purpose until the caller drops nothing: the WAL stays, as after a crash.
        std::mem::forget(conn);
    }

    #[test]
    fn positions_are_read_from_each_folder_and_compare_by_epoch_first() {
        let dir = tempfile::tempdir().unwrap();
        make_db(dir.path(), "w-a", 1, 90);
        make_db(dir.path(), "w-b", 2, 10);
        std::fs::create_dir_all(dir.path().join("workers/w-empty")).unwrap();
        std::fs::write(dir.path().join("workers/not a worker"), b"").unwrap();
        let folders = Folders::new(dir.path());
        assert_eq!(folders.ids().unwrap(), vec!["w-a", "w-b", "w-empty"]);
        let a = folders.position("w-a").unwrap().unwrap();
        let b = folders.position("w-b").unwrap().unwrap();
        assert_eq!(a, Position { epoch: 1, seq: 90 });
        assert!(b > a);
        assert_eq!(folders.position("w-empty").unwrap(), None);
        assert_eq!(folders.position("w-missing").unwrap(), None);
    }

    #[test]
    fn a_file_that_is_not_a_database_is_an_error_not_an_empty_copy() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("workers/w-bad");
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::write(
            folder.join(DB_FILE),
            b"this is not sqlite, but it is not empty either",
        )
        .unwrap();
        assert!(Folders::new(dir.path()).position("w-bad").is_err());
    }

    #[test]
    fn no_data_directory_means_no_folders() {
        let dir = tempfile::tempdir().unwrap();
        let folders = Folders::new(&dir.path().join("never-created"));
        assert!(folders.ids().unwrap().is_empty());
        folders.remove("w-x").unwrap();
    }

    #[test]
    fn a_removed_folder_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        make_db(dir.path(), "w-a", 1, 1);
        let folders = Folders::new(dir.path());
        folders.remove("w-a").unwrap();
        assert!(folders.ids().unwrap().is_empty());
    }
}
