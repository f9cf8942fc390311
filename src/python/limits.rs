//! `CoreLimits`: a [`SharedLimits`] table for Python. The pool process creates it; worker
//! processes attach to the same shared memory through `/proc/<pid>/fd/<fd>` when the Python
//! `LimitSet` is unpickled there.

use std::sync::Mutex;
use std::time::Duration;

use pyo3::exceptions::{PyIndexError, PyOSError, PyRuntimeError, PyTimeoutError, PyValueError};
use pyo3::prelude::*;
use pyo3::IntoPyObjectExt;

use crate::limits::{Algorithm, Decision, Grant, Lease, LimitError, LimitSpec, Reclaimed, SharedLimits};

fn limit_error(error: LimitError) -> PyErr {
    let message = error.to_string();
    match error {
        LimitError::Io(e) => PyOSError::new_err((e.raw_os_error().unwrap_or(0), message)),
        LimitError::NoSuchLimit { .. } => PyIndexError::new_err(message),
        LimitError::NotALimitTable | LimitError::HolderAlive(_) | LimitError::Interrupted => {
            PyRuntimeError::new_err(message)
        }
        LimitError::TimedOut => PyTimeoutError::new_err(message),
        LimitError::InvalidSpec(_)
        | LimitError::DuplicateRequest(_)
        | LimitError::InvalidAmount { .. }
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
    /// A new table; each spec is `(algorithm, window_seconds, capacity)`. A rate limit's
    /// capacity may be fractional (counted in fixed point) or infinite; a resource limit's is
    /// a whole number.
    #[new]
    fn new(specs: Vec<(String, f64, f64)>) -> PyResult<Self> {
        let specs = specs
            .into_iter()
            .map(|(name, window, capacity)| {
                let algorithm: Algorithm = name.parse().map_err(limit_error)?;
                if algorithm == Algorithm::Semaphore {
                    if capacity.fract() != 0.0 || !(1.0..=9.0e15).contains(&capacity) {
                        return Err(PyValueError::new_err(format!(
                            "a resource limit's capacity must be a whole number >= 1, got {capacity}"
                        )));
                    }
                    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // whole, in range
                    return Ok(LimitSpec::resource(capacity as u64));
                }
                if !(window.is_finite() && window > 0.0) {
                    return Err(PyValueError::new_err(format!("window_seconds must be positive, got {window}")));
                }
                let window = u64::try_from(Duration::from_secs_f64(window).as_nanos()).unwrap_or(u64::MAX);
                LimitSpec::fractional(algorithm, window, capacity).map_err(limit_error)
            })
            .collect::<PyResult<Vec<_>>>()?;
        SharedLimits::create(&specs).map(Self).map_err(limit_error)
    }

    /// Maps the table process `pid` holds as descriptor `fd`.
    #[staticmethod]
    fn attach(pid: u32, fd: i32) -> PyResult<Self> {
        SharedLimits::attach(pid, fd).map(Self).map_err(limit_error)
    }

    /// How many threads (of any process) are parked on the table, waiting for units.
    #[getter]
    fn parked(&self) -> u64 {
        self.0.parked()
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

    /// The limits as `(algorithm, window_seconds, capacity, scale)`: `capacity` in units of
    /// the limit, `scale` of which make one whole unit (1 unless the capacity is fractional).
    #[getter]
    fn specs(&self) -> Vec<(&'static str, f64, u64, u64)> {
        self.0
            .specs()
            .iter()
            .map(|s| (s.algorithm.as_str(), Duration::from_nanos(s.window).as_secs_f64(), s.capacity, s.scale))
            .collect()
    }

    /// Waits until every limit of `requests` (`(index, amount)`, amounts in whole units,
    /// fractions where a capacity is fractional) grants, all or nothing, parked on the shared
    /// memory (woken when units are given back) outside the interpreter, for at most
    /// `timeout` seconds (`None`: no limit, `0`: one attempt). Between parks (every 50 ms at
    /// most) it checks for signals, and calls `cancelled()` if given. Returns a `CoreGrant`,
    /// or `None` when the timeout passed or `cancelled()` returned true (nothing is held then).
    #[pyo3(signature = (requests, timeout = None, cancelled = None))]
    fn acquire(
        slf: &Bound<'_, Self>,
        requests: Vec<(usize, f64)>,
        timeout: Option<f64>,
        cancelled: Option<Py<PyAny>>,
    ) -> PyResult<Option<CoreGrant>> {
        let table = &slf.get().0;
        let units = requests
            .iter()
            .map(|&(index, amount)| {
                let count = table.specs().len();
                let spec = table.specs().get(index).ok_or(LimitError::NoSuchLimit { index, count });
                Ok((index, spec.and_then(|s| s.units(index, amount)).map_err(limit_error)?))
            })
            .collect::<PyResult<Vec<_>>>()?;
        let timeout = match timeout {
            Some(t) if t.is_nan() || t < 0.0 => {
                return Err(PyValueError::new_err(format!("timeout must be >= 0, got {t}")));
            }
            Some(t) => Some(Duration::try_from_secs_f64(t).unwrap_or(Duration::MAX)),
            None => None,
        };
        let mut stopped_by: Option<PyErr> = None;
        let mut keep_waiting = || {
            Python::attach(|py| {
                if let Err(e) = py.check_signals() {
                    stopped_by = Some(e);
                    return false;
                }
                match cancelled.as_ref().map(|c| c.call0(py).and_then(|r| r.is_truthy(py))) {
                    Some(Ok(true)) => false,
                    Some(Err(e)) => {
                        stopped_by = Some(e);
                        false
                    }
                    Some(Ok(false)) | None => true,
                }
            })
        };
        match slf.py().detach(|| table.acquire_all(&units, timeout, &mut keep_waiting)) {
            Ok(grant) => Ok(Some(CoreGrant { table: slf.clone().unbind(), grant: Mutex::new(Some(grant)) })),
            Err(LimitError::TimedOut | LimitError::Interrupted) if stopped_by.is_none() => Ok(None),
            Err(LimitError::Interrupted) => Err(stopped_by.expect("set when interrupted by an error")),
            Err(e) => Err(limit_error(e)),
        }
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

    /// Whole units limit `index` would grant now (or at `now_ns`): an `int`, or a `float` for
    /// a fractional capacity.
    #[pyo3(signature = (index, now_ns = None))]
    fn available(&self, py: Python<'_>, index: usize, now_ns: Option<u64>) -> PyResult<Py<PyAny>> {
        let units = self.0.available_at(index, now_ns.unwrap_or_else(|| self.0.now())).map_err(limit_error)?;
        let spec = self.0.specs()[index];
        if spec.scale == 1 {
            units.into_py_any(py)
        } else {
            spec.whole(units).into_py_any(py)
        }
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

/// Several limits granted together by `CoreLimits.acquire`: rate units are spent (unused ones
/// go back with `refund`), resource units are held until `release()` (or until this process
/// dies; a grant garbage-collected unreleased gives them back too).
#[pyclass(module = "stateful_pool._core", frozen)]
pub(crate) struct CoreGrant {
    table: Py<CoreLimits>,
    /// Taken out by the one `release()` that gives it back.
    grant: Mutex<Option<Grant>>,
}

impl CoreGrant {
    fn grant(&self) -> std::sync::MutexGuard<'_, Option<Grant>> {
        self.grant.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[pymethods]
impl CoreGrant {
    /// Gives the resource units back; `False` if they already were (released before, or
    /// taken back because this process was taken for dead).
    fn release(&self) -> bool {
        let grant = self.grant().take();
        grant.is_some_and(|grant| self.table.get().0.release_grant(grant))
    }

    /// Gives back `unused` whole units of the part on rate limit `index` (they were not used).
    fn refund(&self, index: usize, unused: f64) -> PyResult<()> {
        let table = &self.table.get().0;
        let count = table.specs().len();
        let spec = table.specs().get(index).ok_or(LimitError::NoSuchLimit { index, count }).map_err(limit_error)?;
        let units = spec.units(index, unused).map_err(limit_error)?;
        let mut guard = self.grant();
        let grant = guard.as_mut().ok_or_else(|| PyRuntimeError::new_err("the grant was released"))?;
        table.refund_grant(grant, index, units).map_err(limit_error)
    }

    /// Whether the grant is still held (not yet released).
    #[getter]
    fn held(&self) -> bool {
        self.grant().is_some()
    }

    /// `(limit index, whole units)` of each part, in the order requested; empty once released.
    #[getter]
    fn parts(&self) -> Vec<(usize, f64)> {
        let specs = self.table.get().0.specs();
        self.grant().as_ref().map_or_else(Vec::new, |g| g.parts().map(|(i, u)| (i, specs[i].whole(u))).collect())
    }

    /// When the limits granted (`CLOCK_MONOTONIC` ns, comparable across processes); 0 once
    /// released.
    #[getter]
    fn at_ns(&self) -> u64 {
        self.grant().as_ref().map_or(0, Grant::at)
    }

    fn __repr__(&self) -> String {
        format!("<CoreGrant of {:?}, held={}>", self.parts(), self.held())
    }
}

impl Drop for CoreGrant {
    fn drop(&mut self) {
        if let Some(grant) = self.grant.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner).take() {
            let _ = self.table.get().0.release_grant(grant);
        }
    }
}
