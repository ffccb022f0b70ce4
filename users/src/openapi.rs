//! The users service's part of the public API's OpenAPI document, generated from the handlers' annotations and
//! the real request and response types.
//!
//! The users service does not serve it itself: the gateway sends `/api/openapi.json` and `/api/docs` to the
//! rides service (its catch-all location), which serves the whole public API's document, this one merged in
//! (`rides::openapi`). `_count`, `db/clear` and `/health` are left out on purpose: they are called on the
//! service's own address, never through the gateway (api.md), so they are not part of the gateway's API.

use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    paths(
        crate::http::register,
        crate::http::list,
        crate::http::show,
        crate::http::remove
    ),
    tags((name = "users", description = "the users service, behind the gateway at /api/v1/users*"))
)]
struct ApiDoc;

/// The document of the users service's routes behind the gateway.
pub fn openapi() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::time::Duration;

    use axum::http::Method;
    use public_api::testing::{documented_statuses, send};
    use public_api::{Db, RequestCounter};

    use super::*;
    use crate::{router, AppState};

    /// What each route can answer: api.md's statuses, and those of [`crate::Error`] for a handler that reads a
    /// body or a path segment (400) or asks the database (503, and 500 for a bug).
    const USERS_API: &[(&str, &str, &[u16])] = &[
        ("PUT", "/api/v1/users", &[201, 400, 500, 503]),
        ("GET", "/api/v1/users", &[200, 204, 500, 503]),
        (
            "GET",
            "/api/v1/users/{username}",
            &[200, 400, 404, 500, 503],
        ),
        ("DELETE", "/api/v1/users/{username}", &[200, 400, 500, 503]),
    ];

    #[test]
    fn the_document_lists_every_users_route_with_every_status_it_can_answer() {
        let expected: BTreeMap<(String, String), BTreeSet<u16>> = USERS_API
            .iter()
            .map(|(method, path, statuses)| {
                let key = (method.to_string(), path.to_string());
                (key, statuses.iter().copied().collect())
            })
            .collect();
        assert_eq!(documented_statuses(&openapi()), expected);
    }

    #[tokio::test]
    async fn every_documented_route_is_one_the_router_serves() {
        let dir = tempfile::tempdir().unwrap();
        let counter = RequestCounter::load(dir.path()).unwrap();
        // The database is unreachable: a route that exists answers 400 or 503, never "no such route".
        let db = Db::new("http://127.0.0.1:9", Duration::from_secs(1), Duration::ZERO).unwrap();
        let app = router(AppState { db, counter });
        for (method, path, statuses) in USERS_API {
            let uri = path.replace("{username}", "alice");
            let method = Method::from_bytes(method.as_bytes()).unwrap();
            let (status, _, body) = send(&app, method.clone(), &uri, "").await;
            assert!(
                statuses.contains(&status.as_u16()),
                "{method} {uri}: {status} {body}"
            );
        }
    }
}
