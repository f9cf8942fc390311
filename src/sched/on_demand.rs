//! On-demand pools (see [`crate::Config::on_demand`]): no worker runs while nothing is queued.
//! This dispatcher replaces the late-binding one: each queued task that finds no idle worker
//! gets a fresh worker from the pool's factory, started for it alone, as long as fewer than
//! `max_workers` are live; the worker runs that task and retires (`serve`'s `Exit::Spent`).
//!
//! ```text
//!  queue ──pop (only below the cap)──▶ factory(id) ──ready──▶ inbox of the new worker ─▶ one task ─▶ retired
//!                                            └─failed───▶ the task fails with the factory's error
//! ```
//!
//! While it runs, the dispatcher counts as one live worker of its own: the pool never has "no
//! worker" (so tasks are accepted and nothing fails with `NoWorkers` between bursts), and a
//! shutdown ends only once the dispatcher has handed out (graceful) or dropped (kill) what is
//! queued and every worker it started has ended.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::mpsc;

use crate::error::{StartError, TaskError};
use crate::job::Job;
use crate::pool::shutdown::Phase;
use crate::pool::supervisor::Shared;
use crate::sched::dispatch::{next_job, Woke};
use crate::worker::serve::launch;
use crate::worker::slot::WorkerSlot;
use crate::worker::state::WorkerState;
use crate::worker::workable::Workable;

/// The future a worker factory returns: the new worker, or what the task it was started for
/// fails with (e.g. [`TaskError::Failed`] with the error its setup raised, or
/// [`TaskError::WorkerCrashed`] naming the worker id it was given).
pub type WorkerStart<W> = Pin<Box<dyn Future<Output = Result<W, TaskError<<W as Workable>::Error>>> + Send + 'static>>;

/// Starts one fresh worker, given the id it will have (see
/// [`crate::Supervisor::set_worker_factory`]).
pub(crate) type WorkerFactory<W> = Arc<dyn Fn(u64) -> WorkerStart<W> + Send + Sync>;

/// What an on-demand pool did so far, from [`crate::Supervisor::on_demand_stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OnDemandStats {
    /// The cap on live workers.
    pub max_workers: usize,
    /// Workers starting or running their task now.
    pub live: usize,
    /// Workers the factory started successfully.
    pub spawned: u64,
    /// Workers whose start failed (each failed the task it was started for).
    pub failed_to_start: u64,
    /// Workers that ended after their task (or failed while running it).
    pub retired: u64,
}

/// The counters behind [`OnDemandStats`] and the factory, kept in [`Shared`].
pub(crate) struct OnDemand<W: Workable> {
    factory: Mutex<Option<WorkerFactory<W>>>,
    spawned: AtomicU64,
    failed_to_start: AtomicU64,
    retired: AtomicU64,
}

impl<W: Workable> Default for OnDemand<W> {
    fn default() -> Self {
        Self {
            factory: Mutex::new(None),
            spawned: AtomicU64::new(0),
            failed_to_start: AtomicU64::new(0),
            retired: AtomicU64::new(0),
        }
    }
}

impl<W: Workable> OnDemand<W> {
    pub(crate) fn set_factory(&self, factory: WorkerFactory<W>) {
        *self.factory.lock().unwrap_or_else(PoisonError::into_inner) = Some(factory);
    }

    pub(crate) fn factory(&self) -> Option<WorkerFactory<W>> {
        self.factory.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// A worker of this pool ended after its one task.
    pub(crate) fn retired(&self) {
        self.retired.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn stats(&self, max_workers: usize, live: usize) -> OnDemandStats {
        OnDemandStats {
            max_workers,
            live,
            spawned: self.spawned.load(Ordering::Relaxed),
            failed_to_start: self.failed_to_start.load(Ordering::Relaxed),
            retired: self.retired.load(Ordering::Relaxed),
        }
    }
}

/// Workers live now, not counting the dispatcher's own place (see the module docs).
pub(crate) fn live_workers<W: Workable>(shared: &Shared<W>) -> usize {
    shared.live_workers().saturating_sub(1)
}

/// The dispatcher of an on-demand pool with at most `cap` live workers. It holds one place in
/// `shared.live` (taken by the supervisor before starting it) and gives it back as its last
/// act. A worker added by hand that is idle gets a task before a fresh one is started.
pub(crate) async fn dispatch<W: Workable>(
    shared: Arc<Shared<W>>,
    cap: usize,
    mut idle_rx: mpsc::UnboundedReceiver<Arc<WorkerSlot<W>>>,
) {
    let mut phase = shared.phase.subscribe();
    let mut idle: Vec<Arc<WorkerSlot<W>>> = Vec::new();
    loop {
        while let Ok(slot) = idle_rx.try_recv() {
            idle.push(slot);
        }
        idle.retain(|s| s.state() == WorkerState::Idle && !s.is_retiring());
        if shared.queue.is_closed() && shared.queue.len() == 0 {
            break; // drained: a graceful shutdown needs no more workers
        }
        // Registered before the check, so a worker ending in between still wakes us.
        let ended = shared.exited.notified();
        if idle.is_empty() && live_workers(&shared) >= cap {
            tokio::select! {
                biased;
                _ = phase.wait_for(|p| *p >= Phase::Killing) => break,
                () = ended => continue,
                slot = idle_rx.recv() => {
                    idle.extend(slot);
                    continue;
                }
            }
        }
        let job = match next_job(&shared, &mut phase, &mut idle_rx, &mut idle, std::future::pending()).await {
            Woke::Job(job) => job,
            Woke::Again => continue,
            Woke::Stop => break,
        };
        if job.ticket.cancelled() {
            job.fail(TaskError::Cancelled); // no process for a task nobody wants
            continue;
        }
        if let Some(i) = idle.iter().position(|s| s.state() == WorkerState::Idle) {
            let slot = idle.swap_remove(i);
            slot.dispatched.fetch_add(1, Ordering::Relaxed);
            shared.dispatched.fetch_add(1, Ordering::Relaxed);
            if let Err(returned) = slot.inbox.send(job) {
                shared.queue.give_back(returned.0);
            }
        } else if live_workers(&shared) < cap {
            start_for(&shared, job);
        } else {
            shared.queue.give_back(job); // the idle worker was claimed meanwhile
        }
    }
    shared.drained.send_replace(true);
    shared.live_ended();
}

/// How the start of a fresh worker ended: its slot, or the factory's error.
type Started<W> = Result<(Arc<WorkerSlot<W>>, ()), StartError<TaskError<<W as Workable>::Error>>>;

/// Starts a fresh worker for `job`: once it is ready the job is the first thing in its inbox;
/// if it cannot start, the job fails with the factory's error (it is not queued again, so a
/// factory that always fails cannot loop).
fn start_for<W: Workable>(shared: &Arc<Shared<W>>, job: Job<W>) {
    let Some(factory) = shared.on_demand.factory() else {
        // Refused at submit; only a race with a factory never set could get here.
        job.fail(TaskError::NoWorkers(shared.no_worker_reason()));
        return;
    };
    let stats = Arc::clone(shared);
    let on_ready = move |started: Started<W>| match started {
        Ok((slot, ())) => {
            stats.on_demand.spawned.fetch_add(1, Ordering::Relaxed);
            slot.dispatched.fetch_add(1, Ordering::Relaxed);
            stats.dispatched.fetch_add(1, Ordering::Relaxed);
            if let Err(returned) = slot.inbox.send(job) {
                stats.queue.give_back(returned.0);
            }
        }
        Err(StartError::Failed(error)) => {
            stats.on_demand.failed_to_start.fetch_add(1, Ordering::Relaxed);
            job.fail(error);
        }
        Err(StartError::ShutDown) => job.fail(TaskError::ShutDown),
    };
    launch(
        shared,
        tokio::runtime::Handle::current(),
        move |id| async move { factory(id).await.map(|w| (w, ())) },
        on_ready,
    );
}
