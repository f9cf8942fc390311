//! `CoreLimits`: a [`SharedLimits`] table for Python. The pool process creates it; worker
//! processes attach to the same shared memory through `/proc/<pid>/fd/<fd>` when the Python
//! `LimitSet` is unpickled there.

use std::sync::Mutex;
use std::time::Duration;

use pyo3::exceptions::{PyIndexError, PyOSError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;

use crate::limits::{Algorithm, Decision, Lease, LimitError, LimitSpec, Reclaimed, SharedLimits};

fn limit_error(error: LimitError) -> PyErr {
    let message = error.to_string();
    match error {
        LimitError::Io(e) => PyOSError::new_err((e.raw_os_error().unwrap_or(0), message)),
        LimitError::NoSuchLimit { .. } => PyIndexError::new_err(message),
        LimitError::NotALimitTable | LimitError::HolderAlive(_) => PyRuntimeError::new_err(message),
        LimitError::InvalidSpec(_)
        | LimitError::UnknownAlgorithm(_)
        | LimitError::ExceedsCapacity { .. }
        | LimitError::NeedsLease(_)
        | LimitError::NotAResourceLimit(_)
        | LimitError::TooManyLimits { .. } => PyValueError::new_err(message),
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

    /// Gives back `amount` unused units of the rate grant `token`.
    fn refund(&self, index: usize, amount: u64, token: u64) -> PyResult<()> {
        self.0.refund(index, amount, token).map_err(limit_error)
    }

    /// Takes `amount` units of resource limit `index` for this process, recorded with it so
    /// that they come back if it dies holding them: a `CoreLease`, or `None` if they are not
    /// free now (a refused call gives back what dead holders held, at most every 50 ms).
    fn lease(slf: &Bound<'_, Self>, index: usize, amount: u64) -> PyResult<Option<CoreLease>> {
        let table = &slf.get().0;
        table.check_leasable(index, amount).map_err(limit_error)?;
        let mut lease = table.try_lease_once(index, amount).map_err(limit_error)?;
        if lease.is_none() {
            // Refused: this may look for dead holders in /proc, outside the interpreter.
            lease = slf.py().detach(|| table.try_lease(index, amount)).map_err(limit_error)?;
        }
        Ok(lease.map(|lease| CoreLease { table: slf.clone().unbind(), lease: Mutex::new(Some(lease)) }))
    }

    /// Gives back what processes that died holding units held: units given back per limit.
    fn reclaim_dead(&self, py: Python<'_>) -> PyResult<Vec<u64>> {
        let reclaimed = py.detach(|| self.0.reclaim_dead_holders()).map_err(limit_error)?;
        Ok(reclaimed.units)
    }

    /// Gives back what process `pid` held, if it is dead: units given back per limit.
    fn release_dead_process(&self, py: Python<'_>, pid: u32) -> PyResult<Vec<u64>> {
        let reclaimed: Reclaimed = py.detach(|| self.0.release_dead_process(pid)).map_err(limit_error)?;
        Ok(reclaimed.units)
    }

    /// The occupied lease slots: `(pid, limit, units, phase)`; pid 0 for a garbled owner.
    fn leases(&self) -> Vec<(u32, usize, u64, &'static str)> {
        self.0
            .leases()
            .into_iter()
            .map(|(h, limit, units, phase)| (h.map_or(0, |h| h.pid), limit, units, phase))
            .collect()
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

/// Units of a resource limit held by this process (`CoreLimits.lease`), until `release()`.
#[pyclass(module = "stateful_pool._core", frozen)]
pub(crate) struct CoreLease {
    table: Py<CoreLimits>,
    /// Taken out by the one `release()` that gives it back.
    lease: Mutex<Option<Lease>>,
}

#[pymethods]
impl CoreLease {
    /// Gives the units back; `False` if they already were (released before, or taken back
    /// because this process was taken for dead).
    fn release(&self) -> bool {
        let lease = self.lease.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        lease.is_some_and(|lease| self.table.get().0.release_lease(lease))
    }

    /// Whether the units are still held (not yet released).
    #[getter]
    fn held(&self) -> bool {
        self.lease.lock().unwrap_or_else(std::sync::PoisonError::into_inner).is_some()
    }

    /// `(limit index, units)`; `(0, 0)` once released.
    #[getter]
    fn units(&self) -> (usize, u64) {
        self.lease
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .map_or((0, 0), |l| (l.limit(), l.amount()))
    }

    fn __repr__(&self) -> String {
        let (limit, units) = self.units();
        format!("<CoreLease of {units} units of limit #{limit}, held={}>", self.held())
    }
}
