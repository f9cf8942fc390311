//! `CoreLimits`: a [`SharedLimits`] table for Python. The pool process creates it; worker
//! processes attach to the same shared memory through `/proc/<pid>/fd/<fd>` when the Python
//! `LimitSet` is unpickled there.

use std::time::Duration;

use pyo3::exceptions::{PyIndexError, PyOSError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;

use crate::limits::{Algorithm, Decision, LimitError, LimitSpec, SharedLimits};

fn limit_error(error: LimitError) -> PyErr {
    let message = error.to_string();
    match error {
        LimitError::Io(e) => PyOSError::new_err((e.raw_os_error().unwrap_or(0), message)),
        LimitError::NoSuchLimit { .. } => PyIndexError::new_err(message),
        LimitError::NotALimitTable => PyRuntimeError::new_err(message),
        LimitError::InvalidSpec(_) | LimitError::UnknownAlgorithm(_) | LimitError::ExceedsCapacity { .. } => {
            PyValueError::new_err(message)
        }
    }
}

/// A table of limits in shared memory (see `stateful_pool.concurry.limits`).
#[pyclass(module = "stateful_pool._core", frozen)]
pub(crate) struct CoreLimits(SharedLimits);

#[pymethods]
impl CoreLimits {
    /// A new table; each spec is `(algorithm, window_seconds, capacity)`.
    #[new]
    fn new(specs: Vec<(String, f64, u64)>) -> PyResult<Self> {
        let specs = specs
            .into_iter()
            .map(|(name, window, capacity)| {
                let algorithm: Algorithm = name.parse().map_err(limit_error)?;
                let window = if algorithm == Algorithm::Semaphore {
                    0
                } else if window.is_finite() && window > 0.0 {
                    u64::try_from(Duration::from_secs_f64(window).as_nanos()).unwrap_or(u64::MAX)
                } else {
                    return Err(PyValueError::new_err(format!("window_seconds must be positive, got {window}")));
                };
                Ok(LimitSpec { algorithm, window, capacity })
            })
            .collect::<PyResult<Vec<_>>>()?;
        SharedLimits::create(&specs).map(Self).map_err(limit_error)
    }

    /// Maps the table process `pid` holds as descriptor `fd`.
    #[staticmethod]
    fn attach(pid: u32, fd: i32) -> PyResult<Self> {
        SharedLimits::attach(pid, fd).map(Self).map_err(limit_error)
    }

    /// The process that holds the table's descriptor.
    #[getter]
    fn pid(&self) -> u32 {
        self.0.creator_pid()
    }

    /// The descriptor, valid in `pid`.
    #[getter]
    fn fd(&self) -> i32 {
        self.0.raw_fd()
    }

    /// The limits as `(algorithm, window_seconds, capacity)`.
    #[getter]
    fn specs(&self) -> Vec<(&'static str, f64, u64)> {
        self.0
            .specs()
            .iter()
            .map(|s| (s.algorithm.as_str(), Duration::from_nanos(s.window).as_secs_f64(), s.capacity))
            .collect()
    }

    /// Asks limit `index` for `amount` units (at `now_ns`, default now). Returns
    /// `(granted, seconds, token, at_ns)`: if granted, `seconds` to wait before proceeding (a
    /// leaky bucket's slot) and the `token` for `refund`; if not, `seconds` until a retry may
    /// succeed. `at_ns` is the time the decision was made at.
    #[pyo3(signature = (index, amount, now_ns = None))]
    fn try_acquire(&self, index: usize, amount: u64, now_ns: Option<u64>) -> PyResult<(bool, f64, u64, u64)> {
        let now = now_ns.unwrap_or_else(|| self.0.now());
        let secs = |ns: u64| Duration::from_nanos(ns).as_secs_f64();
        Ok(match self.0.try_acquire_at(index, amount, now).map_err(limit_error)? {
            Decision::Granted { token, delay } => (true, secs(delay), token, now),
            Decision::Wait(ns) => (false, secs(ns), 0, now),
        })
    }

    /// Gives back `amount` unused units of the grant `token` (releases a resource limit).
    fn refund(&self, index: usize, amount: u64, token: u64) -> PyResult<()> {
        self.0.refund(index, amount, token).map_err(limit_error)
    }

    /// Releases `amount` units of a resource limit.
    fn release(&self, index: usize, amount: u64) -> PyResult<()> {
        self.0.release(index, amount).map_err(limit_error)
    }

    /// Units limit `index` would grant now (or at `now_ns`).
    #[pyo3(signature = (index, now_ns = None))]
    fn available(&self, index: usize, now_ns: Option<u64>) -> PyResult<u64> {
        self.0.available_at(index, now_ns.unwrap_or_else(|| self.0.now())).map_err(limit_error)
    }

    /// Now on the limits' clock (`CLOCK_MONOTONIC`, the same in every process), in nanoseconds.
    #[staticmethod]
    fn now_ns() -> u64 {
        use crate::limits::{Clock, MonotonicClock};
        MonotonicClock.now_nanos()
    }

    fn __repr__(&self) -> String {
        format!("<CoreLimits of {} limits, fd {} in pid {}>", self.0.specs().len(), self.fd(), self.pid())
    }
}
