//! `CoreEndpoint`: the worker process's end of the protocol, for `stateful_pool._worker`.

use pyo3::exceptions::{PyConnectionError, PyValueError};
use pyo3::prelude::*;

use super::buffers::{Payload, Views};
use crate::process::{FrameKind, WorkerEndpoint};

/// The frames channel of a worker process, over the descriptors its supervisor passed.
/// Sendable so a task's other threads can make upcalls (see `_upcall.py`, which serialises them).
#[pyclass(module = "stateful_pool._core")]
pub(crate) struct CoreEndpoint(WorkerEndpoint);

#[pymethods]
impl CoreEndpoint {
    #[new]
    fn new() -> PyResult<Self> {
        WorkerEndpoint::from_inherited()
            .map(Self)
            .map_err(|e| PyConnectionError::new_err(format!("not started by a pool supervisor: {e}")))
    }

    /// The next frame as `(kind, task_id, payload)`, or `None` when the supervisor is gone.
    /// Large payloads land in a recycled buffer (see `process::recycle`).
    fn recv<'py>(&mut self, py: Python<'py>) -> PyResult<Option<(u8, u64, Bound<'py, Payload>)>> {
        let header = py.detach(|| self.0.recv_header()).map_err(|e| PyConnectionError::new_err(e.to_string()))?;
        let Some((kind, id, len)) = header else { return Ok(None) };
        let read = py.detach(|| {
            let mut payload = crate::process::recycle::buffer(len);
            self.0.read_exact(&mut payload).map(|()| payload)
        });
        match read {
            Ok(payload) => Ok(Some((kind as u8, id, Bound::new(py, Payload::new(payload))?))),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(None),
            Err(e) => Err(PyConnectionError::new_err(e.to_string())),
        }
    }

    /// Sends a frame whose payload is the concatenation of the buffers in `parts`.
    fn send(&mut self, py: Python<'_>, kind: u8, task_id: u64, parts: Vec<Bound<'_, PyAny>>) -> PyResult<()> {
        let kind =
            FrameKind::from_u8(kind).ok_or_else(|| PyValueError::new_err(format!("unknown frame kind {kind}")))?;
        let views = Views::new(&parts)?;
        let slices = views.slices();
        py.detach(|| self.0.send(kind, task_id, &slices)).map_err(|e| match e.kind() {
            // Too large to send: nothing went out, so the worker can report it as the call's error.
            std::io::ErrorKind::InvalidInput => PyValueError::new_err(e.to_string()),
            _ => PyConnectionError::new_err(e.to_string()),
        })
    }
}
