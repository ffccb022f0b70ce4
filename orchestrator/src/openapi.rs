//! The OpenAPI document of the orchestrator's API (the database and the cluster), generated from the handlers'
//! annotations and the real request and response types of the `protocol` crate, so it cannot drift from the
//! wire format. Served by the orchestrator itself at `GET /api/openapi.json`, with Swagger UI at `/api/docs`.

use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "RideShare database API",
        description = "The orchestrator: the replicated database and the cluster. The contract: docs/api.md"
    ),
    paths(
        crate::http::write,
        crate::http::read,
        crate::http::clear,
        crate::http::crash_master,
        crate::http::crash_slave,
        crate::http::worker_list,
        crate::http::workers,
        crate::http::scaling,
        crate::http::health
    ),
    tags(
        (name = "database", description = "reads and writes, run by the workers"),
        (name = "cluster", description = "the workers: health, listing, scaling, and crashes on demand")
    )
)]
struct ApiDoc;

/// The orchestrator API's document.
pub fn openapi() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::sync::Arc;
    use std::time::Duration;

    use axum::http::{Method, StatusCode};
    use futures::future::BoxFuture;
    use protocol::{Names, Role};
    use serde_json::Value as Json;
    use tokio::sync::watch;

    use super::*;
    use crate::cluster::Control;
    use crate::http::{router, AppState, Timeouts};
    use crate::rpc::{Rpc, RpcError};
    use crate::testing::send;
    use crate::view::ClusterView;

    /// What each route can answer: api.md's statuses, and those of [`crate::Error`] for a handler that reads a
    /// body (400), asks the workers (503 when none can answer, 500 for a bug or a reply that makes no sense),
    /// or is refused by the master (400, `db/clear` included).
    const DATABASE_API: &[(&str, &str, &[u16])] = &[
        ("POST", "/api/v1/db/write", &[200, 400, 500, 503]),
        ("POST", "/api/v1/db/read", &[200, 400, 500, 503]),
        ("POST", "/api/v1/db/clear", &[200, 400, 500, 503]),
        ("POST", "/api/v1/crash/master", &[200, 400, 500]),
        ("POST", "/api/v1/crash/slave", &[200, 400, 500]),
        ("GET", "/api/v1/worker/list", &[200]),
        ("GET", "/api/v1/workers", &[200]),
        ("GET", "/api/v1/scaling", &[200]),
        ("GET", "/health", &[200, 503]),
    ];

    /// Workers that never answer, and a cluster that has none: every route answers at once.
    struct Nobody;

    impl Rpc for Nobody {
        fn call<'a>(
            &'a self,
            _queue: &'a str,
            _body: &'a [u8],
            _request_ids: &'a str,
            timeout: Duration,
        ) -> BoxFuture<'a, Result<Vec<u8>, RpcError>> {
            Box::pin(async move { Err(RpcError::TimedOut(timeout)) })
        }
    }

    impl Control for Nobody {
        fn crash(&self, _role: Role) -> BoxFuture<'_, anyhow::Result<Option<u32>>> {
            Box::pin(async { Ok(None) })
        }

        fn target_slaves(&self) -> usize {
            1
        }
    }

    fn app() -> axum::Router {
        let (_, view) = watch::channel(ClusterView::default());
        let timeouts = Timeouts {
            request: Duration::from_millis(100),
            write_deadline: Duration::ZERO,
            read_deadline: Duration::ZERO,
        };
        let state = AppState::new(
            Arc::new(Nobody),
            Arc::new(Nobody),
            view,
            Names::new("test"),
            timeouts,
        );
        router(state)
    }

    /// Every operation with its statuses; checks that every `$ref` resolves and every error is an `ErrorBody`.
    fn documented_statuses(doc: &Json) -> BTreeMap<(String, String), BTreeSet<u16>> {
        serde_json::from_value::<utoipa::openapi::OpenApi>(doc.clone())
            .expect("the document parses back as OpenAPI");
        let text = doc.to_string();
        for reference in text.split("\"$ref\":\"").skip(1) {
            let name = reference.split('"').next().unwrap();
            let name = name.strip_prefix("#/components/schemas/").expect(name);
            assert!(doc["components"]["schemas"][name].is_object(), "{name}");
        }
        let mut operations = BTreeMap::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                let mut statuses = BTreeSet::new();
                for (status, response) in operation["responses"].as_object().unwrap() {
                    let status: u16 = status.parse().unwrap();
                    let schema = &response["content"]["application/json"]["schema"];
                    if status >= 400 {
                        assert_eq!(schema["$ref"], "#/components/schemas/ErrorBody", "{path}");
                    } else {
                        assert!(schema.is_object(), "{method} {path} {status}: a JSON body");
                    }
                    statuses.insert(status);
                }
                operations.insert((method.to_uppercase(), path.clone()), statuses);
            }
        }
        operations
    }

    #[test]
    fn the_document_lists_every_route_with_every_status_it_can_answer() {
        let doc = serde_json::to_value(openapi()).unwrap();
        let expected: BTreeMap<(String, String), BTreeSet<u16>> = DATABASE_API
            .iter()
            .map(|(method, path, statuses)| {
                let key = (method.to_string(), path.to_string());
                (key, statuses.iter().copied().collect())
            })
            .collect();
        assert_eq!(documented_statuses(&doc), expected);
    }

    /// Found by fuzzing: utoipa's derive reads a type named `Value` as `serde_json::Value`, and documented
    /// `params` as a list of anything (objects, booleans), which the API refuses. And an empty write, or
    /// empty SQL, is refused too, so the document says so.
    #[test]
    fn sql_parameters_and_statements_are_documented_as_the_api_takes_them() {
        let doc = serde_json::to_value(openapi()).unwrap();
        let schemas = &doc["components"]["schemas"];
        let sql_value = serde_json::json!(["null", "number", "string"]);
        for (schema, field) in [("Statement", "params"), ("ReadRequest", "params")] {
            let items = &schemas[schema]["properties"][field]["items"];
            assert_eq!(items["type"], sql_value, "{schema}.{field}: {items}");
            assert_eq!(
                schemas[schema]["properties"]["sql"]["minLength"], 1,
                "{schema}"
            );
        }
        let rows = &schemas["ReadResponse"]["properties"]["rows"]["items"]["items"];
        assert_eq!(rows["type"], sql_value, "{rows}");
        assert_eq!(
            schemas["WriteRequest"]["properties"]["statements"]["minItems"],
            1
        );
        let key = &doc["paths"]["/api/v1/db/write"]["post"]["parameters"][0];
        assert_eq!(key["name"], "Idempotency-Key");
        assert_eq!(
            key["schema"]["type"], "string",
            "a header is never null: {key}"
        );
    }

    #[tokio::test]
    async fn every_documented_route_is_one_the_router_serves() {
        let app = app();
        for (method, path, statuses) in DATABASE_API {
            let method = Method::from_bytes(method.as_bytes()).unwrap();
            let (status, _, body) = send(&app, method.clone(), path).await;
            assert!(
                statuses.contains(&status.as_u16()),
                "{method} {path}: {status} {body}"
            );
        }
    }

    #[tokio::test]
    async fn the_document_and_swagger_ui_are_served() {
        let app = app();
        let (status, content_type, body) = send(&app, Method::GET, "/api/openapi.json").await;
        assert_eq!(
            (status, content_type.as_str()),
            (StatusCode::OK, "application/json")
        );
        let served: Json = serde_json::from_str(&body).unwrap();
        assert_eq!(served, serde_json::to_value(openapi()).unwrap());
        let (status, content_type, body) = send(&app, Method::GET, "/api/docs/").await;
        assert_eq!(status, StatusCode::OK);
        assert!(content_type.starts_with("text/html"), "{content_type}");
        assert!(body.contains("swagger"), "{body}");
    }
}
