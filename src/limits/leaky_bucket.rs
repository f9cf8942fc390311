//! The leaky bucket, both ways, over one word: the time the queue of granted units runs dry.
//! The queue drains at `capacity / window` and never holds more than a window of work (its
//! `capacity`); a request that does not fit is refused with how long until it would.
//!
//! - As a meter (`shaped == false`, concurry's `LeakyBucket`): a grant that fits goes at once,
//!   so bursts up to the capacity pass.
//! - As a queue (a shaper, `shaped == true`): a grant reserves the next free slot and tells the
//!   caller how long to wait for it, so requests leave evenly spaced, never in bursts.

use std::sync::atomic::{AtomicU64, Ordering};

use super::{Decision, Params};

pub(super) fn try_acquire(word: &AtomicU64, p: Params, amount: u64, now: u64, shaped: bool) -> Decision {
    let cost = p.cost(amount);
    let mut next = word.load(Ordering::Acquire);
    loop {
        let start = next.max(now);
        let end = start + cost;
        if end - now > p.window {
            return Decision::Wait(end - now - p.window);
        }
        match word.compare_exchange_weak(next, end, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return Decision::Granted { token: start, delay: if shaped { start - now } else { 0 } },
            Err(seen) => next = seen,
        }
    }
}

pub(super) fn refund(word: &AtomicU64, p: Params, amount: u64, now: u64) {
    // Unused units shorten the queue, but never move the next slot into the past.
    let cost = p.cost_floor(amount);
    let _ =
        word.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n > now).then(|| n.saturating_sub(cost).max(now)));
}

pub(super) fn available(word: &AtomicU64, p: Params, now: u64) -> u64 {
    let queued = word.load(Ordering::Acquire).saturating_sub(now);
    p.units_in(p.window.saturating_sub(queued))
}
