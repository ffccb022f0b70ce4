//! Helpers for the services' own unit tests (feature `testing`, enabled by their dev-dependencies): requests
//! sent straight to a router, without a socket.

use std::collections::{BTreeMap, BTreeSet};

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, Method, StatusCode};
use axum::Router;
use protocol::ErrorBody;
use serde_json::Value as Json;
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

/// Every operation of an OpenAPI document, `(METHOD, path)`, with the statuses it documents. Checks on the way
/// that the document is well formed as far as the services' tests rely on it: it parses back as an OpenAPI
/// document, every `$ref` names a schema it holds, every error status (4xx, 5xx) has the JSON `ErrorBody`, and a
/// `204` has no body.
pub fn documented_statuses(
    document: &utoipa::openapi::OpenApi,
) -> BTreeMap<(String, String), BTreeSet<u16>> {
    let json = document.to_json().expect("the document serializes");
    let doc: Json = serde_json::from_str(&json).expect("the document is JSON");
    serde_json::from_value::<utoipa::openapi::OpenApi>(doc.clone())
        .expect("the document parses back as OpenAPI");
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    assert_refs_resolve(&doc, &doc);
    let mut operations = BTreeMap::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("a path item") {
            let mut statuses = BTreeSet::new();
            for (status, response) in operation["responses"].as_object().expect("responses") {
                let status: u16 = status.parse().expect("a numeric status");
                let content = &response["content"];
                if status == 204 {
                    assert!(content.is_null(), "{method} {path}: a 204 has no body");
                } else if status >= 400 {
                    assert_eq!(
                        content["application/json"]["schema"]["$ref"],
                        "#/components/schemas/ErrorBody",
                        "{method} {path} {status}: errors are JSON ErrorBody"
                    );
                } else {
                    assert!(
                        content["application/json"]["schema"].is_object(),
                        "{method} {path} {status}: a JSON body"
                    );
                }
                statuses.insert(status);
            }
            operations.insert((method.to_uppercase(), path.clone()), statuses);
        }
    }
    operations
}

fn assert_refs_resolve(doc: &Json, node: &Json) {
    match node {
        Json::Object(fields) => {
            for (key, value) in fields {
                if key == "$ref" {
                    let name = value
                        .as_str()
                        .and_then(|r| r.strip_prefix("#/components/schemas/"))
                        .unwrap_or_else(|| panic!("an unexpected $ref: {value}"));
                    assert!(
                        doc["components"]["schemas"][name].is_object(),
                        "$ref {name} names no schema of the document"
                    );
                } else {
                    assert_refs_resolve(doc, value);
                }
            }
        }
        Json::Array(items) => items.iter().for_each(|item| assert_refs_resolve(doc, item)),
        _ => {}
    }
}
