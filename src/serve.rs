//! The loop each worker runs on the supervisor's runtime: take a task, run it, handle what
//! went wrong, restart or retire. It alone moves its worker through the state machine.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, watch};

use crate::batch::{self, BatchEnd, Pace};
use crate::error::{TaskError, WorkerFault};
use crate::job::Job;
use crate::restart::RestartIntensity;
use crate::shutdown::Phase;
use crate::slot::WorkerSlot;
use crate::state::WorkerEvent;
use crate::supervisor::Shared;
use crate::workable::Workable;

/// What the idle worker woke up for.
enum Wake<W: Workable> {
    Job(Job<W>),
    Fault(WorkerFault),
    /// A direct-lane call gave the worker back.
    Released,
    /// Queue closed and empty (graceful), or kill requested.
    Stop,
}

/// What `run_job` left the worker in.
enum JobEnd {
    /// Fine, idle again.
    Idle,
    /// Broken: recover it.
    Failed(WorkerFault),
    /// The pool is being killed.
    Killed,
    /// A direct-lane caller holds the worker; the job went back to the queue.
    Deferred,
}

/// Why the loop ended.
enum Exit {
    Stop,
    Kill,
    Retire,
    GaveUp,
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
    let mut intensity = RestartIntensity::new(config.max_restarts, config.restart_window);
    let mut pace = Pace::default();
    // Tasks of a failed batch that never ran, kept here while the pool drains (the dispatcher
    // may have finished, so the queue would strand them).
    let mut backlog = std::collections::VecDeque::new();
    slot.set_lane(worker.lane());
    let exit = loop {
        if slot.is_retiring() && slot.state() != crate::WorkerState::Busy {
            break Exit::Retire;
        }
        // Busy here means a direct-lane caller holds the worker: announce it all the same, the
        // dispatcher keeps it listed and uses it once it is idle again.
        if backlog.is_empty()
            && inbox.is_empty()
            && matches!(slot.state(), crate::WorkerState::Idle | crate::WorkerState::Busy)
        {
            let _ = shared.idle_tx.send(Arc::clone(&slot));
        }
        let wake = if let Some(job) = backlog.pop_front() {
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
                else => Wake::Stop,
            }
        };
        let fault = match wake {
            Wake::Stop => break if shared.phase() >= Phase::Killing { Exit::Kill } else { Exit::Stop },
            Wake::Released => match slot.state() {
                crate::WorkerState::Failed => {
                    slot.take_claim_fault().unwrap_or_else(|| WorkerFault::new("direct call failed"))
                }
                _ => continue,
            },
            Wake::Fault(fault) => {
                // Take the worker before touching it; if a direct caller holds it, the closed
                // lane wakes that caller, and we recover once it lets go.
                if !slot.try_claim() && slot.state() == crate::WorkerState::Busy {
                    let released = wait_for_release(&slot, &mut phase).await;
                    if !released {
                        break Exit::Kill;
                    }
                    if slot.state() == crate::WorkerState::Idle && !slot.try_claim() {
                        continue;
                    }
                }
                let _ = slot.take_claim_fault();
                fault
            }
            Wake::Job(job) => {
                match run_job(&mut worker, &slot, job, &mut phase, &shared, &mut pace, &mut backlog).await {
                    JobEnd::Idle if needs_recycling(&worker, &slot, config) => {
                        slot.apply(WorkerEvent::Recycle);
                        slot.set_lane(None);
                        slot.restarts.fetch_add(1, Ordering::Relaxed);
                        worker.stop().await;
                        match worker.restart().await {
                            Ok(()) => {
                                slot.set_pid(worker.pid());
                                slot.set_lane(worker.lane());
                                slot.apply(WorkerEvent::Ready);
                                continue;
                            }
                            Err(fault) => {
                                slot.apply(WorkerEvent::Crashed);
                                fault
                            }
                        }
                    }
                    JobEnd::Idle => continue,
                    JobEnd::Deferred => {
                        wait_for_release(&slot, &mut phase).await;
                        if slot.state() == crate::WorkerState::Failed {
                            slot.take_claim_fault().unwrap_or_else(|| WorkerFault::new("direct call failed"))
                        } else {
                            continue;
                        }
                    }
                    JobEnd::Killed => break Exit::Kill,
                    JobEnd::Failed(fault) => fault,
                }
            }
        };
        slot.set_lane(None);
        if !recover(&mut worker, &slot, &shared, &mut intensity, fault, &mut phase).await {
            break if shared.phase() >= Phase::Killing { Exit::Kill } else { Exit::GaveUp };
        }
        slot.set_lane(worker.lane());
    };
    slot.set_lane(None);

    inbox.close();
    let leftovers: Vec<Job<W>> = backlog.into_iter().collect();
    for job in leftovers.into_iter().chain(std::iter::from_fn(|| inbox.try_recv().ok())) {
        if matches!(exit, Exit::GaveUp | Exit::Retire) {
            // Another worker can still run it; if none is left, the queue fails it.
            shared.queue.give_back(job);
        } else {
            job.fail(TaskError::ShutDown);
        }
    }
    match exit {
        Exit::GaveUp => worker.kill().await,
        Exit::Stop | Exit::Kill | Exit::Retire => {
            if slot.state() != crate::WorkerState::Stopping {
                slot.apply(WorkerEvent::StopRequested);
            }
            if matches!(exit, Exit::Stop | Exit::Retire) {
                worker.stop().await;
            } else {
                worker.kill().await;
            }
            slot.apply(WorkerEvent::Exited);
        }
    }
    slot.set_pid(None);
    shared.worker_exited(&slot, !matches!(exit, Exit::Retire));
}

/// Waits until a direct-lane caller gives the worker back; false when the pool is killed first.
async fn wait_for_release<W: Workable>(slot: &WorkerSlot<W>, phase: &mut watch::Receiver<Phase>) -> bool {
    slot.serve_waiting.store(true, Ordering::Release);
    let released = loop {
        // Checked after announcing we wait, so a release in between is not missed.
        if slot.state() != crate::WorkerState::Busy {
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

/// Runs one job on the worker, which it first takes (`Idle` to `Busy`), or a batch starting
/// with it (see [`crate::batch`]).
async fn run_job<W: Workable>(
    worker: &mut W,
    slot: &WorkerSlot<W>,
    job: Job<W>,
    phase: &mut watch::Receiver<Phase>,
    shared: &Shared<W>,
    pace: &mut Pace,
    backlog: &mut std::collections::VecDeque<Job<W>>,
) -> JobEnd {
    if !slot.try_claim() {
        shared.queue.give_back(job);
        return JobEnd::Deferred;
    }
    if !job.ticket.begin() {
        slot.apply(WorkerEvent::TaskFinished);
        job.fail(TaskError::Cancelled);
        return JobEnd::Idle;
    }
    match batch::run(worker, slot, job, phase, shared, pace).await {
        BatchEnd::Idle => JobEnd::Idle,
        BatchEnd::Killed => JobEnd::Killed,
        BatchEnd::Failed { fault, unstarted } => {
            for job in unstarted {
                if shared.queue.is_closed() {
                    backlog.push_back(job);
                } else {
                    shared.queue.give_back(job);
                }
            }
            JobEnd::Failed(fault)
        }
    }
}

fn needs_recycling<W: Workable>(worker: &W, slot: &WorkerSlot<W>, config: &crate::Config) -> bool {
    let by_count = config.max_tasks_per_worker.is_some_and(|max| slot.tasks_done.load(Ordering::Relaxed) % max == 0);
    let by_memory = config.max_memory_per_worker.is_some_and(|max| worker.memory_bytes().is_some_and(|rss| rss > max));
    by_count || by_memory
}

/// Handles a failed worker (state `Failed`): restarts it if the policy and intensity allow.
/// Returns whether the worker is serving again.
async fn recover<W: Workable>(
    worker: &mut W,
    slot: &WorkerSlot<W>,
    shared: &Shared<W>,
    intensity: &mut RestartIntensity,
    mut fault: WorkerFault,
    phase: &mut watch::Receiver<Phase>,
) -> bool {
    if slot.state() != crate::WorkerState::Failed {
        slot.apply(WorkerEvent::Crashed);
    }
    slot.set_pid(None);
    loop {
        slot.set_last_error(fault.to_string());
        // Restart while draining too: a graceful shutdown still owes the queued tasks a worker.
        if shared.phase() >= Phase::Killing || !shared.config.restart_policy.restarts(fault.is_clean_exit()) {
            return false;
        }
        if !intensity.allow(Instant::now()) {
            let c = &shared.config;
            slot.set_last_error(format!(
                "{fault}; gave up after {} restarts within {:?}",
                c.max_restarts, c.restart_window
            ));
            return false;
        }
        slot.apply(WorkerEvent::Restart);
        slot.restarts.fetch_add(1, Ordering::Relaxed);
        let restarted = tokio::select! {
            r = worker.restart() => r,
            _ = phase.wait_for(|p| *p >= Phase::Killing) => Err(WorkerFault::new("pool is shutting down")),
        };
        match restarted {
            Ok(()) => {
                slot.set_pid(worker.pid());
                slot.apply(WorkerEvent::Ready);
                return true;
            }
            Err(next) => {
                slot.apply(WorkerEvent::Crashed);
                fault = next;
            }
        }
    }
}
