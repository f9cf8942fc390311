//! Clocks for the limit algorithms: the system monotonic clock (shared by every process on the
//! machine, so timestamps in shared memory compare across processes) and a manual clock for tests.

use std::sync::atomic::{AtomicU64, Ordering};

/// A source of "now" in nanoseconds. The algorithms take `now` as an argument; a [`Clock`] is
/// what [`SharedLimits`](super::SharedLimits) asks for it, so tests can drive time by hand.
pub trait Clock: Send + Sync {
    /// Nanoseconds since an arbitrary fixed origin, never decreasing.
    fn now_nanos(&self) -> u64;
}

/// `CLOCK_MONOTONIC`: nanoseconds since boot, the same origin in every process of the machine.
#[derive(Clone, Copy, Debug, Default)]
pub struct MonotonicClock;

impl Clock for MonotonicClock {
    fn now_nanos(&self) -> u64 {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC is always supported on Linux.
        let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut ts) };
        debug_assert_eq!(rc, 0, "clock_gettime(CLOCK_MONOTONIC) failed");
        u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
    }
}

/// A clock that only moves when told to (for tests); shareable between threads.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    /// A clock reading `start` nanoseconds.
    #[must_use]
    pub fn new(start: u64) -> Self {
        Self(AtomicU64::new(start))
    }

    /// Moves the clock forward by `nanos`.
    pub fn advance(&self, nanos: u64) {
        self.0.fetch_add(nanos, Ordering::SeqCst);
    }

    /// Sets the clock to `nanos` (never backwards: an earlier value is ignored).
    pub fn set(&self, nanos: u64) {
        self.0.fetch_max(nanos, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_nanos(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

impl<C: Clock + ?Sized> Clock for std::sync::Arc<C> {
    fn now_nanos(&self) -> u64 {
        (**self).now_nanos()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_clock_does_not_go_back() {
        let a = MonotonicClock.now_nanos();
        let b = MonotonicClock.now_nanos();
        assert!(b >= a && a > 0);
    }

    #[test]
    fn manual_clock_moves_only_forward() {
        let c = ManualClock::new(10);
        c.advance(5);
        c.set(3);
        assert_eq!(c.now_nanos(), 15);
    }
}
