//! Contract fuzzing: schemathesis (from PyPI, installed by `scripts/setup.sh`) reads each OpenAPI document where
//! it is served, generates requests from it, valid and invalid, sends them, and checks every answer against the
//! document: no 5xx (`not_a_server_error`), a status the operation lists (`status_code_conformance`), the content
//! type it lists (`content_type_conformance`), and a body its schema accepts (`response_schema_conformance`).
//! Anything it finds fails the test, with schemathesis's report (and the `curl` line that reproduces each case).
//!
//! Bounded: a fixed number of examples per operation (`RIDESHARE_FUZZ_EXAMPLES` sets another) and a fixed seed
//! (`RIDESHARE_FUZZ_SEED` picks another), so a run sends the same requests, in about the same time, every time.

mod database;
mod public_api;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio::process::Command;

/// The checks of every run: those of the contract (api.md: errors are JSON, statuses are the documented ones).
const CHECKS: &str =
    "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance";

/// Examples per operation and phase: enough to try every documented parameter and body shape in several
/// wrong ways (some 2,000 requests per API), few enough that a run takes well under a minute on two cores.
const MAX_EXAMPLES: &str = "200";

/// A bound on the whole run, in case schemathesis or the system hangs: the test fails, it does not stall.
const RUN_LIMIT: Duration = Duration::from_secs(240);

/// `RIDESHARE_SCHEMATHESIS`, or where `scripts/setup.sh` installs it.
fn schemathesis() -> PathBuf {
    let state_dir =
        std::env::var("RIDESHARE_STATE_DIR").unwrap_or_else(|_| "/var/lib/rideshare".to_owned());
    std::env::var_os("RIDESHARE_SCHEMATHESIS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(state_dir).join("venv/bin/schemathesis"))
}

/// Fuzzes the API whose document is served at `document` (requests go to `base`), skipping the operations
/// whose path matches `exclude` (a regular expression); panics with schemathesis's report when it finds
/// anything.
pub async fn fuzz(document: &str, base: &str, exclude: Option<&str>) {
    let program = schemathesis();
    assert!(
        program.exists(),
        "{} is missing: run scripts/setup.sh (it installs schemathesis)",
        program.display()
    );
    let seed = std::env::var("RIDESHARE_FUZZ_SEED").unwrap_or_else(|_| "1".to_owned());
    let examples =
        std::env::var("RIDESHARE_FUZZ_EXAMPLES").unwrap_or_else(|_| MAX_EXAMPLES.to_owned());
    // schemathesis writes nothing by default; its working folder is a scratch one all the same.
    let scratch = tempfile::tempdir().expect("a scratch folder");
    let mut command = Command::new(&program);
    command
        .current_dir(scratch.path())
        .args(["run", document, "--url", base])
        .args(["--checks", CHECKS])
        .args(["--max-examples", &examples])
        .args(["--seed", &seed])
        // Links are not declared, so the stateful phase would have nothing to chain.
        .args(["--phases", "examples,coverage,fuzzing"])
        .args(["--request-timeout", "10"])
        .args(["--generation-database", "none"])
        // One worker: with several, Debian 12's Python (3.11.2) sometimes fails inside schemathesis with
        // "SystemError: AST constructor recursion depth mismatch", a CPython bug of `ast` across threads.
        .args(["--workers", "1"])
        .arg("--no-color")
        .kill_on_drop(true);
    if let Some(exclude) = exclude {
        command.args(["--exclude-path-regex", exclude]);
    }
    let started = Instant::now();
    let output = tokio::time::timeout(RUN_LIMIT, command.output())
        .await
        .unwrap_or_else(|_| panic!("schemathesis did not finish within {RUN_LIMIT:?}"))
        .unwrap_or_else(|e| panic!("running {}: {e}", program.display()));
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "schemathesis found problems in {document} ({}):\n{report}",
        output.status
    );
    eprintln!(
        "schemathesis: {document} conforms ({:.0?}):\n{report}",
        started.elapsed()
    );
}
