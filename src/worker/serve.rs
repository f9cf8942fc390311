//! The loop each worker runs on the supervisor's runtime: take a task, run it, handle what
//! went wrong, restart or retire. It alone moves its worker through the state machine.
//!
//! Two promises are kept here. A job addressed to this worker (a broadcast or per-worker call)
//! runs on it exactly once or fails naming it: it waits while a direct-lane caller holds the
//! worker and across restarts, and never goes to the shared queue. And every process of the
//! worker that ends is reported once to the exit hook, after it is dead and before the next
//! one starts (see `SupervisorBuilder::on_worker_exit`).

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, watch};

use crate::error::{NoWorkerReason, StartError, TaskError, WorkerFault};
use crate::job::Job;
use crate::pool::config::WorkerExit;
use crate::pool::shutdown::Phase;
use crate::pool::supervisor::Shared;
use crate::sched::batch::{self, BatchEnd, Claimed, Pace};
use crate::sched::{concurrent, gather};
use crate::worker::renew::Successor;
use crate::worker::restart::{FailureStage, RestartDecision, RestartPacer};
use crate::worker::slot::WorkerSlot;
use crate::worker::state::{WorkerEvent, WorkerState};
use crate::worker::workable::Workable;

/// What the idle worker woke up for.
enum Wake<W: Workable> {
    Job(Job<W>),
    Fault(WorkerFault),
    /// A direct-lane call gave the worker back.
    Released,
    /// Its successor is ready to take over (recycling), or failed to start.
    Successor(Result<W, WorkerFault>),
    /// Queue closed and empty (graceful), or kill requested.
    Stop,
}

/// A failure of the worker, and what it was doing then (which decides how it is restarted).
struct Failure {
    fault: WorkerFault,
    stage: FailureStage,
}

/// What `run_job` left the worker in.
enum JobEnd {
    /// Fine, idle again.
    Idle,
    /// Broken: recover it.
    Failed(Failure),
    /// The pool is being killed.
    Killed,
    /// A direct-lane caller holds the worker; the job went back to the queue, or, if addressed
    /// to this worker, waits in its held jobs.
    Deferred,
}

/// Why the loop ended.
enum Exit {
    Stop,
    Kill,
    Retire,
    /// Failed for good (gave up, or the restart policy lets it go); the text says why.
    Left(String),
    /// An on-demand worker ran its one task (`failed`: and broke, so it is killed, not
    /// stopped); it is never restarted or reused.
    Spent {
        failed: bool,
    },
}

/// How recovering a failed worker ended.
enum Recovery {
    Serving,
    Killed,
    Left(String),
}

/// The restart pacing of one worker, and how many tasks it had done at its last failure
/// (more since then means it served, which resets the backoff).
struct Restarts {
    pacer: RestartPacer,
    tasks_done_at_failure: u64,
}

pub(crate) async fn serve<W: Workable>(
    mut worker: W,
    slot: Arc<WorkerSlot<W>>,
    mut inbox: mpsc::UnboundedReceiver<Job<W>>,
    shared: Arc<Shared<W>>,
) {
    let mut phase = shared.phase.subscribe();
    let mut drained = shared.drained.subscribe();
    let config = &shared.config;
    let mut restarts = Restarts {
        pacer: RestartPacer::new(config.restart_policy, config.max_restarts, config.restart_window),
        tasks_done_at_failure: 0,
    };
    let mut pace = Pace::default();
    // Jobs this worker runs before it looks at its inbox again: jobs addressed to it that it
    // could not start yet (held by a direct call, or refused by a dead process), and tasks of a
    // failed batch that never ran, kept while the pool drains (the dispatcher may have
    // finished, so the queue would strand them).
    let mut held = VecDeque::new();
    let mut successor = Successor::default();
    slot.set_lane(worker.lane());
    let exit = loop {
        if slot.is_retiring() {
            if slot.state() != WorkerState::Busy {
                break Exit::Retire;
            }
            // A direct call holds the worker: it leaves once that call ends.
            if !wait_for_release(&slot, &mut phase).await {
                break Exit::Kill;
            }
            continue;
        }
        // Busy here means a direct-lane caller holds the worker: announce it all the same, the
        // dispatcher keeps it listed and uses it once it is idle again.
        if held.is_empty() && inbox.is_empty() && matches!(slot.state(), WorkerState::Idle | WorkerState::Busy) {
            let _ = shared.idle_tx.send(Arc::clone(&slot));
        }
        let wake = if let Some(fault) = slot.take_replacement() {
            // A failed health check: replaced as if it had died while idle.
            Wake::Fault(fault)
        } else if let Some(job) = held.pop_front() {
            Wake::Job(job)
        } else {
            tokio::select! {
                biased;
                _ = phase.wait_for(|p| *p >= Phase::Killing) => Wake::Stop,
                () = slot.released.notified() => Wake::Released,
                Some(job) = inbox.recv() => Wake::Job(job),
                () = slot.retire.notified() => continue,
                _ = drained.wait_for(|d| *d) => Wake::Stop,
                fault = worker.terminated() => Wake::Fault(fault),
                next = successor.ready(&shared) => Wake::Successor(next),
                else => Wake::Stop,
            }
        };
        let failure = match wake {
            Wake::Stop => break if shared.phase() >= Phase::Killing { Exit::Kill } else { Exit::Stop },
            Wake::Released => match slot.state() {
                // A direct call crashed: its task was consumed.
                WorkerState::Failed => Failure {
                    fault: slot.take_claim_fault().unwrap_or_else(|| WorkerFault::new("direct call failed")),
                    stage: FailureStage::Task,
                },
                _ => continue,
            },
            Wake::Successor(Ok(next)) => {
                successor.take_over(&mut worker, next, &slot, &shared).await;
                continue;
            }
            // Handled as a restart that failed: the pacer decides when to try again.
            Wake::Successor(Err(fault)) => Failure { fault, stage: FailureStage::Setup },
            Wake::Fault(fault) => {
                // Take the worker before touching it; if a direct caller holds it, the closed
                // lane wakes that caller, and we recover once it lets go.
                if !slot.try_claim() && slot.state() == WorkerState::Busy {
                    if !wait_for_release(&slot, &mut phase).await {
                        break Exit::Kill;
                    }
                    if slot.state() == WorkerState::Idle && !slot.try_claim() {
                        continue;
                    }
                }
                // A claim fault means it died under a direct call, whatever its exit code;
                // otherwise it died while idle.
                let stage = if slot.take_claim_fault().is_some() { FailureStage::Task } else { FailureStage::Idle };
                Failure { fault, stage }
            }
            Wake::Job(job) if slot.is_retiring() => {
                // Leaving: it runs nothing more (the loop's top fails or hands the job on).
                held.push_front(job);
                continue;
            }
            Wake::Job(job) => {
                if job.options.coalesce.is_some() {
                    // The dispatcher may have put more of the call's tasks here: gather them too.
                    gather::requeue_inbox(&mut inbox, &mut held, &shared);
                }
                let mut queues = JobQueues { inbox: &mut inbox, held: &mut held };
                match run_job(&mut worker, &slot, job, &mut phase, &shared, &mut pace, &mut queues).await {
                    JobEnd::Idle if config.on_demand.is_some() => break Exit::Spent { failed: false },
                    JobEnd::Idle if needs_recycling(&worker, &slot, config) => {
                        if successor.start(&worker, &shared) {
                            continue;
                        }
                        match recycle(&mut worker, &slot, &shared).await {
                            Ok(()) => continue,
                            Err(fault) => Failure { fault, stage: FailureStage::Setup },
                        }
                    }
                    JobEnd::Idle => continue,
                    JobEnd::Deferred => {
                        if !wait_for_release(&slot, &mut phase).await {
                            break Exit::Kill;
                        }
                        if slot.state() != WorkerState::Failed {
                            continue;
                        }
                        Failure {
                            fault: slot.take_claim_fault().unwrap_or_else(|| WorkerFault::new("direct call failed")),
                            stage: FailureStage::Task,
                        }
                    }
                    JobEnd::Killed => break Exit::Kill,
                    JobEnd::Failed(failure) => failure,
                }
            }
        };
        slot.set_lane(None);
        if config.on_demand.is_some() {
            // Not restarted: its task failed (or runs again on a fresh worker, see `run_job`).
            slot.set_last_error(failure.fault.to_string());
            break Exit::Spent { failed: true };
        }
        match recover(&mut worker, &slot, &shared, &mut restarts, failure, &mut phase).await {
            Recovery::Serving => slot.set_lane(worker.lane()),
            Recovery::Killed => break Exit::Kill,
            Recovery::Left(reason) => break Exit::Left(reason),
        }
    };
    slot.set_lane(None);
    successor.finish(&shared).await;

    inbox.close();
    let leftovers: Vec<Job<W>> = held.into_iter().chain(std::iter::from_fn(|| inbox.try_recv().ok())).collect();
    let departure = match &exit {
        Exit::Left(reason) => Some(reason.clone()),
        Exit::Retire => Some("retired".to_owned()),
        Exit::Spent { .. } => Some("retired after its one task (on demand)".to_owned()),
        Exit::Stop | Exit::Kill => None,
    };
    for job in leftovers {
        if job.addressed {
            slot.addressed_waiting.fetch_sub(1, Ordering::AcqRel);
        }
        match &departure {
            // Only this worker may run it, and it is gone: say so, naming it.
            Some(reason) if job.addressed => job.fail(TaskError::NoWorkers(NoWorkerReason::departed(slot.id, reason))),
            // Another worker can still run it; if none is left, the queue fails it.
            Some(_) => shared.queue.give_back(job),
            None => job.fail(TaskError::ShutDown),
        }
    }
    match exit {
        // Stays `Failed`, so stats show why.
        Exit::Left(_) => worker.kill().await,
        Exit::Stop | Exit::Kill | Exit::Retire | Exit::Spent { .. } => {
            if slot.state() != WorkerState::Stopping {
                slot.apply(WorkerEvent::StopRequested);
            }
            if matches!(exit, Exit::Kill | Exit::Spent { failed: true }) {
                worker.kill().await;
            } else {
                worker.stop().await;
            }
            slot.apply(WorkerEvent::Exited);
        }
    }
    shared.report_process_end(&slot);
    slot.set_pid(None);
    match (&exit, departure) {
        // Its normal end, not news: `NoWorkers` errors keep naming workers that did go wrong.
        (Exit::Spent { .. }, _) => shared.on_demand.retired(),
        (_, Some(reason)) => shared.record_departure(slot.id, reason),
        (_, None) => {}
    }
    // Whatever the worker holds goes before its place is given back: an on-demand pool starts
    // the next worker as soon as it is.
    drop(worker);
    shared.worker_exited(&slot, !matches!(exit, Exit::Retire | Exit::Spent { .. }));
}

/// Registers a worker and runs its setup, `start(id)`, on `runtime` (so a process it spawns is
/// tied to a long-lived thread), then its serve loop; `on_ready` gets its slot and what the
/// setup returned, or why it failed. Returns the worker's id. Used by
/// [`Supervisor::start_worker`] and the on-demand dispatcher (which starts workers while the
/// pool drains, too).
pub(crate) fn launch<W, S, E, F, M, R>(
    shared: &Arc<Shared<W>>,
    runtime: tokio::runtime::Handle,
    start: M,
    on_ready: R,
) -> u64
where
    W: Workable,
    S: Send + 'static,
    E: Send + 'static,
    F: Future<Output = Result<(W, S), E>> + Send + 'static,
    M: FnOnce(u64) -> F,
    R: FnOnce(Result<(Arc<WorkerSlot<W>>, S), StartError<E>>) + Send + 'static,
{
    let id = shared.next_worker_id.fetch_add(1, Ordering::Relaxed);
    let start = start(id);
    let (inbox_tx, inbox_rx) = mpsc::unbounded_channel();
    let slot = Arc::new(WorkerSlot::new(id, inbox_tx));
    shared.slots().push(Arc::clone(&slot));
    shared.live.fetch_add(1, Ordering::AcqRel);
    let shared = Arc::clone(shared);
    runtime.spawn(async move {
        let mut phase = shared.phase.subscribe();
        let started = tokio::select! {
            started = start => Some(started),
            _ = phase.wait_for(|p| *p >= Phase::Killing) => None,
        };
        match started {
            Some(Ok((worker, value))) => {
                slot.process_started(worker.pid());
                // The lane first: a caller told the worker is ready may claim it at once.
                slot.set_lane(worker.lane());
                slot.apply(WorkerEvent::Ready);
                on_ready(Ok((Arc::clone(&slot), value)));
                // Serve on a task of its own so a panicking worker is noticed, not lost.
                let serving = tokio::spawn(serve(worker, Arc::clone(&slot), inbox_rx, Arc::clone(&shared)));
                if let Err(error) = serving.await {
                    // The worker (and its process, killed on drop) went down with the task.
                    slot.mark_panicked(format!("worker task ended abnormally: {error}"));
                    shared.report_process_end(&slot);
                    shared.record_departure(id, format!("ended abnormally: {error}"));
                    shared.worker_exited(&slot, true);
                }
            }
            Some(Err(error)) => {
                slot.apply(WorkerEvent::Crashed);
                slot.apply(WorkerEvent::Exited);
                shared.report_exit(WorkerExit { worker_id: id, pid: None });
                shared.record_departure(id, "never started: its setup failed".to_owned());
                shared.worker_exited(&slot, false);
                on_ready(Err(StartError::Failed(error)));
            }
            None => {
                slot.apply(WorkerEvent::StopRequested);
                slot.apply(WorkerEvent::Exited);
                shared.report_exit(WorkerExit { worker_id: id, pid: None });
                shared.worker_exited(&slot, false);
                on_ready(Err(StartError::ShutDown));
            }
        }
    });
    id
}

/// Waits until a direct-lane caller gives the worker back; false when the pool is killed first.
async fn wait_for_release<W: Workable>(slot: &WorkerSlot<W>, phase: &mut watch::Receiver<Phase>) -> bool {
    slot.serve_waiting.store(true, Ordering::SeqCst);
    // A store then a load, against release_claim's store (the state) then load (this flag):
    // without a full fence on both sides each may read the other's old value (the store waits in
    // a store buffer), the release rings nobody and this waits for ever on a worker already
    // given back, holding the job it was sent (CI hung on it once).
    fence(Ordering::SeqCst);
    let released = loop {
        // Checked after announcing we wait, so a release in between is not missed.
        if slot.state() != WorkerState::Busy {
            break true;
        }
        tokio::select! {
            () = slot.released.notified() => {}
            _ = phase.wait_for(|p| *p >= Phase::Killing) => break false,
        }
    };
    slot.serve_waiting.store(false, Ordering::Release);
    released
}

/// Where jobs reach a serve loop besides the queue: its inbox, and the jobs it holds.
struct JobQueues<'a, W: Workable> {
    inbox: &'a mut mpsc::UnboundedReceiver<Job<W>>,
    held: &'a mut VecDeque<Job<W>>,
}

/// Runs one job on the worker, which it first takes (`Idle` to `Busy`), or a batch starting
/// with it (see [`crate::sched::batch`]), or, on a worker that runs several tasks at once,
/// it and the tasks that reach the worker while it runs (see [`crate::sched::concurrent`]).
async fn run_job<W: Workable>(
    worker: &mut W,
    slot: &Arc<WorkerSlot<W>>,
    job: Job<W>,
    phase: &mut watch::Receiver<Phase>,
    shared: &Shared<W>,
    pace: &mut Pace,
    queues: &mut JobQueues<'_, W>,
) -> JobEnd {
    let held = &mut *queues.held;
    if !slot.try_claim() {
        // A direct-lane caller holds the worker. A job addressed to it waits for it (direct
        // callers leave the worker alone meanwhile); any other job goes back to the queue, for
        // whichever worker is free first.
        if job.addressed {
            held.push_front(job);
        } else {
            shared.queue.give_back(job);
        }
        return JobEnd::Deferred;
    }
    if job.addressed {
        slot.addressed_waiting.fetch_sub(1, Ordering::AcqRel);
    }
    if !job.ticket.begin() {
        slot.apply(WorkerEvent::TaskFinished);
        job.fail(TaskError::Cancelled);
        return JobEnd::Idle;
    }
    // Coalesced calls and on-demand workers (one task per worker) run one call at a time.
    let concurrent = worker.concurrency() > 1 && shared.config.on_demand.is_none();
    let claimed = Claimed { worker, slot, phase, shared };
    let ran = if job.options.coalesce.is_some() {
        gather::run(claimed, job).await
    } else if concurrent {
        concurrent::run(claimed, slot, job, queues.inbox, held).await
    } else {
        batch::run(claimed, job, pace).await
    };
    match ran {
        BatchEnd::Idle => JobEnd::Idle,
        BatchEnd::Killed => JobEnd::Killed,
        BatchEnd::Failed { fault, unstarted, stage } => {
            for job in unstarted {
                if shared.config.on_demand.is_some() && stage != FailureStage::Task {
                    // Its fresh worker died before the task reached it: fail it rather than
                    // start worker after worker for it.
                    let fault = WorkerFault::new(format!("on-demand worker died before its task started: {fault}"));
                    job.fail(TaskError::WorkerCrashed { worker: slot.id, fault });
                } else if job.addressed {
                    // Runs on this worker once it is back, or fails naming it.
                    slot.addressed_waiting.fetch_add(1, Ordering::AcqRel);
                    held.push_back(job);
                } else if shared.queue.is_closed() {
                    held.push_back(job);
                } else {
                    shared.queue.give_back(job);
                }
            }
            JobEnd::Failed(Failure { fault, stage })
        }
    }
}

fn needs_recycling<W: Workable>(worker: &W, slot: &WorkerSlot<W>, config: &crate::Config) -> bool {
    let by_count = config.max_tasks_per_worker.is_some_and(|max| slot.tasks_since_renewal() >= max);
    let by_memory = config.max_memory_per_worker.is_some_and(|max| worker.memory_bytes().is_some_and(|rss| rss > max));
    by_count || by_memory
}

/// Replaces an idle worker that ran its share of tasks or grew too large: stops its process,
/// reports it, starts a new one. The error is the new one's setup failure (state `Failed`).
async fn recycle<W: Workable>(worker: &mut W, slot: &WorkerSlot<W>, shared: &Shared<W>) -> Result<(), WorkerFault> {
    slot.apply(WorkerEvent::Recycle);
    slot.set_lane(None);
    slot.restarts.fetch_add(1, Ordering::Relaxed);
    worker.stop().await;
    shared.report_process_end(slot);
    match worker.restart().await {
        Ok(()) => {
            slot.renewed();
            slot.process_started(worker.pid());
            slot.set_lane(worker.lane());
            slot.apply(WorkerEvent::Ready);
            Ok(())
        }
        Err(fault) => {
            slot.apply(WorkerEvent::Crashed);
            shared.report_exit(WorkerExit { worker_id: slot.id, pid: None });
            Err(fault)
        }
    }
}

/// Handles a failed worker: makes sure its process is dead and reports it, then restarts it
/// when the policy and the pacer allow (after the pacer's backoff, which a kill cuts short).
async fn recover<W: Workable>(
    worker: &mut W,
    slot: &WorkerSlot<W>,
    shared: &Shared<W>,
    restarts: &mut Restarts,
    failure: Failure,
    phase: &mut watch::Receiver<Phase>,
) -> Recovery {
    let Failure { mut fault, mut stage } = failure;
    if slot.state() != WorkerState::Failed {
        slot.apply(WorkerEvent::Crashed);
    }
    // A worker that broke its protocol may still run: kill it before saying it ended.
    worker.kill().await;
    shared.report_process_end(slot);
    slot.set_pid(None);
    let done = slot.tasks_done.load(Ordering::Relaxed);
    if done != restarts.tasks_done_at_failure {
        restarts.pacer.served();
        restarts.tasks_done_at_failure = done;
    }
    loop {
        slot.set_last_error(fault.to_string());
        // Restart while draining too: a graceful shutdown still owes the queued tasks a worker.
        if shared.phase() >= Phase::Killing {
            return Recovery::Killed;
        }
        match restarts.pacer.failed(stage, fault.is_clean_exit(), Instant::now()) {
            RestartDecision::Leave(why) => {
                let reason = format!("{why}; last error: {fault}");
                slot.set_last_error(reason.clone());
                return Recovery::Left(reason);
            }
            RestartDecision::Restart(delay) if !delay.is_zero() => {
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    _ = phase.wait_for(|p| *p >= Phase::Killing) => return Recovery::Killed,
                }
            }
            RestartDecision::Restart(_) => {}
        }
        slot.apply(WorkerEvent::Restart);
        slot.restarts.fetch_add(1, Ordering::Relaxed);
        let restarted = tokio::select! {
            r = worker.restart() => Some(r),
            _ = phase.wait_for(|p| *p >= Phase::Killing) => None,
        };
        match restarted {
            Some(Ok(())) => {
                slot.process_started(worker.pid());
                slot.apply(WorkerEvent::Ready);
                return Recovery::Serving;
            }
            Some(Err(next)) => {
                // The setup's process is gone (a failed restart leaves none behind).
                slot.apply(WorkerEvent::Crashed);
                shared.report_exit(WorkerExit { worker_id: slot.id, pid: None });
                fault = next;
                stage = FailureStage::Setup;
            }
            None => {
                // Cut short mid-setup: whatever it started dies with it.
                worker.kill().await;
                shared.report_exit(WorkerExit { worker_id: slot.id, pid: None });
                return Recovery::Killed;
            }
        }
    }
}
