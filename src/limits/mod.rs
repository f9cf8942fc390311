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
mod token_bucket;
mod wake;

use std::fmt;
use std::os::fd::RawFd;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

pub use self::acquire::{Grant, Refusal};
pub use self::clock::{Clock, ManualClock, MonotonicClock};
pub use self::error::LimitError;
pub use self::holder::{Holder, Liveness};
pub use self::lease::{Lease, Reclaimed};
pub use self::reclaim::reclaim_dead_process;
pub use self::segment::Segment;

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

/// How a limit decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// Continuous refill at `capacity / window`, bursts up to `capacity`.
    TokenBucket,
    /// Generic cell rate algorithm (one theoretical arrival time); same traffic as the bucket.
    Gcra,
    /// A leaky bucket as a meter (concurry's): a queue of at most `capacity` units that drains
    /// at `capacity / window`. A request is granted at once while it fits, so it admits bursts
    /// up to `capacity`.
    LeakyBucket,
    /// The weighted estimate of the units in the last `window`.
    SlidingWindow,
    /// At most `capacity` units per aligned window.
    FixedWindow,
    /// At most `capacity` units held at once, until released (a resource limit).
    Semaphore,
    /// A leaky bucket as a queue (a shaper): grants are spaced evenly at `capacity / window`,
    /// never bursting; a grant can come with a delay to wait before proceeding.
    LeakyQueue,
}

impl Algorithm {
    // Appended, never reordered: a limit's code in the shared table is its place here.
    const ALL: [Algorithm; 7] = [
        Algorithm::TokenBucket,
        Algorithm::Gcra,
        Algorithm::LeakyBucket,
        Algorithm::SlidingWindow,
        Algorithm::FixedWindow,
        Algorithm::Semaphore,
        Algorithm::LeakyQueue,
    ];

    /// The name used by the Python API (`"token_bucket"`, `"gcra"`, ...).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::TokenBucket => "token_bucket",
            Algorithm::Gcra => "gcra",
            Algorithm::LeakyBucket => "leaky_bucket",
            Algorithm::SlidingWindow => "sliding_window",
            Algorithm::FixedWindow => "fixed_window",
            Algorithm::Semaphore => "semaphore",
            Algorithm::LeakyQueue => "leaky_bucket_queue",
        }
    }

    fn code(self) -> u64 {
        Self::ALL.iter().position(|a| *a == self).expect("listed") as u64 + 1
    }

    fn from_code(code: u64) -> Option<Self> {
        let i = usize::try_from(code.checked_sub(1)?).ok()?;
        Self::ALL.get(i).copied()
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Algorithm {
    type Err = LimitError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().replace('-', "_").as_str() {
            "token_bucket" | "tokenbucket" => Ok(Algorithm::TokenBucket),
            "gcra" => Ok(Algorithm::Gcra),
            "leaky_bucket" | "leakybucket" => Ok(Algorithm::LeakyBucket),
            "sliding_window" | "slidingwindow" => Ok(Algorithm::SlidingWindow),
            "fixed_window" | "fixedwindow" => Ok(Algorithm::FixedWindow),
            "semaphore" | "resource" => Ok(Algorithm::Semaphore),
            "leaky_bucket_queue" | "leakybucketqueue" => Ok(Algorithm::LeakyQueue),
            _ => Err(LimitError::UnknownAlgorithm(s.to_owned())),
        }
    }
}

/// One limit: its algorithm, window and capacity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LimitSpec {
    /// How it decides.
    pub algorithm: Algorithm,
    /// The window in nanoseconds (unused by [`Algorithm::Semaphore`]).
    pub window: u64,
    /// Units per window, or units held at once for a semaphore, in fixed point: `scale` units
    /// make one whole unit of what the caller counts.
    pub capacity: u64,
    /// Units per whole unit: 1 for a limit counting whole units, a power of ten for a
    /// fractional capacity (0.5 per second is `capacity: 5, scale: 10`).
    pub scale: u64,
}

impl LimitSpec {
    /// A rate limit: `capacity` units per `window_nanos`.
    #[must_use]
    pub fn rate(algorithm: Algorithm, window_nanos: u64, capacity: u64) -> Self {
        Self { algorithm, window: window_nanos, capacity, scale: 1 }
    }

    /// A rate limit of `capacity` (possibly fractional) per `window_nanos`, counted in fixed
    /// point (a power of ten of units per whole unit, so that the capacity is at least a
    /// million units, up to 10^12 units per whole unit); an
    /// infinite capacity is as good as unlimited (2^53 units, 2^32 - 1 for windowed limits).
    ///
    /// # Errors
    /// A capacity that is not a positive number.
    pub fn fractional(algorithm: Algorithm, window_nanos: u64, capacity: f64) -> Result<Self, LimitError> {
        if capacity.is_nan() || capacity <= 0.0 {
            return Err(LimitError::InvalidSpec(format!("{algorithm} limit: capacity must be > 0, got {capacity}")));
        }
        let windowed = matches!(algorithm, Algorithm::SlidingWindow | Algorithm::FixedWindow);
        if capacity.is_infinite() {
            let units = if windowed { u64::from(u32::MAX) } else { 1 << 53 };
            return Ok(Self::rate(algorithm, window_nanos, units));
        }
        // A fractional capacity is counted in units a millionth of it or finer.
        let mut scale = 1u64;
        if capacity.fract() != 0.0 {
            while capacity * (scale as f64) < 1e6 && scale < MAX_SCALE {
                scale *= 10;
            }
        }
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // positive and finite
        let units = (capacity * scale as f64).round() as u64;
        Ok(Self { algorithm, window: window_nanos, capacity: units.max(1), scale })
    }

    /// `amount` whole units of the caller as units of this limit (rounded to the nearest).
    ///
    /// # Errors
    /// A negative or non-finite amount, or a fraction of a limit that counts whole units.
    pub fn units(self, index: usize, amount: f64) -> Result<u64, LimitError> {
        let invalid = |why: String| Err(LimitError::InvalidAmount { index, why });
        if !amount.is_finite() || amount < 0.0 {
            return invalid(format!("must be a non-negative number, got {amount}"));
        }
        if self.scale == 1 && amount.fract() != 0.0 {
            return invalid(format!("fractional amount {amount}: this limit counts whole units"));
        }
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // checked above
        Ok((amount * self.scale as f64).round() as u64)
    }

    /// `units` of this limit in the caller's whole units.
    #[must_use]
    #[allow(clippy::cast_precision_loss)] // below 2^53 for any capacity a caller names
    pub fn whole(self, units: u64) -> f64 {
        units as f64 / self.scale as f64
    }

    /// A resource limit: at most `capacity` units held at once.
    #[must_use]
    pub fn resource(capacity: u64) -> Self {
        Self { algorithm: Algorithm::Semaphore, window: 0, capacity, scale: 1 }
    }

    fn validate(self) -> Result<Self, LimitError> {
        let invalid = |why: &str| Err(LimitError::InvalidSpec(format!("{} limit: {why}", self.algorithm)));
        if self.capacity == 0 {
            return invalid("capacity must be at least 1");
        }
        if self.scale == 0 || self.scale > MAX_SCALE || (self.algorithm == Algorithm::Semaphore && self.scale != 1) {
            return invalid("the scale must be 1 to 10^12 (1 for a resource limit)");
        }
        if self.algorithm != Algorithm::Semaphore && self.window == 0 {
            return invalid("the window must be positive");
        }
        let windowed = matches!(self.algorithm, Algorithm::SlidingWindow | Algorithm::FixedWindow);
        if windowed && self.capacity > u64::from(u32::MAX) {
            return invalid("capacity must be below 2^32");
        }
        if self.algorithm == Algorithm::Semaphore && self.capacity > lease::MAX_AMOUNT {
            return invalid("capacity must be below 2^48");
        }
        Ok(self)
    }

    fn params(self) -> Params {
        Params { window: self.window, capacity: self.capacity }
    }
}

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
