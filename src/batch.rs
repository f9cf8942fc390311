//! Batches: a worker whose recent tasks were short takes its fair share of what is queued in
//! one go ([`Workable::try_send`]) and answers the tasks in order ([`Workable::receive`]), so a
//! stream of tiny tasks costs one wake-up per batch instead of one per task.
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
use crate::shutdown::Phase;
use crate::slot::WorkerSlot;
use crate::state::WorkerEvent;
use crate::supervisor::Shared;
use crate::workable::{Response, Workable};

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

/// How a batch ended.
pub(crate) enum BatchEnd<W: Workable> {
    /// Every task was answered; the worker is idle.
    Idle,
    /// The worker failed (crashed, or was killed to cancel a task); `unstarted` never ran.
    Failed { fault: WorkerFault, unstarted: Vec<Job<W>> },
    /// The pool is being killed; every task was answered with [`TaskError::ShutDown`].
    Killed,
}

/// A task handed to the worker, waiting for its answer; `spare` is its copy, given back to
/// the queue if the worker dies before running it.
struct Handed<W: Workable> {
    spare: W::Task,
    ticket: Ticket,
    options: TaskOptions,
    reply: ReplyFn<W>,
    attempts: u32,
}

impl<W: Workable> Handed<W> {
    fn unstarted(self) -> Job<W> {
        self.ticket.requeue();
        Job { task: self.spare, ticket: self.ticket, options: self.options, reply: self.reply, attempts: self.attempts }
    }
}

/// Whether `job`, just taken by a worker with this pace, should start a batch.
pub(crate) fn should_batch<W: Workable>(worker: &W, job: &Job<W>, pace: &Pace, shared: &Shared<W>) -> bool {
    let c = &shared.config;
    worker.pipeline_depth() > 1
        && pace.is_short()
        && job.options.timeout.is_none()
        && c.task_timeout.is_none()
        && c.max_tasks_per_worker.is_none()
        && c.max_memory_per_worker.is_none()
        && shared.queue.len() > 0
}

/// Runs `first` (already begun on a claimed worker) and the worker's share of the queue as one
/// batch. Gives `first` back untouched (as `Err`) if the worker cannot take it without blocking.
pub(crate) async fn run_batch<W: Workable>(
    worker: &mut W,
    slot: &WorkerSlot<W>,
    first: Job<W>,
    phase: &mut watch::Receiver<Phase>,
    shared: &Shared<W>,
    pace: &mut Pace,
) -> Result<BatchEnd<W>, Job<W>> {
    let mut handed = VecDeque::new();
    match hand_over(worker, first) {
        Ok(h) => handed.push_back(h),
        Err(job) => return Err(job),
    }
    let share = 1 + shared.queue.len() / shared.live_workers().max(1);
    while handed.len() < share.min(worker.pipeline_depth()) {
        let Some(job) = shared.queue.try_pop() else { break };
        if job.options.timeout.is_some() {
            // Needs its own deadline: run it alone, first thing.
            shared.queue.give_back(job);
            break;
        }
        if !job.ticket.begin() {
            job.fail(TaskError::Cancelled);
            continue;
        }
        slot.dispatched.fetch_add(1, Ordering::Relaxed);
        shared.dispatched.fetch_add(1, Ordering::Relaxed);
        match hand_over(worker, job) {
            Ok(h) => handed.push_back(h),
            Err(job) => {
                job.ticket.requeue();
                shared.queue.give_back(job);
                break;
            }
        }
    }

    if handed.len() > 1 {
        slot.batches.fetch_add(1, Ordering::Relaxed);
        slot.batched_tasks.fetch_add(handed.len() as u64, Ordering::Relaxed);
        // Let the other serve loops hand their workers a batch too before this one waits: tiny
        // replies come back within the reader's spin, so it would not yield until done.
        tokio::task::yield_now().await;
    }
    let mut since = Instant::now();
    while let Some(h) = handed.pop_front() {
        let response = tokio::select! {
            r = worker.receive() => Some(r),
            () = h.ticket.kill_requested() => None,
            _ = phase.wait_for(|p| *p >= Phase::Killing) => {
                h.ticket.finish();
                (h.reply)(Err(TaskError::ShutDown));
                for rest in handed {
                    rest.ticket.finish();
                    (rest.reply)(Err(TaskError::ShutDown));
                }
                slot.tasks_failed.fetch_add(1, Ordering::Relaxed);
                slot.apply(WorkerEvent::StopRequested);
                return Ok(BatchEnd::Killed);
            }
        };
        let fault = match response {
            Some(Response::Complete(result)) => {
                h.ticket.finish();
                slot.tasks_done.fetch_add(1, Ordering::Relaxed);
                let now = Instant::now();
                pace.record(now - since);
                since = now;
                (h.reply)(result.map_err(TaskError::Failed));
                continue;
            }
            Some(Response::Fatal(fault) | Response::Refused(_, fault)) => fault,
            None => {
                worker.kill().await;
                h.ticket.finish();
                slot.tasks_failed.fetch_add(1, Ordering::Relaxed);
                slot.apply(WorkerEvent::Crashed);
                (h.reply)(Err(TaskError::Cancelled));
                let unstarted = handed.into_iter().map(Handed::unstarted).collect();
                return Ok(BatchEnd::Failed { fault: WorkerFault::new("killed to cancel its task"), unstarted });
            }
        };
        slot.tasks_failed.fetch_add(1, Ordering::Relaxed);
        slot.apply(WorkerEvent::Crashed);
        let mut unstarted: Vec<Job<W>> = Vec::with_capacity(handed.len() + 1);
        if h.attempts < shared.config.crash_retries {
            let mut again = h.unstarted();
            again.attempts += 1;
            unstarted.push(again);
        } else {
            h.ticket.finish();
            (h.reply)(Err(TaskError::WorkerCrashed { worker: slot.id, fault: fault.clone() }));
        }
        unstarted.extend(handed.into_iter().map(Handed::unstarted));
        return Ok(BatchEnd::Failed { fault, unstarted });
    }
    slot.apply(WorkerEvent::TaskFinished);
    Ok(BatchEnd::Idle)
}

/// Hands `job` to the worker, keeping a copy of its task; gives the job back if it cannot.
fn hand_over<W: Workable>(worker: &mut W, job: Job<W>) -> Result<Handed<W>, Job<W>> {
    let Job { task, ticket, options, reply, attempts } = job;
    let Some(spare) = W::clone_task(&task) else {
        return Err(Job { task, ticket, options, reply, attempts });
    };
    match worker.try_send(task) {
        Ok(()) => Ok(Handed { spare, ticket, options, reply, attempts }),
        Err(task) => Err(Job { task, ticket, options, reply, attempts }),
    }
}
