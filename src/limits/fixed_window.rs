//! Fixed window: at most `capacity` units per window `[k * window, (k + 1) * window)`. One word:
//! the window number (low 32 bits) and the count (32 bits).

use std::sync::atomic::{AtomicU64, Ordering};

use super::{Decision, Params};

const LOW: u64 = u32::MAX as u64;

fn pack(window: u64, count: u64) -> u64 {
    ((window & LOW) << 32) | count
}

/// The absolute window a stored tag stands for, near `reference` (tags wrap every 2^32 windows).
fn absolute(tag: u64, reference: u64) -> u64 {
    let diff = (tag.wrapping_sub(reference & LOW) & LOW) as u32 as i32;
    reference.wrapping_add_signed(i64::from(diff))
}

pub(super) fn try_acquire(word: &AtomicU64, p: Params, amount: u64, now: u64) -> Decision {
    let mut current = word.load(Ordering::Acquire);
    loop {
        let here = now / p.window;
        let stored = absolute(current >> 32, here);
        // A window already opened by a process whose clock ran ahead is the current one.
        let (window, count) = if stored >= here { (stored, current & LOW) } else { (here, 0) };
        if count + amount > p.capacity {
            return Decision::Wait(((window + 1) * p.window).saturating_sub(now).max(1));
        }
        match word.compare_exchange_weak(current, pack(window, count + amount), Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return Decision::Granted { token: window, delay: 0 },
            Err(seen) => current = seen,
        }
    }
}

pub(super) fn refund(word: &AtomicU64, amount: u64, token: u64) {
    let _ = word.fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
        (w >> 32 == token & LOW).then(|| pack(token, (w & LOW).saturating_sub(amount)))
    });
}

pub(super) fn available(word: &AtomicU64, p: Params, now: u64) -> u64 {
    let w = word.load(Ordering::Acquire);
    let here = now / p.window;
    if absolute(w >> 32, here) >= here {
        p.capacity.saturating_sub(w & LOW)
    } else {
        p.capacity
    }
}

#[cfg(test)]
mod tests {
    use super::absolute;

    #[test]
    fn tags_wrap_around() {
        assert_eq!(absolute(5, 5), 5);
        assert_eq!(absolute(4, 5), 4);
        assert_eq!(absolute(0, (1 << 32) + 3), 1 << 32);
        assert_eq!(absolute(u32::MAX.into(), 1 << 32), (1 << 32) - 1);
    }
}
