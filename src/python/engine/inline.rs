//! [`InlineQueue`]: the Python work of `mode="sync"`, run by the threads that call the pool.
//!
//! A sync worker has no thread of its own. Its host's setup and each call the supervisor sends
//! it are queued here as work items; a caller waiting for an outcome (`call`, `spawn`, or a
//! sync `submit`, which returns only once its future is done) runs them on its own thread
//! while it waits, and sleeps without the GIL when there are none. So breakpoints and
//! profilers see worker code in the calling thread, and everything else (queueing, balancing,
//! restarts, timeouts, stats) is the supervisor's, as in every other mode.

use crossbeam_channel::{Receiver, Sender};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;

use crate::python::wait::SLICE;

/// Python code a caller thread runs for a sync worker.
pub(crate) type InlineWork = Box<dyn FnOnce(Python<'_>) -> PyResult<()> + Send>;

/// The work items of one sync engine.
pub(crate) struct InlineQueue {
    tx: Sender<InlineWork>,
    rx: Receiver<InlineWork>,
}

/// What woke a pumping caller.
enum Woken<T> {
    Done(Result<T, crossbeam_channel::RecvError>),
    Work(InlineWork),
    Slice,
}

impl InlineQueue {
    pub(crate) fn new() -> Self {
        let (tx, rx) = crossbeam_channel::unbounded();
        Self { tx, rx }
    }

    /// Queues `work` for the next caller that waits.
    pub(crate) fn push(&self, work: InlineWork) {
        // Cannot fail: the queue holds its own receiver.
        let _ = self.tx.send(work);
    }

    /// Runs queued work on this thread until `rx` delivers; interruptible.
    pub(crate) fn pump_until<T: Send>(&self, py: Python<'_>, rx: &Receiver<T>) -> PyResult<T> {
        loop {
            let woken = py.detach(|| {
                crossbeam_channel::select! {
                    recv(rx) -> done => Woken::Done(done),
                    recv(self.rx) -> work => work.map_or(Woken::Slice, Woken::Work),
                    default(SLICE) => Woken::Slice,
                }
            });
            match woken {
                Woken::Done(Ok(value)) => return Ok(value),
                Woken::Done(Err(_)) => {
                    return Err(PyRuntimeError::new_err("the pool dropped a reply (internal error)"))
                }
                Woken::Work(work) => work(py)?,
                Woken::Slice => py.check_signals()?,
            }
        }
    }

    /// Runs the work queued now, without waiting for more.
    pub(crate) fn pump_pending(&self, py: Python<'_>) -> PyResult<()> {
        while let Ok(work) = self.rx.try_recv() {
            work(py)?;
        }
        Ok(())
    }
}
