//! How available the system stayed, judged by nothing: for the whole run and for each fault window, the share of
//! operations answered (ok or a definite failure) against those left unknown, reads and writes apart; and after
//! each heal, how long until the first `Ok` of each, with the spread over the windows of one fault.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::history::{Class, Fault, History, Status};

/// Reads and writes, apart.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PerClass<T> {
    pub read: T,
    pub write: T,
}

impl<T> PerClass<T> {
    pub fn get(&self, class: Class) -> &T {
        match class {
            Class::Read => &self.read,
            Class::Write => &self.write,
        }
    }

    fn get_mut(&mut self, class: Class) -> &mut T {
        match class {
            Class::Read => &mut self.read,
            Class::Write => &mut self.write,
        }
    }
}

/// How a set of operations ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Shares {
    pub ok: usize,
    pub fail: usize,
    pub unknown: usize,
}

impl Shares {
    pub fn total(&self) -> usize {
        self.ok + self.fail + self.unknown
    }

    /// The share the client got an answer for, ok or a definite failure; `None` without operations.
    pub fn answered(&self) -> Option<f64> {
        let total = self.total();
        (total > 0).then(|| (self.ok + self.fail) as f64 / total as f64)
    }

    fn count(&mut self, status: Status) {
        match status {
            Status::Ok => self.ok += 1,
            Status::Fail => self.fail += 1,
            Status::Unknown => self.unknown += 1,
        }
    }
}

/// One fault window's figures.
#[derive(Clone, Debug, PartialEq)]
pub struct WindowFigures {
    pub fault: Fault,
    /// Operations invoked while the fault held.
    pub during: PerClass<Shares>,
    /// From the heal to the first `Ok` that completed after it; `None` if none did before the run ended.
    pub recovery: PerClass<Option<Duration>>,
}

/// Least, median (the lower middle one, a time that was measured) and greatest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Spread {
    pub min: Duration,
    pub median: Duration,
    pub max: Duration,
}

impl Spread {
    fn of(mut values: Vec<Duration>) -> Option<Spread> {
        values.sort_unstable();
        let (&min, &max) = (values.first()?, values.last()?);
        Some(Spread {
            min,
            median: values[(values.len() - 1) / 2],
            max,
        })
    }
}

/// The windows of one fault name together.
#[derive(Clone, Debug, PartialEq)]
pub struct FaultSummary {
    pub name: String,
    pub windows: usize,
    pub recovery: PerClass<Option<Spread>>,
    /// Windows after which no `Ok` came before the run ended.
    pub unrecovered: PerClass<usize>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Availability {
    pub overall: PerClass<Shares>,
    /// By start.
    pub windows: Vec<WindowFigures>,
    /// By name.
    pub faults: Vec<FaultSummary>,
}

pub fn figures(history: &History) -> Availability {
    let mut overall = PerClass::<Shares>::default();
    for op in &history.ops {
        overall.get_mut(op.op.kind().class()).count(op.op.status());
    }
    let mut faults: Vec<&Fault> = history.faults.iter().collect();
    faults.sort_by_key(|fault| (fault.started, fault.healed));
    let windows: Vec<WindowFigures> = faults
        .into_iter()
        .map(|fault| window(history, fault))
        .collect();

    let mut by_name: BTreeMap<&str, Vec<&WindowFigures>> = BTreeMap::new();
    for figures in &windows {
        by_name
            .entry(&figures.fault.name)
            .or_default()
            .push(figures);
    }
    let faults = by_name
        .into_iter()
        .map(|(name, windows)| {
            let times = |class| {
                windows
                    .iter()
                    .filter_map(|w| *w.recovery.get(class))
                    .collect::<Vec<_>>()
            };
            let missing = |class| {
                windows
                    .iter()
                    .filter(|w| w.recovery.get(class).is_none())
                    .count()
            };
            FaultSummary {
                name: name.to_string(),
                windows: windows.len(),
                recovery: PerClass {
                    read: Spread::of(times(Class::Read)),
                    write: Spread::of(times(Class::Write)),
                },
                unrecovered: PerClass {
                    read: missing(Class::Read),
                    write: missing(Class::Write),
                },
            }
        })
        .collect();
    Availability {
        overall,
        windows,
        faults,
    }
}

fn window(history: &History, fault: &Fault) -> WindowFigures {
    let mut during = PerClass::<Shares>::default();
    let mut recovery = PerClass::<Option<Duration>>::default();
    for op in &history.ops {
        let class = op.op.kind().class();
        if op.invoked >= fault.started && op.invoked <= fault.healed {
            during.get_mut(class).count(op.op.status());
        }
        if op.op.status() == Status::Ok && op.completed >= fault.healed {
            let after = op.completed - fault.healed;
            let first = recovery.get_mut(class);
            *first = Some(first.map_or(after, |first| first.min(after)));
        }
    }
    WindowFigures {
        fault: fault.clone(),
        during,
        recovery,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{Op, Operation, Outcome};

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn read(from: u64, to: u64, outcome: Outcome<Option<i64>>) -> Operation {
        Operation {
            process: 0,
            key: 0,
            invoked: ms(from),
            completed: ms(to),
            op: Op::Read { outcome },
        }
    }

    fn write(from: u64, to: u64, outcome: Outcome<()>) -> Operation {
        Operation {
            process: 1,
            key: 0,
            invoked: ms(from),
            completed: ms(to),
            op: Op::Write { value: 1, outcome },
        }
    }

    fn fault(name: &str, started: u64, healed: u64) -> Fault {
        Fault {
            name: name.into(),
            started: ms(started),
            healed: ms(healed),
        }
    }

    #[test]
    fn operations_during_a_fault_count_toward_its_window_and_all_toward_the_whole_run() {
        fn timeout<T>() -> Outcome<T> {
            Outcome::Info("timed out".into())
        }
        let history = History {
            ops: vec![
                read(0, 5, Outcome::Ok(None)),
                read(110, 120, timeout()),
                read(130, 140, Outcome::Fail("400".into())),
                write(150, 160, timeout()),
            ],
            faults: vec![fault("partition", 100, 200)],
        };
        let figures = figures(&history);
        assert_eq!(
            figures.overall.read,
            Shares {
                ok: 1,
                fail: 1,
                unknown: 1
            }
        );
        let during = figures.windows[0].during;
        assert_eq!(
            (during.read.answered(), during.write.answered()),
            (Some(0.5), Some(0.0))
        );
        assert_eq!(during.write.total(), 1);
    }

    #[test]
    fn recovery_is_the_time_from_the_heal_to_the_first_ok_of_each_class() {
        let history = History {
            ops: vec![
                read(150, 210, Outcome::Ok(None)),
                read(205, 207, Outcome::Ok(None)),
                write(100, 250, Outcome::Info("timed out".into())),
                write(260, 300, Outcome::Ok(())),
            ],
            faults: vec![fault("partition", 100, 200)],
        };
        let recovery = figures(&history).windows[0].recovery;
        assert_eq!(
            recovery,
            PerClass {
                read: Some(ms(7)),
                write: Some(ms(100))
            }
        );
    }

    #[test]
    fn windows_of_one_fault_are_summarised_together_with_their_spread() {
        let history = History {
            ops: vec![
                read(105, 110, Outcome::Ok(None)),
                read(230, 240, Outcome::Ok(None)),
                read(320, 330, Outcome::Ok(None)),
            ],
            faults: vec![
                fault("pause", 100, 100),
                fault("pause", 200, 200),
                fault("pause", 300, 300),
            ],
        };
        let summary = &figures(&history).faults[0];
        assert_eq!((summary.name.as_str(), summary.windows), ("pause", 3));
        let spread = summary.recovery.read.unwrap();
        assert_eq!(
            (spread.min, spread.median, spread.max),
            (ms(10), ms(30), ms(40))
        );
        assert_eq!(
            (summary.recovery.write, summary.unrecovered.write),
            (None, 3)
        );
    }
}
