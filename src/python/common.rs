//! Helpers of the engine (`engine/`): option parsing, submitting with interruptible
//! backpressure, and the per-worker stats dicts.

use std::time::{Duration, Instant};

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use super::errors::submit_error;
use super::wait::{deadline, SLICE};
use crate::job::{ReplyFn, TaskOptions, Ticket};
use crate::{Backpressure, RestartPolicy, ShutdownMode, SubmitError, Supervisor, Workable, WorkerInfo};

pub(crate) fn parse_restart(policy: &str) -> PyResult<RestartPolicy> {
    match policy {
        "never" => Ok(RestartPolicy::Never),
        "on-failure" | "on_failure" => Ok(RestartPolicy::OnFailure),
        "always" => Ok(RestartPolicy::Always),
        other => {
            Err(PyValueError::new_err(format!("restart must be 'never', 'on-failure' or 'always', got {other:?}")))
        }
    }
}

pub(crate) fn parse_shutdown(mode: &str) -> PyResult<ShutdownMode> {
    match mode {
        "graceful" => Ok(ShutdownMode::Graceful),
        "cancel" => Ok(ShutdownMode::CancelPending),
        "kill" => Ok(ShutdownMode::Kill),
        other => Err(PyValueError::new_err(format!("unknown shutdown mode {other:?}"))),
    }
}

/// An optional positive number of seconds.
pub(crate) fn seconds(name: &str, value: Option<f64>) -> PyResult<Option<Duration>> {
    value
        .map(|s| {
            if s.is_finite() && s > 0.0 {
                Ok(Duration::from_secs_f64(s))
            } else {
                Err(PyValueError::new_err(format!("{name} must be a positive number of seconds, got {s}")))
            }
        })
        .transpose()
}

/// Submits, waiting in GIL-free slices while the queue is full, up to `submit_timeout`.
pub(crate) fn submit_blocking<W: Workable>(
    py: Python<'_>,
    supervisor: &Supervisor<W>,
    task: W::Task,
    options: TaskOptions,
    submit_timeout: Option<f64>,
    mut reply: impl FnMut() -> ReplyFn<W>,
) -> PyResult<Ticket>
where
    W::Task: pyo3::marker::Ungil,
{
    let until = deadline(submit_timeout)?;
    // First without releasing the GIL: a push onto a queue with room takes well under a
    // microsecond, while giving the GIL away hands it to the completion thread and costs two
    // context switches per submitted task.
    let mut task = match supervisor.submit_with(task, options, reply(), Backpressure::Fail) {
        Ok(ticket) => return Ok(ticket),
        Err(SubmitError::Full(back)) => back,
        Err(e) => return Err(submit_error(py, &e)),
    };
    loop {
        let slice = until.map_or(SLICE, |u| u.saturating_duration_since(Instant::now()).min(SLICE));
        let backpressure = if slice.is_zero() { Backpressure::Fail } else { Backpressure::Block(slice) };
        let r = reply();
        match py.detach(|| supervisor.submit_with(task, options, r, backpressure)) {
            Ok(ticket) => return Ok(ticket),
            Err(SubmitError::Full(back)) if until.is_none_or(|u| Instant::now() < u) => {
                py.check_signals()?;
                task = back;
            }
            Err(e) => return Err(submit_error(py, &e)),
        }
    }
}

/// One dict per worker: id, state, pid, restarts, tasks_done, tasks_failed, last_error,
/// dispatched, batches, batched_tasks, health_failures.
pub(crate) fn worker_dicts<'py>(py: Python<'py>, workers: Vec<WorkerInfo>) -> PyResult<Bound<'py, PyList>> {
    let list = PyList::empty(py);
    for w in workers {
        let d = PyDict::new(py);
        d.set_item("id", w.id)?;
        d.set_item("state", w.state.as_str())?;
        d.set_item("pid", w.pid)?;
        d.set_item("restarts", w.restarts)?;
        d.set_item("tasks_done", w.tasks_done)?;
        d.set_item("tasks_failed", w.tasks_failed)?;
        d.set_item("last_error", w.last_error)?;
        d.set_item("dispatched", w.dispatched)?;
        d.set_item("batches", w.batches)?;
        d.set_item("batched_tasks", w.batched_tasks)?;
        d.set_item("health_failures", w.health_failures)?;
        list.append(d)?;
    }
    Ok(list)
}
