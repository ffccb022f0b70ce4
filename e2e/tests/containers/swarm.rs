//! The orchestrator's Swarm worker runtime on a one-node swarm: workers as Swarm services, each pinned to a
//! node with a volume of its own, their pids the tasks' containers' pids on the node.
//!
//! The test makes the swarm itself when the engine is in none (`docker swarm init --advertise-addr 127.0.0.1`)
//! and leaves it afterwards, pass or fail; an engine already in a swarm is left in it. The orchestrator runs in
//! the test, on the host, and the workers share the host's network (`--docker-network host`) to reach this
//! machine's RabbitMQ and ZooKeeper.

use std::collections::BTreeSet;
use std::process::Command;

use e2e::{st, Cluster, Options};
use protocol::Value;

/// This engine in a swarm for the time of a test: made a one-node swarm if it is in none, and then made to
/// leave it when dropped, so the machine is left as it was found.
pub struct Membership {
    made: bool,
}

impl Membership {
    pub fn join() -> Membership {
        let state = docker(&["info", "--format", "{{.Swarm.LocalNodeState}}"]);
        let made = state.trim() != "active";
        if made {
            docker(&["swarm", "init", "--advertise-addr", "127.0.0.1"]);
        }
        Membership { made }
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        if self.made {
            let _ = Command::new("docker")
                .args(["swarm", "leave", "--force"])
                .output();
        }
    }
}

/// Leaves the machine as it found it: this namespace's services and volumes removed, and the swarm left if
/// the test made it.
struct Swarm {
    namespace: Option<String>,
    _membership: Membership,
}

impl Swarm {
    fn join() -> Swarm {
        Swarm {
            namespace: None,
            _membership: Membership::join(),
        }
    }
}

impl Drop for Swarm {
    fn drop(&mut self) {
        if let Some(ns) = &self.namespace {
            let label = format!("label=org.rideshare.namespace={ns}");
            let services = docker(&["service", "ls", "-q", "--filter", &label]);
            for service in services.split_whitespace() {
                let _ = Command::new("docker")
                    .args(["service", "rm", service])
                    .output();
            }
            // A removed service's containers, stopped ones too, take a moment to go, and hold their volumes
            // until then.
            for _ in 0..300 {
                if docker(&["ps", "--all", "--quiet", "--filter", &label])
                    .trim()
                    .is_empty()
                {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            let volumes = docker(&["volume", "ls", "-q", "--filter", &label]);
            for volume in volumes.split_whitespace() {
                let _ = Command::new("docker")
                    .args(["volume", "rm", volume])
                    .output();
            }
        }
    }
}

/// Runs `docker` and returns its standard output; panics when it fails.
fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("running docker");
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The host pids of the running containers of the namespace's worker services, ascending.
fn container_pids(namespace: &str) -> Vec<u32> {
    let label = format!("label=org.rideshare.namespace={namespace}");
    let ids = docker(&["ps", "-q", "--filter", &label]);
    let mut pids: Vec<u32> = ids
        .split_whitespace()
        .map(|id| {
            docker(&["inspect", "--format", "{{.State.Pid}}", id])
                .trim()
                .parse()
                .expect("a pid")
        })
        .collect();
    pids.sort_unstable();
    pids
}

/// The namespace's worker services, each with its placement constraint and its volume. A service removed
/// between the listing and its inspection (a retiring slave's) is left out.
fn services(namespace: &str) -> Vec<(String, String, String)> {
    let label = format!("label=org.rideshare.namespace={namespace}");
    let names = docker(&["service", "ls", "--format", "{{.Name}}", "--filter", &label]);
    names
        .split_whitespace()
        .filter_map(|name| {
            let format = "{{join .Spec.TaskTemplate.Placement.Constraints \",\"}}|\
                          {{range .Spec.TaskTemplate.ContainerSpec.Mounts}}{{.Source}}{{end}}";
            let out = Command::new("docker")
                .args(["service", "inspect", "--format", format, name])
                .output()
                .expect("running docker");
            let stderr = String::from_utf8_lossy(&out.stderr);
            if !out.status.success() && stderr.contains("no such service") {
                return None;
            }
            assert!(
                out.status.success(),
                "docker service inspect {name}: {stderr}"
            );
            let stdout = String::from_utf8_lossy(&out.stdout);
            let (constraint, volume) = stdout.trim().split_once('|').expect("constraint|volume");
            Some((name.to_owned(), constraint.to_owned(), volume.to_owned()))
        })
        .collect()
}

/// Waits until `worker/list` names exactly `n` workers, all of them running containers of the namespace;
/// returns them.
async fn wait_for_containers(c: &Cluster, n: usize) -> Vec<u32> {
    let deadline = tokio::time::Instant::now() + e2e::SETTLE;
    loop {
        let listed = c.worker_list().await;
        let mut sorted = listed.clone();
        sorted.sort_unstable();
        if listed.len() == n && container_pids(c.names.namespace()) == sorted {
            return sorted;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "worker/list {listed:?} is not the {n} containers {:?}",
            container_pids(c.names.namespace())
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

async fn names(c: &Cluster) -> Vec<String> {
    let rows = c
        .read_ok("SELECT name FROM riders ORDER BY name", vec![])
        .await
        .rows;
    rows.into_iter()
        .map(|row| match &row[0] {
            Value::Text(name) => name.clone(),
            other => panic!("a name, not {other:?}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs Docker and the worker image: scripts/test.sh runs it after scripts/docker-build.sh"]
async fn the_swarm_runtime_places_kills_replaces_adopts_and_scales_its_workers() {
    let mut swarm = Swarm::join();
    let c = Cluster::start_opts(Options {
        swarm: true,
        max_slaves: Some(4),
        ..Options::new(1)
    })
    .await;
    let ns = c.names.namespace().to_owned();
    swarm.namespace = Some(ns.clone());
    let node = docker(&["info", "--format", "{{.Swarm.NodeID}}"])
        .trim()
        .to_owned();

    // A master and a slave, each a service pinned to this node with a volume of its own, whose reported pid is
    // its task's container's.
    let first = wait_for_containers(&c, 2).await;
    let placed = services(&ns);
    assert_eq!(placed.len(), 2, "{placed:?}");
    for (service, constraint, volume) in &placed {
        let id = service
            .strip_prefix(&format!("{ns}-worker-"))
            .expect("a worker service");
        assert_eq!(constraint, &format!("node.id=={node}"));
        assert_eq!(volume, &format!("{ns}-copy-{id}"));
    }

    c.write_ok(vec![st(
        "CREATE TABLE riders (name TEXT PRIMARY KEY)",
        vec![],
    )])
    .await;
    c.write_ok(vec![st("INSERT INTO riders VALUES ('alice')", vec![])])
        .await;
    assert_eq!(names(&c).await, ["alice"]);

    // crash/slave kills the highest pid's container; a new service replaces it and serves the data.
    let killed = c.crash_slave().await;
    assert_eq!(Some(&killed), first.iter().max());
    assert!(
        !container_pids(&ns).contains(&killed),
        "its container is gone"
    );
    let after = wait_for_containers(&c, 2).await;
    assert!(!after.contains(&killed));
    c.wait_for_in_sync(1).await;
    assert_eq!(names(&c).await, ["alice"]);

    // crash/master: the slave takes over, a new slave is started, no acknowledged write is lost.
    let master = c.master_pid();
    assert_eq!(c.crash_master().await, master);
    let after = wait_for_containers(&c, 2).await;
    assert!(!after.contains(&master));
    c.wait_for_in_sync(1).await;
    c.write_ok(vec![st("INSERT INTO riders VALUES ('bob')", vec![])])
        .await;
    assert_eq!(names(&c).await, ["alice", "bob"]);

    // A new orchestrator adopts the running services, pids unchanged, and can still kill them.
    let running: BTreeSet<u32> = after.iter().copied().collect();
    c.restart_orchestrator().await;
    let adopted: BTreeSet<u32> = wait_for_containers(&c, 2).await.into_iter().collect();
    assert_eq!(adopted, running, "the same workers");
    let killed = c.crash_slave().await;
    assert!(!wait_for_containers(&c, 2).await.contains(&killed));
    c.wait_for_in_sync(1).await;

    // A worker's service removed by hand is a worker gone: its end is seen, and a new slave takes its place.
    let before: BTreeSet<u32> = wait_for_containers(&c, 2).await.into_iter().collect();
    let slave = c.slave_ids().pop().expect("a slave in sync");
    docker(&["service", "rm", &format!("{ns}-worker-{slave}")]);
    let deadline = tokio::time::Instant::now() + e2e::SETTLE;
    loop {
        let now: BTreeSet<u32> = wait_for_containers(&c, 2).await.into_iter().collect();
        if now != before {
            assert_eq!(
                now.intersection(&before).count(),
                1,
                "only the slave replaced"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the slave whose service was removed was never replaced"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    c.wait_for_in_sync(1).await;

    // Scaling up starts services, scaling down retires them (their services go too).
    c.set_target_slaves(2).await;
    wait_for_containers(&c, 3).await;
    c.wait_for_in_sync(2).await;
    assert_eq!(services(&ns).len(), 3);
    c.set_target_slaves(1).await;
    wait_for_containers(&c, 2).await;
    let deadline = tokio::time::Instant::now() + e2e::SETTLE;
    while services(&ns).len() != 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "a retired slave's service is still there: {:?}",
            services(&ns)
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(names(&c).await, ["alice", "bob"]);

    c.stop().await;
}
