//! The fault suite: the database service across simulated hosts on one machine, under a seeded nemesis.
//!
//! - [`hosts`]: the test bed, network namespaces on a bridge, with cuts, delay and loss between them.
//! - [`services`]: ZooKeeper, RabbitMQ and the orchestrator on their hosts, killed and started again; each host's
//!   wall clock.
//! - [`workload`]: the clients (registers with compare-and-set, a set) and how answers become the history.
//! - [`nemesis`]: the faults, aimed by role, each healing at the end of its window.
//! - [`history`]: what the clients saw.
//! - [`run`]: one run, start to end.

pub mod history;
pub mod hosts;
pub mod nemesis;
pub mod run;
pub mod services;
pub mod workload;
