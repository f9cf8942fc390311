//! Leaky bucket as a queue (a shaper): requests leave at exactly `capacity / window`, never in
//! bursts. A grant reserves the next free slot and tells the caller how long to wait for it; a
//! request is refused while the queue already holds a whole window of work.

use std::sync::atomic::{AtomicU64, Ordering};

use super::{Decision, Params};

pub(super) fn try_acquire(word: &AtomicU64, p: Params, amount: u64, now: u64) -> Decision {
    let cost = p.cost(amount);
    let mut next = word.load(Ordering::Acquire);
    loop {
        let start = next.max(now);
        let end = start + cost;
        if end - now > p.window {
            return Decision::Wait(end - now - p.window);
        }
        match word.compare_exchange_weak(next, end, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return Decision::Granted { token: start, delay: start - now },
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
