//! Helpers for the services' own unit tests (feature `testing`, enabled by their dev-dependencies): requests
//! sent straight to a router, without a socket.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, Method, StatusCode};
use axum::Router;
use protocol::ErrorBody;
use tower::ServiceExt;

/// Sends one request to `app` and returns its status, headers and body.
pub async fn send(
    app: &Router,
    method: Method,
    uri: &str,
    body: &str,
) -> (StatusCode, header::HeaderMap, String) {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .body(Body::from(body.to_owned()))
        .expect("a valid request");
    let response = app
        .clone()
        .oneshot(request)
        .await
        .expect("routers do not fail");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("a readable body");
    (
        status,
        headers,
        String::from_utf8(bytes.to_vec()).expect("a UTF-8 body"),
    )
}

/// The message of a JSON error body; panics when the body is not one.
pub fn error_of(body: &str) -> String {
    serde_json::from_str::<ErrorBody>(body)
        .expect("a JSON error")
        .error
}

/// Parses `args` as the command line of `C` with every `env = "..."` lookup turned off: the defaults a test
/// looks at are the command line's whatever the environment holds (the test command itself sets `RIDESHARE_*`
/// variables).
pub fn parse_without_env<C: clap::Parser>(args: &[&str]) -> Result<C, clap::Error> {
    let command = C::command().mut_args(|arg| arg.env(None::<&str>));
    C::from_arg_matches(&command.try_get_matches_from(args)?)
}
