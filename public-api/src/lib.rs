//! What the two public services, users and rides, share: the typed values of the public API, strict request
//! extraction, the request counter, the orchestrator client and the shared schema. Each service keeps its own
//! routes, handlers, queries and `Error` type; this crate holds only what the contract (`api.md`) says about
//! both, so that it is written once.
//!
//! Module map:
//! - [`values`]: [`Username`], [`PasswordHash`], [`Area`], [`Timestamp`]: parsed once, valid thereafter.
//! - [`areas`]: the area list `AreaNameEnum.csv`, checked against [`Area`] at start.
//! - [`extract`]: JSON bodies (64 KiB at most), query strings and path segments, every failure a JSON `400`.
//! - [`counter`]: the `_count` request counter, persisted to `count.json` off the request path.
//! - [`db`]: the orchestrator's `db/write` and `db/read`, with idempotent retries.
//! - [`schema`]: the tables both services use, created at start.
//! - `testing` (feature `testing`): sending requests to a router in the services' unit tests.

pub mod areas;
pub mod counter;
pub mod db;
pub mod extract;
pub mod schema;
#[cfg(feature = "testing")]
pub mod testing;
pub mod values;

use std::future::Future;

use anyhow::Context;
use tokio::net::TcpListener;

pub use areas::{AreaName, Areas};
pub use counter::RequestCounter;
pub use db::{Db, DbConfig, DbError};
pub use extract::{BadRequest, JsonBody, PathParam, QueryParams};
pub use values::{Area, InvalidValue, PasswordHash, Timestamp, Username};

/// `{}`, the body of answers that carry nothing.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Empty {}

/// Serves `router` on `listener` until `shutdown` completes, then stops `flusher`, which saves the request
/// count one last time.
pub async fn serve(
    name: &str,
    listener: TcpListener,
    router: axum::Router,
    flusher: counter::Flusher,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    telemetry::metrics::handle();
    tracing::info!(
        "{name} listening on {}",
        listener.local_addr().context("reading the bound address")?
    );
    let served = axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
        .context("serving HTTP");
    flusher.stop().await.context("saving the request count")?;
    served
}

/// Completes on Ctrl-C or SIGTERM; for the binaries' `main`.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!("listening for Ctrl-C: {e}");
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::error!("listening for SIGTERM: {e}");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
    tracing::info!("shutting down");
}
