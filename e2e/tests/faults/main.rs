//! Failures for real: SIGKILL, SIGSTOP, orchestrator restarts, against real worker processes.

mod broker_connection;
mod crash_apis;
mod failover;
mod fencing;
mod figures;
mod healing;
mod helpers;
mod orchestrator_restart;
mod scaling;
