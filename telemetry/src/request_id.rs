//! Request ids: `X-Request-Id`, set by the gateway (or by whoever calls a service directly), passed on by every
//! service to the next, and by the orchestrator to the workers in an AMQP header of each batch
//! (`broker::REQUEST_IDS_HEADER` lists the ids of the batch's requests).
//!
//! The id of the request being served lives in a task-local ([`scope`]): handlers do not pass it around, and the
//! HTTP clients read it ([`current`]) when they call the next service. An id from outside is used only when it
//! is short and made of characters that cannot break a log line or a header (see [`is_valid`]); otherwise a
//! new one is made, as for a request without one.

use axum::http::{HeaderMap, HeaderValue};

/// The header, in the lower case HTTP/2 requires (HTTP/1 headers are case-insensitive).
pub const HEADER: &str = "x-request-id";

/// Longest id accepted from outside (nginx's own ids are 32 hex digits, UUIDs 36 characters).
pub const MAX_LEN: usize = 128;

tokio::task_local! {
    static CURRENT: String;
}

/// Whether `id` may be used as given: 1 to [`MAX_LEN`] characters among ASCII letters, digits, `-`, `_`, `.`
/// and `:`. Nothing that could end a log line, a JSON string or a header.
pub fn is_valid(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// A new id (a UUID, without braces).
pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// The request's id: the caller's when it is valid, a new one otherwise.
pub fn from_headers(headers: &HeaderMap) -> String {
    headers
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|id| is_valid(id))
        .map_or_else(new_id, str::to_owned)
}

/// Sets the header to `id` (valid ids are always valid header values).
pub fn set_header(headers: &mut HeaderMap, id: &str) {
    if let Ok(value) = HeaderValue::from_str(id) {
        headers.insert(HEADER, value);
    }
}

/// Runs `f` with `id` as the current request id.
pub async fn scope<F: std::future::Future>(id: String, f: F) -> F::Output {
    CURRENT.scope(id, f).await
}

/// The id of the request this task is serving, if it serves one.
pub fn current() -> Option<String> {
    CURRENT.try_with(Clone::clone).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_of_safe_characters_are_valid_and_others_are_not() {
        assert!(is_valid("3f2c9a0d4b1e4f6a8c7d2e1f0a9b8c7d"));
        assert!(is_valid("req-1_a.b:c"));
        for bad in [
            "",
            "a b",
            "a\nb",
            "a\"b",
            "a{b",
            "é",
            &"x".repeat(MAX_LEN + 1),
        ] {
            assert!(!is_valid(bad), "{bad:?}");
        }
        assert!(is_valid(&new_id()));
    }

    #[tokio::test]
    async fn the_current_id_is_the_scopes_and_none_outside_one() {
        assert_eq!(current(), None);
        let seen = scope("r-1".into(), async { current() }).await;
        assert_eq!(seen.as_deref(), Some("r-1"));
    }
}
