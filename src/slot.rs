//! What the supervisor knows about each worker, readable without stopping it.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Mutex;

use tokio::sync::{mpsc, Notify};

use crate::job::Job;
use crate::state::{transition, WorkerEvent, WorkerState};
use crate::workable::Workable;

/// A snapshot of one worker, from [`crate::Supervisor::workers`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerInfo {
    /// The worker's id, unique within its pool.
    pub id: u64,
    /// Its state.
    pub state: WorkerState,
    /// Its process id, for process workers.
    pub pid: Option<u32>,
    /// How many times it was restarted or recycled.
    pub restarts: u64,
    /// Tasks it completed (successfully or with the task's own error).
    pub tasks_done: u64,
    /// Tasks that ended with a crash, timeout or kill on it.
    pub tasks_failed: u64,
    /// The last fault it had, as text.
    pub last_error: Option<String>,
    /// Tasks the dispatcher gave it (its lifetime load, for the `total` balancer).
    pub dispatched: u64,
}

pub(crate) struct WorkerSlot<W: Workable> {
    pub(crate) id: u64,
    state: AtomicU8,
    pid: AtomicU32,
    pub(crate) restarts: AtomicU64,
    pub(crate) tasks_done: AtomicU64,
    pub(crate) tasks_failed: AtomicU64,
    last_error: Mutex<Option<String>>,
    pub(crate) dispatched: AtomicU64,
    retiring: AtomicBool,
    pub(crate) retire: Notify,
    /// Tasks addressed to this worker alone (broadcasts); they skip the shared queue.
    pub(crate) inbox: mpsc::UnboundedSender<Job<W>>,
}

impl<W: Workable> WorkerSlot<W> {
    pub(crate) fn new(id: u64, inbox: mpsc::UnboundedSender<Job<W>>) -> Self {
        Self {
            id,
            state: AtomicU8::new(WorkerState::Starting as u8),
            pid: AtomicU32::new(0),
            restarts: AtomicU64::new(0),
            tasks_done: AtomicU64::new(0),
            tasks_failed: AtomicU64::new(0),
            last_error: Mutex::new(None),
            dispatched: AtomicU64::new(0),
            retiring: AtomicBool::new(false),
            retire: Notify::new(),
            inbox,
        }
    }

    pub(crate) fn state(&self) -> WorkerState {
        WorkerState::from_u8(self.state.load(Ordering::Acquire))
    }

    /// Marks the worker failed for good after its task panicked.
    pub(crate) fn mark_panicked(&self, message: String) {
        self.state.store(WorkerState::Failed as u8, Ordering::Release);
        self.set_last_error(message);
        self.set_pid(None);
    }

    /// Applies `event`; only the worker's own task calls this, so load-then-store is race-free.
    pub(crate) fn apply(&self, event: WorkerEvent) {
        let from = self.state();
        let to = transition(from, event).unwrap_or_else(|e| panic!("worker {}: {e}", self.id));
        self.state.store(to as u8, Ordering::Release);
    }

    /// Asks the worker to leave after its current task.
    pub(crate) fn request_retire(&self) {
        self.retiring.store(true, Ordering::Release);
        self.retire.notify_one();
    }

    pub(crate) fn is_retiring(&self) -> bool {
        self.retiring.load(Ordering::Acquire)
    }

    pub(crate) fn set_pid(&self, pid: Option<u32>) {
        self.pid.store(pid.unwrap_or(0), Ordering::Release);
    }

    pub(crate) fn set_last_error(&self, error: String) {
        *self
            .last_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(error);
    }

    pub(crate) fn info(&self) -> WorkerInfo {
        let pid = self.pid.load(Ordering::Acquire);
        WorkerInfo {
            id: self.id,
            state: self.state(),
            pid: (pid != 0).then_some(pid),
            restarts: self.restarts.load(Ordering::Relaxed),
            tasks_done: self.tasks_done.load(Ordering::Relaxed),
            tasks_failed: self.tasks_failed.load(Ordering::Relaxed),
            last_error: self
                .last_error
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone(),
            dispatched: self.dispatched.load(Ordering::Relaxed),
        }
    }
}
