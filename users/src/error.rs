//! The one error type of the users service, and how each kind becomes a status code and a JSON body.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use protocol::ErrorBody;
use public_api::{BadRequest, DbError};

/// Everything a handler can fail with. Client errors carry their message to the client; for server errors
/// the detail goes to the log and the client gets a fixed sentence.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed or cannot be carried out (a taken username, no such user to delete).
    #[error("{0}")]
    BadRequest(String),
    /// An unknown route, or (`GET /api/v1/users/{username}`) no such user.
    #[error("{0}")]
    NotFound(String),
    /// The route exists with other methods; the router adds the `Allow` header.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The database did not answer in time: retrying is safe.
    #[error("the database is unavailable; retry")]
    Unavailable(anyhow::Error),
    /// A bug or an answer that makes no sense: never the client's fault.
    #[error("internal error")]
    Internal(anyhow::Error),
}

impl Error {
    pub fn status_code(&self) -> StatusCode {
        match self {
            Error::BadRequest(_) => StatusCode::BAD_REQUEST,
            Error::NotFound(_) => StatusCode::NOT_FOUND,
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

/// A refusal the handler did not expect (it handles the ones it does, such as a taken username) means our
/// own SQL is wrong: a server error.
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
        let body = ErrorBody {
            error: self.to_string(),
        };
        (self.status_code(), Json(body)).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn server_errors_do_not_leak_their_cause() {
        for e in [
            Error::Internal(anyhow::anyhow!("secret /var/lib/x")),
            Error::Unavailable(anyhow::anyhow!("secret /var/lib/x")),
            Error::from(DbError::Rejected("secret: no such table".into())),
        ] {
            let response = e.into_response();
            assert!(response.status().is_server_error());
            let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .unwrap();
            let body: ErrorBody = serde_json::from_slice(&bytes).unwrap();
            assert!(!body.error.contains("secret"), "{}", body.error);
        }
    }

    #[test]
    fn each_variant_has_its_status() {
        assert_eq!(Error::BadRequest("x".into()).status_code(), 400);
        assert_eq!(Error::NotFound("x".into()).status_code(), 404);
        assert_eq!(Error::MethodNotAllowed.status_code(), 405);
        assert_eq!(
            Error::from(DbError::Unavailable(anyhow::anyhow!("x"))).status_code(),
            503
        );
    }
}
