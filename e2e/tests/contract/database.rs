//! The orchestrator's document, fuzzed on the orchestrator's own address, against a cluster of a master and a
//! slave.

use e2e::Cluster;

use crate::fuzz;

/// The crash routes are left out: each request kills a worker, so fuzzing them would be a failover test with
/// no failover assertions (the `faults` tests are those), and the cluster would spend the run re-electing and
/// starting workers, answering the other operations' requests with 503s that say nothing about the contract.
/// Their answers (`200 [pid]`, `400` with no such worker) are checked by `faults::crash_apis` and the
/// orchestrator's unit tests.
const NOT_FUZZED: &str = "^/api/v1/crash/";

#[tokio::test(flavor = "multi_thread")]
async fn the_database_api_answers_as_its_document_says_whatever_it_is_sent() {
    let cluster = Cluster::start(1).await;
    let document = format!("{}/api/openapi.json", cluster.base);
    fuzz(&document, &cluster.base, Some(NOT_FUZZED)).await;
    cluster.stop().await;
}
