//! The dispatcher: one task per pool that binds queued tasks to idle workers, late.
//!
//! Workers announce themselves when idle; the dispatcher takes a task from the queue only
//! while some worker is idle, asks the balancer which one, and puts the task in that worker's
//! inbox. A task therefore never waits behind a running task while another worker is idle.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::balance::{Balancer, Candidate};
use crate::shutdown::Phase;
use crate::slot::WorkerSlot;
use crate::state::WorkerState;
use crate::supervisor::Shared;
use crate::workable::Workable;

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
        // A worker may have crashed, been retired or taken a broadcast since it announced.
        idle.retain(|s| s.state() == WorkerState::Idle && !s.is_retiring());
        let job = if idle.is_empty() {
            tokio::select! {
                slot = idle_rx.recv() => {
                    idle.extend(slot);
                    continue;
                }
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
        candidates.clear();
        candidates.extend(idle.iter().map(|s| Candidate {
            id: s.id,
            active: u64::from(s.state() == WorkerState::Busy),
            total: s.dispatched.load(Ordering::Relaxed),
        }));
        let slot = idle.swap_remove(balancer.pick(&candidates));
        slot.dispatched.fetch_add(1, Ordering::Relaxed);
        shared.dispatched.fetch_add(1, Ordering::Relaxed);
        if let Err(returned) = slot.inbox.send(job) {
            shared.queue.give_back(returned.0);
        }
    }
    shared.drained.send_replace(true);
}
