//! `CoreNamespace`: a task tree's shared namespace for `stateful_pool.groups`, held in this
//! (the parent) process. The tree's workers reach it with upcalls on their own channel (see
//! [`crate::process::namespace`]); the parent reads and writes it here directly. Values are
//! opaque bytes (pickles, made and read by Python).

use std::sync::Arc;

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use super::wait::SLICE;
use crate::process::namespace::{self as wire, NamespaceStore, NamespaceUpcalls};
use crate::process::Upcalls;

/// A namespace: named values and one lock, shared with the workers of the pools built with it.
#[pyclass(module = "stateful_pool._core", frozen)]
pub(crate) struct CoreNamespace(Arc<NamespaceStore>);

impl CoreNamespace {
    /// The handler a process pool serving this namespace puts in its spec.
    pub(crate) fn upcalls(&self) -> Upcalls {
        Upcalls(Arc::new(NamespaceUpcalls(Arc::clone(&self.0))))
    }
}

#[pymethods]
impl CoreNamespace {
    #[new]
    fn new() -> Self {
        Self(Arc::new(NamespaceStore::new()))
    }

    /// The pickled value under `key`, or `None`.
    fn get<'py>(&self, py: Python<'py>, key: &str) -> Option<Bound<'py, PyBytes>> {
        self.0.get(key).map(|value| PyBytes::new(py, &value))
    }

    /// Sets the pickled value under `key`; `ValueError` for a bad key or a full namespace.
    fn set(&self, key: &str, value: Vec<u8>) -> PyResult<()> {
        self.0.set(key, value).map_err(PyValueError::new_err)
    }

    /// Deletes the value under `key`; whether there was one.
    fn delete(&self, key: &str) -> bool {
        self.0.delete(key)
    }

    /// Every key, sorted.
    fn keys(&self) -> Vec<String> {
        self.0.keys()
    }

    /// Every `(key, pickled value)`, sorted by key.
    fn snapshot<'py>(&self, py: Python<'py>) -> Vec<(String, Bound<'py, PyBytes>)> {
        self.0.snapshot().into_iter().map(|(key, value)| (key, PyBytes::new(py, &value))).collect()
    }

    /// Takes the lock for this process, waiting up to `timeout` seconds (`None`: no limit)
    /// without the GIL; whether it got it. Ctrl-C while waiting raises and leaves it free.
    #[pyo3(signature = (timeout=None))]
    fn lock(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<bool> {
        let timeout = match timeout {
            None => None,
            Some(s) if s.is_finite() && s >= 0.0 => Some(std::time::Duration::from_secs_f64(s)),
            Some(s) => return Err(PyValueError::new_err(format!("timeout must be a non-negative number, got {s}"))),
        };
        py.detach(|| self.0.lock_parent(timeout, SLICE, || Python::attach(|py| py.check_signals())))
    }

    /// Gives the lock back; `RuntimeError` if this process does not hold it.
    fn unlock(&self) -> PyResult<()> {
        match self.0.unlock_parent() {
            true => Ok(()),
            false => Err(PyRuntimeError::new_err("this process does not hold the namespace lock")),
        }
    }

    /// Who holds the lock: a worker's pid, `0` for this process, `None` when it is free.
    #[getter]
    fn holder(&self) -> Option<u32> {
        self.0.holder().map(|pid| pid.unwrap_or(0))
    }

    /// The namespace's wire constants the worker's client (`stateful_pool.groups.namespace`)
    /// uses: ops, statuses and the longest key (the frame kinds are in `protocol.rs`).
    #[staticmethod]
    fn protocol() -> Vec<(&'static str, usize)> {
        vec![
            ("GET", wire::GET.into()),
            ("SET", wire::SET.into()),
            ("DELETE", wire::DELETE.into()),
            ("KEYS", wire::KEYS.into()),
            ("SNAPSHOT", wire::SNAPSHOT.into()),
            ("LOCK", wire::LOCK.into()),
            ("UNLOCK", wire::UNLOCK.into()),
            ("OK", wire::OK.into()),
            ("MISSING", wire::MISSING.into()),
            ("TIMED_OUT", wire::TIMED_OUT.into()),
            ("REFUSED", wire::REFUSED.into()),
            ("MAX_KEY_LEN", wire::MAX_KEY_LEN),
        ]
    }
}
