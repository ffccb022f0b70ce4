//! The database service end to end: the orchestrator's API, replication and robustness, against real worker
//! processes, RabbitMQ and ZooKeeper.

mod api;
mod consistency;
mod robustness;
