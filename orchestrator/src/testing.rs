//! What the modules' unit tests share.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, Method, StatusCode};
use axum::Router;
use tower::ServiceExt;

/// Sends `method uri` with no body to `app`; returns the status, the content type ("" without one) and the body.
pub async fn send(app: &Router, method: Method, uri: &str) -> (StatusCode, String, String) {
    let request = Request::builder().method(method).uri(uri);
    let response = app
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (
        status,
        content_type,
        String::from_utf8(bytes.to_vec()).unwrap(),
    )
}
