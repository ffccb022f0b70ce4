//! Malformed input of every kind gets a 400 with a JSON reason, and changes nothing.

use e2e::system::{assert_error, timestamp_in, System, PASSWORD};
use reqwest::{Method, StatusCode};
use serde_json::json;

/// Every way a body can be wrong, for a route taking `valid` (a JSON object): syntax, types, fields, size,
/// encoding.
fn broken_bodies(valid: &serde_json::Value) -> Vec<(String, Vec<u8>)> {
    let text = valid.to_string();
    let fields = valid.as_object().unwrap();
    let mut bodies: Vec<(String, Vec<u8>)> = vec![
        ("empty".into(), vec![]),
        ("not JSON".into(), b"username=alice".to_vec()),
        (
            "truncated".into(),
            text.as_bytes()[..text.len() - 1].to_vec(),
        ),
        (
            "trailing garbage".into(),
            format!("{text} {{}}").into_bytes(),
        ),
        ("an array".into(), format!("[{text}]").into_bytes()),
        ("null".into(), b"null".to_vec()),
        ("a string".into(), b"\"alice\"".to_vec()),
        (
            "invalid UTF-8".into(),
            [&b"{\"username\": \"\xff\xfe\""[..], b"}"].concat(),
        ),
        (
            "a lone surrogate".into(),
            br#"{"username": "\ud800"}"#.to_vec(),
        ),
        (
            "a byte-order mark".into(),
            [&b"\xef\xbb\xbf"[..], text.as_bytes()].concat(),
        ),
        ("NUL bytes".into(), [text.as_bytes(), b"\0"].concat()),
        ("an extra field".into(), {
            let mut extra = fields.clone();
            extra.insert("admin".into(), json!(true));
            serde_json::to_vec(&extra).unwrap()
        }),
        (
            "a duplicated field".into(),
            format!("{},{}", &text[..text.len() - 1], &text[1..]).into_bytes(),
        ),
        (
            "over 64 KiB".into(),
            format!("{}{}", text, " ".repeat(64 * 1024)).into_bytes(),
        ),
        (
            "2 MiB".into(),
            format!("{}{}", text, " ".repeat(2 << 20)).into_bytes(),
        ),
        (
            "9 MiB".into(),
            format!("{}{}", text, " ".repeat(9 << 20)).into_bytes(),
        ),
    ];
    for key in fields.keys() {
        let mut missing = fields.clone();
        missing.remove(key);
        bodies.push((
            format!("without {key}"),
            serde_json::to_vec(&missing).unwrap(),
        ));
        for wrong in [json!(null), json!(true), json!([]), json!({}), json!(1.5)] {
            let mut typed = fields.clone();
            typed.insert(key.clone(), wrong.clone());
            bodies.push((
                format!("{key} = {wrong}"),
                serde_json::to_vec(&typed).unwrap(),
            ));
        }
    }
    bodies
}

async fn assert_all_refused(s: &System, method: Method, path: &str, valid: serde_json::Value) {
    for (why, body) in broken_bodies(&valid) {
        let answer = s.send_bytes(method.clone(), path, body).await;
        assert_error(
            &answer,
            StatusCode::BAD_REQUEST,
            &format!("{method} {path} with {why}"),
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_registrations_return_400_and_change_nothing() {
    let s = System::start().await;
    s.register("alice").await;
    let before = s.data().await;
    assert_all_refused(
        &s,
        Method::PUT,
        "/api/v1/users",
        json!({"username": "mallory", "password": PASSWORD}),
    )
    .await;
    assert_eq!(s.data().await, before);
    // The same body, well-formed, still works: nothing was left half-done.
    s.register("mallory").await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_ride_creations_and_joins_return_400_and_change_nothing() {
    let s = System::start().await;
    s.register("alice").await;
    s.register("bob").await;
    let when = timestamp_in(86_400);
    let ride = s.create_ride("alice", &when, 1, 2).await;
    let before = s.data().await;
    let valid = json!({"created_by": "alice", "timestamp": when, "source": 1, "destination": 2});
    assert_all_refused(&s, Method::POST, "/api/v1/rides", valid).await;
    let path = format!("/api/v1/rides/{ride}");
    assert_all_refused(&s, Method::POST, &path, json!({"username": "bob"})).await;
    assert_eq!(s.data().await, before);
    s.join(ride, "bob").await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_of_exactly_64_kib_is_read_and_one_byte_more_is_refused() {
    let s = System::start().await;
    let body = json!({"username": "alice", "password": PASSWORD}).to_string();
    let padded = |len: usize| format!("{body}{}", " ".repeat(len - body.len()));
    let at_limit = s
        .send(Method::PUT, "/api/v1/users", Some(&padded(64 * 1024)))
        .await;
    assert_eq!(at_limit, (StatusCode::CREATED, json!({})));
    let over = s
        .send(Method::PUT, "/api/v1/users", Some(&padded(64 * 1024 + 1)))
        .await;
    assert_error(&over, StatusCode::BAD_REQUEST, "one byte over");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn odd_unicode_in_paths_and_queries_is_refused_or_not_found_and_crashes_nothing() {
    let s = System::start().await;
    s.register("alice").await;
    let before = s.data().await;
    for (method, path, expected) in [
        (Method::GET, "/api/v1/users/%FF", StatusCode::BAD_REQUEST),
        (
            Method::DELETE,
            "/api/v1/users/%C0%AF",
            StatusCode::BAD_REQUEST,
        ),
        (Method::DELETE, "/api/v1/users/%00", StatusCode::BAD_REQUEST), // refused by nginx itself
        (
            Method::GET,
            "/api/v1/users/%E2%80%AEecila",
            StatusCode::NOT_FOUND,
        ),
        (
            Method::GET,
            "/api/v1/rides/%EF%BC%91",
            StatusCode::BAD_REQUEST,
        ), // a fullwidth digit one
        (
            Method::DELETE,
            "/api/v1/rides/1%00",
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::GET,
            "/api/v1/rides?source=%FF&destination=2",
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::GET,
            "/api/v1/rides?source=%D9%A1&destination=2",
            StatusCode::BAD_REQUEST,
        ), // Arabic-Indic one
        (
            Method::GET,
            "/api/v1/rides?source=1%00&destination=2",
            StatusCode::BAD_REQUEST,
        ),
    ] {
        assert_error(
            &s.send(method.clone(), path, None).await,
            expected,
            &format!("{method} {path}"),
        );
    }
    assert_eq!(s.data().await, before);
    assert_eq!(
        s.get("/api/v1/users").await,
        (StatusCode::OK, json!(["alice"]))
    );
    s.stop().await;
}
