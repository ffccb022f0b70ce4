//! Histories of a simulated register that is linearizable by construction: each operation takes effect at one
//! instant inside its interval (or, with an unknown outcome, at any instant after its invocation, or never), on a
//! real register per key. The checker's property tests and its speed measurement draw from it; a runner can use
//! it to see the checker through end to end without a cluster.

use std::collections::HashMap;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use crate::history::{History, Op, Operation, Outcome, Process};

/// The shape of a simulated register workload.
#[derive(Clone, Debug)]
pub struct RegisterWorkload {
    pub keys: u64,
    /// Clients running at once, each one operation at a time.
    pub clients: usize,
    pub ops: usize,
    /// Share of operations whose client never learns the outcome; about half of those take effect.
    pub unknown: f64,
    /// Share of operations refused without effect.
    pub fail: f64,
    /// Values written: `None` for a new value each time (as the suite's workload does), `Some(n)` for values in
    /// `0..n`, whose repetitions make the search harder.
    pub values: Option<i64>,
}

impl Default for RegisterWorkload {
    /// The size the checker must handle in seconds: 20,000 operations, 20 keys, 5 clients, 2 % unknown.
    fn default() -> Self {
        RegisterWorkload {
            keys: 20,
            clients: 5,
            ops: 20_000,
            unknown: 0.02,
            fail: 0.01,
            values: None,
        }
    }
}

/// What an operation will do, before the register decides what it answers.
enum Planned {
    Read,
    Write(i64),
    Cas { new: i64, succeed: bool },
}

#[derive(Clone, Copy, PartialEq)]
enum Fate {
    Ok,
    Fail,
    Unknown,
}

struct Plan {
    process: Process,
    key: u64,
    invoked: u64,
    completed: u64,
    /// When it takes effect (microseconds), if it does.
    effect: Option<u64>,
    fate: Fate,
    planned: Planned,
}

/// A history of `workload`, the same for the same seed. Times are in microseconds: a few hundred to a few
/// thousand per operation, one in twenty much longer.
pub fn register_history(workload: &RegisterWorkload, seed: u64) -> History {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut next_value = 0i64;
    let mut value = |rng: &mut StdRng| match workload.values {
        Some(n) => rng.random_range(0..n.max(1)),
        None => {
            next_value += 1;
            next_value
        }
    };
    let clients = workload.clients.max(1);
    let mut clocks = vec![0u64; clients];
    let mut processes: Vec<Process> = (0..clients as Process).collect();
    let mut next_process = clients as Process;
    let mut plans = Vec::with_capacity(workload.ops);
    for _ in 0..workload.ops {
        let client = (0..clients).min_by_key(|&c| clocks[c]).unwrap_or(0);
        let invoked = clocks[client] + rng.random_range(0..200);
        let latency = if rng.random_bool(0.05) {
            rng.random_range(3_000..30_000)
        } else {
            rng.random_range(100..3_000)
        };
        let completed = invoked + latency;
        clocks[client] = completed;
        let fate = if rng.random_bool(workload.unknown) {
            Fate::Unknown
        } else if rng.random_bool(workload.fail) {
            Fate::Fail
        } else {
            Fate::Ok
        };
        let effect = match fate {
            Fate::Ok => Some(rng.random_range(invoked..=completed)),
            Fate::Fail => None,
            // An operation given up on may still land later: a queued write, a slow master.
            Fate::Unknown => rng
                .random_bool(0.5)
                .then(|| rng.random_range(invoked..=completed + 10_000)),
        };
        let planned = match rng.random_range(0..10) {
            0..5 => Planned::Read,
            5..8 => Planned::Write(value(&mut rng)),
            _ => Planned::Cas {
                new: value(&mut rng),
                succeed: rng.random_bool(0.5),
            },
        };
        let key = rng.random_range(0..workload.keys.max(1));
        plans.push(Plan {
            process: processes[client],
            key,
            invoked,
            completed,
            effect,
            fate,
            planned,
        });
        if fate == Fate::Unknown {
            // Its operation may still be in flight: the client goes on as a new process, as Jepsen's do.
            processes[client] = next_process;
            next_process += 1;
        }
    }

    let mut order: Vec<usize> = (0..plans.len())
        .filter(|&i| plans[i].effect.is_some())
        .collect();
    order.sort_by_key(|&i| plans[i].effect);
    let mut registers: HashMap<u64, i64> = HashMap::new();
    // The value before the current one, per key: what a client that read a moment ago expects in a CAS that fails.
    let mut previous: HashMap<u64, i64> = HashMap::new();
    let mut answers: Vec<Option<Op>> = (0..plans.len()).map(|_| None).collect();
    for i in order {
        let plan = &plans[i];
        let current = registers.get(&plan.key).copied();
        answers[i] = Some(match plan.planned {
            Planned::Read => Op::Read {
                outcome: Outcome::Ok(current),
            },
            Planned::Write(v) => {
                if let Some(old) = registers.insert(plan.key, v) {
                    previous.insert(plan.key, old);
                }
                Op::Write {
                    value: v,
                    outcome: Outcome::Ok(()),
                }
            }
            Planned::Cas { new, succeed } => {
                let stale = previous
                    .get(&plan.key)
                    .copied()
                    .filter(|&old| Some(old) != current);
                let expected = match current {
                    Some(current) if succeed => current,
                    _ => stale.unwrap_or(-1),
                };
                if current == Some(expected) {
                    previous.insert(plan.key, expected);
                    registers.insert(plan.key, new);
                }
                Op::Cas {
                    expected,
                    new,
                    outcome: Outcome::Ok(current == Some(expected)),
                }
            }
        });
    }

    let mut ops: Vec<Operation> = plans
        .iter()
        .zip(answers)
        .map(|(plan, answer)| {
            let op = record(plan, answer);
            Operation {
                process: plan.process,
                key: plan.key,
                invoked: Duration::from_micros(plan.invoked),
                completed: Duration::from_micros(plan.completed),
                op,
            }
        })
        .collect();
    ops.sort_by_key(|op| op.invoked);
    History {
        ops,
        faults: Vec::new(),
    }
}

/// What the client recorded: the register's answer when it learnt it, its question with `Fail` or `Info`
/// otherwise.
fn record(plan: &Plan, answer: Option<Op>) -> Op {
    if plan.fate == Fate::Ok {
        return answer.expect("an operation answered ok took effect");
    }
    match (&plan.planned, answer) {
        (_, Some(Op::Cas { expected, new, .. })) => Op::Cas {
            expected,
            new,
            outcome: unanswered(plan.fate),
        },
        (Planned::Read, _) => Op::Read {
            outcome: unanswered(plan.fate),
        },
        (Planned::Write(value), _) => Op::Write {
            value: *value,
            outcome: unanswered(plan.fate),
        },
        // A CAS that never ran had no expected value drawn: any that the register never held will do.
        (Planned::Cas { new, .. }, _) => Op::Cas {
            expected: -1,
            new: *new,
            outcome: unanswered(plan.fate),
        },
    }
}

fn unanswered<T>(fate: Fate) -> Outcome<T> {
    match fate {
        Fate::Fail => Outcome::Fail("refused".into()),
        Fate::Ok | Fate::Unknown => Outcome::Info("no answer".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Status;

    #[test]
    fn the_same_seed_gives_the_same_history_and_outcomes_come_in_every_kind() {
        let workload = RegisterWorkload {
            ops: 2_000,
            unknown: 0.05,
            fail: 0.05,
            ..RegisterWorkload::default()
        };
        let history = register_history(&workload, 7);
        assert_eq!(history, register_history(&workload, 7));
        assert_eq!(history.ops.len(), 2_000);
        for status in [Status::Ok, Status::Fail, Status::Unknown] {
            assert!(
                history.ops.iter().any(|op| op.op.status() == status),
                "{status:?}"
            );
        }
        let successful_cas = |wanted| {
            history
                .ops
                .iter()
                .any(|op| matches!(op.op, Op::Cas { outcome: Outcome::Ok(b), .. } if b == wanted))
        };
        assert!(successful_cas(true) && successful_cas(false));
    }

    #[test]
    fn a_client_never_runs_two_operations_at_once() {
        let history = register_history(
            &RegisterWorkload {
                ops: 1_000,
                ..RegisterWorkload::default()
            },
            3,
        );
        let mut last: HashMap<Process, Duration> = HashMap::new();
        for op in &history.ops {
            if let Some(previous) = last.insert(op.process, op.completed) {
                assert!(previous <= op.invoked);
            }
        }
    }
}
