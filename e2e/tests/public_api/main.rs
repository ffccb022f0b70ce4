//! The public API end to end, as clients use it: through the nginx gateway, to the users and rides services,
//! on a real orchestrator with real worker processes, RabbitMQ and ZooKeeper.
//!
//! One module per concern; between them they cover every row of api.md's users and rides tables, failures
//! included.

mod concurrency;
mod counters;
mod gateway;
mod malformed;
mod rides;
mod users;
