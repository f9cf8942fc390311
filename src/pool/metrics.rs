//! The pool's task run-time histogram, for `SPool.metrics()` (Prometheus buckets): lock-free
//! counters bumped on the runtime (queued tasks) or by direct-lane callers, read at any time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the histogram's buckets, in seconds (the last bucket, past them, is `+Inf`).
pub const RUN_TIME_BOUNDS: [f64; 12] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 2.5, 10.0];

/// Counts of task run times per bucket, and their sum.
#[derive(Debug, Default)]
pub(crate) struct RunTimes {
    counts: [AtomicU64; RUN_TIME_BOUNDS.len() + 1],
    sum_micros: AtomicU64,
}

/// A snapshot of [`crate::Supervisor::run_times`].
#[derive(Clone, Debug, PartialEq)]
pub struct RunTimeHistogram {
    /// Tasks per bucket (not cumulative), the last one past [`RUN_TIME_BOUNDS`].
    pub counts: Vec<u64>,
    /// The run times added up, in seconds.
    pub sum_seconds: f64,
}

impl RunTimes {
    /// Records one task that ran (on its worker) for `took`.
    pub(crate) fn record(&self, took: Duration) {
        let seconds = took.as_secs_f64();
        let bucket = RUN_TIME_BOUNDS.iter().position(|&bound| seconds <= bound).unwrap_or(RUN_TIME_BOUNDS.len());
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(u64::try_from(took.as_micros()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> RunTimeHistogram {
        RunTimeHistogram {
            counts: self.counts.iter().map(|c| c.load(Ordering::Relaxed)).collect(),
            // Micros fit f64 exactly up to 2^53 (285 years).
            #[allow(clippy::cast_precision_loss)]
            sum_seconds: self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_times_land_in_their_buckets() {
        let times = RunTimes::default();
        times.record(Duration::from_micros(300));
        times.record(Duration::from_millis(1));
        times.record(Duration::from_secs(60));
        let snapshot = times.snapshot();
        assert_eq!(snapshot.counts[0], 1);
        assert_eq!(snapshot.counts[1], 1, "a bound is inclusive");
        assert_eq!(snapshot.counts[RUN_TIME_BOUNDS.len()], 1);
        assert_eq!(snapshot.counts.iter().sum::<u64>(), 3);
        assert!((snapshot.sum_seconds - 60.0013).abs() < 1e-9);
    }
}
