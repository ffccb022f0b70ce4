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

fn saved(history: &History, dir: &Path) -> std::path::PathBuf {
    let path = dir.join("history.jsonl");
    history.save(&path).unwrap();
    path
}

#[test]
fn a_saved_linearizable_history_is_reported_valid_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let mut history = register_history(
        &RegisterWorkload {
            ops: 2_000,
            keys: 4,
            ..RegisterWorkload::default()
        },
        11,
    );
    let end = history.end();
    history.faults.push(Fault {
        name: "partition".into(),
        started: end / 4,
        healed: end / 2,
    });
    let report = dir.path().join("report.html");
    let output = check(&saved(&history, dir.path()), &report);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("overall: valid"), "{stdout}");
    let page = std::fs::read_to_string(&report).unwrap();
    assert_eq!(page.matches("<circle").count(), history.ops.len());
}

#[test]
fn a_saved_history_with_a_stale_read_is_reported_with_its_window_and_exits_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut history = register_history(
        &RegisterWorkload {
            ops: 2_000,
            keys: 4,
            ..RegisterWorkload::default()
        },
        12,
    );
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
    let report = dir.path().join("report.html");
    let output = check(&saved(&history, dir.path()), &report);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("NOT linearizable") && stdout.contains("read = -1"),
        "{stdout}"
    );
    assert!(std::fs::read_to_string(&report)
        .unwrap()
        .contains("smallest failing window"));
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
