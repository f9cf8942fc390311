//! Where one submitted task's outcome waits, and the ticket Python futures hold on it.
//!
//! The outcome goes to whichever comes first: the thread blocked in that future's `result()`
//! (it then converts its own reply: one wake-up instead of two hand-offs), or the pool's
//! completion thread (for futures nobody waits on directly).

use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use pyo3::prelude::*;

use super::kind::{Kind, PyReply};
use crate::job::{Outcome, Ticket};
use crate::python::wait::{deadline, SLICE};

/// One task's outcome, waiting to be taken once.
pub(crate) struct ReplySlot<W: Kind> {
    state: Mutex<SlotState<W>>,
    ready: Condvar,
}

enum SlotState<W: Kind> {
    Waiting,
    Ready(Outcome<W>),
    Taken,
}

impl<W: Kind> Default for ReplySlot<W> {
    fn default() -> Self {
        Self { state: Mutex::new(SlotState::Waiting), ready: Condvar::new() }
    }
}

impl<W: Kind> ReplySlot<W> {
    pub(crate) fn fill(&self, outcome: Outcome<W>) {
        *self.state.lock().unwrap_or_else(PoisonError::into_inner) = SlotState::Ready(outcome);
        self.ready.notify_all();
    }

    /// Takes the outcome if it is there and nobody took it.
    pub(crate) fn take(&self) -> Option<Outcome<W>> {
        Self::take_from(&mut self.state.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn take_from(state: &mut SlotState<W>) -> Option<Outcome<W>> {
        match std::mem::replace(state, SlotState::Taken) {
            SlotState::Ready(outcome) => Some(outcome),
            SlotState::Waiting => {
                *state = SlotState::Waiting;
                None
            }
            SlotState::Taken => None,
        }
    }

    /// Waits up to `timeout` for the outcome; `None` when it timed out, someone else took it,
    /// or `stop()` says nobody will fill it (its task was cancelled).
    fn wait_take(&self, timeout: Duration, stop: &(dyn Fn() -> bool + Sync)) -> Option<Outcome<W>> {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let (mut state, _) = self
            .ready
            .wait_timeout_while(state, timeout, |s| matches!(s, SlotState::Waiting) && !stop())
            .unwrap_or_else(PoisonError::into_inner);
        Self::take_from(&mut state)
    }
}

/// A reply slot of any worker kind, as the kind-less [`CoreTicket`] sees it.
trait Claimable: Send + Sync {
    /// Waits (detached from the interpreter) up to `timeout` and converts the outcome.
    fn claim_slice<'py>(
        &self,
        py: Python<'py>,
        timeout: Duration,
        stop: &(dyn Fn() -> bool + Sync),
    ) -> Option<PyResult<PyReply<'py>>>;
    /// Wakes the threads waiting in `claim_slice`, to check their `stop` condition.
    fn wake(&self);
    fn is_taken(&self) -> bool;
}

impl<W: Kind> Claimable for ReplySlot<W> {
    fn claim_slice<'py>(
        &self,
        py: Python<'py>,
        timeout: Duration,
        stop: &(dyn Fn() -> bool + Sync),
    ) -> Option<PyResult<PyReply<'py>>> {
        py.detach(|| self.wait_take(timeout, stop)).map(|outcome| W::task_reply(py, outcome))
    }

    fn wake(&self) {
        // Taking the lock orders this after a waiter's check of `stop`: it cannot miss it.
        drop(self.state.lock().unwrap_or_else(PoisonError::into_inner));
        self.ready.notify_all();
    }

    fn is_taken(&self) -> bool {
        matches!(*self.state.lock().unwrap_or_else(PoisonError::into_inner), SlotState::Taken)
    }
}

/// The handle Python futures keep to cancel their task and to claim its reply.
#[pyclass(module = "stateful_pool._core", frozen)]
pub(crate) struct CoreTicket {
    ticket: Ticket,
    slot: Arc<dyn Claimable>,
}

impl CoreTicket {
    pub(crate) fn new<W: Kind>(ticket: Ticket, slot: Arc<ReplySlot<W>>) -> Self {
        Self { ticket, slot }
    }
}

#[pymethods]
impl CoreTicket {
    /// Cancels the task if it has not started, waking a thread blocked in `claim` (a cancelled
    /// task never gets a reply: without the wake-up it would wait for its timeout).
    fn cancel(&self) -> bool {
        let cancelled = self.ticket.cancel();
        if cancelled {
            self.slot.wake();
        }
        cancelled
    }

    /// Cancels the task if queued, else kills (processes, threads, Ray actors) or cancels
    /// (asyncio) the call running it.
    fn cancel_or_kill(&self) -> bool {
        let done = self.ticket.cancel_or_kill();
        if self.ticket.cancelled() {
            self.slot.wake();
        }
        done
    }

    /// Whether a worker has picked the task up.
    #[getter]
    fn started(&self) -> bool {
        self.ticket.started()
    }

    /// Waits (without the GIL, interruptibly) up to `timeout` seconds (`None`: until it comes)
    /// for the task's outcome and takes it: `(status, value)`, or `None` on timeout or when the
    /// completion thread took it first (the future is then completed by that thread).
    #[pyo3(signature = (timeout=None))]
    fn claim<'py>(&self, py: Python<'py>, timeout: Option<f64>) -> PyResult<Option<PyReply<'py>>> {
        let until = deadline(timeout)?;
        loop {
            let slice = until.map_or(SLICE, |u| u.saturating_duration_since(Instant::now()).min(SLICE));
            if let Some(reply) = self.slot.claim_slice(py, slice, &|| self.ticket.cancelled()) {
                return reply.map(Some);
            }
            if self.slot.is_taken() || self.ticket.cancelled() || until.is_some_and(|u| Instant::now() >= u) {
                return Ok(None);
            }
            py.check_signals()?;
        }
    }
}
