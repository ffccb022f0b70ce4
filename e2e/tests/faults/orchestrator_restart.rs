//! Restarts: an orchestrator killed and started again adopts the running workers without touching them; after
//! the whole system was killed, a new orchestrator restarts a worker on every registered copy (on the host
//! that holds it), restores the master from the most up-to-date copy as the workers report it, and every
//! acknowledged write is still there.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use e2e::{is_running, st, Cluster, Options};
use protocol::Value;

use crate::helpers::{self, CountReads, ReadLoad, WriteLoad};

#[tokio::test(flavor = "multi_thread")]
async fn restarting_the_orchestrator_during_a_read_load_leaves_the_workers_untouched_and_reads_resume(
) {
    let c = Arc::new(Cluster::start(2).await);
    helpers::create_table(&c).await;
    for k in 0..100 {
        c.write_ok(vec![st(
            "INSERT INTO t VALUES (?)",
            vec![Value::Integer(k)],
        )])
        .await;
    }
    let load = ReadLoad::start(&c, 4, 100);
    load.wait_for_progress(50).await;
    let pids = c.worker_list().await;
    let master = c.master_pid();

    c.restart_orchestrator().await;
    load.wait_for_progress(50).await;

    // The same processes, adopted: none restarted, none replaced, the master unchanged.
    assert_eq!(c.worker_list().await, pids);
    assert_eq!(c.pids().await, pids);
    assert_eq!(c.master_pid(), master);
    assert!(pids.iter().all(|&p| is_running(p)));
    load.finish().await;

    // The adopted workers are the new orchestrator's to crash and to replace.
    let killed = c.crash_slave().await;
    assert!(pids.contains(&killed));
    let view = c.wait_for_workers(3).await;
    assert!(!view.pids().contains(&killed));
    c.write_ok(vec![st("INSERT INTO t VALUES (100)", vec![])])
        .await;
    c.assert_all_identical().await;
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn after_the_whole_system_is_killed_a_new_orchestrator_restores_every_acknowledged_write() {
    let c = Arc::new(Cluster::start(2).await);
    helpers::create_table(&c).await;
    let load = WriteLoad::start(&c, 8);
    load.wait_for_progress(200).await;
    let ids: BTreeSet<String> = c.view().workers.keys().cloned().collect();

    // Orchestrator and workers SIGKILLed while clients write; ZooKeeper still holds their ephemeral znodes
    // for a session timeout, which must not fool the new orchestrator.
    let killed = c.kill_everything().await;
    assert_eq!(killed.len(), 3);
    let acked = load.finish().await;
    c.restart_orchestrator().await;

    helpers::assert_every_acknowledged_write_is_everywhere(&c, &acked, 2).await;
    // Every worker came back on its own folder, under its own id.
    let back: BTreeSet<String> = c.view().workers.keys().cloned().collect();
    assert_eq!(back, ids);
    assert!(c.worker_list().await.iter().all(|p| !killed.contains(p)));
    // The new orchestrator's events log says how its master came back.
    let (_, cluster) = c.get("/api/v1/cluster").await;
    let restores: Vec<&serde_json::Value> = cluster["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["kind"] == "restore")
        .collect();
    assert_eq!(restores.len(), 1, "{cluster:#}");
    assert!(
        ids.contains(restores[0]["worker"].as_str().unwrap_or_default()),
        "restored on one of the copies: {cluster:#}"
    );
    c.write_ok(vec![st("INSERT INTO t VALUES (-1)", vec![])])
        .await;
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn reads_never_go_back_in_time_across_orchestrator_kills() {
    let c = Arc::new(Cluster::start(2).await);
    helpers::create_table(&c).await;
    let writes = WriteLoad::start(&c, 4);
    let reads = CountReads::start(&c, 4);
    writes.wait_for_progress(100).await;
    // Killed twice while reads and writes go on: whatever it knew of earlier reads is lost each time.
    for _ in 0..2 {
        c.restart_orchestrator().await;
        writes.wait_for_progress(100).await;
    }
    let acked = writes.finish_timed().await;
    let history = reads.finish().await;
    let checked = helpers::assert_reads_never_go_back(&history, &acked);
    assert!(checked > 100, "only {checked} reads answered");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn after_the_whole_system_is_killed_copies_on_two_hosts_are_restored_each_by_a_worker_on_its_host(
) {
    let c = cluster_on_two_hosts().await;
    // Three copies on two hosts: one on each, the third beside one of them.
    let mut per_host: Vec<usize> = copies_by_host(&c).values().map(Vec::len).collect();
    per_host.sort_unstable();
    assert_eq!(per_host, [1, 2], "{:?}", copies_by_host(&c));
    assert_every_worker_runs_on_the_host_of_its_copy(&c);
    helpers::create_table(&c).await;
    let load = WriteLoad::start(&c, 8);
    load.wait_for_progress(200).await;
    let copies = c.view().copies;

    let killed = c.kill_everything().await;
    assert_eq!(killed.len(), 3);
    let acked = load.finish().await;
    c.restart_orchestrator().await;

    helpers::assert_every_acknowledged_write_is_everywhere(&c, &acked, 2).await;
    // The same copies, each on its host, each with its worker again.
    assert_eq!(c.view().copies, copies);
    assert_eq!(
        c.view().workers.keys().collect::<Vec<_>>(),
        copies.keys().collect::<Vec<_>>()
    );
    assert_every_worker_runs_on_the_host_of_its_copy(&c);
    assert!(c.worker_list().await.iter().all(|p| !killed.contains(p)));
    c.write_ok(vec![st("INSERT INTO t VALUES (-1)", vec![])])
        .await;
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restore_leaves_out_a_copy_on_a_host_that_is_down_once_a_copy_of_the_in_sync_set_reported(
) {
    let c = cluster_on_two_hosts().await;
    // The first host holds the master's copy and a slave's, the second the other slave's.
    let placed = copies_by_host(&c);
    let (down, lost) = placed
        .iter()
        .find(|(_, ids)| ids.len() == 1)
        .map(|(host, ids)| (host.clone(), ids[0].clone()))
        .expect("a host with one copy");
    assert_ne!(c.host_of_copy(&c.master_id()), Some(down.clone()));
    helpers::create_table(&c).await;
    let load = WriteLoad::start(&c, 8);
    load.wait_for_progress(200).await;

    c.kill_everything().await;
    let acked = load.finish().await;
    c.take_host_down(&down);
    let restarted = tokio::time::Instant::now();
    c.restart_orchestrator().await;

    // The copy on the host that is down never reports; after waiting for it, the restore goes on without it,
    // since the other host's copies are the master's and an in-sync slave's.
    let view = c.wait_for_in_sync(1).await;
    assert!(
        restarted.elapsed() >= orchestrator::supervisor::REPORT_WAIT,
        "restored after {:?}, without waiting for the silent copy",
        restarted.elapsed()
    );
    assert!(!view.workers.contains_key(&lost));
    c.assert_keys_stored(&acked).await;
    c.write_ok(vec![st("INSERT INTO t VALUES (-1)", vec![])])
        .await;
    c.stop().await;
}

/// A master and two slaves on two hosts.
async fn cluster_on_two_hosts() -> Arc<Cluster> {
    let options = Options {
        hosts: 2,
        ..Options::new(2)
    };
    Arc::new(Cluster::start_opts(options).await)
}

/// The registry of copies, by host: the ids of the copies each holds.
fn copies_by_host(c: &Cluster) -> BTreeMap<String, Vec<String>> {
    let mut placed: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (id, copy) in c.view().copies {
        placed.entry(copy.host).or_default().push(id);
    }
    placed
}

/// Every registered worker was started by the launcher of the host that holds its copy, on its copy there.
fn assert_every_worker_runs_on_the_host_of_its_copy(c: &Cluster) {
    let view = c.view();
    assert!(!view.workers.is_empty());
    for (id, record) in &view.workers {
        let copy = c
            .host_of_copy(id)
            .expect("every worker's copy is registered");
        let (host, data_dir) = Cluster::host_of_worker(record.pid)
            .unwrap_or_else(|| panic!("worker {id} (pid {}) started by no host", record.pid));
        assert_eq!(
            host, copy,
            "worker {id} runs on {host}, its copy is on {copy}"
        );
        assert_eq!(data_dir, c.hosts()[&copy].join(id), "worker {id}");
        assert!(
            c.db_path(id).starts_with(&data_dir),
            "worker {id}'s database is not on its host"
        );
    }
}
