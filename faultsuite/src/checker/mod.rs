//! The checkers: each reads a [`History`](crate::history::History) and says whether what the clients saw is
//! allowed, and the availability figures, which judge nothing.

pub mod availability;
pub mod register;
pub mod set;

/// A checker's overall answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Validity {
    /// Nothing wrong was found.
    Valid,
    /// The checker could not decide (a search too large, or nothing to decide on), and found nothing wrong.
    Unknown,
    /// Something the system promises was broken.
    Invalid,
}

impl Validity {
    /// The worst of several answers: one invalid part makes the whole invalid.
    pub fn all(parts: impl IntoIterator<Item = Validity>) -> Validity {
        parts.into_iter().max().unwrap_or(Validity::Valid)
    }

    pub fn name(self) -> &'static str {
        match self {
            Validity::Valid => "valid",
            Validity::Unknown => "unknown",
            Validity::Invalid => "INVALID",
        }
    }
}
