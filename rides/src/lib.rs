//! The RideShare rides service: `POST/GET /api/v1/rides`, `GET/POST/DELETE /api/v1/rides/{rideId}`,
//! `GET /api/v1/rides/count`, its request counter (`/api/v1/_count`) and `POST /api/v1/db/clear`, exactly as
//! `api.md` specifies them.
//!
//! It holds no data of its own: rides live in the shared database behind the orchestrator's `db/write` and
//! `db/read`. Whether a user exists it asks the users service, through the gateway. At start it checks the
//! area list (compiled in, or a file given in the config) and creates the shared schema (idempotently), then serves. The only local state is the request
//! counter, saved to `count.json` in the data directory.
//!
//! Module map:
//! - [`config`]: the command line and environment ([`Config`]).
//! - [`http`]: routes and handlers ([`router`]).
//! - [`db`]: the models (with [`db::RideId`]) and their queries.
//! - [`users_client`]: the existence check against the users service.
//! - [`error`]: the HTTP [`Error`] type and its status codes.
//! - [`openapi`]: the public API's OpenAPI document (rides and users), served at `/api/openapi.json`.

pub mod config;
pub mod db;
pub mod error;
pub mod http;
pub mod openapi;
pub mod users_client;

use std::future::Future;

use anyhow::Context;
use futures::FutureExt;
use public_api::{schema, RequestCounter};
use tokio::net::TcpListener;

pub use config::Config;
pub use error::Error;
pub use http::{router, AppState};
pub use openapi::openapi;
use users_client::UsersClient;

/// Checks the area list, creates the schema (waiting for the orchestrator if it is not up yet), then serves
/// on `listener` until `shutdown` completes, and saves the request count on the way out.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let shutdown = shutdown.shared();
    let areas = config.areas()?;
    tracing::debug!("{} areas", areas.len());
    let origin = match &config.public_url {
        Some(url) => url.clone(),
        None => format!(
            "http://{}",
            listener.local_addr().context("reading the bound address")?
        ),
    };
    let users = UsersClient::new(&config.gateway_url, &origin, config.users_timeout())?;
    let counter = RequestCounter::load(&config.data_dir)?;
    let db = config.db.client()?;
    tokio::select! {
        created = schema::create_when_possible(&db) => created?,
        () = shutdown.clone() => return Ok(()),
    }
    let flusher = counter.spawn_flusher(config.count_flush());
    let router = router(AppState {
        db,
        areas: AppState::encode_areas(&areas),
        counter,
        users,
    });
    public_api::serve("rides", listener, router, flusher, shutdown).await
}
