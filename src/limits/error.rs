//! What can go wrong with a limit table.

/// Why a limit operation failed.
#[derive(Debug, thiserror::Error)]
pub enum LimitError {
    /// The shared memory could not be created or mapped.
    #[error("shared memory for limits: {0}")]
    Io(#[from] std::io::Error),
    /// The mapped memory is not a limit table of this version.
    #[error("the shared memory is not a limit table of this version")]
    NotALimitTable,
    /// A spec that cannot work (zero capacity or window, ...).
    #[error("invalid limit: {0}")]
    InvalidSpec(String),
    /// An algorithm name nobody knows.
    #[error("unknown limit algorithm {0:?}")]
    UnknownAlgorithm(String),
    /// There is no limit with this index.
    #[error("no limit #{index} (there are {count})")]
    NoSuchLimit {
        /// The index asked for.
        index: usize,
        /// How many limits there are.
        count: usize,
    },
    /// Semaphore units are held through a lease ([`super::SharedLimits::try_lease`]), so that they can
    /// be given back when their holder dies.
    #[error("limit #{0} is a resource limit: hold its units with a lease")]
    NeedsLease(usize),
    /// A lease was asked of a rate limit.
    #[error("limit #{0} is not a resource limit")]
    NotAResourceLimit(usize),
    /// A holder's units were to be taken back while it still runs.
    #[error("process {0} still runs: what it holds is its own")]
    HolderAlive(u32),
    /// Too many limits in one table.
    #[error("at most {max} limits per table, got {count}")]
    TooManyLimits {
        /// How many were given.
        count: usize,
        /// The most a table holds.
        max: usize,
    },
    /// More units than the limit ever allows at once: waiting would never end.
    #[error("cannot acquire {amount} units from a limit of capacity {capacity}")]
    ExceedsCapacity {
        /// Units asked for.
        amount: u64,
        /// The limit's capacity.
        capacity: u64,
    },
    /// One limit named twice in a request for several.
    #[error("limit #{0} is requested twice")]
    DuplicateRequest(usize),
    /// An amount that is not a number of units of this limit (negative, not a number, or a
    /// fraction of a limit that counts whole units).
    #[error("invalid amount for limit #{index}: {why}")]
    InvalidAmount {
        /// The limit.
        index: usize,
        /// What is wrong with it.
        why: String,
    },
    /// The limits did not grant within the time allowed; nothing is held.
    #[error("the limits did not grant within the timeout")]
    TimedOut,
    /// The caller stopped the wait (a signal, a cancelled task); nothing is held.
    #[error("the wait for the limits was interrupted")]
    Interrupted,
}
