//! Failures for real: SIGKILL, SIGSTOP, broker and coordinator restarts, against real worker processes.

mod failover;
mod fencing;
