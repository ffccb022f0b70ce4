//! Routes and handlers of the rides service.
//!
//! The API routes (`/api/v1/rides`, `/api/v1/rides/{rideId}`, `/api/v1/rides/count`) sit behind the
//! request-counting middleware, which sees every request that matched them, 400s and 405s included; `_count`,
//! `db/clear`, `/health` and unknown routes are outside it and are not counted.
//!
//! Checks run cheapest first: the request's own values, then the database, then the users service, so a
//! request that is wrong on its face costs no call to another service.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{middleware, Json, Router};
use protocol::ErrorBody;
use public_api::counter::count_request;
use public_api::{
    Area, AreaName, Areas, Db, Empty, JsonBody, PathParam, QueryParams, RequestCounter, Timestamp,
    Username,
};
use serde::{Deserialize, Serialize};
use utoipa_swagger_ui::SwaggerUi;

use crate::db::{self, Join, NewRide, RideId};
use crate::error::Error;
use crate::users_client::UsersClient;

/// What every handler needs; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub db: Db,
    /// `GET /api/v1/areas`'s answer, encoded once: the list does not change while the service runs.
    pub areas: Bytes,
    pub counter: RequestCounter,
    pub users: UsersClient,
}

pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/api/v1/rides", post(create).get(list))
        // A static segment wins over `{ride_id}`, so `count` is never read as a ride id.
        .route("/api/v1/rides/count", get(ride_count))
        .route(
            "/api/v1/rides/{ride_id}",
            get(show).post(join).delete(remove),
        )
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
        // Reference data for clients (the rider page's area picker), not a use of the rides API: not counted,
        // like the API documents.
        .route("/api/v1/areas", get(areas))
        .merge(SwaggerUi::new("/api/docs").url("/api/openapi.json", crate::openapi()))
        .method_not_allowed_fallback(method_not_allowed)
        .merge(api)
        .fallback(|| async { Error::NotFound })
        // After every route and the fallback: request ids and metrics for all of them (see `telemetry::layer`).
        .layer(middleware::from_fn(telemetry::layer))
        .with_state(state)
}

async fn method_not_allowed() -> Error {
    Error::MethodNotAllowed
}

/// `POST /api/v1/rides`: exactly these fields. `created_by` stays a string here: a name that is not a valid
/// username is simply not a user, which is the error the contract gives.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRide {
    #[schema(example = "alice")]
    pub created_by: String,
    pub timestamp: Timestamp,
    pub source: Area,
    pub destination: Area,
}

/// `POST /api/v1/rides/{rideId}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JoinRide {
    #[schema(example = "bob")]
    pub username: String,
}

/// `GET /api/v1/rides?source=a&destination=a`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RouteQuery {
    pub source: Area,
    pub destination: Area,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct Created {
    #[serde(rename = "rideId")]
    ride_id: RideId,
}

#[utoipa::path(post, path = "/api/v1/rides", tag = "rides", request_body = CreateRide,
    responses(
        (status = 201, description = "the ride is created", body = Created),
        (status = 400, description = "an invalid body, an unknown user, a time not after now, an invalid area, or \
            source equal to destination", body = ErrorBody),
        (status = 503, description = "the database or the users service did not answer in time; retry",
            body = ErrorBody),
        (status = 500, description = "a bug of the service", body = ErrorBody),
    ))]
async fn create(
    State(state): State<AppState>,
    JsonBody(request): JsonBody<CreateRide>,
) -> Result<(StatusCode, Json<Created>), Error> {
    if request.source == request.destination {
        return Err(Error::BadRequest(
            "source and destination must be different areas".to_owned(),
        ));
    }
    if request.timestamp <= Timestamp::now() {
        return Err(Error::BadRequest(
            "timestamp must be in the future".to_owned(),
        ));
    }
    let created_by = known_user(&state, request.created_by).await?;
    let ride = NewRide {
        created_by,
        timestamp: request.timestamp,
        source: request.source,
        destination: request.destination,
    };
    match db::insert(&state.db, &ride).await? {
        Some(ride_id) => Ok((StatusCode::CREATED, Json(Created { ride_id }))),
        // Deleted between the check and the insert.
        None => Err(unknown_user(ride.created_by.as_str())),
    }
}

#[utoipa::path(get, path = "/api/v1/rides", tag = "rides", params(RouteQuery),
    responses(
        (status = 200, description = "the rides on that route whose time is after now, earliest first",
            body = [db::RideSummary]),
        (status = 204, description = "there is no such ride"),
        (status = 400, description = "a parameter is missing, unknown or invalid", body = ErrorBody),
        (status = 503, description = "the database or the users service did not answer in time; retry",
            body = ErrorBody),
        (status = 500, description = "a bug of the service", body = ErrorBody),
    ))]
async fn list(
    State(state): State<AppState>,
    QueryParams(route): QueryParams<RouteQuery>,
) -> Result<Response, Error> {
    let rides = db::upcoming(&state.db, route.source, route.destination, Timestamp::now()).await?;
    if rides.is_empty() {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    Ok(Json(rides).into_response())
}

#[utoipa::path(get, path = "/api/v1/rides/{rideId}", tag = "rides",
    params(("rideId" = i64, Path, minimum = 1, description = "the ride's id: a positive integer")),
    responses(
        (status = 200, description = "the ride and who joined it", body = db::Ride),
        (status = 204, description = "no such ride"),
        (status = 400, description = "the id is not a positive integer", body = ErrorBody),
        (status = 503, description = "the database or the users service did not answer in time; retry",
            body = ErrorBody),
        (status = 500, description = "a bug of the service", body = ErrorBody),
    ))]
async fn show(
    State(state): State<AppState>,
    PathParam(ride_id): PathParam,
) -> Result<Json<db::Ride>, Error> {
    let id = ride_id_of(&ride_id)?;
    db::find(&state.db, id)
        .await?
        .map(Json)
        .ok_or(Error::NoSuchRide)
}

#[utoipa::path(post, path = "/api/v1/rides/{rideId}", tag = "rides", request_body = JoinRide,
    params(("rideId" = i64, Path, minimum = 1, description = "the ride's id: a positive integer")),
    responses(
        (status = 200, description = "the user joined the ride", body = Empty),
        (status = 204, description = "no such ride"),
        (status = 400, description = "an invalid id or body, an unknown user, the creator, a user who already \
            joined, or a ride whose time has passed", body = ErrorBody),
        (status = 503, description = "the database or the users service did not answer in time; retry",
            body = ErrorBody),
        (status = 500, description = "a bug of the service", body = ErrorBody),
    ))]
async fn join(
    State(state): State<AppState>,
    PathParam(ride_id): PathParam,
    JsonBody(request): JsonBody<JoinRide>,
) -> Result<Json<Empty>, Error> {
    let id = ride_id_of(&ride_id)?;
    let ride = db::find(&state.db, id).await?.ok_or(Error::NoSuchRide)?;
    let now = Timestamp::now();
    if ride.created_by == request.username {
        return Err(Error::BadRequest(
            "the creator of a ride cannot join it".to_owned(),
        ));
    }
    if ride.timestamp <= now {
        return Err(Error::BadRequest(
            "the ride is already in the past".to_owned(),
        ));
    }
    if ride.users.contains(&request.username) {
        return Err(already_member(&request.username));
    }
    let username = known_user(&state, request.username).await?;
    match db::join(&state.db, id, &username, now).await? {
        Join::Joined => Ok(Json(Empty {})),
        Join::AlreadyMember => Err(already_member(username.as_str())),
        Join::UnknownUser => Err(unknown_user(username.as_str())),
        // The creator and the time were checked above against the same `now`, and neither changes: the
        // ride was deleted in the meantime.
        Join::NotEligible => Err(Error::NoSuchRide),
    }
}

#[utoipa::path(delete, path = "/api/v1/rides/{rideId}", tag = "rides",
    params(("rideId" = i64, Path, minimum = 1, description = "the ride's id: a positive integer")),
    responses(
        (status = 200, description = "the ride and its memberships are deleted", body = Empty),
        (status = 400, description = "no such ride, or the id is not a positive integer", body = ErrorBody),
        (status = 503, description = "the database or the users service did not answer in time; retry",
            body = ErrorBody),
        (status = 500, description = "a bug of the service", body = ErrorBody),
    ))]
async fn remove(
    State(state): State<AppState>,
    PathParam(ride_id): PathParam,
) -> Result<Json<Empty>, Error> {
    let id = ride_id_of(&ride_id)?;
    if !db::delete(&state.db, id).await? {
        return Err(Error::BadRequest(format!("no such ride: {id}")));
    }
    Ok(Json(Empty {}))
}

#[utoipa::path(get, path = "/api/v1/rides/count", tag = "rides",
    responses(
        (status = 200, description = "one number: how many rides are stored, past ones included", body = [u64]),
        (status = 503, description = "the database or the users service did not answer in time; retry",
            body = ErrorBody),
        (status = 500, description = "a bug of the service", body = ErrorBody),
    ))]
async fn ride_count(State(state): State<AppState>) -> Result<Json<[u64; 1]>, Error> {
    Ok(Json([db::count(&state.db).await?]))
}

impl AppState {
    /// `areas` encoded as `GET /api/v1/areas` answers it.
    pub fn encode_areas(areas: &Areas) -> Bytes {
        serde_json::to_vec(&areas.entries())
            .expect("a list of numbers and strings encodes")
            .into()
    }
}

#[utoipa::path(get, path = "/api/v1/areas", tag = "rides",
    responses(
        (status = 200, description = "the 198 areas with their names, by number (not counted)",
            body = [AreaName]),
    ))]
async fn areas(State(state): State<AppState>) -> Response {
    // A clone of `Bytes` shares the buffer: nothing is copied or encoded per request.
    ([(header::CONTENT_TYPE, "application/json")], state.areas).into_response()
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

fn ride_id_of(segment: &str) -> Result<RideId, Error> {
    RideId::parse(segment).map_err(|e| Error::BadRequest(e.to_string()))
}

/// The name as a user the users service knows: one request to it, through the gateway.
async fn known_user(state: &AppState, name: String) -> Result<Username, Error> {
    // A name that is not a valid username cannot belong to a user: no need to ask.
    let username = Username::parse(name.as_str()).map_err(|_| unknown_user(&name))?;
    match state.users.exists(&username).await {
        Ok(true) => Ok(username),
        Ok(false) => Err(unknown_user(&name)),
        Err(e) => Err(Error::Unavailable(e)),
    }
}

fn unknown_user(name: &str) -> Error {
    Error::BadRequest(format!("user {name:.60?} does not exist"))
}

fn already_member(name: &str) -> Error {
    Error::BadRequest(format!("user {name:.60?} has already joined this ride"))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::http::{header, Method};
    use public_api::testing::{error_of, send};

    use super::*;

    /// A router whose database and gateway are unreachable: any request that gets as far as either answers
    /// 503, so a 400 proves the request was turned away before it.
    fn app(dir: &tempfile::TempDir) -> (Router, RequestCounter) {
        let counter = RequestCounter::load(dir.path()).unwrap();
        let db = Db::new("http://127.0.0.1:9", Duration::from_secs(1), Duration::ZERO).unwrap();
        let users =
            UsersClient::new("http://127.0.0.1:9", "http://rides", Duration::from_secs(1)).unwrap();
        let router = router(AppState {
            db,
            areas: AppState::encode_areas(&Areas::builtin()),
            counter: counter.clone(),
            users,
        });
        (router, counter)
    }

    fn ride(created_by: &str, timestamp: &str, source: &str, destination: &str) -> String {
        format!(
            r#"{{"created_by": {created_by}, "timestamp": {timestamp}, "source": {source}, "destination": {destination}}}"#
        )
    }

    #[tokio::test]
    async fn rides_that_are_wrong_on_their_face_are_counted_400s_that_ask_no_other_service() {
        let dir = tempfile::tempdir().unwrap();
        let (app, counter) = app(&dir);
        let future = r#""01-01-2999:00-00-00""#;
        let bodies = [
            ride(r#""a""#, r#""01-01-2000:00-00-00""#, "1", "2"),
            ride(r#""a""#, r#""2999-01-01 00:00:00""#, "1", "2"),
            ride(r#""a""#, r#""31-02-2999:00-00-00""#, "1", "2"),
            ride(r#""a""#, future, "0", "2"),
            ride(r#""a""#, future, "1", "199"),
            ride(r#""a""#, future, r#""x""#, "2"),
            ride(r#""a""#, future, "1.5", "2"),
            ride(r#""a""#, future, "5", r#""5""#),
            ride(r#""""#, future, "1", "2"),
            ride("7", future, "1", "2"),
            r#"{"created_by": "a", "timestamp": "01-01-2999:00-00-00", "source": 1}"#.to_owned(),
            format!(
                r#"{{"created_by": "a", "timestamp": {future}, "source": 1, "destination": 2, "x": 0}}"#
            ),
        ];
        for body in &bodies {
            let (status, _, text) = send(&app, Method::POST, "/api/v1/rides", body).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {text}");
            assert!(!error_of(&text).is_empty());
        }
        assert_eq!(counter.get(), bodies.len() as u64);
    }

    #[tokio::test]
    async fn bad_ride_ids_and_queries_are_counted_400s() {
        let dir = tempfile::tempdir().unwrap();
        let (app, counter) = app(&dir);
        let cases = [
            (Method::GET, "/api/v1/rides/0"),
            (Method::GET, "/api/v1/rides/-1"),
            (Method::GET, "/api/v1/rides/abc"),
            (Method::DELETE, "/api/v1/rides/1.5"),
            (Method::POST, "/api/v1/rides/x"),
            (Method::GET, "/api/v1/rides"),
            (Method::GET, "/api/v1/rides?source=1"),
            (Method::GET, "/api/v1/rides?source=1&destination=0"),
            (Method::GET, "/api/v1/rides?source=1&destination=2&extra=3"),
        ];
        for (method, uri) in &cases {
            let (status, _, text) = send(&app, method.clone(), uri, r#"{"username": "a"}"#).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{method} {uri}: {text}");
            error_of(&text);
        }
        assert_eq!(counter.get(), cases.len() as u64);
    }

    #[tokio::test]
    async fn wrong_methods_are_counted_405s_with_allow_and_unknown_routes_uncounted_404s() {
        let dir = tempfile::tempdir().unwrap();
        let (app, counter) = app(&dir);
        for (method, uri, allowed) in [
            (Method::PUT, "/api/v1/rides", "POST"),
            (Method::DELETE, "/api/v1/rides/count", "GET"),
            (Method::PUT, "/api/v1/rides/1", "DELETE"),
        ] {
            let (status, headers, text) = send(&app, method, uri, "").await;
            assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{uri}");
            assert!(
                headers[header::ALLOW].to_str().unwrap().contains(allowed),
                "{uri}"
            );
            error_of(&text);
        }
        assert_eq!(counter.get(), 3);
        for uri in ["/api/v1/ride", "/api/v1/rides/1/x", "/api/v1/users"] {
            let (status, _, text) = send(&app, Method::GET, uri, "").await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{uri}");
            error_of(&text);
        }
        send(&app, Method::GET, "/api/v1/_count", "").await;
        send(&app, Method::POST, "/api/v1/db/clear", "").await;
        assert_eq!(counter.get(), 3);
    }

    #[tokio::test]
    async fn the_areas_are_listed_by_number_with_their_names_and_not_counted() {
        let dir = tempfile::tempdir().unwrap();
        let (app, counter) = app(&dir);
        let (status, headers, text) = send(&app, Method::GET, "/api/v1/areas", "").await;
        assert_eq!(status, StatusCode::OK, "{text}");
        assert_eq!(headers[header::CONTENT_TYPE], "application/json");
        let areas: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
        assert_eq!(areas.len(), 198);
        assert_eq!(
            areas[0],
            serde_json::json!({"number": 1, "name": "Kempegowda Ward"})
        );
        assert_eq!(
            areas[197],
            serde_json::json!({"number": 198, "name": "Hemmigepura"})
        );
        let (status, headers, _) = send(&app, Method::POST, "/api/v1/areas", "").await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(headers[header::ALLOW], "GET,HEAD");
        assert_eq!(counter.get(), 0);
    }

    #[tokio::test]
    async fn a_users_service_that_cannot_answer_is_a_503() {
        let dir = tempfile::tempdir().unwrap();
        let (app, _) = app(&dir);
        let body = ride(r#""alice""#, r#""01-01-2999:00-00-00""#, "1", "2");
        let (status, _, text) = send(&app, Method::POST, "/api/v1/rides", &body).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(!error_of(&text).contains("127.0.0.1"));
    }
}
