//! The broker layer against the real RabbitMQ (127.0.0.1:5672, started by the test command). Each test works in
//! a namespace of its own and deletes it at the end.

mod helpers;
mod rpc;
mod topology;
