//! Waiting without holding the GIL, in short slices so Ctrl-C reaches a blocked caller.

use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;

/// How long one detached wait lasts before signals are checked again.
pub(crate) const SLICE: Duration = Duration::from_millis(50);

/// Receives from `rx`, releasing the GIL, checking for signals between slices.
pub(crate) fn recv_interruptible<T: Send>(py: Python<'_>, rx: &Receiver<T>) -> PyResult<T> {
    loop {
        match py.detach(|| rx.recv_timeout(SLICE)) {
            Ok(value) => return Ok(value),
            Err(RecvTimeoutError::Timeout) => py.check_signals()?,
            Err(RecvTimeoutError::Disconnected) => {
                return Err(PyRuntimeError::new_err("the pool dropped a reply (internal error)"));
            }
        }
    }
}

/// A deadline from an optional number of seconds.
pub(crate) fn deadline(seconds: Option<f64>) -> PyResult<Option<Instant>> {
    match seconds {
        None => Ok(None),
        Some(s) if s.is_finite() && s >= 0.0 => Ok(Some(Instant::now() + Duration::from_secs_f64(s))),
        Some(s) => {
            Err(pyo3::exceptions::PyValueError::new_err(format!("timeout must be a non-negative number, got {s}")))
        }
    }
}
