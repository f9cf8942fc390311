//! The [`Supervisor`]: owns the runtime, the task queue and the worker registry.
//! See `src/SUPERVISOR.md` for the data flow.

use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::runtime::Runtime;
use tokio::sync::{mpsc, watch, Notify};

use crate::error::{BuildError, StartError, SubmitError, TaskError};
use crate::job::{Job, ReplyFn, TaskHandle, TaskOptions, Ticket};
use crate::pool::config::{Config, SupervisorBuilder, WorkerExitHook};
pub(crate) use crate::pool::shared::Shared;
use crate::pool::shutdown::{Phase, ShutdownMode};
use crate::sched::balance::LoadBalancing;
use crate::sched::dispatch::dispatch;
use crate::sched::on_demand::{self, OnDemand, OnDemandStats, WorkerStart};
use crate::sched::queue::{PushError, TaskQueue};
use crate::worker::health::HealthCheck;
use crate::worker::serve::launch;
use crate::worker::slot::{WorkerInfo, WorkerSlot};
use crate::worker::workable::Workable;

/// A worker taken for one call run by the calling thread through its direct lane
/// ([`Supervisor::claim_idle`]). Give it back with [`Claim::finish`]; dropping it unfinished
/// counts as a crash (the worker may be mid-call), so the worker is restarted.
pub struct Claim<W: Workable> {
    slot: Arc<WorkerSlot<W>>,
    shared: Arc<Shared<W>>,
    lane: crate::worker::slot::Lane,
    finished: bool,
    /// When the claim began: a call that finishes fine is timed from here.
    began: std::time::Instant,
}

impl<W: Workable> Claim<W> {
    /// The claimed worker's id.
    #[must_use]
    pub fn worker_id(&self) -> u64 {
        self.slot.id
    }

    /// The worker's lane as its concrete type (e.g. [`crate::process::ShmLane`]).
    #[must_use]
    pub fn lane<L: std::any::Any + Send + Sync>(&self) -> Option<Arc<L>> {
        Arc::clone(&self.lane).downcast::<L>().ok()
    }

    /// Gives the worker back: idle again, or failed with `fault` (its serve loop restarts it).
    pub fn finish(mut self, fault: Option<crate::error::WorkerFault>) {
        self.finished = true;
        self.release(fault);
    }

    fn release(&self, fault: Option<crate::error::WorkerFault>) {
        if fault.is_none() {
            self.shared.run_times.record(self.began.elapsed());
        }
        self.slot.release_claim(fault);
        if self.shared.queue.len() > 0 {
            // Tasks arrived while we held the worker: the dispatcher may be waiting for one.
            self.shared.direct_released.notify_one();
        }
    }
}

impl<W: Workable> Drop for Claim<W> {
    fn drop(&mut self) {
        if !self.finished {
            self.release(Some(crate::error::WorkerFault::new("a direct call was abandoned mid-way")));
        }
    }
}

/// How [`Supervisor::submit_with`] waits when the queue is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backpressure {
    /// Fail at once with [`SubmitError::Full`].
    Fail,
    /// Block the calling thread up to this long, then fail with [`SubmitError::Full`].
    Block(Duration),
}

/// A pool of stateful workers of type `W`, fed from one task queue.
///
/// Idle workers pull tasks from the shared queue, so a task starts as soon as any worker is
/// free. Workers crash, time out and get recycled under the configured policies; see
/// [`crate::Config`] and [`WorkerInfo`].
pub struct Supervisor<W: Workable> {
    shared: Arc<Shared<W>>,
    /// Taken out by [`Supervisor::release`] once stopped, so its threads and descriptors end
    /// with the pool. No handle to it is kept elsewhere: a handle would keep its driver alive.
    runtime: Mutex<Option<Runtime>>,
}

impl<W: Workable> Supervisor<W> {
    /// A builder for a supervisor.
    #[must_use]
    pub fn builder() -> SupervisorBuilder {
        SupervisorBuilder::new()
    }

    /// A supervisor with the default configuration.
    ///
    /// # Panics
    /// When the tokio runtime cannot start (out of threads).
    #[must_use]
    pub fn new() -> Self {
        Self::builder().build().expect("default supervisor configuration")
    }

    pub(crate) fn with_config(config: Config, on_worker_exit: Option<WorkerExitHook>) -> Result<Self, BuildError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(config.runtime_threads)
            .thread_name(config.thread_name.clone())
            .enable_all()
            .build()
            .map_err(|e| BuildError::Runtime(e.to_string()))?;
        let (idle_tx, idle_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            queue: TaskQueue::new(config.queue_capacity).bounding_unanswered(config.max_in_flight),
            config,
            workers: Mutex::new(Vec::new()),
            phase: watch::Sender::new(Phase::Running),
            live: AtomicUsize::new(0),
            exited: Notify::new(),
            next_worker_id: AtomicU64::new(0),
            idle_tx,
            dispatched: AtomicU64::new(0),
            drained: watch::Sender::new(false),
            claim_cursor: AtomicUsize::new(0),
            direct_released: Notify::new(),
            on_worker_exit,
            departures: Mutex::new(std::collections::VecDeque::new()),
            on_demand: OnDemand::default(),
            sticky: crate::sched::balance::rendezvous::StickyCounts::default(),
            coalesced: crate::sched::gather::CoalesceCounters::default(),
            renewing: std::sync::atomic::AtomicBool::new(false),
            run_times: crate::pool::metrics::RunTimes::default(),
        });
        match shared.config.on_demand {
            Some(cap) => {
                // The dispatcher's own place in `live`, given back when it ends.
                shared.live.fetch_add(1, Ordering::AcqRel);
                runtime.spawn(on_demand::dispatch(Arc::clone(&shared), cap, idle_rx));
            }
            None => {
                runtime.spawn(dispatch(Arc::clone(&shared), idle_rx));
            }
        }
        Ok(Self { shared, runtime: Mutex::new(Some(runtime)) })
    }

    /// The configuration this supervisor runs with.
    #[must_use]
    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// A handle to the supervisor's runtime, to run futures that belong to it (e.g. worker
    /// start-up); `None` after [`Supervisor::release`].
    #[must_use]
    pub fn runtime(&self) -> Option<tokio::runtime::Handle> {
        self.runtime.lock().unwrap_or_else(PoisonError::into_inner).as_ref().map(|r| r.handle().clone())
    }

    /// Ends the runtime's threads once the pool has stopped; returns whether it had. Dropping
    /// the supervisor does this too; call it to free the threads of a pool you still hold.
    pub fn release(&self) -> bool {
        if self.shared.phase() != Phase::Stopped {
            return false;
        }
        let runtime = self.runtime.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(runtime) = runtime {
            if tokio::runtime::Handle::try_current().is_ok() {
                runtime.shutdown_background();
            } else {
                runtime.shutdown_timeout(Duration::from_secs(5));
            }
        }
        true
    }

    /// Adds a worker that is ready now; returns its id.
    pub fn add_worker(&self, worker: W) -> u64 {
        self.start_worker(async move { Ok::<_, std::convert::Infallible>((worker, ())) }, |_| {})
    }

    /// Starts a worker whose setup is the future `start`, on the supervisor's runtime (so a
    /// process it spawns is tied to a long-lived thread). `on_ready` receives the worker's id and
    /// what the setup returned, or why it failed. Returns the id the worker will have.
    ///
    /// The worker counts as live while it starts, so tasks submitted meanwhile queue for it; if
    /// its setup fails and no other worker is live, they fail with [`TaskError::NoWorkers`].
    pub fn start_worker<S, E, F, R>(&self, start: F, on_ready: R) -> u64
    where
        S: Send + 'static,
        E: Send + 'static,
        F: Future<Output = Result<(W, S), E>> + Send + 'static,
        R: FnOnce(Result<(u64, S), StartError<E>>) + Send + 'static,
    {
        let runtime = self.runtime().filter(|_| self.shared.phase() == Phase::Running);
        let Some(runtime) = runtime else {
            on_ready(Err(StartError::ShutDown));
            return self.shared.next_worker_id.fetch_add(1, Ordering::Relaxed);
        };
        launch(&self.shared, runtime, |_| start, move |r| on_ready(r.map(|(slot, value)| (slot.id, value))))
    }

    /// Starts a worker and waits for its setup; see [`Supervisor::start_worker`].
    ///
    /// # Errors
    /// [`StartError`] when the setup failed or the pool shut down meanwhile.
    pub async fn spawn_worker<S, E, F>(&self, start: F) -> Result<(u64, S), StartError<E>>
    where
        S: Send + 'static,
        E: Send + 'static,
        F: Future<Output = Result<(W, S), E>> + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.start_worker(start, move |r| {
            let _ = tx.send(r);
        });
        rx.await.unwrap_or(Err(StartError::ShutDown))
    }

    /// Makes this an on-demand pool's worker factory (see [`Config::on_demand`]), replacing
    /// the previous one: `factory(id)` starts the fresh worker that will have id `id`, for one
    /// task; its error is what that task fails with. Until a factory is set, submitting to an
    /// on-demand pool fails with [`SubmitError::NoWorkers`]. Ignored by other pools.
    pub fn set_worker_factory<F, S>(&self, factory: F)
    where
        F: Fn(u64) -> S + Send + Sync + 'static,
        S: Future<Output = Result<W, TaskError<W::Error>>> + Send + 'static,
    {
        self.shared.on_demand.set_factory(Arc::new(move |id| -> WorkerStart<W> { Box::pin(factory(id)) }));
    }

    /// The workers an on-demand pool started, failed to start and retired so far; `None` for
    /// other pools.
    #[must_use]
    pub fn on_demand_stats(&self) -> Option<OnDemandStats> {
        let cap = self.shared.config.on_demand?;
        Some(self.shared.on_demand.stats(cap, on_demand::live_workers(&self.shared)))
    }

    fn check_accepting(&self, task: W::Task) -> Result<W::Task, SubmitError<W::Task>> {
        if self.shared.phase() != Phase::Running {
            return Err(SubmitError::ShutDown(task));
        }
        if self.shared.config.on_demand.is_some() && self.shared.on_demand.factory().is_none() {
            return Err(SubmitError::NoWorkers(task, self.shared.no_worker_reason()));
        }
        if self.shared.live.load(Ordering::Acquire) == 0 {
            return Err(SubmitError::NoWorkers(task, self.shared.no_worker_reason()));
        }
        Ok(task)
    }

    /// `reply`, which also frees the task's place among the unanswered ones when the pool
    /// bounds them ([`crate::Config::max_in_flight`]).
    fn counted(&self, reply: ReplyFn<W>) -> ReplyFn<W> {
        if self.shared.config.max_in_flight.is_none() {
            return reply;
        }
        // Weak: a reply kept by its caller must not keep the pool alive.
        let shared = Arc::downgrade(&self.shared);
        Box::new(move |outcome| {
            // Room first: a caller told its task is done may submit the next one at once.
            if let Some(shared) = shared.upgrade() {
                shared.queue.answered();
            }
            reply(outcome);
        })
    }

    fn push_result(&self, pushed: Result<(), PushError<Job<W>>>) -> Result<(), SubmitError<W::Task>> {
        match pushed {
            Ok(()) => {
                self.shared.after_push();
                Ok(())
            }
            Err(PushError::Full(job)) => Err(SubmitError::Full(job.task)),
            Err(PushError::Closed(job)) => Err(SubmitError::ShutDown(job.task)),
        }
    }

    /// Queues `task`; `reply` is called once with its outcome. This is the primitive the other
    /// submit methods and the Python bindings are built on.
    ///
    /// # Errors
    /// [`SubmitError`] with the task handed back: queue full, pool shut down, or no worker.
    pub fn submit_with(
        &self,
        task: W::Task,
        options: TaskOptions,
        reply: ReplyFn<W>,
        backpressure: Backpressure,
    ) -> Result<Ticket, SubmitError<W::Task>> {
        let task = self.check_accepting(task)?;
        let ticket = Ticket::default();
        let job = Job::new(task, ticket.clone(), options, self.counted(reply));
        let pushed = match backpressure {
            Backpressure::Fail => self.shared.queue.try_push(job),
            Backpressure::Block(timeout) => self.shared.queue.push_blocking(job, timeout),
        };
        self.push_result(pushed).map(|()| ticket)
    }

    /// Queues `task` without waiting.
    ///
    /// # Errors
    /// [`SubmitError::Full`] when the queue is full, and the other [`SubmitError`]s.
    pub fn try_submit(&self, task: W::Task) -> Result<TaskHandle<W>, SubmitError<W::Task>> {
        let (reply, rx) = TaskHandle::<W>::channel();
        let ticket = self.submit_with(task, TaskOptions::default(), reply, Backpressure::Fail)?;
        Ok(TaskHandle { ticket, rx })
    }

    /// Queues `task`, blocking this (non-runtime) thread up to `timeout` while the queue is full.
    ///
    /// # Errors
    /// [`SubmitError::Full`] when the queue stayed full, and the other [`SubmitError`]s.
    pub fn submit_timeout(&self, task: W::Task, timeout: Duration) -> Result<TaskHandle<W>, SubmitError<W::Task>> {
        let (reply, rx) = TaskHandle::<W>::channel();
        let ticket = self.submit_with(task, TaskOptions::default(), reply, Backpressure::Block(timeout))?;
        Ok(TaskHandle { ticket, rx })
    }

    /// Queues `task`, waiting asynchronously while the queue is full.
    ///
    /// # Errors
    /// [`SubmitError::ShutDown`] or [`SubmitError::NoWorkers`], with the task.
    pub async fn enqueue(&self, task: W::Task) -> Result<TaskHandle<W>, SubmitError<W::Task>> {
        let task = self.check_accepting(task)?;
        let (reply, rx) = TaskHandle::<W>::channel();
        let ticket = Ticket::default();
        let job = Job::new(task, ticket.clone(), TaskOptions::default(), self.counted(reply));
        let pushed = self.shared.queue.push(job).await;
        self.push_result(pushed)?;
        Ok(TaskHandle { ticket, rx })
    }

    /// Sends `task` to one worker, past the queue (no backpressure); used for broadcasts. Only
    /// that worker runs it, exactly once: if a direct-lane caller holds the worker, the task
    /// waits for it; if the worker leaves for good first (gave up, retired), the task fails
    /// with [`TaskError::NoWorkers`] naming the worker and why; it never runs elsewhere.
    ///
    /// # Errors
    /// [`SubmitError::UnknownWorker`] when that worker is not live, [`SubmitError::ShutDown`].
    pub fn submit_to(
        &self,
        worker: u64,
        task: W::Task,
        options: TaskOptions,
        reply: ReplyFn<W>,
    ) -> Result<Ticket, SubmitError<W::Task>> {
        let task = self.check_accepting(task)?;
        let slot = self.shared.slots().iter().find(|s| s.id == worker && s.state().is_live()).cloned();
        let Some(slot) = slot else {
            return Err(SubmitError::UnknownWorker(task));
        };
        let ticket = Ticket::default();
        let mut job = Job::new(task, ticket.clone(), options, reply);
        job.addressed = true;
        // Counted before it is sent, so a direct-lane caller that sees the inbox empty cannot
        // take the worker from under it more than once.
        slot.addressed_waiting.fetch_add(1, Ordering::AcqRel);
        if let Err(e) = slot.inbox.send(job) {
            slot.addressed_waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(SubmitError::UnknownWorker(e.0.task));
        }
        Ok(ticket)
    }

    /// Runs a clone of `task` on every live worker and returns one handle per worker.
    pub fn broadcast(&self, task: &W::Task) -> Vec<(u64, TaskHandle<W>)>
    where
        W::Task: Clone,
    {
        self.live_worker_ids()
            .into_iter()
            .filter_map(|id| {
                let (reply, rx) = TaskHandle::<W>::channel();
                let ticket = self.submit_to(id, task.clone(), TaskOptions::default(), reply).ok()?;
                Some((id, TaskHandle { ticket, rx }))
            })
            .collect()
    }

    /// Takes an idle worker that has a direct lane, for one call run by the calling thread,
    /// provided nothing is queued (a direct call never overtakes queued tasks). `None`: no
    /// worker is free that way; submit normally.
    /// Never in an on-demand pool: its workers take tasks only from its dispatcher.
    pub fn claim_idle(&self) -> Option<Claim<W>> {
        let on_demand = self.shared.config.on_demand.is_some();
        if on_demand || self.shared.phase() != Phase::Running || self.shared.queue.len() > 0 {
            return None;
        }
        let slots = self.shared.slots();
        let start = self.shared.claim_cursor.fetch_add(1, Ordering::Relaxed);
        (0..slots.len()).map(|i| &slots[(start + i) % slots.len()]).find_map(|slot| {
            if slot.state() != crate::WorkerState::Idle
                || slot.is_retiring()
                || slot.addressed_waiting.load(Ordering::Acquire) > 0
            {
                return None;
            }
            let lane = slot.lane()?;
            slot.try_claim().then(|| Claim {
                slot: Arc::clone(slot),
                shared: Arc::clone(&self.shared),
                lane,
                finished: false,
                began: std::time::Instant::now(),
            })
        })
    }

    /// Asks worker `id` to leave after its current task (work the dispatcher gave it goes to the
    /// others; tasks addressed to it that it has not started fail with [`TaskError::NoWorkers`]).
    /// Returns whether such a live worker existed.
    pub fn retire_worker(&self, id: u64) -> bool {
        let slot = self.shared.slots().iter().find(|s| s.id == id && s.state().is_live()).cloned();
        slot.is_some_and(|slot| {
            slot.request_retire();
            true
        })
    }

    /// Checks every idle worker's health every `check.interval` from now on, until the pool
    /// shuts down: a worker whose check answers unhealthy, raises, crashes it or runs past
    /// `check.timeout` is replaced (see [`HealthCheck`]). Returns false after
    /// [`Supervisor::release`].
    pub fn check_health(&self, check: HealthCheck<W>) -> bool
    where
        W::Task: Clone,
    {
        self.runtime()
            .map(|runtime| runtime.spawn(crate::worker::health::run(Arc::clone(&self.shared), check)))
            .is_some()
    }

    /// How long the tasks that completed ran on their workers, in the buckets of
    /// [`crate::RUN_TIME_BOUNDS`].
    #[must_use]
    pub fn run_times(&self) -> crate::RunTimeHistogram {
        self.shared.run_times.snapshot()
    }

    /// Tasks handed to workers so far.
    #[must_use]
    pub fn dispatched(&self) -> u64 {
        self.shared.dispatched.load(Ordering::Relaxed)
    }

    /// Keyed tasks (see [`TaskOptions::key`]) that ran on their key's worker, and those that
    /// spilled to another one: `(hits, misses)`.
    #[must_use]
    pub fn sticky_counts(&self) -> (u64, u64) {
        self.shared.sticky.get()
    }

    /// The load balancer in use.
    #[must_use]
    pub fn load_balancing(&self) -> LoadBalancing {
        self.shared.config.load_balancing
    }

    /// Ids of the workers that are starting or serving.
    #[must_use]
    pub fn live_worker_ids(&self) -> Vec<u64> {
        self.shared.slots().iter().filter(|s| s.state().is_live()).map(|s| s.id).collect()
    }

    /// A snapshot of every worker.
    #[must_use]
    pub fn workers(&self) -> Vec<WorkerInfo> {
        self.shared.slots().iter().map(|s| s.info()).collect()
    }

    /// How many coalesced calls were made and their sizes (see [`crate::Coalesce`]).
    #[must_use]
    pub fn coalesce_stats(&self) -> crate::CoalesceStats {
        self.shared.coalesced.snapshot()
    }

    /// How many tasks wait in the queue.
    #[must_use]
    pub fn queued(&self) -> usize {
        self.shared.queue.len()
    }

    /// Whether [`Supervisor::shutdown`] was called.
    #[must_use]
    pub fn is_shutdown(&self) -> bool {
        self.shared.phase() != Phase::Running
    }

    /// Starts shutting down (see [`ShutdownMode`]) and returns at once; wait with
    /// [`Supervisor::wait_stopped`] or [`Supervisor::stopped`]. Calling it again can only
    /// escalate (graceful to kill).
    pub fn shutdown(&self, mode: ShutdownMode) {
        let target = mode.phase();
        self.shared.phase.send_if_modified(|p| {
            let escalate = *p < target;
            if escalate {
                *p = target;
            }
            escalate
        });
        self.shared.queue.close();
        if mode.cancels_queued() {
            self.shared.fail_queued(|| TaskError::Cancelled);
        }
        if self.shared.live.load(Ordering::Acquire) == 0 {
            self.shared.phase.send_replace(Phase::Stopped);
            self.shared.fail_queued(|| TaskError::ShutDown);
        }
    }

    /// Resolves once every worker has stopped after [`Supervisor::shutdown`].
    pub async fn stopped(&self) {
        let mut phase = self.shared.phase.subscribe();
        let _ = phase.wait_for(|p| *p == Phase::Stopped).await;
    }

    /// Blocks this (non-runtime) thread until every worker has stopped, up to `timeout`;
    /// returns whether they all did.
    pub fn wait_stopped(&self, timeout: Duration) -> bool {
        if self.shared.phase() == Phase::Stopped {
            return true;
        }
        let Some(runtime) = self.runtime() else { return true };
        runtime.block_on(async { tokio::time::timeout(timeout, self.stopped()).await.is_ok() })
    }
}

impl<W: Workable> Default for Supervisor<W> {
    fn default() -> Self {
        Self::new()
    }
}

impl<W: Workable> Drop for Supervisor<W> {
    fn drop(&mut self) {
        let finish = || {
            if self.shared.phase() != Phase::Stopped {
                self.shutdown(ShutdownMode::Kill);
                self.wait_stopped(Duration::from_secs(10));
            }
        };
        // Blocking on our runtime from inside another runtime panics, so a supervisor dropped in
        // async code finishes on a plain thread.
        if tokio::runtime::Handle::try_current().is_ok() {
            std::thread::scope(|scope| {
                scope.spawn(finish);
            });
        } else {
            finish();
        }
        if let Some(runtime) = self.runtime.get_mut().unwrap_or_else(PoisonError::into_inner).take() {
            runtime.shutdown_background();
        }
    }
}
