//! Sliding window (the weighted two-window estimator): the units granted in the current fixed
//! window plus the previous window's units weighted by how much of it still overlaps the sliding
//! window `(now - window, now]` stay within `capacity`.
//!
//! Two words, one per window parity, each `[window tag: 31 bits | sealed: 1 | count: 32]`. To
//! open window `w` a process first *seals* the slot of `w - 1` (or writes a sealed empty `w - 1`
//! over an older one); a sealed slot takes no more grants, so the previous count a grant was
//! checked against can no longer grow behind its back. A process whose clock lags sees the
//! seal and moves up to the newer window: no compare-and-swap order overshoots the estimate.

use std::sync::atomic::{AtomicU64, Ordering};

use super::{Decision, Params};

const COUNT: u64 = u32::MAX as u64;
const SEALED: u64 = 1 << 32;
const TAG: u64 = (1 << 31) - 1;

#[derive(Clone, Copy)]
struct Slot {
    window: u64,
    sealed: bool,
    count: u64,
}

fn pack(window: u64, sealed: bool, count: u64) -> u64 {
    ((window & TAG) << 33) | if sealed { SEALED } else { 0 } | count
}

/// The slot stored in `word`, its window resolved near `reference` (tags wrap every 2^31).
fn unpack(word: u64, reference: u64) -> Slot {
    let raw = ((word >> 33).wrapping_sub(reference & TAG)) & TAG;
    let diff = if raw >= 1 << 30 { raw as i64 - (1 << 31) } else { raw as i64 };
    Slot { window: reference.wrapping_add_signed(diff), sealed: word & SEALED != 0, count: word & COUNT }
}

/// The window a grant at `here` belongs to, given both slots: never older than one another
/// process opened, and past a sealed one.
fn current(slots: [Slot; 2], here: u64) -> u64 {
    let w = here.max(slots[0].window).max(slots[1].window);
    let s = slots[(w & 1) as usize];
    if s.window == w && s.sealed {
        w + 1
    } else {
        w
    }
}

/// `ceil(prev * (window - elapsed) / window)`: the previous window's share of the sliding one.
fn weighted(prev: u64, p: Params, elapsed: u64) -> u64 {
    let num = u128::from(prev) * u128::from(p.window - elapsed);
    u64::try_from(num.div_ceil(u128::from(p.window))).unwrap_or(u64::MAX)
}

pub(super) fn try_acquire(words: &[AtomicU64], p: Params, amount: u64, now: u64) -> Decision {
    loop {
        let here = now / p.window;
        let raw = [words[0].load(Ordering::Acquire), words[1].load(Ordering::Acquire)];
        let slots = [unpack(raw[0], here), unpack(raw[1], here)];
        let w = current(slots, here);
        let (ci, pi) = ((w & 1) as usize, (!w & 1) as usize);
        let prev = slots[pi];
        if !(prev.window == w.wrapping_sub(1) && prev.sealed) {
            let count = if prev.window == w.wrapping_sub(1) { prev.count } else { 0 };
            let _ = words[pi].compare_exchange(
                raw[pi],
                pack(w.wrapping_sub(1), true, count),
                Ordering::AcqRel,
                Ordering::Acquire,
            );
            continue;
        }
        let count = if slots[ci].window == w { slots[ci].count } else { 0 };
        let start = w.saturating_mul(p.window);
        let elapsed = now.saturating_sub(start).min(p.window);
        let prior = weighted(prev.count, p, elapsed);
        if prior + count + amount > p.capacity {
            let room = p.capacity.saturating_sub(count + amount);
            let wait = if count + amount <= p.capacity && prev.count > 0 {
                // Wait until the previous window's share has shrunk to `room`.
                let keep =
                    u64::try_from(u128::from(room) * u128::from(p.window) / u128::from(prev.count)).unwrap_or(u64::MAX);
                (p.window.saturating_sub(keep)).saturating_sub(elapsed)
            } else {
                (start + p.window).saturating_sub(now)
            };
            return Decision::Wait(wait.max(1));
        }
        let next = pack(w, false, count + amount);
        if words[ci].compare_exchange_weak(raw[ci], next, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            return Decision::Granted { token: w, delay: 0 };
        }
    }
}

pub(super) fn refund(words: &[AtomicU64], amount: u64, token: u64) {
    let word = &words[(token & 1) as usize];
    let _ = word.fetch_update(Ordering::AcqRel, Ordering::Acquire, |raw| {
        let slot = unpack(raw, token);
        (slot.window == token).then(|| pack(token, slot.sealed, slot.count.saturating_sub(amount)))
    });
}

pub(super) fn available(words: &[AtomicU64], p: Params, now: u64) -> u64 {
    let here = now / p.window;
    let slots = [unpack(words[0].load(Ordering::Acquire), here), unpack(words[1].load(Ordering::Acquire), here)];
    let w = current(slots, here);
    let count = if slots[(w & 1) as usize].window == w { slots[(w & 1) as usize].count } else { 0 };
    let prev = slots[(!w & 1) as usize];
    let prev_count = if prev.window == w.wrapping_sub(1) { prev.count } else { 0 };
    let elapsed = now.saturating_sub(w.saturating_mul(p.window)).min(p.window);
    p.capacity.saturating_sub(weighted(prev_count, p, elapsed) + count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_resolve_near_the_reference() {
        for (w, reference) in [(7, 7), (6, 7), (8, 7), ((1 << 31) - 1, 1 << 31), (1 << 40, (1 << 40) + 1)] {
            assert_eq!(unpack(pack(w, true, 3), reference).window, w);
        }
    }
}
