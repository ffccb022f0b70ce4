//! What the clients saw: every operation with the times it was invoked and completed and how it ended, and the
//! fault windows the nemesis opened and healed. A run writes it as JSON lines (one [`Entry`] a line, as it goes,
//! so a runner that dies keeps what it had), and the checkers read it back, so any saved history can be checked
//! again offline.
//!
//! Times are [`Duration`]s since the run's start on the runner's monotonic clock: the clients and the nemesis
//! share that one clock, whatever the hosts' wall clocks say (the suite offsets and steps those on purpose).

use std::collections::BTreeSet;
use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use serde_with::{As, DurationMicroSeconds};

/// A client, as Jepsen counts them: one sequence of operations, never two at once. A client whose operation ended
/// `Info` may still have it in flight, so the runner should give its next operation a new process id.
pub type Process = u64;

/// A register (or a set) of the workload; keys are independent of each other.
pub type Key = u64;

/// How an operation ended, as the client saw it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome<T> {
    /// It happened, and this is what it answered.
    Ok(T),
    /// It certainly did not happen (a 400, say): the reason, for the report.
    Fail(String),
    /// It may or may not have happened, at any time after its invocation (a timeout, a 5xx, a refused or cut
    /// connection): the reason, for the report.
    Info(String),
}

impl<T> Outcome<T> {
    pub fn status(&self) -> Status {
        match self {
            Outcome::Ok(_) => Status::Ok,
            Outcome::Fail(_) => Status::Fail,
            Outcome::Info(_) => Status::Unknown,
        }
    }
}

/// An [`Outcome`] without its value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Status {
    Ok,
    Fail,
    Unknown,
}

/// What an operation asked, with its outcome, typed so that an answer always fits its question.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "f", rename_all = "snake_case")]
pub enum Op {
    /// Register: the current value, `None` while the key has never been written.
    Read { outcome: Outcome<Option<i64>> },
    /// Register: set the value.
    Write { value: i64, outcome: Outcome<()> },
    /// Register: set `new` if the value is `expected`. `Ok(false)` is a definite "no": the value was not `expected`
    /// when it ran. Record it so (rather than as `Fail`) when the client knows that much, as with
    /// `UPDATE … WHERE value = ?` answering 0 rows: the checker then uses what it says. `Fail` is still correct,
    /// it only tells the checker less.
    Cas {
        expected: i64,
        new: i64,
        outcome: Outcome<bool>,
    },
    /// Set: add an element.
    Add { value: i64, outcome: Outcome<()> },
    /// Set: every element, read once at the end of the run.
    ReadAll { outcome: Outcome<BTreeSet<i64>> },
}

impl Op {
    pub fn kind(&self) -> Kind {
        match self {
            Op::Read { .. } => Kind::Read,
            Op::Write { .. } => Kind::Write,
            Op::Cas { .. } => Kind::Cas,
            Op::Add { .. } => Kind::Add,
            Op::ReadAll { .. } => Kind::ReadAll,
        }
    }

    pub fn status(&self) -> Status {
        match self {
            Op::Read { outcome } => outcome.status(),
            Op::Write { outcome, .. } | Op::Add { outcome, .. } => outcome.status(),
            Op::Cas { outcome, .. } => outcome.status(),
            Op::ReadAll { outcome } => outcome.status(),
        }
    }
}

/// How a person reads an operation: `cas(1 → 2) = true`, `write(5): unknown (timed out)`.
impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn outcome<T>(
            f: &mut fmt::Formatter<'_>,
            outcome: &Outcome<T>,
            value: impl Fn(&T) -> String,
        ) -> fmt::Result {
            match outcome {
                Outcome::Ok(answer) => write!(f, "{}", value(answer)),
                Outcome::Fail(reason) => write!(f, ": failed ({reason})"),
                Outcome::Info(reason) => write!(f, ": unknown ({reason})"),
            }
        }
        match self {
            Op::Read { outcome: answer } => {
                write!(f, "read")?;
                outcome(f, answer, |seen| {
                    seen.map_or(" = nothing".into(), |value| format!(" = {value}"))
                })
            }
            Op::Write {
                value,
                outcome: answer,
            } => {
                write!(f, "write({value})")?;
                outcome(f, answer, |_| String::new())
            }
            Op::Cas {
                expected,
                new,
                outcome: answer,
            } => {
                write!(f, "cas({expected} → {new})")?;
                outcome(f, answer, |succeeded| format!(" = {succeeded}"))
            }
            Op::Add {
                value,
                outcome: answer,
            } => {
                write!(f, "add({value})")?;
                outcome(f, answer, |_| String::new())
            }
            Op::ReadAll { outcome: answer } => {
                write!(f, "read_all")?;
                outcome(f, answer, |elements| {
                    format!(" = {} elements", elements.len())
                })
            }
        }
    }
}

/// The kinds of operation, in the order the report shows them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Read,
    Write,
    Cas,
    Add,
    ReadAll,
}

impl Kind {
    pub const ALL: [Kind; 5] = [Kind::Read, Kind::Write, Kind::Cas, Kind::Add, Kind::ReadAll];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Read => "read",
            Kind::Write => "write",
            Kind::Cas => "cas",
            Kind::Add => "add",
            Kind::ReadAll => "read_all",
        }
    }

    /// Reads and writes recover differently after a fault (reads need a slave holding a lease, writes the master
    /// and an in-sync set), so availability counts them apart; a CAS and an add go through `db/write`.
    pub fn class(self) -> Class {
        match self {
            Kind::Read | Kind::ReadAll => Class::Read,
            Kind::Write | Kind::Cas | Kind::Add => Class::Write,
        }
    }
}

/// Operations that take the database's read path, or its write path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Class {
    Read,
    Write,
}

impl Class {
    pub const ALL: [Class; 2] = [Class::Read, Class::Write];

    pub fn name(self) -> &'static str {
        match self {
            Class::Read => "read",
            Class::Write => "write/cas",
        }
    }
}

/// One operation as a client saw it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operation {
    pub process: Process,
    pub key: Key,
    #[serde(rename = "invoked_us", with = "As::<DurationMicroSeconds<u64>>")]
    pub invoked: Duration,
    /// When the client had its answer, or gave up (for `Info`: the checker lets it take effect any time after
    /// `invoked`, this one included).
    #[serde(rename = "completed_us", with = "As::<DurationMicroSeconds<u64>>")]
    pub completed: Duration,
    #[serde(flatten)]
    pub op: Op,
}

impl Operation {
    pub fn latency(&self) -> Duration {
        self.completed.saturating_sub(self.invoked)
    }
}

/// A fault the nemesis held between two instants: a partition, paused or killed processes, a clock offset.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    /// What it was, as the report groups them (`partition-master`, `pause-slave`…): windows of one name are
    /// summarised together.
    pub name: String,
    #[serde(rename = "started_us", with = "As::<DurationMicroSeconds<u64>>")]
    pub started: Duration,
    #[serde(rename = "healed_us", with = "As::<DurationMicroSeconds<u64>>")]
    pub healed: Duration,
}

/// One line of a history file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Entry {
    Op(Operation),
    Fault(Fault),
}

/// Writes one entry as one line, for a runner that records as it goes.
pub fn write_entry(mut writer: impl Write, entry: &Entry) -> io::Result<()> {
    serde_json::to_writer(&mut writer, entry)?;
    writer.write_all(b"\n")
}

/// A whole run: its operations and its faults, each in the order they were recorded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct History {
    pub ops: Vec<Operation>,
    pub faults: Vec<Fault>,
}

impl History {
    /// Reads JSON lines (blank lines skipped); an entry that cannot be read, or whose times go backwards, is an
    /// error naming its line.
    pub fn read_jsonl(reader: impl BufRead) -> anyhow::Result<History> {
        let mut history = History::default();
        for (index, line) in reader.lines().enumerate() {
            let number = index + 1;
            let line = line.with_context(|| format!("reading line {number}"))?;
            if line.trim().is_empty() {
                continue;
            }
            let entry: Entry = serde_json::from_str(&line)
                .with_context(|| format!("line {number} is not a history entry"))?;
            match entry {
                Entry::Op(op) if op.completed < op.invoked => {
                    bail!("line {number}: an operation completed before it was invoked")
                }
                Entry::Fault(fault) if fault.healed < fault.started => {
                    bail!("line {number}: a fault healed before it started")
                }
                Entry::Op(op) => history.ops.push(op),
                Entry::Fault(fault) => history.faults.push(fault),
            }
        }
        Ok(history)
    }

    /// Writes the operations, then the faults, one entry a line.
    pub fn write_jsonl(&self, mut writer: impl Write) -> io::Result<()> {
        for op in &self.ops {
            write_entry(&mut writer, &Entry::Op(op.clone()))?;
        }
        for fault in &self.faults {
            write_entry(&mut writer, &Entry::Fault(fault.clone()))?;
        }
        writer.flush()
    }

    pub fn load(path: &Path) -> anyhow::Result<History> {
        let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        History::read_jsonl(BufReader::new(file))
            .with_context(|| format!("reading {}", path.display()))
    }

    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
        self.write_jsonl(BufWriter::new(file))
            .with_context(|| format!("writing {}", path.display()))
    }

    /// The last instant the history mentions (zero for an empty one).
    pub fn end(&self) -> Duration {
        let ops = self.ops.iter().map(|op| op.completed);
        let faults = self.faults.iter().map(|fault| fault.healed);
        ops.chain(faults).max().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn sample() -> History {
        let op = |process, f: Op| Operation {
            process,
            key: 7,
            invoked: ms(1),
            completed: ms(3),
            op: f,
        };
        History {
            ops: vec![
                op(
                    0,
                    Op::Read {
                        outcome: Outcome::Ok(None),
                    },
                ),
                op(
                    1,
                    Op::Write {
                        value: 5,
                        outcome: Outcome::Info("timed out".into()),
                    },
                ),
                op(
                    2,
                    Op::Cas {
                        expected: 5,
                        new: 6,
                        outcome: Outcome::Ok(false),
                    },
                ),
                op(
                    3,
                    Op::Add {
                        value: 9,
                        outcome: Outcome::Fail("400: constraint".into()),
                    },
                ),
                op(
                    4,
                    Op::ReadAll {
                        outcome: Outcome::Ok(BTreeSet::from([1, 9])),
                    },
                ),
            ],
            faults: vec![Fault {
                name: "partition".into(),
                started: ms(2),
                healed: ms(10),
            }],
        }
    }

    #[test]
    fn a_history_written_as_json_lines_reads_back_the_same() {
        let history = sample();
        let mut bytes = Vec::new();
        history.write_jsonl(&mut bytes).unwrap();
        assert_eq!(String::from_utf8_lossy(&bytes).lines().count(), 6);
        assert_eq!(History::read_jsonl(bytes.as_slice()).unwrap(), history);
    }

    #[test]
    fn a_line_spells_times_in_microseconds_and_the_operation_flat() {
        let line = r#"{"type":"op","process":3,"key":1,"invoked_us":1500,"completed_us":2250,"f":"cas","expected":1,"new":2,"outcome":{"ok":true}}"#;
        let history = History::read_jsonl(line.as_bytes()).unwrap();
        let op = &history.ops[0];
        assert_eq!(
            (op.invoked, op.completed),
            (Duration::from_micros(1500), Duration::from_micros(2250))
        );
        assert_eq!(
            op.op,
            Op::Cas {
                expected: 1,
                new: 2,
                outcome: Outcome::Ok(true)
            }
        );
        let mut written = Vec::new();
        write_entry(&mut written, &Entry::Op(op.clone())).unwrap();
        assert_eq!(String::from_utf8(written).unwrap().trim_end(), line);
    }

    #[test]
    fn an_operation_reads_as_its_question_and_answer() {
        let shown: Vec<String> = sample().ops.iter().map(|op| op.op.to_string()).collect();
        assert_eq!(
            shown,
            [
                "read = nothing",
                "write(5): unknown (timed out)",
                "cas(5 → 6) = false",
                "add(9): failed (400: constraint)",
                "read_all = 2 elements"
            ]
        );
    }

    #[test]
    fn an_operation_that_completes_before_it_was_invoked_is_refused_with_its_line() {
        let line = r#"{"type":"op","process":3,"key":1,"invoked_us":10,"completed_us":5,"f":"read","outcome":{"ok":null}}"#;
        let error = History::read_jsonl(format!("\n{line}\n").as_bytes()).unwrap_err();
        assert!(format!("{error:#}").contains("line 2"), "{error:#}");
    }

    #[test]
    fn an_answer_that_does_not_fit_its_question_is_refused() {
        let line = r#"{"type":"op","process":3,"key":1,"invoked_us":1,"completed_us":5,"f":"write","value":1,"outcome":{"ok":[1,2]}}"#;
        assert!(History::read_jsonl(line.as_bytes()).is_err());
    }
}
