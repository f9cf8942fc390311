//! The dispatcher: one task per pool that binds queued tasks to idle workers, late.
//!
//! Workers announce themselves when idle; the dispatcher takes a task from the queue only
//! while some worker is idle, asks the balancer which one, and puts the task in that worker's
//! inbox. A task therefore never waits behind a running task while another worker is idle.
//!
//! A keyed task (sticky routing, `TaskOptions::key`) goes to the worker that owns its key by
//! rendezvous hashing over the serving workers. If that worker is busy, the task either is
//! parked in the queue for that worker (`Sticky::Wait`: when the worker is idle again it gets
//! the tasks parked for it, by priority, before anything else; if it stops serving they are
//! routed again) or goes to an idle worker like any task (`Sticky::Spill`, a miss).

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::sync::{mpsc, watch};

use crate::error::TaskError;
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
        // Armed before the parked tasks are checked, so a worker leaving after the check wakes
        // us (their owner may be gone).
        let mut exited = pin!(shared.exited.notified());
        exited.as_mut().enable();
        while let Ok(slot) = idle_rx.try_recv() {
            if !idle.iter().any(|s| s.id == slot.id) {
                idle.push(slot);
            }
        }
        // A worker may have crashed or been retired since it announced; one that is busy with a
        // direct-lane call stays listed, since it comes back without announcing itself.
        idle.retain(|s| serving(s));
        if hand_out_parked(&shared, &mut idle) {
            continue;
        }
        if shared.queue.is_closed() && shared.queue.len() == 0 {
            break; // drained: a graceful shutdown needs no more workers
        }
        let job = if !idle.iter().any(|s| s.has_room()) {
            tokio::select! {
                slot = idle_rx.recv() => {
                    idle.extend(slot);
                    continue;
                }
                () = shared.direct_released.notified() => continue,
                () = &mut exited => continue,
                // A push while every listed worker is busy on a direct call: look again (the
                // caller's release only rings if it saw the task queued).
                () = shared.queue.pushed() => continue,
                _ = phase.wait_for(|p| *p >= Phase::Killing) => break,
            }
        } else {
            match next_job(&shared, &mut phase, &mut idle_rx, &mut idle, exited.as_mut()).await {
                Woke::Job(job) => job,
                Woke::Again => continue,
                Woke::Stop => break,
            }
        };
        let Some(job) = route_keyed(&shared, &mut idle, job) else { continue };
        // Workers may have been claimed since the check above: pick among those still idle, or
        // put the task back and wait.
        let free: Vec<usize> = (0..idle.len()).filter(|&i| idle[i].has_room()).collect();
        if free.is_empty() {
            shared.queue.give_back(job);
            continue;
        }
        candidates.clear();
        candidates.extend(free.iter().map(|&i| Candidate {
            id: idle[i].id,
            active: idle[i].in_flight.load(Ordering::Relaxed),
            total: idle[i].dispatched.load(Ordering::Relaxed),
        }));
        place(&shared, &mut idle, free[balancer.pick(&candidates)], job);
    }
    shared.drained.send_replace(true);
}

/// Whether `slot` may own keys: serving, and not leaving.
fn serving<W: Workable>(slot: &WorkerSlot<W>) -> bool {
    matches!(slot.state(), WorkerState::Idle | WorkerState::Busy) && !slot.is_retiring()
}

/// Gives an idle worker the next task parked for it, and routes again the tasks parked for
/// workers that stopped serving. Returns whether it handed out or moved anything.
fn hand_out_parked<W: Workable>(shared: &Shared<W>, idle: &mut Vec<Arc<WorkerSlot<W>>>) -> bool {
    let owners = shared.queue.parked_owners();
    if owners.is_empty() {
        return false;
    }
    let gone: Vec<u64> = {
        let slots = shared.slots();
        owners.iter().copied().filter(|&id| !slots.iter().any(|s| s.id == id && serving(s))).collect()
    };
    let mut moved = false;
    for owner in gone {
        moved |= shared.queue.unpark(owner);
    }
    let Some(at) = idle.iter().position(|s| s.has_room() && owners.contains(&s.id)) else {
        return moved;
    };
    if let Some(job) = shared.queue.take_parked(idle[at].id) {
        shared.sticky.record(true);
        place(shared, idle, at, job);
    } else {
        idle.swap_remove(at);
    }
    true
}

/// What a dispatcher waiting for a task woke to.
pub(crate) enum Woke<W: Workable> {
    /// A task taken off the queue.
    Job(Job<W>),
    /// A worker announced it is idle (now in the list), or `also` ended: look again.
    Again,
    /// The pool is being killed, or its queue is closed and drained.
    Stop,
}

/// Waits for the next queued task, in this order of preference: the pool being killed, a
/// task, a worker announcing it is idle (added to `idle`), `also` (a worker exited).
pub(crate) async fn next_job<W: Workable>(
    shared: &Shared<W>,
    phase: &mut watch::Receiver<Phase>,
    idle_rx: &mut mpsc::UnboundedReceiver<Arc<WorkerSlot<W>>>,
    idle: &mut Vec<Arc<WorkerSlot<W>>>,
    also: impl Future<Output = ()>,
) -> Woke<W> {
    tokio::select! {
        biased;
        _ = phase.wait_for(|p| *p >= Phase::Killing) => Woke::Stop,
        job = shared.queue.pop() => job.map_or(Woke::Stop, Woke::Job),
        slot = idle_rx.recv() => {
            idle.extend(slot);
            Woke::Again
        }
        () = also => Woke::Again,
    }
}

/// Counts one task handed to `slot`, in the worker's and the pool's stats.
pub(crate) fn count_dispatch<W: Workable>(shared: &Shared<W>, slot: &WorkerSlot<W>) {
    slot.dispatched.fetch_add(1, Ordering::Relaxed);
    shared.dispatched.fetch_add(1, Ordering::Relaxed);
}

/// Starts `job` on `slot` where a worker takes more work behind its own (a pipeline share, a
/// gathered batch): `None` when its caller cancelled it meanwhile (then it is failed so).
pub(crate) fn begin_on<W: Workable>(shared: &Shared<W>, slot: &WorkerSlot<W>, job: Job<W>) -> Option<Job<W>> {
    if !job.ticket.begin() {
        job.fail(TaskError::Cancelled);
        return None;
    }
    count_dispatch(shared, slot);
    Some(job)
}

/// Hands `job` to the listed worker at `at`, which it takes off the list unless it still has
/// free seats (a worker running several tasks at once); back to the queue if the worker has no
/// room after all (claimed meanwhile) or is gone.
fn place<W: Workable>(shared: &Shared<W>, idle: &mut Vec<Arc<WorkerSlot<W>>>, at: usize, job: Job<W>) {
    let slot = idle.swap_remove(at);
    if !slot.reserve() {
        shared.queue.give_back(job);
        return;
    }
    send(shared, &slot, job);
    if slot.has_open_seat() {
        idle.push(slot);
    }
}

/// Hands `job` to `slot`'s serve loop (back to the queue if that worker is gone).
fn send<W: Workable>(shared: &Shared<W>, slot: &WorkerSlot<W>, job: Job<W>) {
    count_dispatch(shared, slot);
    if let Err(returned) = slot.inbox.send(job) {
        shared.queue.give_back(returned.0);
    }
}

/// Sends a keyed job to its key's idle worker (taking it off `idle`), or parks it for its busy
/// one; hands the job back when it should go to any idle worker instead (not keyed, spilled,
/// or no worker serves).
fn route_keyed<W: Workable>(shared: &Shared<W>, idle: &mut Vec<Arc<WorkerSlot<W>>>, job: Job<W>) -> Option<Job<W>> {
    let Some(key) = job.options.key else { return Some(job) };
    let owner = rendezvous::owner(key, shared.slots().iter().filter(|s| serving(s)).map(|s| s.id));
    let Some(owner) = owner else { return Some(job) };
    match idle.iter().position(|s| s.id == owner && s.has_room()) {
        Some(at) => {
            shared.sticky.record(true);
            place(shared, idle, at, job);
        }
        None if job.options.sticky == Sticky::Spill => {
            shared.sticky.record(false);
            return Some(job);
        }
        None => shared.queue.park(owner, job),
    }
    None
}
