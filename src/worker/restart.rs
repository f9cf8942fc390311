//! Restart policy, restart intensity (at most N restarts within a window, as Erlang
//! supervisors do) and the [`RestartPacer`] that combines them with backoff, with the clock
//! passed in so all of it can be tested without sleeping.
//!
//! The pacer tells apart two kinds of failure. A worker that a task crashed (or that timed out,
//! or was killed to cancel its task) consumed that task: the pool made progress, so the worker
//! comes back at once and the crash never counts toward giving up; bad input cannot exhaust the
//! pool. A worker that fails without serving (its setup crashed, or it died while idle) is in a
//! crash loop: it is restarted after a capped exponential backoff (10 ms doubling up to 1 s,
//! reset once it serves again) and given up once it failed that way more than `max_restarts`
//! times within `restart_window`.

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
    /// Whether a worker that exited on its own while not running a task (cleanly when
    /// `clean_exit`) is restarted under this policy. Exits during a task are always crashes.
    #[must_use]
    pub fn restarts(self, clean_exit: bool) -> bool {
        match self {
            RestartPolicy::Never => false,
            RestartPolicy::OnFailure => !clean_exit,
            RestartPolicy::Always => true,
        }
    }
}

/// The policy's name as the Python option spells it.
impl std::fmt::Display for RestartPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RestartPolicy::Never => "never",
            RestartPolicy::OnFailure => "on-failure",
            RestartPolicy::Always => "always",
        })
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

/// The first backoff delay after a failure without progress.
pub const BACKOFF_FIRST: Duration = Duration::from_millis(10);
/// The longest backoff delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// What a worker was doing when it failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FailureStage {
    /// Running a task (through the queue or a direct call): the task was consumed.
    Task,
    /// Starting: its setup (`spawn`, or a restart) crashed or failed.
    Setup,
    /// Idle: it died between tasks, or before a task reached it.
    Idle,
}

impl FailureStage {
    /// All stages, for exhaustive tests.
    pub const ALL: [FailureStage; 3] = [FailureStage::Task, FailureStage::Setup, FailureStage::Idle];
}

/// What to do with a failed worker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RestartDecision {
    /// Restart it after this delay (zero: at once).
    Restart(Duration),
    /// Let it go for good; the text says why (e.g. `"gave up: crashed in spawn 6 times in 60 s"`).
    Leave(String),
}

/// Decides, failure by failure, whether and when a worker is restarted (see the module docs).
#[derive(Clone, Debug)]
pub struct RestartPacer {
    policy: RestartPolicy,
    max_failures: u32,
    window: Duration,
    /// Failures without progress within the window, oldest first.
    recent: VecDeque<(Instant, FailureStage)>,
    /// Failures without progress since the worker last served; sets the backoff.
    streak: u32,
}

impl RestartPacer {
    /// A pacer giving up after more than `max_failures` failures without progress within
    /// `window`, under `policy`.
    #[must_use]
    pub fn new(policy: RestartPolicy, max_failures: u32, window: Duration) -> Self {
        Self { policy, max_failures, window, recent: VecDeque::new(), streak: 0 }
    }

    /// The worker served a task since its last failure: the backoff starts over.
    pub fn served(&mut self) {
        self.streak = 0;
    }

    /// The backoff before the restart that follows `streak` failures without progress in a row.
    #[must_use]
    pub fn backoff(streak: u32) -> Duration {
        if streak == 0 {
            return Duration::ZERO;
        }
        let doublings = (streak - 1).min(16);
        (BACKOFF_FIRST * 2u32.pow(doublings)).min(BACKOFF_MAX)
    }

    /// Records a failure at `now` during `stage` (an exit with status 0 when `clean_exit`) and
    /// says what to do.
    pub fn failed(&mut self, stage: FailureStage, clean_exit: bool, now: Instant) -> RestartDecision {
        if self.policy == RestartPolicy::Never {
            return RestartDecision::Leave(format!("stopped: it failed and the restart policy is '{}'", self.policy));
        }
        if stage == FailureStage::Task {
            // Whatever the exit code: a task was running, so this was a crash that consumed it.
            self.streak = 0;
            return RestartDecision::Restart(Duration::ZERO);
        }
        if stage == FailureStage::Idle && !self.policy.restarts(clean_exit) {
            return RestartDecision::Leave(format!(
                "stopped: it exited cleanly while idle and the restart policy is '{}'",
                self.policy
            ));
        }
        while let Some(&(oldest, _)) = self.recent.front() {
            if now.saturating_duration_since(oldest) >= self.window {
                self.recent.pop_front();
            } else {
                break;
            }
        }
        self.recent.push_back((now, stage));
        self.streak = self.streak.saturating_add(1);
        if self.recent.len() > self.max_failures as usize {
            let how = if self.recent.iter().all(|&(_, s)| s == FailureStage::Setup) {
                "crashed in spawn"
            } else if self.recent.iter().all(|&(_, s)| s == FailureStage::Idle) {
                "died while idle"
            } else {
                "crashed in spawn or while idle"
            };
            return RestartDecision::Leave(format!(
                "gave up: {how} {} times in {}",
                self.recent.len(),
                human(self.window)
            ));
        }
        RestartDecision::Restart(Self::backoff(self.streak))
    }
}

/// `60 s`, `1.5 s`, `250 ms`.
fn human(d: Duration) -> String {
    if d >= Duration::from_secs(1) {
        let secs = d.as_secs_f64();
        if secs.fract() == 0.0 {
            format!("{secs:.0} s")
        } else {
            format!("{secs} s")
        }
    } else {
        format!("{} ms", d.as_millis())
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

    const WINDOW: Duration = Duration::from_secs(60);

    #[test]
    fn backoff_doubles_from_10_ms_and_caps_at_1_s() {
        let expected = [0, 10, 20, 40, 80, 160, 320, 640, 1000, 1000];
        for (streak, ms) in expected.iter().enumerate() {
            assert_eq!(RestartPacer::backoff(streak as u32), Duration::from_millis(*ms), "streak {streak}");
        }
        assert_eq!(RestartPacer::backoff(u32::MAX), BACKOFF_MAX);
    }

    /// Every policy x stage x exit code, on a fresh pacer.
    #[test]
    fn decision_table() {
        let t0 = Instant::now();
        for policy in [RestartPolicy::Never, RestartPolicy::OnFailure, RestartPolicy::Always] {
            for stage in FailureStage::ALL {
                for clean in [false, true] {
                    let mut p = RestartPacer::new(policy, 5, WINDOW);
                    let got = p.failed(stage, clean, t0);
                    let expected = match (policy, stage, clean) {
                        (RestartPolicy::Never, _, _) => None,
                        (_, FailureStage::Task, _) => Some(Duration::ZERO),
                        (RestartPolicy::OnFailure, FailureStage::Idle, true) => None,
                        _ => Some(BACKOFF_FIRST),
                    };
                    match (expected, &got) {
                        (Some(d), RestartDecision::Restart(got)) => assert_eq!(*got, d, "{policy:?} {stage:?} {clean}"),
                        (None, RestartDecision::Leave(why)) => {
                            assert!(why.contains(&format!("'{policy}'")), "{why}");
                        }
                        _ => panic!("{policy:?} {stage:?} clean={clean}: {got:?}"),
                    }
                }
            }
        }
    }

    #[test]
    fn task_crashes_never_give_up_and_never_wait() {
        let t0 = Instant::now();
        for policy in [RestartPolicy::OnFailure, RestartPolicy::Always] {
            let mut p = RestartPacer::new(policy, 5, WINDOW);
            for _ in 0..10_000 {
                for clean in [false, true] {
                    assert_eq!(p.failed(FailureStage::Task, clean, t0), RestartDecision::Restart(Duration::ZERO));
                }
            }
        }
    }

    #[test]
    fn a_spawn_crash_loop_backs_off_then_gives_up_naming_spawn() {
        let t0 = Instant::now();
        let mut p = RestartPacer::new(RestartPolicy::OnFailure, 5, WINDOW);
        for (i, ms) in [10, 20, 40, 80, 160].into_iter().enumerate() {
            let now = t0 + Duration::from_secs(i as u64);
            assert_eq!(p.failed(FailureStage::Setup, false, now), RestartDecision::Restart(Duration::from_millis(ms)));
        }
        assert_eq!(
            p.failed(FailureStage::Setup, false, t0 + Duration::from_secs(5)),
            RestartDecision::Leave("gave up: crashed in spawn 6 times in 60 s".into())
        );
    }

    #[test]
    fn failures_leave_the_window_and_serving_resets_the_backoff() {
        let t0 = Instant::now();
        let mut p = RestartPacer::new(RestartPolicy::OnFailure, 2, Duration::from_secs(10));
        assert_eq!(p.failed(FailureStage::Idle, false, t0), RestartDecision::Restart(BACKOFF_FIRST));
        assert_eq!(p.failed(FailureStage::Idle, false, t0), RestartDecision::Restart(BACKOFF_FIRST * 2));
        p.served();
        // The first failure left the window; the streak started over.
        let later = t0 + Duration::from_secs(10);
        assert_eq!(p.failed(FailureStage::Idle, false, later), RestartDecision::Restart(BACKOFF_FIRST));
        assert_eq!(p.failed(FailureStage::Setup, false, later), RestartDecision::Restart(BACKOFF_FIRST * 2));
        // Three within 10 s: the third gives up, naming both kinds.
        let mixed = p.failed(FailureStage::Setup, false, later + Duration::from_secs(1));
        assert!(
            matches!(mixed, RestartDecision::Leave(ref why) if why == "gave up: crashed in spawn or while idle 3 times in 10 s"),
            "{mixed:?}"
        );
        let mut idle = RestartPacer::new(RestartPolicy::Always, 0, Duration::from_millis(1500));
        assert_eq!(
            idle.failed(FailureStage::Idle, true, t0),
            RestartDecision::Leave("gave up: died while idle 1 times in 1.5 s".into())
        );
    }

    #[test]
    fn a_task_crash_resets_the_backoff_but_not_the_window() {
        let t0 = Instant::now();
        let mut p = RestartPacer::new(RestartPolicy::OnFailure, 2, WINDOW);
        assert_eq!(p.failed(FailureStage::Setup, false, t0), RestartDecision::Restart(BACKOFF_FIRST));
        assert_eq!(p.failed(FailureStage::Task, false, t0), RestartDecision::Restart(Duration::ZERO));
        assert_eq!(p.failed(FailureStage::Setup, false, t0), RestartDecision::Restart(BACKOFF_FIRST));
        assert!(matches!(p.failed(FailureStage::Setup, false, t0), RestartDecision::Leave(_)));
    }
}
