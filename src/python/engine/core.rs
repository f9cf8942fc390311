//! [`EngineCore`]: everything an engine does the same way for every worker kind, written once:
//! starting workers, submitting and waiting for calls, completions, broadcasts, shutdown and
//! stats. The [`super::Engine`] pyclass holds one of these per worker kind.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use pyo3::prelude::*;
use pyo3::types::PyList;

use super::inline::InlineQueue;
use super::kind::{Kind, PyReply, StartOutcome};
use super::slot::{CoreTicket, ReplySlot};
use crate::job::{ReplyFn, TaskOptions};
use crate::python::common::{parse_shutdown, submit_blocking, worker_dicts};
use crate::python::wait::{recv_interruptible, SLICE};
use crate::Supervisor;

/// Receives one worker start's outcome.
pub(crate) type ReportFn<W> = Box<dyn FnOnce(StartOutcome<W>) + Send>;

/// One finished task or worker start, waiting for the Python completion thread.
enum Done<W: Kind> {
    Task(Arc<ReplySlot<W>>),
    Start(StartOutcome<W>),
}

/// A supervisor of `W` workers and the channels that bring their outcomes to Python.
pub(crate) struct EngineCore<W: Kind> {
    pub(crate) supervisor: Supervisor<W>,
    done_tx: Sender<(u64, Done<W>)>,
    done_rx: Receiver<(u64, Done<W>)>,
    /// Sync mode: the worker code callers run while they wait (else `None`).
    inline: Option<Arc<InlineQueue>>,
}

impl<W: Kind> EngineCore<W> {
    pub(crate) fn new(supervisor: Supervisor<W>, inline: Option<Arc<InlineQueue>>) -> Self {
        let (done_tx, done_rx) = crossbeam_channel::unbounded();
        Self { supervisor, done_tx, done_rx, inline }
    }

    /// Whether calls are run inline by their callers (sync mode).
    pub(crate) fn is_inline(&self) -> bool {
        self.inline.is_some()
    }

    /// Waits for `rx`, running sync workers' calls meanwhile (sync mode), interruptibly.
    fn wait<T: Send>(&self, py: Python<'_>, rx: &Receiver<T>) -> PyResult<T> {
        match &self.inline {
            Some(inline) => inline.pump_until(py, rx),
            None => recv_interruptible(py, rx),
        }
    }

    /// In sync mode, a channel whose message says a reply is in: the caller pumps until it is.
    fn inline_signal(&self) -> Option<(Sender<()>, Receiver<()>)> {
        self.inline.as_ref().map(|_| crossbeam_channel::bounded(1))
    }

    /// Starts a worker through `start` and waits for its setup: `(status, value)`.
    pub(crate) fn spawn<'py>(&self, py: Python<'py>, start: impl FnOnce(ReportFn<W>)) -> PyResult<PyReply<'py>> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        start(Box::new(move |outcome| {
            let _ = tx.send(outcome);
        }));
        W::start_reply(py, self.wait(py, &rx)?)
    }

    /// Starts a worker; its outcome arrives through `take_completions` under `token` (in sync
    /// mode, before this returns).
    pub(crate) fn submit_spawn(&self, py: Python<'_>, token: u64, start: impl FnOnce(ReportFn<W>)) -> PyResult<()> {
        let tx = self.done_tx.clone();
        let signal = self.inline_signal();
        let notify = signal.as_ref().map(|(tx, _)| tx.clone());
        start(Box::new(move |outcome| {
            let _ = tx.send((token, Done::Start(outcome)));
            notify.map(|n| n.send(()));
        }));
        match signal {
            Some((_, rx)) => self.wait(py, &rx),
            None => Ok(()),
        }
    }

    /// Runs one task and waits for it: `(status, value)`.
    pub(crate) fn call<'py>(
        &self,
        py: Python<'py>,
        task: W::Task,
        options: TaskOptions,
        submit_timeout: Option<f64>,
    ) -> PyResult<PyReply<'py>> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let reply = || -> ReplyFn<W> {
            let tx = tx.clone();
            Box::new(move |outcome| {
                let _ = tx.send(outcome);
            })
        };
        let ticket = submit_blocking(py, &self.supervisor, task, options, submit_timeout, reply)?;
        match self.wait(py, &rx) {
            Ok(outcome) => W::task_reply(py, outcome),
            Err(interrupted) => {
                ticket.cancel();
                Err(interrupted)
            }
        }
    }

    fn task_reply(&self, token: u64, slot: &Arc<ReplySlot<W>>, notify: Option<Sender<()>>) -> ReplyFn<W> {
        let tx = self.done_tx.clone();
        let slot = Arc::clone(slot);
        Box::new(move |outcome| {
            slot.fill(outcome);
            let _ = tx.send((token, Done::Task(slot)));
            if let Some(notify) = notify {
                let _ = notify.send(());
            }
        })
    }

    /// Queues one task; its outcome arrives through `take_completions` under `token` (in sync
    /// mode, before this returns).
    pub(crate) fn submit(
        &self,
        py: Python<'_>,
        task: W::Task,
        token: u64,
        options: TaskOptions,
        submit_timeout: Option<f64>,
    ) -> PyResult<CoreTicket> {
        let slot = Arc::new(ReplySlot::default());
        let signal = self.inline_signal();
        let reply = || self.task_reply(token, &slot, signal.as_ref().map(|(tx, _)| tx.clone()));
        let ticket = submit_blocking(py, &self.supervisor, task, options, submit_timeout, reply)?;
        if let Some((_, rx)) = &signal {
            if let Err(interrupted) = self.wait(py, rx) {
                ticket.cancel();
                return Err(interrupted);
            }
        }
        Ok(CoreTicket::new(ticket, slot))
    }

    /// Runs `task` once on every live worker: a list of `(worker_id, status, value)`.
    pub(crate) fn broadcast<'py>(
        &self,
        py: Python<'py>,
        task: &W::Task,
    ) -> PyResult<Vec<(u64, u8, Bound<'py, PyAny>)>> {
        let workers = self.supervisor.live_worker_ids();
        let mut waits = Vec::with_capacity(workers.len());
        for worker in workers {
            let (tx, rx) = crossbeam_channel::bounded(1);
            let reply: ReplyFn<W> = Box::new(move |outcome| {
                let _ = tx.send(outcome);
            });
            if self.supervisor.submit_to(worker, task.clone(), TaskOptions::default(), reply).is_ok() {
                waits.push((worker, rx));
            }
        }
        let mut out = Vec::with_capacity(waits.len());
        for (worker, rx) in waits {
            let (status, value) = W::task_reply(py, self.wait(py, &rx)?)?;
            out.push((worker, status, value));
        }
        Ok(out)
    }

    /// Waits up to `timeout` seconds for finished tasks and starts; returns up to `max_items`
    /// `(token, status, value)` tuples (an empty list on timeout).
    pub(crate) fn take_completions<'py>(
        &self,
        py: Python<'py>,
        timeout: f64,
        max_items: usize,
    ) -> PyResult<Vec<(u64, u8, Bound<'py, PyAny>)>> {
        let wait = Duration::from_secs_f64(timeout.max(0.0));
        let first = match py.detach(|| self.done_rx.recv_timeout(wait)) {
            Ok(item) => item,
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return Ok(Vec::new()),
        };
        let mut out = Vec::new();
        for (token, done) in std::iter::once(first).chain(self.done_rx.try_iter().take(max_items.saturating_sub(1))) {
            let (status, value) = match done {
                Done::Task(slot) => match slot.take() {
                    Some(outcome) => W::task_reply(py, outcome)?,
                    None => continue, // its future's owner took it already
                },
                Done::Start(outcome) => W::start_reply(py, outcome)?,
            };
            out.push((token, status, value));
        }
        Ok(out)
    }

    /// Starts shutting down: `mode` is "graceful", "cancel" or "kill". Returns at once.
    pub(crate) fn shutdown(&self, mode: &str) -> PyResult<()> {
        self.supervisor.shutdown(parse_shutdown(mode)?);
        Ok(())
    }

    /// Waits up to `timeout` seconds (interruptibly) for every worker to stop; in sync mode,
    /// runs worker setups still queued meanwhile (a graceful shutdown waits for them).
    pub(crate) fn wait_stopped(&self, py: Python<'_>, timeout: f64) -> PyResult<bool> {
        let until = Instant::now() + Duration::from_secs_f64(timeout.max(0.0));
        // Sync mode: short slices, as queued setups may be what the workers wait for.
        let slice = if self.inline.is_some() { Duration::from_millis(5) } else { SLICE };
        loop {
            if let Some(inline) = &self.inline {
                inline.pump_pending(py)?;
            }
            let left = until.saturating_duration_since(Instant::now());
            if py.detach(|| self.supervisor.wait_stopped(left.min(slice))) {
                return Ok(true);
            }
            if left <= slice {
                return Ok(false);
            }
            py.check_signals()?;
        }
    }

    /// Asks one worker to leave after its current tasks; returns whether it was live.
    pub(crate) fn retire_worker(&self, worker: u64) -> bool {
        self.supervisor.retire_worker(worker)
    }

    /// Ids of workers starting or serving.
    pub(crate) fn live_worker_ids(&self) -> Vec<u64> {
        self.supervisor.live_worker_ids()
    }

    /// One dict per worker (see `common::worker_dicts`).
    pub(crate) fn workers<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        worker_dicts(py, self.supervisor.workers())
    }
}
