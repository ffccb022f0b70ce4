//! Strict request extraction: JSON bodies, query strings and path segments whose every failure is a `400`
//! with a JSON `{"error": "..."}` naming the reason (axum's own extractors answer 415, 422 or plain text).

use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::header::CONTENT_LENGTH;
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::StreamExt;
use protocol::ErrorBody;
use serde::de::DeserializeOwned;

/// Largest request body accepted (docs/api.md: a body larger than 64 KiB is refused with 400).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// How much of an oversized body is still read (and thrown away) before answering 400. Closing the
/// connection on a client still sending makes the kernel reset it, and a proxy in between (the gateway)
/// then reports a broken connection (502) instead of passing the 400 on; reading the rest first keeps the
/// answer a 400 and the connection reusable. Beyond this the service stops reading and closes; the gateway
/// refuses such bodies itself (`client_max_body_size` in gateway/nginx.conf.template, the same value).
pub const MAX_DRAINED_BYTES: usize = 8 * 1024 * 1024;

/// A request the client got wrong: `400` with the reason. The rejection of every extractor here; each
/// service's `Error` converts from it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadRequest(pub String);

impl IntoResponse for BadRequest {
    fn into_response(self) -> Response {
        (StatusCode::BAD_REQUEST, Json(ErrorBody { error: self.0 })).into_response()
    }
}

/// A JSON body parsed into `T`, whatever the `Content-Type` header says. `T` lists exactly the fields the
/// route takes and denies unknown ones (`#[serde(deny_unknown_fields)]`), and its field types validate their
/// values, so a body that parses is a valid request.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = BadRequest;

    async fn from_request(req: Request, _state: &S) -> Result<Self, BadRequest> {
        let too_large = || {
            BadRequest(format!(
                "the request body is larger than {MAX_BODY_BYTES} bytes"
            ))
        };
        let declared = req
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > MAX_DRAINED_BYTES as u64) {
            return Err(too_large());
        }
        let mut body = req.into_body().into_data_stream();
        let mut kept = Vec::new();
        let mut total = 0usize;
        while let Some(chunk) = body.next().await {
            let chunk = chunk
                .map_err(|e| BadRequest(format!("the request body could not be read: {e}")))?;
            total = total.saturating_add(chunk.len());
            if total <= MAX_BODY_BYTES {
                kept.extend_from_slice(&chunk);
            } else if total > MAX_DRAINED_BYTES {
                break;
            }
        }
        if total > MAX_BODY_BYTES {
            return Err(too_large());
        }
        serde_json::from_slice(&kept)
            .map(JsonBody)
            .map_err(|e| BadRequest(body_error(&e)))
    }
}

/// What a client is told about a body that is not the JSON a route takes. A body that is not JSON at all is
/// pointed at by line and column; a JSON body with a wrong field or value is told what is wrong with it in the
/// value type's own words ("username must not be empty"), without a position, which would only say where in
/// the client's own serialisation the field happened to be.
fn body_error(e: &serde_json::Error) -> String {
    match e.classify() {
        serde_json::error::Category::Data => {
            let text = e.to_string();
            let position = format!(" at line {} column {}", e.line(), e.column());
            text.strip_suffix(&position).unwrap_or(&text).to_owned()
        }
        _ => format!("invalid JSON body: {e}"),
    }
}

/// A query string parsed into `T` (which denies unknown parameters).
pub struct QueryParams<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for QueryParams<T> {
    type Rejection = BadRequest;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, BadRequest> {
        Query::<T>::try_from_uri(&parts.uri)
            .map(|Query(t)| QueryParams(t))
            .map_err(|e| BadRequest(e.body_text()))
    }
}

/// The one parameter of a route such as `/api/v1/users/{username}`, percent-decoded.
pub struct PathParam(pub String);

impl<S: Send + Sync> FromRequestParts<S> for PathParam {
    type Rejection = BadRequest;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, BadRequest> {
        Path::<String>::from_request_parts(parts, state)
            .await
            .map(|Path(p)| PathParam(p))
            .map_err(|e| BadRequest(e.body_text()))
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::routing::post;
    use axum::Router;
    use serde::Deserialize;
    use tower::ServiceExt;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body1 {
        name: String,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Params {
        n: u8,
    }

    fn app() -> Router {
        Router::new()
            .route(
                "/body",
                post(|JsonBody(b): JsonBody<Body1>| async move { b.name }),
            )
            .route(
                "/query",
                post(|QueryParams(p): QueryParams<Params>| async move { p.n.to_string() }),
            )
            .route(
                "/path/{p}",
                post(|PathParam(p): PathParam| async move { p }),
            )
    }

    async fn call(uri: &str, body: impl Into<Body>) -> (StatusCode, String) {
        let response = app()
            .oneshot(Request::post(uri).body(body.into()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, String::from_utf8(bytes.to_vec()).unwrap())
    }

    fn error_of(body: &str) -> String {
        serde_json::from_str::<ErrorBody>(body)
            .expect("a JSON error body")
            .error
    }

    #[tokio::test]
    async fn a_body_with_exactly_the_listed_fields_is_accepted_without_a_content_type() {
        assert_eq!(
            call("/body", r#"{"name": "x"}"#).await,
            (StatusCode::OK, "x".to_owned())
        );
    }

    #[tokio::test]
    async fn every_malformed_body_is_a_400_with_a_json_reason() {
        let big = format!(r#"{{"name": "{}"}}"#, "x".repeat(MAX_BODY_BYTES));
        let huge = format!(r#"{{"name": "{}"}}"#, "x".repeat(MAX_DRAINED_BYTES));
        for body in [
            "",
            "{",
            "[]",
            "null",
            r#"{"name": 1}"#,
            r#"{}"#,
            r#"{"name": "x", "extra": 1}"#,
            r#"{"name": "x", "name": "y"}"#,
            r#"{"name": "x"} trailing"#,
            r#"{"name": "\ud800"}"#,
            big.as_str(),
            huge.as_str(),
        ] {
            let (status, text) = call("/body", body.to_owned()).await;
            assert_eq!(
                status,
                StatusCode::BAD_REQUEST,
                "{}",
                &body[..body.len().min(40)]
            );
            assert!(!error_of(&text).is_empty());
        }
        let (status, _) = call("/body", b"{\"name\": \"\xff\"}".to_vec()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "invalid UTF-8");
    }

    #[tokio::test]
    async fn a_wrong_value_is_explained_in_its_own_words_and_broken_json_by_its_position() {
        let (_, text) = call("/body", r#"{"name": 1}"#).await;
        assert_eq!(
            error_of(&text),
            "invalid type: integer `1`, expected a string"
        );
        let (_, text) = call("/body", r#"{"name": "x", "extra": 1}"#).await;
        assert_eq!(error_of(&text), "unknown field `extra`, expected `name`");
        let (_, text) = call("/body", r#"{"name": "x""#).await;
        assert_eq!(
            error_of(&text),
            "invalid JSON body: EOF while parsing an object at line 1 column 12"
        );
    }

    #[tokio::test]
    async fn a_body_of_exactly_the_limit_is_read() {
        let padding = MAX_BODY_BYTES - r#"{"name": ""}"#.len();
        let body = format!(r#"{{"name": "{}"}}"#, "x".repeat(padding));
        assert_eq!(body.len(), MAX_BODY_BYTES);
        assert_eq!(call("/body", body).await.0, StatusCode::OK);
    }

    #[tokio::test]
    async fn malformed_query_strings_and_paths_are_400s_with_a_json_reason() {
        assert_eq!(
            call("/query?n=7", "").await,
            (StatusCode::OK, "7".to_owned())
        );
        for uri in [
            "/query",
            "/query?n=x",
            "/query?n=7&m=1",
            "/query?n=7&n=8",
            "/query?n=300",
        ] {
            let (status, text) = call(uri, "").await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}");
            assert!(!error_of(&text).is_empty());
        }
        assert_eq!(
            call("/path/a%20b", "").await,
            (StatusCode::OK, "a b".to_owned())
        );
        let (status, text) = call("/path/%ff", "").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        error_of(&text);
    }
}
