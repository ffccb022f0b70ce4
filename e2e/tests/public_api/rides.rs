//! Every row of api.md's rides table, failures included, with the bodies.

use e2e::system::{assert_error, timestamp_in, System};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const DAY: i64 = 86_400;

#[tokio::test(flavor = "multi_thread")]
async fn creating_a_ride_returns_201_with_a_ride_id_that_is_never_reused() {
    let s = System::start().await;
    s.register("alice").await;
    let when = timestamp_in(DAY);
    let first = s.create_ride("alice", &when, 1, 198).await;
    // Areas may also come as strings of digits.
    let answer = s
        .create_ride_raw("alice", &when, json!("7"), json!("012"))
        .await;
    assert_eq!(answer.0, StatusCode::CREATED, "{}", answer.1);
    let second = answer.1["rideId"].as_i64().unwrap();
    assert!(first >= 1 && second > first);

    assert_eq!(
        s.delete(&format!("/api/v1/rides/{second}")).await.0,
        StatusCode::OK
    );
    let third = s.create_ride("alice", &when, 1, 2).await;
    assert!(third > second, "{third} reuses a deleted id");
    let (_, ride) = s.get(&format!("/api/v1/rides/{first}")).await;
    assert_eq!(
        ride,
        json!({"rideId": first, "created_by": "alice", "users": [], "timestamp": when,
               "source": 1, "destination": 198})
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn creating_a_ride_fails_with_400_for_each_reason_the_contract_gives() {
    let s = System::start().await;
    s.register("alice").await;
    let before = s.data().await;
    let future = timestamp_in(DAY);
    let cases = [
        ("unknown user", "bob", future.clone(), json!(1), json!(2)),
        (
            "a dot-segment user",
            "..",
            future.clone(),
            json!(1),
            json!(2),
        ),
        (
            "case-sensitive user",
            "Alice",
            future.clone(),
            json!(1),
            json!(2),
        ),
        (
            "malformed timestamp",
            "alice",
            "2030-05-08 09:53:00".to_owned(),
            json!(1),
            json!(2),
        ),
        (
            "impossible date",
            "alice",
            "30-02-2099:00-00-00".to_owned(),
            json!(1),
            json!(2),
        ),
        (
            "timestamp in the past",
            "alice",
            timestamp_in(-60),
            json!(1),
            json!(2),
        ),
        ("area 0", "alice", future.clone(), json!(0), json!(2)),
        ("area 199", "alice", future.clone(), json!(1), json!(199)),
        (
            "area not a number",
            "alice",
            future.clone(),
            json!("Kempegowda Ward"),
            json!(2),
        ),
        (
            "fractional area",
            "alice",
            future.clone(),
            json!(1.5),
            json!(2),
        ),
        (
            "source equals destination",
            "alice",
            future.clone(),
            json!(5),
            json!("5"),
        ),
    ];
    for (why, created_by, timestamp, source, destination) in cases {
        let answer = s
            .create_ride_raw(created_by, &timestamp, source, destination)
            .await;
        assert_error(&answer, StatusCode::BAD_REQUEST, why);
    }
    assert_eq!(s.data().await, before);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn listing_rides_returns_the_upcoming_ones_of_the_route_earliest_first() {
    let s = System::start().await;
    s.register("alice").await;
    s.register("bob").await;
    let (t1, t2, t3) = (
        timestamp_in(DAY),
        timestamp_in(2 * DAY),
        timestamp_in(3 * DAY),
    );
    let late = s.create_ride("alice", &t3, 10, 20).await;
    let early = s.create_ride("bob", &t1, 10, 20).await;
    let middle = s.create_ride("alice", &t2, 10, 20).await;
    let tie = s.create_ride("bob", &t2, 10, 20).await;
    s.create_ride("alice", &t1, 20, 10).await; // the opposite direction
    s.create_ride("alice", &t1, 10, 21).await; // another destination
    s.insert_past_ride("alice", 60, 10, 20).await;

    let expected = json!([
        {"rideId": early, "username": "bob", "timestamp": t1},
        {"rideId": middle, "username": "alice", "timestamp": t2},
        {"rideId": tie, "username": "bob", "timestamp": t2},
        {"rideId": late, "username": "alice", "timestamp": t3},
    ]);
    assert_eq!(
        s.get("/api/v1/rides?source=10&destination=20").await,
        (StatusCode::OK, expected.clone())
    );
    assert_eq!(
        s.get("/api/v1/rides?destination=020&source=10").await,
        (StatusCode::OK, expected)
    );

    // Only past rides on the route, or none at all: 204.
    s.insert_past_ride("bob", 60, 30, 40).await;
    assert_eq!(
        s.get("/api/v1/rides?source=30&destination=40").await,
        (StatusCode::NO_CONTENT, Value::Null)
    );
    assert_eq!(
        s.get("/api/v1/rides?source=40&destination=30").await,
        (StatusCode::NO_CONTENT, Value::Null)
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn listing_rides_with_a_missing_or_invalid_parameter_returns_400() {
    let s = System::start().await;
    for query in [
        "",
        "?source=1",
        "?destination=2",
        "?source=0&destination=2",
        "?source=1&destination=199",
        "?source=x&destination=2",
        "?source=1.0&destination=2",
        "?source=-1&destination=2",
        "?source=&destination=2",
        "?source=1&destination=2&source=3",
    ] {
        let path = format!("/api/v1/rides{query}");
        assert_error(&s.get(&path).await, StatusCode::BAD_REQUEST, &path);
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ride_details_list_the_joined_users_in_join_order_without_the_creator() {
    let s = System::start().await;
    for name in ["alice", "zed", "bob", "mia"] {
        s.register(name).await;
    }
    let when = timestamp_in(DAY);
    let ride = s.create_ride("alice", &when, 42, 7).await;
    for name in ["zed", "bob", "mia"] {
        s.join(ride, name).await;
    }
    assert_eq!(
        s.get(&format!("/api/v1/rides/{ride}")).await,
        (
            StatusCode::OK,
            json!({"rideId": ride, "created_by": "alice", "users": ["zed", "bob", "mia"],
                   "timestamp": when, "source": 42, "destination": 7})
        )
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ride_details_of_a_missing_ride_are_204_and_of_a_bad_id_400() {
    let s = System::start().await;
    assert_eq!(
        s.get("/api/v1/rides/1").await,
        (StatusCode::NO_CONTENT, Value::Null)
    );
    assert_eq!(
        s.get("/api/v1/rides/9223372036854775807").await,
        (StatusCode::NO_CONTENT, Value::Null)
    );
    for id in ["0", "-3", "abc", "1.5", "%201", "9223372036854775808"] {
        let path = format!("/api/v1/rides/{id}");
        assert_error(&s.get(&path).await, StatusCode::BAD_REQUEST, &path);
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn joining_a_ride_returns_200_and_each_failure_the_status_the_contract_gives() {
    let s = System::start().await;
    for name in ["alice", "bob", "carol"] {
        s.register(name).await;
    }
    let ride = s.create_ride("alice", &timestamp_in(DAY), 1, 2).await;
    let past = s.insert_past_ride("alice", 60, 1, 2).await;
    s.join(ride, "bob").await;
    let before = s.data().await;

    let system = &s;
    let join = |id: String, name: &str| {
        let body = json!({"username": name});
        let path = format!("/api/v1/rides/{id}");
        async move { system.post(&path, &body).await }
    };
    assert_eq!(
        join("999".into(), "carol").await,
        (StatusCode::NO_CONTENT, Value::Null)
    );
    for (why, id, name) in [
        ("unknown user", ride.to_string(), "dave"),
        ("the creator", ride.to_string(), "alice"),
        ("already in the ride", ride.to_string(), "bob"),
        ("a ride in the past", past.to_string(), "carol"),
        ("not a ride id", "x".to_owned(), "carol"),
        ("not a positive ride id", "0".to_owned(), "carol"),
    ] {
        assert_error(&join(id, name).await, StatusCode::BAD_REQUEST, why);
    }
    assert_eq!(s.data().await, before);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_a_ride_returns_200_takes_its_memberships_and_a_second_delete_returns_400() {
    let s = System::start().await;
    s.register("alice").await;
    s.register("bob").await;
    let ride = s.create_ride("alice", &timestamp_in(DAY), 1, 2).await;
    let kept = s.create_ride("alice", &timestamp_in(DAY), 1, 2).await;
    s.join(ride, "bob").await;
    s.join(kept, "bob").await;

    let path = format!("/api/v1/rides/{ride}");
    assert_eq!(s.delete(&path).await, (StatusCode::OK, json!({})));
    assert_eq!(s.get(&path).await, (StatusCode::NO_CONTENT, Value::Null));
    let data = s.data().await;
    assert_eq!(data["ride_members"].as_array().unwrap().len(), 1, "{data}");

    assert_error(
        &s.delete(&path).await,
        StatusCode::BAD_REQUEST,
        "deleted twice",
    );
    assert_error(
        &s.delete("/api/v1/rides/abc").await,
        StatusCode::BAD_REQUEST,
        "bad id",
    );
    assert_eq!(s.data().await, data);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_ride_count_is_the_number_of_rides_stored_past_ones_included() {
    let s = System::start().await;
    assert_eq!(
        s.get("/api/v1/rides/count").await,
        (StatusCode::OK, json!([0]))
    );
    s.register("alice").await;
    let ride = s.create_ride("alice", &timestamp_in(DAY), 1, 2).await;
    s.create_ride("alice", &timestamp_in(DAY), 2, 1).await;
    s.insert_past_ride("alice", 60, 1, 2).await;
    assert_eq!(
        s.get("/api/v1/rides/count").await,
        (StatusCode::OK, json!([3]))
    );
    s.delete(&format!("/api/v1/rides/{ride}")).await;
    assert_eq!(
        s.get("/api/v1/rides/count").await,
        (StatusCode::OK, json!([2]))
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn clearing_the_rides_database_deletes_every_ride_and_no_user() {
    let s = System::start().await;
    s.register("alice").await;
    s.register("bob").await;
    let ride = s.create_ride("alice", &timestamp_in(DAY), 1, 2).await;
    s.join(ride, "bob").await;

    let answer = s
        .send_direct(&s.rides_url, Method::POST, "/api/v1/db/clear")
        .await;
    assert_eq!(answer, (StatusCode::OK, json!({})));

    assert_eq!(
        s.get("/api/v1/rides/count").await,
        (StatusCode::OK, json!([0]))
    );
    assert_eq!(
        s.get("/api/v1/users").await,
        (StatusCode::OK, json!(["alice", "bob"]))
    );
    let data = s.data().await;
    assert_eq!(
        (data["rides"].clone(), data["ride_members"].clone()),
        (json!([]), json!([]))
    );
    assert!(s.create_ride("alice", &timestamp_in(DAY), 1, 2).await > ride);
    s.stop().await;
}
