//! Restarts of the shared RabbitMQ and ZooKeeper under load. Every test here lives in the `disruptive` module:
//! `scripts/test.sh` runs `test(/^disruptive::/)` alone, after all the others, one at a time, because these stop
//! services every other test uses.

mod disruptive;
