//! How the rides service learns whether a user exists: by asking the users service through the gateway
//! (`GET /api/v1/users/{username}`), exactly one request per check, with an `Origin` header naming this
//! service's public address, over a keep-alive connection pool.

use std::time::Duration;

use anyhow::{bail, Context};
use public_api::Username;
use reqwest::header::{HeaderValue, ORIGIN};
use reqwest::{StatusCode, Url};

#[derive(Clone, Debug)]
pub struct UsersClient {
    http: reqwest::Client,
    /// `<gateway>/api/v1/users`, to which the username is appended as one path segment.
    users_url: Url,
    origin: HeaderValue,
}

impl UsersClient {
    pub fn new(gateway_url: &str, origin: &str, timeout: Duration) -> anyhow::Result<Self> {
        let mut users_url = Url::parse(gateway_url)
            .with_context(|| format!("the gateway URL {gateway_url:?} is not a URL"))?;
        users_url
            .path_segments_mut()
            .map_err(|()| anyhow::anyhow!("the gateway URL {gateway_url:?} cannot have a path"))?
            .pop_if_empty()
            .extend(["api", "v1", "users"]);
        let origin = HeaderValue::from_str(origin)
            .with_context(|| format!("{origin:?} cannot be an Origin header"))?;
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            .build()?;
        Ok(Self {
            http,
            users_url,
            origin,
        })
    }

    /// Whether the users service knows `username`. An error means it could not say.
    pub async fn exists(&self, username: &Username) -> anyhow::Result<bool> {
        let url = self.user_url(username);
        let mut request = self
            .http
            .get(url.clone())
            .header(ORIGIN, self.origin.clone());
        // The ride request being served: the check is part of it, in the gateway's log and the users service's.
        if let Some(id) = telemetry::request_id::current() {
            request = request.header(telemetry::request_id::HEADER, id);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("asking the users service: GET {url}"))?;
        match response.status() {
            StatusCode::OK => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            other => bail!("the users service answered GET {url} with {other}"),
        }
    }

    /// The user's URL, with the name percent-encoded as one path segment. A [`Username`] is never `.` or
    /// `..`, the two names URL resolution would rewrite, so every user has one.
    fn user_url(&self, username: &Username) -> Url {
        let mut url = self.users_url.clone();
        url.path_segments_mut()
            .expect("checked in new: the URL has a path")
            .push(username.as_str());
        url
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use axum::extract::Request;
    use axum::http::StatusCode as AxumStatus;
    use axum::Router;

    use super::*;

    /// The path, `Origin` and `X-Request-Id` headers of each request the fake gateway saw.
    type Seen = Arc<Mutex<Vec<(String, Option<String>, Option<String>)>>>;

    /// A fake gateway that records each request's path and Origin, and knows one user, `alice`.
    async fn fake_gateway() -> (String, Seen) {
        let seen: Seen = Arc::default();
        let log = seen.clone();
        let app = Router::new().fallback(move |request: Request| {
            let log = log.clone();
            async move {
                let path = request.uri().path().to_owned();
                let header = |name: &str| {
                    request
                        .headers()
                        .get(name)
                        .map(|v| v.to_str().unwrap().to_owned())
                };
                let (origin, id) = (header("origin"), header("x-request-id"));
                log.lock().unwrap().push((path.clone(), origin, id));
                match path.as_str() {
                    "/api/v1/users/alice" => AxumStatus::OK,
                    "/api/v1/users/boom" => AxumStatus::INTERNAL_SERVER_ERROR,
                    _ => AxumStatus::NOT_FOUND,
                }
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (base, seen)
    }

    fn name(s: &str) -> Username {
        Username::parse(s).unwrap()
    }

    #[tokio::test]
    async fn each_check_is_one_request_with_the_origin_header() {
        let (gateway, seen) = fake_gateway().await;
        let client = UsersClient::new(
            &gateway,
            "http://rides.example:8082",
            Duration::from_secs(5),
        )
        .unwrap();
        assert!(client.exists(&name("alice")).await.unwrap());
        assert!(!client.exists(&name("bob")).await.unwrap());
        assert!(client.exists(&name("boom")).await.is_err());
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 3);
        for (_, origin, _) in seen.iter() {
            assert_eq!(origin.as_deref(), Some("http://rides.example:8082"));
        }
    }

    #[tokio::test]
    async fn a_check_made_while_serving_a_request_carries_its_id() {
        let (gateway, seen) = fake_gateway().await;
        let client = UsersClient::new(&gateway, "http://r", Duration::from_secs(5)).unwrap();
        telemetry::request_id::scope("ride-req-7".into(), client.exists(&name("alice")))
            .await
            .unwrap();
        client.exists(&name("alice")).await.unwrap();
        let seen = seen.lock().unwrap();
        assert_eq!(seen[0].2.as_deref(), Some("ride-req-7"));
        assert_eq!(
            seen[1].2, None,
            "outside a request there is no id to pass on"
        );
    }

    #[tokio::test]
    async fn a_username_is_sent_as_one_percent_encoded_segment() {
        let (gateway, seen) = fake_gateway().await;
        let client =
            UsersClient::new(&format!("{gateway}/"), "http://r", Duration::from_secs(5)).unwrap();
        for n in ["a/b", "x?y#z", "sp ace", "é", "100%", "..."] {
            assert!(!client.exists(&name(n)).await.unwrap());
        }
        let paths: Vec<String> = seen
            .lock()
            .unwrap()
            .iter()
            .map(|(p, _, _)| p.clone())
            .collect();
        assert_eq!(
            paths,
            [
                "/api/v1/users/a%2Fb",
                "/api/v1/users/x%3Fy%23z",
                "/api/v1/users/sp%20ace",
                "/api/v1/users/%C3%A9",
                "/api/v1/users/100%25",
                "/api/v1/users/..."
            ]
        );
    }

    #[tokio::test]
    async fn an_unreachable_gateway_is_an_error_not_an_unknown_user() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let gateway = format!("http://{}", listener.local_addr().unwrap());
        drop(listener);
        let client = UsersClient::new(&gateway, "http://r", Duration::from_secs(1)).unwrap();
        assert!(client.exists(&name("alice")).await.is_err());
    }
}
