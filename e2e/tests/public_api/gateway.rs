//! The gateway: path routing as api.md describes it, and errors for what no service serves.

use e2e::system::{assert_error, timestamp_in, System};
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn users_paths_go_to_the_users_service_and_everything_else_to_rides() {
    let s = System::start().await;
    // Each counted route moves exactly one counter: which one shows where the gateway sent it.
    s.get("/api/v1/users").await;
    s.get("/api/v1/users/alice").await;
    assert_eq!((s.users_count().await, s.rides_count().await), (2, 0));
    s.get("/api/v1/rides/count").await;
    s.get("/api/v1/rides/1").await;
    assert_eq!((s.users_count().await, s.rides_count().await), (2, 2));

    // Near misses of the users prefix belong to rides, which knows no such route; the users service's own
    // unknown routes are 404s too. None of them counts.
    for path in [
        "/api/v1/usersx",
        "/api/v1/user",
        "/api/v1/users/",
        "/api/v1/users/a/b",
        "/api/v2/users",
        "/rider.txt",
        "/www/index.html",
    ] {
        assert_error(&s.get(path).await, StatusCode::NOT_FOUND, path);
    }
    assert_eq!((s.users_count().await, s.rides_count().await), (2, 2));
    s.stop().await;
}

/// The rider page's three files come from the gateway itself, with their types and the headers a page needs;
/// no service sees the requests (no counter moves), and they take GET and HEAD only.
#[tokio::test(flavor = "multi_thread")]
async fn the_gateway_serves_the_rider_page_itself_at_the_root() {
    let s = System::start().await;
    let http = reqwest::Client::new();
    for (path, content_type, holds) in [
        ("/", "text/html; charset=utf-8", "<title>RideShare"),
        (
            "/index.html",
            "text/html; charset=utf-8",
            "<title>RideShare",
        ),
        (
            "/rider.js",
            "text/javascript; charset=utf-8",
            "/api/v1/areas",
        ),
        ("/rider.css", "text/css; charset=utf-8", ".combo"),
    ] {
        let response = http
            .get(format!("{}{path}", s.gateway))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let headers = response.headers().clone();
        assert_eq!(headers["content-type"], content_type, "{path}");
        assert!(headers.contains_key("x-request-id"), "{path}");
        assert_eq!(headers["x-content-type-options"], "nosniff", "{path}");
        assert!(
            headers["content-security-policy"]
                .to_str()
                .unwrap()
                .starts_with("default-src 'self'"),
            "{path}"
        );
        let body = response.text().await.unwrap();
        assert!(body.contains(holds), "{path}: {body:.200}");
    }
    let head = http.head(&s.gateway).send().await.unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    for method in [Method::POST, Method::PUT, Method::DELETE] {
        let response = http
            .request(method.clone(), format!("{}/", s.gateway))
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} /"
        );
        assert_eq!(response.headers()["allow"], "GET, HEAD", "{method} /");
        let body: serde_json::Value = response.json().await.unwrap();
        assert!(body["error"].is_string(), "{method} /: {body}");
    }
    assert_eq!((s.users_count().await, s.rides_count().await), (0, 0));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_method_gets_405_with_an_allow_header_through_the_gateway() {
    let s = System::start().await;
    let http = reqwest::Client::new();
    for (method, path, allowed) in [
        (Method::POST, "/api/v1/users", ["GET", "PUT"].as_slice()),
        (Method::PUT, "/api/v1/users/alice", &["GET", "DELETE"]),
        (Method::DELETE, "/api/v1/rides", &["GET", "POST"]),
        (Method::PUT, "/api/v1/rides/1", &["GET", "POST", "DELETE"]),
        (Method::POST, "/api/v1/rides/count", &["GET"]),
        // nginx itself refuses TRACE before any location runs; the service still explains it.
        (Method::TRACE, "/api/v1/users", &["GET", "PUT"]),
        (Method::TRACE, "/api/v1/rides/1", &["GET", "POST", "DELETE"]),
    ] {
        let response = http
            .request(method.clone(), format!("{}{path}", s.gateway))
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}"
        );
        let allow = response
            .headers()
            .get("allow")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_else(|| panic!("{method} {path}: no Allow header"));
        for m in allowed {
            assert!(allow.contains(m), "{method} {path}: Allow: {allow}");
        }
        let body: serde_json::Value = response
            .json()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: the body is not JSON: {e}"));
        assert!(body["error"].is_string(), "{method} {path}: {body}");
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn while_the_users_service_is_down_the_gateway_and_rides_answer_503_and_recover_after() {
    let mut s = System::start().await;
    s.register("alice").await;
    let when = timestamp_in(86_400);
    s.stop_users().await;

    assert_error(
        &s.get("/api/v1/users").await,
        StatusCode::SERVICE_UNAVAILABLE,
        "users down",
    );
    // A ride needs its creator checked; with no one to ask, it is a 503 and nothing is stored.
    let before = s.data().await;
    let answer = s.create_ride_raw("alice", &when, json!(1), json!(2)).await;
    assert_error(
        &answer,
        StatusCode::SERVICE_UNAVAILABLE,
        "creator unchecked",
    );
    assert_eq!(s.data().await, before);

    s.start_users().await;
    assert_eq!(
        s.get("/api/v1/users").await,
        (StatusCode::OK, json!(["alice"]))
    );
    s.create_ride("alice", &when, 1, 2).await;
    s.stop().await;
}
