//! What the supervisor knows about each worker, readable without stopping it.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Mutex;

use tokio::sync::{mpsc, Notify};

use crate::job::Job;
use crate::worker::state::{transition, WorkerEvent, WorkerState};
use crate::worker::workable::Workable;

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
    /// Batches it ran: several queued short tasks handed over in one wake-up.
    pub batches: u64,
    /// Tasks it ran as part of a batch.
    pub batched_tasks: u64,
    /// Health checks it failed: answered unhealthy, raised, hung past their timeout or crashed
    /// it (each had it replaced; see [`crate::HealthCheck`]).
    pub health_failures: u64,
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
    pub(crate) batches: AtomicU64,
    pub(crate) batched_tasks: AtomicU64,
    retiring: AtomicBool,
    pub(crate) retire: Notify,
    /// Tasks addressed to this worker alone (broadcasts); they skip the shared queue.
    pub(crate) inbox: mpsc::UnboundedSender<Job<W>>,
    /// The worker's direct lane, while it is serving (see `Supervisor::claim_idle`).
    lane: Mutex<Option<Lane>>,
    /// Rung when a direct-lane claim ends in a crash, or ends while the serve loop waits for it.
    pub(crate) released: Notify,
    /// Set while the serve loop waits for a direct-lane claim to end.
    pub(crate) serve_waiting: AtomicBool,
    /// Why the worker died under a direct-lane claim, for its serve loop to recover from.
    claim_fault: Mutex<Option<crate::error::WorkerFault>>,
    /// Jobs addressed to this worker that it has not started yet. While any wait, direct-lane
    /// callers leave the worker alone, so a stream of direct calls cannot starve a broadcast.
    pub(crate) addressed_waiting: AtomicUsize,
    /// The worker's current process, not reported to the exit hook yet: 0 none, 1 one whose
    /// pid is unknown, pid + 2 otherwise. Swapped out once, so each process is reported once.
    unreported_process: AtomicU64,
    /// A health check is on its way to this worker or running (one at a time).
    pub(crate) health_check_pending: AtomicBool,
    /// Health checks it failed (see [`WorkerInfo::health_failures`]).
    pub(crate) health_failures: AtomicU64,
    /// Why the worker is to be replaced at its next turn between tasks (a failed health check).
    replacement: Mutex<Option<crate::error::WorkerFault>>,
    /// `tasks_done` when its current process took over (`max_tasks_per_worker` counts from it).
    tasks_at_renewal: AtomicU64,
    /// Seats a worker running several tasks at once (`Workable::concurrency`) has free for the
    /// dispatcher while it is `Busy`: opened by its runner (`sched::concurrent`) as calls end,
    /// taken by the dispatcher as it sends tasks, closed when the runner stops. Always 0 for
    /// workers that run one task at a time.
    open_seats: AtomicUsize,
    /// Tasks in flight on it, for the balancers (0 or 1 unless it runs several at once).
    pub(crate) in_flight: AtomicU64,
}

/// A type-erased direct lane (see [`crate::Workable::lane`]).
pub(crate) type Lane = std::sync::Arc<dyn std::any::Any + Send + Sync>;

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
            batches: AtomicU64::new(0),
            batched_tasks: AtomicU64::new(0),
            retiring: AtomicBool::new(false),
            retire: Notify::new(),
            inbox,
            lane: Mutex::new(None),
            released: Notify::new(),
            serve_waiting: AtomicBool::new(false),
            claim_fault: Mutex::new(None),
            addressed_waiting: AtomicUsize::new(0),
            unreported_process: AtomicU64::new(0),
            health_check_pending: AtomicBool::new(false),
            health_failures: AtomicU64::new(0),
            replacement: Mutex::new(None),
            tasks_at_renewal: AtomicU64::new(0),
            open_seats: AtomicUsize::new(0),
            in_flight: AtomicU64::new(0),
        }
    }

    /// A process (or, for in-process workers, an incarnation) of this worker is up: publishes
    /// its pid and owes the exit hook one report for it.
    pub(crate) fn process_started(&self, pid: Option<u32>) {
        self.set_pid(pid);
        self.unreported_process.store(pid.map_or(1, |p| u64::from(p) + 2), Ordering::Release);
    }

    /// Takes the unreported process, if any: `Some(pid)` at most once per process.
    pub(crate) fn take_unreported_process(&self) -> Option<Option<u32>> {
        match self.unreported_process.swap(0, Ordering::AcqRel) {
            0 => None,
            1 => Some(None),
            raw => Some(u32::try_from(raw - 2).ok()),
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

    /// Takes the worker for one task: `Idle` to `Busy`, atomically. Whoever succeeds (the serve
    /// loop or a direct-lane caller) is its only driver until it gives it back.
    pub(crate) fn try_claim(&self) -> bool {
        self.state
            .compare_exchange(WorkerState::Idle as u8, WorkerState::Busy as u8, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Whether the dispatcher may send it a task: idle, or busy with free seats.
    pub(crate) fn has_room(&self) -> bool {
        self.state() == WorkerState::Idle || self.has_open_seat()
    }

    /// Whether it runs tasks and has a free seat for one more (see [`WorkerSlot::has_room`]);
    /// never while it is leaving (it takes nothing new then).
    pub(crate) fn has_open_seat(&self) -> bool {
        self.open_seats.load(Ordering::Acquire) > 0 && !self.is_retiring()
    }

    /// Reserves the worker for one task the dispatcher sends it: an idle worker takes it as its
    /// next task, a busy one only into a free seat. False: no room (it was taken meanwhile, or
    /// the worker is leaving).
    pub(crate) fn reserve(&self) -> bool {
        self.state() == WorkerState::Idle || (!self.is_retiring() && self.take_seat())
    }

    /// Offers `n` more seats to the dispatcher (a concurrent worker's runner, as calls end).
    pub(crate) fn open_seats(&self, n: usize) {
        self.open_seats.fetch_add(n, Ordering::AcqRel);
    }

    /// Takes one offered seat for a task that reached the worker without the dispatcher (one
    /// addressed to it); false when none was left.
    pub(crate) fn take_seat(&self) -> bool {
        self.open_seats.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1)).is_ok()
    }

    /// Withdraws every offered seat (the runner stops taking tasks); tasks already sent into
    /// them wait in the inbox for the serve loop.
    pub(crate) fn close_seats(&self) {
        self.open_seats.store(0, Ordering::Release);
    }

    /// Ends a direct-lane claim: back to `Idle`, or `Failed` with the fault for the serve loop.
    /// A fine ending wakes nobody unless the serve loop waits for it: direct calls must not cost
    /// the runtime a wake-up each.
    pub(crate) fn release_claim(&self, fault: Option<crate::error::WorkerFault>) {
        let failed = fault.is_some();
        let to = match fault {
            None => {
                self.tasks_done.fetch_add(1, Ordering::Relaxed);
                WorkerState::Idle
            }
            Some(fault) => {
                self.tasks_failed.fetch_add(1, Ordering::Relaxed);
                *self.claim_fault.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(fault);
                WorkerState::Failed
            }
        };
        // Only from Busy: a pool being killed may have moved the worker on already.
        let _ = self.state.compare_exchange(WorkerState::Busy as u8, to as u8, Ordering::AcqRel, Ordering::Acquire);
        // Pairs with the fence in `serve::wait_for_release`: the state stored above, then its
        // flag read here, in one total order with its flag stored, then the state read.
        std::sync::atomic::fence(Ordering::SeqCst);
        if failed || self.serve_waiting.load(Ordering::SeqCst) {
            self.released.notify_one();
        }
    }

    pub(crate) fn take_claim_fault(&self) -> Option<crate::error::WorkerFault> {
        self.claim_fault.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take()
    }

    pub(crate) fn set_lane(&self, lane: Option<Lane>) {
        *self.lane.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = lane;
    }

    pub(crate) fn lane(&self) -> Option<Lane> {
        self.lane.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
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

    /// Asks the serve loop to replace the worker (kill its process, start a new one as after a
    /// crash while idle) once it is between tasks, for `fault`.
    pub(crate) fn request_replacement(&self, fault: crate::error::WorkerFault) {
        *self.replacement.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(fault);
        // The serve loop wakes on this as on a retirement, and looks at both.
        self.retire.notify_one();
    }

    /// The fault a replacement was requested for, once.
    pub(crate) fn take_replacement(&self) -> Option<crate::error::WorkerFault> {
        self.replacement.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take()
    }

    /// A new process took over (recycling): tasks are counted toward the next from now.
    pub(crate) fn renewed(&self) {
        self.tasks_at_renewal.store(self.tasks_done.load(Ordering::Relaxed), Ordering::Relaxed);
    }

    /// Tasks done since the current process took over.
    pub(crate) fn tasks_since_renewal(&self) -> u64 {
        self.tasks_done.load(Ordering::Relaxed).saturating_sub(self.tasks_at_renewal.load(Ordering::Relaxed))
    }

    pub(crate) fn is_retiring(&self) -> bool {
        self.retiring.load(Ordering::Acquire)
    }

    pub(crate) fn set_pid(&self, pid: Option<u32>) {
        self.pid.store(pid.unwrap_or(0), Ordering::Release);
    }

    pub(crate) fn set_last_error(&self, error: String) {
        *self.last_error.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(error);
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
            last_error: self.last_error.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone(),
            dispatched: self.dispatched.load(Ordering::Relaxed),
            batches: self.batches.load(Ordering::Relaxed),
            batched_tasks: self.batched_tasks.load(Ordering::Relaxed),
            health_failures: self.health_failures.load(Ordering::Relaxed),
        }
    }
}
