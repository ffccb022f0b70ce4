//! The request counter of a service (`GET/DELETE /api/v1/_count`): an atomic in memory, persisted to
//! `count.json` in the service's data directory by a background task, never by the request itself.
//!
//! The file is replaced atomically (written to a temporary file, synced, then renamed over), so a crash leaves
//! either the old count or the new one, never a torn file. A crash loses at most the increments since the last
//! flush: one flush interval (100 ms by default).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const FILE_NAME: &str = "count.json";

/// What `count.json` holds.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CountFile {
    count: u64,
}

/// A cheap handle on one service's counter.
#[derive(Clone, Debug)]
pub struct RequestCounter {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    count: AtomicU64,
    path: PathBuf,
    /// The count the file holds. The lock also serializes writers of the file (the flusher, and the final
    /// flush at shutdown); it is held across blocking file I/O, never across an `.await`.
    persisted: Mutex<u64>,
}

impl RequestCounter {
    /// Creates `dir` if needed and loads the count from `dir/count.json` (0 when there is no file). An
    /// unreadable file is an error rather than a silent reset to 0.
    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the data directory {}", dir.display()))?;
        let path = dir.join(FILE_NAME);
        let count = match std::fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice::<CountFile>(&bytes)
                    .with_context(|| format!("{} is not a request count", path.display()))?
                    .count
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        Ok(Self {
            inner: Arc::new(Inner {
                count: AtomicU64::new(count),
                path,
                persisted: Mutex::new(count),
            }),
        })
    }

    pub fn increment(&self) {
        self.inner.count.fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.inner.count.load(Ordering::Relaxed)
    }

    pub fn reset(&self) {
        self.inner.count.store(0, Ordering::Relaxed);
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Writes the current count to the file if it differs from what the file holds. Blocking.
    pub fn flush(&self) -> anyhow::Result<()> {
        let mut persisted = self
            .inner
            .persisted
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let count = self.get();
        if count == *persisted {
            return Ok(());
        }
        write_atomically(&self.inner.path, count)?;
        *persisted = count;
        Ok(())
    }

    /// Starts the task that flushes the count every `every` while it changes.
    pub fn spawn_flusher(&self, every: Duration) -> Flusher {
        let (stop, mut stopped) = oneshot::channel::<()>();
        let counter = self.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = &mut stopped => return,
                }
                let counter = counter.clone();
                match tokio::task::spawn_blocking(move || counter.flush()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::warn!("saving the request count: {e:#}"),
                    Err(e) => tracing::error!("the request count flush panicked: {e}"),
                }
            }
        });
        Flusher {
            counter: self.clone(),
            stop,
            task,
        }
    }
}

/// The running flush task; [`Flusher::stop`] ends it and saves the last count.
pub struct Flusher {
    counter: RequestCounter,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Flusher {
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        let _ = self.task.await;
        let counter = self.counter;
        tokio::task::spawn_blocking(move || counter.flush())
            .await
            .context("the final flush of the request count panicked")?
    }
}

/// Written to a temporary file beside `path`, synced, then renamed over it (`NamedTempFile::persist`), so a
/// crash leaves the old count or the new one, never half of one.
fn write_atomically(path: &Path, count: u64) -> anyhow::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut file = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    file.write_all(&serde_json::to_vec(&CountFile { count })?)
        .and_then(|()| file.as_file().sync_all())
        .with_context(|| format!("writing {}", file.path().display()))?;
    file.persist(path)
        .with_context(|| format!("renaming the new count to {}", path.display()))?;
    Ok(())
}

/// Middleware counting every request that reaches it: applied with `route_layer` to the counted routes only,
/// so it sees their failures (400, and 405 from the method router) but not unknown routes.
pub async fn count_request(
    State(counter): State<RequestCounter>,
    request: Request,
    next: Next,
) -> Response {
    counter.increment();
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_directory_starts_at_zero_and_a_flushed_count_is_loaded_back() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("nested/data");
        let counter = RequestCounter::load(&data).unwrap();
        assert_eq!(counter.get(), 0);
        assert!(!counter.path().exists(), "nothing to save yet");
        for _ in 0..3 {
            counter.increment();
        }
        counter.flush().unwrap();
        assert_eq!(
            std::fs::read_to_string(data.join(FILE_NAME)).unwrap(),
            r#"{"count":3}"#
        );
        assert_eq!(RequestCounter::load(&data).unwrap().get(), 3);
        counter.reset();
        counter.flush().unwrap();
        assert_eq!(RequestCounter::load(&data).unwrap().get(), 0);
        // No temporary file left behind.
        let names: Vec<_> = std::fs::read_dir(&data)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [FILE_NAME]);
    }

    #[test]
    fn a_corrupt_count_file_is_an_error_not_a_reset() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE_NAME), "{\"count\": -1}").unwrap();
        let e = RequestCounter::load(dir.path()).unwrap_err();
        assert!(format!("{e:#}").contains("count.json"), "{e:#}");
    }

    #[tokio::test]
    async fn the_flusher_saves_changes_without_being_asked_and_once_more_when_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let counter = RequestCounter::load(dir.path()).unwrap();
        let flusher = counter.spawn_flusher(Duration::from_millis(10));
        counter.increment();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while RequestCounter::load(dir.path()).unwrap().get() != 1 {
            assert!(tokio::time::Instant::now() < deadline, "never flushed");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        counter.increment();
        flusher.stop().await.unwrap();
        assert_eq!(RequestCounter::load(dir.path()).unwrap().get(), 2);
    }
}
