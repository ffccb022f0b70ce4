//! The OpenAPI document of the public API, as the gateway serves it: the rides service's routes and the users
//! service's, generated from the handlers' annotations and the real request and response types.
//!
//! The rides service serves the whole document (`GET /api/openapi.json`, Swagger UI at `/api/docs`) because the
//! gateway routes every path but `/api/v1/users*` to it: so the document and its UI sit at the gateway's
//! address with no location of their own in nginx. The users part is the users crate's own document
//! (`users::openapi`), merged in here, so each half is generated next to the handlers it describes and neither
//! can drift from them. `_count`, `db/clear` and `/health` are left out on purpose: api.md has them called on
//! each service's own address, and through the gateway they would reach the rides service only.

use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "RideShare public API",
        description = "Users and rides, behind the gateway. The contract: docs/api.md"
    ),
    paths(
        crate::http::create,
        crate::http::list,
        crate::http::show,
        crate::http::join,
        crate::http::remove,
        crate::http::ride_count,
        crate::http::areas
    ),
    tags((name = "rides", description = "the rides service: every path of the gateway but /api/v1/users*"))
)]
struct ApiDoc;

/// The public API's document: the rides service's routes and the users service's.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut document = ApiDoc::openapi();
    document.merge(users::openapi());
    document
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::time::Duration;

    use axum::http::{header, Method, StatusCode};
    use public_api::testing::{documented_statuses, send};
    use public_api::{Db, RequestCounter};

    use super::*;
    use crate::users_client::UsersClient;
    use crate::{router, AppState};

    /// What each route of the gateway can answer: api.md's statuses, and those of the services' `Error` types
    /// for a handler that reads a body or a path segment (400) or asks the database or the users service (503,
    /// and 500 for a bug).
    const PUBLIC_API: &[(&str, &str, &[u16])] = &[
        ("PUT", "/api/v1/users", &[201, 400, 500, 503]),
        ("GET", "/api/v1/users", &[200, 204, 500, 503]),
        (
            "GET",
            "/api/v1/users/{username}",
            &[200, 400, 404, 500, 503],
        ),
        ("DELETE", "/api/v1/users/{username}", &[200, 400, 500, 503]),
        ("POST", "/api/v1/rides", &[201, 400, 500, 503]),
        ("GET", "/api/v1/rides", &[200, 204, 400, 500, 503]),
        ("GET", "/api/v1/rides/count", &[200, 500, 503]),
        ("GET", "/api/v1/rides/{rideId}", &[200, 204, 400, 500, 503]),
        ("POST", "/api/v1/rides/{rideId}", &[200, 204, 400, 500, 503]),
        ("DELETE", "/api/v1/rides/{rideId}", &[200, 400, 500, 503]),
        ("GET", "/api/v1/areas", &[200]),
    ];

    /// A router whose database and gateway are unreachable.
    fn app(dir: &tempfile::TempDir) -> (axum::Router, RequestCounter) {
        let counter = RequestCounter::load(dir.path()).unwrap();
        let db = Db::new("http://127.0.0.1:9", Duration::from_secs(1), Duration::ZERO).unwrap();
        let users =
            UsersClient::new("http://127.0.0.1:9", "http://rides", Duration::from_secs(1)).unwrap();
        let state = AppState {
            db,
            areas: AppState::encode_areas(&public_api::Areas::builtin()),
            counter: counter.clone(),
            users,
        };
        (router(state), counter)
    }

    #[test]
    fn the_document_lists_every_public_route_with_every_status_it_can_answer() {
        let expected: BTreeMap<(String, String), BTreeSet<u16>> = PUBLIC_API
            .iter()
            .map(|(method, path, statuses)| {
                let key = (method.to_string(), path.to_string());
                (key, statuses.iter().copied().collect())
            })
            .collect();
        assert_eq!(documented_statuses(&openapi()), expected);
    }

    #[tokio::test]
    async fn every_documented_rides_route_is_one_the_router_serves() {
        let dir = tempfile::tempdir().unwrap();
        let (app, _) = app(&dir);
        let rides_routes = PUBLIC_API
            .iter()
            .filter(|(_, path, _)| !path.starts_with("/api/v1/users"));
        for (method, path, statuses) in rides_routes {
            let uri = path.replace("{rideId}", "1");
            let method = Method::from_bytes(method.as_bytes()).unwrap();
            let (status, _, body) = send(&app, method.clone(), &uri, "").await;
            // The route exists (no 404 "no such route", no 405), and what it answered is documented.
            assert!(
                statuses.contains(&status.as_u16()),
                "{method} {uri}: {status} {body}"
            );
        }
    }

    #[tokio::test]
    async fn the_document_and_swagger_ui_are_served_and_not_counted() {
        let dir = tempfile::tempdir().unwrap();
        let (app, counter) = app(&dir);
        let (status, headers, body) = send(&app, Method::GET, "/api/openapi.json", "").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers[header::CONTENT_TYPE], "application/json");
        let served: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(served, serde_json::to_value(openapi()).unwrap());
        let (status, headers, body) = send(&app, Method::GET, "/api/docs/", "").await;
        assert_eq!(status, StatusCode::OK);
        assert!(headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html"));
        assert!(body.contains("swagger"), "{body}");
        let (status, _, _) = send(&app, Method::GET, "/api/docs/swagger-initializer.js", "").await;
        assert_eq!(status, StatusCode::OK);
        let (status, headers, _) = send(&app, Method::POST, "/api/openapi.json", "").await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert!(headers.contains_key(header::ALLOW));
        assert_eq!(counter.get(), 0);
    }
}
