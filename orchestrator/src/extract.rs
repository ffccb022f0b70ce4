//! What the API takes from a request before a handler runs: the strict JSON body and the `Idempotency-Key`.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, StatusCode};
use serde::de::DeserializeOwned;

use crate::error::Error;

/// Largest request body accepted. Above the 64 KiB of the public services: a `db/write` batches the
/// statements of one service request, and schema creation travels as one write.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Longest `Idempotency-Key` accepted; keys are stored by the master, so they must stay small.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 200;

/// The `Idempotency-Key` header: `None` when absent; 1 to 200 visible ASCII characters (no spaces) when given.
pub fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, Error> {
    let mut values = headers.get_all("idempotency-key").iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(Error::BadRequest(
            "more than one Idempotency-Key header".to_owned(),
        ));
    }
    let bytes = value.as_bytes();
    let valid = (1..=MAX_IDEMPOTENCY_KEY_LEN).contains(&bytes.len())
        && bytes.iter().all(|b| b.is_ascii_graphic());
    if !valid {
        return Err(Error::BadRequest(format!(
            "Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} visible ASCII characters"
        )));
    }
    // Visible ASCII is valid UTF-8.
    Ok(Some(String::from_utf8_lossy(bytes).into_owned()))
}

/// A JSON body, parsed strictly (the request types reject unknown fields), with every failure a 400 and a
/// readable reason. axum's own `Json` answers 415 for a missing content type and 422 for wrong fields;
/// this one ignores the `Content-Type` header altogether: the body must be JSON whatever the header says.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(body_rejection)?;
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|e| Error::BadRequest(format!("invalid JSON body: {e}")))
    }
}

fn body_rejection(rejection: BytesRejection) -> Error {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        Error::BadRequest(format!("request body larger than {MAX_BODY_BYTES} bytes"))
    } else {
        Error::BadRequest(format!(
            "unreadable request body: {}",
            rejection.body_text()
        ))
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn idempotency_keys_are_validated() {
        let mut h = HeaderMap::new();
        assert!(idempotency_key(&h).unwrap().is_none());
        h.insert("idempotency-key", HeaderValue::from_static("a"));
        assert_eq!(idempotency_key(&h).unwrap().as_deref(), Some("a"));
        h.insert(
            "idempotency-key",
            HeaderValue::from_str(&"~".repeat(MAX_IDEMPOTENCY_KEY_LEN)).unwrap(),
        );
        assert!(idempotency_key(&h).unwrap().is_some());
        h.append("idempotency-key", HeaderValue::from_static("b"));
        assert!(idempotency_key(&h).is_err());
        let mut h = HeaderMap::new();
        h.insert(
            "idempotency-key",
            HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap(),
        );
        assert!(idempotency_key(&h).is_err());
    }

    proptest::proptest! {
        #[test]
        fn any_key_of_visible_ascii_up_to_the_limit_is_accepted(key in "[!-~]{1,200}") {
            let mut h = HeaderMap::new();
            h.insert("idempotency-key", HeaderValue::from_str(&key).unwrap());
            proptest::prop_assert_eq!(idempotency_key(&h).unwrap(), Some(key));
        }

        #[test]
        fn a_key_with_any_other_byte_is_refused(
            prefix in "[!-~]{0,50}",
            suffix in "[!-~]{0,50}",
            // What a header value may hold besides visible ASCII: space, tab and obs-text.
            bad in proptest::sample::select([b' ', b'\t'].into_iter().chain(0x80..=0xffu8).collect::<Vec<u8>>()),
        ) {
            let bytes = [prefix.as_bytes(), &[bad], suffix.as_bytes()].concat();
            let mut h = HeaderMap::new();
            h.insert("idempotency-key", HeaderValue::from_bytes(&bytes).unwrap());
            proptest::prop_assert!(idempotency_key(&h).is_err());
        }
    }
}
