//! What a limit is: its [`Algorithm`] and its [`LimitSpec`] (window, capacity, fixed-point
//! scale), validated before a table is laid out.

use std::fmt;
use std::str::FromStr;

use super::error::LimitError;
use super::{lease, Params, MAX_SCALE};

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
    pub(super) const ALL: [Algorithm; 7] = [
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

    pub(super) fn code(self) -> u64 {
        Self::ALL.iter().position(|a| *a == self).expect("listed") as u64 + 1
    }

    pub(super) fn from_code(code: u64) -> Option<Self> {
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

    pub(super) fn validate(self) -> Result<Self, LimitError> {
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

    pub(super) fn params(self) -> Params {
        Params { window: self.window, capacity: self.capacity }
    }
}
