//! Running what a worker took: one task, or a batch. A worker whose recent tasks were short
//! takes its fair share of what is queued in one go ([`Workable::try_send`]) and answers the
//! tasks in order ([`Workable::receive`]), so a stream of tiny tasks costs one wake-up per
//! batch instead of one per task. A task run alone ([`Workable::process`]) is a batch of one:
//! every task's outcome is settled by the same code, whichever way it ran.
//!
//! Late binding is kept where it matters: only workers whose tasks recently took less than
//! [`SHORT_TASK`] batch, and each takes at most `queued / live workers` extra tasks, so a batch
//! never holds back more than a few milliseconds of work that an idle worker could have run.
//! Tasks handed over in a batch count as started: `cancel()` no longer stops them and
//! `cancel_or_kill()` kills the worker once the task's turn comes. If the worker dies, the
//! task it was running fails as usual and the ones behind it, which never ran, are given back.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::error::{TaskError, WorkerFault};
use crate::job::{Job, ReplyFn, TaskOptions, Ticket};
use crate::pool::shutdown::Phase;
use crate::pool::supervisor::Shared;
use crate::sched::dispatch::begin_on;
use crate::worker::restart::FailureStage;
use crate::worker::slot::WorkerSlot;
use crate::worker::state::WorkerEvent;
use crate::worker::workable::{Response, Workable};

/// Tasks faster than this (on average, recently) may be batched.
pub(crate) const SHORT_TASK: Duration = Duration::from_micros(500);

/// A worker's recent task duration: an exponential moving average, unknown until a task ends.
#[derive(Debug, Default)]
pub(crate) struct Pace {
    average_ns: Option<f64>,
}

impl Pace {
    /// Folds in one task that took `elapsed`.
    pub(crate) fn record(&mut self, elapsed: Duration) {
        let ns = elapsed.as_nanos() as f64;
        self.average_ns = Some(self.average_ns.map_or(ns, |avg| avg + (ns - avg) / 8.0));
    }

    /// Whether recent tasks were short enough to batch.
    pub(crate) fn is_short(&self) -> bool {
        self.average_ns.is_some_and(|avg| avg < SHORT_TASK.as_nanos() as f64)
    }
}

/// A worker claimed by its serve loop for a batch, with what running one needs around it.
pub(crate) struct Claimed<'a, W: Workable> {
    /// The worker itself.
    pub(crate) worker: &'a mut W,
    /// Its slot (state, stats).
    pub(crate) slot: &'a WorkerSlot<W>,
    /// The pool's shutdown phase, watched while the batch runs.
    pub(crate) phase: &'a mut watch::Receiver<Phase>,
    /// The pool's shared state (queue, config, stats).
    pub(crate) shared: &'a Shared<W>,
}

/// How a batch (of one or more tasks) ended.
pub(crate) enum BatchEnd<W: Workable> {
    /// Every task was answered; the worker is idle.
    Idle,
    /// The worker failed (crashed, timed out, or was killed to cancel a task); `unstarted`
    /// never ran and must be queued again (or, if addressed to this worker, kept for it).
    /// `stage` says whether a task was running (it was consumed) or the worker was found dead
    /// before any task reached it.
    Failed { fault: WorkerFault, unstarted: Vec<Job<W>>, stage: FailureStage },
    /// The pool is being killed; every task was answered with [`TaskError::ShutDown`].
    Killed,
}

/// How one task ended, seen from the worker's side.
enum Ran<W: Workable> {
    Done(Result<W::Output, W::Error>),
    Fatal(WorkerFault),
    Refused(W::Task, WorkerFault),
    TimedOut(Duration),
    Killed,
    Aborted,
}

impl<W: Workable> From<Response<W>> for Ran<W> {
    fn from(response: Response<W>) -> Self {
        match response {
            Response::Complete(result) => Ran::Done(result),
            Response::Fatal(fault) => Ran::Fatal(fault),
            Response::Refused(task, fault) => Ran::Refused(task, fault),
        }
    }
}

/// A task the worker took. `task` is still here when it runs alone (through `process`), gone
/// when it was handed over with `try_send`; `spare` is a copy to queue again if the worker
/// dies before or (with `crash_retries`) while running it.
struct Handed<W: Workable> {
    task: Option<W::Task>,
    spare: Option<W::Task>,
    ticket: Ticket,
    options: TaskOptions,
    reply: ReplyFn<W>,
    attempts: u32,
    addressed: bool,
}

impl<W: Workable> Handed<W> {
    /// A task to run alone; copied only when a crash may send it elsewhere (opt-in: a task that
    /// crashes its worker may crash the next one too).
    /// A task addressed to this worker is never retried: no other worker may run it.
    fn alone(job: Job<W>, crash_retries: u32) -> Self {
        let Job { task, ticket, options, reply, attempts, addressed } = job;
        let spare = if attempts < crash_retries && !addressed { W::clone_task(&task) } else { None };
        Self { task: Some(task), spare, ticket, options, reply, attempts, addressed }
    }

    /// Back to a queued job, with `task` (the one that came back, or the spare copy).
    fn requeued(self, task: W::Task, attempts: u32) -> Job<W> {
        self.ticket.requeue();
        Job { task, ticket: self.ticket, options: self.options, reply: self.reply, attempts, addressed: self.addressed }
    }

    /// Back to a queued job: it was handed over but never started.
    fn unstarted(mut self) -> Job<W> {
        let task = self.spare.take().expect("a handed-over task keeps a copy");
        let attempts = self.attempts;
        self.requeued(task, attempts)
    }

    fn answer(self, outcome: Result<W::Output, TaskError<W::Error>>) {
        self.ticket.finish();
        (self.reply)(outcome);
    }
}

/// Whether `job`, just taken by a worker with this pace, should start a batch.
fn should_batch<W: Workable>(worker: &W, job: &Job<W>, pace: &Pace, shared: &Shared<W>) -> bool {
    let c = &shared.config;
    worker.pipeline_depth() > 1
        && (pace.is_short() || job.options.pipelined)
        && job.options.timeout.is_none()
        && c.task_timeout.is_none()
        && c.max_tasks_per_worker.is_none()
        && c.max_memory_per_worker.is_none()
        && shared.queue.len() > 0
}

/// Runs `first` (already begun on a claimed worker), and with it the worker's share of the
/// queue when it should batch.
pub(crate) async fn run<W: Workable>(claimed: Claimed<'_, W>, first: Job<W>, pace: &mut Pace) -> BatchEnd<W> {
    let Claimed { worker, slot, phase, shared } = claimed;
    let crash_retries = shared.config.crash_retries;
    let mut handed = VecDeque::new();
    if should_batch(worker, &first, pace, shared) {
        match hand_over(worker, first) {
            Ok(h) => {
                handed.push_back(h);
                take_share(worker, slot, shared, &mut handed, pace.is_short());
            }
            Err(first) => handed.push_back(Handed::alone(first, crash_retries)),
        }
    } else {
        handed.push_back(Handed::alone(first, crash_retries));
    }
    if handed.len() > 1 {
        slot.batches.fetch_add(1, Ordering::Relaxed);
        slot.batched_tasks.fetch_add(handed.len() as u64, Ordering::Relaxed);
        // Let the other serve loops hand their workers a batch too before this one waits: tiny
        // replies come back within the reader's spin, so it would not yield until done.
        tokio::task::yield_now().await;
    }

    let mut since = Instant::now();
    while let Some(mut h) = handed.pop_front() {
        let ran = match h.task.take() {
            Some(task) => {
                let deadline = h.options.timeout.or(shared.config.task_timeout);
                run_alone(worker, task, deadline, &h.ticket, phase).await
            }
            None => tokio::select! {
                r = worker.receive() => r.into(),
                () = h.ticket.kill_requested() => Ran::Killed,
                _ = phase.wait_for(|p| *p >= Phase::Killing) => Ran::Aborted,
            },
        };
        let (event, fault, error, may_retry) = match ran {
            Ran::Done(result) => {
                slot.tasks_done.fetch_add(1, Ordering::Relaxed);
                let now = Instant::now();
                shared.run_times.record(now - since);
                pace.record(now - since);
                since = now;
                if handed.is_empty() {
                    slot.apply(WorkerEvent::TaskFinished);
                }
                h.answer(result.map_err(TaskError::Failed));
                continue;
            }
            Ran::Aborted => {
                h.answer(Err(TaskError::ShutDown));
                for rest in handed {
                    rest.answer(Err(TaskError::ShutDown));
                }
                slot.tasks_failed.fetch_add(1, Ordering::Relaxed);
                slot.apply(WorkerEvent::StopRequested);
                return BatchEnd::Killed;
            }
            Ran::Refused(task, fault) => {
                // The worker was dead before the task reached it: the task never ran, so it
                // goes back to the queue (served first) and the worker is recovered.
                slot.apply(WorkerEvent::Crashed);
                let attempts = h.attempts;
                let mut unstarted = vec![h.requeued(task, attempts)];
                unstarted.extend(handed.into_iter().map(Handed::unstarted));
                return BatchEnd::Failed { fault, unstarted, stage: FailureStage::Idle };
            }
            Ran::Fatal(fault) => {
                let error = TaskError::WorkerCrashed { worker: slot.id, fault: fault.clone() };
                (WorkerEvent::Crashed, fault, error, true)
            }
            Ran::TimedOut(d) => {
                worker.kill().await;
                let fault = WorkerFault::new(format!("task timed out after {d:?}; worker killed"));
                (WorkerEvent::TimedOut, fault, TaskError::TimedOut(d), false)
            }
            Ran::Killed => {
                worker.kill().await;
                let fault = WorkerFault::new("killed to cancel its task");
                (WorkerEvent::Crashed, fault, TaskError::Cancelled, false)
            }
        };
        // The worker broke under this task: it fails (or, after a crash and if retries allow,
        // goes back to the queue, on another worker first), and the tasks behind it, which
        // never ran, go back too.
        slot.tasks_failed.fetch_add(1, Ordering::Relaxed);
        slot.apply(event);
        let mut unstarted = Vec::with_capacity(handed.len() + 1);
        match h.spare.take() {
            // Never for a task addressed to this worker: it runs there once or not at all.
            Some(spare) if may_retry && h.attempts < crash_retries && !h.addressed => {
                let attempts = h.attempts + 1;
                unstarted.push(h.requeued(spare, attempts));
            }
            _ => h.answer(Err(error)),
        }
        if fault.broke_protocol {
            // Its replies cannot be trusted, so the first unanswered task need not be the one it
            // was running: any of these may have run. Failing them all keeps "at most once".
            for rest in handed {
                slot.tasks_failed.fetch_add(1, Ordering::Relaxed);
                rest.answer(Err(TaskError::WorkerCrashed { worker: slot.id, fault: fault.clone() }));
            }
        } else {
            unstarted.extend(handed.into_iter().map(Handed::unstarted));
        }
        return BatchEnd::Failed { fault, unstarted, stage: FailureStage::Task };
    }
    BatchEnd::Idle
}

/// Runs one task through `process`, under its deadline, a kill request and the pool's kill.
async fn run_alone<W: Workable>(
    worker: &mut W,
    task: W::Task,
    deadline: Option<Duration>,
    ticket: &Ticket,
    phase: &mut watch::Receiver<Phase>,
) -> Ran<W> {
    let work = worker.process(task);
    tokio::pin!(work);
    let timed = async {
        match deadline {
            Some(d) => match tokio::time::timeout(d, &mut work).await {
                Ok(response) => response.into(),
                Err(_) => Ran::TimedOut(d),
            },
            None => work.await.into(),
        }
    };
    tokio::select! {
        ran = timed => ran,
        () = ticket.kill_requested() => Ran::Killed,
        _ = phase.wait_for(|p| *p >= Phase::Killing) => Ran::Aborted,
    }
}

/// Hands the worker its share of the queue (queued / live workers, up to its pipeline depth)
/// behind the task it already took.
fn take_share<W: Workable>(
    worker: &mut W,
    slot: &WorkerSlot<W>,
    shared: &Shared<W>,
    handed: &mut VecDeque<Handed<W>>,
    short: bool,
) {
    let share = 1 + shared.queue.len() / shared.live_workers().max(1);
    while handed.len() < share.min(worker.pipeline_depth()) {
        // A worker batching only for pipelined tasks takes no other kind behind them.
        let Some(job) = shared.queue.try_pop_if(|job| job.options.key.is_none() && (short || job.options.pipelined))
        else {
            break;
        };
        if job.options.timeout.is_some() {
            // Needs its own deadline: run it alone, first thing.
            shared.queue.give_back(job);
            break;
        }
        let Some(job) = begin_on(shared, slot, job) else { continue };
        match hand_over(worker, job) {
            Ok(h) => handed.push_back(h),
            Err(job) => {
                job.ticket.requeue();
                shared.queue.give_back(job);
                break;
            }
        }
    }
}

/// Hands `job` to the worker, keeping a copy of its task; gives the job back if it cannot.
fn hand_over<W: Workable>(worker: &mut W, job: Job<W>) -> Result<Handed<W>, Job<W>> {
    let Job { task, ticket, options, reply, attempts, addressed } = job;
    let Some(spare) = W::clone_task(&task) else {
        return Err(Job { task, ticket, options, reply, attempts, addressed });
    };
    match worker.try_send(task) {
        Ok(()) => Ok(Handed { task: None, spare: Some(spare), ticket, options, reply, attempts, addressed }),
        Err(task) => Err(Job { task, ticket, options, reply, attempts, addressed }),
    }
}
