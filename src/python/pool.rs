//! `CorePool`: a [`Supervisor`] of [`ProcessWorker`]s driven from Python with pickled bytes.
//!
//! Replies reach Python two ways: a blocking call waits on its own channel (so the calling
//! thread unpickles its result itself, no hand-off through a GIL-hungry helper), and futures are
//! completed in batches by one Python thread per pool that drains the completion channel.

use std::ffi::OsString;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyList;

use super::buffers::{gather, Views};
use super::common::{parse_restart, parse_shutdown, seconds, submit_blocking, wait_stopped, worker_dicts};
use super::errors::{start_outcome, task_outcome};
use super::wait::{deadline, recv_interruptible, SLICE};
use crate::error::{StartError, TaskError};
use crate::job::{Outcome, ReplyFn, TaskOptions, Ticket};
use crate::process::{FrameKind, LaneError, ProcessSpec, ProcessWorker, ShmLane, SpawnFailure};
use crate::{Config, Supervisor};

type Worker = ProcessWorker;

/// Runs the rest of a direct call whose caller was interrupted while waiting for the reply, so
/// the worker's reply is consumed before anyone else drives it, then gives the worker back.
/// It cannot hold the worker for ever against the pool: killing the worker (a kill shutdown, a
/// crash) closes the lane and wakes it at once with the reason.
fn finish_in_background(claim: crate::Claim<Worker>, lane: Arc<ShmLane>, id: u64) {
    let spawned = std::thread::Builder::new().name("stateful-pool-finish".to_owned()).spawn(move || {
        let fault = match lane.wait_reply(id, &mut || false) {
            Ok(_) => None,
            Err(LaneError::Crashed(fault) | LaneError::Torn(fault)) => Some(fault),
            Err(LaneError::Interrupted { .. } | LaneError::NotSent | LaneError::TooLarge { .. }) => {
                Some(crate::WorkerFault::new("a direct call was abandoned mid-way"))
            }
        };
        claim.finish(fault);
    });
    // No thread: the claim was dropped with the closure, which fails and replaces the worker.
    drop(spawned);
}

/// The error for a call larger than the pool's `max_message_size`.
fn too_large(len: usize, max: usize) -> PyErr {
    PyValueError::new_err(format!("the call's message of {len} bytes is over max_message_size ({max} bytes)"))
}

/// A `interrupted()` check for the direct lane: at most every [`SLICE`], attaches to the
/// interpreter and runs its signal handlers; a raised exception (Ctrl-C's KeyboardInterrupt)
/// is kept in `raised` and means give up.
fn signal_check(raised: &mut Option<PyErr>) -> impl FnMut() -> bool + '_ {
    let mut last = Instant::now();
    move || {
        if raised.is_some() {
            return true;
        }
        if last.elapsed() < SLICE {
            return false;
        }
        last = Instant::now();
        *raised = Python::attach(|py| py.check_signals()).err();
        raised.is_some()
    }
}

type StartOutcome = Result<(u64, Vec<u8>), StartError<SpawnFailure>>;

/// `None` as a reply payload (no out-of-band buffers, a 2-byte pickle): what `spawn()` on an
/// on-demand pool returns, since no worker starts until a call comes.
const PICKLED_NONE: [u8; 14] = [0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, b'N', b'.'];

/// An on-demand pool's worker `id`, started for one call: a setup that raised fails the call
/// with that exception, one that could not start or crashed with `WorkerCrashedError`.
async fn on_demand_worker(spec: Arc<ProcessSpec>, init: Arc<Vec<u8>>, id: u64) -> Result<Worker, TaskError<Vec<u8>>> {
    match ProcessWorker::start(spec, init).await {
        Ok((worker, _)) => Ok(worker),
        Err(SpawnFailure::Raised(raised)) => Err(TaskError::Failed(raised)),
        Err(failure) => {
            let fault = crate::WorkerFault::new(format!("on-demand worker could not start: {failure}"));
            Err(TaskError::WorkerCrashed { worker: id, fault })
        }
    }
}

/// One finished task or worker start, waiting for the Python completion thread.
enum Done {
    Task(Arc<ReplySlot>),
    Start(StartOutcome),
}

/// Where a submitted task's outcome waits for whichever comes first: the thread blocked in
/// that future's `result()` (it then unpickles its own reply, one wake-up instead of two
/// hand-offs), or the pool's completion thread (for futures nobody waits on directly).
#[derive(Default)]
pub(crate) struct ReplySlot {
    state: Mutex<SlotState>,
    ready: Condvar,
}

#[derive(Default)]
enum SlotState {
    #[default]
    Waiting,
    Ready(Outcome<Worker>),
    Taken,
}

impl ReplySlot {
    fn fill(&self, outcome: Outcome<Worker>) {
        *self.state.lock().unwrap_or_else(PoisonError::into_inner) = SlotState::Ready(outcome);
        self.ready.notify_all();
    }

    fn take(&self) -> Option<Outcome<Worker>> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        match std::mem::replace(&mut *state, SlotState::Taken) {
            SlotState::Ready(outcome) => Some(outcome),
            SlotState::Waiting => {
                *state = SlotState::Waiting;
                None
            }
            SlotState::Taken => None,
        }
    }

    /// Waits up to `timeout` for the outcome; `None` when it timed out, someone else took it,
    /// or `stop()` says nobody will fill it (its task was cancelled).
    fn wait_take(&self, timeout: Duration, stop: impl Fn() -> bool) -> Option<Outcome<Worker>> {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let (mut state, _) = self
            .ready
            .wait_timeout_while(state, timeout, |s| matches!(s, SlotState::Waiting) && !stop())
            .unwrap_or_else(PoisonError::into_inner);
        match std::mem::replace(&mut *state, SlotState::Taken) {
            SlotState::Ready(outcome) => Some(outcome),
            SlotState::Waiting => {
                *state = SlotState::Waiting;
                None
            }
            SlotState::Taken => None,
        }
    }

    /// Wakes the threads waiting in `wait_take`, to check their `stop` condition.
    fn wake(&self) {
        // Taking the lock orders this after a waiter's check of `stop`: it cannot miss it.
        drop(self.state.lock().unwrap_or_else(PoisonError::into_inner));
        self.ready.notify_all();
    }

    fn is_taken(&self) -> bool {
        matches!(*self.state.lock().unwrap_or_else(PoisonError::into_inner), SlotState::Taken)
    }
}

/// The supervisor of one `SPool`.
#[pyclass(module = "stateful_pool._core", frozen)]
pub(crate) struct CorePool {
    supervisor: Supervisor<Worker>,
    /// Whether blocking calls may take the direct lane: not when per-task policies (timeouts,
    /// recycling, crash retries) need the serve loop to watch each task.
    direct: bool,
    spec: Arc<ProcessSpec>,
    done_tx: Sender<(u64, Done)>,
    done_rx: Receiver<(u64, Done)>,
}

/// The handle Python futures keep to cancel their task and to claim its reply.
#[pyclass(module = "stateful_pool._core", frozen)]
pub(crate) struct CoreTicket(Ticket, Arc<ReplySlot>);

#[pymethods]
impl CoreTicket {
    /// Cancels the task if it has not started, waking a thread blocked in `claim` (a cancelled
    /// task never gets a reply: without the wake-up it would wait for its timeout).
    fn cancel(&self) -> bool {
        let cancelled = self.0.cancel();
        if cancelled {
            self.1.wake();
        }
        cancelled
    }

    /// Cancels the task if queued, else kills the worker running it.
    fn cancel_or_kill(&self) -> bool {
        let done = self.0.cancel_or_kill();
        if self.0.cancelled() {
            self.1.wake();
        }
        done
    }

    /// Whether a worker has picked the task up.
    #[getter]
    fn started(&self) -> bool {
        self.0.started()
    }

    /// Waits (without the GIL, interruptibly) up to `timeout` seconds (`None`: until it comes)
    /// for the task's outcome and takes it: `(status, value)`, or `None` on timeout or when the
    /// completion thread took it first (the future is then completed by that thread).
    #[pyo3(signature = (timeout=None))]
    fn claim<'py>(&self, py: Python<'py>, timeout: Option<f64>) -> PyResult<Option<(u8, Bound<'py, PyAny>)>> {
        let until = deadline(timeout)?;
        loop {
            let slice = until.map_or(SLICE, |u| u.saturating_duration_since(Instant::now()).min(SLICE));
            if let Some(outcome) = py.detach(|| self.1.wait_take(slice, || self.0.cancelled())) {
                return task_outcome(py, outcome).map(Some);
            }
            if self.1.is_taken() || self.0.cancelled() || until.is_some_and(|u| Instant::now() >= u) {
                return Ok(None);
            }
            py.check_signals()?;
        }
    }
}

impl CorePool {
    fn task_reply(&self, token: u64, slot: &Arc<ReplySlot>) -> ReplyFn<Worker> {
        let tx = self.done_tx.clone();
        let slot = Arc::clone(slot);
        Box::new(move |outcome| {
            slot.fill(outcome);
            let _ = tx.send((token, Done::Task(slot)));
        })
    }

    /// Runs a call on this thread through a claimed worker's lane: the payload is copied once,
    /// from the caller's buffers into shared memory. The thread stays interruptible throughout
    /// (sending, waiting, reading a reply); giving up half-way through a frame replaces the
    /// worker.
    fn call_direct<'py>(
        &self,
        py: Python<'py>,
        claim: crate::Claim<Worker>,
        lane: Arc<ShmLane>,
        parts: &[Bound<'py, PyAny>],
    ) -> PyResult<(u8, Bound<'py, PyAny>)> {
        let views = Views::new(parts)?;
        let slices = views.slices();
        let mut raised = None;
        let result = {
            let mut interrupted = signal_check(&mut raised);
            py.detach(|| lane.call(&slices, &mut interrupted))
        };
        drop(slices);
        drop(views);
        let interrupt = || raised.unwrap_or_else(|| pyo3::exceptions::PyKeyboardInterrupt::new_err(()));
        let worker = claim.worker_id();
        match result {
            Ok(mut frame) => {
                let payload = std::mem::take(&mut frame.payload);
                let outcome = match frame.kind {
                    FrameKind::Ok => Ok(payload),
                    FrameKind::Raised => Err(crate::TaskError::Failed(payload)),
                    other => {
                        let fault = crate::WorkerFault::new(format!(
                            "worker broke the protocol: unexpected {other:?} frame in reply to a call; worker killed"
                        ));
                        claim.finish(Some(fault.clone()));
                        return task_outcome(py, Err(crate::TaskError::WorkerCrashed { worker, fault }));
                    }
                };
                claim.finish(None);
                task_outcome(py, outcome)
            }
            Err(LaneError::Interrupted { id }) => {
                finish_in_background(claim, lane, id);
                Err(interrupt())
            }
            Err(LaneError::NotSent) => {
                claim.finish(None);
                Err(interrupt())
            }
            Err(LaneError::TooLarge { len, max }) => {
                claim.finish(None);
                Err(too_large(len, max))
            }
            Err(LaneError::Torn(fault)) => {
                claim.finish(Some(fault));
                Err(interrupt())
            }
            Err(LaneError::Crashed(fault)) => {
                claim.finish(Some(fault.clone()));
                task_outcome(py, Err(crate::TaskError::WorkerCrashed { worker, fault }))
            }
        }
    }

    /// Refuses a call the worker would refuse: larger than `max_message_size`.
    fn check_size(&self, len: usize) -> PyResult<()> {
        match len > self.spec.max_message_size {
            true => Err(too_large(len, self.spec.max_message_size)),
            false => Ok(()),
        }
    }

    fn start(&self, init: Vec<u8>, on_ready: impl FnOnce(StartOutcome) + Send + 'static) {
        let spec = Arc::clone(&self.spec);
        let init = Arc::new(init);
        if self.supervisor.config().on_demand.is_some() {
            // Records the spawn arguments: each call gets a fresh worker started with them.
            self.supervisor.set_worker_factory(move |id| on_demand_worker(Arc::clone(&spec), Arc::clone(&init), id));
            return on_ready(Ok((0, PICKLED_NONE.to_vec())));
        }
        self.supervisor.start_worker(ProcessWorker::start(spec, init), on_ready);
    }
}

#[pymethods]
impl CorePool {
    #[new]
    #[pyo3(signature = (
        program, args, env, cwd=None, *, queue_size=None, task_timeout=None, restart="on-failure",
        max_restarts=5, restart_window=60.0, max_tasks_per_worker=None, max_memory_per_worker=None,
        stop_timeout=5.0, load_balancing="round_robin", crash_retries=0, shm_capacity=None,
        max_message_size=crate::process::DEFAULT_MAX_MESSAGE_SIZE, on_demand=None, namespace=None,
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        program: String,
        args: Vec<String>,
        env: Vec<(String, String)>,
        cwd: Option<String>,
        queue_size: Option<usize>,
        task_timeout: Option<f64>,
        restart: &str,
        max_restarts: u32,
        restart_window: f64,
        max_tasks_per_worker: Option<u64>,
        max_memory_per_worker: Option<u64>,
        stop_timeout: f64,
        load_balancing: &str,
        crash_retries: u32,
        shm_capacity: Option<usize>,
        max_message_size: usize,
        on_demand: Option<usize>,
        namespace: Option<PyRef<'_, super::namespace::CoreNamespace>>,
    ) -> PyResult<Self> {
        if let Some(capacity) = shm_capacity {
            crate::shm::ring_capacity(capacity).map_err(|e| PyValueError::new_err(e.to_string()))?;
        }
        if max_message_size == 0 {
            return Err(PyValueError::new_err("max_message_size must be at least 1 byte"));
        }
        let config = Config {
            queue_capacity: queue_size,
            // One thread: the serve loops' short reply spins measured faster serialised there
            // than spread over two threads competing with the workers for 2 cores.
            runtime_threads: 1,
            thread_name: "stateful-pool".to_owned(),
            task_timeout: seconds("task_timeout", task_timeout)?,
            restart_policy: parse_restart(restart)?,
            max_restarts,
            restart_window: seconds("restart_window", Some(restart_window))?.unwrap_or_default(),
            max_tasks_per_worker,
            max_memory_per_worker,
            crash_retries,
            on_demand,
            load_balancing: load_balancing
                .parse()
                .map_err(|e: crate::UnknownBalancer| PyValueError::new_err(e.to_string()))?,
        };
        // The workers reach the namespace with upcalls (see `process::upcall`).
        let upcalls = namespace.map(|ns| ns.upcalls());
        let exiting = upcalls.clone();
        let supervisor = Supervisor::<Worker>::builder()
            .config(config)
            // Permits and locks a dead worker held go back at once; waiters would find them too,
            // but only when they next look.
            .on_worker_exit(move |exit| {
                if let Some(pid) = exit.pid {
                    let _ = crate::limits::reclaim_dead_process(pid);
                    if let Some(upcalls) = &exiting {
                        upcalls.0.worker_exited(pid);
                    }
                }
            })
            .build()
            .map_err(|e| PyValueError::new_err(e.to_string()))?;
        let mut spec = ProcessSpec::new(program, args);
        spec.env = env.into_iter().map(|(k, v)| (OsString::from(k), OsString::from(v))).collect();
        spec.cwd = cwd.map(Into::into);
        spec.stop_timeout = seconds("stop_timeout", Some(stop_timeout))?.unwrap_or_default();
        spec.shm_capacity = shm_capacity;
        spec.max_message_size = max_message_size;
        spec.upcalls = upcalls;
        let (done_tx, done_rx) = crossbeam_channel::unbounded();
        let c = supervisor.config();
        let direct = c.task_timeout.is_none()
            && c.max_tasks_per_worker.is_none()
            && c.max_memory_per_worker.is_none()
            && c.crash_retries == 0;
        Ok(Self { supervisor, direct, spec: Arc::new(spec), done_tx, done_rx })
    }

    /// Starts a worker and waits for its setup: `(status, value)`.
    fn spawn<'py>(&self, py: Python<'py>, init: Vec<u8>) -> PyResult<(u8, Bound<'py, PyAny>)> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.start(init, move |outcome| {
            let _ = tx.send(outcome);
        });
        let outcome = recv_interruptible(py, &rx)?;
        start_outcome(py, outcome)
    }

    /// Starts a worker; its outcome arrives through `take_completions` under `token`.
    fn submit_spawn(&self, init: Vec<u8>, token: u64) {
        let tx = self.done_tx.clone();
        self.start(init, move |outcome| {
            let _ = tx.send((token, Done::Start(outcome)));
        });
    }

    /// Runs one call and waits for it: `(status, value)`.
    #[pyo3(signature = (parts, timeout=None, submit_timeout=None))]
    fn call<'py>(
        &self,
        py: Python<'py>,
        parts: Vec<Bound<'py, PyAny>>,
        timeout: Option<f64>,
        submit_timeout: Option<f64>,
    ) -> PyResult<(u8, Bound<'py, PyAny>)> {
        let options = TaskOptions { timeout: seconds("timeout", timeout)? };
        if self.direct && options.timeout.is_none() {
            if let Some(claim) = self.supervisor.claim_idle() {
                if let Some(lane) = claim.lane::<ShmLane>() {
                    return self.call_direct(py, claim, lane, &parts);
                }
            }
        }
        let payload = gather(py, &parts)?;
        self.check_size(payload.len())?;
        let (tx, rx) = crossbeam_channel::bounded(1);
        let reply = || -> ReplyFn<Worker> {
            let tx = tx.clone();
            Box::new(move |outcome| {
                let _ = tx.send(outcome);
            })
        };
        let ticket = submit_blocking(py, &self.supervisor, payload, options, submit_timeout, reply)?;
        match recv_interruptible(py, &rx) {
            Ok(outcome) => task_outcome(py, outcome),
            Err(interrupted) => {
                ticket.cancel();
                Err(interrupted)
            }
        }
    }

    /// Queues one call; its outcome arrives through `take_completions` under `token`.
    #[pyo3(signature = (parts, token, timeout=None, submit_timeout=None))]
    fn submit(
        &self,
        py: Python<'_>,
        parts: Vec<Bound<'_, PyAny>>,
        token: u64,
        timeout: Option<f64>,
        submit_timeout: Option<f64>,
    ) -> PyResult<CoreTicket> {
        let options = TaskOptions { timeout: seconds("timeout", timeout)? };
        let payload = gather(py, &parts)?;
        self.check_size(payload.len())?;
        let slot = Arc::new(ReplySlot::default());
        let ticket =
            submit_blocking(py, &self.supervisor, payload, options, submit_timeout, || self.task_reply(token, &slot))?;
        Ok(CoreTicket(ticket, slot))
    }

    /// Runs one call on every live worker: a list of `(worker_id, status, value)`.
    fn broadcast<'py>(
        &self,
        py: Python<'py>,
        parts: Vec<Bound<'py, PyAny>>,
    ) -> PyResult<Vec<(u64, u8, Bound<'py, PyAny>)>> {
        let payload = gather(py, &parts)?;
        let handles = self.supervisor.broadcast(&payload);
        let mut out = Vec::with_capacity(handles.len());
        for (worker, handle) in handles {
            let (tx, rx) = crossbeam_channel::bounded(1);
            // Hand each reply to a channel we can wait on interruptibly.
            let Some(runtime) = self.supervisor.runtime() else {
                break;
            };
            runtime.spawn(async move {
                let _ = tx.send(handle.await);
            });
            let (status, value) = task_outcome(py, recv_interruptible(py, &rx)?)?;
            out.push((worker, status, value));
        }
        Ok(out)
    }

    /// Waits up to `timeout` seconds for finished tasks and starts; returns up to `max_items`
    /// `(token, status, value)` tuples (an empty list on timeout).
    #[pyo3(signature = (timeout, max_items=4096))]
    fn take_completions<'py>(
        &self,
        py: Python<'py>,
        timeout: f64,
        max_items: usize,
    ) -> PyResult<Vec<(u64, u8, Bound<'py, PyAny>)>> {
        let wait = Duration::from_secs_f64(timeout.max(0.0));
        let first = match py.detach(|| self.done_rx.recv_timeout(wait)) {
            Ok(item) => item,
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return Ok(Vec::new()),
        };
        let mut out = Vec::new();
        for (token, done) in std::iter::once(first).chain(self.done_rx.try_iter().take(max_items.saturating_sub(1))) {
            let (status, value) = match done {
                Done::Task(slot) => match slot.take() {
                    Some(outcome) => task_outcome(py, outcome)?,
                    None => continue, // its future's owner took it already
                },
                Done::Start(outcome) => start_outcome(py, outcome)?,
            };
            out.push((token, status, value));
        }
        Ok(out)
    }

    /// Starts shutting down: `mode` is "graceful", "cancel" or "kill". Returns at once.
    fn shutdown(&self, mode: &str) -> PyResult<()> {
        self.supervisor.shutdown(parse_shutdown(mode)?);
        Ok(())
    }

    /// Waits up to `timeout` seconds (interruptibly) for every worker to stop.
    fn wait_stopped(&self, py: Python<'_>, timeout: f64) -> PyResult<bool> {
        wait_stopped(py, &self.supervisor, timeout)
    }

    /// Ends the supervisor's threads after the pool has stopped; returns whether it had.
    fn release(&self, py: Python<'_>) -> bool {
        py.detach(|| self.supervisor.release())
    }

    /// Whether shutdown was requested.
    #[getter]
    fn is_shutdown(&self) -> bool {
        self.supervisor.is_shutdown()
    }

    /// Tasks waiting in the queue.
    #[getter]
    fn queued(&self) -> usize {
        self.supervisor.queued()
    }

    /// Asks one worker to leave after its current task; returns whether it was live.
    fn retire_worker(&self, worker_id: u64) -> bool {
        self.supervisor.retire_worker(worker_id)
    }

    /// Tasks handed to workers so far.
    #[getter]
    fn dispatched(&self) -> u64 {
        self.supervisor.dispatched()
    }

    /// The load balancer's canonical name.
    #[getter]
    fn load_balancing(&self) -> &'static str {
        self.supervisor.load_balancing().as_str()
    }

    /// Ids of workers starting or serving.
    fn live_worker_ids(&self) -> Vec<u64> {
        self.supervisor.live_worker_ids()
    }

    /// One dict per worker: id, state, pid, restarts, tasks_done, tasks_failed, last_error.
    fn workers<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        worker_dicts(py, self.supervisor.workers().into_iter().collect())
    }
}
