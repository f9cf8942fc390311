//! Coalesced calls (dynamic batching): tasks submitted with the same [`Coalesce`] key are
//! gathered from the queue into one call of the worker ([`Workable::process_coalesced`]), and
//! the call's outcomes are split back onto the tasks' replies.
//!
//! Not to be confused with `batch.rs` (transport batching), which hands a worker several
//! independent calls in one wake-up: here the worker makes one call of a method that takes a
//! list (a model's batched forward pass), and the tasks live and die together.
//!
//! A serve loop that claimed its worker for a task with a key keeps taking queued tasks while
//! the next one has the same key, up to `max_size`; when the queue runs dry it waits for more
//! until `max_wait` has passed since it took the first (a timer on the runtime: other workers
//! and the dispatcher go on meanwhile; it looks again every millisecond, since a push rings
//! only one of the queue's waiters). Tasks the dispatcher already put in the worker's inbox go
//! back to the queue first ([`requeue_inbox`]), so they are gathered too. The first task with another key (or an addressed one)
//! ends the gathering and goes back to the queue, served first, so order is kept.
//!
//! The tasks of one call share its fate: a crash or a protocol breach fails them all
//! (`WorkerCrashed`, never retried: the call was consumed), a timeout (the earliest deadline
//! among them) fails them all with `TimedOut`, and `cancel_or_kill` on any of them kills the
//! worker and cancels them all. A worker found dead before the call reached it gives the tasks
//! back to the queue, like a refused single task.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use std::collections::VecDeque;

use tokio::sync::{mpsc, watch};

use crate::error::{TaskError, WorkerFault};
use crate::job::{Job, ReplyFn, TaskOptions, Ticket};
use crate::pool::shutdown::Phase;
use crate::pool::supervisor::Shared;
use crate::sched::batch::{BatchEnd, Claimed};
use crate::sched::dispatch::begin_on;
use crate::worker::restart::FailureStage;
use crate::worker::slot::WorkerSlot;
use crate::worker::state::WorkerEvent;
use crate::worker::workable::{Coalesced, Workable};

/// How tasks of one kind (e.g. calls to one batched method) are gathered into coalesced calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Coalesce {
    /// Tasks are gathered only with tasks of the same key.
    pub key: u32,
    /// The most tasks in one call (at least 1).
    pub max_size: usize,
    /// How long to wait for the call to fill once its first task is taken.
    pub max_wait: Duration,
}

/// How often a gathering serve loop looks at the queue again while it waits for tasks.
const RECHECK: Duration = Duration::from_millis(1);

/// Upper bounds of the call-size histogram's buckets; the last bucket takes every larger call.
pub const COALESCE_SIZE_BUCKETS: [usize; 8] = [1, 2, 4, 8, 16, 32, 64, 128];

/// How many coalesced calls the pool made and how large they were.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CoalesceStats {
    /// Coalesced calls made (a batch of one included).
    pub calls: u64,
    /// Tasks those calls carried.
    pub tasks: u64,
    /// The largest call.
    pub max_size: u64,
    /// Calls per size bucket: `histogram[i]` counts calls of at most `COALESCE_SIZE_BUCKETS[i]` tasks
    /// (and above the previous bound); the last entry counts larger calls.
    pub histogram: [u64; COALESCE_SIZE_BUCKETS.len() + 1],
}

/// The pool's coalesced-call counters, updated by the serve loops.
#[derive(Debug, Default)]
pub(crate) struct CoalesceCounters {
    calls: AtomicU64,
    tasks: AtomicU64,
    max_size: AtomicU64,
    histogram: [AtomicU64; COALESCE_SIZE_BUCKETS.len() + 1],
}

impl CoalesceCounters {
    fn record(&self, size: usize) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.tasks.fetch_add(size as u64, Ordering::Relaxed);
        self.max_size.fetch_max(size as u64, Ordering::Relaxed);
        let bucket =
            COALESCE_SIZE_BUCKETS.iter().position(|&bound| size <= bound).unwrap_or(COALESCE_SIZE_BUCKETS.len());
        self.histogram[bucket].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> CoalesceStats {
        CoalesceStats {
            calls: self.calls.load(Ordering::Relaxed),
            tasks: self.tasks.load(Ordering::Relaxed),
            max_size: self.max_size.load(Ordering::Relaxed),
            histogram: std::array::from_fn(|i| self.histogram[i].load(Ordering::Relaxed)),
        }
    }
}

/// A gathered task, its input already handed to the call.
struct Member<W: Workable> {
    ticket: Ticket,
    reply: ReplyFn<W>,
    options: TaskOptions,
}

impl<W: Workable> Member<W> {
    fn answer(self, outcome: Result<W::Output, TaskError<W::Error>>) {
        self.ticket.finish();
        (self.reply)(outcome);
    }
}

/// How the coalesced call ended, seen from the worker's side.
enum CallEnd<W: Workable> {
    Done(Coalesced<W>),
    TimedOut(Duration),
    Killed,
    Aborted,
}

/// Gathers queued tasks with `first`'s key (already begun on a claimed worker), runs them as one
/// coalesced call and answers each.
pub(crate) async fn run<W: Workable>(claimed: Claimed<'_, W>, first: Job<W>) -> BatchEnd<W> {
    let Claimed { worker, slot, phase, shared } = claimed;
    let spec = first.options.coalesce.expect("only tasks with a coalesce key are gathered");
    let mut jobs = vec![first];
    gather(slot, shared, spec, &mut jobs, phase).await;
    let size = jobs.len();
    shared.coalesced.record(size);

    let task_timeout = shared.config.task_timeout;
    let (tasks, members): (Vec<W::Task>, Vec<Member<W>>) = jobs
        .into_iter()
        .map(|job| (job.task, Member { ticket: job.ticket, reply: job.reply, options: job.options }))
        .unzip();
    let deadline = members.iter().filter_map(|m| m.options.timeout.or(task_timeout)).min();
    let tickets: Vec<Ticket> = members.iter().map(|m| m.ticket.clone()).collect();
    let ended = {
        let call = worker.process_coalesced(tasks);
        let timed = async {
            match deadline {
                Some(d) => tokio::time::timeout(d, call).await.map_or(CallEnd::TimedOut(d), CallEnd::Done),
                None => CallEnd::Done(call.await),
            }
        };
        tokio::select! {
            ended = timed => ended,
            () = any_kill_requested(&tickets) => CallEnd::Killed,
            _ = phase.wait_for(|p| *p >= Phase::Killing) => CallEnd::Aborted,
        }
    };
    let (event, fault, error) = match ended {
        CallEnd::Done(Coalesced::Complete(outcomes)) if outcomes.len() == size => {
            slot.tasks_done.fetch_add(size as u64, Ordering::Relaxed);
            slot.apply(WorkerEvent::TaskFinished);
            for (member, outcome) in members.into_iter().zip(outcomes) {
                member.answer(outcome.map_err(TaskError::Failed));
            }
            return BatchEnd::Idle;
        }
        CallEnd::Done(Coalesced::Complete(outcomes)) => {
            let fault = WorkerFault::protocol(format!(
                "worker broke the protocol: {} outcomes for a coalesced call of {size} tasks; worker killed",
                outcomes.len()
            ));
            (WorkerEvent::Crashed, fault.clone(), TaskError::WorkerCrashed { worker: slot.id, fault })
        }
        CallEnd::Done(Coalesced::Fatal(fault)) => {
            (WorkerEvent::Crashed, fault.clone(), TaskError::WorkerCrashed { worker: slot.id, fault })
        }
        CallEnd::Done(Coalesced::Refused(tasks, fault)) => {
            // Dead before the call reached it: nothing ran, every task goes back.
            slot.apply(WorkerEvent::Crashed);
            let unstarted = members
                .into_iter()
                .zip(tasks)
                .map(|(member, task)| {
                    member.ticket.requeue();
                    Job::new(task, member.ticket, member.options, member.reply)
                })
                .collect();
            return BatchEnd::Failed { fault, unstarted, stage: FailureStage::Idle };
        }
        CallEnd::TimedOut(d) => {
            worker.kill().await;
            let fault = WorkerFault::new(format!("coalesced call timed out after {d:?}; worker killed"));
            (WorkerEvent::TimedOut, fault, TaskError::TimedOut(d))
        }
        CallEnd::Killed => {
            worker.kill().await;
            (
                WorkerEvent::Crashed,
                WorkerFault::new("killed to cancel a task of its coalesced call"),
                TaskError::Cancelled,
            )
        }
        CallEnd::Aborted => {
            for member in members {
                member.answer(Err(TaskError::ShutDown));
            }
            slot.tasks_failed.fetch_add(size as u64, Ordering::Relaxed);
            slot.apply(WorkerEvent::StopRequested);
            return BatchEnd::Killed;
        }
    };
    slot.tasks_failed.fetch_add(size as u64, Ordering::Relaxed);
    slot.apply(event);
    for member in members {
        member.answer(Err(copy_error(&error)));
    }
    BatchEnd::Failed { fault, unstarted: Vec::new(), stage: FailureStage::Task }
}

/// Gives the tasks waiting in a worker's inbox back to the queue (served first, in order), so a
/// coalesced call gathers them; tasks addressed to the worker move to its held jobs instead.
pub(crate) fn requeue_inbox<W: Workable>(
    inbox: &mut mpsc::UnboundedReceiver<Job<W>>,
    held: &mut VecDeque<Job<W>>,
    shared: &Shared<W>,
) {
    while let Ok(job) = inbox.try_recv() {
        if job.addressed {
            held.push_back(job);
        } else {
            shared.queue.give_back(job);
        }
    }
}

/// Takes queued tasks with `spec`'s key behind `jobs`, up to `max_size`, waiting for more at most
/// `max_wait` after the first was taken.
async fn gather<W: Workable>(
    slot: &WorkerSlot<W>,
    shared: &Shared<W>,
    spec: Coalesce,
    jobs: &mut Vec<Job<W>>,
    phase: &mut watch::Receiver<Phase>,
) {
    let until = tokio::time::Instant::now() + spec.max_wait;
    // A call ends where the worker is due for recycling, so its count lands on the multiple
    // the serve loop checks (`max_tasks_per_worker`).
    let before_recycling = shared.config.max_tasks_per_worker.map_or(usize::MAX, |max| {
        usize::try_from(max - slot.tasks_done.load(Ordering::Relaxed) % max).unwrap_or(usize::MAX)
    });
    while jobs.len() < spec.max_size.min(before_recycling) {
        let job = match shared.queue.try_pop() {
            Some(job) => job,
            None => tokio::select! {
                biased;
                _ = phase.wait_for(|p| *p >= Phase::Killing) => return,
                () = tokio::time::sleep_until(until) => return,
                job = shared.queue.pop() => match job {
                    Some(job) => job,
                    None => return, // closed and empty
                },
                // The queue's doorbell wakes one waiter, and the dispatcher may be the one: look
                // again shortly all the same.
                () = tokio::time::sleep(RECHECK.min(until - tokio::time::Instant::now())) => continue,
            },
        };
        if job.addressed || job.options.coalesce.map(|c| c.key) != Some(spec.key) {
            shared.queue.give_back(job);
            return;
        }
        let Some(job) = begin_on(shared, slot, job) else { continue };
        jobs.push(job);
    }
}

/// The same error again, for each task of a failed call (the worker's own error type never
/// reaches here: a call's failures come back per task).
fn copy_error<E>(error: &TaskError<E>) -> TaskError<E> {
    match error {
        TaskError::WorkerCrashed { worker, fault } => {
            TaskError::WorkerCrashed { worker: *worker, fault: fault.clone() }
        }
        TaskError::TimedOut(d) => TaskError::TimedOut(*d),
        TaskError::Cancelled | TaskError::Failed(_) => TaskError::Cancelled,
        TaskError::ShutDown => TaskError::ShutDown,
        TaskError::NoWorkers(reason) => TaskError::NoWorkers(reason.clone()),
    }
}

/// Resolves once a kill is requested for any of `tickets`.
async fn any_kill_requested(tickets: &[Ticket]) {
    let mut waits: Vec<Pin<Box<dyn Future<Output = ()> + Send + '_>>> =
        tickets.iter().map(|t| Box::pin(t.kill_requested()) as Pin<Box<dyn Future<Output = ()> + Send + '_>>).collect();
    std::future::poll_fn(|cx| {
        for wait in &mut waits {
            if wait.as_mut().poll(cx).is_ready() {
                return std::task::Poll::Ready(());
            }
        }
        std::task::Poll::Pending
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_fall_into_their_buckets() {
        let counters = CoalesceCounters::default();
        for size in [1, 2, 3, 32, 33, 500] {
            counters.record(size);
        }
        let stats = counters.snapshot();
        assert_eq!((stats.calls, stats.tasks, stats.max_size), (6, 571, 500));
        assert_eq!(stats.histogram, [1, 1, 1, 0, 0, 1, 1, 0, 1]);
    }
}
