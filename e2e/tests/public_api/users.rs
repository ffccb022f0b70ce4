//! Every row of api.md's users table, failures included, with the bodies.

use e2e::system::{assert_error, timestamp_in, System, PASSWORD};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread")]
async fn registering_users_returns_201_with_an_empty_object_and_lists_them_in_creation_order() {
    let s = System::start().await;
    for name in ["carol", "alice", "Alice", "bob"] {
        assert_eq!(
            s.put_user(name).await,
            (StatusCode::CREATED, json!({})),
            "{name}"
        );
    }
    assert_eq!(
        s.get("/api/v1/users").await,
        (StatusCode::OK, json!(["carol", "alice", "Alice", "bob"]))
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn listing_users_when_there_are_none_returns_204_with_an_empty_body() {
    let s = System::start().await;
    assert_eq!(
        s.get("/api/v1/users").await,
        (StatusCode::NO_CONTENT, Value::Null)
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn registering_a_taken_username_returns_400_and_keeps_the_first_registration() {
    let s = System::start().await;
    s.register("alice").await;
    let before = s.data().await;
    let other = "A".repeat(40);
    let answer = s
        .put(
            "/api/v1/users",
            &json!({"username": "alice", "password": other}),
        )
        .await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "taken");
    assert_eq!(s.data().await, before);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn usernames_and_passwords_outside_the_contract_are_refused_with_400() {
    let s = System::start().await;
    let long = "x".repeat(129);
    let cases = [
        json!({"username": "", "password": PASSWORD}),
        json!({"username": long, "password": PASSWORD}),
        json!({"username": "new\nline", "password": PASSWORD}),
        json!({"username": "nul\u{0}", "password": PASSWORD}),
        json!({"username": "c1\u{85}control", "password": PASSWORD}),
        // Dot segments: a URL path cannot address them, so such a user could never be fetched or deleted.
        json!({"username": ".", "password": PASSWORD}),
        json!({"username": "..", "password": PASSWORD}),
        json!({"username": "a", "password": &PASSWORD[1..]}),
        json!({"username": "a", "password": format!("{PASSWORD}0")}),
        json!({"username": "a", "password": PASSWORD.replace('d', "g")}),
        json!({"username": "a", "password": ""}),
    ];
    for body in &cases {
        let answer = s.put("/api/v1/users", body).await;
        assert_error(&answer, StatusCode::BAD_REQUEST, &body.to_string());
    }
    assert_eq!(s.get("/api/v1/users").await.0, StatusCode::NO_CONTENT);

    // The limits themselves are fine: 128 characters (not bytes), any Unicode that is not a control
    // character, and a password in upper case.
    let at_limit = "é".repeat(128);
    for (name, password) in [
        (at_limit.as_str(), PASSWORD.to_owned()),
        ("🚗 \u{202e}rider", PASSWORD.to_uppercase()),
    ] {
        let answer = s
            .put(
                "/api/v1/users",
                &json!({"username": name, "password": password}),
            )
            .await;
        assert_eq!(answer, (StatusCode::CREATED, json!({})), "{name}");
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn getting_a_user_returns_their_name_and_an_unknown_one_404() {
    let s = System::start().await;
    for name in ["alice", "a b/c?d#e%", "名前", "...", "a/.."] {
        s.register(name).await;
        let path = format!("/api/v1/users/{}", encode(name));
        assert_eq!(
            s.get(&path).await,
            (StatusCode::OK, json!({"username": name})),
            "{name}"
        );
    }
    assert_error(
        &s.get("/api/v1/users/bob").await,
        StatusCode::NOT_FOUND,
        "bob",
    );
    assert_error(
        &s.get("/api/v1/users/ALICE").await,
        StatusCode::NOT_FOUND,
        "case-sensitive",
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_a_user_returns_200_and_takes_their_rides_and_memberships_with_them() {
    let s = System::start().await;
    for name in ["alice", "bob", "carol"] {
        s.register(name).await;
    }
    let when = timestamp_in(86_400);
    let alices = s.create_ride("alice", &when, 1, 2).await;
    let bobs = s.create_ride("bob", &when, 1, 2).await;
    s.join(bobs, "alice").await;
    s.join(bobs, "carol").await;
    s.join(alices, "carol").await;

    assert_eq!(
        s.delete("/api/v1/users/alice").await,
        (StatusCode::OK, json!({}))
    );

    assert_eq!(
        s.get("/api/v1/users").await,
        (StatusCode::OK, json!(["bob", "carol"]))
    );
    assert_eq!(
        s.get(&format!("/api/v1/rides/{alices}")).await,
        (StatusCode::NO_CONTENT, Value::Null)
    );
    let (status, ride) = s.get(&format!("/api/v1/rides/{bobs}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ride["users"], json!(["carol"]));
    assert_eq!(
        s.get("/api/v1/rides/count").await,
        (StatusCode::OK, json!([1]))
    );
    let data = s.data().await;
    assert_eq!(data["ride_members"].as_array().unwrap().len(), 1, "{data}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_an_unknown_user_returns_400_and_changes_nothing() {
    let s = System::start().await;
    s.register("alice").await;
    let before = s.data().await;
    for path in [
        "/api/v1/users/bob",
        "/api/v1/users/Alice",
        "/api/v1/users/%0A",
    ] {
        assert_error(&s.delete(path).await, StatusCode::BAD_REQUEST, path);
    }
    assert_eq!(s.data().await, before);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn clearing_the_users_database_deletes_every_user_and_so_every_ride() {
    let s = System::start().await;
    s.register("alice").await;
    s.register("bob").await;
    let ride = s.create_ride("alice", &timestamp_in(3600), 3, 4).await;
    s.join(ride, "bob").await;

    let answer = s
        .send_direct(&s.users_url, Method::POST, "/api/v1/db/clear")
        .await;
    assert_eq!(answer, (StatusCode::OK, json!({})));

    assert_eq!(
        s.get("/api/v1/users").await,
        (StatusCode::NO_CONTENT, Value::Null)
    );
    assert_eq!(
        s.get("/api/v1/rides/count").await,
        (StatusCode::OK, json!([0]))
    );
    assert_eq!(
        s.data().await,
        json!({"users": [], "rides": [], "ride_members": []})
    );
    // Ids are not reused after a clear either.
    s.register("alice").await;
    assert!(s.create_ride("alice", &timestamp_in(3600), 3, 4).await > ride);
    s.stop().await;
}

/// Percent-encodes a username as one path segment.
fn encode(name: &str) -> String {
    name.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
