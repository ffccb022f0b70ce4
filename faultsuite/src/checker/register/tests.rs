use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::history::{Operation, Outcome};
use crate::sim::{register_history, RegisterWorkload};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// An operation on key 1 by `process`, from `from` to `to` milliseconds.
fn at(process: u64, from: u64, to: u64, op: Op) -> Operation {
    Operation {
        process,
        key: 1,
        invoked: ms(from),
        completed: ms(to),
        op,
    }
}

fn write(value: i64) -> Op {
    Op::Write {
        value,
        outcome: Outcome::Ok(()),
    }
}

fn write_unknown(value: i64) -> Op {
    Op::Write {
        value,
        outcome: Outcome::Info("timed out".into()),
    }
}

fn read(value: i64) -> Op {
    Op::Read {
        outcome: Outcome::Ok(Some(value)),
    }
}

fn read_nothing() -> Op {
    Op::Read {
        outcome: Outcome::Ok(None),
    }
}

fn cas(expected: i64, new: i64, succeeded: bool) -> Op {
    Op::Cas {
        expected,
        new,
        outcome: Outcome::Ok(succeeded),
    }
}

fn verdict(ops: Vec<Operation>) -> Verdict {
    let report = check(
        &History {
            ops,
            faults: Vec::new(),
        },
        &Limits::default(),
    );
    assert_eq!(report.keys.len(), 1);
    report.keys[0].verdict.clone()
}

fn linearizable(ops: Vec<Operation>) -> bool {
    match verdict(ops) {
        Verdict::Linearizable => true,
        Verdict::NotLinearizable { .. } => false,
        Verdict::Unknown { reason } => panic!("no verdict: {reason}"),
    }
}

#[test]
fn a_read_of_an_older_value_after_a_newer_write_completed_is_rejected() {
    let ops = vec![
        at(0, 0, 10, write(1)),
        at(0, 20, 30, write(2)),
        at(1, 40, 50, read(1)),
    ];
    assert!(!linearizable(ops));
}

#[test]
fn an_acknowledged_write_that_every_later_read_misses_is_rejected() {
    let ops = vec![
        at(0, 0, 10, write(1)),
        at(1, 20, 30, write(2)),
        at(2, 40, 50, read(1)),
        at(3, 60, 70, read(1)),
        at(2, 80, 90, read(1)),
    ];
    assert!(!linearizable(ops));
}

#[test]
fn a_later_read_showing_an_older_value_than_an_earlier_read_is_rejected() {
    // The write of 2 is still in flight for both reads, but once one read saw it, a later one must too.
    let ops = vec![
        at(0, 0, 10, write(1)),
        at(0, 20, 100, write(2)),
        at(1, 30, 40, read(2)),
        at(2, 50, 60, read(1)),
    ];
    assert!(!linearizable(ops));
}

#[test]
fn two_compare_and_sets_from_the_same_value_cannot_both_succeed() {
    let ops = vec![
        at(0, 0, 10, write(0)),
        at(1, 20, 40, cas(0, 1, true)),
        at(2, 25, 45, cas(0, 2, true)),
    ];
    assert!(!linearizable(ops));
}

#[test]
fn a_compare_and_set_that_answered_no_while_the_value_was_expected_is_rejected() {
    let ops = vec![at(0, 0, 10, write(1)), at(1, 20, 30, cas(1, 2, false))];
    assert!(!linearizable(ops));
}

#[test]
fn a_read_concurrent_with_a_write_may_see_it_or_not() {
    for seen in [read(1), read_nothing()] {
        assert!(linearizable(vec![
            at(0, 0, 100, write(1)),
            at(1, 10, 20, seen)
        ]));
    }
}

#[test]
fn overlapping_writes_may_take_effect_in_either_order() {
    for last in [1, 2] {
        let ops = vec![
            at(0, 0, 50, write(1)),
            at(1, 10, 60, write(2)),
            at(2, 70, 80, read(last)),
        ];
        assert!(linearizable(ops), "reading {last}");
    }
}

#[test]
fn operations_that_only_touch_in_time_count_as_concurrent() {
    assert!(linearizable(vec![
        at(0, 0, 10, write(1)),
        at(1, 10, 20, read_nothing())
    ]));
}

#[test]
fn chained_compare_and_sets_and_a_refused_one_are_accepted() {
    let ops = vec![
        at(0, 0, 10, write(0)),
        at(1, 20, 30, cas(0, 1, true)),
        at(2, 40, 50, cas(0, 5, false)),
        at(1, 60, 70, cas(1, 2, true)),
        at(2, 80, 90, read(2)),
    ];
    assert!(linearizable(ops));
}

#[test]
fn a_read_before_any_write_sees_nothing_and_after_one_cannot() {
    assert!(linearizable(vec![
        at(0, 0, 10, read_nothing()),
        at(0, 20, 30, write(1))
    ]));
    assert!(!linearizable(vec![
        at(0, 0, 10, write(1)),
        at(1, 20, 30, read_nothing())
    ]));
}

#[test]
fn an_unknown_write_may_have_taken_effect_or_not() {
    let before = || vec![at(0, 0, 10, write(1)), at(1, 20, 30, write_unknown(2))];
    for seen in [2, 1] {
        let mut ops = before();
        ops.push(at(2, 40, 50, read(seen)));
        assert!(linearizable(ops), "reading {seen}");
    }
}

#[test]
fn an_unknown_write_may_take_effect_long_after_its_client_gave_up() {
    let ops = vec![
        at(0, 0, 10, write(1)),
        at(1, 20, 30, write_unknown(2)),
        at(2, 40, 50, read(1)),
        at(2, 60, 70, read(1)),
        at(2, 80, 90, read(2)),
    ];
    assert!(linearizable(ops));
}

#[test]
fn an_unknown_write_seen_and_then_unseen_is_rejected() {
    let ops = vec![
        at(0, 0, 10, write(1)),
        at(1, 20, 30, write_unknown(2)),
        at(2, 40, 50, read(2)),
        at(2, 60, 70, read(1)),
    ];
    assert!(!linearizable(ops));
}

#[test]
fn an_unknown_write_can_explain_a_refused_compare_and_set() {
    let ops = vec![
        at(0, 0, 10, write(1)),
        at(1, 12, 15, write_unknown(3)),
        at(2, 20, 30, cas(1, 2, false)),
    ];
    assert!(linearizable(ops));
}

#[test]
fn an_unknown_compare_and_set_may_have_succeeded() {
    let unknown_cas = Op::Cas {
        expected: 1,
        new: 2,
        outcome: Outcome::Info("503".into()),
    };
    let ops = vec![
        at(0, 0, 10, write(1)),
        at(1, 20, 30, unknown_cas),
        at(2, 40, 50, read(2)),
    ];
    assert!(linearizable(ops));
}

#[test]
fn failed_operations_did_not_happen_and_failed_reads_say_nothing() {
    let failed_write = Op::Write {
        value: 2,
        outcome: Outcome::Fail("400".into()),
    };
    let failed_read = Op::Read {
        outcome: Outcome::Info("timed out".into()),
    };
    let base = vec![
        at(0, 0, 10, write(1)),
        at(1, 20, 30, failed_write),
        at(2, 40, 50, failed_read),
    ];
    let mut seen_failed = base.clone();
    seen_failed.push(at(2, 60, 70, read(2)));
    assert!(!linearizable(seen_failed));
    let mut unseen = base;
    unseen.push(at(2, 60, 70, read(1)));
    assert!(linearizable(unseen));
}

#[test]
fn keys_are_judged_apart() {
    let mut ops = vec![at(0, 0, 10, write(1)), at(1, 20, 30, read(1))];
    ops.push(Operation {
        key: 2,
        ..at(0, 0, 10, write(1))
    });
    ops.push(Operation {
        key: 2,
        ..at(1, 20, 30, read(5))
    });
    let report = check(
        &History {
            ops,
            faults: Vec::new(),
        },
        &Limits::default(),
    );
    let verdicts: Vec<(Key, bool)> = report
        .keys
        .iter()
        .map(|key| (key.key, key.verdict == Verdict::Linearizable))
        .collect();
    assert_eq!(verdicts, vec![(1, true), (2, false)]);
    assert_eq!(report.validity(), Validity::Invalid);
}

#[test]
fn a_search_past_its_limit_answers_unknown_and_says_why() {
    let history = register_history(
        &RegisterWorkload {
            keys: 1,
            ops: 200,
            ..RegisterWorkload::default()
        },
        1,
    );
    let report = check(
        &history,
        &Limits {
            max_states: 10,
            max_time: Duration::from_secs(10),
        },
    );
    match &report.keys[0].verdict {
        Verdict::Unknown { reason } => assert!(reason.contains("search too large"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(report.validity(), Validity::Unknown);
}

#[test]
fn the_failing_window_of_a_long_history_is_the_stale_read_and_the_write_it_missed() {
    // Two clients take turns writing and reading for a second; at 500 ms a read shows the value before the last
    // acknowledged write.
    let mut ops = Vec::new();
    for i in 0..100u64 {
        let t = i * 10;
        ops.push(at(0, t, t + 4, write(i as i64)));
        let seen = if i == 50 { 49 } else { i as i64 };
        ops.push(at(1, t + 5, t + 9, read(seen)));
    }
    let history = History {
        ops,
        faults: Vec::new(),
    };
    let report = check(&history, &Limits::default());
    let Verdict::NotLinearizable { window } = &report.keys[0].verdict else {
        panic!("{:?}", report.keys[0].verdict);
    };
    let shown: Vec<&Op> = window.ops.iter().map(|&i| &history.ops[i].op).collect();
    assert_eq!(shown, vec![&write(50), &read(49)], "{window:?}");
    assert_eq!((window.from, window.to), (ms(500), ms(509)));
    assert_eq!(window.earlier_unknown, 0);
}

#[test]
fn a_failing_window_fails_on_its_own() {
    let history = register_history(
        &RegisterWorkload {
            keys: 1,
            ops: 300,
            ..RegisterWorkload::default()
        },
        5,
    );
    let mut ops = history.ops.clone();
    let stale = corrupt_a_read(&mut ops, 150).expect("a read to corrupt");
    let history = History {
        ops,
        faults: Vec::new(),
    };
    let report = check(&history, &Limits::default());
    let Verdict::NotLinearizable { window } = &report.keys[0].verdict else {
        panic!("{:?}", report.keys[0].verdict);
    };
    assert!(window.ops.contains(&stale), "{window:?}");
    assert!(window.ops.len() < 30, "{window:?}");
    let inside = History {
        ops: window.ops.iter().map(|&i| history.ops[i].clone()).collect(),
        faults: Vec::new(),
    };
    assert_eq!(
        check(&inside, &Limits::default()).validity(),
        Validity::Invalid
    );
}

/// Sets the first answered read from the `from`-th operation on to a value never written; returns its index.
fn corrupt_a_read(ops: &mut [Operation], from: usize) -> Option<usize> {
    let index = (from..ops.len()).find(|&i| {
        matches!(
            ops[i].op,
            Op::Read {
                outcome: Outcome::Ok(_)
            }
        )
    })?;
    ops[index].op = read(-42);
    Some(index)
}

fn workloads() -> impl Strategy<Value = (RegisterWorkload, u64)> {
    (
        1..3u64,
        1..6usize,
        1..60usize,
        0.0..0.3f64,
        0.0..0.1f64,
        prop::option::of(2..5i64),
        any::<u64>(),
    )
        .prop_map(|(keys, clients, ops, unknown, fail, values, seed)| {
            (
                RegisterWorkload {
                    keys,
                    clients,
                    ops,
                    unknown,
                    fail,
                    values,
                },
                seed,
            )
        })
}

proptest! {
    #[test]
    fn histories_of_a_linearizable_register_are_accepted((workload, seed) in workloads()) {
        let history = register_history(&workload, seed);
        let report = check(&history, &Limits::default());
        prop_assert_eq!(report.validity(), Validity::Valid, "{:?}", report);
    }

    #[test]
    fn the_same_histories_with_a_read_of_a_value_never_written_are_rejected(
        (workload, seed) in workloads(),
        position in any::<prop::sample::Index>(),
    ) {
        let mut history = register_history(&workload, seed);
        let from = position.index(history.ops.len());
        let corrupted = corrupt_a_read(&mut history.ops, from).or_else(|| corrupt_a_read(&mut history.ops, 0));
        prop_assume!(corrupted.is_some());
        let report = check(&history, &Limits::default());
        prop_assert_eq!(report.validity(), Validity::Invalid, "{:?}", report);
    }
}

/// Whether some order of the definite operations and some of the unknown ones respects real time and a register
/// starting empty: every order tried, for histories of a handful of operations.
fn linearizable_by_brute_force(history: &History) -> bool {
    fn extend(ops: &[RegOp], placed: &mut Vec<bool>, state: State) -> bool {
        let definite_left = |placed: &[bool], i: usize| !placed[i] && ops[i].returned.is_some();
        if !(0..ops.len()).any(|i| definite_left(placed, i)) {
            return true;
        }
        for x in 0..ops.len() {
            if placed[x] {
                continue;
            }
            let must_wait = (0..ops.len())
                .any(|d| definite_left(placed, d) && ops[d].returned < Some(ops[x].invoked));
            let Some(next) = ops[x].action.step(state).filter(|_| !must_wait) else {
                continue;
            };
            placed[x] = true;
            let found = extend(ops, placed, next);
            placed[x] = false;
            if found {
                return true;
            }
        }
        false
    }
    register_ops(history)
        .values()
        .all(|ops| extend(ops, &mut vec![false; ops.len()], State::Known(None)))
}

fn small_histories() -> impl Strategy<Value = History> {
    let outcome = || prop_oneof![6 => Just(0u8), 2 => Just(1u8), 2 => Just(2u8)];
    let op = (
        0..20u64,
        0..8u64,
        0..3u8,
        0..3i64,
        0..3i64,
        any::<bool>(),
        outcome(),
    )
        .prop_map(|(from, length, kind, a, b, flag, outcome)| {
            let reason = || "simulated".to_string();
            let op = match (kind, outcome) {
                (0, 0) => Op::Read {
                    outcome: Outcome::Ok(flag.then_some(a)),
                },
                (0, _) => Op::Read {
                    outcome: Outcome::Info(reason()),
                },
                (1, 0) => write(a),
                (1, 1) => Op::Write {
                    value: a,
                    outcome: Outcome::Info(reason()),
                },
                (1, _) => Op::Write {
                    value: a,
                    outcome: Outcome::Fail(reason()),
                },
                (_, 0) => cas(a, b, flag),
                (_, 1) => Op::Cas {
                    expected: a,
                    new: b,
                    outcome: Outcome::Info(reason()),
                },
                (_, _) => Op::Cas {
                    expected: a,
                    new: b,
                    outcome: Outcome::Fail(reason()),
                },
            };
            at(0, from, from + length, op)
        });
    prop::collection::vec(op, 1..8).prop_map(|ops| History {
        ops,
        faults: Vec::new(),
    })
}

proptest! {
    #[test]
    fn the_checker_agrees_with_trying_every_order_on_small_histories(history in small_histories()) {
        let expected = if linearizable_by_brute_force(&history) { Validity::Valid } else { Validity::Invalid };
        let report = check(&history, &Limits::default());
        prop_assert_eq!(report.validity(), expected, "{:?}", history.ops);
        // And the failing window's operations, on their own, fail too.
        if let Some(Verdict::NotLinearizable { window }) = report.keys.first().map(|key| &key.verdict) {
            let ops = window.ops.iter().map(|&i| history.ops[i].clone()).collect();
            prop_assert!(!linearizable_by_brute_force(&History { ops, faults: Vec::new() }), "{:?}", window);
        }
    }
}
