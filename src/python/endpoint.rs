//! `CoreEndpoint`: the worker process's end of the protocol, for `stateful_pool._worker`.

use pyo3::exceptions::{PyConnectionError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyByteArray;

use super::buffers::Views;
use crate::process::{FrameKind, WorkerEndpoint};

/// The frames channel of a worker process, over the descriptors its supervisor passed.
#[pyclass(module = "stateful_pool._core", unsendable)]
pub(crate) struct CoreEndpoint(WorkerEndpoint);

/// A raw destination that may cross `detach` (the bytearray it points into is ours alone).
struct Destination(*mut u8, usize);
// SAFETY: the pointer targets a bytearray created by `recv`, referenced by nothing else until
// `recv` returns it, and not resized meanwhile.
unsafe impl Send for Destination {}

/// A zeroed bytearray of `len` bytes, backed by huge pages when large (see
/// `shm::advise_huge_pages`); `PyByteArray::new_with` would zero it before we could advise.
fn new_bytearray(py: Python<'_>, len: usize) -> PyResult<Bound<'_, PyByteArray>> {
    let size = pyo3::ffi::Py_ssize_t::try_from(len).map_err(|_| PyValueError::new_err("payload too large"))?;
    // SAFETY: a NULL source asks CPython for an uninitialised buffer of `size` bytes; the result
    // is checked for NULL (then the Python error is raised) before use.
    let raw = unsafe { pyo3::ffi::PyByteArray_FromStringAndSize(std::ptr::null(), size) };
    if raw.is_null() {
        return Err(PyErr::fetch(py));
    }
    // SAFETY: `raw` is a new, owned reference to a bytearray.
    let array: Bound<'_, PyByteArray> = unsafe { Bound::from_owned_ptr(py, raw).cast_into_unchecked() };
    let data = array.data();
    crate::shm::advise_huge_pages_raw(data, len);
    // SAFETY: the buffer is `len` writable bytes, only ours; zeroed before anything reads it.
    unsafe { std::ptr::write_bytes(data, 0, len) };
    Ok(array)
}

#[pymethods]
impl CoreEndpoint {
    #[new]
    fn new() -> PyResult<Self> {
        WorkerEndpoint::from_inherited()
            .map(Self)
            .map_err(|e| PyConnectionError::new_err(format!("not started by a pool supervisor: {e}")))
    }

    /// The next frame as `(kind, task_id, payload)`, or `None` when the supervisor is gone.
    fn recv<'py>(&mut self, py: Python<'py>) -> PyResult<Option<(u8, u64, Bound<'py, PyByteArray>)>> {
        let header = py.detach(|| self.0.recv_header()).map_err(|e| PyConnectionError::new_err(e.to_string()))?;
        let Some((kind, id, len)) = header else { return Ok(None) };
        let payload = new_bytearray(py, len)?;
        let dst = Destination(payload.data(), len);
        let read = py.detach(move || {
            let dst = dst;
            // SAFETY: see `Destination`.
            let slice = unsafe { std::slice::from_raw_parts_mut(dst.0, dst.1) };
            self.0.read_exact(slice)
        });
        match read {
            Ok(()) => Ok(Some((kind as u8, id, payload))),
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
        py.detach(|| self.0.send(kind, task_id, &slices)).map_err(|e| PyConnectionError::new_err(e.to_string()))
    }
}
