//! The seam between the HTTP layer and RabbitMQ: handlers and batchers call through the [`Rpc`] trait, so they
//! can be tested with a fake; in production it is the broker crate's [`ReconnectingRpc`] (one connection,
//! reopened after a broker restart, correlation-id RPC over direct reply-to).
//!
//! The trait lives here, not in the broker crate: only the orchestrator needs to stand a fake in for the
//! broker (the workers test their logic below the broker), and a trait object there would make every user pay
//! for a boxed future.

use std::time::Duration;

use futures::future::BoxFuture;

pub use broker::{ReconnectingRpc, RpcError};

/// Sends one request and waits for its reply.
pub trait Rpc: Send + Sync + 'static {
    /// Publishes `body` on `queue` and returns the reply's body. Gives up after `timeout`, and the request
    /// message expires at the same moment, so a request nobody took in time is not run late. `request_ids`:
    /// the `X-Request-Id`s of the HTTP requests the message carries, space-separated (empty for none), for the
    /// worker's log lines.
    fn call<'a>(
        &'a self,
        queue: &'a str,
        body: &'a [u8],
        request_ids: &'a str,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<Vec<u8>, RpcError>>;
}

impl Rpc for ReconnectingRpc {
    fn call<'a>(
        &'a self,
        queue: &'a str,
        body: &'a [u8],
        request_ids: &'a str,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<Vec<u8>, RpcError>> {
        Box::pin(ReconnectingRpc::call_for(
            self,
            queue,
            body,
            request_ids,
            timeout,
        ))
    }
}
