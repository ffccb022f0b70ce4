//! Routes and handlers of the baseline: the users service's and the rides service's, on one router.
//!
//! The checks are the services' own, in their order (the request's values, then the data), with the same
//! bodies, statuses and messages; the request types take the values of `public_api`, so a body the services
//! refuse is refused here for the same reason. Where the rides service asks the users service whether a user
//! exists (an HTTP request through the gateway), this asks the database.
//!
//! The API routes sit behind the request counter, as in the services. One process, one counter: it counts the
//! users routes and the rides routes together (the system keeps one per service), and an existence check is a
//! query here, not a request, so it counts nothing.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{middleware, Json, Router};
use public_api::counter::count_request;
use public_api::{
    Area, Empty, JsonBody, PasswordHash, PathParam, QueryParams, RequestCounter, Timestamp,
    Username,
};
use serde::{Deserialize, Serialize};

use super::error::Error;
use super::store::{self, Join, NewRide, Registration, Store};

/// What every handler needs; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub counter: RequestCounter,
}

pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/api/v1/users", put(register).get(list_users))
        .route(
            "/api/v1/users/{username}",
            get(show_user).delete(remove_user),
        )
        .route("/api/v1/rides", post(create_ride).get(list_rides))
        // A static segment wins over `{ride_id}`, so `count` is never read as a ride id.
        .route("/api/v1/rides/count", get(ride_count))
        .route(
            "/api/v1/rides/{ride_id}",
            get(show_ride).post(join_ride).delete(remove_ride),
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
        .method_not_allowed_fallback(method_not_allowed)
        .merge(api)
        .fallback(|| async { Error::NotFound("no such route".to_owned()) })
        .with_state(state)
}

async fn method_not_allowed() -> Error {
    Error::MethodNotAllowed
}

/// `PUT /api/v1/users` (`users::http::NewUser`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    pub username: Username,
    pub password: PasswordHash,
}

/// `POST /api/v1/rides` (`rides::http::CreateRide`). `created_by` stays a string: a name that is not a valid
/// username is simply not a user, which is the error the contract gives.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRide {
    pub created_by: String,
    pub timestamp: Timestamp,
    pub source: Area,
    pub destination: Area,
}

/// `POST /api/v1/rides/{rideId}` (`rides::http::JoinRide`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinRide {
    pub username: String,
}

/// `GET /api/v1/rides?source=a&destination=a` (`rides::http::RouteQuery`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteQuery {
    pub source: Area,
    pub destination: Area,
}

#[derive(Debug, Serialize)]
struct UserBody {
    username: String,
}

#[derive(Debug, Serialize)]
struct Created {
    #[serde(rename = "rideId")]
    ride_id: i64,
}

async fn register(
    State(state): State<AppState>,
    JsonBody(user): JsonBody<NewUser>,
) -> Result<(StatusCode, Json<Empty>), Error> {
    match state.store.register(&user.username, &user.password).await? {
        Registration::Created => Ok((StatusCode::CREATED, Json(Empty {}))),
        Registration::Taken => Err(Error::BadRequest(format!(
            "username {:?} is already taken",
            user.username.as_str()
        ))),
    }
}

async fn list_users(State(state): State<AppState>) -> Result<Response, Error> {
    let names = state.store.usernames().await?;
    if names.is_empty() {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    Ok(Json(names).into_response())
}

async fn show_user(
    State(state): State<AppState>,
    PathParam(name): PathParam,
) -> Result<Json<UserBody>, Error> {
    let no_such_user = || Error::NotFound("no such user".to_owned());
    let username = Username::parse(name).map_err(|_| no_such_user())?;
    if !state.store.user_exists(&username).await? {
        return Err(no_such_user());
    }
    Ok(Json(UserBody {
        username: username.as_str().to_owned(),
    }))
}

async fn remove_user(
    State(state): State<AppState>,
    PathParam(name): PathParam,
) -> Result<Json<Empty>, Error> {
    let no_such_user = || Error::BadRequest("no such user".to_owned());
    let username = Username::parse(name).map_err(|_| no_such_user())?;
    if !state.store.delete_user(&username).await? {
        return Err(no_such_user());
    }
    Ok(Json(Empty {}))
}

async fn create_ride(
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
    match state.store.insert_ride(&ride).await? {
        Some(ride_id) => Ok((StatusCode::CREATED, Json(Created { ride_id }))),
        // Deleted between the check and the insert.
        None => Err(unknown_user(ride.created_by.as_str())),
    }
}

async fn list_rides(
    State(state): State<AppState>,
    QueryParams(route): QueryParams<RouteQuery>,
) -> Result<Response, Error> {
    let rides = state
        .store
        .upcoming(route.source, route.destination, Timestamp::now())
        .await?;
    if rides.is_empty() {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    Ok(Json(rides).into_response())
}

async fn show_ride(
    State(state): State<AppState>,
    PathParam(ride_id): PathParam,
) -> Result<Json<store::Ride>, Error> {
    let id = ride_id_of(&ride_id)?;
    state
        .store
        .find_ride(id)
        .await?
        .map(Json)
        .ok_or(Error::NoSuchRide)
}

async fn join_ride(
    State(state): State<AppState>,
    PathParam(ride_id): PathParam,
    JsonBody(request): JsonBody<JoinRide>,
) -> Result<Json<Empty>, Error> {
    let id = ride_id_of(&ride_id)?;
    let ride = state.store.find_ride(id).await?.ok_or(Error::NoSuchRide)?;
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
    match state.store.join(id, &username, now).await? {
        Join::Joined => Ok(Json(Empty {})),
        Join::AlreadyMember => Err(already_member(username.as_str())),
        Join::UnknownUser => Err(unknown_user(username.as_str())),
        // The creator and the time were checked above against the same `now`: the ride was deleted since.
        Join::NotEligible => Err(Error::NoSuchRide),
    }
}

async fn remove_ride(
    State(state): State<AppState>,
    PathParam(ride_id): PathParam,
) -> Result<Json<Empty>, Error> {
    let id = ride_id_of(&ride_id)?;
    if !state.store.delete_ride(id).await? {
        return Err(Error::BadRequest(format!("no such ride: {id}")));
    }
    Ok(Json(Empty {}))
}

async fn ride_count(State(state): State<AppState>) -> Result<Json<[u64; 1]>, Error> {
    Ok(Json([state.store.ride_count().await?]))
}

/// Both services' `db/clear` at once: every user, and so every ride.
async fn clear(State(state): State<AppState>) -> Result<Json<Empty>, Error> {
    state.store.clear().await?;
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

/// A path segment of ASCII digits (leading zeros allowed) naming a positive integer that fits an i64, as
/// `rides::db::RideId::parse` reads it.
fn ride_id_of(segment: &str) -> Result<i64, Error> {
    let invalid = || {
        Error::BadRequest(format!(
            "rideId must be a positive integer, got {segment:.40?}"
        ))
    };
    if segment.is_empty() || !segment.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    match segment.parse::<i64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(invalid()),
    }
}

/// The name as a user the database knows. A name that is not a valid username cannot belong to a user: no
/// need to ask.
async fn known_user(state: &AppState, name: String) -> Result<Username, Error> {
    let username = Username::parse(name.as_str()).map_err(|_| unknown_user(&name))?;
    if state.store.user_exists(&username).await? {
        Ok(username)
    } else {
        Err(unknown_user(&name))
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
    use super::*;

    #[test]
    fn a_ride_id_is_a_positive_integer_in_digits() {
        assert_eq!(ride_id_of("007").unwrap(), 7);
        assert_eq!(ride_id_of("9223372036854775807").unwrap(), i64::MAX);
        for bad in [
            "",
            "0",
            "-1",
            "+1",
            "1.0",
            " 1",
            "abc",
            "9223372036854775808",
        ] {
            assert!(ride_id_of(bad).is_err(), "{bad:?}");
        }
    }
}
