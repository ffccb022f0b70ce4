//! Everything that crosses a process boundary in RideShare's database service.
//!
//! The orchestrator, the master worker and the slave workers only ever talk through the types in this crate,
//! so a change of wire format is a change here and nowhere else.
//!
//! - [`http`]: the JSON bodies of the orchestrator's database API (`db/write`, `db/read`, `workers`).
//! - [`queue`]: the messages on RabbitMQ: commands on `writeQ`, reads on `readQ`, log entries and heartbeats on
//!   the `syncQ` fanout exchange, and their replies.
//! - [`names`]: queue, exchange and znode names, derived from one namespace so several clusters (tests) can share
//!   one broker and one ZooKeeper.
//! - [`coord`]: what is stored in ZooKeeper: the worker registry (with how far each copy got), the registry of
//!   copies and where each lives, the epoch and the in-sync set.
//! - [`disk`]: a worker's folder: the database file and its bookkeeping table.
//! - [`lease`]: the rules of the read lease and of the master's leadership lease, which need no synchronised
//!   clocks.

pub mod coord;
pub mod disk;
pub mod http;
pub mod lease;
pub mod names;
pub mod queue;

pub use http::{
    ErrorBody, ReadRequest, ReadResponse, Role, Statement, StatementResult, Value, WorkerInfo,
    WriteRequest, WriteResponse,
};
pub use names::Names;
