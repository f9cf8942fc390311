//! State shared by the [`crate::Supervisor`] handle and every worker task: the queue, the
//! worker registry, the shutdown phase, and what the pool remembers of workers that left.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{mpsc, watch, Notify};

use crate::error::{Departure, NoWorkerReason, TaskError};
use crate::job::Job;
use crate::pool::config::{Config, WorkerExit, WorkerExitHook};
use crate::pool::shutdown::Phase;
use crate::sched::on_demand::OnDemand;
use crate::sched::queue::TaskQueue;
use crate::worker::slot::WorkerSlot;
use crate::worker::workable::Workable;

/// State shared by the supervisor handle and every worker task.
pub(crate) struct Shared<W: Workable> {
    pub(crate) config: Config,
    pub(crate) queue: TaskQueue<Job<W>>,
    /// Every worker that is starting, serving, or failed for good (for stats).
    pub(crate) workers: Mutex<Vec<Arc<WorkerSlot<W>>>>,
    pub(crate) phase: watch::Sender<Phase>,
    /// Worker tasks that have not ended: starting, serving or restarting.
    pub(crate) live: AtomicUsize,
    /// Rung whenever a worker task ends.
    pub(crate) exited: Notify,
    pub(crate) next_worker_id: AtomicU64,
    /// Idle workers announce themselves to the dispatcher here.
    pub(crate) idle_tx: mpsc::UnboundedSender<Arc<WorkerSlot<W>>>,
    /// Tasks the dispatcher handed to workers.
    pub(crate) dispatched: AtomicU64,
    /// Set once the dispatcher has handed out the last queued task of a graceful shutdown.
    pub(crate) drained: watch::Sender<bool>,
    /// Where [`Supervisor::claim_idle`] starts looking, so direct calls rotate over workers.
    pub(crate) claim_cursor: AtomicUsize,
    /// Rung when a direct-lane call gives a worker back while tasks are queued.
    pub(crate) direct_released: Notify,
    /// Called once for every worker process that ended (see `SupervisorBuilder::on_worker_exit`).
    pub(crate) on_worker_exit: Option<WorkerExitHook>,
    /// The last few workers that left for good, and why: what `NoWorkers` errors report.
    pub(crate) departures: Mutex<std::collections::VecDeque<Departure>>,
    /// The worker factory and counters of an on-demand pool (unused otherwise).
    pub(crate) on_demand: OnDemand<W>,
    /// How keyed tasks were placed (sticky routing).
    pub(crate) sticky: crate::sched::balance::rendezvous::StickyCounts,
    /// Sizes of the coalesced calls made so far (see `sched/gather.rs`).
    pub(crate) coalesced: crate::sched::gather::CoalesceCounters,
    /// A worker is starting its successor (see `worker::renew`): one at a time per pool.
    pub(crate) renewing: std::sync::atomic::AtomicBool,
    /// How long tasks ran on their workers (see `pool::metrics`).
    pub(crate) run_times: crate::pool::metrics::RunTimes,
}

/// How many departures `NoWorkers` errors name (the newest).
const DEPARTURES_KEPT: usize = 4;

impl<W: Workable> Shared<W> {
    pub(crate) fn phase(&self) -> Phase {
        *self.phase.borrow()
    }

    /// Worker tasks that have not ended (starting, serving or restarting).
    pub(crate) fn live_workers(&self) -> usize {
        self.live.load(Ordering::Acquire)
    }

    pub(crate) fn slots(&self) -> std::sync::MutexGuard<'_, Vec<Arc<WorkerSlot<W>>>> {
        self.workers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reports the worker's current process to the exit hook, if it was not reported yet. Call
    /// only once that process is dead.
    pub(crate) fn report_process_end(&self, slot: &WorkerSlot<W>) {
        if let Some(pid) = slot.take_unreported_process() {
            self.report_exit(WorkerExit { worker_id: slot.id, pid });
        }
    }

    /// Calls the exit hook; a panic in it must not take the worker's serve loop down.
    pub(crate) fn report_exit(&self, exit: WorkerExit) {
        if let Some(hook) = &self.on_worker_exit {
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| hook(exit)));
        }
    }

    /// Remembers that `worker` left for good, and why, for the `NoWorkers` errors that follow.
    pub(crate) fn record_departure(&self, worker: u64, reason: String) {
        let mut departures = self.departures.lock().unwrap_or_else(PoisonError::into_inner);
        departures.retain(|d| d.worker != worker);
        if departures.len() == DEPARTURES_KEPT {
            departures.pop_front();
        }
        departures.push_back(Departure { worker, reason });
    }

    /// Why no worker can run a task now: the workers that left, newest last.
    pub(crate) fn no_worker_reason(&self) -> NoWorkerReason {
        let departures = self.departures.lock().unwrap_or_else(PoisonError::into_inner);
        NoWorkerReason { departed: departures.iter().cloned().collect() }
    }

    /// Called by each worker task as its last act.
    pub(crate) fn worker_exited(&self, slot: &WorkerSlot<W>, keep_in_registry: bool) {
        if !keep_in_registry {
            self.slots().retain(|s| s.id != slot.id);
        }
        self.live_ended();
    }

    /// One place in `live` is given back: a worker task's, or an on-demand dispatcher's.
    pub(crate) fn live_ended(&self) {
        let remaining = self.live.fetch_sub(1, Ordering::AcqRel) - 1;
        if remaining == 0 {
            if self.phase() == Phase::Running {
                // The last worker gave up: nothing could ever run what is queued.
                let reason = self.no_worker_reason();
                self.fail_queued(|| TaskError::NoWorkers(reason.clone()));
            } else {
                self.phase.send_replace(Phase::Stopped);
                self.fail_queued(|| TaskError::ShutDown);
            }
        }
        self.exited.notify_waiters();
    }

    pub(crate) fn fail_queued(&self, error: impl Fn() -> TaskError<W::Error>) {
        for job in self.queue.drain() {
            let error = if job.ticket.cancelled() { TaskError::Cancelled } else { error() };
            job.fail(error);
        }
    }

    /// Closes the race between a producer pushing and the pool losing its last worker or
    /// stopping: whoever comes second fails what is queued.
    pub(crate) fn after_push(&self) {
        if self.live.load(Ordering::Acquire) == 0 {
            match self.phase() {
                Phase::Running => {
                    let reason = self.no_worker_reason();
                    self.fail_queued(|| TaskError::NoWorkers(reason.clone()));
                }
                Phase::Stopped => self.fail_queued(|| TaskError::ShutDown),
                Phase::Draining | Phase::Killing => {}
            }
        }
    }
}
