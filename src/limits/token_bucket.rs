//! Token bucket: `capacity` tokens, refilled continuously at `capacity / window`; a request
//! takes its tokens at once, so bursts up to `capacity` pass.
//!
//! One word of state, the *empty time* `e`: the bucket holds `min(capacity, (now - e) * rate)`
//! tokens. Taking `n` moves `e` to `max(e, now - window) + cost(n)`, allowed while `e <= now`.
//! Grants computed from an older `now` only ever see less water, so racing processes cannot
//! overshoot whatever order their compare-and-swaps land in.

use std::sync::atomic::{AtomicU64, Ordering};

use super::{Decision, Params};

pub(super) fn try_acquire(word: &AtomicU64, p: Params, amount: u64, now: u64) -> Decision {
    let cost = p.cost(amount);
    let mut e = word.load(Ordering::Acquire);
    loop {
        let next = e.max(now.saturating_sub(p.window)) + cost;
        if next > now {
            return Decision::Wait(next - now);
        }
        match word.compare_exchange_weak(e, next, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return Decision::Granted { token: 0, delay: 0 },
            Err(seen) => e = seen,
        }
    }
}

pub(super) fn refund(word: &AtomicU64, p: Params, amount: u64) {
    let cost = p.cost_floor(amount);
    let _ = word.fetch_update(Ordering::AcqRel, Ordering::Acquire, |e| Some(e.saturating_sub(cost)));
}

pub(super) fn available(word: &AtomicU64, p: Params, now: u64) -> u64 {
    let e = word.load(Ordering::Acquire).max(now.saturating_sub(p.window));
    p.units_in(now.saturating_sub(e))
}
