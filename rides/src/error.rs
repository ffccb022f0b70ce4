//! The one error type of the rides service, and how each kind becomes a status code and a body.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use protocol::ErrorBody;
use public_api::{BadRequest, DbError};

/// Everything a handler can fail with. Client errors carry their message to the client; for server errors
/// the detail goes to the log and the client gets a fixed sentence.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed or cannot be carried out (unknown user, a time in the past, ...).
    #[error("{0}")]
    BadRequest(String),
    /// The ride does not exist, where api.md answers `204` with an empty body (reading or joining a ride),
    /// as the original system did.
    #[error("no such ride")]
    NoSuchRide,
    #[error("no such route")]
    NotFound,
    /// The route exists with other methods; the router adds the `Allow` header.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The database or the users service did not answer in time: retrying is safe.
    #[error("a service this one depends on is unavailable; retry")]
    Unavailable(anyhow::Error),
    /// A bug or an answer that makes no sense: never the client's fault.
    #[error("internal error")]
    Internal(anyhow::Error),
}

impl Error {
    pub fn status_code(&self) -> StatusCode {
        match self {
            Error::BadRequest(_) => StatusCode::BAD_REQUEST,
            Error::NoSuchRide => StatusCode::NO_CONTENT,
            Error::NotFound => StatusCode::NOT_FOUND,
            Error::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Error::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<BadRequest> for Error {
    fn from(e: BadRequest) -> Self {
        Error::BadRequest(e.0)
    }
}

/// A refusal the handler did not expect (it handles the ones it does, such as a duplicate membership) means
/// our own SQL is wrong: a server error.
impl From<DbError> for Error {
    fn from(e: DbError) -> Self {
        match e {
            DbError::Unavailable(cause) => Error::Unavailable(cause),
            e @ (DbError::Rejected(_) | DbError::Unexpected(_)) => Error::Internal(e.into()),
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        match &self {
            Error::Unavailable(cause) => tracing::warn!("503: {cause:#}"),
            Error::Internal(cause) => tracing::error!("500: {cause:#}"),
            _ => {}
        }
        if let Error::NoSuchRide = self {
            return StatusCode::NO_CONTENT.into_response();
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
    async fn no_such_ride_is_an_empty_204() {
        assert_eq!(
            parts(Error::NoSuchRide).await,
            (StatusCode::NO_CONTENT, vec![])
        );
    }

    #[tokio::test]
    async fn server_errors_do_not_leak_their_cause() {
        for e in [
            Error::Internal(anyhow::anyhow!("secret /var/lib/x")),
            Error::Unavailable(anyhow::anyhow!("secret /var/lib/x")),
            Error::from(DbError::Rejected("secret: no such table".into())),
        ] {
            let (status, bytes) = parts(e).await;
            assert!(status.is_server_error());
            let body: ErrorBody = serde_json::from_slice(&bytes).unwrap();
            assert!(!body.error.contains("secret"), "{}", body.error);
        }
    }
}
