//! The RideShare users service: `PUT/GET /api/v1/users`, `GET/DELETE /api/v1/users/{username}`, its request
//! counter (`/api/v1/_count`) and `POST /api/v1/db/clear`, exactly as `api.md` specifies them.
//!
//! It holds no data of its own: users live in the shared database behind the orchestrator's `db/write` and
//! `db/read`. At start it creates the shared schema there (idempotently), then serves. The only local state is
//! the request counter, saved to `count.json` in the data directory.
//!
//! Module map:
//! - [`config`]: the command line and environment ([`Config`]).
//! - [`http`]: routes and handlers ([`router`]).
//! - [`db`]: the model and its queries.
//! - [`error`]: the HTTP [`Error`] type and its status codes.
//! - [`openapi`]: the OpenAPI document of its routes, merged into the public API's by the rides service.

pub mod config;
pub mod db;
pub mod error;
pub mod http;
pub mod openapi;

use std::future::Future;

use futures::FutureExt;
use public_api::{schema, RequestCounter};
use tokio::net::TcpListener;

pub use config::Config;
pub use error::Error;
pub use http::{router, AppState};
pub use openapi::openapi;

/// Creates the schema (waiting for the orchestrator if it is not up yet), then serves on `listener` until
/// `shutdown` completes, and saves the request count on the way out.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let shutdown = shutdown.shared();
    let counter = RequestCounter::load(&config.data_dir)?;
    let db = config.db.client()?;
    tokio::select! {
        created = schema::create_when_possible(&db) => created?,
        () = shutdown.clone() => return Ok(()),
    }
    let flusher = counter.spawn_flusher(config.count_flush());
    let router = router(AppState { db, counter });
    public_api::serve("users", listener, router, flusher, shutdown).await
}
