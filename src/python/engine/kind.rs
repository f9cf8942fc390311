//! [`Kind`]: what the engine needs from a worker kind beyond [`Workable`]: how its outcomes
//! and start results cross to Python as `(status, value)` replies.

use pyo3::prelude::*;

use crate::error::StartError;
use crate::job::Outcome;
use crate::Workable;

/// A reply as Python sees it: a status code (`protocol::STATUS_*`) and its value.
pub(crate) type PyReply<'py> = (u8, Bound<'py, PyAny>);

/// The outcome of starting one worker: its id and what its setup returned, or why not.
pub(crate) type StartOutcome<W> = Result<(u64, <W as Kind>::Ready), StartError<<W as Kind>::Failure>>;

/// A worker kind an [`super::Engine`] can drive from Python.
pub(crate) trait Kind: Workable<Task: Clone + pyo3::marker::Ungil> {
    /// What a successful setup hands back.
    type Ready: Send + 'static;
    /// Why a setup failed.
    type Failure: Send + 'static;

    /// `(status, value)` for a task's outcome.
    fn task_reply(py: Python<'_>, outcome: Outcome<Self>) -> PyResult<PyReply<'_>>;

    /// `(status, value)` for a worker start's outcome.
    fn start_reply(py: Python<'_>, outcome: StartOutcome<Self>) -> PyResult<PyReply<'_>>;
}
