//! The one bridge from core errors to Python exceptions. The exception classes live in
//! `stateful_pool.errors` so Python code can subclass and catch them naturally.

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use super::buffers::Payload;
use crate::error::{StartError, SubmitError, TaskError};
use crate::process::SpawnFailure;

/// Status codes of a reply handed to Python, see `stateful_pool/_pool.py`.
pub(crate) const STATUS_OK: u8 = 0;
pub(crate) const STATUS_RAISED: u8 = 1;
pub(crate) const STATUS_ERROR: u8 = 2;

fn error_class<'py>(py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyAny>> {
    py.import("stateful_pool.errors")?.getattr(name)
}

fn new_error<'py>(py: Python<'py>, name: &str, args: impl pyo3::call::PyCallArgs<'py>) -> PyResult<Bound<'py, PyAny>> {
    error_class(py, name)?.call1(args)
}

/// A submission refused by the core, as the matching Python exception.
pub(crate) fn submit_error<T>(py: Python<'_>, error: &SubmitError<T>) -> PyErr {
    let raised = match error {
        SubmitError::Full(_) => {
            py.import("queue").and_then(|m| m.getattr("Full")).and_then(|c| c.call1(("task queue is full",)))
        }
        SubmitError::ShutDown(_) => new_error(py, "PoolShutDownError", ("cannot schedule new tasks after shutdown",)),
        SubmitError::NoWorkers(_) => new_error(py, "NoWorkersError", ("no worker is running: call spawn() first",)),
        SubmitError::UnknownWorker(_) => new_error(py, "NoWorkersError", ("that worker is not running",)),
    };
    match raised {
        Ok(exc) => PyErr::from_value(exc),
        Err(e) => e,
    }
}

/// `(status, value)` for a task outcome: the result bytes, the raised payload, or an exception.
pub(crate) fn task_outcome<'py>(
    py: Python<'py>,
    outcome: Result<Vec<u8>, TaskError<Vec<u8>>>,
) -> PyResult<(u8, Bound<'py, PyAny>)> {
    let exc = match outcome {
        Ok(bytes) => return Ok((STATUS_OK, Bound::new(py, Payload::new(bytes))?.into_any())),
        Err(TaskError::Failed(raised)) => return Ok((STATUS_RAISED, PyBytes::new(py, &raised).into_any())),
        Err(TaskError::WorkerCrashed { worker, fault }) => {
            new_error(py, "WorkerCrashedError", (fault.to_string(), worker, fault.exit_code, fault.signal))?
        }
        Err(TaskError::TimedOut(d)) => new_error(
            py,
            "TaskTimeoutError",
            (format!("task timed out after {:.3} s; its worker was replaced", d.as_secs_f64()),),
        )?,
        Err(TaskError::Cancelled) => py.import("concurrent.futures")?.getattr("CancelledError")?.call0()?,
        Err(TaskError::ShutDown) => new_error(py, "PoolShutDownError", ("pool shut down before the task ran",))?,
        Err(TaskError::NoWorkers) => {
            new_error(py, "NoWorkersError", ("no live worker can run the task: every worker failed or stopped",))?
        }
    };
    Ok((STATUS_ERROR, exc))
}

/// `(status, value)` for a worker start: the setup's return bytes, its raised payload, or an exception.
pub(crate) fn start_outcome<'py>(
    py: Python<'py>,
    outcome: Result<(u64, Vec<u8>), StartError<SpawnFailure>>,
) -> PyResult<(u8, Bound<'py, PyAny>)> {
    let exc = match outcome {
        Ok((_, bytes)) => return Ok((STATUS_OK, Bound::new(py, Payload::new(bytes))?.into_any())),
        Err(StartError::Failed(SpawnFailure::Raised(raised))) => {
            return Ok((STATUS_RAISED, PyBytes::new(py, &raised).into_any()));
        }
        Err(StartError::Failed(SpawnFailure::Crashed(fault))) => {
            new_error(py, "WorkerCrashedError", (fault.to_string(), None::<u64>, fault.exit_code, fault.signal))?
        }
        Err(StartError::Failed(SpawnFailure::Io(e))) => {
            PyRuntimeError::new_err(format!("cannot start worker process: {e}"))
                .into_value(py)
                .into_bound(py)
                .into_any()
        }
        Err(StartError::ShutDown) => {
            new_error(py, "PoolShutDownError", ("pool shut down while the worker was starting",))?
        }
    };
    Ok((STATUS_ERROR, exc))
}
