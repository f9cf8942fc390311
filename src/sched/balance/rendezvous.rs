//! Sticky routing: which worker owns a key, by rendezvous (highest-random-weight) hashing.
//!
//! Every serving worker gets a pseudo-random weight for the key; the heaviest owns it. Adding
//! a worker takes over only the keys it now outweighs; losing one moves only its own keys
//! (each to the worker that weighed second for it), so the other workers keep their caches.

use std::sync::atomic::{AtomicU64, Ordering};

/// The splitmix64 finaliser: a bijection on `u64` that spreads every input bit.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The weight of `worker` for `key`.
fn weight(key: u64, worker: u64) -> u64 {
    mix(mix(key) ^ worker.wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

/// The worker among `workers` that owns `key`; `None` when there is none.
pub(crate) fn owner(key: u64, workers: impl IntoIterator<Item = u64>) -> Option<u64> {
    workers.into_iter().max_by_key(|&worker| (weight(key, worker), worker))
}

/// How keyed tasks were placed.
#[derive(Debug, Default)]
pub(crate) struct StickyCounts {
    /// Keyed tasks that ran on their key's worker.
    pub(crate) hits: AtomicU64,
    /// Keyed tasks that went elsewhere because that worker was busy (`Sticky::Spill`).
    pub(crate) misses: AtomicU64,
}

impl StickyCounts {
    pub(crate) fn record(&self, hit: bool) {
        let counter = if hit { &self.hits } else { &self.misses };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// `(hits, misses)`.
    pub(crate) fn get(&self) -> (u64, u64) {
        (self.hits.load(Ordering::Relaxed), self.misses.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEYS: u64 = 10_000;

    fn owners(workers: &[u64]) -> Vec<u64> {
        (0..KEYS).map(|key| owner(key, workers.iter().copied()).unwrap()).collect()
    }

    #[test]
    fn no_worker_owns_nothing_and_one_worker_owns_all() {
        assert_eq!(owner(7, []), None);
        assert!((0..100).all(|key| owner(key, [4]) == Some(4)));
    }

    #[test]
    fn keys_spread_evenly_and_the_order_of_workers_does_not_matter() {
        let before = owners(&[0, 1, 2, 3, 4]);
        assert_eq!(before, owners(&[4, 2, 0, 3, 1]));
        for w in 0..5 {
            let share = before.iter().filter(|&&o| o == w).count();
            assert!((1_600..=2_400).contains(&share), "worker {w} owns {share} of {KEYS}");
        }
    }

    #[test]
    fn losing_a_worker_moves_exactly_its_keys() {
        let all = [0, 1, 2, 3, 4, 5, 6, 7];
        let before = owners(&all);
        let after = owners(&[0, 1, 2, 4, 5, 6, 7]);
        let moved: Vec<u64> = (0..KEYS).filter(|&k| before[k as usize] != after[k as usize]).collect();
        assert!(moved.iter().all(|&k| before[k as usize] == 3), "only worker 3's keys move");
        assert_eq!(moved.len(), before.iter().filter(|&&o| o == 3).count(), "and all of them");
        let share = moved.len() as f64 / KEYS as f64;
        assert!((0.09..0.16).contains(&share), "about 1/8 of the keys move: {share}");
    }

    #[test]
    fn adding_a_worker_takes_only_the_keys_it_now_owns() {
        let before = owners(&[0, 1, 2]);
        let after = owners(&[0, 1, 2, 9]);
        for k in 0..KEYS as usize {
            assert!(after[k] == before[k] || after[k] == 9, "key {k} moved between old workers");
        }
        let taken = after.iter().filter(|&&o| o == 9).count();
        assert!((2_000..=3_000).contains(&taken), "the new worker takes about 1/4: {taken}");
    }

    #[test]
    fn counts() {
        let c = StickyCounts::default();
        c.record(true);
        c.record(true);
        c.record(false);
        assert_eq!(c.get(), (2, 1));
    }
}
