//! How a pool stops. Three modes, one phase variable every worker watches.
//!
//! * [`ShutdownMode::Graceful`]: refuse new tasks, finish running *and* queued ones, then stop
//!   each worker gracefully.
//! * [`ShutdownMode::CancelPending`]: refuse new tasks, cancel queued ones, finish running ones.
//! * [`ShutdownMode::Kill`]: refuse new tasks, cancel queued ones, kill workers now; running
//!   tasks fail with [`crate::TaskError::ShutDown`].
//!
//! The pool reaches [`Phase::Stopped`] when the last worker task has ended; whatever is still
//! queued then (a producer that was blocked on a full queue when shutdown began) fails with
//! `ShutDown`, so no task is dropped silently.

/// How [`crate::Supervisor::shutdown`] treats running and queued tasks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ShutdownMode {
    /// Finish running and queued tasks, then stop.
    #[default]
    Graceful,
    /// Finish running tasks; queued tasks fail with `Cancelled`.
    CancelPending,
    /// Kill workers now; running tasks fail with `ShutDown`, queued ones with `Cancelled`.
    Kill,
}

/// Where the pool is in its life; only ever moves forward.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Phase {
    Running,
    Draining,
    Killing,
    Stopped,
}

impl ShutdownMode {
    pub(crate) fn phase(self) -> Phase {
        match self {
            ShutdownMode::Graceful | ShutdownMode::CancelPending => Phase::Draining,
            ShutdownMode::Kill => Phase::Killing,
        }
    }

    pub(crate) fn cancels_queued(self) -> bool {
        self != ShutdownMode::Graceful
    }
}
