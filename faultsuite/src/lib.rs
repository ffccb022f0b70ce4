//! The fault suite's pure core: what a run's clients saw, and whether it was allowed.
//!
//! A run of the suite (hosts, nemesis and workload clients, elsewhere) records a [`History`]: every client
//! operation with its invocation and completion times and its outcome (ok, failed, or unknown), and the windows
//! of the faults it injected. This crate checks it, from memory or from the JSON-lines file the run saved:
//! linearizability of the register workload, the set workload's losses, and how available the system stayed
//! around each fault; and it writes one self-contained HTML report. `faultsuite-check` does all of it for a
//! saved history.
//!
//! - [`history`]: operations, outcomes, faults; reading and writing history files.
//! - [`checker::register`]: linearizability of registers with compare-and-set, per key, with the smallest failing
//!   window of a key that fails.
//! - [`checker::set`]: every acknowledged add in the final read, nothing there that was never added.
//! - [`checker::availability`]: answered and unknown shares per fault window, and time to recover after a heal.
//! - [`report`]: the verdicts as text, and the HTML report with latency charts.
//! - [`sim`]: histories of a simulated linearizable register, for tests and measurements.

pub mod checker;
pub mod history;
pub mod report;
pub mod sim;

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
