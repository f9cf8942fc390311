//! GCRA, the generic cell rate algorithm: one *theoretical arrival time* (TAT) per limit. Each
//! unit is due `window / capacity` after the previous one; a request is allowed while the TAT it
//! would leave is at most `window` ahead of now (a burst tolerance of the whole capacity). It
//! admits the same traffic as the token bucket, stored the ATM way.

use std::sync::atomic::{AtomicU64, Ordering};

use super::{Decision, Params};

pub(super) fn try_acquire(word: &AtomicU64, p: Params, amount: u64, now: u64) -> Decision {
    let increment = p.cost(amount);
    let mut tat = word.load(Ordering::Acquire);
    loop {
        let new_tat = tat.max(now) + increment;
        let ahead = new_tat - now;
        if ahead > p.window {
            return Decision::Wait(ahead - p.window);
        }
        match word.compare_exchange_weak(tat, new_tat, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return Decision::Granted { token: 0, delay: 0 },
            Err(seen) => tat = seen,
        }
    }
}

pub(super) fn refund(word: &AtomicU64, p: Params, amount: u64) {
    let increment = p.cost_floor(amount);
    let _ = word.fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| Some(t.saturating_sub(increment)));
}

pub(super) fn available(word: &AtomicU64, p: Params, now: u64) -> u64 {
    let ahead = word.load(Ordering::Acquire).saturating_sub(now);
    p.units_in(p.window.saturating_sub(ahead))
}
