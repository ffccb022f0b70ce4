//! What every RideShare process does the same way, so that an operator reads one kind of log line and one kind
//! of metric whichever process it comes from:
//!
//! - [`logging`]: log lines on stderr, as text or, with `RIDESHARE_LOG_FORMAT=json`, one JSON object per line.
//! - [`request_id`]: the `X-Request-Id` of the request being served, taken from the caller or made up, passed on
//!   to every service the request reaches (HTTP headers, then AMQP headers to the workers) and named in every
//!   log line written while serving it.
//! - [`metrics`]: the process's Prometheus recorder, installed once, and the HTTP middleware that counts and
//!   times requests by route and status.
//!
//! [`layer`] is the one middleware an HTTP service adds: request id, span and metrics together.

pub mod logging;
pub mod metrics;
pub mod request_id;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

/// Where a request ended, for the per-request log line: the target `rideshare::request` at debug level, so an
/// operator following requests turns it on with `RUST_LOG=info,rideshare::request=debug` without the rest.
pub const REQUEST_TARGET: &str = "rideshare::request";

/// The middleware of every HTTP service: takes or makes the request's id, serves the request inside a span
/// that names it (every log line written meanwhile carries it) with the id set for outgoing calls
/// ([`request_id::current`]), sends the id back in the answer, and counts and times the request.
///
/// Add it with `Router::layer` after every route and the fallback: axum applies such a layer to each route, so
/// the route's pattern ([`MatchedPath`]) is known here and becomes the `route` label (a request no route matched
/// is labelled `unmatched`, so that scanners cannot grow the label set).
pub async fn layer(request: Request, next: Next) -> Response {
    let id = request_id::from_headers(request.headers());
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let method = request.method().clone();
    let span = tracing::info_span!("request", request_id = %id);
    let started = std::time::Instant::now();
    let mut response =
        request_id::scope(id.clone(), next.run(request).instrument(span.clone())).await;
    let elapsed = started.elapsed();
    let status = response.status();
    let route = route.as_deref().unwrap_or("unmatched");
    metrics::record_http(route, method.as_str(), status.as_u16(), elapsed);
    span.in_scope(|| {
        tracing::debug!(
            target: REQUEST_TARGET,
            method = %method,
            route,
            status = status.as_u16(),
            micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
            "served"
        );
    });
    request_id::set_header(response.headers_mut(), &id);
    response
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use axum::routing::get;
    use axum::Router;
    use tower::ServiceExt;

    use super::*;

    fn app() -> Router {
        Router::new()
            .route(
                "/echo/{name}",
                get(|| async { request_id::current().unwrap_or_default() }),
            )
            .fallback(|| async { StatusCode::NOT_FOUND })
            .layer(axum::middleware::from_fn(layer))
    }

    async fn call(uri: &str, id: Option<&str>) -> (StatusCode, String, String) {
        let mut request = Request::get(uri);
        if let Some(id) = id {
            request = request.header(request_id::HEADER, id);
        }
        let response = app()
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let header = response
            .headers()
            .get(request_id::HEADER)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        (status, header, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn a_callers_id_is_the_one_handlers_see_and_the_one_answered() {
        let (status, header, seen) = call("/echo/x", Some("abc-123")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(header, "abc-123");
        assert_eq!(seen, "abc-123");
    }

    #[tokio::test]
    async fn without_an_id_one_is_made_up_seen_by_the_handler_and_answered() {
        let (_, header, seen) = call("/echo/x", None).await;
        assert!(request_id::is_valid(&header), "{header:?}");
        assert_eq!(seen, header);
        let (_, other, _) = call("/echo/x", None).await;
        assert_ne!(header, other, "each request gets its own id");
    }

    #[tokio::test]
    async fn an_id_that_could_forge_log_lines_is_replaced() {
        let (_, header, seen) = call("/echo/x", Some("a b\"}{")).await;
        assert_ne!(header, "a b\"}{");
        assert!(request_id::is_valid(&header));
        assert_eq!(seen, header);
    }

    #[tokio::test]
    async fn requests_are_counted_by_route_pattern_and_unmatched_ones_under_one_label() {
        let handle = metrics::handle();
        call("/echo/first", None).await;
        call("/echo/second", None).await;
        call("/no/such/route/12345", None).await;
        let text = handle.render();
        let count = |needle: &str| {
            text.lines()
                .find(|l| l.starts_with("http_requests_total{") && l.contains(needle))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        assert!(count("route=\"/echo/{name}\"") >= 2, "{text}");
        assert!(count("route=\"unmatched\"") >= 1, "{text}");
        assert!(!text.contains("/no/such/route"), "{text}");
        assert!(
            text.contains("http_request_duration_seconds_bucket{"),
            "latencies are a histogram with buckets: {text}"
        );
    }
}
