//! One submitted task: its input, its reply path and a [`Ticket`] to cancel it.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::{oneshot, Notify};

use crate::error::TaskError;
use crate::worker::workable::Workable;

/// What a task finally produced.
pub type Outcome<W> = Result<<W as Workable>::Output, TaskError<<W as Workable>::Error>>;

/// Called exactly once with the task's outcome, on the supervisor's runtime. It must not block.
pub type ReplyFn<W> = Box<dyn FnOnce(Outcome<W>) + Send>;

const QUEUED: u8 = 0;
const RUNNING: u8 = 1;
const FINISHED: u8 = 2;
const CANCELLED: u8 = 3;

#[derive(Debug, Default)]
pub(crate) struct TicketState {
    phase: AtomicU8,
    kill: Notify,
    kill_requested: std::sync::atomic::AtomicBool,
}

/// A handle to cancel a submitted task. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Ticket(pub(crate) Arc<TicketState>);

impl Ticket {
    /// Cancels the task if it has not started; returns whether it was cancelled.
    /// A cancelled task is skipped by the workers and its reply says [`TaskError::Cancelled`].
    pub fn cancel(&self) -> bool {
        self.0.phase.compare_exchange(QUEUED, CANCELLED, Ordering::AcqRel, Ordering::Acquire).is_ok()
    }

    /// Cancels the task if queued, or kills the worker running it (which is then restarted).
    /// Returns whether the task was queued or running.
    pub fn cancel_or_kill(&self) -> bool {
        if self.cancel() {
            return true;
        }
        if self.0.phase.load(Ordering::Acquire) == RUNNING {
            self.0.kill_requested.store(true, Ordering::Release);
            self.0.kill.notify_one();
            return true;
        }
        false
    }

    /// Whether a worker has started the task (it may have finished since).
    #[must_use]
    pub fn started(&self) -> bool {
        matches!(self.0.phase.load(Ordering::Acquire), RUNNING | FINISHED)
    }

    /// Whether the task was cancelled before it ran.
    #[must_use]
    pub fn cancelled(&self) -> bool {
        self.0.phase.load(Ordering::Acquire) == CANCELLED
    }

    pub(crate) fn begin(&self) -> bool {
        self.0.phase.compare_exchange(QUEUED, RUNNING, Ordering::AcqRel, Ordering::Acquire).is_ok()
    }

    pub(crate) fn requeue(&self) {
        self.0.phase.store(QUEUED, Ordering::Release);
    }

    pub(crate) fn finish(&self) {
        self.0.phase.store(FINISHED, Ordering::Release);
    }

    pub(crate) async fn kill_requested(&self) {
        loop {
            let notified = self.0.kill.notified();
            if self.0.kill_requested.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }
}

/// Per-task options.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TaskOptions {
    /// Deadline for this task, overriding the pool's default task timeout.
    pub timeout: Option<Duration>,
    /// Higher runs first; FIFO within a priority, and no task starves (see
    /// `crate::sched::queue` for the overtaking limit). Default 0.
    pub priority: i32,
    /// Sticky routing: tasks with the same key go to the same worker while it serves (chosen by
    /// rendezvous hashing over the serving workers, so a worker that comes or goes moves only
    /// its own keys). `None`: any worker.
    pub key: Option<u64>,
    /// What a keyed task does when its worker is busy.
    pub sticky: Sticky,
    /// Gather this task with queued tasks of the same key into one coalesced call
    /// ([`Workable::process_coalesced`]); `None`: it runs on its own.
    pub coalesce: Option<crate::sched::gather::Coalesce>,
    /// The task is one of a stream of similar, short tasks (a `map`'s chunks, each sized to
    /// about a millisecond of work): a worker may be handed it behind the task it runs, as
    /// if its recent tasks were short, so it never waits for the supervisor between two of
    /// them. Default `false`: only workers whose recent tasks were short are handed several.
    pub pipelined: bool,
}

/// What a keyed task ([`TaskOptions::key`]) does when its worker is busy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Sticky {
    /// Wait for that worker (the default: what a per-key cache is for; a miss usually costs
    /// more than waiting for one task).
    #[default]
    Wait,
    /// Go to an idle worker instead (counted as a sticky miss).
    Spill,
}

/// An unknown sticky policy name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown sticky policy {0:?}: use \"wait\" or \"spill\"")]
pub struct UnknownSticky(pub String);

impl std::str::FromStr for Sticky {
    type Err = UnknownSticky;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "wait" => Ok(Sticky::Wait),
            "spill" => Ok(Sticky::Spill),
            other => Err(UnknownSticky(other.to_owned())),
        }
    }
}

pub(crate) struct Job<W: Workable> {
    pub(crate) task: W::Task,
    pub(crate) ticket: Ticket,
    pub(crate) options: TaskOptions,
    pub(crate) reply: ReplyFn<W>,
    /// Runs already cut short by a crash (see `Config::crash_retries`).
    pub(crate) attempts: u32,
    /// Addressed to one worker (a broadcast or per-worker call, see `Supervisor::submit_to`):
    /// only that worker runs it, exactly once; it never enters the shared queue, and fails with
    /// `NoWorkers` naming the worker if that worker leaves first.
    pub(crate) addressed: bool,
}

impl<W: Workable> crate::sched::queue::Ranked for Job<W> {
    fn priority(&self) -> i32 {
        self.options.priority
    }
}

impl<W: Workable> Job<W> {
    /// A job for any worker (it goes through the shared queue).
    pub(crate) fn new(task: W::Task, ticket: Ticket, options: TaskOptions, reply: ReplyFn<W>) -> Self {
        Self { task, ticket, options, reply, attempts: 0, addressed: false }
    }

    pub(crate) fn fail(self, error: TaskError<W::Error>) {
        (self.reply)(Err(error));
    }
}

/// The result of a task submitted with [`crate::Supervisor::try_submit`] and friends: await it,
/// or wait for it from synchronous code with [`TaskHandle::wait`].
pub struct TaskHandle<W: Workable> {
    pub(crate) ticket: Ticket,
    pub(crate) rx: oneshot::Receiver<Outcome<W>>,
}

impl<W: Workable> std::fmt::Debug for TaskHandle<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskHandle").field("ticket", &self.ticket).finish_non_exhaustive()
    }
}

impl<W: Workable> TaskHandle<W> {
    pub(crate) fn channel() -> (ReplyFn<W>, oneshot::Receiver<Outcome<W>>) {
        let (tx, rx) = oneshot::channel();
        let reply: ReplyFn<W> = Box::new(move |outcome| {
            let _ = tx.send(outcome);
        });
        (reply, rx)
    }

    /// The ticket to cancel this task.
    #[must_use]
    pub fn ticket(&self) -> &Ticket {
        &self.ticket
    }

    /// Blocks the current (non-runtime) thread until the task ends.
    ///
    /// # Errors
    /// The task's [`TaskError`].
    pub fn wait(self) -> Outcome<W> {
        self.rx.blocking_recv().unwrap_or(Err(TaskError::ShutDown))
    }
}

impl<W: Workable> Future for TaskHandle<W> {
    type Output = Outcome<W>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.rx).poll(cx).map(|r| r.unwrap_or(Err(TaskError::ShutDown)))
    }
}
