//! The set workload: clients add elements to a set per key, and one final read shows what the set kept.
//!
//! Against the final read (the last answered `ReadAll` of the key):
//! - every add acknowledged before the read began must be there, or it was **lost**;
//! - nothing may be there that no add attempted, nor one whose add certainly failed: **unexpected**;
//! - an add of unknown outcome, or one still running when the read began, may be there or not.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::Validity;
use crate::history::{History, Key, Op, Outcome};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetReport {
    pub keys: Vec<SetCheck>,
}

impl SetReport {
    pub fn validity(&self) -> Validity {
        Validity::all(self.keys.iter().map(SetCheck::validity))
    }
}

/// One key's set against its final read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetCheck {
    pub key: Key,
    /// When the final read began; `None` when no read answered, and nothing could be judged.
    pub read_at: Option<Duration>,
    /// Adds acknowledged before the final read began.
    pub acknowledged: usize,
    /// Acknowledged before the read began, and missing from it.
    pub lost: BTreeSet<i64>,
    /// Present, though never attempted or certainly failed.
    pub unexpected: BTreeSet<i64>,
    /// Adds of unknown outcome (or still running at the read) that the read shows, and that it does not.
    pub unknown_present: usize,
    pub unknown_absent: usize,
}

impl SetCheck {
    pub fn validity(&self) -> Validity {
        if !self.lost.is_empty() || !self.unexpected.is_empty() {
            Validity::Invalid
        } else if self.read_at.is_none() {
            Validity::Unknown
        } else {
            Validity::Valid
        }
    }
}

/// What one element's adds came to.
#[derive(Default)]
struct Element {
    acknowledged_before_read: bool,
    /// An add that may have taken effect: acknowledged late, of unknown outcome, or still running.
    maybe: bool,
}

/// Checks every key that has set operations.
pub fn check(history: &History) -> SetReport {
    let mut keys: BTreeMap<Key, Vec<usize>> = BTreeMap::new();
    for (i, op) in history.ops.iter().enumerate() {
        if matches!(op.op, Op::Add { .. } | Op::ReadAll { .. }) {
            keys.entry(op.key).or_default().push(i);
        }
    }
    let keys = keys
        .into_iter()
        .map(|(key, ops)| check_key(history, key, &ops))
        .collect();
    SetReport { keys }
}

fn check_key(history: &History, key: Key, ops: &[usize]) -> SetCheck {
    let final_read = ops
        .iter()
        .map(|&i| &history.ops[i])
        .filter_map(|op| match &op.op {
            Op::ReadAll {
                outcome: Outcome::Ok(elements),
            } => Some((op.completed, op.invoked, elements)),
            _ => None,
        })
        .max_by_key(|&(completed, invoked, _)| (completed, invoked));
    let Some((_, read_at, present)) = final_read else {
        return SetCheck {
            key,
            read_at: None,
            acknowledged: 0,
            lost: BTreeSet::new(),
            unexpected: BTreeSet::new(),
            unknown_present: 0,
            unknown_absent: 0,
        };
    };
    let mut elements: BTreeMap<i64, Element> = BTreeMap::new();
    for op in ops.iter().map(|&i| &history.ops[i]) {
        let Op::Add { value, outcome } = &op.op else {
            continue;
        };
        let element = elements.entry(*value).or_default();
        match outcome {
            Outcome::Ok(()) if op.completed < read_at => element.acknowledged_before_read = true,
            Outcome::Ok(()) | Outcome::Info(_) => element.maybe = true,
            Outcome::Fail(_) => {}
        }
    }
    let attempted = |value: &i64| {
        elements
            .get(value)
            .is_some_and(|e| e.acknowledged_before_read || e.maybe)
    };
    let unexpected = present
        .iter()
        .copied()
        .filter(|value| !attempted(value))
        .collect();
    let mut check = SetCheck {
        key,
        read_at: Some(read_at),
        acknowledged: 0,
        lost: BTreeSet::new(),
        unexpected,
        unknown_present: 0,
        unknown_absent: 0,
    };
    for (value, element) in &elements {
        let there = present.contains(value);
        if element.acknowledged_before_read {
            check.acknowledged += 1;
            if !there {
                check.lost.insert(*value);
            }
        } else if element.maybe && there {
            check.unknown_present += 1;
        } else if element.maybe {
            check.unknown_absent += 1;
        }
    }
    check
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Operation;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn add(value: i64, from: u64, to: u64, outcome: Outcome<()>) -> Operation {
        Operation {
            process: 0,
            key: 3,
            invoked: ms(from),
            completed: ms(to),
            op: Op::Add { value, outcome },
        }
    }

    fn read_all(from: u64, to: u64, elements: &[i64]) -> Operation {
        let outcome = Outcome::Ok(elements.iter().copied().collect());
        Operation {
            process: 9,
            key: 3,
            invoked: ms(from),
            completed: ms(to),
            op: Op::ReadAll { outcome },
        }
    }

    fn check_one(ops: Vec<Operation>) -> SetCheck {
        let report = check(&History {
            ops,
            faults: Vec::new(),
        });
        assert_eq!(report.keys.len(), 1);
        report.keys[0].clone()
    }

    #[test]
    fn an_acknowledged_add_missing_from_the_final_read_is_lost() {
        let check = check_one(vec![
            add(1, 0, 10, Outcome::Ok(())),
            add(2, 5, 15, Outcome::Ok(())),
            read_all(100, 110, &[2]),
        ]);
        assert_eq!(check.lost, BTreeSet::from([1]));
        assert_eq!(
            (check.acknowledged, check.validity()),
            (2, Validity::Invalid)
        );
    }

    #[test]
    fn an_element_never_added_or_whose_add_failed_is_unexpected() {
        let check = check_one(vec![
            add(1, 0, 10, Outcome::Ok(())),
            add(2, 0, 10, Outcome::Fail("400".into())),
            read_all(100, 110, &[1, 2, 7]),
        ]);
        assert_eq!(check.unexpected, BTreeSet::from([2, 7]));
        assert!(check.lost.is_empty());
        assert_eq!(check.validity(), Validity::Invalid);
    }

    #[test]
    fn adds_of_unknown_outcome_may_be_present_or_not() {
        let check = check_one(vec![
            add(1, 0, 10, Outcome::Info("timed out".into())),
            add(2, 0, 10, Outcome::Info("503".into())),
            add(3, 0, 10, Outcome::Ok(())),
            read_all(100, 110, &[1, 3]),
        ]);
        assert_eq!((check.unknown_present, check.unknown_absent), (1, 1));
        assert_eq!(check.validity(), Validity::Valid);
    }

    #[test]
    fn an_add_acknowledged_while_the_final_read_ran_may_be_missing() {
        let check = check_one(vec![
            add(1, 95, 105, Outcome::Ok(())),
            read_all(100, 110, &[]),
        ]);
        assert_eq!(check.validity(), Validity::Valid);
        assert_eq!(check.unknown_absent, 1);
    }

    #[test]
    fn the_last_answered_read_is_the_final_one_and_without_one_nothing_is_judged() {
        let failed = Operation {
            op: Op::ReadAll {
                outcome: Outcome::Info("timed out".into()),
            },
            ..read_all(200, 210, &[])
        };
        let check = check_one(vec![
            add(1, 0, 10, Outcome::Ok(())),
            read_all(50, 60, &[]),
            read_all(100, 110, &[1]),
            failed.clone(),
        ]);
        assert_eq!(
            (check.read_at, check.validity()),
            (Some(ms(100)), Validity::Valid)
        );
        let unread = check_one(vec![add(1, 0, 10, Outcome::Ok(())), failed]);
        assert_eq!(
            (unread.read_at, unread.validity()),
            (None, Validity::Unknown)
        );
    }
}
