//! Restart policy and restart intensity (at most N restarts within a window, as Erlang
//! supervisors do), with the clock passed in so it can be tested without sleeping.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// When a worker that stopped on its own is started again.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum RestartPolicy {
    /// Never: the worker stays failed and the pool serves with the others.
    Never,
    /// When it crashed, was killed or timed out (the default).
    #[default]
    OnFailure,
    /// Whenever it exits on its own, even cleanly.
    Always,
}

impl RestartPolicy {
    /// Whether a worker that ended with `fault` is restarted under this policy.
    #[must_use]
    pub fn restarts(self, clean_exit: bool) -> bool {
        match self {
            RestartPolicy::Never => false,
            RestartPolicy::OnFailure => !clean_exit,
            RestartPolicy::Always => true,
        }
    }
}

/// Counts restarts in a sliding window; once more than `max_restarts` happen within `window`,
/// [`RestartIntensity::allow`] says no so a crash loop ends with an error instead of spinning.
#[derive(Clone, Debug)]
pub struct RestartIntensity {
    max_restarts: u32,
    window: Duration,
    recent: VecDeque<Instant>,
}

impl RestartIntensity {
    /// A tracker allowing `max_restarts` restarts within any `window`.
    #[must_use]
    pub fn new(max_restarts: u32, window: Duration) -> Self {
        Self { max_restarts, window, recent: VecDeque::new() }
    }

    /// Records a restart at `now` if the intensity allows it; returns whether it does.
    pub fn allow(&mut self, now: Instant) -> bool {
        while let Some(&oldest) = self.recent.front() {
            if now.saturating_duration_since(oldest) >= self.window {
                self.recent.pop_front();
            } else {
                break;
            }
        }
        if self.recent.len() >= self.max_restarts as usize {
            return false;
        }
        self.recent.push_back(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_up_to_max_within_window_then_refuses() {
        let t0 = Instant::now();
        let mut r = RestartIntensity::new(3, Duration::from_secs(10));
        assert!(r.allow(t0));
        assert!(r.allow(t0 + Duration::from_secs(1)));
        assert!(r.allow(t0 + Duration::from_secs(2)));
        assert!(!r.allow(t0 + Duration::from_secs(3)));
        // The first restart leaves the window at t0 + 10 s.
        assert!(r.allow(t0 + Duration::from_secs(10)));
        assert!(!r.allow(t0 + Duration::from_secs(10)));
    }

    #[test]
    fn zero_means_never() {
        let mut r = RestartIntensity::new(0, Duration::from_secs(1));
        assert!(!r.allow(Instant::now()));
    }

    #[test]
    fn policy_table() {
        assert!(!RestartPolicy::Never.restarts(false));
        assert!(RestartPolicy::OnFailure.restarts(false));
        assert!(!RestartPolicy::OnFailure.restarts(true));
        assert!(RestartPolicy::Always.restarts(true));
    }
}
