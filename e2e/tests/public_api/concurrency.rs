//! Requests racing each other: the database's constraints, not luck, decide the outcome.

use std::collections::BTreeMap;

use e2e::system::{timestamp_in, System};
use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn fifty_parallel_registrations_of_one_username_give_exactly_one_201() {
    let s = System::start().await;
    let answers = join_all((0..50).map(|_| s.put_user("racer"))).await;
    let created = answers
        .iter()
        .filter(|a| a.0 == StatusCode::CREATED)
        .count();
    let refused = answers
        .iter()
        .filter(|a| a.0 == StatusCode::BAD_REQUEST)
        .count();
    assert_eq!((created, refused), (1, 49), "{answers:?}");
    assert_eq!(
        s.get("/api/v1/users").await,
        (StatusCode::OK, json!(["racer"]))
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn fifty_users_joining_one_ride_in_parallel_each_appear_exactly_once() {
    let s = System::start().await;
    s.register("driver").await;
    let names: Vec<String> = (0..50).map(|i| format!("rider{i:02}")).collect();
    join_all(names.iter().map(|n| s.register(n))).await;
    let ride = s.create_ride("driver", &timestamp_in(86_400), 1, 2).await;

    // Every user sends two joins at once: one of each pair must succeed, the other be refused.
    let path = format!("/api/v1/rides/{ride}");
    let joins = names.iter().chain(names.iter()).map(|n| {
        let (s, path) = (&s, &path);
        async move { (n.clone(), s.post(path, &json!({"username": n})).await) }
    });
    let mut outcomes: BTreeMap<String, Vec<StatusCode>> = BTreeMap::new();
    for (name, (status, _)) in join_all(joins).await {
        outcomes.entry(name).or_default().push(status);
    }
    for (name, mut statuses) in outcomes {
        statuses.sort();
        assert_eq!(
            statuses,
            [StatusCode::OK, StatusCode::BAD_REQUEST],
            "{name}"
        );
    }

    let (status, details) = s.get(&path).await;
    assert_eq!(status, StatusCode::OK);
    let mut joined: Vec<String> = serde_json::from_value(details["users"].clone()).unwrap();
    assert_eq!(joined.len(), 50, "{details}");
    joined.sort();
    assert_eq!(joined, names);
    s.stop().await;
}
