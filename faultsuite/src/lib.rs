//! The fault suite: the database service across simulated hosts on one machine.
//!
//! - [`hosts`]: the test bed, network namespaces on a bridge, with cuts, delay and loss between them.
//! - [`services`]: ZooKeeper, RabbitMQ and the orchestrator on their hosts, killed and started again; each host's
//!   wall clock.

pub mod hosts;
pub mod services;
