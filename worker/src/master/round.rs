//! A round of the master: a batch of commands from the moment they ran until they are answered, and how the
//! outcomes of its writes become the answers to the deliveries they came in.

use std::time::Instant;

use protocol::queue::{CommandReply, LeaseAnchor};

use crate::db::Outcome;

/// How a delivery's jobs are answered.
#[derive(Debug, Clone, Copy)]
pub(super) enum Shape {
    /// `Command::Writes`: one `Batch` reply for its `n` jobs.
    Batch(usize),
    /// `Command::Clear`: one reply.
    Single,
}

/// A join that waits for the end of the round it came in.
#[derive(Debug)]
pub(super) struct Join {
    pub(super) tag: u64,
    pub(super) worker: String,
    pub(super) applied_seq: u64,
    pub(super) anchor: LeaseAnchor,
    pub(super) heard: Instant,
}

/// What became of a round's writes.
#[derive(Debug)]
pub(super) enum Writes {
    /// They ran: one outcome each, in order.
    Ran(Vec<Outcome>),
    /// Too few members when the round began: none ran, each is answered `Unavailable` with this reason.
    Refused { count: usize, error: String },
}

/// A batch of commands under way.
#[derive(Debug)]
pub(super) struct Round {
    pub(super) writes: Writes,
    pub(super) deliveries: Vec<(u64, Shape)>,
    pub(super) joins: Vec<Join>,
    pub(super) last_tag: u64,
    /// The last seq the round published; `None` when it published nothing.
    pub(super) seq: Option<u64>,
    /// When members that have not acknowledged `seq` are given up on.
    pub(super) deadline: Instant,
}

impl Round {
    /// Whether the round would acknowledge a write: then it waits for the previous master's leases.
    pub(super) fn acknowledges(&self) -> bool {
        match &self.writes {
            Writes::Ran(outcomes) => outcomes
                .iter()
                .any(|o| matches!(o, Outcome::Applied(_) | Outcome::Duplicate(_))),
            Writes::Refused { .. } => false,
        }
    }

    /// The answers to the round's deliveries, in order: a write is `Written` only if its entry is at or below
    /// `replicated` (every member holds it), `Unavailable` if not (safe to retry with its key), `Rejected` if
    /// SQLite refused it.
    pub(super) fn answers(self, replicated: u64) -> Vec<(u64, CommandReply)> {
        let answers: Vec<CommandReply> = match self.writes {
            Writes::Refused { count, error } => vec![CommandReply::Unavailable { error }; count],
            Writes::Ran(outcomes) => outcomes
                .into_iter()
                .map(|outcome| match outcome {
                    Outcome::Applied(r) | Outcome::Duplicate(r) if r.seq <= replicated => {
                        CommandReply::Written(r)
                    }
                    Outcome::Applied(_) | Outcome::Duplicate(_) => CommandReply::Unavailable {
                        error: "the write could not be replicated to enough slaves in time; \
                                retry with the same Idempotency-Key"
                            .into(),
                    },
                    Outcome::Rejected(error) => CommandReply::Rejected { error },
                })
                .collect(),
        };
        let mut answers = answers.into_iter();
        let mut replies = Vec::with_capacity(self.deliveries.len());
        for (tag, shape) in self.deliveries {
            let reply = match shape {
                Shape::Single => answers.next(),
                Shape::Batch(n) => Some(CommandReply::Batch {
                    replies: answers.by_ref().take(n).collect(),
                }),
            };
            if let Some(reply) = reply {
                replies.push((tag, reply));
            }
        }
        replies
    }
}
