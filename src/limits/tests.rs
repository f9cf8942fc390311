//! Tests of the limit algorithms on a manual clock: exact decisions, a reference model, and
//! threads hammering one table without ever exceeding a limit together.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use super::*;

const SEC: u64 = 1_000_000_000;
const T0: u64 = 1_000 * SEC;

fn table(spec: LimitSpec) -> (SharedLimits<Arc<ManualClock>>, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(T0));
    (SharedLimits::with_clock(&[spec], Arc::clone(&clock)).unwrap(), clock)
}

fn granted(d: Decision) -> bool {
    matches!(d, Decision::Granted { .. })
}

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[test]
fn token_bucket_bursts_then_refills_at_the_rate() {
    let (l, clock) = table(LimitSpec::rate(Algorithm::TokenBucket, SEC, 10));
    assert_eq!(l.available(0).unwrap(), 10);
    assert!(granted(l.try_acquire(0, 6).unwrap()));
    assert!(granted(l.try_acquire(0, 4).unwrap()));
    assert_eq!(l.try_acquire(0, 2).unwrap(), Decision::Wait(200_000_000));
    clock.advance(200_000_000);
    assert!(granted(l.try_acquire(0, 2).unwrap()));
    l.refund(0, 2, 0).unwrap();
    assert_eq!(l.available(0).unwrap(), 2);
    clock.advance(10 * SEC);
    assert_eq!(l.available(0).unwrap(), 10, "never more than the capacity");
}

#[test]
fn gcra_admits_exactly_what_the_token_bucket_admits() {
    for seed in 1..40 {
        let mut rng = Rng(seed * 7919);
        let cap = 1 + rng.below(50);
        let window = SEC / 10 * (1 + rng.below(20));
        let (tb, clock) = table(LimitSpec::rate(Algorithm::TokenBucket, window, cap));
        let gcra =
            SharedLimits::with_clock(&[LimitSpec::rate(Algorithm::Gcra, window, cap)], Arc::clone(&clock)).unwrap();
        for _ in 0..300 {
            clock.advance(rng.below(window / 4));
            let n = 1 + rng.below(cap);
            assert_eq!(tb.try_acquire(0, n).unwrap(), gcra.try_acquire(0, n).unwrap(), "seed {seed}");
            assert_eq!(tb.available(0).unwrap(), gcra.available(0).unwrap());
        }
    }
}

#[test]
fn token_bucket_matches_a_reference_model() {
    // The textbook bucket: a real-valued level, refilled, capped, taken from.
    let mut rng = Rng(12345);
    let (cap, window) = (20u64, 2 * SEC);
    let (l, clock) = table(LimitSpec::rate(Algorithm::TokenBucket, window, cap));
    let mut level = cap as f64;
    let mut last = T0;
    for _ in 0..5000 {
        clock.advance(rng.below(SEC / 5));
        let now = clock.now_nanos();
        level = (level + (now - last) as f64 * cap as f64 / window as f64).min(cap as f64);
        last = now;
        let n = 1 + rng.below(5);
        let ok = granted(l.try_acquire(0, n).unwrap());
        // Integer nanoseconds round the cost up: the model may be a hair more generous.
        if ok {
            assert!(level >= n as f64 - 1e-6, "granted {n} with a level of {level}");
            level -= n as f64;
        } else {
            assert!(level < n as f64 + 1e-3, "refused {n} with a level of {level}");
        }
    }
}

#[test]
fn a_leaky_bucket_meter_grants_a_burst_at_once_then_drains_at_its_rate() {
    let (l, clock) = table(LimitSpec::rate(Algorithm::LeakyBucket, SEC, 4));
    for _ in 0..4 {
        assert!(matches!(l.try_acquire(0, 1).unwrap(), Decision::Granted { delay: 0, .. }));
    }
    assert_eq!(l.try_acquire(0, 1).unwrap(), Decision::Wait(SEC / 4), "full: one unit drains in a quarter");
    clock.advance(SEC / 4);
    assert!(matches!(l.try_acquire(0, 1).unwrap(), Decision::Granted { delay: 0, .. }));
    assert!(!granted(l.try_acquire(0, 1).unwrap()));
}

#[test]
fn leaky_bucket_queue_spaces_grants_evenly() {
    let (l, clock) = table(LimitSpec::rate(Algorithm::LeakyQueue, SEC, 4));
    let delays: Vec<u64> = (0..4)
        .map(|_| match l.try_acquire(0, 1).unwrap() {
            Decision::Granted { delay, .. } => delay,
            Decision::Wait(_) => panic!("refused"),
        })
        .collect();
    assert_eq!(delays, [0, SEC / 4, SEC / 2, 3 * SEC / 4]);
    assert!(!granted(l.try_acquire(0, 1).unwrap()), "a full window is queued");
    clock.advance(SEC / 4);
    assert_eq!(l.try_acquire(0, 1).unwrap(), Decision::Granted { token: T0 + SEC, delay: 3 * SEC / 4 });
}

#[test]
fn fixed_window_resets_on_the_boundary() {
    let (l, clock) = table(LimitSpec::rate(Algorithm::FixedWindow, SEC, 3));
    assert!(granted(l.try_acquire(0, 3).unwrap()));
    assert_eq!(l.try_acquire(0, 1).unwrap(), Decision::Wait(SEC));
    clock.advance(SEC);
    let Decision::Granted { token, .. } = l.try_acquire(0, 2).unwrap() else { panic!("refused") };
    l.refund(0, 1, token).unwrap();
    assert_eq!(l.available(0).unwrap(), 2);
}

#[test]
fn sliding_window_weighs_the_previous_window() {
    let (l, clock) = table(LimitSpec::rate(Algorithm::SlidingWindow, SEC, 10));
    assert!(granted(l.try_acquire(0, 10).unwrap()));
    clock.advance(SEC); // start of the next window: the previous 10 still count in full
    assert!(!granted(l.try_acquire(0, 1).unwrap()));
    clock.advance(SEC / 2); // half of them have slid out
    assert_eq!(l.available(0).unwrap(), 5);
    assert!(granted(l.try_acquire(0, 5).unwrap()));
    assert!(!granted(l.try_acquire(0, 1).unwrap()));
    clock.advance(3 * SEC);
    assert_eq!(l.available(0).unwrap(), 10);
}

#[test]
fn semaphore_holds_units_until_released() {
    let (l, _clock) = table(LimitSpec::resource(2));
    let one = l.try_lease(0, 1).unwrap().unwrap();
    let other = l.try_lease(0, 1).unwrap().unwrap();
    assert!(l.try_lease(0, 1).unwrap().is_none());
    assert!(l.release_lease(one));
    let again = l.try_lease(0, 1).unwrap().unwrap();
    assert_eq!(l.available(0).unwrap(), 0);
    assert!(l.release_lease(other) && l.release_lease(again));
    assert_eq!(l.available(0).unwrap(), 2);
    // Semaphore units only move through leases, so that a dead holder's can be given back.
    assert!(matches!(l.try_acquire(0, 1), Err(LimitError::NeedsLease(0))));
    assert!(matches!(l.refund(0, 1, 0), Err(LimitError::NeedsLease(0))));
    assert!(matches!(l.try_lease(0, 3), Err(LimitError::ExceedsCapacity { amount: 3, capacity: 2 })));
    let (rate, _clock) = table(LimitSpec::rate(Algorithm::Gcra, SEC, 2));
    assert!(matches!(rate.try_lease(0, 1), Err(LimitError::NotAResourceLimit(0))));
}

#[test]
fn bad_requests_and_specs_are_errors() {
    let (l, _clock) = table(LimitSpec::rate(Algorithm::TokenBucket, SEC, 5));
    assert!(matches!(l.try_acquire(0, 6), Err(LimitError::ExceedsCapacity { amount: 6, capacity: 5 })));
    assert!(matches!(l.try_acquire(1, 1), Err(LimitError::NoSuchLimit { index: 1, count: 1 })));
    assert!(SharedLimits::create(&[LimitSpec::rate(Algorithm::Gcra, 0, 5)]).is_err());
    assert!(SharedLimits::create(&[LimitSpec::resource(0)]).is_err());
    assert!("nope".parse::<Algorithm>().is_err());
    for a in Algorithm::ALL {
        assert_eq!(a.as_str().parse::<Algorithm>().unwrap(), a);
    }
}

#[test]
fn an_attached_table_shares_state_with_its_creator() {
    let specs = [LimitSpec::rate(Algorithm::SlidingWindow, SEC, 7), LimitSpec::resource(3)];
    let a = SharedLimits::create(&specs).unwrap();
    let b = SharedLimits::attach(a.creator_pid(), a.raw_fd()).unwrap();
    assert_eq!(b.specs(), &specs);
    let lease = a.try_lease(1, 3).unwrap().unwrap();
    assert!(b.try_lease(1, 1).unwrap().is_none());
    assert!(granted(b.try_acquire(0, 7).unwrap()));
    assert!(!granted(a.try_acquire(0, 1).unwrap()));
    assert!(b.release_lease(lease), "a lease goes back through any mapping of its table");
    assert_eq!(a.available(1).unwrap(), 3);
}

/// One grant seen by a hammering thread.
#[derive(Clone, Copy, Debug)]
struct Grant {
    now: u64,
    amount: u64,
    token: u64,
}

/// Four threads take random amounts while a fifth moves the clock in random steps.
fn hammer(spec: LimitSpec, steps: u64) -> Vec<Grant> {
    let (l, clock) = table(spec);
    let l = Arc::new(l);
    let done = Arc::new(AtomicBool::new(false));
    let held = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..4u64)
        .map(|i| {
            let (l, clock, done, held) = (Arc::clone(&l), Arc::clone(&clock), Arc::clone(&done), Arc::clone(&held));
            std::thread::spawn(move || {
                let mut rng = Rng(0x9E37_79B9 + i);
                let mut grants = Vec::new();
                while !done.load(Ordering::Relaxed) {
                    let amount = 1 + rng.below(3);
                    let now = clock.now_nanos();
                    if spec.algorithm == Algorithm::Semaphore {
                        if let Some(lease) = l.try_lease(0, amount).unwrap() {
                            grants.push(Grant { now, amount, token: 0 });
                            let h = held.fetch_add(amount, Ordering::SeqCst) + amount;
                            assert!(h <= spec.capacity, "{h} units held at once");
                            std::thread::yield_now();
                            held.fetch_sub(amount, Ordering::SeqCst);
                            assert!(l.release_lease(lease));
                        }
                    } else if let Decision::Granted { token, .. } = l.try_acquire_at(0, amount, now).unwrap() {
                        grants.push(Grant { now, amount, token });
                    }
                }
                grants
            })
        })
        .collect();
    let mut rng = Rng(77);
    for _ in 0..steps {
        clock.advance(rng.below(spec.window.max(SEC) / 50));
        std::thread::sleep(std::time::Duration::from_micros(20));
    }
    done.store(true, Ordering::Relaxed);
    let mut all: Vec<Grant> = workers.into_iter().flat_map(|w| w.join().unwrap()).collect();
    all.sort_by_key(|g| (g.now, g.token));
    assert!(all.len() > 50, "too few grants to tell: {}", all.len());
    all
}

/// No interval `[t_i, t_j]` holds more than `capacity + rate * (t_j - t_i)` granted units.
fn assert_bucket_bound(grants: &[Grant], p: Params) {
    let mut prefix = vec![0u64];
    for g in grants {
        prefix.push(prefix.last().unwrap() + g.amount);
    }
    for i in 0..grants.len() {
        for j in i..grants.len() {
            let sum = prefix[j + 1] - prefix[i];
            let refilled = u128::from(grants[j].now - grants[i].now) * u128::from(p.capacity) / u128::from(p.window);
            let bound = p.capacity + u64::try_from(refilled).unwrap();
            assert!(sum <= bound, "{sum} units granted in [{}, {}], bound {bound}", grants[i].now, grants[j].now);
        }
    }
}

#[test]
fn threads_never_overshoot_a_token_bucket_or_gcra() {
    for algorithm in [Algorithm::TokenBucket, Algorithm::Gcra] {
        let spec = LimitSpec::rate(algorithm, SEC, 20);
        assert_bucket_bound(&hammer(spec, 2000), spec.params());
    }
}

#[test]
fn threads_never_overshoot_a_fixed_window() {
    let spec = LimitSpec::rate(Algorithm::FixedWindow, SEC, 20);
    let mut per_window = std::collections::HashMap::<u64, u64>::new();
    for g in hammer(spec, 2000) {
        *per_window.entry(g.token).or_default() += g.amount;
    }
    assert!(per_window.len() > 3);
    assert!(per_window.values().all(|&n| n <= 20), "{per_window:?}");
}

#[test]
fn threads_never_overshoot_a_sliding_window() {
    let spec = LimitSpec::rate(Algorithm::SlidingWindow, SEC, 20);
    let p = spec.params();
    let grants = hammer(spec, 3000);
    let mut sums = std::collections::BTreeMap::<u64, (u64, u64)>::new(); // window -> (units, latest elapsed)
    for g in &grants {
        let elapsed = g.now.saturating_sub(g.token * SEC).min(SEC);
        let e = sums.entry(g.token).or_default();
        e.0 += g.amount;
        e.1 = e.1.max(elapsed);
    }
    assert!(sums.len() > 3);
    for (&w, &(units, elapsed)) in &sums {
        let prev = sums.get(&(w - 1)).map_or(0, |s| s.0);
        let estimate = sliding_window_weight(prev, p, elapsed) + units;
        assert!(estimate <= 20, "window {w}: {units} units after {prev} before ({elapsed} ns in)");
    }
}

fn sliding_window_weight(prev: u64, p: Params, elapsed: u64) -> u64 {
    u64::try_from((u128::from(prev) * u128::from(p.window - elapsed)).div_ceil(u128::from(p.window))).unwrap()
}

#[test]
fn threads_never_overshoot_a_leaky_bucket_queue() {
    let spec = LimitSpec::rate(Algorithm::LeakyQueue, SEC, 20);
    let p = spec.params();
    let mut slots: Vec<Grant> = hammer(spec, 2000);
    slots.sort_by_key(|g| g.token);
    for pair in slots.windows(2) {
        assert!(pair[1].token >= pair[0].token + p.cost(pair[0].amount), "slots overlap: {pair:?}");
    }
    for g in &slots {
        assert!(g.token + p.cost(g.amount) - g.now <= SEC, "queued past the window: {g:?}");
    }
}

#[test]
fn threads_never_hold_more_than_a_semaphore_allows() {
    let spec = LimitSpec { algorithm: Algorithm::Semaphore, window: SEC, capacity: 4, scale: 1 };
    hammer(spec, 2000);
}
