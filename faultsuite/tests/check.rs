//! `faultsuite-check` on saved histories, as a person re-checking a run would use it.

use std::path::Path;
use std::process::{Command, Output};

use faultsuite::history::{Fault, Op, Outcome};
use faultsuite::sim::{register_history, RegisterWorkload};
use faultsuite::History;

fn check(history: &Path, report: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_faultsuite-check"))
        .arg(history)
        .arg("--report")
        .arg(report)
        .output()
        .expect("running faultsuite-check")
}

/// What `faultsuite-check` printed and exited with on the history once saved, and the report it wrote.
struct Checked {
    code: Option<i32>,
    stdout: String,
    report: String,
}

fn check_saved(history: &History) -> Checked {
    let dir = tempfile::tempdir().unwrap();
    let (path, report) = (
        dir.path().join("history.jsonl"),
        dir.path().join("report.html"),
    );
    history.save(&path).unwrap();
    let output = check(&path, &report);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    Checked {
        code: output.status.code(),
        stdout,
        report: std::fs::read_to_string(&report).unwrap_or_default(),
    }
}

fn simulated(seed: u64) -> History {
    register_history(
        &RegisterWorkload {
            ops: 2_000,
            keys: 4,
            ..RegisterWorkload::default()
        },
        seed,
    )
}

#[test]
fn a_saved_linearizable_history_is_reported_valid_and_exits_zero() {
    let mut history = simulated(11);
    let end = history.end();
    history.faults.push(Fault {
        name: "partition".into(),
        started: end / 4,
        healed: end / 2,
    });
    let checked = check_saved(&history);
    assert_eq!(checked.code, Some(0), "{}", checked.stdout);
    assert!(
        checked.stdout.contains("overall: valid"),
        "{}",
        checked.stdout
    );
    assert_eq!(checked.report.matches("<circle").count(), history.ops.len());
}

#[test]
fn a_saved_history_with_a_read_of_a_value_never_written_is_reported_with_its_window_and_exits_one()
{
    let mut history = simulated(12);
    let read = history.ops.iter_mut().rev().find(|op| {
        matches!(
            op.op,
            Op::Read {
                outcome: Outcome::Ok(Some(_))
            }
        )
    });
    read.unwrap().op = Op::Read {
        outcome: Outcome::Ok(Some(-1)),
    };
    let checked = check_saved(&history);
    assert_eq!(checked.code, Some(1), "{}", checked.stdout);
    assert!(
        checked.stdout.contains("NOT linearizable") && checked.stdout.contains("read = -1"),
        "{}",
        checked.stdout
    );
    assert!(checked.report.contains("smallest failing window"));
}

#[test]
fn a_file_that_is_not_a_history_is_refused_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("history.jsonl");
    std::fs::write(&path, "{\"type\":\"op\"}\n").unwrap();
    let output = check(&path, &dir.path().join("report.html"));
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("line 1"));
}
