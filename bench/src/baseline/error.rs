//! The one error type of the baseline, and how each kind becomes a status code and a body: the statuses and
//! bodies of the users and rides services' own `Error` types.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use protocol::ErrorBody;
use public_api::BadRequest;

/// Everything a handler can fail with. Client errors carry their message to the client; for server errors the
/// detail goes to the log and the client gets a fixed sentence.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed or cannot be carried out (a taken name, an unknown user, a past time, ...).
    #[error("{0}")]
    BadRequest(String),
    /// An unknown route, or (`GET /api/v1/users/{username}`) no such user.
    #[error("{0}")]
    NotFound(String),
    /// The ride does not exist, where the contract answers `204` with an empty body (reading or joining it).
    #[error("no such ride")]
    NoSuchRide,
    /// The route exists with other methods; the router adds the `Allow` header.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// A bug, or SQLite failing: never the client's fault.
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

impl Error {
    pub fn status_code(&self) -> StatusCode {
        match self {
            Error::BadRequest(_) => StatusCode::BAD_REQUEST,
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::NoSuchRide => StatusCode::NO_CONTENT,
            Error::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<BadRequest> for Error {
    fn from(e: BadRequest) -> Self {
        Error::BadRequest(e.0)
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        match &self {
            Error::Internal(cause) => tracing::error!("500: {cause:#}"),
            Error::NoSuchRide => return StatusCode::NO_CONTENT.into_response(),
            _ => {}
        }
        let body = ErrorBody {
            error: self.to_string(),
        };
        (self.status_code(), Json(body)).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn parts(e: Error) -> (StatusCode, Vec<u8>) {
        let response = e.into_response();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, bytes.to_vec())
    }

    #[tokio::test]
    async fn no_such_ride_is_an_empty_204_and_a_500_keeps_its_cause_to_itself() {
        assert_eq!(
            parts(Error::NoSuchRide).await,
            (StatusCode::NO_CONTENT, vec![])
        );
        let (status, bytes) = parts(Error::Internal(anyhow::anyhow!("secret /tmp/x"))).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        let body: ErrorBody = serde_json::from_slice(&bytes).unwrap();
        assert!(!body.error.contains("secret"), "{}", body.error);
    }
}
