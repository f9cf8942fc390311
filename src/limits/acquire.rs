//! Several limits of one table taken together, all or nothing: [`SharedLimits::try_acquire_all`]
//! decides now, [`SharedLimits::acquire_all`] parks on the table (see `wake.rs`) until the
//! limits grant, the timeout passes or the caller stops it. Whatever happens, a request that
//! does not return a [`Grant`] leaves nothing held: what it took before a refusal is given back
//! before it returns.
//!
//! Order of an attempt: a look at every resource limit first (no write, so a full semaphore
//! costs no churn on the others), then the rate limits, then the leases; a refusal at any step
//! refunds the rate units and releases the leases taken so far, and wakes parked processes if
//! it gave anything back (they may have been refused because of it).

use std::time::{Duration, Instant};

use super::lease::Lease;
use std::sync::atomic::AtomicU64;

use super::wake::{Parking, SLICE};
use super::{Algorithm, Clock, Decision, LimitError, SharedLimits};

/// One limit's part of a [`Grant`].
#[derive(Debug)]
struct Part {
    /// The limit's index.
    limit: usize,
    /// Units granted (units of the limit, see [`LimitSpec::scale`](super::LimitSpec::scale)).
    amount: u64,
    /// The rate grant's token (for refunds).
    token: u64,
    /// The lease holding a resource limit's units.
    lease: Option<Lease>,
}

/// Units granted by several limits at once. Rate units are spent (unused ones can be refunded
/// with [`SharedLimits::refund_grant`]); resource units are held until
/// [`SharedLimits::release_grant`], or until this process dies.
#[must_use = "resource units stay held until the grant is released"]
#[derive(Debug)]
pub struct Grant {
    /// The granted parts, in the order requested (zero amounts left out).
    parts: Vec<Part>,
    /// When the last limit granted, on the table's clock.
    at: u64,
    /// Nanoseconds to wait before using the grant (a leaky bucket's slot), from `at`.
    delay: u64,
}

impl Grant {
    /// `(limit, units)` of each part, in the order requested.
    pub fn parts(&self) -> impl Iterator<Item = (usize, u64)> + '_ {
        self.parts.iter().map(|p| (p.limit, p.amount))
    }

    /// When the grant was made (nanoseconds on the table's clock).
    #[must_use]
    pub fn at(&self) -> u64 {
        self.at
    }

    /// Nanoseconds to wait after [`at`](Grant::at) before using it (only leaky buckets ask
    /// for it; [`SharedLimits::acquire_all`] has waited already).
    #[must_use]
    pub fn delay(&self) -> u64 {
        self.delay
    }
}

/// Why [`SharedLimits::try_acquire_all`] refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// A resource limit is full: units come back when a holder releases them (or dies).
    Held,
    /// A rate limit refills enough in about this many nanoseconds.
    Refill(u64),
}

impl<C: Clock> SharedLimits<C> {
    /// Checks a request for several limits: each limit exists, is named once, and can grant
    /// its amount at all.
    fn check_request(&self, requests: &[(usize, u64)]) -> Result<(), LimitError> {
        let specs = self.specs();
        for (n, &(index, amount)) in requests.iter().enumerate() {
            let spec = specs.get(index).ok_or(LimitError::NoSuchLimit { index, count: specs.len() })?;
            if requests[..n].iter().any(|&(other, _)| other == index) {
                return Err(LimitError::DuplicateRequest(index));
            }
            if amount > spec.capacity {
                return Err(LimitError::ExceedsCapacity { amount, capacity: spec.capacity });
            }
        }
        Ok(())
    }

    /// Asks every limit of `requests` (`(index, units)`) now: all of them grant, or nothing is
    /// taken. A refusal by a full resource limit looks for dead holders first (at most every
    /// 50 ms), and takes their units back.
    ///
    /// # Errors
    /// An unknown or repeated limit, or more units than a capacity (nothing would ever grant).
    pub fn try_acquire_all(&self, requests: &[(usize, u64)]) -> Result<Result<Grant, Refusal>, LimitError> {
        Ok(self.attempt_all(requests)?.map_err(|(refusal, _)| refusal))
    }

    /// [`try_acquire_all`](SharedLimits::try_acquire_all), telling on a refusal the generation
    /// its own undo found when it notified (if it took anything before the refusal).
    fn attempt_all(&self, requests: &[(usize, u64)]) -> Result<Result<Grant, (Refusal, Option<u32>)>, LimitError> {
        self.check_request(requests)?;
        let is_resource = |index: usize| self.specs()[index].algorithm == Algorithm::Semaphore;
        for &(index, amount) in requests.iter().filter(|&&(i, a)| a > 0 && is_resource(i)) {
            if self.available(index)? < amount
                && !(self.reclaim_due() && self.reclaim_dead_holders().is_ok() && self.available(index)? >= amount)
            {
                return Ok(Err((Refusal::Held, None)));
            }
        }
        let mut grant = Grant { parts: Vec::with_capacity(requests.len()), at: self.now(), delay: 0 };
        for &(index, amount) in requests.iter().filter(|&&(i, a)| a > 0 && !is_resource(i)) {
            match self.try_acquire_at(index, amount, grant.at) {
                Ok(Decision::Granted { token, delay }) => {
                    grant.delay = grant.delay.max(delay);
                    grant.parts.push(Part { limit: index, amount, token, lease: None });
                }
                Ok(Decision::Wait(nanos)) => return Ok(Err((Refusal::Refill(nanos), self.cancel_grant(grant)))),
                Err(e) => return Err(self.give_back_on_error(grant, e)),
            }
        }
        for &(index, amount) in requests.iter().filter(|&&(i, a)| a > 0 && is_resource(i)) {
            match self.try_lease(index, amount) {
                Ok(Some(lease)) => grant.parts.push(Part { limit: index, amount, token: 0, lease: Some(lease) }),
                Ok(None) => return Ok(Err((Refusal::Held, self.cancel_grant(grant)))),
                Err(e) => return Err(self.give_back_on_error(grant, e)),
            }
        }
        // In the order requested, for the caller.
        grant.parts.sort_by_key(|p| requests.iter().position(|&(i, _)| i == p.limit));
        Ok(Ok(grant))
    }

    /// Waits until every limit of `requests` grants (all or nothing, as
    /// [`try_acquire_all`](SharedLimits::try_acquire_all)), parked on the table between
    /// attempts: woken when units are given back, or when the refusing rate limit has refilled.
    /// Every 50 ms at most, `keep_waiting` is asked whether to go on (a caller
    /// checks for signals there). A leaky bucket's delay is waited out before returning.
    ///
    /// # Errors
    /// Those of `try_acquire_all`; [`LimitError::TimedOut`] when `timeout` passes first
    /// (`Some(ZERO)`: one attempt), [`LimitError::Interrupted`] when `keep_waiting` says
    /// no. Nothing is held after an error.
    pub fn acquire_all(
        &self,
        requests: &[(usize, u64)],
        timeout: Option<Duration>,
        keep_waiting: &mut dyn FnMut() -> bool,
    ) -> Result<Grant, LimitError> {
        self.acquire_all_in_slices(requests, timeout, SLICE, keep_waiting)
    }

    /// [`acquire_all`](SharedLimits::acquire_all) parking at most `slice` at a time (the tests
    /// use a long one, to tell a wake-up from the end of a slice).
    pub(super) fn acquire_all_in_slices(
        &self,
        requests: &[(usize, u64)],
        timeout: Option<Duration>,
        slice: Duration,
        keep_waiting: &mut dyn FnMut() -> bool,
    ) -> Result<Grant, LimitError> {
        // A timeout too far to represent is no timeout.
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let parking = self.table.parking();
        let mut last_asked = Instant::now();
        loop {
            let mut seen = parking.observe();
            let (refusal, own_give) = match self.attempt_all(requests)? {
                Ok(grant) => return self.wait_out_delay(grant, keep_waiting),
                Err(refused) => refused,
            };
            let mut nap = match refusal {
                Refusal::Held => slice,
                Refusal::Refill(nanos) => slice.min(Duration::from_nanos(nanos)),
            };
            if let Some(before) = own_give {
                match Parking::<AtomicU64>::after_own_give(seen, before) {
                    Some(next) => seen = next,
                    None => nap = Duration::ZERO, // somebody else gave meanwhile: try again now
                }
            }
            if let Some(deadline) = deadline {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(LimitError::TimedOut);
                }
                nap = nap.min(left);
            }
            if !nap.is_zero() {
                parking.park(seen, nap);
            }
            // After every park, and every slice however busy the retries.
            if (!nap.is_zero() || last_asked.elapsed() >= slice) && !keep_waiting() {
                return Err(LimitError::Interrupted);
            }
            if !nap.is_zero() {
                last_asked = Instant::now();
            }
        }
    }

    /// Sleeps until a leaky bucket's slot comes, in slices; gives the grant back if stopped.
    fn wait_out_delay(&self, grant: Grant, keep_waiting: &mut dyn FnMut() -> bool) -> Result<Grant, LimitError> {
        loop {
            let left = grant.at.saturating_add(grant.delay).saturating_sub(self.now());
            if left == 0 {
                return Ok(grant);
            }
            std::thread::sleep(SLICE.min(Duration::from_nanos(left)));
            if !keep_waiting() {
                let _ = self.cancel_grant(grant);
                return Err(LimitError::Interrupted);
            }
        }
    }

    /// Gives a grant's resource units back (its rate units stay spent). `false` if some were
    /// already given back (their holder was taken for dead, or the slot was scribbled on).
    pub fn release_grant(&self, grant: Grant) -> bool {
        let mut all = true;
        let mut any = false;
        for lease in grant.parts.iter().filter_map(|p| p.lease.as_ref()) {
            let released = self.release_lease_quietly(lease);
            all &= released;
            any |= released;
        }
        if any {
            self.table.parking().notify();
        }
        all
    }

    /// Gives back `unused` units of the grant's part on rate limit `limit` (they were not
    /// used after all); the part keeps the rest.
    ///
    /// # Errors
    /// [`LimitError::NoSuchLimit`] when the grant has no part on `limit`,
    /// [`LimitError::NeedsLease`] for a resource limit (its units come back whole on
    /// release), [`LimitError::ExceedsCapacity`] for more units than the part holds.
    pub fn refund_grant(&self, grant: &mut Grant, limit: usize, unused: u64) -> Result<(), LimitError> {
        let count = self.specs().len();
        let part =
            grant.parts.iter_mut().find(|p| p.limit == limit).ok_or(LimitError::NoSuchLimit { index: limit, count })?;
        if part.lease.is_some() {
            return Err(LimitError::NeedsLease(limit));
        }
        if unused > part.amount {
            return Err(LimitError::ExceedsCapacity { amount: unused, capacity: part.amount });
        }
        if unused > 0 {
            self.refund(limit, unused, part.token)?;
            part.amount -= unused;
        }
        Ok(())
    }

    /// Undoes a partial grant when an attempt fails with `error` (no `/proc`, say): nothing is
    /// left held.
    fn give_back_on_error(&self, grant: Grant, error: LimitError) -> LimitError {
        let _ = self.cancel_grant(grant);
        error
    }

    /// Undoes a grant entirely: rate units refunded, leases released, parked processes woken.
    /// Returns the generation its notify found (`None` if there was nothing to give back).
    fn cancel_grant(&self, grant: Grant) -> Option<u32> {
        let gave = !grant.parts.is_empty();
        for part in grant.parts {
            match part.lease {
                Some(lease) => {
                    let _ = self.release_lease_quietly(&lease);
                }
                None => {
                    let (spec, state) = self.limit(part.limit).expect("a granted limit exists");
                    self.refund_units(spec, state, part.amount, part.token);
                }
            }
        }
        gave.then(|| self.table.parking().notify())
    }
}
