//! The process mode's fast path for blocking calls: the calling thread drives an idle
//! worker's shared-memory lane itself (the payload is copied once, from the caller's buffers
//! into shared memory), with no hop through the supervisor's thread.

use std::sync::Arc;
use std::time::Instant;

use pyo3::exceptions::{PyKeyboardInterrupt, PyValueError};
use pyo3::prelude::*;

use super::kind::{Kind, PyReply};
use crate::process::{FrameKind, LaneError, ProcessWorker, ShmLane};
use crate::python::buffers::Views;
use crate::python::wait::SLICE;
use crate::{Claim, TaskError, WorkerFault};

/// The error for a call larger than the pool's `max_message_size`.
pub(crate) fn too_large(len: usize, max: usize) -> PyErr {
    PyValueError::new_err(format!("the call's message of {len} bytes is over max_message_size ({max} bytes)"))
}

/// Runs the rest of a direct call whose caller was interrupted while waiting for the reply, so
/// the worker's reply is consumed before anyone else drives it, then gives the worker back.
/// It cannot hold the worker for ever against the pool: killing the worker (a kill shutdown, a
/// crash) closes the lane and wakes it at once with the reason.
fn finish_in_background(claim: Claim<ProcessWorker>, lane: Arc<ShmLane>, id: u64) {
    let spawned = std::thread::Builder::new().name("stateful-pool-finish".to_owned()).spawn(move || {
        let fault = match lane.wait_reply(id, &mut || false) {
            Ok(_) => None,
            Err(LaneError::Crashed(fault) | LaneError::Torn(fault)) => Some(fault),
            Err(LaneError::Interrupted { .. } | LaneError::NotSent | LaneError::TooLarge { .. }) => {
                Some(WorkerFault::new("a direct call was abandoned mid-way"))
            }
        };
        claim.finish(fault);
    });
    // No thread: the claim was dropped with the closure, which fails and replaces the worker.
    drop(spawned);
}

/// A `interrupted()` check for the direct lane: at most every [`SLICE`], attaches to the
/// interpreter and runs its signal handlers; a raised exception (Ctrl-C's KeyboardInterrupt)
/// is kept in `raised` and means give up.
fn signal_check(raised: &mut Option<PyErr>) -> impl FnMut() -> bool + '_ {
    let mut last = Instant::now();
    move || {
        if raised.is_some() {
            return true;
        }
        if last.elapsed() < SLICE {
            return false;
        }
        last = Instant::now();
        *raised = Python::attach(|py| py.check_signals()).err();
        raised.is_some()
    }
}

/// Runs a call on this thread through a claimed worker's lane. The thread stays
/// interruptible throughout (sending, waiting, reading a reply); giving up half-way through a
/// frame replaces the worker.
pub(crate) fn call_direct<'py>(
    py: Python<'py>,
    claim: Claim<ProcessWorker>,
    lane: Arc<ShmLane>,
    parts: &[Bound<'py, PyAny>],
) -> PyResult<PyReply<'py>> {
    let views = Views::new(parts)?;
    let slices = views.slices();
    let mut raised = None;
    let result = {
        let mut interrupted = signal_check(&mut raised);
        py.detach(|| lane.call(&slices, &mut interrupted))
    };
    drop(slices);
    drop(views);
    let interrupt = || raised.unwrap_or_else(|| PyKeyboardInterrupt::new_err(()));
    let worker = claim.worker_id();
    match result {
        Ok(mut frame) => {
            let payload = std::mem::take(&mut frame.payload);
            let outcome = match frame.kind {
                FrameKind::Ok => Ok(payload),
                FrameKind::Raised => Err(TaskError::Failed(payload)),
                other => {
                    let fault = WorkerFault::new(format!(
                        "worker broke the protocol: unexpected {other:?} frame in reply to a call; worker killed"
                    ));
                    claim.finish(Some(fault.clone()));
                    return ProcessWorker::task_reply(py, Err(TaskError::WorkerCrashed { worker, fault }));
                }
            };
            claim.finish(None);
            ProcessWorker::task_reply(py, outcome)
        }
        Err(LaneError::Interrupted { id }) => {
            finish_in_background(claim, lane, id);
            Err(interrupt())
        }
        Err(LaneError::NotSent) => {
            claim.finish(None);
            Err(interrupt())
        }
        Err(LaneError::TooLarge { len, max }) => {
            claim.finish(None);
            Err(too_large(len, max))
        }
        Err(LaneError::Torn(fault)) => {
            claim.finish(Some(fault));
            Err(interrupt())
        }
        Err(LaneError::Crashed(fault)) => {
            claim.finish(Some(fault.clone()));
            ProcessWorker::task_reply(py, Err(TaskError::WorkerCrashed { worker, fault }))
        }
    }
}
