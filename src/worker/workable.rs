//! The [`Workable`] trait: what the supervisor needs from a worker.

use std::future::Future;

use crate::error::WorkerFault;

/// What a worker made of one task.
#[derive(Debug)]
pub enum Response<W: Workable> {
    /// The task ran to completion with this result; the worker is fine.
    Complete(Result<W::Output, W::Error>),
    /// The worker broke while running the task and must be restarted or retired.
    Fatal(WorkerFault),
    /// The worker was found dead before the task reached it: the task, untouched, goes back to
    /// the queue for another (or the restarted) worker, and this one is recovered.
    Refused(W::Task, WorkerFault),
}

/// What a worker made of one coalesced call (several tasks gathered by the supervisor, see
/// [`crate::Coalesce`]).
#[derive(Debug)]
pub enum Coalesced<W: Workable> {
    /// One outcome per task, in the order the tasks were given. Any other count is a broken
    /// protocol: every task fails with [`crate::TaskError::WorkerCrashed`] and the worker is replaced.
    Complete(Vec<Result<W::Output, W::Error>>),
    /// The worker broke while running the call: every task of it fails.
    Fatal(WorkerFault),
    /// The worker was found dead before the call reached it: the tasks, untouched, go back to
    /// the queue.
    Refused(Vec<W::Task>, WorkerFault),
}

/// One call a worker runs among others (see [`Workable::concurrency`]): the worker's name for
/// it, unique among its calls in flight, from [`Workable::begin`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallToken(pub u64);

/// A task a worker could not start because it was found dead first (see [`Workable::begin`]):
/// the task, untouched, goes back to the queue and the worker is recovered.
#[derive(Debug)]
pub struct Refusal<T> {
    /// The task, which never ran.
    pub task: T,
    /// Why the worker could not take it.
    pub fault: WorkerFault,
}

/// How far giving up on one of a worker's concurrent calls reached (see [`Workable::cancel`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cancellation {
    /// Only that call was stopped; the worker goes on serving its other calls.
    Call,
    /// That call cannot be stopped alone: the supervisor kills the worker, every other call in
    /// flight on it fails (or goes back to the queue if it never started), and the worker is
    /// restarted.
    Worker,
}

/// The start of a worker's successor (see [`Workable::successor`]).
pub type SuccessorStart<W> = std::pin::Pin<Box<dyn Future<Output = Result<W, WorkerFault>> + Send>>;

/// A stateful worker the [`crate::Supervisor`] runs tasks on.
///
/// The worker keeps state between tasks (`&mut self`); the supervisor calls one method at a time.
/// Only [`Workable::process`] is required; the lifecycle hooks have defaults that suit
/// in-process workers, and [`crate::process::ProcessWorker`] overrides them all.
///
/// ```compile_fail
/// // A worker must be `Send + 'static`: it runs on the supervisor's tokio runtime.
/// use std::rc::Rc;
/// use worker_pool::{Response, Workable};
/// struct NotSend(Rc<u8>);
/// impl Workable for NotSend {
///     type Task = ();
///     type Output = ();
///     type Error = ();
///     async fn process(&mut self, _task: ()) -> Response<Self> { Response::Complete(Ok(())) }
/// }
/// ```
pub trait Workable: Send + Sized + 'static {
    /// The input of one task.
    type Task: Send + 'static;
    /// What a successful task produces.
    type Output: Send + 'static;
    /// What a failed task produces (the worker survives it).
    type Error: Send + 'static;

    /// Runs one task.
    fn process(&mut self, task: Self::Task) -> impl Future<Output = Response<Self>> + Send;

    /// Brings a failed (or recycled) worker back to a fresh, ready state, e.g. by starting its
    /// process again with its original setup arguments.
    ///
    /// # Errors
    /// A [`WorkerFault`] when the new worker could not be started; the supervisor counts it
    /// against the restart intensity and may try again.
    fn restart(&mut self) -> impl Future<Output = Result<(), WorkerFault>> + Send {
        async { Ok(()) }
    }

    /// Resolves when the worker dies while idle. Must be cancel-safe; the default never resolves.
    fn terminated(&mut self) -> impl Future<Output = WorkerFault> + Send {
        std::future::pending()
    }

    /// Stops the worker gracefully (the pool is shutting down or shrinking).
    fn stop(&mut self) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// Stops the worker now, without waiting for it (a task timed out or was killed).
    fn kill(&mut self) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// How many tasks the supervisor may hand this worker before taking the first reply back.
    /// Above 1, a worker whose recent tasks were short gets what is queued (its fair share,
    /// up to this many) with [`Workable::try_send`] in one go and answers them in order through
    /// [`Workable::receive`]: one wake-up for the lot instead of one per task. The default, 1,
    /// runs every task alone through [`Workable::process`].
    fn pipeline_depth(&self) -> usize {
        1
    }

    /// Hands `task` over without waiting for its result, if that can be done now without
    /// blocking; otherwise gives it back untouched (no room, or no pipelining: the default).
    /// Only called while fewer than [`Workable::pipeline_depth`] tasks are unanswered.
    ///
    /// # Errors
    /// The task, which was not handed over.
    fn try_send(&mut self, task: Self::Task) -> Result<(), Self::Task> {
        Err(task)
    }

    /// The result of the oldest task handed over with [`Workable::try_send`] and not answered
    /// yet. [`Response::Refused`] is not expected here. Must be cancel-safe only in that a
    /// cancelled receive is followed by [`Workable::kill`].
    fn receive(&mut self) -> impl Future<Output = Response<Self>> + Send {
        async { Response::Fatal(WorkerFault::new("this worker does not pipeline tasks")) }
    }

    /// How many tasks the worker runs at once (an asyncio event loop's `max_concurrency`; an
    /// actor with several calls queued at it). Above 1, the supervisor keeps up to this many
    /// tasks in flight on the worker through [`Workable::begin`], [`Workable::next_done`] and
    /// [`Workable::cancel`] instead of [`Workable::process`], and their results may come back in
    /// any order; a task arriving while some of its seats are free starts at once. Coalesced
    /// calls and on-demand pools still run one call at a time. The default, 1: one task at a time.
    fn concurrency(&self) -> usize {
        1
    }

    /// Starts `task` beside the calls already in flight and returns its token, without waiting
    /// for it to end. Only called while fewer than [`Workable::concurrency`] calls are in
    /// flight. The default refuses: a worker of concurrency 1 is never asked.
    ///
    /// # Errors
    /// A [`Refusal`] with the task, untouched, when the worker was found dead before it took
    /// the task; the supervisor queues the task again and recovers the worker.
    fn begin(&mut self, task: Self::Task) -> Result<CallToken, Refusal<Self::Task>> {
        Err(Refusal { task, fault: WorkerFault::new("this worker does not run concurrent calls") })
    }

    /// The next call begun with [`Workable::begin`] to end, in any order, and how it ended.
    /// Must be cancel-safe: the supervisor polls it beside new tasks, deadlines and kill
    /// requests. [`Response::Refused`] gives back a call the worker took but never started.
    /// Once the worker has died (a [`Response::Fatal`] for one call, or after
    /// [`Workable::kill`]), it must answer every other call in flight promptly: `Refused` for
    /// those that never started, `Fatal` for the others (the supervisor waits a few seconds
    /// for them, then fails the rest with [`crate::TaskError::WorkerCrashed`]). Never resolves
    /// while no call is in flight.
    fn next_done(&mut self) -> impl Future<Output = (CallToken, Response<Self>)> + Send {
        std::future::pending()
    }

    /// Gives up on one call in flight (its deadline passed, or its caller asked to kill it).
    /// [`Cancellation::Call`]: only that call stopped, and [`Workable::next_done`] never yields
    /// its token; [`Cancellation::Worker`] (the default): it cannot be stopped alone, and the
    /// supervisor kills the worker.
    fn cancel(&mut self, call: CallToken) -> impl Future<Output = Cancellation> + Send {
        let _ = call;
        async { Cancellation::Worker }
    }

    /// Runs `tasks`, gathered from the queue because their [`crate::TaskOptions::coalesce`] keys
    /// match, as one call (e.g. one call of a batched model with a list of inputs). Only called
    /// for tasks submitted with a coalesce key; the default, for workers that take none, fails
    /// the worker.
    fn process_coalesced(&mut self, tasks: Vec<Self::Task>) -> impl Future<Output = Coalesced<Self>> + Send {
        drop(tasks);
        async { Coalesced::Fatal(WorkerFault::new("this worker does not run coalesced calls")) }
    }

    /// A copy of `task` to run again on another worker if this one crashes under it (only used
    /// when [`crate::Config::crash_retries`] is above 0). `None` (the default): no retry.
    fn clone_task(task: &Self::Task) -> Option<Self::Task> {
        let _ = task;
        None
    }

    /// A handle through which a caller thread may drive this worker directly while it holds a
    /// claim on it ([`crate::Supervisor::claim_idle`]); the concrete type is the worker's own
    /// (e.g. [`crate::process::ShmLane`]). `None` (the default): no direct lane.
    fn lane(&self) -> Option<std::sync::Arc<dyn std::any::Any + Send + Sync>> {
        None
    }

    /// A new worker started the way this one was, to take over from it when it is recycled: it
    /// starts while this one keeps serving, so recycling never lowers the pool's capacity (see
    /// `worker::renew`). `None` (the default): recycling restarts this worker in place.
    fn successor(&self) -> Option<SuccessorStart<Self>>
    where
        Self: Sized,
    {
        None
    }

    /// The operating-system process id behind this worker, if it has one.
    fn pid(&self) -> Option<u32> {
        None
    }

    /// The worker's resident memory in bytes, if it can be measured.
    fn memory_bytes(&self) -> Option<u64> {
        None
    }
}
