//! The PyO3 module `stateful_pool._core`: one engine (the supervisor, with workers in any
//! mode), the worker process's endpoint, the protocol's codes and the limits, for the Python
//! facade in `python/stateful_pool/`. Nothing outside this folder knows about Python.

mod buffers;
mod common;
mod endpoint;
mod engine;
mod errors;
mod limits;
mod namespace;
mod protocol;
mod wait;

use pyo3::prelude::*;

/// The native core of `stateful_pool`.
#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<engine::Engine>()?;
    m.add_class::<engine::CoreTicket>()?;
    m.add_class::<engine::CallOptions>()?;
    m.add_class::<endpoint::CoreEndpoint>()?;
    m.add_class::<buffers::Payload>()?;
    m.add_class::<limits::CoreLimits>()?;
    m.add_class::<limits::CoreLease>()?;
    m.add_class::<limits::CoreGrant>()?;
    m.add_class::<namespace::CoreNamespace>()?;
    protocol::register(m)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
