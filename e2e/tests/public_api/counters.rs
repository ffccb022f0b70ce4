//! The request counters: what counts and what does not (docs/api.md, "Both public services"), reset, persistence.

use std::time::Duration;

use e2e::system::{timestamp_in, System};
use e2e::SETTLE;
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn after_a_mix_of_requests_both_counters_hold_exactly_what_the_rules_give() {
    let s = System::start().await;
    let (mut users, mut rides) = (0, 0);

    // N = 3 registrations, and one that fails (failures count too).
    for name in ["alice", "bob", "carol"] {
        s.register(name).await;
    }
    users += 3;
    assert_eq!(s.put_user("alice").await.0, StatusCode::BAD_REQUEST);
    users += 1;

    // M = 2 ride creations: each counts on rides, and its existence check on users.
    let when = timestamp_in(86_400);
    let ride = s.create_ride("alice", &when, 1, 2).await;
    s.create_ride("bob", &when, 1, 2).await;
    rides += 2;
    users += 2;
    // A failed creation counts on rides; on users only if the check was made.
    assert_eq!(
        s.create_ride_raw("alice", "not a time", json!(1), json!(2))
            .await
            .0,
        StatusCode::BAD_REQUEST
    );
    rides += 1;
    assert_eq!(
        s.create_ride_raw("dave", &when, json!(1), json!(2)).await.0,
        StatusCode::BAD_REQUEST
    );
    rides += 1;
    users += 1;

    // K = 4 wrong-method calls, two on each service.
    for (method, path) in [
        (Method::PATCH, "/api/v1/users"),
        (Method::POST, "/api/v1/users/alice"),
        (Method::PUT, "/api/v1/rides"),
        (Method::DELETE, "/api/v1/rides/count"),
    ] {
        assert_eq!(
            s.send(method, path, None).await.0,
            StatusCode::METHOD_NOT_ALLOWED,
            "{path}"
        );
    }
    users += 2;
    rides += 2;

    // L = 4 ride lists, whatever they answer.
    for query in [
        "source=1&destination=2",
        "source=2&destination=1",
        "source=1",
        "source=1&destination=1",
    ] {
        s.get(&format!("/api/v1/rides?{query}")).await;
    }
    rides += 4;

    // The other counted rides routes; a join checks its user too.
    s.get("/api/v1/rides/count").await;
    s.get(&format!("/api/v1/rides/{ride}")).await;
    s.join(ride, "carol").await;
    rides += 3;
    users += 1;

    // None of these count: unknown routes, `_count`, `db/clear`, `/health`.
    for path in [
        "/api/v1/nope",
        "/api/v1/users/a/b",
        "/api/v1/ride",
        "/api/v1/rides/1/x",
        "/api/v1/_count",
        "/health",
    ] {
        s.get(path).await;
    }
    s.send_direct(&s.users_url, Method::GET, "/health").await;
    s.send_direct(&s.rides_url, Method::POST, "/api/v1/db/clear")
        .await;

    assert_eq!(
        (s.users_count().await, s.rides_count().await),
        (users, rides)
    );
    assert_eq!((users, rides), (10, 13));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_a_counter_resets_that_service_s_counter_alone_to_zero() {
    let s = System::start().await;
    s.get("/api/v1/users").await;
    s.get("/api/v1/rides/count").await;
    let answer = s
        .send_direct(&s.users_url, Method::DELETE, "/api/v1/_count")
        .await;
    assert_eq!(answer, (StatusCode::OK, json!({})));
    assert_eq!((s.users_count().await, s.rides_count().await), (0, 1));
    let answer = s
        .send_direct(&s.rides_url, Method::GET, "/api/v1/_count")
        .await;
    assert_eq!(answer, (StatusCode::OK, json!([1])));
    let answer = s
        .send_direct(&s.rides_url, Method::DELETE, "/api/v1/_count")
        .await;
    assert_eq!(answer, (StatusCode::OK, json!({})));
    assert_eq!((s.users_count().await, s.rides_count().await), (0, 0));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_counters_survive_a_restart_of_each_service() {
    let mut s = System::start().await;
    s.register("alice").await;
    s.create_ride("alice", &timestamp_in(3600), 1, 2).await;
    s.get("/api/v1/rides/count").await;
    assert_eq!((s.users_count().await, s.rides_count().await), (2, 2));

    s.restart_users().await;
    s.restart_rides().await;
    assert_eq!((s.users_count().await, s.rides_count().await), (2, 2));

    // And they go on counting from there.
    s.get("/api/v1/users").await;
    assert_eq!(s.users_count().await, 3);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_count_reaches_count_json_within_moments_while_the_service_runs() {
    let s = System::start().await;
    for _ in 0..5 {
        s.get("/api/v1/users").await;
    }
    s.get("/api/v1/rides/count").await;
    for (dir, expected) in [(s.users_data_dir(), 5), (s.rides_data_dir(), 1)] {
        let file = dir.join("count.json");
        let deadline = tokio::time::Instant::now() + SETTLE;
        loop {
            let saved = std::fs::read(&file)
                .ok()
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok());
            if saved == Some(json!({"count": expected})) {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} holds {saved:?}",
                file.display()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    s.stop().await;
}
