//! Health checks: every interval, each idle worker runs a check task (addressed to it, as a
//! broadcast is) with its own deadline. A check that answers unhealthy, raises, or crashes its
//! worker has the worker replaced; one that runs past its deadline is a hung worker, killed
//! and replaced by the timeout path as any late task is. A check is not a task of the user's:
//! it is not counted in `tasks_done`, and only idle workers are checked, so it never delays a
//! queued task for long.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::error::{TaskError, WorkerFault};
use crate::job::{Job, Outcome, TaskOptions, Ticket};
use crate::pool::shared::Shared;
use crate::pool::shutdown::Phase;
use crate::worker::slot::WorkerSlot;
use crate::worker::state::WorkerState;
use crate::worker::workable::Workable;

/// Says whether a check's output means the worker is healthy.
pub type HealthVerdict<W> = Arc<dyn Fn(&<W as Workable>::Output) -> bool + Send + Sync>;

/// A health check run by [`crate::Supervisor::check_health`].
pub struct HealthCheck<W: Workable> {
    /// The task each idle worker runs as its check.
    pub task: W::Task,
    /// How often each idle worker is checked.
    pub interval: Duration,
    /// How long one check may run before its worker counts as hung (killed and replaced).
    pub timeout: Duration,
    /// Whether a check's output means healthy; an error or a crash never does.
    pub healthy: HealthVerdict<W>,
}

impl<W: Workable> std::fmt::Debug for HealthCheck<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HealthCheck").field("interval", &self.interval).field("timeout", &self.timeout).finish()
    }
}

/// Checks the pool's idle workers every `check.interval` until it stops taking work.
pub(crate) async fn run<W: Workable>(shared: Arc<Shared<W>>, check: HealthCheck<W>)
where
    W::Task: Clone,
{
    let mut phase = shared.phase.subscribe();
    loop {
        tokio::select! {
            () = tokio::time::sleep(check.interval) => {}
            _ = phase.wait_for(|p| *p != Phase::Running) => return,
        }
        let idle: Vec<Arc<WorkerSlot<W>>> = shared
            .slots()
            .iter()
            .filter(|s| {
                s.state() == WorkerState::Idle
                    && !s.is_retiring()
                    && s.addressed_waiting.load(Ordering::Acquire) == 0
                    && !s.health_check_pending.swap(true, Ordering::AcqRel)
            })
            .cloned()
            .collect();
        for slot in idle {
            send_check(&slot, &check);
        }
    }
}

/// Hands `slot` its check, past the queue; the reply judges it.
fn send_check<W: Workable>(slot: &Arc<WorkerSlot<W>>, check: &HealthCheck<W>)
where
    W::Task: Clone,
{
    let (judged, healthy) = (Arc::clone(slot), Arc::clone(&check.healthy));
    let reply = Box::new(move |outcome: Outcome<W>| judge(&judged, &healthy, outcome));
    let mut job = Job::new(
        check.task.clone(),
        Ticket::default(),
        TaskOptions { timeout: Some(check.timeout), ..TaskOptions::default() },
        reply,
    );
    job.addressed = true;
    slot.addressed_waiting.fetch_add(1, Ordering::AcqRel);
    if slot.inbox.send(job).is_err() {
        // The worker is leaving: nothing to check.
        slot.addressed_waiting.fetch_sub(1, Ordering::AcqRel);
        slot.health_check_pending.store(false, Ordering::Release);
    }
}

/// Runs on the runtime when a check ends, before the worker takes its next task.
fn judge<W: Workable>(slot: &WorkerSlot<W>, healthy: &HealthVerdict<W>, outcome: Outcome<W>) {
    slot.health_check_pending.store(false, Ordering::Release);
    let failure = match outcome {
        Ok(output) => {
            // A check is not one of the user's tasks.
            slot.tasks_done.fetch_sub(1, Ordering::Relaxed);
            if healthy(&output) {
                return;
            }
            Some("the health check answered unhealthy".to_owned())
        }
        Err(TaskError::Failed(_)) => {
            slot.tasks_done.fetch_sub(1, Ordering::Relaxed);
            Some("the health check raised".to_owned())
        }
        // Already being replaced by the timeout or crash path.
        Err(TaskError::TimedOut(_) | TaskError::WorkerCrashed { .. }) => None,
        // The pool is stopping or the worker left: not the worker's fault.
        Err(_) => return,
    };
    slot.health_failures.fetch_add(1, Ordering::Relaxed);
    if let Some(why) = failure {
        slot.request_replacement(WorkerFault::new(why));
    }
}
