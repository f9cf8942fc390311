//! Bytes crossing the Python boundary without extra copies: `gather` copies a list of Python
//! buffers (pickle body plus protocol-5 out-of-band buffers) once into a Rust vector, and
//! `Payload` hands a Rust vector to Python as a writable buffer, zero-copy.

use std::os::raw::c_int;

use pyo3::buffer::PyUntypedBuffer;
use pyo3::exceptions::{PyBufferError, PyTypeError};
use pyo3::ffi;
use pyo3::prelude::*;

/// Borrowed views of Python buffers, valid while the `PyUntypedBuffer`s live.
pub(crate) struct Views {
    buffers: Vec<PyUntypedBuffer>,
}

impl Views {
    /// Requests a C-contiguous buffer from every object.
    pub(crate) fn new(parts: &[Bound<'_, PyAny>]) -> PyResult<Self> {
        let buffers = parts
            .iter()
            .map(|p| {
                let b = PyUntypedBuffer::get(p)?;
                if b.is_c_contiguous() {
                    Ok(b)
                } else {
                    Err(PyBufferError::new_err("payload buffers must be C-contiguous"))
                }
            })
            .collect::<PyResult<Vec<_>>>()?;
        Ok(Self { buffers })
    }

    /// The buffers as byte slices.
    pub(crate) fn slices(&self) -> Vec<&[u8]> {
        self.buffers
            .iter()
            .map(|b| {
                // SAFETY: the buffer is C-contiguous, `len_bytes` long, and the exporter keeps it
                // alive and unmoved until the PyUntypedBuffer (owned by self) is released.
                unsafe { std::slice::from_raw_parts(b.buf_ptr().cast::<u8>(), b.len_bytes()) }
            })
            .collect()
    }
}

/// Copies `parts` into one vector, releasing the GIL for the copy.
pub(crate) fn gather(py: Python<'_>, parts: &[Bound<'_, PyAny>]) -> PyResult<Vec<u8>> {
    let views = Views::new(parts)?;
    let slices = views.slices();
    Ok(py.detach(|| slices.concat()))
}

/// A reply payload owned by Rust, readable (and writable) from Python through the buffer
/// protocol, so `pickle.loads(..., buffers=...)` rebuilds arrays on it without copying.
#[pyclass(module = "stateful_pool._core", frozen)]
pub(crate) struct Payload {
    ptr: *mut u8,
    len: usize,
    capacity: usize,
}

// SAFETY: Payload exclusively owns its heap block; Python code may only touch it through
// buffer views, which the GIL serialises.
unsafe impl Send for Payload {}
// SAFETY: as above.
unsafe impl Sync for Payload {}

impl Payload {
    pub(crate) fn new(bytes: Vec<u8>) -> Self {
        let mut bytes = std::mem::ManuallyDrop::new(bytes);
        Self { ptr: bytes.as_mut_ptr(), len: bytes.len(), capacity: bytes.capacity() }
    }
}

impl Drop for Payload {
    fn drop(&mut self) {
        // SAFETY: ptr/len/capacity are the raw parts of the Vec given to `new`, not used since;
        // Python keeps this object alive while any buffer view of it exists.
        let bytes = unsafe { Vec::from_raw_parts(self.ptr, self.len, self.capacity) };
        crate::process::recycle::recycle(bytes);
    }
}

#[pymethods]
impl Payload {
    fn __len__(&self) -> usize {
        self.len
    }

    /// # Safety
    /// Called by the interpreter with a valid `view`.
    unsafe fn __getbuffer__(slf: Bound<'_, Self>, view: *mut ffi::Py_buffer, flags: c_int) -> PyResult<()> {
        if view.is_null() {
            return Err(PyTypeError::new_err("view is null"));
        }
        let this = slf.get();
        let len = isize::try_from(this.len).map_err(|_| PyBufferError::new_err("payload too large"))?;
        // SAFETY: `view` is valid (checked non-null, provided by the interpreter); the memory
        // block stays alive as long as `slf`, which the view references.
        let rc = unsafe { ffi::PyBuffer_FillInfo(view, slf.as_ptr(), this.ptr.cast(), len, 0, flags) };
        if rc == -1 {
            return Err(PyErr::fetch(slf.py()));
        }
        Ok(())
    }

    /// # Safety
    /// Called by the interpreter; nothing to release (the block lives as long as `self`).
    unsafe fn __releasebuffer__(&self, _view: *mut ffi::Py_buffer) {}
}
