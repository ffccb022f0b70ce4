//! The fault suite's pure core: what a run's clients saw, and whether it was allowed.
pub mod checker;
pub mod history;
pub mod sim;
