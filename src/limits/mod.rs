//! Limits shared by every process of a pool: rate limits (token bucket, GCRA, leaky bucket,
//! sliding window, fixed window) and resource limits (a counting semaphore).
//!
//! The state of each limit is one or two atomic 64-bit words in a [`Segment`] of shared memory,
//! updated with compare-and-swap loops, so processes that map the same segment share the limit
//! exactly: no process holds a lock, and a process killed at any instruction leaves the words
//! consistent. The algorithms are pure functions of the words, the request and `now`; a
//! [`Clock`] supplies `now` ([`ManualClock`] in tests).
//!
//! Units of a resource limit are held through a [`Lease`] recorded in the same segment with
//! its holding process ([`Holder`]): when that process dies holding it, a waiter refused by the
//! limit, or the supervisor ([`reclaim_dead_process`]), gives the units back (see `lease.rs`
//! for the protocol that keeps this exact whatever instruction the holder died at).
//!
//! ```
//! use worker_pool::limits::{Algorithm, Decision, LimitSpec, ManualClock, SharedLimits};
//! use std::sync::Arc;
//!
//! let clock = Arc::new(ManualClock::new(10_000_000_000));
//! let spec = LimitSpec::rate(Algorithm::TokenBucket, 1_000_000_000, 10); // 10 per second
//! let limits = SharedLimits::with_clock(&[spec], Arc::clone(&clock)).unwrap();
//! assert!(matches!(limits.try_acquire(0, 10).unwrap(), Decision::Granted { .. }));
//! assert!(matches!(limits.try_acquire(0, 1).unwrap(), Decision::Wait(100_000_000)));
//! clock.advance(100_000_000);
//! assert!(matches!(limits.try_acquire(0, 1).unwrap(), Decision::Granted { .. }));
//! ```

mod acquire;
mod clock;
mod error;
mod fixed_window;
mod gcra;
mod holder;
mod leaky_bucket;
mod lease;
mod reclaim;
mod segment;
mod semaphore;
mod sliding_window;
mod spec;
mod token_bucket;
mod wake;

use std::fmt;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

pub use self::acquire::{Grant, Refusal};
pub use self::clock::{Clock, ManualClock, MonotonicClock};
pub use self::error::LimitError;
pub use self::holder::{Holder, Liveness};
pub use self::lease::{Lease, Reclaimed};
pub use self::reclaim::reclaim_dead_process;
pub use self::segment::Segment;
pub use self::spec::{Algorithm, LimitSpec};

/// Marks a segment as a limit table (`b"wplimits"`), checked when a process attaches.
const MAGIC: u64 = u64::from_le_bytes(*b"wplimits");
/// The layout version (3: a scale per limit, and the parking words).
const VERSION: u64 = 3;
/// The header's words, in layout order: `Header::Nonce as usize` is that word's index.
#[derive(Clone, Copy)]
#[repr(usize)]
enum Header {
    /// [`MAGIC`], written last by the creator.
    Magic,
    /// [`VERSION`].
    Version,
    /// How many limits follow the header.
    Limits,
    /// How many lease slots follow the limits.
    Slots,
    /// The reclaimers' turn (see `lease.rs`).
    ReclaimLock,
    /// A number telling this table from others, kept in its leases.
    Nonce,
    /// Bumped by every give of units; refused processes park on it (see `wake.rs`).
    Generation,
    /// How many processes are parked on the generation word.
    Waiters,
}
// The header takes one stride, like a limit.
const _: () = assert!((Header::Waiters as usize) < STRIDE);
/// Lease slots for a table with semaphores: one per unit of capacity up to this many...
const MAX_HOLDER_SLOTS: u64 = 1024;
/// ...plus this many for acquisitions in progress (a refused one frees its slot at once).
const SPARE_SLOTS: u64 = 64;
/// Words per limit (and in the header): one cache line, so limits do not share one.
const STRIDE: usize = 8;
/// Where a limit's state words start within its stride (after kind, window, capacity).
const STATE: usize = 3;
/// Where a limit's scale is within its stride (after its two state words).
const SCALE: usize = 5;
/// The largest scale (units per whole unit of a fractional capacity).
const MAX_SCALE: u64 = 1_000_000_000_000;

/// What a limit says to a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Granted. `token` identifies the grant for [`SharedLimits::refund`]; `delay` is how many
    /// nanoseconds the caller must wait before proceeding (only a leaky bucket queue sets it).
    Granted {
        /// Identifies the grant (the window for windowed limits, the slot for a leaky bucket).
        token: u64,
        /// Nanoseconds to wait before using the grant.
        delay: u64,
    },
    /// Refused for now: try again in about this many nanoseconds.
    Wait(u64),
}

/// Window and capacity, with the unit arithmetic the algorithms share.
#[derive(Clone, Copy, Debug)]
struct Params {
    window: u64,
    capacity: u64,
}

impl Params {
    /// Nanoseconds of refill that `units` cost, rounded up.
    fn cost(self, units: u64) -> u64 {
        let ns = (u128::from(units) * u128::from(self.window)).div_ceil(u128::from(self.capacity));
        u64::try_from(ns).unwrap_or(u64::MAX)
    }

    /// Nanoseconds of refill that `units` cost, rounded down (what a refund gives back).
    fn cost_floor(self, units: u64) -> u64 {
        u64::try_from(u128::from(units) * u128::from(self.window) / u128::from(self.capacity)).unwrap_or(u64::MAX)
    }

    /// Whole units that refill in `nanos`, at most the capacity.
    fn units_in(self, nanos: u64) -> u64 {
        let units = u128::from(nanos) * u128::from(self.capacity) / u128::from(self.window);
        u64::try_from(units).unwrap_or(u64::MAX).min(self.capacity)
    }
}

/// The mapped memory and what was read from its header: shared (through a weak reference) with
/// the registry that the supervisor's reclaim walks.
struct Table {
    /// The mapped table.
    segment: Segment,
    /// The limits, read back from the table when attaching.
    specs: Vec<LimitSpec>,
    /// How many lease slots follow the limits.
    slots: usize,
    /// When a refused lease last looked for dead holders (this process's monotonic ns).
    last_reclaim: AtomicU64,
}

impl Table {
    fn new(segment: Segment, specs: Vec<LimitSpec>, slots: usize) -> Arc<Self> {
        let table = Arc::new(Self { segment, specs, slots, last_reclaim: AtomicU64::new(0) });
        reclaim::register(&table);
        table
    }

    /// Words of the header, the limits and the lease slots.
    fn words_needed(count: usize, slots: usize) -> Option<usize> {
        STRIDE.checked_mul(count.checked_add(1)?)?.checked_add(slots.checked_mul(lease::SLOT_WORDS)?)
    }

    /// The words refused processes park on.
    fn parking(&self) -> wake::Parking<'_, AtomicU64> {
        let words = self.segment.words();
        wake::Parking { generation: &words[Header::Generation as usize], waiters: &words[Header::Waiters as usize] }
    }

    /// The lease slots and semaphore counters.
    fn leases(&self) -> lease::Leases<'_> {
        let words = self.segment.words();
        let base = STRIDE * (self.specs.len() + 1);
        let counters = (0..self.specs.len())
            .map(|i| {
                let state = STRIDE * (i + 1) + STATE;
                (self.specs[i].algorithm == Algorithm::Semaphore).then(|| (&words[state], &words[state + 1]))
            })
            .collect();
        lease::Leases {
            specs: &self.specs,
            counters,
            slots: &words[base..base + self.slots * lease::SLOT_WORDS],
            reclaim_lock: &words[Header::ReclaimLock as usize],
        }
    }
}

/// A table of limits in shared memory, used the same way from every process that maps it.
pub struct SharedLimits<C: Clock = MonotonicClock> {
    /// The mapped table, its specs and lease slots.
    table: Arc<Table>,
    /// Where `now` comes from.
    clock: C,
    /// The process holding the memfd others attach through.
    creator: u32,
}

impl<C: Clock> fmt::Debug for SharedLimits<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedLimits").field("specs", &self.table.specs).field("creator", &self.creator).finish()
    }
}

impl SharedLimits<MonotonicClock> {
    /// A new table of `specs` in fresh shared memory, on the system monotonic clock.
    ///
    /// # Errors
    /// An invalid spec, or shared memory the kernel refuses.
    pub fn create(specs: &[LimitSpec]) -> Result<Self, LimitError> {
        Self::with_clock(specs, MonotonicClock)
    }

    /// Maps the table that process `pid` created and holds as descriptor `fd`.
    ///
    /// # Errors
    /// When the creator or its descriptor is gone, or it is not a limit table.
    pub fn attach(pid: u32, fd: RawFd) -> Result<Self, LimitError> {
        let segment = Segment::attach(pid, fd)?;
        let words = segment.words();
        if words.len() < STRIDE
            || words[Header::Magic as usize].load(Ordering::Acquire) != MAGIC
            || words[Header::Version as usize].load(Ordering::Acquire) != VERSION
        {
            return Err(LimitError::NotALimitTable);
        }
        let count = usize::try_from(words[Header::Limits as usize].load(Ordering::Acquire)).unwrap_or(usize::MAX);
        let slots = usize::try_from(words[Header::Slots as usize].load(Ordering::Acquire)).unwrap_or(usize::MAX);
        if count > lease::MAX_LIMITS || Table::words_needed(count, slots).is_none_or(|n| words.len() < n) {
            return Err(LimitError::NotALimitTable);
        }
        let specs = (0..count)
            .map(|i| {
                let base = STRIDE * (i + 1);
                let algorithm =
                    Algorithm::from_code(words[base].load(Ordering::Acquire)).ok_or(LimitError::NotALimitTable)?;
                let window = words[base + 1].load(Ordering::Acquire);
                let capacity = words[base + 2].load(Ordering::Acquire);
                let scale = words[base + SCALE].load(Ordering::Acquire);
                LimitSpec { algorithm, window, capacity, scale }.validate()
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { table: Table::new(segment, specs, slots), clock: MonotonicClock, creator: pid })
    }
}

impl<C: Clock> SharedLimits<C> {
    /// A new table of `specs` in fresh shared memory, reading time from `clock`.
    ///
    /// # Errors
    /// An invalid spec, or shared memory the kernel refuses.
    pub fn with_clock(specs: &[LimitSpec], clock: C) -> Result<Self, LimitError> {
        let specs = specs.iter().map(|s| s.validate()).collect::<Result<Vec<_>, _>>()?;
        if specs.len() > lease::MAX_LIMITS {
            return Err(LimitError::TooManyLimits { count: specs.len(), max: lease::MAX_LIMITS });
        }
        let units: u64 = specs
            .iter()
            .filter(|s| s.algorithm == Algorithm::Semaphore)
            .fold(0, |sum, s| sum.saturating_add(s.capacity));
        let slots = if units == 0 { 0 } else { units.min(MAX_HOLDER_SLOTS) + SPARE_SLOTS };
        let slots = usize::try_from(slots).expect("at most MAX_HOLDER_SLOTS + SPARE_SLOTS");
        let len = Table::words_needed(specs.len(), slots).expect("a bounded table");
        let segment = Segment::create("worker_pool-limits", len)?;
        let words = segment.words();
        for (i, spec) in specs.iter().enumerate() {
            let base = STRIDE * (i + 1);
            words[base].store(spec.algorithm.code(), Ordering::Relaxed);
            words[base + 1].store(spec.window, Ordering::Relaxed);
            words[base + 2].store(spec.capacity, Ordering::Relaxed);
            words[base + SCALE].store(spec.scale, Ordering::Relaxed);
        }
        words[Header::Limits as usize].store(specs.len() as u64, Ordering::Relaxed);
        words[Header::Slots as usize].store(slots as u64, Ordering::Relaxed);
        // Unique enough: the creator's pid and the time, which no other table of this boot shares.
        let nonce = (u64::from(std::process::id()) << 40) ^ MonotonicClock.now_nanos() ^ (words.as_ptr() as u64);
        words[Header::Nonce as usize].store(nonce.max(1), Ordering::Relaxed);
        words[Header::Version as usize].store(VERSION, Ordering::Relaxed);
        words[Header::Magic as usize].store(MAGIC, Ordering::Release);
        Ok(Self { table: Table::new(segment, specs, slots), clock, creator: std::process::id() })
    }

    /// The limits, in order.
    #[must_use]
    pub fn specs(&self) -> &[LimitSpec] {
        &self.table.specs
    }

    /// The process whose descriptor [`attach`](SharedLimits::attach) opens.
    #[must_use]
    pub fn creator_pid(&self) -> u32 {
        self.creator
    }

    /// The descriptor of the table in this process.
    #[must_use]
    pub fn raw_fd(&self) -> RawFd {
        self.table.segment.raw_fd()
    }

    /// How many processes are parked on the table, waiting for units to come back (one too
    /// many for each process killed while parked: only a needless wake-up call follows).
    #[must_use]
    pub fn parked(&self) -> u64 {
        self.table.segment.words()[Header::Waiters as usize].load(Ordering::SeqCst)
    }

    /// Now, on this table's clock.
    #[must_use]
    pub fn now(&self) -> u64 {
        self.clock.now_nanos()
    }

    fn limit(&self, index: usize) -> Result<(LimitSpec, &[AtomicU64]), LimitError> {
        let specs = &self.table.specs;
        let spec = *specs.get(index).ok_or(LimitError::NoSuchLimit { index, count: specs.len() })?;
        let base = STRIDE * (index + 1) + STATE;
        Ok((spec, &self.table.segment.words()[base..base + 2]))
    }

    /// Asks rate limit `index` for `amount` units now.
    ///
    /// # Errors
    /// No such limit, more units than its capacity, or a resource limit (take a
    /// [`try_lease`](SharedLimits::try_lease) instead).
    pub fn try_acquire(&self, index: usize, amount: u64) -> Result<Decision, LimitError> {
        self.try_acquire_at(index, amount, self.now())
    }

    /// Asks rate limit `index` for `amount` units at time `now` (nanoseconds on this table's
    /// clock).
    ///
    /// # Errors
    /// No such limit, more units than its capacity, or a resource limit.
    pub fn try_acquire_at(&self, index: usize, amount: u64, now: u64) -> Result<Decision, LimitError> {
        let (spec, state) = self.limit(index)?;
        if spec.algorithm == Algorithm::Semaphore {
            return Err(LimitError::NeedsLease(index));
        }
        if amount > spec.capacity {
            return Err(LimitError::ExceedsCapacity { amount, capacity: spec.capacity });
        }
        if amount == 0 {
            return Ok(Decision::Granted { token: 0, delay: 0 });
        }
        let p = spec.params();
        Ok(match spec.algorithm {
            Algorithm::TokenBucket => token_bucket::try_acquire(&state[0], p, amount, now),
            Algorithm::Gcra => gcra::try_acquire(&state[0], p, amount, now),
            Algorithm::LeakyBucket => leaky_bucket::try_acquire(&state[0], p, amount, now, false),
            Algorithm::LeakyQueue => leaky_bucket::try_acquire(&state[0], p, amount, now, true),
            Algorithm::SlidingWindow => sliding_window::try_acquire(state, p, amount, now),
            Algorithm::FixedWindow => fixed_window::try_acquire(&state[0], p, amount, now),
            Algorithm::Semaphore => return Err(LimitError::NeedsLease(index)),
        })
    }

    /// Gives back `amount` units of a rate grant that were not used (`token` from the grant).
    ///
    /// # Errors
    /// No such limit, or a resource limit (its units come back with
    /// [`release_lease`](SharedLimits::release_lease)).
    pub fn refund(&self, index: usize, amount: u64, token: u64) -> Result<(), LimitError> {
        let (spec, state) = self.limit(index)?;
        if spec.algorithm == Algorithm::Semaphore {
            return Err(LimitError::NeedsLease(index));
        }
        self.refund_units(spec, state, amount, token);
        self.table.parking().notify();
        Ok(())
    }

    /// Gives back rate units (not a semaphore's: those go through leases), waking nobody.
    fn refund_units(&self, spec: LimitSpec, state: &[AtomicU64], amount: u64, token: u64) {
        let p = spec.params();
        match spec.algorithm {
            Algorithm::TokenBucket => token_bucket::refund(&state[0], p, amount),
            Algorithm::Gcra => gcra::refund(&state[0], p, amount),
            Algorithm::LeakyBucket | Algorithm::LeakyQueue => leaky_bucket::refund(&state[0], p, amount, self.now()),
            Algorithm::SlidingWindow => sliding_window::refund(state, amount, token),
            Algorithm::FixedWindow => fixed_window::refund(&state[0], amount, token),
            Algorithm::Semaphore => {}
        }
    }

    /// Units limit `index` would grant right now.
    ///
    /// # Errors
    /// No such limit.
    pub fn available(&self, index: usize) -> Result<u64, LimitError> {
        self.available_at(index, self.now())
    }

    /// Units limit `index` would grant at time `now`.
    ///
    /// # Errors
    /// No such limit.
    pub fn available_at(&self, index: usize, now: u64) -> Result<u64, LimitError> {
        let (spec, state) = self.limit(index)?;
        let p = spec.params();
        Ok(match spec.algorithm {
            Algorithm::TokenBucket => token_bucket::available(&state[0], p, now),
            Algorithm::Gcra => gcra::available(&state[0], p, now),
            Algorithm::LeakyBucket | Algorithm::LeakyQueue => leaky_bucket::available(&state[0], p, now),
            Algorithm::SlidingWindow => sliding_window::available(state, p, now),
            Algorithm::FixedWindow => fixed_window::available(&state[0], p, now),
            Algorithm::Semaphore => semaphore::available(&state[0], p),
        })
    }
}

#[cfg(test)]
mod acquire_tests;
#[cfg(test)]
mod lease_tests;
#[cfg(all(test, loom))]
mod loom_tests;
#[cfg(test)]
mod tests;
