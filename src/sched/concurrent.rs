//! Running several tasks at once on one worker: a worker whose [`Workable::concurrency`] is
//! above 1 (an asyncio event loop with `max_concurrency`, an actor with calls queued at it)
//! keeps up to that many tasks in flight, begun with [`Workable::begin`] and answered in any
//! order through [`Workable::next_done`].
//!
//! The worker stays one worker: one slot, one state (`Busy` while any task runs), one set of
//! counts. While it runs it offers its free seats to the dispatcher (`WorkerSlot::open_seats`,
//! announced on `idle_tx` like an idle worker), so a task queued while 1 of 4 seats is busy
//! is sent to it at once; tasks addressed to it (broadcasts) take a seat as they come.
//!
//! Each task has its own deadline and kill request: giving up on one asks the worker to
//! [`Workable::cancel`] that call alone; if it cannot ([`Cancellation::Worker`]), or the
//! worker dies, every task in flight on it fails with [`TaskError::WorkerCrashed`] (a task it
//! never started goes back to the queue; `crash_retries` are honoured as for a task run alone)
//! and the serve loop recovers the worker. A pool kill answers every task with
//! [`TaskError::ShutDown`].

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::error::{TaskError, WorkerFault};
use crate::job::{Job, ReplyFn, TaskOptions, Ticket};
use crate::pool::shutdown::Phase;
use crate::sched::batch::{BatchEnd, Claimed};
use crate::worker::restart::FailureStage;
use crate::worker::slot::WorkerSlot;
use crate::worker::state::WorkerEvent;
use crate::worker::workable::{CallToken, Cancellation, Refusal, Response, Workable};

/// How long the calls still in flight on a worker that died get to be answered (as never
/// started, or lost) before they fail as lost.
const DRAIN_GRACE: Duration = Duration::from_secs(5);

/// A future that resolves once the task's caller asks to kill it.
type KillRequest = Pin<Box<dyn Future<Output = ()> + Send>>;

/// One task in flight on the worker.
struct Seat<W: Workable> {
    call: CallToken,
    ticket: Ticket,
    options: TaskOptions,
    reply: ReplyFn<W>,
    attempts: u32,
    addressed: bool,
    /// A copy of the task, to queue again if the worker never starts it or (with
    /// `crash_retries`) dies under it.
    spare: Option<W::Task>,
    began: Instant,
    /// When it times out, and after how long.
    deadline: Option<(Instant, Duration)>,
    kill: KillRequest,
}

impl<W: Workable> Seat<W> {
    fn answer(self, outcome: Result<W::Output, TaskError<W::Error>>) {
        self.ticket.finish();
        (self.reply)(outcome);
    }

    /// Back to a queued job with `task` (the one given back, or the copy).
    fn requeued(self, task: W::Task, attempts: u32) -> Job<W> {
        self.ticket.requeue();
        Job { task, ticket: self.ticket, options: self.options, reply: self.reply, attempts, addressed: self.addressed }
    }
}

/// Why a task stopped short while others ran.
enum GiveUp {
    TimedOut(Duration),
    Killed,
}

/// What woke the runner.
enum Event<W: Workable> {
    Done(CallToken, Response<W>),
    GiveUp(CallToken, GiveUp),
    Job(Job<W>),
    Abort,
}

/// The runner's state: the claimed worker and the tasks in flight on it.
struct Runner<'a, 'b, W: Workable> {
    claimed: Claimed<'a, W>,
    slot: &'b Arc<WorkerSlot<W>>,
    seats: Vec<Seat<W>>,
    concurrency: usize,
    /// Whether seats are still offered (not retiring, no recycling due, no coalesced call waiting).
    accepting: bool,
    /// Jobs to run again elsewhere (or, addressed, on this worker once it is back).
    unstarted: Vec<Job<W>>,
}

/// Runs `first` (already begun on a claimed worker) and every task that reaches the worker
/// while it runs, up to its concurrency at once, until none is left in flight. Tasks that
/// must run alone (a coalesced call) wait in `held` for the serve loop.
pub(crate) async fn run<W: Workable>(
    claimed: Claimed<'_, W>,
    slot: &Arc<WorkerSlot<W>>,
    first: Job<W>,
    inbox: &mut mpsc::UnboundedReceiver<Job<W>>,
    held: &mut VecDeque<Job<W>>,
) -> BatchEnd<W> {
    let concurrency = claimed.worker.concurrency();
    let mut runner = Runner {
        claimed,
        slot,
        seats: Vec::with_capacity(concurrency),
        concurrency,
        accepting: true,
        unstarted: Vec::new(),
    };
    if let Err(fault) = runner.start(first) {
        return runner.fail(fault, FailureStage::Idle, WorkerEvent::Crashed).await;
    }
    runner.check_accepting();
    if runner.accepting {
        runner.claimed.slot.open_seats(concurrency - 1);
        runner.announce();
    }
    while !runner.seats.is_empty() {
        let event = runner.next_event(inbox).await;
        let failed = match event {
            Event::Abort => return runner.abort(),
            Event::Done(call, response) => runner.settle(call, response),
            Event::GiveUp(call, why) => runner.give_up(call, why).await,
            Event::Job(job) => runner.take(job, held),
        };
        if let Some((fault, stage, event)) = failed {
            return runner.fail(fault, stage, event).await;
        }
    }
    runner.claimed.slot.close_seats();
    runner.claimed.slot.apply(WorkerEvent::TaskFinished);
    BatchEnd::Idle
}

impl<W: Workable> Runner<'_, '_, W> {
    /// Begins `job`'s task on the worker; the worker's fault when it was found dead (the job
    /// is then among the unstarted).
    fn start(&mut self, job: Job<W>) -> Result<(), WorkerFault> {
        let Job { task, ticket, options, reply, attempts, addressed } = job;
        let spare = W::clone_task(&task);
        match self.claimed.worker.begin(task) {
            Ok(call) => {
                let deadline = options.timeout.or(self.claimed.shared.config.task_timeout);
                let wanted = ticket.clone();
                self.seats.push(Seat {
                    call,
                    ticket,
                    options,
                    reply,
                    attempts,
                    addressed,
                    spare,
                    began: Instant::now(),
                    deadline: deadline.map(|d| (Instant::now() + d, d)),
                    kill: Box::pin(async move { wanted.kill_requested().await }),
                });
                self.publish_load();
                Ok(())
            }
            Err(Refusal { task, fault }) => {
                ticket.requeue();
                self.unstarted.push(Job { task, ticket, options, reply, attempts, addressed });
                Err(fault)
            }
        }
    }

    /// Waits for the next thing to handle: the pool's kill first, then a call ending, a call
    /// to give up on, or a task for a free seat.
    async fn next_event(&mut self, inbox: &mut mpsc::UnboundedReceiver<Job<W>>) -> Event<W> {
        let room = self.accepting && self.seats.len() < self.concurrency;
        let deadline =
            self.seats.iter().filter_map(|s| s.deadline.map(|(at, d)| (s.call, at, d))).min_by_key(|&(_, at, _)| at);
        let Claimed { worker, phase, .. } = &mut self.claimed;
        let seats = &mut self.seats;
        let kill_requested = std::future::poll_fn(|cx| {
            seats
                .iter_mut()
                .find_map(|s| s.kill.as_mut().poll(cx).is_ready().then_some(s.call))
                .map_or(Poll::Pending, Poll::Ready)
        });
        tokio::select! {
            biased;
            _ = phase.wait_for(|p| *p >= Phase::Killing) => Event::Abort,
            (call, response) = worker.next_done() => Event::Done(call, response),
            call = kill_requested => Event::GiveUp(call, GiveUp::Killed),
            () = until(deadline.map(|(_, at, _)| at)) => {
                let (call, _, d) = deadline.expect("a deadline passed");
                Event::GiveUp(call, GiveUp::TimedOut(d))
            }
            Some(job) = inbox.recv(), if room => Event::Job(job),
        }
    }

    /// Takes a task that reached the worker while it runs: begins it in a free seat, or, if
    /// it must run alone or the worker takes no more, keeps it for the serve loop.
    fn take(&mut self, job: Job<W>, held: &mut VecDeque<Job<W>>) -> Option<(WorkerFault, FailureStage, WorkerEvent)> {
        let slot = self.claimed.slot;
        self.check_accepting();
        if !self.accepting || job.options.coalesce.is_some() {
            // Leaving, due for recycling, or a call that runs alone: no more are taken here
            // meanwhile. Another worker may run it, unless it is addressed to this one (or the
            // pool drains, when the dispatcher may be done): then the serve loop decides once
            // the calls in flight end.
            self.stop_accepting();
            if job.addressed || self.claimed.shared.queue.is_closed() {
                held.push_back(job);
            } else {
                self.claimed.shared.queue.give_back(job);
            }
            return None;
        }
        // A task addressed to the worker came past the dispatcher: it takes an offered seat
        // itself (if one is left; the worker has room either way).
        let offered_seat = !job.addressed || slot.take_seat();
        if job.addressed {
            slot.addressed_waiting.fetch_sub(1, Ordering::AcqRel);
        }
        if !job.ticket.begin() {
            job.fail(TaskError::Cancelled);
            if offered_seat {
                self.free_seat();
            }
            return None;
        }
        self.start(job).err().map(|fault| (fault, FailureStage::Idle, WorkerEvent::Crashed))
    }

    /// Handles a call that ended; a failure of the worker when it died.
    fn settle(&mut self, call: CallToken, response: Response<W>) -> Option<(WorkerFault, FailureStage, WorkerEvent)> {
        let seat = self.remove(call)?;
        match response {
            Response::Complete(result) => {
                self.finished(seat, result);
                self.free_seat();
                None
            }
            Response::Refused(task, fault) => {
                let attempts = seat.attempts;
                self.push_unstarted(seat, Some(task), attempts);
                // Found dead before this call reached it (a call lost with it makes it `Task`).
                Some((fault, FailureStage::Idle, WorkerEvent::Crashed))
            }
            Response::Fatal(fault) => {
                self.crashed(seat, &fault);
                Some((fault, FailureStage::Task, WorkerEvent::Crashed))
            }
        }
    }

    /// Gives up on one call: cancelled alone, or the worker must go.
    async fn give_up(&mut self, call: CallToken, why: GiveUp) -> Option<(WorkerFault, FailureStage, WorkerEvent)> {
        let cancelled = self.claimed.worker.cancel(call).await;
        let seat = self.remove(call)?;
        let slot = self.claimed.slot;
        slot.tasks_failed.fetch_add(1, Ordering::Relaxed);
        let (error, fault, event) = match why {
            GiveUp::TimedOut(d) => (
                TaskError::TimedOut(d),
                WorkerFault::new(format!("task timed out after {d:?}; worker killed")),
                WorkerEvent::TimedOut,
            ),
            GiveUp::Killed => {
                (TaskError::Cancelled, WorkerFault::new("killed to cancel its task"), WorkerEvent::Crashed)
            }
        };
        seat.answer(Err(error));
        match cancelled {
            Cancellation::Call => {
                self.free_seat();
                None
            }
            Cancellation::Worker => Some((fault, FailureStage::Task, event)),
        }
    }

    /// The pool is being killed: every task in flight fails with `ShutDown`.
    fn abort(mut self) -> BatchEnd<W> {
        let slot = self.claimed.slot;
        slot.close_seats();
        for seat in self.seats.drain(..) {
            slot.tasks_failed.fetch_add(1, Ordering::Relaxed);
            seat.answer(Err(TaskError::ShutDown));
        }
        self.publish_load();
        slot.apply(WorkerEvent::StopRequested);
        BatchEnd::Killed
    }

    /// The worker died (or must be killed): it is killed, the calls still in flight get
    /// [`DRAIN_GRACE`] to be answered (a call that never started goes back to the queue), and
    /// the rest fail as lost.
    async fn fail(mut self, fault: WorkerFault, stage: FailureStage, event: WorkerEvent) -> BatchEnd<W> {
        let slot = self.claimed.slot;
        slot.close_seats();
        self.claimed.worker.kill().await;
        let grace = tokio::time::sleep(DRAIN_GRACE);
        tokio::pin!(grace);
        let mut stage = stage;
        while !self.seats.is_empty() {
            let Claimed { worker, phase, .. } = &mut self.claimed;
            let done = tokio::select! {
                biased;
                _ = phase.wait_for(|p| *p >= Phase::Killing) => None,
                done = worker.next_done() => Some(done),
                () = &mut grace => break,
            };
            let Some((call, response)) = done else { return self.abort() };
            let Some(seat) = self.remove(call) else { continue };
            match response {
                Response::Complete(result) => self.finished(seat, result),
                Response::Refused(task, _) => {
                    let attempts = seat.attempts;
                    self.push_unstarted(seat, Some(task), attempts);
                }
                Response::Fatal(lost) => {
                    stage = FailureStage::Task;
                    self.crashed(seat, &lost);
                }
            }
        }
        for seat in std::mem::take(&mut self.seats) {
            stage = FailureStage::Task;
            self.crashed(seat, &fault);
        }
        self.publish_load();
        slot.apply(event);
        BatchEnd::Failed { fault, unstarted: self.unstarted, stage }
    }

    /// A call that ended with its result.
    fn finished(&self, seat: Seat<W>, result: Result<W::Output, W::Error>) {
        let (slot, shared) = (self.claimed.slot, self.claimed.shared);
        slot.tasks_done.fetch_add(1, Ordering::Relaxed);
        shared.run_times.record(seat.began.elapsed());
        seat.answer(result.map_err(TaskError::Failed));
    }

    /// A call the worker died under: fails, or runs again elsewhere if retries allow.
    fn crashed(&mut self, mut seat: Seat<W>, fault: &WorkerFault) {
        let retries = self.claimed.shared.config.crash_retries;
        if seat.attempts < retries && !seat.addressed && seat.spare.is_some() {
            let (task, attempts) = (seat.spare.take(), seat.attempts + 1);
            self.push_unstarted(seat, task, attempts);
            return;
        }
        let slot = self.claimed.slot;
        slot.tasks_failed.fetch_add(1, Ordering::Relaxed);
        seat.answer(Err(TaskError::WorkerCrashed { worker: slot.id, fault: fault.clone() }));
    }

    /// Queues `seat`'s task again (`task`, or its copy); without either it fails as lost.
    fn push_unstarted(&mut self, mut seat: Seat<W>, task: Option<W::Task>, attempts: u32) {
        if let Some(task) = task.or_else(|| seat.spare.take()) {
            self.unstarted.push(seat.requeued(task, attempts));
            return;
        }
        let slot = self.claimed.slot;
        slot.tasks_failed.fetch_add(1, Ordering::Relaxed);
        let fault = WorkerFault::new("worker died before the task started, and it cannot be copied");
        seat.answer(Err(TaskError::WorkerCrashed { worker: slot.id, fault }));
    }

    /// Takes the seat of `call` out of the running ones (`None`: not one of them).
    fn remove(&mut self, call: CallToken) -> Option<Seat<W>> {
        let at = self.seats.iter().position(|s| s.call == call)?;
        let seat = self.seats.swap_remove(at);
        self.publish_load();
        Some(seat)
    }

    /// A seat came free: offered to the dispatcher again, unless the worker takes no more.
    fn free_seat(&mut self) {
        self.check_accepting();
        if self.accepting {
            self.claimed.slot.open_seats(1);
            self.announce();
        }
    }

    /// Stops offering seats once the worker is leaving or due for recycling.
    fn check_accepting(&mut self) {
        let slot = self.claimed.slot;
        let recycle_due = self
            .claimed
            .shared
            .config
            .max_tasks_per_worker
            .is_some_and(|max| slot.tasks_since_renewal() + self.seats.len() as u64 >= max);
        if slot.is_retiring() || recycle_due {
            self.stop_accepting();
        }
    }

    fn stop_accepting(&mut self) {
        self.accepting = false;
        self.claimed.slot.close_seats();
    }

    /// Tells the dispatcher the worker has room.
    fn announce(&self) {
        let _ = self.claimed.shared.idle_tx.send(Arc::clone(self.slot));
    }

    /// Publishes how many tasks are in flight (for the `active` balancer).
    fn publish_load(&self) {
        self.claimed.slot.in_flight.store(self.seats.len() as u64, Ordering::Relaxed);
    }
}

/// Resolves at `at`; never without one.
async fn until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
