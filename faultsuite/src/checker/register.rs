//! Linearizability of registers with compare-and-set, one key at a time.
//!
//! Keys are independent registers, and linearizability is compositional (a history is linearizable if and only
//! if each object's part is), so each key is checked alone: a thousand operations twenty times instead of twenty
//! thousand once.
//!
//! The search is Wing and Gong's, with Lowe's memoization, over a linked list of call and return events as
//! Porcupine lays it out: events sorted by time; any call met before the first return may take effect now (its
//! operation was invoked before every remaining one returned); linearize one, lift it out of the list, go on;
//! when nothing can go before that first return, take the last choice back and try the next. A configuration,
//! the set of operations linearized and the register's value, that was explored once is never explored again.
//!
//! What the history's outcomes mean here:
//! - `Fail` did not happen: dropped. A read that failed or timed out says nothing: dropped too.
//! - `Info` (unknown) writes and CAS may take effect at any time after their invocation, or never: they have no
//!   return event, and the search ends as soon as every definite operation is linearized, whichever unknown ones
//!   it used.
//! - A CAS answered `Ok(false)` is a read that saw anything but `expected`.
//!
//! Unknown operations are what makes such searches blow up (each may or may not have happened, anywhere after its
//! call), so the search here takes them in only where they matter, each rule sound on its own:
//! - an unknown write is linearized only right before an operation that fails without it and succeeds with it
//!   (any linearization can be rearranged so), and of unknown writes of values nothing reads or expects, only one
//!   is tried (they are interchangeable);
//! - an unknown operation no remaining operation could observe is taken out, as it can only be overwritten;
//! - a refused CAS that holds whatever happens (every write of its expected value was overwritten before it
//!   began) observes nothing;
//! - a configuration with the same value as one seen, but with one more unknown operation taken effect, is
//!   dominated by it and not explored.
//!
//! Configurations are remembered by a 128-bit Zobrist hash of the linearized set rather than the set (sixteen
//! bytes whatever the history's length; two distinct configurations share a hash with odds around 2^-128 a pair).
//! Each search is bounded in configurations and time, and answers "unknown" at the bound rather than running on.
//!
//! A key that is not linearizable also gets its smallest failing window: an interval of time whose operations
//! alone cannot be linearized from any starting value. Operations straddling an end of the window, and unknown
//! ones from before it, become optional (they may or may not take effect inside it), so a window that fails
//! proves the whole history fails; its ends are moved in from each side by binary search while it still fails.
//! When the whole history is too large to search, windows of a few operations are tried first, which finds the
//! local violations (a stale read, a lost write) that make up most.
//!
//! Why not a crate: stateright's `LinearizabilityTester` explores interleavings without memoization (exponential
//! on long histories) and only lets the last operation of a thread be unfinished; todc-utils (two releases, 2023)
//! panics on a call without a response, so it cannot express unknown outcomes, and neither can be bounded; no
//! Porcupine port is on crates.io (`porcupine` there is a Win32 wrapper).

use std::cell::Cell;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use rustc_hash::{FxHashMap, FxHashSet};

use super::Validity;
use crate::history::{History, Key, Kind, Op, Operation, Outcome, Status};

/// How far the search for one key may go before it answers "unknown".
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Configurations remembered per search, about 60 bytes each in the hash set: the default, two million, is
    /// some 120 MiB at most, for a search that would take minutes anyway.
    pub max_states: usize,
    /// Time per key for the verdict, and as much again for windows (scanning for one, shrinking one).
    pub max_time: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_states: 2_000_000,
            max_time: Duration::from_secs(10),
        }
    }
}

/// Every key's verdict, by key.
#[derive(Clone, Debug, PartialEq)]
pub struct RegisterReport {
    pub keys: Vec<KeyCheck>,
}

impl RegisterReport {
    pub fn validity(&self) -> Validity {
        Validity::all(self.keys.iter().map(|key| match key.verdict {
            Verdict::Linearizable => Validity::Valid,
            Verdict::Unknown { .. } => Validity::Unknown,
            Verdict::NotLinearizable { .. } => Validity::Invalid,
        }))
    }
}

/// One key's verdict, with what it cost.
#[derive(Clone, Debug, PartialEq)]
pub struct KeyCheck {
    pub key: Key,
    /// Operations the search took into account (failed operations and reads without an answer are not).
    pub operations: usize,
    /// How many of those had an unknown outcome.
    pub unknown: usize,
    pub verdict: Verdict,
    /// Configurations remembered by every search made for this key: the whole history's and its windows'.
    pub states: usize,
    /// Time for the verdict, and for the failing window when there is one.
    pub elapsed: Duration,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    Linearizable,
    /// Not linearizable: the window shows where (the whole history, if shrinking found nothing smaller in time).
    NotLinearizable {
        window: Window,
    },
    /// The search hit a limit: the reason says which.
    Unknown {
        reason: String,
    },
}

/// A stretch of one key's history that cannot be linearized on its own, whatever the register held before it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Window {
    pub from: Duration,
    pub to: Duration,
    /// The key's operations that overlap the window, failed ones included, as indices into `History::ops`, by
    /// invocation.
    pub ops: Vec<usize>,
    /// Operations of unknown outcome invoked before the window, which the check let take effect inside it too.
    pub earlier_unknown: usize,
}

/// Checks every key of the register workload (reads, writes, CAS) in the history; other operations are ignored.
pub fn check(history: &History, limits: &Limits) -> RegisterReport {
    let keys = register_ops(history)
        .into_iter()
        .map(|(key, ops)| check_key(history, key, &ops, limits))
        .collect();
    RegisterReport { keys }
}

fn check_key(history: &History, key: Key, ops: &[RegOp], limits: &Limits) -> KeyCheck {
    let started = Instant::now();
    let outcome = search(
        ops,
        State::Known(None),
        &Budget::new(limits.max_states, limits.max_time),
    );
    let windows = Windows::new(ops, limits);
    let failing = match outcome.found {
        Found::Linearizable => Ok(None),
        Found::NotLinearizable => Ok(Some(windows.shrink((None, None)))),
        // Most violations are local (a stale read, a lost write), and a window that fails proves the whole history
        // fails, for a fraction of what searching everything before it costs.
        Found::GaveUp(reason) => match windows.scan() {
            Some(span) => Ok(Some(windows.shrink(span))),
            None => Err(format!("{reason}; no short window fails either")),
        },
    };
    let verdict = match failing {
        Ok(None) => Verdict::Linearizable,
        Ok(Some(span)) => Verdict::NotLinearizable {
            window: window(history, key, ops, span),
        },
        Err(reason) => Verdict::Unknown { reason },
    };
    KeyCheck {
        key,
        operations: ops.len(),
        unknown: ops.iter().filter(|op| op.returned.is_none()).count(),
        verdict,
        states: outcome.states + windows.states.get(),
        elapsed: started.elapsed(),
    }
}

/// The register's value in the model; `Any` starts a window, where the value before it is not known.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum State {
    Any,
    Known(Option<i64>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    Read(Option<i64>),
    Write(i64),
    /// `succeeded` is `None` for a CAS of unknown outcome.
    Cas {
        expected: i64,
        new: i64,
        succeeded: Option<bool>,
    },
}

impl Action {
    /// The value after this action from `state`, or `None` if it cannot take effect there. A CAS of unknown outcome
    /// is taken as having succeeded: had it failed it would change nothing, the same as leaving it out.
    fn step(self, state: State) -> Option<State> {
        match (self, state) {
            (Action::Read(seen), State::Any) => Some(State::Known(seen)),
            (Action::Read(seen), State::Known(value)) => (seen == value).then_some(state),
            (Action::Write(value), _) => Some(State::Known(Some(value))),
            // Not `expected` says too little to know the value; staying `Any` only ever accepts more.
            (
                Action::Cas {
                    succeeded: Some(false),
                    ..
                },
                State::Any,
            ) => Some(State::Any),
            (
                Action::Cas {
                    expected,
                    succeeded: Some(false),
                    ..
                },
                State::Known(value),
            ) => (value != Some(expected)).then_some(state),
            (Action::Cas { new, .. }, State::Any) => Some(State::Known(Some(new))),
            (Action::Cas { expected, new, .. }, State::Known(value)) => {
                (value == Some(expected)).then_some(State::Known(Some(new)))
            }
        }
    }

    /// The value this action leaves, for one that changes (or may change) the register.
    fn produces(self) -> Option<i64> {
        match self {
            Action::Read(_)
            | Action::Cas {
                succeeded: Some(false),
                ..
            } => None,
            Action::Write(value) | Action::Cas { new: value, .. } => Some(value),
        }
    }

    /// Whether this action, linearized right after the register took `value`, could succeed.
    fn observes(self, value: i64) -> bool {
        match self {
            Action::Read(seen) => seen == Some(value),
            Action::Write(_) => false,
            Action::Cas {
                expected,
                succeeded: Some(false),
                ..
            } => expected != value,
            Action::Cas { expected, .. } => expected == value,
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct RegOp {
    /// Index in `History::ops`.
    index: usize,
    invoked: Duration,
    /// `None`: the outcome is unknown; it may take effect any time after `invoked`, or never.
    returned: Option<Duration>,
    action: Action,
}

/// The key's operations that say something about the register, by invocation.
fn register_ops(history: &History) -> BTreeMap<Key, Vec<RegOp>> {
    let mut keys: BTreeMap<Key, Vec<RegOp>> = BTreeMap::new();
    for (index, operation) in history.ops.iter().enumerate() {
        let definite = Some(operation.completed);
        let (returned, action) = match &operation.op {
            Op::Read {
                outcome: Outcome::Ok(seen),
            } => (definite, Action::Read(*seen)),
            Op::Write {
                value,
                outcome: Outcome::Ok(()),
            } => (definite, Action::Write(*value)),
            Op::Write {
                value,
                outcome: Outcome::Info(_),
            } => (None, Action::Write(*value)),
            Op::Cas {
                expected,
                new,
                outcome: Outcome::Ok(succeeded),
            } => (
                definite,
                Action::Cas {
                    expected: *expected,
                    new: *new,
                    succeeded: Some(*succeeded),
                },
            ),
            Op::Cas {
                expected,
                new,
                outcome: Outcome::Info(_),
            } => (
                None,
                Action::Cas {
                    expected: *expected,
                    new: *new,
                    succeeded: None,
                },
            ),
            Op::Read { .. }
            | Op::Write { .. }
            | Op::Cas { .. }
            | Op::Add { .. }
            | Op::ReadAll { .. } => continue,
        };
        let op = RegOp {
            index,
            invoked: operation.invoked,
            returned,
            action,
        };
        keys.entry(operation.key).or_default().push(op);
    }
    for ops in keys.values_mut() {
        ops.sort_by_key(|op| (op.invoked, op.index));
    }
    keys
}

enum Found {
    Linearizable,
    NotLinearizable,
    GaveUp(String),
}

struct SearchOutcome {
    found: Found,
    states: usize,
}

struct Budget {
    max_states: usize,
    deadline: Instant,
    max_time: Duration,
}

impl Budget {
    fn new(max_states: usize, max_time: Duration) -> Budget {
        Budget {
            max_states,
            deadline: Instant::now() + max_time,
            max_time,
        }
    }
}

/// The events of a search, as a doubly linked list over array indices: node 0 is the head, the call of operation
/// `i` is node `2i + 1` and its return node `2i + 2`. Lifting a node leaves its own links as they were, so
/// putting nodes back in the reverse order of lifting restores the list exactly.
struct Events {
    next: Vec<usize>,
    prev: Vec<usize>,
}

const HEAD: usize = 0;
const NIL: usize = usize::MAX;

fn call_node(op: usize) -> usize {
    2 * op + 1
}

fn return_node(op: usize) -> usize {
    2 * op + 2
}

impl Events {
    /// Calls and returns by time; at equal times calls first, so that operations that merely touch count as
    /// concurrent (a coarse clock must not invent an order).
    fn new(ops: &[RegOp], skip: &[bool]) -> Events {
        let mut order = Vec::with_capacity(2 * ops.len());
        for (i, op) in ops.iter().enumerate().filter(|(i, _)| !skip[*i]) {
            order.push((op.invoked, 0, i, call_node(i)));
            if let Some(returned) = op.returned {
                order.push((returned, 1, i, return_node(i)));
            }
        }
        order.sort_unstable();
        let nodes = 2 * ops.len() + 1;
        let mut events = Events {
            next: vec![NIL; nodes],
            prev: vec![NIL; nodes],
        };
        let mut last = HEAD;
        for (_, _, _, node) in order {
            events.next[last] = node;
            events.prev[node] = last;
            last = node;
        }
        events
    }

    fn lift(&mut self, node: usize) {
        let (prev, next) = (self.prev[node], self.next[node]);
        self.next[prev] = next;
        if next != NIL {
            self.prev[next] = prev;
        }
    }

    fn unlift(&mut self, node: usize) {
        let (prev, next) = (self.prev[node], self.next[node]);
        self.next[prev] = node;
        if next != NIL {
            self.prev[next] = node;
        }
    }

    fn lift_op(&mut self, op: usize, definite: bool) {
        self.lift(call_node(op));
        if definite {
            self.lift(return_node(op));
        }
    }

    fn unlift_op(&mut self, op: usize, definite: bool) {
        if definite {
            self.unlift(return_node(op));
        }
        self.unlift(call_node(op));
    }
}

/// Which operations are refused CAS that hold in every linearization: whatever could leave the register at their
/// `expected` value (an operation of the history, or an `Any` start) is followed, wholly before the CAS began, by
/// a definite operation wholly after it that leaves another value. Such a CAS never needs an unknown operation to
/// take effect before it; counted as an observer, one refused CAS late in a history would keep every earlier
/// unknown operation in play.
fn refusals_that_always_hold(ops: &[RegOp], initial: State) -> Vec<bool> {
    let mut producers: FxHashMap<i64, Vec<usize>> = FxHashMap::default();
    for (i, op) in ops.iter().enumerate() {
        if let Some(value) = op.action.produces() {
            producers.entry(value).or_default().push(i);
        }
    }
    // Definite operations that change the register, by invocation: the candidates to come between.
    let mut between: Vec<(Duration, Duration, i64)> = ops
        .iter()
        .filter_map(|op| Some((op.invoked, op.returned?, op.action.produces()?)))
        .collect();
    between.sort_unstable();
    let overwritten = |after: Option<Duration>, before: Duration, expected: i64| {
        let first =
            between.partition_point(|&(invoked, _, _)| after.is_some_and(|after| invoked <= after));
        between[first..]
            .iter()
            .take_while(|&&(invoked, _, _)| invoked < before)
            .any(|&(_, returned, value)| returned < before && value != expected)
    };
    let holds = |op: &RegOp| {
        let (
            Action::Cas {
                expected,
                succeeded: Some(false),
                ..
            },
            Some(returned),
        ) = (op.action, op.returned)
        else {
            return false;
        };
        let writers = producers
            .get(&expected)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let start_overwritten = initial != State::Any || overwritten(None, op.invoked, expected);
        start_overwritten
            && writers.iter().all(|&p| {
                let writer = &ops[p];
                match writer.returned {
                    _ if writer.invoked > returned => true,
                    Some(written) => overwritten(Some(written), op.invoked, expected),
                    None => false,
                }
            })
    };
    ops.iter().map(holds).collect()
}

/// One operation linearized, with what to restore when it is taken back: the value and hash before it, and where
/// its own entries start in the stacks of pruned and of lifted unknown operations.
struct Linearized {
    op: usize,
    state: State,
    hash: u128,
    pruned_from: usize,
    unknown_from: usize,
}

/// A step of the search. An unknown write is never linearized on its own, only right before an operation that
/// fails without it and succeeds with it: any linearization can be rearranged so (an unknown write followed by
/// an operation that succeeds without it can move after that one, as an operation that never returned may take
/// effect as late as it likes; one followed by a write, or by nothing, can go). This keeps the many unknown
/// writes a faulty run leaves from multiplying every configuration by the ways of placing them.
#[derive(Clone, Copy, Debug)]
enum Move {
    One(usize),
    /// An unknown write, then the operation that needs its value.
    Two(usize, usize),
}

impl Move {
    fn len(self) -> usize {
        match self {
            Move::One(_) => 1,
            Move::Two(..) => 2,
        }
    }
}

/// A configuration on the search's path: its moves and the next one to try.
struct Node {
    moves: Vec<Move>,
    next: usize,
    /// Operations the move into this configuration linearized, to take back on leaving it.
    entered_by: usize,
}

/// One search's working state.
struct Search<'a> {
    ops: &'a [RegOp],
    definite: Vec<bool>,
    /// A random 128-bit key per operation; a set of operations hashes to the xor of its members' keys.
    zobrist: Vec<u128>,
    /// For each operation, the unknown ones whose value it could observe.
    observes: Vec<Vec<usize>>,
    /// For each unknown operation, how many operations not yet linearized could observe it.
    observers: Vec<usize>,
    /// Out of the list: linearized, or pruned as no longer observable.
    lifted: Vec<bool>,
    /// Values some operation reads or expects.
    mentioned: FxHashSet<i64>,
    events: Events,
    seen: FxHashSet<(u128, State)>,
    path: Vec<Linearized>,
    pruned: Vec<usize>,
    lifted_unknown: Vec<usize>,
    state: State,
    hash: u128,
    /// Definite operations not yet linearized: at zero, the history is linearizable.
    remaining: usize,
}

impl<'a> Search<'a> {
    fn new(ops: &'a [RegOp], initial: State) -> Search<'a> {
        let n = ops.len();
        let definite: Vec<bool> = ops.iter().map(|op| op.returned.is_some()).collect();
        // A fixed seed: the same history always takes the same path, so a verdict can be reproduced.
        let mut rng = StdRng::seed_from_u64(0x5eed_1ea5);
        let zobrist: Vec<u128> = (0..n).map(|_| rng.random::<u128>()).collect();
        let unknown: Vec<usize> = (0..n).filter(|&i| !definite[i]).collect();
        let mut observes: Vec<Vec<usize>> = vec![Vec::new(); n];
        let mut observers = vec![0usize; n];
        // Some refused CAS hold whatever happens, and need no unknown operation's help.
        let always = refusals_that_always_hold(ops, initial);
        for (j, op) in ops.iter().enumerate().filter(|&(j, _)| !always[j]) {
            for &i in &unknown {
                let produced = ops[i].action.produces();
                // An operation that returned before the unknown one was invoked was linearized before it.
                let later = op
                    .returned
                    .is_none_or(|returned| returned >= ops[i].invoked);
                if i != j && later && produced.is_some_and(|value| op.action.observes(value)) {
                    observes[j].push(i);
                    observers[i] += 1;
                }
            }
        }
        // Unknown operations nothing observes never need to take effect: they are not even put in the list.
        let lifted: Vec<bool> = (0..n).map(|i| !definite[i] && observers[i] == 0).collect();
        let events = Events::new(ops, &lifted);
        let remaining = definite.iter().filter(|&&d| d).count();
        let mentioned = ops
            .iter()
            .filter_map(|op| match op.action {
                Action::Read(seen) => seen,
                Action::Write(_) => None,
                Action::Cas { expected, .. } => Some(expected),
            })
            .collect();
        Search {
            ops,
            definite,
            zobrist,
            observes,
            observers,
            lifted,
            mentioned,
            events,
            seen: FxHashSet::default(),
            path: Vec::new(),
            pruned: Vec::new(),
            lifted_unknown: Vec::new(),
            state: initial,
            hash: 0,
            remaining,
        }
    }

    /// The moves from the current configuration, in the order of their operations' calls: every call met before
    /// the first return (an operation invoked before every remaining one returned may take effect now).
    fn moves(&self) -> Vec<Move> {
        let mut candidates = Vec::new();
        let mut node = self.events.next[HEAD];
        while node != NIL && node % 2 == 1 {
            candidates.push((node - 1) / 2);
            node = self.events.next[node];
        }
        let unknown_write =
            |i: usize| !self.definite[i] && matches!(self.ops[i].action, Action::Write(_));
        // From `Any` an unknown operation can only narrow what the register may hold: leave it for later.
        let wanted = |i: usize| !unknown_write(i) && (self.definite[i] || self.state != State::Any);
        // Unknown writes of values no operation mentions are interchangeable: whichever goes first, the others stay
        // candidates for every later configuration, so only the first is tried.
        let mentioned = |u: usize| {
            self.ops[u]
                .action
                .produces()
                .is_some_and(|value| self.mentioned.contains(&value))
        };
        let mut unknown_writes = candidates.iter().copied().filter(|&u| unknown_write(u));
        let anonymous = unknown_writes.clone().find(|&u| !mentioned(u));
        let helpers: Vec<usize> = anonymous
            .into_iter()
            .chain(unknown_writes.by_ref().filter(|&u| mentioned(u)))
            .collect();
        let mut moves = Vec::new();
        for &x in candidates.iter().filter(|&&x| wanted(x)) {
            let action = self.ops[x].action;
            if action.step(self.state).is_some() {
                moves.push(Move::One(x));
                continue;
            }
            for &u in &helpers {
                if action
                    .step(State::Known(self.ops[u].action.produces()))
                    .is_some()
                {
                    moves.push(Move::Two(u, x));
                }
            }
        }
        moves
    }

    /// Linearizes operation `i`, which can take effect now, leaving the register at `next`.
    fn push(&mut self, i: usize, next: State) {
        let pruned_from = self.pruned.len();
        let unknown_from = self.lifted_unknown.len();
        let mut hash = self.hash ^ self.zobrist[i];
        if !self.definite[i] {
            self.lifted_unknown.push(i);
        }
        for &k in &self.observes[i] {
            self.observers[k] -= 1;
            if self.observers[k] == 0 && !self.lifted[k] {
                self.pruned.push(k);
                self.lifted_unknown.push(k);
                hash ^= self.zobrist[k];
            }
        }
        self.path.push(Linearized {
            op: i,
            state: self.state,
            hash: self.hash,
            pruned_from,
            unknown_from,
        });
        self.lifted[i] = true;
        self.events.lift_op(i, self.definite[i]);
        for &k in &self.pruned[pruned_from..] {
            self.lifted[k] = true;
            self.events.lift_op(k, false);
        }
        if self.definite[i] {
            self.remaining -= 1;
        }
        (self.state, self.hash) = (next, hash);
    }

    /// Takes the last linearization back.
    fn pop(&mut self) {
        let Some(last) = self.path.pop() else { return };
        for &k in self.pruned[last.pruned_from..].iter().rev() {
            self.lifted[k] = false;
            self.events.unlift_op(k, false);
        }
        self.pruned.truncate(last.pruned_from);
        self.lifted_unknown.truncate(last.unknown_from);
        let i = last.op;
        self.events.unlift_op(i, self.definite[i]);
        self.lifted[i] = false;
        for &k in &self.observes[i] {
            self.observers[k] += 1;
        }
        if self.definite[i] {
            self.remaining += 1;
        }
        (self.state, self.hash) = (last.state, last.hash);
    }

    /// Makes the move unless the configuration it leads to was seen, or is dominated by one seen: the same value
    /// with one of its unknown operations not (yet) taken effect, which leaves every choice this one has and more.
    fn apply(&mut self, step: Move) -> bool {
        let ops = match step {
            Move::One(x) => [Some(x), None],
            Move::Two(u, x) => [Some(u), Some(x)],
        };
        for i in ops.into_iter().flatten() {
            let next = self.ops[i]
                .action
                .step(self.state)
                .expect("moves only hold operations that can take effect");
            self.push(i, next);
        }
        let (hash, state, seen) = (self.hash, self.state, &self.seen);
        let fresh = !seen.contains(&(hash, state))
            && !self
                .lifted_unknown
                .iter()
                .any(|&u| seen.contains(&(hash ^ self.zobrist[u], state)));
        if fresh {
            self.seen.insert((hash, state));
        } else {
            (0..step.len()).for_each(|_| self.pop());
        }
        fresh
    }

    fn run(&mut self, budget: &Budget) -> Found {
        let mut nodes = vec![Node {
            moves: self.moves(),
            next: 0,
            entered_by: 0,
        }];
        let mut steps = 0u64;
        loop {
            if self.remaining == 0 {
                return Found::Linearizable;
            }
            steps += 1;
            if self.seen.len() >= budget.max_states {
                return Found::GaveUp(format!(
                    "search too large: {} configurations, the limit",
                    self.seen.len()
                ));
            }
            if steps.is_multiple_of(4096) && Instant::now() >= budget.deadline {
                return Found::GaveUp(format!(
                    "search too large: {:?} spent, the limit",
                    budget.max_time
                ));
            }
            let Some(node) = nodes.last_mut() else {
                return Found::NotLinearizable;
            };
            if let Some(&step) = node.moves.get(node.next) {
                node.next += 1;
                if self.apply(step) {
                    nodes.push(Node {
                        moves: self.moves(),
                        next: 0,
                        entered_by: step.len(),
                    });
                }
            } else {
                // No move left: some operation had to take effect before a remaining return, and none can.
                let entered_by = node.entered_by;
                nodes.pop();
                (0..entered_by).for_each(|_| self.pop());
            }
        }
    }
}

/// Whether `ops` (by invocation) can be linearized from `initial`.
fn search(ops: &[RegOp], initial: State, budget: &Budget) -> SearchOutcome {
    let mut search = Search::new(ops, initial);
    let found = search.run(budget);
    SearchOutcome {
        found,
        states: search.seen.len(),
    }
}

/// A window of time, `None` at an end that is open.
type Span = (Option<Duration>, Option<Duration>);

/// Checks of windows of one key's history, all within one time budget (`max_time` on top of the verdict's).
struct Windows<'a> {
    /// By invocation.
    ops: &'a [RegOp],
    /// Positions in `ops` of the unknown operations.
    unknown: Vec<usize>,
    /// The longest a definite operation took: one invoked longer than this before a window returned before it.
    longest: Duration,
    /// The first return of a definite operation: a window starting after it leaves something out before it.
    first_return: Option<Duration>,
    max_states: usize,
    deadline: Instant,
    /// Configurations remembered by every window check, for the key's figures.
    states: Cell<usize>,
}

impl<'a> Windows<'a> {
    /// Sizes of the windows scanned, in definite operations: small ones catch local faults cheaply; the whole
    /// history is the verdict's own search.
    const SIZES: [usize; 3] = [16, 128, 1024];

    fn new(ops: &'a [RegOp], limits: &Limits) -> Windows<'a> {
        let deadline = Instant::now() + limits.max_time;
        Windows {
            ops,
            unknown: (0..ops.len())
                .filter(|&i| ops[i].returned.is_none())
                .collect(),
            longest: ops
                .iter()
                .filter_map(|op| Some(op.returned? - op.invoked))
                .max()
                .unwrap_or_default(),
            first_return: ops.iter().filter_map(|op| op.returned).min(),
            max_states: limits.max_states,
            deadline,
            states: Cell::new(0),
        }
    }

    /// The operations of the window as a history of their own, and the value to start from. Definite operations
    /// wholly inside stay as they are; those wholly outside go; those straddling an end become optional (writes
    /// and successful CAS of unknown outcome; reads and refused CAS dropped), since inside the window they may or
    /// may not have taken effect yet. Unknown operations invoked before the end stay. Whenever the history is
    /// linearizable, so is this: cut its linearization after the last operation that returned before the window
    /// and before the first invoked after it, and keep the window's operations.
    fn relax(&self, (from, to): Span) -> (Vec<RegOp>, State) {
        let before = |t: Duration| from.is_some_and(|from| t < from);
        let after = |t: Duration| to.is_some_and(|to| t > to);
        let end = self.ops.partition_point(|op| !after(op.invoked));
        // Definite operations invoked before `start` returned before the window: only unknown ones stay from there.
        let start = self
            .ops
            .partition_point(|op| before(op.invoked + self.longest))
            .min(end);
        let earlier = self.unknown[..self.unknown.partition_point(|&i| i < start)]
            .iter()
            .map(|&i| self.ops[i]);
        let mut kept: Vec<RegOp> = earlier.collect();
        for op in &self.ops[start..end] {
            match op.returned {
                Some(returned) if before(returned) => {}
                Some(returned) if before(op.invoked) || after(returned) => {
                    let optional = match op.action {
                        Action::Write(_) => op.action,
                        Action::Cas {
                            expected,
                            new,
                            succeeded: Some(true),
                        } => Action::Cas {
                            expected,
                            new,
                            succeeded: None,
                        },
                        Action::Read(_) | Action::Cas { .. } => continue,
                    };
                    kept.push(RegOp {
                        returned: None,
                        action: optional,
                        ..*op
                    });
                }
                _ => kept.push(*op),
            }
        }
        let cut_before = self.first_return.is_some_and(before);
        (
            kept,
            if cut_before {
                State::Any
            } else {
                State::Known(None)
            },
        )
    }

    /// Whether the window certainly cannot be linearized; a check that runs out of time or states says no.
    fn fails(&self, span: Span) -> bool {
        self.fails_within(span, self.max_states)
    }

    fn fails_within(&self, span: Span, max_states: usize) -> bool {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        let (window, initial) = self.relax(span);
        let outcome = search(&window, initial, &Budget::new(max_states, left));
        self.states.set(self.states.get() + outcome.states);
        matches!(outcome.found, Found::NotLinearizable)
    }

    /// The first failing window among windows of `SIZES` definite operations, each overlapping the next by half:
    /// for a history too large to search whole.
    fn scan(&self) -> Option<Span> {
        let definite: Vec<&RegOp> = self.ops.iter().filter(|op| op.returned.is_some()).collect();
        for size in Self::SIZES
            .into_iter()
            .take_while(|&size| size < definite.len())
        {
            for start in (0..definite.len()).step_by(size / 2) {
                let inside = &definite[start..(start + size).min(definite.len())];
                let to = inside.iter().filter_map(|op| op.returned).max();
                // A window is a cheap first look: one that would take long must not eat the others' time.
                if self.fails_within((Some(inside[0].invoked), to), self.max_states / 64) {
                    return Some((Some(inside[0].invoked), to));
                }
            }
        }
        None
    }

    /// Moves the ends of a failing window in while it still fails: first the earliest end, then the latest start,
    /// then the end again. Each is a binary search, failing being monotone in the window (a window's relaxation is
    /// a relaxation of any window around it). A check that hits a limit counts as not failing, so the window only
    /// comes out less tight.
    fn shrink(&self, original: Span) -> Span {
        let (from, to) = original;
        let within = |t: Duration| from.is_none_or(|from| t >= from) && to.is_none_or(|to| t <= to);
        let mut ends: Vec<Duration> = self
            .ops
            .iter()
            .filter_map(|op| op.returned)
            .filter(|&t| within(t))
            .collect();
        ends.sort_unstable();
        ends.dedup();
        let earliest_end = |from: Option<Duration>, to: Option<Duration>| {
            let ends = &ends[ends.partition_point(|&end| from.is_some_and(|from| end < from))..];
            let i = ends.partition_point(|&end| !self.fails((from, Some(end))));
            ends.get(i).copied().or(to)
        };
        let to = earliest_end(from, to);
        let mut starts: Vec<Duration> = self
            .ops
            .iter()
            .filter(|op| {
                op.returned.is_some() && within(op.invoked) && to.is_none_or(|to| op.invoked <= to)
            })
            .map(|op| op.invoked)
            .collect();
        starts.sort_unstable();
        starts.dedup();
        let i = starts.partition_point(|&start| self.fails((Some(start), to)));
        let from = i.checked_sub(1).map(|i| starts[i]).or(from);
        let shrunk = (from, earliest_end(from, to));
        // A binary search cut short by the time limit may end on a window it never saw fail.
        if shrunk == original || self.fails(shrunk) {
            shrunk
        } else {
            original
        }
    }
}

fn window(history: &History, key: Key, ops: &[RegOp], (from, to): Span) -> Window {
    let from = from.unwrap_or_else(|| ops.iter().map(|op| op.invoked).min().unwrap_or_default());
    let to = to.unwrap_or_else(|| history.end());
    // An unknown operation lasts until the end of time: it overlaps the window if it was invoked before the end,
    // and those invoked before the start are only counted.
    let overlaps = |op: &Operation| match op.op.status() {
        Status::Unknown => op.invoked >= from && op.invoked <= to,
        Status::Ok | Status::Fail => op.invoked <= to && op.completed >= from,
    };
    let mut inside: Vec<usize> = (0..history.ops.len())
        .filter(|&i| {
            let op = &history.ops[i];
            op.key == key
                && matches!(op.op.kind(), Kind::Read | Kind::Write | Kind::Cas)
                && overlaps(op)
        })
        .collect();
    inside.sort_by_key(|&i| (history.ops[i].invoked, i));
    let earlier_unknown = ops
        .iter()
        .filter(|op| op.returned.is_none() && op.invoked < from)
        .count();
    Window {
        from,
        to,
        ops: inside,
        earlier_unknown,
    }
}

#[cfg(test)]
mod tests;
