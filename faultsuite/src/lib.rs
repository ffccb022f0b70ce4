//! The fault suite: the database service across simulated hosts on one machine, under a seeded nemesis, and
//! what its clients saw, checked.
//!
//! A run ([`run`]) starts ZooKeeper, RabbitMQ, the orchestrator and the workers on hosts of their own (network
//! namespaces, [`hosts`], [`services`]), runs clients ([`workload`]) while the nemesis ([`nemesis`]) cuts,
//! pauses, kills and steps clocks, and records a [`History`]: every client operation with its invocation and
//! completion times and its outcome (ok, failed, or unknown), and the windows of the faults. This crate checks
//! it, from memory or from the JSON-lines file the run saved: linearizability of the register workload, the
//! set workload's losses, and how available the system stayed around each fault; and it writes one
//! self-contained HTML report. `faultsuite` runs and checks; `faultsuite-check` checks a saved history again.
//!
//! - [`hosts`]: the test bed, network namespaces on a bridge, with cuts, delay and loss between them.
//! - [`services`]: ZooKeeper, RabbitMQ and the orchestrator on their hosts, killed and started again; each host's
//!   wall clock.
//! - [`workload`]: the clients (registers with compare-and-set, a set) and how answers become the history.
//! - [`nemesis`]: the faults, aimed by role, each healing at the end of its window.
//! - [`run`]: one run, start to end.
//! - [`history`]: operations, outcomes, faults; reading and writing history files.
//! - [`checker::register`]: linearizability of registers with compare-and-set, per key, with the smallest failing
//!   window of a key that fails.
//! - [`checker::set`]: every acknowledged add in the final read, nothing there that was never added.
//! - [`checker::availability`]: answered and unknown shares per fault window, and time to recover after a heal.
//! - [`report`]: the verdicts as text, and the HTML report with latency charts.
//! - [`sim`]: histories of a simulated linearizable register, for tests and measurements.

pub mod checker;
pub mod history;
pub mod hosts;
pub mod nemesis;
pub mod report;
pub mod run;
pub mod services;
pub mod sim;
pub mod workload;

use checker::availability::{self, Availability};
use checker::register::{self, Limits, RegisterReport};
use checker::set::{self, SetReport};
use checker::Validity;
pub use history::History;

/// Every checker's findings on one history.
#[derive(Clone, Debug, PartialEq)]
pub struct Analysis {
    pub register: RegisterReport,
    pub set: SetReport,
    pub availability: Availability,
}

impl Analysis {
    /// Invalid if any checker found a violation; unknown if one could not decide.
    pub fn validity(&self) -> Validity {
        Validity::all([self.register.validity(), self.set.validity()])
    }
}

/// Runs every checker on the history.
pub fn analyse(history: &History, limits: &Limits) -> Analysis {
    Analysis {
        register: register::check(history, limits),
        set: set::check(history),
        availability: availability::figures(history),
    }
}
