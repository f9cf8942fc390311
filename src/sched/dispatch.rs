//! The dispatcher: one task per pool that binds queued tasks to idle workers, late.
//!
//! Workers announce themselves when idle; the dispatcher takes a task from the queue only
//! while some worker is idle, asks the balancer which one, and puts the task in that worker's
//! inbox. A task therefore never waits behind a running task while another worker is idle.
//!
//! A keyed task (sticky routing, `TaskOptions::key`) goes to the worker that owns its key by
//! rendezvous hashing over the serving workers. If that worker is busy, the task either waits
//! in that worker's own inbox (`Sticky::Wait`; it runs there after the tasks already sent to
//! it, in the order the dispatcher took them from the queue, which is priority order) or goes
//! to an idle worker like any task (`Sticky::Spill`, a miss).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::job::{Job, Sticky};
use crate::pool::shutdown::Phase;
use crate::pool::supervisor::Shared;
use crate::sched::balance::{rendezvous, Balancer, Candidate};
use crate::worker::slot::WorkerSlot;
use crate::worker::state::WorkerState;
use crate::worker::workable::Workable;

pub(crate) async fn dispatch<W: Workable>(
    shared: Arc<Shared<W>>,
    mut idle_rx: mpsc::UnboundedReceiver<Arc<WorkerSlot<W>>>,
) {
    let seed = u64::from(std::process::id()) ^ (std::ptr::from_ref(&*shared) as u64);
    let mut balancer = Balancer::new(shared.config.load_balancing, seed);
    let mut idle: Vec<Arc<WorkerSlot<W>>> = Vec::new();
    let mut phase = shared.phase.subscribe();
    let mut candidates = Vec::new();
    loop {
        while let Ok(slot) = idle_rx.try_recv() {
            if !idle.iter().any(|s| s.id == slot.id) {
                idle.push(slot);
            }
        }
        // A worker may have crashed or been retired since it announced; one that is busy with a
        // direct-lane call stays listed, since it comes back without announcing itself.
        idle.retain(|s| matches!(s.state(), WorkerState::Idle | WorkerState::Busy) && !s.is_retiring());
        if shared.queue.is_closed() && shared.queue.len() == 0 {
            break; // drained: a graceful shutdown needs no more workers
        }
        let job = if !idle.iter().any(|s| s.state() == WorkerState::Idle) {
            tokio::select! {
                slot = idle_rx.recv() => {
                    idle.extend(slot);
                    continue;
                }
                () = shared.direct_released.notified() => continue,
                // A push while every listed worker is busy on a direct call: look again (the
                // caller's release only rings if it saw the task queued).
                () = shared.queue.pushed() => continue,
                _ = phase.wait_for(|p| *p >= Phase::Killing) => break,
            }
        } else {
            tokio::select! {
                biased;
                _ = phase.wait_for(|p| *p >= Phase::Killing) => break,
                job = shared.queue.pop() => match job {
                    Some(job) => job,
                    None => break,
                },
                slot = idle_rx.recv() => {
                    idle.extend(slot);
                    continue;
                }
            }
        };
        let Some(job) = route_keyed(&shared, &mut idle, job) else { continue };
        // Workers may have been claimed since the check above: pick among those still idle, or
        // put the task back and wait.
        let free: Vec<usize> = (0..idle.len()).filter(|&i| idle[i].state() == WorkerState::Idle).collect();
        if free.is_empty() {
            shared.queue.give_back(job);
            continue;
        }
        candidates.clear();
        candidates.extend(free.iter().map(|&i| Candidate {
            id: idle[i].id,
            active: 0,
            total: idle[i].dispatched.load(Ordering::Relaxed),
        }));
        let slot = idle.swap_remove(free[balancer.pick(&candidates)]);
        slot.dispatched.fetch_add(1, Ordering::Relaxed);
        shared.dispatched.fetch_add(1, Ordering::Relaxed);
        if let Err(returned) = slot.inbox.send(job) {
            shared.queue.give_back(returned.0);
        }
    }
    shared.drained.send_replace(true);
}

/// Sends a keyed job to its key's worker (taking it off `idle` if it was there); hands the job
/// back when it should go to any idle worker instead (not keyed, spilled, or no owner).
fn route_keyed<W: Workable>(shared: &Shared<W>, idle: &mut Vec<Arc<WorkerSlot<W>>>, job: Job<W>) -> Option<Job<W>> {
    let Some(key) = job.options.key else { return Some(job) };
    let owner = {
        let slots = shared.slots();
        let serving =
            |s: &&Arc<WorkerSlot<W>>| matches!(s.state(), WorkerState::Idle | WorkerState::Busy) && !s.is_retiring();
        let id = rendezvous::owner(key, slots.iter().filter(serving).map(|s| s.id));
        id.and_then(|id| slots.iter().find(|s| s.id == id).cloned())
    };
    let Some(owner) = owner else { return Some(job) };
    let idle_at = idle.iter().position(|s| s.id == owner.id && s.state() == WorkerState::Idle);
    if idle_at.is_none() && job.options.sticky == Sticky::Spill {
        shared.sticky.record(false);
        return Some(job);
    }
    if let Some(at) = idle_at {
        idle.swap_remove(at);
    }
    shared.sticky.record(true);
    owner.dispatched.fetch_add(1, Ordering::Relaxed);
    shared.dispatched.fetch_add(1, Ordering::Relaxed);
    if let Err(returned) = owner.inbox.send(job) {
        // It left meanwhile: route again (to the next owner).
        shared.queue.give_back(returned.0);
    }
    None
}
