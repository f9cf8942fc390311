//! Recycling without losing capacity: a worker due for recycling (`max_tasks_per_worker`,
//! `max_memory_per_worker`) keeps serving while its successor, started the way it was
//! ([`Workable::successor`]), sets up; once the successor is ready it takes over between tasks
//! and the old one stops. One worker of a pool renews at a time, so workers that come due
//! together (round robin makes them) do not all restart at once: the others keep serving and
//! renew in turn. A kind without successors is recycled in place, as before.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::task::JoinHandle;

use crate::error::WorkerFault;
use crate::pool::config::WorkerExit;
use crate::pool::shared::Shared;
use crate::worker::slot::WorkerSlot;
use crate::worker::state::{WorkerEvent, WorkerState};
use crate::worker::workable::Workable;

/// The successor a worker's serve loop is starting, if any, and the process it replaced, while
/// that one stops.
pub(crate) struct Successor<W: Workable> {
    starting: Option<JoinHandle<Result<W, WorkerFault>>>,
    stopping: Option<JoinHandle<()>>,
}

impl<W: Workable> Default for Successor<W> {
    fn default() -> Self {
        Self { starting: None, stopping: None }
    }
}

impl<W: Workable> Successor<W> {
    /// Starts `worker`'s successor unless one is starting already or another worker of the pool
    /// is renewing (it is tried again after the next task). False: the kind has no successors;
    /// recycle it in place.
    pub(crate) fn start(&mut self, worker: &W, shared: &Shared<W>) -> bool {
        if self.starting.is_some() {
            return true;
        }
        if shared.renewing.compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire).is_err() {
            return true;
        }
        match worker.successor() {
            Some(start) => {
                self.starting = Some(tokio::spawn(start));
                true
            }
            None => {
                shared.renewing.store(false, Ordering::Release);
                false
            }
        }
    }

    /// Resolves when the successor is ready (or failed to start); never while none is starting.
    /// Cancel-safe.
    pub(crate) async fn ready(&mut self, shared: &Shared<W>) -> Result<W, WorkerFault> {
        let Some(handle) = &mut self.starting else {
            return std::future::pending().await;
        };
        let started = handle.await;
        self.starting = None;
        shared.renewing.store(false, Ordering::Release);
        started.unwrap_or_else(|e| Err(WorkerFault::new(format!("its successor's start ended abnormally: {e}"))))
    }

    /// Puts the ready `next` in `worker`'s place between tasks; the old one stops meanwhile,
    /// on a task of its own, and its end is reported once it is dead. The worker keeps its id
    /// and counts a restart. A worker that is not idle (a direct call holds it) keeps serving
    /// and `next` is stopped instead.
    pub(crate) async fn take_over(
        &mut self,
        worker: &mut W,
        mut next: W,
        slot: &WorkerSlot<W>,
        shared: &Arc<Shared<W>>,
    ) {
        if slot.state() != WorkerState::Idle {
            next.stop().await;
            return;
        }
        // The one before, if still stopping, is waited for: one stopping process at a time.
        self.wait_stopped().await;
        slot.apply(WorkerEvent::Recycle);
        slot.restarts.fetch_add(1, Ordering::Relaxed);
        let mut old = std::mem::replace(worker, next);
        let old_process = slot.take_unreported_process();
        slot.process_started(worker.pid());
        slot.set_lane(worker.lane());
        slot.renewed();
        slot.apply(WorkerEvent::Ready);
        let (shared, worker_id) = (Arc::clone(shared), slot.id);
        self.stopping = Some(tokio::spawn(async move {
            old.stop().await;
            if let Some(pid) = old_process {
                shared.report_exit(WorkerExit { worker_id, pid });
            }
        }));
    }

    async fn wait_stopped(&mut self) {
        if let Some(stopping) = self.stopping.take() {
            let _ = stopping.await;
        }
    }

    /// The worker leaves: gives up on a successor still starting (aborting its start kills
    /// whatever process it spawned) and waits for a replaced process still stopping, so no
    /// process outlives the pool.
    pub(crate) async fn finish(&mut self, shared: &Shared<W>) {
        if let Some(handle) = self.starting.take() {
            handle.abort();
            shared.renewing.store(false, Ordering::Release);
        }
        self.wait_stopped().await;
    }
}
