//! The one error type of the HTTP API, and how each kind becomes a status code and a JSON body.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use protocol::ErrorBody;

/// Everything a handler can fail with. Client errors carry their message to the client; for server errors
/// (5xx) the detail goes to the log and the client gets a fixed sentence, so internal state never leaks.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Malformed request, or SQL the database refused: the message is for the client.
    #[error("{0}")]
    BadRequest(String),
    #[error("no such route")]
    NotFound,
    /// The route exists with other methods; the router adds the `Allow` header.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// There is no master to take a write.
    #[error("no master")]
    NoMaster,
    /// No slave is in the in-sync set, so no slave may answer a read.
    #[error("no slave in sync")]
    NoSlaveInSync,
    /// The workers did not answer in time, the master could not replicate, or the broker failed: retrying
    /// (with the same `Idempotency-Key` for a write) is safe.
    #[error("the database is unavailable")]
    Unavailable(anyhow::Error),
    /// A bug or an unexpected answer: never the client's fault.
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

impl Error {
    pub fn status_code(&self) -> StatusCode {
        match self {
            Error::BadRequest(_) => StatusCode::BAD_REQUEST,
            Error::NotFound => StatusCode::NOT_FOUND,
            Error::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Error::NoMaster | Error::NoSlaveInSync | Error::Unavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A failure that may go away by itself (a failover, a broker reconnection): worth another attempt.
    /// Client errors and bugs are not.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::NoMaster | Error::NoSlaveInSync | Error::Unavailable(_)
        )
    }

    /// The text sent to the client: the Display of the variant, which for 5xx never includes the cause.
    fn public_message(&self) -> String {
        match self {
            Error::Unavailable(_) => {
                "the database did not answer in time; retry (a write with the same Idempotency-Key)"
                    .to_owned()
            }
            other => other.to_string(),
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        match &self {
            Error::Unavailable(cause) => tracing::warn!("503 unavailable: {cause:#}"),
            Error::Internal(cause) => tracing::error!("500 internal error: {cause:#}"),
            // Expected while a cluster starts or fails over, and polled by /health: not worth a warning.
            Error::NoMaster | Error::NoSlaveInSync => tracing::debug!("503 {self}"),
            _ => {}
        }
        let body = ErrorBody {
            error: self.public_message(),
        };
        (self.status_code(), Json(body)).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body_of(e: Error) -> (StatusCode, String) {
        let resp = e.into_response();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        let body: ErrorBody = serde_json::from_slice(&bytes).unwrap();
        (status, body.error)
    }

    #[tokio::test]
    async fn a_bad_request_carries_its_message() {
        let (status, msg) = body_of(Error::BadRequest("no such table: x".into())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(msg, "no such table: x");
    }

    #[tokio::test]
    async fn server_errors_do_not_leak_their_cause() {
        for e in [
            Error::Internal(anyhow::anyhow!("secret path /var/lib/x")),
            Error::Unavailable(anyhow::anyhow!("secret path /var/lib/x")),
        ] {
            let expected = e.status_code();
            let (status, msg) = body_of(e).await;
            assert_eq!(status, expected);
            assert!(status.is_server_error());
            assert!(!msg.contains("secret"), "{msg}");
        }
    }

    #[test]
    fn only_unavailability_is_worth_retrying() {
        assert!(Error::NoMaster.is_transient());
        assert!(Error::NoSlaveInSync.is_transient());
        assert!(Error::Unavailable(anyhow::anyhow!("x")).is_transient());
        assert!(!Error::BadRequest("x".into()).is_transient());
        assert!(!Error::Internal(anyhow::anyhow!("x")).is_transient());
    }

    #[test]
    fn every_variant_maps_to_its_status() {
        assert_eq!(Error::NotFound.status_code(), StatusCode::NOT_FOUND);
        assert_eq!(
            Error::MethodNotAllowed.status_code(),
            StatusCode::METHOD_NOT_ALLOWED
        );
        assert_eq!(
            Error::NoMaster.status_code(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            Error::NoSlaveInSync.status_code(),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
}
