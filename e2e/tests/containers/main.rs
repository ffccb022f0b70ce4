//! The whole system as Docker containers, from `docker-compose.yml` and from `docker-stack.yml`: the images, the
//! Compose file, the stack file, and the orchestrator's Docker and Swarm worker runtimes, tested together against
//! real containers and services.
//!
//! Needs a Docker engine and the images (`scripts/docker-build.sh`); `scripts/test.sh` builds them and runs this
//! when an engine is reachable. Each run is a Compose project of its own (its own name, network, volumes, ports
//! and namespace), removed at the end, pass or fail: containers, the network and the volumes. The images stay,
//! for the next run.
//!
//! Figures are printed (`--nocapture`), never asserted: time to healthy, failover and replacement times.

mod compose;
mod swarm;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use compose::{Engine, Project};
use reqwest::StatusCode;
use serde_json::{json, Value as Json};

const PASSWORD: &str = "3d725109c7e7c0bfb9d709836735b56d943d263f";

/// How long a replacement or a failover may take before the test calls it broken: the 60 s.
const WITHIN: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs Docker and the images: scripts/test.sh runs it after scripts/docker-build.sh"]
async fn the_composed_system_serves_heals_fails_over_scales_and_keeps_its_data_across_down_and_up()
{
    the_system_serves_heals_fails_over_scales_and_keeps_its_data(Engine::Compose).await;
}

/// The same, as a Swarm stack on a one-node swarm (made and left by the test when the engine is in none):
/// `docker stack deploy`, then `stack rm` and deploy again with the data kept.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs Docker and the images: scripts/test.sh runs it after scripts/docker-build.sh"]
async fn the_system_as_a_swarm_stack_serves_heals_fails_over_scales_and_keeps_its_data_across_rm_and_deploy(
) {
    let _swarm = swarm::Membership::join();
    the_system_serves_heals_fails_over_scales_and_keeps_its_data(Engine::Swarm).await;
}

async fn the_system_serves_heals_fails_over_scales_and_keeps_its_data(engine: Engine) {
    // No scaling during the first part: the steps below count workers.
    let mut p = Project::new(engine, 3600);
    let started = Instant::now();
    p.up().await;
    p.wait_healthy().await;
    println!(
        "figure: `up` (cold, empty volumes) to every service healthy: {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // The orchestrator started a master and a slave, each a container whose host pid is the one reported.
    p.wait_for_workers(2).await;
    p.assert_pids_are_the_containers().await;

    let rides = public_api(&p).await;

    // crash/slave: the slave with the highest pid dies, a new container replaces it.
    let before: BTreeSet<u64> = p.worker_pids().await.into_iter().collect();
    let started = Instant::now();
    let (status, body) = p
        .orchestrator(reqwest::Method::POST, "/api/v1/crash/slave", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let killed = body[0].as_u64().expect("the killed pid");
    assert_eq!(
        Some(&killed),
        before.iter().max(),
        "the highest pid is killed"
    );
    assert!(
        !p.container_pids().await.contains(&killed),
        "its container is gone"
    );
    let after = p.wait_for_workers_within(2, WITHIN).await;
    assert!(!after.contains(&killed));
    assert_eq!(after.difference(&before).count(), 1, "one new worker");
    println!(
        "figure: crash/slave to the replacement container listed: {:.0} ms",
        started.elapsed().as_secs_f64() * 1000.0
    );
    p.assert_pids_are_the_containers().await;
    // The replacement serves reads once in sync: every user is still listed through it.
    assert_users(&p, &["alice", "bob"]).await;

    let acked = failover_under_writes(&p).await;
    let mut everyone: Vec<String> = vec!["alice".into(), "bob".into()];
    everyone.extend(acked);
    let everyone: Vec<&str> = everyone.iter().map(String::as_str).collect();
    assert_users(&p, &everyone).await;
    p.wait_for_workers_within(2, WITHIN).await;
    p.assert_pids_are_the_containers().await;

    // The orchestrator crashes (SIGKILL from the host, so its restart policy brings it back): the workers are
    // not its children and keep running; the new orchestrator adopts them, pids unchanged, and can still kill
    // them.
    let workers = p.wait_for_workers_within(2, WITHIN).await;
    let orchestrator = p.service_pid("orchestrator").await;
    let killed_at = Instant::now();
    let status = std::process::Command::new("kill")
        .args(["-KILL", &orchestrator.to_string()])
        .status()
        .expect("running kill");
    assert!(status.success());
    p.wait_healthy().await;
    println!(
        "figure: orchestrator SIGKILL to a new one healthy (restart policy, adoption): {:.1} s",
        killed_at.elapsed().as_secs_f64()
    );
    assert_ne!(
        p.service_pid("orchestrator").await,
        orchestrator,
        "a new orchestrator"
    );
    assert_eq!(
        p.wait_for_workers_within(2, WITHIN).await,
        workers,
        "the same workers"
    );
    p.assert_pids_are_the_containers().await;
    assert_users(&p, &everyone).await;
    let (status, body) = p
        .orchestrator(reqwest::Method::POST, "/api/v1/crash/slave", None)
        .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "crash/slave of an adopted worker: {body}"
    );
    let after = p.wait_for_workers_within(2, WITHIN).await;
    assert!(!after.contains(&body[0].as_u64().expect("a pid")));
    p.assert_pids_are_the_containers().await;

    // down (volumes kept): the orchestrator stops its workers, so nothing of the project keeps running.
    p.down(false).await;
    assert!(
        p.container_pids().await.is_empty(),
        "worker containers outlived `down`"
    );
    // up again, this time with a short scaling interval: the copies on the volume are all that is left, and the
    // furthest one becomes the master again.
    p.scale_interval_secs = 6;
    let started = Instant::now();
    p.up().await;
    p.wait_healthy().await;
    println!(
        "figure: `up` after `down`, with the data kept, to every service healthy: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert_users(&p, &everyone).await;
    let (status, body) = p
        .gateway(
            reqwest::Method::GET,
            &format!("/api/v1/rides/{rides}"),
            None,
        )
        .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the ride survived down and up: {body}"
    );
    assert_eq!(body["users"], json!(["bob"]));
    p.wait_for_workers(2).await;

    scaling(&p, &everyone).await;
    p.down(true).await;
}

/// The public API through the gateway, with the counters; returns the id of a ride that bob joined.
async fn public_api(p: &Project) -> i64 {
    use reqwest::Method;
    for service in [p.users_admin(), p.rides_admin()] {
        let (status, _) = p
            .request(Method::DELETE, &service, "/api/v1/_count", None)
            .await;
        assert_eq!(status, StatusCode::OK);
    }
    for name in ["alice", "bob"] {
        let (status, body) = p
            .gateway(
                Method::PUT,
                "/api/v1/users",
                Some(json!({"username": name, "password": PASSWORD})),
            )
            .await;
        assert_eq!(
            (status, body),
            (StatusCode::CREATED, json!({})),
            "registering {name}"
        );
    }
    let (status, body) = p.gateway(Method::GET, "/api/v1/users", None).await;
    assert_eq!((status, body), (StatusCode::OK, json!(["alice", "bob"])));

    let when = e2e::system::timestamp_in(3600);
    let ride = |source: u8, destination: u8| json!({"created_by": "alice", "timestamp": when, "source": source, "destination": destination});
    let (status, body) = p
        .gateway(Method::POST, "/api/v1/rides", Some(ride(1, 2)))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id = body["rideId"].as_i64().expect("rideId");
    let (status, body) = p
        .gateway(Method::GET, "/api/v1/rides?source=1&destination=2", None)
        .await;
    assert_eq!(
        (status, body),
        (
            StatusCode::OK,
            json!([{"rideId": id, "username": "alice", "timestamp": when}])
        )
    );
    let (status, body) = p
        .gateway(
            Method::POST,
            &format!("/api/v1/rides/{id}"),
            Some(json!({"username": "bob"})),
        )
        .await;
    assert_eq!((status, body), (StatusCode::OK, json!({})), "bob joins");
    let (status, body) = p
        .gateway(Method::GET, &format!("/api/v1/rides/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["created_by"], "alice");
    assert_eq!(body["users"], json!(["bob"]));
    assert_eq!(
        (body["source"].clone(), body["destination"].clone()),
        (json!(1), json!(2))
    );

    // A second ride, deleted.
    let (status, body) = p
        .gateway(Method::POST, "/api/v1/rides", Some(ride(3, 4)))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let doomed = body["rideId"].as_i64().expect("rideId");
    assert_ne!(doomed, id);
    let (status, _) = p
        .gateway(Method::DELETE, &format!("/api/v1/rides/{doomed}"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = p
        .gateway(Method::GET, &format!("/api/v1/rides/{doomed}"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "a deleted ride is gone");
    let (status, body) = p.gateway(Method::GET, "/api/v1/rides/count", None).await;
    assert_eq!((status, body), (StatusCode::OK, json!([1])));

    // The rider page, from the gateway's image, and the areas it names (neither is counted).
    let (status, page) = p.gateway(Method::GET, "/", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        page.as_str()
            .is_some_and(|html| html.contains("<title>RideShare")),
        "the rider page: {page:.200}"
    );
    let (status, areas) = p.gateway(Method::GET, "/api/v1/areas", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(areas.as_array().map(Vec::len), Some(198), "{areas:.200}");

    // Users: 2 registrations, 1 list, and 3 existence checks by rides (2 creations, 1 join). Rides: 2 creations,
    // 1 list, 1 join, 2 details, 1 delete, 1 count.
    let count = |base: String| async move {
        let (status, body) = p.request(Method::GET, &base, "/api/v1/_count", None).await;
        assert_eq!(status, StatusCode::OK);
        body
    };
    assert_eq!(
        count(p.users_admin()).await,
        json!([6]),
        "the users counter"
    );
    assert_eq!(
        count(p.rides_admin()).await,
        json!([8]),
        "the rides counter"
    );
    id
}

/// Registers users one after another while the master is crashed; returns the acknowledged ones, after
/// checking that the writes went on (none failed) and printing how long the failover took.
async fn failover_under_writes(p: &Project) -> Vec<String> {
    let mut acked = Vec::new();
    let mut crashed_at: Option<Instant> = None;
    let mut first_after: Option<Duration> = None;
    let mut n = 0;
    while first_after.is_none() || acked.len() < 60 {
        let name = format!("writer-{n}");
        n += 1;
        let sent = Instant::now();
        let (status, body) = p
            .gateway(
                reqwest::Method::PUT,
                "/api/v1/users",
                Some(json!({"username": name, "password": PASSWORD})),
            )
            .await;
        assert_eq!(
            (status, &body),
            (StatusCode::CREATED, &json!({})),
            "registering {name} during the failover"
        );
        acked.push(name);
        if let Some(crashed) = crashed_at {
            if first_after.is_none() && sent >= crashed {
                first_after = Some(crashed.elapsed());
            }
        }
        if acked.len() == 20 {
            let old_master = p.master_pid().await;
            crashed_at = Some(Instant::now());
            let (status, body) = p
                .orchestrator(reqwest::Method::POST, "/api/v1/crash/master", None)
                .await;
            assert_eq!((status, body), (StatusCode::OK, json!([old_master])));
        }
    }
    println!(
        "figure: crash/master to the first acknowledged registration through the gateway: {:.0} ms",
        first_after.expect("a write after the crash").as_secs_f64() * 1000.0
    );
    acked
}

/// Scaling with the containers: reads through the orchestrator's db/read add slave containers; an idle
/// interval removes them, and they are not started again.
async fn scaling(p: &Project, users: &[&str]) {
    // 45 reads in one interval: 3 slaves. Sent right after a decision, so that they fall in one interval.
    let first = desired_slaves(p).await;
    let read = json!({"sql": "SELECT count(*) FROM users", "params": []});
    let (status, body) = p
        .orchestrator(reqwest::Method::POST, "/api/v1/db/read", Some(read.clone()))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    for _ in 0..44 {
        let (status, body) = p
            .orchestrator(reqwest::Method::POST, "/api/v1/db/read", Some(read.clone()))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let deadline = Instant::now() + WITHIN;
    while desired_slaves(p).await != 3 {
        assert!(
            Instant::now() < deadline,
            "45 reads never asked for 3 slaves (was {first})"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let pids = p.wait_for_workers_within(4, WITHIN).await;
    assert_eq!(p.container_pids().await, pids, "one container per worker");
    let started = p.log_lines("orchestrator", "started a worker").await;
    let retired = p.log_lines("orchestrator", "retired slave stopped").await;
    // Idle: back to one slave; the two others leave and are not replaced.
    while desired_slaves(p).await != 1 {
        assert!(
            Instant::now() < deadline + WITHIN,
            "an idle interval never asked for 1 slave"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let pids = p.wait_for_workers_within(2, WITHIN).await;
    // The supervisor logs each retired slave's end in the pass that would start a replacement if it took the
    // end for a crash; the runtime reports an end only once the container is removed.
    p.wait_for_log_lines("orchestrator", "retired slave stopped", retired + 2, WITHIN)
        .await;
    assert_eq!(
        p.container_pids().await,
        pids,
        "the retired containers are gone"
    );
    assert_eq!(
        p.worker_pids().await.into_iter().collect::<BTreeSet<_>>(),
        pids,
        "no respawn"
    );
    assert_eq!(
        p.log_lines("orchestrator", "started a worker").await,
        started,
        "no worker started since the scale-up"
    );
    assert_users(p, users).await;
}

async fn desired_slaves(p: &Project) -> u64 {
    let (status, body) = p
        .orchestrator(reqwest::Method::GET, "/api/v1/scaling", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["desired"].as_u64().expect("desired")
}

async fn assert_users(p: &Project, expected: &[&str]) {
    let (status, body) = p.gateway(reqwest::Method::GET, "/api/v1/users", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let listed: Vec<&str> = body
        .as_array()
        .expect("a list")
        .iter()
        .map(|v: &Json| v.as_str().expect("a name"))
        .collect();
    assert_eq!(
        listed, expected,
        "every acknowledged user, in creation order"
    );
}
