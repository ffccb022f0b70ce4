//! The process's Prometheus metrics: one recorder per process, installed by the first call to [`handle`] (the
//! `metrics` facade has one global recorder; tests run several services in one process, and they share it).
//! Every service serves [`render`] at `GET /metrics`.
//!
//! Latencies are histograms with fixed buckets (from 0.5 ms to 10 s, the range of a request that waits out a
//! failover), so that rates and quantiles can be computed over any window by whoever scrapes, and summed over
//! processes; batch sizes have buckets of their own (1 to 128 requests).

use std::sync::OnceLock;
use std::time::Duration;

use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Upper bounds of the latency buckets, in seconds.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Upper bounds of the buckets of histograms whose name ends in `_size` (requests per batch).
pub const SIZE_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0];

/// How often recorded histogram values are folded into their buckets when nobody scrapes.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// The content type of the Prometheus text format.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The installed recorder's handle, installing it on the first call.
///
/// Panics if another recorder was installed first (a programming error: no other code here installs one).
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets(LATENCY_BUCKETS)
            .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_size".into()), SIZE_BUCKETS))
            .expect("the bucket lists are not empty")
            .build_recorder();
        let handle = recorder.handle();
        metrics::set_global_recorder(recorder)
            .expect("no other metrics recorder is installed in this process");
        describe();
        // A histogram keeps each recorded value until upkeep folds it into the buckets: without a scrape, a
        // busy service would grow by every request it served. Upkeep on a timer bounds that whoever scrapes.
        let upkeep = handle.clone();
        let spawned = std::thread::Builder::new()
            .name("metrics-upkeep".into())
            .spawn(move || loop {
                std::thread::sleep(UPKEEP_INTERVAL);
                upkeep.run_upkeep();
            });
        if let Err(e) = spawned {
            tracing::warn!("no metrics upkeep thread ({e}): histograms grow until scraped");
        }
        handle
    })
}

/// `GET /metrics`: the Prometheus text format.
pub async fn render() -> impl IntoResponse {
    let handle = handle();
    // Drains what histograms recorded since the last scrape into their buckets.
    handle.run_upkeep();
    ([(CONTENT_TYPE, TEXT_FORMAT)], handle.render())
}

/// Counts and times one HTTP request.
pub fn record_http(route: &str, method: &str, status: u16, elapsed: Duration) {
    // Installs the recorder if this is the first thing recorded (an atomic load otherwise): a service counts
    // from its first request, whether or not it was scraped yet.
    handle();
    let labels = [
        ("route", route.to_owned()),
        ("method", method.to_owned()),
        ("status", status.to_string()),
    ];
    metrics::counter!("http_requests_total", &labels).increment(1);
    metrics::histogram!("http_request_duration_seconds", &labels).record(elapsed.as_secs_f64());
}

fn describe() {
    metrics::describe_counter!(
        "http_requests_total",
        "HTTP requests served, by route pattern, method and status"
    );
    metrics::describe_histogram!(
        "http_request_duration_seconds",
        metrics::Unit::Seconds,
        "Time from a request's arrival to its answer, by route pattern, method and status"
    );
}

#[cfg(test)]
mod tests {
    use axum::body::to_bytes;

    use super::*;

    #[tokio::test]
    async fn the_scrape_is_prometheus_text_with_what_was_recorded() {
        record_http("/t/{x}", "GET", 201, Duration::from_millis(3));
        let response = render().await.into_response();
        assert_eq!(response.headers()[CONTENT_TYPE], TEXT_FORMAT);
        let body = to_bytes(response.into_body(), 1 << 20).await.unwrap();
        let text = String::from_utf8(body.to_vec()).unwrap();
        assert!(
            text.contains("# TYPE http_requests_total counter"),
            "{text}"
        );
        let bucket = text
            .lines()
            .find(|l| {
                l.starts_with("http_request_duration_seconds_bucket{")
                    && l.contains("route=\"/t/{x}\"")
                    && l.contains("le=\"0.005\"")
            })
            .unwrap_or_else(|| panic!("no 5 ms bucket: {text}"));
        assert!(bucket.ends_with(" 1"), "3 ms falls under 5 ms: {bucket}");
    }
}
