//! The PyO3 module `stateful_pool._core`: the supervisor with process workers, for the
//! Python facade in `python/stateful_pool/`. Nothing outside this folder knows about Python.

mod buffers;
mod common;
mod endpoint;
mod errors;
mod inprocess;
mod limits;
mod namespace;
mod pool;
mod wait;

use pyo3::prelude::*;

/// The native core of `stateful_pool`.
#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<pool::CorePool>()?;
    m.add_class::<pool::CoreTicket>()?;
    m.add_class::<endpoint::CoreEndpoint>()?;
    m.add_class::<buffers::Payload>()?;
    m.add_class::<inprocess::CoreThreadPool>()?;
    m.add_class::<limits::CoreLimits>()?;
    m.add_class::<limits::CoreLease>()?;
    m.add_class::<namespace::CoreNamespace>()?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
