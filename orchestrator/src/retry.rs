//! The attempts of one `db/write`, `db/clear` or `db/read` within its deadline.
//!
//! A request that meets a failover (no master, no slave in sync, no answer, a master that cannot replicate) is
//! tried again, a write with its same idempotency key, after a pause that ends early once the view shows the
//! cluster ready, until its deadline; then the last failure (a 503) is the answer. Only transient failures
//! are retried: a 400 never is. Where this sits among the other retry budgets: ARCHITECTURE.md, "Retry
//! policy".

use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::error::Error;
use crate::view::ClusterView;

/// The pauses between two attempts: 50 ms, doubling up to 1 s. Short at first because a failover started by
/// `crash/master` is over in well under a second; a pause ends early anyway once the view shows the cluster
/// ready.
const PAUSES: ExponentialBuilder = ExponentialBuilder::new()
    .with_min_delay(Duration::from_millis(50))
    .with_max_delay(Duration::from_secs(1))
    .without_max_times();

/// An attempt is not started with less time than this left before the deadline: it could not succeed.
const MIN_ATTEMPT: Duration = Duration::from_millis(100);

/// How long a request may take and when it is worth another attempt.
pub struct Attempts {
    /// All the attempts, pauses included (`Config::write_deadline_ms` or `read_deadline_ms`); 0: one attempt.
    pub budget: Duration,
    /// One attempt (`Config::request_timeout_ms`).
    pub request_timeout: Duration,
    /// The view the pauses watch.
    pub view: watch::Receiver<ClusterView>,
    /// Whether the view shows the cluster able to take another attempt.
    pub ready: fn(&ClusterView) -> bool,
}

impl Attempts {
    /// Runs `attempt` (given how long it may wait for an answer) until it succeeds, fails for good, or the
    /// budget leaves no room for another attempt.
    pub async fn run<T, F, Fut>(self, mut attempt: F) -> Result<T, Error>
    where
        F: FnMut(Duration) -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        let deadline = Instant::now() + self.budget;
        // Atomic only so that the request's future stays `Send`; one task counts.
        let made = AtomicU32::new(0);
        let request_timeout = self.request_timeout;
        let next = || {
            let n = made.fetch_add(1, Ordering::Relaxed) + 1;
            attempt(attempt_timeout(n, request_timeout, deadline))
        };
        let (view, ready) = (self.view, self.ready);
        next.retry(PAUSES)
            .when(Error::is_transient)
            .adjust(move |_, pause| pause_within(pause?, deadline))
            .notify(|e, pause| {
                // The operator's view of failovers from the request side: attempts that had to wait.
                metrics::counter!("rideshare_request_retries_total").increment(1);
                tracing::debug!("retrying in {pause:?} after: {e}");
            })
            .sleep(move |pause| pause_until_ready(view.clone(), ready, pause))
            .await
    }
}

/// How long attempt number `n` (from 1) waits for an answer: the request timeout, cut to what is left before
/// the deadline for every attempt but the first (so a budget of 0 means exactly one full attempt).
fn attempt_timeout(n: u32, request_timeout: Duration, deadline: Instant) -> Duration {
    if n == 1 {
        return request_timeout;
    }
    request_timeout.min(deadline.saturating_duration_since(Instant::now()))
}

/// The pause before another attempt, shortened to leave that attempt [`MIN_ATTEMPT`]; `None` (give up) when
/// the deadline leaves no room for one.
fn pause_within(pause: Duration, deadline: Instant) -> Option<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left < MIN_ATTEMPT * 2 {
        return None;
    }
    Some(pause.min(left - MIN_ATTEMPT))
}

/// Waits until the view shows the cluster `ready`, or `pause` has passed (for a failure the view cannot show,
/// like a master that died unseen), whichever comes first.
async fn pause_until_ready(
    mut view: watch::Receiver<ClusterView>,
    ready: fn(&ClusterView) -> bool,
    pause: Duration,
) {
    let already = ready(&view.borrow());
    if already {
        tokio::time::sleep(pause).await;
    } else {
        let _ = tokio::time::timeout(pause, view.wait_for(ready)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempts(budget: Duration, view: watch::Receiver<ClusterView>) -> Attempts {
        Attempts {
            budget,
            request_timeout: Duration::from_secs(5),
            view,
            ready: |v| v.master.is_some(),
        }
    }

    fn unavailable() -> Error {
        Error::Unavailable(anyhow::anyhow!("not now"))
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_attempt_gets_the_whole_request_timeout_and_later_ones_what_is_left() {
        let (_tx, view) = watch::channel(ClusterView::default());
        let mut given = Vec::new();
        let started = Instant::now();
        let result: Result<(), Error> = attempts(Duration::from_secs(2), view)
            .run(|timeout| {
                given.push(timeout);
                async { Err(unavailable()) }
            })
            .await;
        assert!(result.unwrap_err().is_transient());
        assert_eq!(given[0], Duration::from_secs(5));
        assert!(
            given[1..].iter().all(|t| *t <= Duration::from_secs(2)),
            "{given:?}"
        );
        // Every pause ended before the deadline, leaving room for one more attempt.
        assert!(
            started.elapsed() <= Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        assert!(given.len() >= 4, "{given:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_budget_of_zero_is_one_attempt_and_a_failure_for_good_is_not_retried() {
        let (_tx, view) = watch::channel(ClusterView::default());
        let mut made = 0;
        let _ = attempts(Duration::ZERO, view.clone())
            .run(|_| {
                made += 1;
                async { Err::<(), _>(unavailable()) }
            })
            .await;
        assert_eq!(made, 1);
        let mut made = 0;
        let result = attempts(Duration::from_secs(10), view)
            .run(|_| {
                made += 1;
                async { Err::<(), _>(Error::BadRequest("no such table".into())) }
            })
            .await;
        assert!(matches!(result, Err(Error::BadRequest(_))));
        assert_eq!(made, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_ends_as_soon_as_the_view_shows_the_cluster_ready() {
        let (tx, view) = watch::channel(ClusterView::default());
        let ready = tokio::spawn(async move {
            // Long after the first pause (50 ms) would have ended: only the view ends the second one early.
            tokio::time::sleep(Duration::from_millis(70)).await;
            tx.send_modify(|v| {
                v.master = Some(protocol::coord::MasterRecord {
                    id: "m".into(),
                    pid: 1,
                    epoch: 1,
                })
            });
            Instant::now()
        });
        let mut made = Vec::new();
        let result = attempts(Duration::from_secs(10), view.clone())
            .run(|_| {
                made.push(Instant::now());
                let up = view.borrow().master.is_some();
                async move {
                    if up {
                        Ok(())
                    } else {
                        Err(unavailable())
                    }
                }
            })
            .await;
        assert!(result.is_ok());
        let ready_at = ready.await.unwrap();
        assert_eq!(made.len(), 3, "{made:?}");
        // The third attempt came when the master did, not at the end of the 100 ms pause.
        assert_eq!(made[2], ready_at);
    }
}
