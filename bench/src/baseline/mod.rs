//! The baseline: RideShare's public API (the users and rides routes, `_count`, `db/clear`, `/health`) in one
//! process on one local SQLite file, with no replication, broker, orchestrator or gateway. It answers the same
//! routes with the same statuses and bodies as the system through its gateway, so `bench/public_api.sh` runs
//! against either, and `bench/compare.sh` puts the two side by side: the ratio says what the distributed
//! design costs on the same machine, in the same run.
//!
//! It is an ordinary implementation, not a straw man: the contract's rules come from `public_api` (values,
//! strict extraction, the request counter), the SQL and schema are the services', and the database runs with the
//! workers' pragmas (see [`store`] for the connections). It is also plain: no `/metrics`, no request ids, no
//! telemetry middleware, no OpenAPI document; the system pays for those and this does not, a small part of the
//! difference.
//!
//! Module map:
//! - [`config`]: the command line and environment ([`Config`]).
//! - [`http`]: routes and handlers ([`router`]).
//! - [`store`]: the SQLite file, its connections and the queries.
//! - [`error`]: the HTTP [`Error`] type and its status codes.

pub mod config;
pub mod error;
pub mod http;
pub mod store;

use std::future::Future;

use anyhow::Context;
use public_api::RequestCounter;
use tokio::net::TcpListener;

pub use config::Config;
pub use error::Error;
pub use http::{router, AppState};
use store::Store;

/// The database file in the data directory.
pub const DB_FILE: &str = "baseline.db";

/// Opens (or creates) the database in the data directory (a temporary one unless configured), then serves on
/// `listener` until `shutdown` completes, and saves the request count on the way out.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    // Kept until the end of `run`: dropping it deletes the directory.
    let (dir, _temporary) = match &config.data_dir {
        Some(dir) => (dir.clone(), None),
        None => {
            let temporary = tempfile::Builder::new()
                .prefix("rideshare-baseline-")
                .tempdir()
                .context("creating a temporary data directory")?;
            (temporary.path().to_owned(), Some(temporary))
        }
    };
    let counter = RequestCounter::load(&dir)?;
    let path = dir.join(DB_FILE);
    let readers = config.readers;
    let store = tokio::task::spawn_blocking(move || Store::open(&path, readers))
        .await
        .context("opening the database panicked")??;
    let flusher = counter.spawn_flusher(config.count_flush());
    tracing::info!(
        "baseline listening on {}, data in {}",
        listener.local_addr().context("reading the bound address")?,
        dir.display()
    );
    let served = axum::serve(listener, router(AppState { store, counter }))
        .with_graceful_shutdown(shutdown)
        .await
        .context("serving HTTP");
    flusher.stop().await.context("saving the request count")?;
    served
}
