//! What one measured run produced, summarised for the table.

use std::time::Duration;

/// The merged results of every client of one run.
#[derive(Debug, Default)]
pub struct Sample {
    /// Latency of every successful request, in microseconds.
    pub latencies_us: Vec<u64>,
    /// Requests that failed: transport error, a status other than 200, or an unexpected body.
    pub errors: u64,
    /// From the start of the measured window to the end of the last request counted.
    pub elapsed: Duration,
    /// One error, to show what went wrong.
    pub first_error: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// Successful and failed requests.
    pub requests: u64,
    pub errors: u64,
    /// Successful requests per second.
    pub throughput: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

impl Sample {
    pub fn summary(mut self) -> Summary {
        self.latencies_us.sort_unstable();
        let ok = self.latencies_us.len() as u64;
        let secs = self.elapsed.as_secs_f64();
        Summary {
            requests: ok + self.errors,
            errors: self.errors,
            throughput: if secs > 0.0 { ok as f64 / secs } else { 0.0 },
            p50_ms: percentile(&self.latencies_us, 0.50) as f64 / 1000.0,
            p99_ms: percentile(&self.latencies_us, 0.99) as f64 / 1000.0,
        }
    }
}

/// The nearest-rank percentile of sorted values: the smallest value with at least `q` of all values at or below
/// it. 0 for no values.
fn percentile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 0.50), 50);
        assert_eq!(percentile(&v, 0.99), 99);
        assert_eq!(percentile(&v, 1.0), 100);
        assert_eq!(percentile(&[7], 0.99), 7);
        assert_eq!(percentile(&[], 0.5), 0);
    }

    #[test]
    fn throughput_counts_successes_only() {
        let s = Sample {
            latencies_us: vec![3000, 1000, 2000, 4000],
            errors: 2,
            elapsed: Duration::from_secs(2),
            first_error: None,
        }
        .summary();
        assert_eq!(s.requests, 6);
        assert_eq!(s.errors, 2);
        assert_eq!(s.throughput, 2.0);
        assert_eq!(s.p50_ms, 2.0);
        assert_eq!(s.p99_ms, 4.0);
    }
}
