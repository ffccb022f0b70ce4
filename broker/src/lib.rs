//! The RabbitMQ layer that every RideShare process shares, written once: what each process must declare the
//! same way, how to connect and reconnect, request/reply by correlation id, and consumers read through a
//! channel.
//!
//! Module map:
//! - [`connect`]: one connection with a time limit ([`connect()`]), or retried until it succeeds
//!   ([`connect_with_backoff`]), with the pauses of [`RECONNECT`].
//! - [`topology`]: the durable queues and the fanout exchange of a namespace ([`declare`]), and their removal
//!   ([`delete`]) for tools and tests done with a namespace.
//! - [`consume`]: a consumer whose deliveries a task forwards into an mpsc channel ([`consume_and_forward`]).
//! - [`rpc`]: correlation-id RPC over direct reply-to on one channel ([`RpcChannel`], which the workers use),
//!   and [`reply`] for the side that answers.
//! - [`reconnecting`]: the orchestrator's client on top of it, which keeps one connection and reopens it after a
//!   broker restart ([`ReconnectingRpc`]).

pub mod connect;
pub mod consume;
pub mod reconnecting;
pub mod rpc;
pub mod topology;

pub use connect::{connect, connect_with_backoff, CONNECT_TIMEOUT, RECONNECT};
pub use consume::{consume_and_forward, forward};
pub use reconnecting::ReconnectingRpc;
pub use rpc::{reply, request_ids, RpcChannel, RpcError, DIRECT_REPLY_TO, REQUEST_IDS_HEADER};
pub use topology::{declare, delete};
