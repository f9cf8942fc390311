//! The one bridge from core errors to Python exceptions. The exception classes live in
//! `stateful_pool.errors` so Python code can subclass and catch them naturally.

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use super::buffers::Payload;
use super::protocol::{STATUS_ERROR, STATUS_OBJECT, STATUS_OK, STATUS_RAISED};
use crate::error::{NoWorkerReason, StartError, SubmitError, TaskError};
use crate::process::SpawnFailure;

/// Replies up to this size without out-of-band buffers are unpickled here, in the same call
/// that hands them over: it spares Python a memoryview and a header parse for every small
/// result (the many-tiny-tasks case).
const SMALL_REPLY: usize = 16 * 1024;
/// The header of a payload without out-of-band buffers: buffer count 0 (u32), body length (u64).
const PLAIN_HEADER: usize = 12;

/// `(status, value)` for a successful reply: the object itself when it is small and plain and
/// unpickles cleanly, else the payload for Python to decode (and raise from, if it must).
fn ok_reply(py: Python<'_>, bytes: Vec<u8>) -> PyResult<(u8, Bound<'_, PyAny>)> {
    static LOADS: pyo3::sync::PyOnceLock<Py<PyAny>> = pyo3::sync::PyOnceLock::new();
    if bytes.len() <= SMALL_REPLY && bytes.len() >= PLAIN_HEADER && bytes[..4] == [0; 4] {
        let loads = LOADS.get_or_try_init(py, || py.import("pickle")?.getattr("loads").map(Bound::unbind))?;
        if let Ok(value) = loads.bind(py).call1((PyBytes::new(py, &bytes[PLAIN_HEADER..]),)) {
            return Ok((STATUS_OBJECT, value));
        }
    }
    Ok((STATUS_OK, Bound::new(py, Payload::new(bytes))?.into_any()))
}

fn error_class<'py>(py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyAny>> {
    py.import("stateful_pool.errors")?.getattr(name)
}

fn new_error<'py>(py: Python<'py>, name: &str, args: impl pyo3::call::PyCallArgs<'py>) -> PyResult<Bound<'py, PyAny>> {
    error_class(py, name)?.call1(args)
}

/// The message of a `NoWorkersError`: what to do when no worker was started, else which
/// workers left and why (e.g. "worker 0 gave up: crashed in spawn 6 times in 60 s; last
/// error: ...").
fn no_workers_message(reason: &NoWorkerReason) -> String {
    if reason.none_started() {
        "no worker is running: call spawn() first".to_owned()
    } else {
        format!("no worker can run this task: {reason}")
    }
}

/// A submission refused by the core, as the matching Python exception.
pub(crate) fn submit_error<T>(py: Python<'_>, error: &SubmitError<T>) -> PyErr {
    let raised = match error {
        SubmitError::Full(_) => {
            py.import("queue").and_then(|m| m.getattr("Full")).and_then(|c| c.call1(("task queue is full",)))
        }
        SubmitError::ShutDown(_) => new_error(py, "PoolShutDownError", ("cannot schedule new tasks after shutdown",)),
        SubmitError::NoWorkers(_, reason) => new_error(py, "NoWorkersError", (no_workers_message(reason),)),
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
        Ok(bytes) => return ok_reply(py, bytes),
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
        Err(TaskError::NoWorkers(reason)) => new_error(py, "NoWorkersError", (no_workers_message(&reason),))?,
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
