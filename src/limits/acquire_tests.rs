//! Tests of several limits taken together: all or nothing on a manual clock, and waiters on
//! threads woken by a release rather than by the end of a slice.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;

const SEC: u64 = 1_000_000_000;
const T0: u64 = 1_000 * SEC;

/// A token bucket of 10 per second, a semaphore of 1 and a token bucket of 2 per second.
fn table() -> (SharedLimits<Arc<ManualClock>>, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(T0));
    let specs = [
        LimitSpec::rate(Algorithm::TokenBucket, SEC, 10),
        LimitSpec::resource(1),
        LimitSpec::rate(Algorithm::TokenBucket, SEC, 2),
    ];
    (SharedLimits::with_clock(&specs, Arc::clone(&clock)).unwrap(), clock)
}

fn never_stop() -> impl FnMut() -> bool {
    || true
}

#[test]
fn a_grant_takes_every_limit_and_its_release_gives_the_resource_back() {
    let (l, _clock) = table();
    let grant = l.try_acquire_all(&[(2, 1), (0, 4), (1, 1)]).unwrap().unwrap();
    assert_eq!(grant.parts().collect::<Vec<_>>(), vec![(2, 1), (0, 4), (1, 1)], "in the order requested");
    assert_eq!((l.available(0).unwrap(), l.available(1).unwrap(), l.available(2).unwrap()), (6, 0, 1));
    assert!(l.release_grant(grant));
    assert_eq!((l.available(0).unwrap(), l.available(1).unwrap()), (6, 1), "rate units stay spent");
}

#[test]
fn a_full_resource_refuses_before_any_rate_limit_is_touched() {
    let (l, _clock) = table();
    let held = l.try_acquire_all(&[(1, 1)]).unwrap().unwrap();
    assert_eq!(l.try_acquire_all(&[(0, 5), (1, 1)]).unwrap().unwrap_err(), Refusal::Held);
    assert_eq!(l.available(0).unwrap(), 10);
    assert!(l.release_grant(held));
}

#[test]
fn a_refusing_rate_limit_gives_back_what_the_others_granted() {
    let (l, clock) = table();
    assert!(matches!(l.try_acquire(2, 2).unwrap(), Decision::Granted { .. }));
    let refused = l.try_acquire_all(&[(0, 5), (1, 1), (2, 1)]).unwrap().unwrap_err();
    assert_eq!(refused, Refusal::Refill(SEC / 2));
    assert_eq!((l.available(0).unwrap(), l.available(1).unwrap()), (10, 1), "nothing left held");
    assert!(l.leases().is_empty());
    clock.advance(SEC / 2);
    let grant = l.try_acquire_all(&[(0, 5), (1, 1), (2, 1)]).unwrap().unwrap();
    assert!(l.release_grant(grant));
}

#[test]
fn bad_requests_are_errors_that_take_nothing() {
    let (l, _clock) = table();
    assert!(matches!(l.try_acquire_all(&[(0, 1), (0, 1)]), Err(LimitError::DuplicateRequest(0))));
    assert!(matches!(l.try_acquire_all(&[(0, 1), (3, 1)]), Err(LimitError::NoSuchLimit { index: 3, count: 3 })));
    assert!(matches!(l.try_acquire_all(&[(0, 1), (1, 2)]), Err(LimitError::ExceedsCapacity { amount: 2, .. })));
    assert_eq!(l.available(0).unwrap(), 10);
}

#[test]
fn unused_rate_units_are_refunded_from_the_grant() {
    let (l, _clock) = table();
    let mut grant = l.try_acquire_all(&[(0, 8), (1, 1)]).unwrap().unwrap();
    l.refund_grant(&mut grant, 0, 3).unwrap();
    assert_eq!(grant.parts().collect::<Vec<_>>(), vec![(0, 5), (1, 1)]);
    assert_eq!(l.available(0).unwrap(), 5);
    assert!(matches!(l.refund_grant(&mut grant, 0, 6), Err(LimitError::ExceedsCapacity { .. })));
    assert!(matches!(l.refund_grant(&mut grant, 1, 1), Err(LimitError::NeedsLease(1))));
    assert!(matches!(l.refund_grant(&mut grant, 2, 1), Err(LimitError::NoSuchLimit { .. })));
    assert!(l.release_grant(grant));
}

#[test]
fn a_timeout_or_an_interruption_leaves_nothing_held() {
    let l = SharedLimits::create(&[LimitSpec::rate(Algorithm::TokenBucket, 3600 * SEC, 5), LimitSpec::resource(2)])
        .unwrap();
    let held = l.try_acquire_all(&[(1, 1)]).unwrap().unwrap();
    let drained = l.try_acquire_all(&[(0, 5)]).unwrap().unwrap();
    // The resource grants, the rate limit refuses: the resource's lease is given back each time.
    let err = l.acquire_all(&[(1, 1), (0, 1)], Some(Duration::from_millis(30)), &mut never_stop()).unwrap_err();
    assert!(matches!(err, LimitError::TimedOut));
    let mut calls = 0;
    let err = l
        .acquire_all(&[(1, 1), (0, 1)], None, &mut || {
            calls += 1;
            calls < 2
        })
        .unwrap_err();
    assert!(matches!(err, LimitError::Interrupted));
    assert_eq!(l.available(1).unwrap(), 1);
    assert_eq!(l.leases().len(), 1, "only the lease held above");
    assert!(l.release_grant(held));
    drop(drained);
}

#[test]
fn a_parked_waiter_is_woken_by_the_release_not_by_its_slice() {
    let l = Arc::new(SharedLimits::create(&[LimitSpec::resource(1), LimitSpec::resource(1)]).unwrap());
    let held = l.try_acquire_all(&[(0, 1), (1, 1)]).unwrap().unwrap();
    let waiter = {
        let l = Arc::clone(&l);
        std::thread::spawn(move || {
            // A slice of a minute: only a wake-up can end this wait within the assertion below.
            let grant =
                l.acquire_all_in_slices(&[(1, 1), (0, 1)], None, Duration::from_secs(60), &mut never_stop()).unwrap();
            let woke = Instant::now();
            assert!(l.release_grant(grant));
            woke
        })
    };
    while l.parked() == 0 {
        std::thread::yield_now(); // until it parked
    }
    let released = Instant::now();
    assert!(l.release_grant(held));
    let woke = waiter.join().unwrap();
    assert!(woke.duration_since(released) < Duration::from_secs(10), "woken by the release");
}

#[test]
fn threads_taking_two_limits_all_or_nothing_never_exceed_either() {
    let l = Arc::new(SharedLimits::create(&[LimitSpec::resource(2), LimitSpec::resource(3)]).unwrap());
    let over = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let (l, over) = (Arc::clone(&l), Arc::clone(&over));
            std::thread::spawn(move || {
                for i in 0..200 {
                    let request = if (t + i) % 2 == 0 { [(0, 1), (1, 2)] } else { [(1, 1), (0, 2)] };
                    let grant = l.acquire_all(&request, Some(Duration::from_secs(30)), &mut never_stop()).unwrap();
                    if l.available(0).unwrap() > 2 || l.available(1).unwrap() > 3 {
                        over.store(true, Ordering::SeqCst);
                    }
                    assert!(l.release_grant(grant));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert!(!over.load(Ordering::SeqCst));
    assert_eq!((l.available(0).unwrap(), l.available(1).unwrap()), (2, 3));
}

#[test]
fn fractional_capacities_count_in_fixed_point() {
    let spec = LimitSpec::fractional(Algorithm::Gcra, SEC, 0.5).unwrap();
    assert_eq!((spec.capacity, spec.scale), (5_000_000, 10_000_000));
    assert_eq!(spec.units(0, 0.25).unwrap(), 2_500_000);
    assert!((spec.whole(spec.capacity) - 0.5).abs() < 1e-12);
    let whole = LimitSpec::fractional(Algorithm::TokenBucket, SEC, 3.0).unwrap();
    assert_eq!((whole.capacity, whole.scale), (3, 1));
    assert!(matches!(whole.units(0, 0.5), Err(LimitError::InvalidAmount { .. })));
    assert!(matches!(whole.units(0, -1.0), Err(LimitError::InvalidAmount { .. })));
    assert!(LimitSpec::fractional(Algorithm::Gcra, SEC, 0.0).is_err());
    let unlimited = LimitSpec::fractional(Algorithm::FixedWindow, SEC, f64::INFINITY).unwrap();
    assert_eq!(unlimited.capacity, u64::from(u32::MAX));
    let clock = Arc::new(ManualClock::new(T0));
    let l = SharedLimits::with_clock(&[spec], Arc::clone(&clock)).unwrap();
    let attached = SharedLimits::attach(l.creator_pid(), l.raw_fd()).unwrap();
    assert_eq!(attached.specs(), &[spec], "the scale is in the table");
    assert!(l.try_acquire_all(&[(0, spec.units(0, 0.4).unwrap())]).unwrap().is_ok());
    assert!(l.try_acquire_all(&[(0, spec.units(0, 0.2).unwrap())]).unwrap().is_err());
}
