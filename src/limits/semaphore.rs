//! A counting semaphore (`ResourceLimit`): at most `capacity` units held at once; units come back
//! on release, not with time.

use std::sync::atomic::{AtomicU64, Ordering};

use super::{Decision, Params};

/// How soon a refused caller should look again (nothing predicts a release).
const POLL: u64 = 1_000_000;

pub(super) fn try_acquire(word: &AtomicU64, p: Params, amount: u64) -> Decision {
    let granted = word.fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
        (used + amount <= p.capacity).then_some(used + amount)
    });
    match granted {
        Ok(_) => Decision::Granted { token: 0, delay: 0 },
        Err(_) => Decision::Wait(POLL),
    }
}

pub(super) fn release(word: &AtomicU64, amount: u64) {
    let _ = word.fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| Some(used.saturating_sub(amount)));
}

pub(super) fn available(word: &AtomicU64, p: Params) -> u64 {
    p.capacity.saturating_sub(word.load(Ordering::Acquire))
}
