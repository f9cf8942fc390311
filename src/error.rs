//! Typed errors. Operations that take a task give it back when they fail, as crossbeam does.

use std::fmt;
use std::time::Duration;

/// Why a worker stopped serving: it exited, was killed by a signal, or broke its protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerFault {
    /// What happened, as a lowercase sentence.
    pub message: String,
    /// The process's exit code, when it exited.
    pub exit_code: Option<i32>,
    /// The signal that killed the process, when one did.
    pub signal: Option<i32>,
    /// The worker broke its protocol (forged lengths or indices, a malformed frame): what it
    /// wrote cannot be trusted, so neither can the order of its replies (see [`WorkerFault::protocol`]).
    pub broke_protocol: bool,
}

impl WorkerFault {
    /// A fault with a message and no exit status.
    #[must_use]
    pub fn new(message: impl Into<String>) -> Self {
        Self { message: message.into(), exit_code: None, signal: None, broke_protocol: false }
    }

    /// A worker that broke its protocol. A batch it was running cannot say which of its tasks
    /// ran (the replies it wrote cannot be trusted), so none of them is run again: they all fail.
    #[must_use]
    pub fn protocol(message: impl Into<String>) -> Self {
        Self { broke_protocol: true, ..Self::new(message) }
    }

    /// Whether the worker exited with status 0 on its own (not a crash).
    #[must_use]
    pub fn is_clean_exit(&self) -> bool {
        self.exit_code == Some(0) && self.signal.is_none()
    }
}

impl fmt::Display for WorkerFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(sig) = self.signal {
            write!(f, " (killed by signal {sig})")?;
        } else if let Some(code) = self.exit_code {
            write!(f, " (exit code {code})")?;
        }
        Ok(())
    }
}

impl std::error::Error for WorkerFault {}

/// Why a submitted task produced no output.
#[derive(Debug, thiserror::Error)]
pub enum TaskError<E> {
    /// The worker ran the task and the task itself failed.
    #[error("task failed")]
    Failed(E),
    /// The worker running the task died; the task may have run partly.
    #[error("worker {worker} crashed while running the task: {fault}")]
    WorkerCrashed {
        /// The id of the worker that crashed.
        worker: u64,
        /// What happened to it.
        fault: WorkerFault,
    },
    /// The task ran past its deadline; the worker was killed and replaced.
    #[error("task timed out after {0:?}")]
    TimedOut(Duration),
    /// The task was cancelled before it ran (or while it ran, if killing was asked for).
    #[error("task was cancelled")]
    Cancelled,
    /// The pool shut down before the task could run.
    #[error("pool shut down before the task ran")]
    ShutDown,
    /// No worker is left that could run the task: none was started, every one left for good,
    /// or the one worker it was addressed to left. The reason says which and why.
    #[error("no worker can run the task: {0}")]
    NoWorkers(NoWorkerReason),
}

/// One worker that left the pool for good, and why (e.g. `"gave up: crashed in spawn 6 times
/// in 60 s; last error: ..."`, `"retired"`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Departure {
    /// The worker's id.
    pub worker: u64,
    /// Why it left, as a lowercase sentence.
    pub reason: String,
}

impl fmt::Display for Departure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "worker {} {}", self.worker, self.reason)
    }
}

/// Why no worker can run a task: the workers that left for good, newest last (a few at most),
/// or none when no worker was ever started.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NoWorkerReason {
    /// The workers that left, newest last; empty when none was started.
    pub departed: Vec<Departure>,
}

impl NoWorkerReason {
    /// The reason for a task addressed to one worker that left.
    #[must_use]
    pub fn departed(worker: u64, reason: impl Into<String>) -> Self {
        Self { departed: vec![Departure { worker, reason: reason.into() }] }
    }

    /// Whether no worker was ever started (as opposed to every worker having left).
    #[must_use]
    pub fn none_started(&self) -> bool {
        self.departed.is_empty()
    }
}

impl fmt::Display for NoWorkerReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.departed.is_empty() {
            return f.write_str("no worker is running (none was started)");
        }
        for (i, departure) in self.departed.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{departure}")?;
        }
        Ok(())
    }
}

/// [`crate::Supervisor::submit_with`] (or another submit method) could not queue the task; the task is handed back.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError<T> {
    /// The queue stayed full until the timeout.
    #[error("task queue is full")]
    Full(T),
    /// The pool is shutting down or shut down.
    #[error("cannot schedule new tasks after shutdown")]
    ShutDown(T),
    /// No worker is running or starting, so the task could never run; the reason says why
    /// (none was started, or each one left and why).
    #[error("no worker can run the task: {1}")]
    NoWorkers(T, NoWorkerReason),
    /// The target worker does not exist or has stopped.
    #[error("no such worker")]
    UnknownWorker(T),
}

impl<T> SubmitError<T> {
    /// The task that could not be submitted.
    pub fn into_inner(self) -> T {
        match self {
            SubmitError::Full(t)
            | SubmitError::ShutDown(t)
            | SubmitError::NoWorkers(t, _)
            | SubmitError::UnknownWorker(t) => t,
        }
    }
}

/// Why a worker could not be started.
#[derive(Debug, thiserror::Error)]
pub enum StartError<E> {
    /// The worker's own setup failed.
    #[error("worker setup failed")]
    Failed(E),
    /// The pool shut down while the worker was starting; it was stopped again.
    #[error("pool shut down while the worker was starting")]
    ShutDown,
}

/// Invalid pool configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// A numeric option is out of range.
    #[error("{option} must be {expected}")]
    InvalidOption {
        /// The option's name.
        option: &'static str,
        /// What it must be.
        expected: &'static str,
    },
    /// The tokio runtime could not be created.
    #[error("cannot start the supervisor runtime: {0}")]
    Runtime(String),
}
