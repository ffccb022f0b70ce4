//! Routes and handlers of the users service.
//!
//! The API routes (`/api/v1/users`, `/api/v1/users/{username}`) sit behind the request-counting middleware,
//! which sees every request that matched them, 400s and 405s included; `_count`, `db/clear`, `/health` and
//! unknown routes are outside it and are not counted.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{middleware, Json, Router};
use protocol::ErrorBody;
use public_api::counter::count_request;
use public_api::{Db, Empty, JsonBody, PasswordHash, PathParam, RequestCounter, Username};
use serde::{Deserialize, Serialize};

use crate::db::{self, Registration};
use crate::error::Error;

/// What every handler needs; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub db: Db,
    pub counter: RequestCounter,
}

pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/api/v1/users", put(register).get(list))
        .route("/api/v1/users/{username}", get(show).delete(remove))
        // Before the counting layer, so that the 405s it produces are counted too.
        .method_not_allowed_fallback(method_not_allowed)
        .route_layer(middleware::from_fn_with_state(
            state.counter.clone(),
            count_request,
        ));
    Router::new()
        .route("/health", get(health))
        .route("/api/v1/db/clear", post(clear))
        .route("/api/v1/_count", get(count).delete(reset_count))
        .route("/metrics", get(telemetry::metrics::render))
        .method_not_allowed_fallback(method_not_allowed)
        .merge(api)
        .fallback(|| async { Error::NotFound("no such route".to_owned()) })
        // After every route and the fallback: request ids and metrics for all of them (see `telemetry::layer`).
        .layer(middleware::from_fn(telemetry::layer))
        .with_state(state)
}

async fn method_not_allowed() -> Error {
    Error::MethodNotAllowed
}

/// `PUT /api/v1/users`: exactly these fields, each validated as it is parsed.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    pub username: Username,
    pub password: PasswordHash,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct UserBody {
    username: String,
}

#[utoipa::path(put, path = "/api/v1/users", tag = "users", request_body = NewUser,
    responses(
        (status = 201, description = "the user is registered", body = Empty),
        (status = 400, description = "an invalid body, username or password, or the name is taken",
            body = ErrorBody),
        (status = 503, description = "the database did not answer in time; retry", body = ErrorBody),
        (status = 500, description = "a bug of the service", body = ErrorBody),
    ))]
async fn register(
    State(state): State<AppState>,
    JsonBody(user): JsonBody<NewUser>,
) -> Result<(StatusCode, Json<Empty>), Error> {
    match db::register(&state.db, &user.username, &user.password).await? {
        Registration::Created => Ok((StatusCode::CREATED, Json(Empty {}))),
        Registration::Taken => Err(Error::BadRequest(format!(
            "username {:?} is already taken",
            user.username.as_str()
        ))),
    }
}

#[utoipa::path(get, path = "/api/v1/users", tag = "users",
    responses(
        (status = 200, description = "every username, in order of registration", body = [String]),
        (status = 204, description = "there are no users"),
        (status = 503, description = "the database did not answer in time; retry", body = ErrorBody),
        (status = 500, description = "a bug of the service", body = ErrorBody),
    ))]
async fn list(State(state): State<AppState>) -> Result<Response, Error> {
    let names = db::usernames(&state.db).await?;
    if names.is_empty() {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    Ok(Json(names).into_response())
}

/// `GET /api/v1/users/{username}` (ext): how the rides service checks that a user exists.
#[utoipa::path(get, path = "/api/v1/users/{username}", tag = "users",
    params(("username" = String, Path, description = "the username, as one percent-encoded path segment")),
    responses(
        (status = 200, description = "the user exists", body = UserBody),
        (status = 400, description = "the path segment is not valid percent-encoded UTF-8", body = ErrorBody),
        (status = 404, description = "no such user", body = ErrorBody),
        (status = 503, description = "the database did not answer in time; retry", body = ErrorBody),
        (status = 500, description = "a bug of the service", body = ErrorBody),
    ))]
async fn show(
    State(state): State<AppState>,
    PathParam(name): PathParam,
) -> Result<Json<UserBody>, Error> {
    // A name that is not a valid username cannot belong to a user.
    let no_such_user = || Error::NotFound("no such user".to_owned());
    let username = Username::parse(name).map_err(|_| no_such_user())?;
    if !db::exists(&state.db, &username).await? {
        return Err(no_such_user());
    }
    Ok(Json(UserBody {
        username: username.as_str().to_owned(),
    }))
}

#[utoipa::path(delete, path = "/api/v1/users/{username}", tag = "users",
    params(("username" = String, Path, description = "the username, as one percent-encoded path segment")),
    responses(
        (status = 200, description = "the user, their rides and their memberships are deleted", body = Empty),
        (status = 400, description = "no such user, or a path segment that is not valid percent-encoded UTF-8",
            body = ErrorBody),
        (status = 503, description = "the database did not answer in time; retry", body = ErrorBody),
        (status = 500, description = "a bug of the service", body = ErrorBody),
    ))]
async fn remove(
    State(state): State<AppState>,
    PathParam(name): PathParam,
) -> Result<Json<Empty>, Error> {
    let no_such_user = || Error::BadRequest("no such user".to_owned());
    let username = Username::parse(name).map_err(|_| no_such_user())?;
    if !db::delete(&state.db, &username).await? {
        return Err(no_such_user());
    }
    Ok(Json(Empty {}))
}

async fn clear(State(state): State<AppState>) -> Result<Json<Empty>, Error> {
    db::delete_all(&state.db).await?;
    Ok(Json(Empty {}))
}

async fn count(State(state): State<AppState>) -> Json<[u64; 1]> {
    Json([state.counter.get()])
}

async fn reset_count(State(state): State<AppState>) -> Json<Empty> {
    state.counter.reset();
    Json(Empty {})
}

async fn health() -> Json<Empty> {
    Json(Empty {})
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::http::{header, Method};
    use public_api::testing::{error_of, send};

    use super::*;

    /// A router whose database is unreachable: any request that gets as far as the database answers 503, so
    /// a 400 or 404 proves the request was turned away before it.
    fn app(dir: &tempfile::TempDir) -> (Router, RequestCounter) {
        let counter = RequestCounter::load(dir.path()).unwrap();
        let db = Db::new("http://127.0.0.1:9", Duration::from_secs(1), Duration::ZERO).unwrap();
        let router = router(AppState {
            db,
            counter: counter.clone(),
        });
        (router, counter)
    }

    #[tokio::test]
    async fn a_wrong_method_on_a_users_route_is_a_counted_405_with_allow() {
        let dir = tempfile::tempdir().unwrap();
        let (app, counter) = app(&dir);
        let (status, headers, body) = send(&app, Method::POST, "/api/v1/users", "").await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        let allow = headers[header::ALLOW].to_str().unwrap().to_owned();
        assert!(allow.contains("PUT") && allow.contains("GET"), "{allow}");
        error_of(&body);
        let (status, headers, _) = send(&app, Method::PUT, "/api/v1/users/alice", "").await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert!(headers[header::ALLOW].to_str().unwrap().contains("DELETE"));
        assert_eq!(counter.get(), 2);
    }

    #[tokio::test]
    async fn unknown_routes_and_the_counter_routes_are_not_counted() {
        let dir = tempfile::tempdir().unwrap();
        let (app, counter) = app(&dir);
        for uri in ["/api/v1/user", "/api/v1/users/a/b", "/api/v1/users/", "/"] {
            let (status, _, body) = send(&app, Method::GET, uri, "").await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{uri}");
            error_of(&body);
        }
        let (status, headers, _) = send(&app, Method::POST, "/api/v1/_count", "").await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert!(headers.contains_key(header::ALLOW));
        assert_eq!(
            send(&app, Method::GET, "/health", "").await.0,
            StatusCode::OK
        );
        assert_eq!(counter.get(), 0);
        assert_eq!(send(&app, Method::GET, "/api/v1/_count", "").await.2, "[0]");
    }

    #[tokio::test]
    async fn malformed_registrations_are_counted_400s_that_never_reach_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let (app, counter) = app(&dir);
        let hash = "a".repeat(40);
        let bodies = [
            String::new(),
            "{".to_owned(),
            format!(r#"{{"username": "", "password": "{hash}"}}"#),
            format!(r#"{{"username": "a\u0007", "password": "{hash}"}}"#),
            format!(
                r#"{{"username": "{}", "password": "{hash}"}}"#,
                "x".repeat(129)
            ),
            r#"{"username": "a", "password": "abc"}"#.to_owned(),
            r#"{"username": "a"}"#.to_owned(),
            format!(r#"{{"username": "a", "password": "{hash}", "admin": true}}"#),
            format!(r#"{{"username": 1, "password": "{hash}"}}"#),
        ];
        for body in &bodies {
            let (status, _, text) = send(&app, Method::PUT, "/api/v1/users", body).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
            assert!(!error_of(&text).is_empty());
        }
        assert_eq!(counter.get(), bodies.len() as u64);
    }

    #[tokio::test]
    async fn an_invalid_username_in_the_path_is_no_such_user_without_asking_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let (app, _) = app(&dir);
        let long = "x".repeat(129);
        let (status, _, body) = send(&app, Method::GET, &format!("/api/v1/users/{long}"), "").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(error_of(&body), "no such user");
        let (status, _, body) = send(&app, Method::DELETE, "/api/v1/users/a%0Ab", "").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(error_of(&body), "no such user");
    }

    #[tokio::test]
    async fn an_unreachable_database_is_a_503_that_says_nothing_of_the_cause() {
        let dir = tempfile::tempdir().unwrap();
        let (app, _) = app(&dir);
        let (status, _, body) = send(&app, Method::GET, "/api/v1/users", "").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(!error_of(&body).contains("127.0.0.1"));
    }

    #[tokio::test]
    async fn the_counter_resets_to_zero() {
        let dir = tempfile::tempdir().unwrap();
        let (app, counter) = app(&dir);
        send(&app, Method::PATCH, "/api/v1/users", "").await;
        assert_eq!(send(&app, Method::GET, "/api/v1/_count", "").await.2, "[1]");
        let (status, _, body) = send(&app, Method::DELETE, "/api/v1/_count", "").await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "{}"));
        assert_eq!(counter.get(), 0);
    }
}
