//! `CoreThreadPool`: the same [`Supervisor`] as `CorePool`, with workers that live in this
//! process ("thread" and "asyncio" modes) or behind a proxy thread ("ray" mode).
//!
//! ```text
//!  SPool ──submit──▶ Supervisor (queue, timeouts, restarts, stats)     one tokio thread, no GIL
//!                        │  Lane::process: Request::Call over a channel
//!                        ▼
//!                    host thread (a Python daemon thread, started by the mode's `launcher`)
//!                        │  recv() ─▶ instance.method(*args) ─▶ Replier.ok/raised/fatal
//!                        ▼
//!                    oneshot reply ─▶ serve loop ─▶ completion channel ─▶ SPool's completer
//! ```
//!
//! A *host* is one worker instance on its own thread. The supervisor runs one task per worker
//! at a time, so a host that takes `concurrency` calls at once (an asyncio event loop) is
//! registered as that many *lanes*: supervisor workers sharing one host. Stats, broadcasts and
//! worker ids are reported per host (a *group* of lanes), never per lane.
//!
//! Values cross as Python objects, never pickled. The tokio thread never takes the GIL on the
//! hot path: only starting a host and killing a busy one attach, on a blocking-pool thread.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyList;
use tokio::sync::{oneshot, watch};

use super::common::{parse_restart, parse_shutdown, seconds, submit_blocking, wait_stopped, worker_dicts};
use super::errors::{start_outcome, task_outcome, STATUS_ERROR, STATUS_OBJECT};
use super::wait::recv_interruptible;
use crate::error::{StartError, TaskError, WorkerFault};
use crate::job::{Outcome, ReplyFn, TaskOptions, Ticket};
use crate::process::SpawnFailure;
use crate::{Config, Supervisor, Workable, WorkerInfo};

/// Request kinds as the host thread sees them in [`HostChannel::recv`].
const KIND_CALL: u8 = 0;
const KIND_CANCEL: u8 = 1;

/// What a host answered to a call or to its setup.
enum Reply {
    Ok(Py<PyAny>),
    /// The exception object, its `__cause__` already set to the worker-side traceback, and a
    /// one-line summary (setup failures only: a restart that fails reports it as its fault).
    Raised(Py<PyAny>, String),
    /// The host cannot go on (its thread ends); the text says why.
    Fatal(String),
}

/// A message to a host thread.
enum Request {
    Call { id: u64, payload: Arc<Py<PyAny>>, reply: oneshot::Sender<Reply> },
    Cancel(u64),
    Stop,
}

/// Why a host could not be started.
enum StartFailure {
    Raised(Py<PyAny>, String),
    Crashed(String),
    /// This lane found its group's setup failed; the lane that ran the setup reports why.
    NotStarted,
}

/// The state a host thread and the supervisor share.
struct HostShared {
    rx: Receiver<Request>,
    ready: Mutex<Option<oneshot::Sender<Reply>>>,
    /// Interrupts a busy host (raises in its thread, or kills its Ray actor); set by the host.
    killer: Mutex<Option<Py<PyAny>>>,
    /// Process id behind the host (this process, or a Ray actor's).
    pid: AtomicU64,
    /// Set by the host thread as its last act.
    exited: watch::Sender<bool>,
    /// Set when the supervisor gave up on the host (killed or stopped it).
    abandoned: AtomicBool,
    next_call: AtomicU64,
    /// The highest call id the host has taken from its channel: a call above it never started.
    taken: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The supervisor's handle on one host thread.
struct Host {
    tx: Sender<Request>,
    shared: Arc<HostShared>,
}

impl Host {
    /// Starts a host thread through the Python `launcher` and waits for its setup.
    async fn start(spec: &Spec) -> Result<(Arc<Host>, Py<PyAny>), StartFailure> {
        let (tx, rx) = crossbeam_channel::unbounded();
        let (ready_tx, ready_rx) = oneshot::channel();
        let shared = Arc::new(HostShared {
            rx,
            ready: Mutex::new(Some(ready_tx)),
            killer: Mutex::new(None),
            pid: AtomicU64::new(0),
            exited: watch::Sender::new(false),
            abandoned: AtomicBool::new(false),
            next_call: AtomicU64::new(1),
            taken: AtomicU64::new(0),
        });
        let host = Arc::new(Host { tx, shared: Arc::clone(&shared) });
        let launcher = Arc::clone(&spec.launcher);
        let init = Arc::clone(&spec.init);
        // Attaching to the interpreter may wait for the GIL: do it off the supervisor's thread.
        let launched = tokio::task::spawn_blocking(move || {
            Python::attach(|py| {
                let channel = Py::new(py, HostChannel(shared))?;
                launcher.call1(py, (channel, init.bind(py))).map(drop)
            })
            .map_err(|e| e.to_string())
        })
        .await;
        match launched {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(StartFailure::Crashed(format!("cannot start worker thread: {e}"))),
            Err(e) => return Err(StartFailure::Crashed(format!("cannot start worker thread: {e}"))),
        }
        match ready_rx.await {
            Ok(Reply::Ok(value)) => Ok((host, value)),
            Ok(Reply::Raised(exc, summary)) => Err(StartFailure::Raised(exc, summary)),
            Ok(Reply::Fatal(message)) => Err(StartFailure::Crashed(message)),
            Err(_) => Err(StartFailure::Crashed("worker thread exited during setup".to_owned())),
        }
    }

    fn alive(&self) -> bool {
        !self.shared.abandoned.load(Ordering::Acquire) && !*self.shared.exited.borrow()
    }

    fn pid(&self) -> Option<u32> {
        u32::try_from(self.shared.pid.load(Ordering::Acquire)).ok().filter(|&p| p != 0)
    }

    /// Asks the host to end after its current call, without waiting.
    fn release(&self) {
        self.shared.abandoned.store(true, Ordering::Release);
        let _ = self.tx.send(Request::Stop);
    }

    /// Gives up on the host now: it ends after its current call, which is interrupted if the
    /// host registered a way to (a thread cannot be killed; a Ray actor can).
    async fn kill(&self) {
        self.release();
        let killer = lock(&self.shared.killer).take();
        if let Some(killer) = killer {
            let _ = tokio::task::spawn_blocking(move || {
                Python::attach(|py| {
                    // A failing killer leaves the call running; the host was abandoned anyway.
                    let _ = killer.call0(py);
                    drop(killer);
                });
            })
            .await;
        }
    }

    /// Stops the host gracefully: it ends after its current call; killed past `timeout`.
    async fn stop(&self, timeout: Duration) {
        self.release();
        let mut exited = self.shared.exited.subscribe();
        if tokio::time::timeout(timeout, exited.wait_for(|e| *e)).await.is_err() {
            self.kill().await;
        }
    }

    /// Resolves when the host thread ends without being asked to.
    async fn died(&self) -> WorkerFault {
        let mut exited = self.shared.exited.subscribe();
        let _ = exited.wait_for(|e| *e).await;
        if self.shared.abandoned.load(Ordering::Acquire) {
            std::future::pending::<()>().await;
        }
        WorkerFault::new("worker thread exited while idle")
    }
}

/// How the workers of one pool are started and stopped.
#[derive(Clone)]
struct Spec {
    launcher: Arc<Py<PyAny>>,
    init: Arc<Py<PyAny>>,
    stop_timeout: Duration,
    /// Kill means "cancel this lane's call" (asyncio), not "give up on the host".
    cancel_on_kill: bool,
}

enum GroupHost {
    Empty,
    Running(Arc<Host>),
    /// The first setup failed: lanes still starting must not run it again.
    Failed,
}

/// The lanes sharing one host, and how to start that host again.
struct Group {
    spec: Spec,
    host: tokio::sync::Mutex<GroupHost>,
    /// Lanes that hold the host; the last to let go stops it.
    holders: AtomicUsize,
}

impl Group {
    /// The group's host, started if it is not running. `initial`: this is the worker's first
    /// start, so a failed first setup is not retried. Returns the setup's value when this call
    /// ran it.
    async fn acquire(&self, initial: bool) -> Result<(Arc<Host>, Option<Py<PyAny>>), StartFailure> {
        let mut state = self.host.lock().await;
        match &*state {
            GroupHost::Running(host) if host.alive() => return Ok((Arc::clone(host), None)),
            GroupHost::Failed if initial => return Err(StartFailure::NotStarted),
            _ => {}
        }
        match Host::start(&self.spec).await {
            Ok((host, value)) => {
                *state = GroupHost::Running(Arc::clone(&host));
                Ok((host, Some(value)))
            }
            Err(failure) => {
                if initial {
                    *state = GroupHost::Failed;
                }
                Err(failure)
            }
        }
    }
}

/// One supervisor worker: a lane into a host.
pub(crate) struct Lane {
    group: Arc<Group>,
    host: Arc<Host>,
    /// The call this lane has in flight, to cancel it.
    current: Option<u64>,
    /// Whether this lane counts in `group.holders`.
    holding: bool,
}

impl Lane {
    async fn start(group: Arc<Group>) -> Result<(Lane, Option<Py<PyAny>>), StartFailure> {
        let (host, value) = group.acquire(true).await?;
        group.holders.fetch_add(1, Ordering::AcqRel);
        Ok((Lane { group, host, current: None, holding: true }, value))
    }

    /// Lets go of the host; returns it when this lane was its last holder.
    fn let_go(&mut self) -> Option<Arc<Host>> {
        if !std::mem::take(&mut self.holding) {
            return None;
        }
        (self.group.holders.fetch_sub(1, Ordering::AcqRel) == 1).then(|| Arc::clone(&self.host))
    }
}

impl Drop for Lane {
    fn drop(&mut self) {
        if let Some(host) = self.let_go() {
            host.release();
        }
    }
}

impl Workable for Lane {
    /// `(method, args, kwargs)`; shared so a crashed task can be retried without the GIL.
    type Task = Arc<Py<PyAny>>;
    /// The result object.
    type Output = Py<PyAny>;
    /// The raised exception object.
    type Error = Py<PyAny>;

    async fn process(&mut self, task: Arc<Py<PyAny>>) -> crate::Response<Self> {
        if !self.host.alive() {
            // Its host ended before this lane noticed: the call never started.
            return crate::Response::Refused(task, WorkerFault::new("worker thread had exited"));
        }
        let id = self.host.shared.next_call.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        if self.host.tx.send(Request::Call { id, payload: Arc::clone(&task), reply: tx }).is_err() {
            return crate::Response::Refused(task, WorkerFault::new("worker thread is gone"));
        }
        self.current = Some(id);
        // Race the reply against the host's end: a host that died before reading the call (its
        // death not yet noticed by this lane) would otherwise leave the call waiting forever.
        let mut exited = self.host.shared.exited.subscribe();
        let reply = tokio::select! {
            biased;
            reply = rx => reply.ok(),
            _ = exited.wait_for(|e| *e) => None,
        };
        self.current = None;
        match reply {
            Some(Reply::Ok(value)) => crate::Response::Complete(Ok(value)),
            Some(Reply::Raised(exc, _)) => crate::Response::Complete(Err(exc)),
            Some(Reply::Fatal(message)) => {
                // The host is ending: mark it so, lest a restart reuse it before its thread exits.
                self.host.release();
                crate::Response::Fatal(WorkerFault::new(message))
            }
            None if self.host.shared.taken.load(Ordering::Acquire) < id => {
                crate::Response::Refused(task, WorkerFault::new("worker thread exited before taking the task"))
            }
            None => crate::Response::Fatal(WorkerFault::new("worker thread exited while running the task")),
        }
    }

    async fn restart(&mut self) -> Result<(), WorkerFault> {
        if !self.group.spec.cancel_on_kill {
            self.host.release();
        }
        let (host, _) = self.group.acquire(false).await.map_err(|failure| match failure {
            StartFailure::Raised(_, summary) => WorkerFault::new(format!("worker setup raised {summary}")),
            StartFailure::Crashed(message) => WorkerFault::new(message),
            StartFailure::NotStarted => WorkerFault::new("worker setup failed"),
        })?;
        if !self.holding {
            self.group.holders.fetch_add(1, Ordering::AcqRel);
            self.holding = true;
        }
        self.host = host;
        Ok(())
    }

    async fn terminated(&mut self) -> WorkerFault {
        self.host.died().await
    }

    async fn stop(&mut self) {
        if let Some(host) = self.let_go() {
            host.stop(self.group.spec.stop_timeout).await;
        }
    }

    async fn kill(&mut self) {
        if self.group.spec.cancel_on_kill {
            if let Some(id) = self.current.take() {
                let _ = self.host.tx.send(Request::Cancel(id));
            }
        } else {
            self.host.kill().await;
        }
    }

    fn clone_task(task: &Arc<Py<PyAny>>) -> Option<Arc<Py<PyAny>>> {
        Some(Arc::clone(task))
    }

    fn pid(&self) -> Option<u32> {
        self.host.pid()
    }
}

/// A request as the host thread sees it: `(kind, call id, payload, replier)`.
type HostRequest = (u8, u64, Option<Py<PyAny>>, Option<Replier>);

/// The channel a host thread reads its calls from (Python side of [`Host`]).
#[pyclass(module = "stateful_pool._core", frozen)]
pub(crate) struct HostChannel(Arc<HostShared>);

#[pymethods]
impl HostChannel {
    /// Waits for the next request: `(0, id, payload, replier)` for a call, `(1, id, None, None)`
    /// to cancel call `id`, or `None` when the host must end.
    fn recv(&self, py: Python<'_>) -> Option<HostRequest> {
        // Blocks with the GIL released and never wakes unless asked to: a daemon thread parked
        // here is harmless at interpreter exit.
        match py.detach(|| self.0.rx.recv()) {
            Ok(Request::Call { id, payload, reply }) => {
                self.0.taken.fetch_max(id, Ordering::AcqRel);
                Some((KIND_CALL, id, Some(payload.clone_ref(py)), Some(Replier(Mutex::new(Some(reply))))))
            }
            Ok(Request::Cancel(id)) => Some((KIND_CANCEL, id, None, None)),
            Ok(Request::Stop) | Err(_) => None,
        }
    }

    /// Reports the setup: status 0 with the value `spawn` returned, 1 with the exception it
    /// raised, 2 with a message. `kill` (optional) interrupts a busy host; `pid` is the process
    /// the instance lives in.
    #[pyo3(signature = (status, value, kill=None, pid=None))]
    fn ready(&self, py: Python<'_>, status: u8, value: Py<PyAny>, kill: Option<Py<PyAny>>, pid: Option<u32>) {
        *lock(&self.0.killer) = kill;
        self.0.pid.store(pid.map_or(0, u64::from), Ordering::Release);
        let reply = match status {
            0 => Reply::Ok(value),
            1 => {
                let summary = describe(value.bind(py));
                Reply::Raised(value, summary)
            }
            _ => Reply::Fatal(describe(value.bind(py))),
        };
        if let Some(tx) = lock(&self.0.ready).take() {
            let _ = tx.send(reply);
        }
    }

    /// Called by the host thread as its last act.
    fn exited(&self) {
        drop(lock(&self.0.ready).take());
        drop(lock(&self.0.killer).take());
        self.0.exited.send_replace(true);
    }
}

/// `Type: message` of an exception (or the text of any other object).
fn describe(value: &Bound<'_, PyAny>) -> String {
    let text = value.str().map_or_else(|_| String::from("?"), |s| s.to_string());
    if value.is_instance_of::<pyo3::exceptions::PyBaseException>() {
        let name = value.get_type().name().map_or_else(|_| String::from("Exception"), |n| n.to_string());
        format!("{name}: {text}")
    } else {
        text
    }
}

/// Answers one call; the first answer wins, later ones are ignored.
#[pyclass(module = "stateful_pool._core", frozen)]
pub(crate) struct Replier(Mutex<Option<oneshot::Sender<Reply>>>);

impl Replier {
    fn send(&self, reply: Reply) {
        if let Some(tx) = lock(&self.0).take() {
            let _ = tx.send(reply);
        }
    }
}

#[pymethods]
impl Replier {
    /// The call returned `value`.
    fn ok(&self, value: Py<PyAny>) {
        self.send(Reply::Ok(value));
    }

    /// The call raised `exc` (its `__cause__` already carries the worker-side traceback).
    fn raised(&self, exc: Py<PyAny>) {
        self.send(Reply::Raised(exc, String::new()));
    }

    /// The host cannot go on: the call fails with `WorkerCrashedError` and the worker restarts.
    fn fatal(&self, message: String) {
        self.send(Reply::Fatal(message));
    }
}

/// The handle Python futures keep to cancel their task (same methods as `CoreTicket`).
#[pyclass(module = "stateful_pool._core", frozen)]
pub(crate) struct LaneTicket(Ticket);

#[pymethods]
impl LaneTicket {
    /// Cancels the task if it has not started.
    fn cancel(&self) -> bool {
        self.0.cancel()
    }

    /// Cancels the task if queued, else kills (thread, ray) or cancels (asyncio) its call.
    fn cancel_or_kill(&self) -> bool {
        self.0.cancel_or_kill()
    }

    /// Whether a worker has picked the task up.
    #[getter]
    fn started(&self) -> bool {
        self.0.started()
    }
}

type StartOutcome = Result<(u64, Option<Py<PyAny>>), StartError<StartFailure>>;

/// One finished task or worker start, waiting for the Python completion thread.
enum Done {
    Task(Outcome<Lane>),
    Start(StartOutcome),
}

/// `(status, value)` of a task outcome; payload-free errors go through the shared bridge.
fn lane_task_outcome<'py>(
    py: Python<'py>,
    outcome: Outcome<Lane>,
    group_of: impl Fn(u64) -> u64,
) -> PyResult<(u8, Bound<'py, PyAny>)> {
    let bare: TaskError<Vec<u8>> = match outcome {
        Ok(value) => return Ok((STATUS_OBJECT, value.into_bound(py))),
        Err(TaskError::Failed(exc)) => return Ok((STATUS_ERROR, exc.into_bound(py))),
        Err(TaskError::WorkerCrashed { worker, fault }) => TaskError::WorkerCrashed { worker: group_of(worker), fault },
        Err(TaskError::TimedOut(d)) => TaskError::TimedOut(d),
        Err(TaskError::Cancelled) => TaskError::Cancelled,
        Err(TaskError::ShutDown) => TaskError::ShutDown,
        Err(TaskError::NoWorkers(reason)) => TaskError::NoWorkers(reason),
    };
    task_outcome(py, Err(bare))
}

fn lane_start_outcome(py: Python<'_>, outcome: StartOutcome) -> PyResult<(u8, Bound<'_, PyAny>)> {
    let bare = match outcome {
        Ok((_, value)) => {
            return Ok((STATUS_OBJECT, value.map_or_else(|| py.None().into_bound(py), |v| v.into_bound(py))))
        }
        Err(StartError::Failed(StartFailure::Raised(exc, _))) => return Ok((STATUS_ERROR, exc.into_bound(py))),
        Err(StartError::Failed(StartFailure::Crashed(message))) => SpawnFailure::Crashed(WorkerFault::new(message)),
        Err(StartError::Failed(StartFailure::NotStarted)) => {
            SpawnFailure::Crashed(WorkerFault::new("worker setup failed"))
        }
        Err(StartError::ShutDown) => return start_outcome(py, Err(StartError::ShutDown)),
    };
    start_outcome(py, Err(StartError::Failed(bare)))
}

/// Forwards the one decisive outcome of a group's start (the lane that ran the setup, or a
/// shutdown) to Python; the other lanes' outcomes are dropped.
struct StartReport(Mutex<Option<ReportFn>>);

type ReportFn = Box<dyn FnOnce(StartOutcome) + Send>;

impl StartReport {
    fn deliver(&self, group_id: u64, outcome: StartOutcome) {
        let decisive = match &outcome {
            Ok((_, value)) => value.is_some(),
            Err(StartError::Failed(StartFailure::NotStarted)) => false,
            Err(_) => true,
        };
        if decisive {
            if let Some(report) = lock(&self.0).take() {
                report(outcome.map(|(_, v)| (group_id, v)));
            }
        }
    }
}

/// The supervisor of one `SPool` in thread, asyncio or ray mode.
#[pyclass(module = "stateful_pool._core", frozen)]
pub(crate) struct CoreThreadPool {
    supervisor: Supervisor<Lane>,
    launcher: Arc<Py<PyAny>>,
    concurrency: usize,
    cancel_on_kill: bool,
    stop_timeout: Duration,
    /// Lane id -> its group's id (the id of the group's first lane).
    groups: Arc<Mutex<HashMap<u64, u64>>>,
    done_tx: Sender<(u64, Done)>,
    done_rx: Receiver<(u64, Done)>,
}

impl CoreThreadPool {
    fn group_of(&self) -> impl Fn(u64) -> u64 + '_ {
        |lane| lock(&self.groups).get(&lane).copied().unwrap_or(lane)
    }

    /// Starts one host with its lanes; `report` gets the setup's outcome once.
    fn start(&self, init: Py<PyAny>, report: impl FnOnce(StartOutcome) + Send + 'static) {
        let spec = Spec {
            launcher: Arc::clone(&self.launcher),
            init: Arc::new(init),
            stop_timeout: self.stop_timeout,
            cancel_on_kill: self.cancel_on_kill,
        };
        if self.supervisor.config().on_demand.is_some() {
            // Records the spawn arguments: each call gets a fresh host started with them.
            self.supervisor.set_worker_factory(move |id| on_demand_lane(spec.clone(), id));
            return report(Ok((0, None)));
        }
        let group =
            Arc::new(Group { spec, host: tokio::sync::Mutex::new(GroupHost::Empty), holders: AtomicUsize::new(0) });
        let report = Arc::new(StartReport(Mutex::new(Some(Box::new(report)))));
        // Group id = first lane id; ids are handed out in order, so it is known before starting.
        let group_id = Arc::new(AtomicU64::new(u64::MAX));
        for lane in 0..self.concurrency {
            let (report, gid, groups) = (Arc::clone(&report), Arc::clone(&group_id), Arc::clone(&self.groups));
            let on_ready = move |outcome: StartOutcome| {
                // `start` holds this lock until the group id is known.
                let group = {
                    let _ids = lock(&groups);
                    gid.load(Ordering::Acquire)
                };
                report.deliver(group, outcome);
            };
            // Register the mapping before the lane can possibly report or serve.
            let mut groups = lock(&self.groups);
            let id = self.supervisor.start_worker(Lane::start(Arc::clone(&group)), on_ready);
            if lane == 0 {
                group_id.store(id, Ordering::Release);
            }
            groups.insert(id, group_id.load(Ordering::Acquire));
        }
    }

    fn task_reply(&self, token: u64) -> ReplyFn<Lane> {
        let tx = self.done_tx.clone();
        Box::new(move |outcome| {
            let _ = tx.send((token, Done::Task(outcome)));
        })
    }

    /// One live lane per group, keyed by group id, in worker order.
    fn live_groups(&self) -> Vec<(u64, u64)> {
        let live = self.supervisor.live_worker_ids();
        let group_of = self.group_of();
        let mut out: Vec<(u64, u64)> = Vec::new();
        for lane in live {
            let group = group_of(lane);
            if !out.iter().any(|(g, _)| *g == group) {
                out.push((group, lane));
            }
        }
        out
    }
}

/// An on-demand pool's worker `id`: a fresh host with one lane, for one call. A setup that
/// raised fails the call with that exception, any other failure with `WorkerCrashedError`.
async fn on_demand_lane(spec: Spec, id: u64) -> Result<Lane, TaskError<Py<PyAny>>> {
    let group = Arc::new(Group { spec, host: tokio::sync::Mutex::new(GroupHost::Empty), holders: AtomicUsize::new(0) });
    let message = match Lane::start(group).await {
        Ok((lane, _)) => return Ok(lane),
        Err(StartFailure::Raised(exc, _)) => return Err(TaskError::Failed(exc)),
        Err(StartFailure::Crashed(message)) => message,
        Err(StartFailure::NotStarted) => "worker setup failed".to_owned(),
    };
    let fault = WorkerFault::new(format!("on-demand worker could not start: {message}"));
    Err(TaskError::WorkerCrashed { worker: id, fault })
}

/// Merges the lanes of one host into one worker entry.
fn merge(into: &mut WorkerInfo, lane: &WorkerInfo) {
    use crate::WorkerState::{Busy, Idle};
    if lane.state == Busy && into.state == Idle {
        into.state = Busy;
    }
    into.restarts += lane.restarts;
    into.tasks_done += lane.tasks_done;
    into.tasks_failed += lane.tasks_failed;
    into.dispatched += lane.dispatched;
    into.batches += lane.batches;
    into.batched_tasks += lane.batched_tasks;
    if into.last_error.is_none() {
        into.last_error.clone_from(&lane.last_error);
    }
    into.pid = into.pid.or(lane.pid);
}

#[pymethods]
impl CoreThreadPool {
    /// `launcher(channel, init)` starts one host thread for a worker; see `stateful_pool/modes`.
    /// `mode` is "thread", "asyncio" or "ray"; `concurrency` is the number of calls one worker
    /// takes at once (asyncio only).
    #[new]
    #[pyo3(signature = (
        launcher, mode="thread", *, concurrency=1, queue_size=None, task_timeout=None,
        restart="on-failure", max_restarts=5, restart_window=60.0, max_tasks_per_worker=None,
        stop_timeout=5.0, load_balancing="round_robin", crash_retries=0, on_demand=None,
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        launcher: Py<PyAny>,
        mode: &str,
        concurrency: usize,
        queue_size: Option<usize>,
        task_timeout: Option<f64>,
        restart: &str,
        max_restarts: u32,
        restart_window: f64,
        max_tasks_per_worker: Option<u64>,
        stop_timeout: f64,
        load_balancing: &str,
        crash_retries: u32,
        on_demand: Option<usize>,
    ) -> PyResult<Self> {
        let cancel_on_kill = match mode {
            "thread" | "ray" => false,
            "asyncio" => true,
            other => return Err(PyValueError::new_err(format!("unknown in-process mode {other:?}"))),
        };
        if concurrency == 0 || (concurrency > 1 && !cancel_on_kill) {
            return Err(PyValueError::new_err(format!("max_concurrency must be 1 in {mode} mode, got {concurrency}")));
        }
        let config = Config {
            queue_capacity: queue_size,
            runtime_threads: 1,
            task_timeout: seconds("task_timeout", task_timeout)?,
            restart_policy: parse_restart(restart)?,
            max_restarts,
            restart_window: seconds("restart_window", Some(restart_window))?.unwrap_or_default(),
            max_tasks_per_worker,
            crash_retries,
            on_demand,
            load_balancing: load_balancing
                .parse()
                .map_err(|e: crate::UnknownBalancer| PyValueError::new_err(e.to_string()))?,
            ..Config::default()
        };
        let supervisor =
            Supervisor::<Lane>::builder().config(config).build().map_err(|e| PyValueError::new_err(e.to_string()))?;
        let (done_tx, done_rx) = crossbeam_channel::unbounded();
        Ok(Self {
            supervisor,
            launcher: Arc::new(launcher),
            concurrency,
            cancel_on_kill,
            stop_timeout: seconds("stop_timeout", Some(stop_timeout))?.unwrap_or_default(),
            groups: Arc::new(Mutex::new(HashMap::new())),
            done_tx,
            done_rx,
        })
    }

    /// Starts a worker and waits for its setup: `(status, value)`.
    fn spawn<'py>(&self, py: Python<'py>, init: Py<PyAny>) -> PyResult<(u8, Bound<'py, PyAny>)> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.start(init, move |outcome| {
            let _ = tx.send(outcome);
        });
        let outcome = recv_interruptible(py, &rx)?;
        lane_start_outcome(py, outcome)
    }

    /// Starts a worker; its outcome arrives through `take_completions` under `token`.
    fn submit_spawn(&self, init: Py<PyAny>, token: u64) {
        let tx = self.done_tx.clone();
        self.start(init, move |outcome| {
            let _ = tx.send((token, Done::Start(outcome)));
        });
    }

    /// Runs one call `(method, args, kwargs)` and waits for it: `(status, value)`.
    #[pyo3(signature = (payload, timeout=None, submit_timeout=None))]
    fn call<'py>(
        &self,
        py: Python<'py>,
        payload: Py<PyAny>,
        timeout: Option<f64>,
        submit_timeout: Option<f64>,
    ) -> PyResult<(u8, Bound<'py, PyAny>)> {
        let options = TaskOptions { timeout: seconds("timeout", timeout)? };
        let (tx, rx) = crossbeam_channel::bounded(1);
        let reply = || -> ReplyFn<Lane> {
            let tx = tx.clone();
            Box::new(move |outcome| {
                let _ = tx.send(outcome);
            })
        };
        let ticket = submit_blocking(py, &self.supervisor, Arc::new(payload), options, submit_timeout, reply)?;
        match recv_interruptible(py, &rx) {
            Ok(outcome) => lane_task_outcome(py, outcome, self.group_of()),
            Err(interrupted) => {
                ticket.cancel();
                Err(interrupted)
            }
        }
    }

    /// Queues one call; its outcome arrives through `take_completions` under `token`.
    #[pyo3(signature = (payload, token, timeout=None, submit_timeout=None))]
    fn submit(
        &self,
        py: Python<'_>,
        payload: Py<PyAny>,
        token: u64,
        timeout: Option<f64>,
        submit_timeout: Option<f64>,
    ) -> PyResult<LaneTicket> {
        let options = TaskOptions { timeout: seconds("timeout", timeout)? };
        let ticket = submit_blocking(py, &self.supervisor, Arc::new(payload), options, submit_timeout, || {
            self.task_reply(token)
        })?;
        Ok(LaneTicket(ticket))
    }

    /// Runs one call on every live worker: a list of `(worker_id, status, value)`.
    fn broadcast<'py>(&self, py: Python<'py>, payload: Py<PyAny>) -> PyResult<Vec<(u64, u8, Bound<'py, PyAny>)>> {
        let mut waits = Vec::new();
        for (group, lane) in self.live_groups() {
            let (tx, rx) = crossbeam_channel::bounded(1);
            let reply: ReplyFn<Lane> = Box::new(move |outcome| {
                let _ = tx.send(outcome);
            });
            let task = Arc::new(payload.clone_ref(py));
            if self.supervisor.submit_to(lane, task, TaskOptions::default(), reply).is_ok() {
                waits.push((group, rx));
            }
        }
        let mut out = Vec::with_capacity(waits.len());
        for (group, rx) in waits {
            let (status, value) = lane_task_outcome(py, recv_interruptible(py, &rx)?, self.group_of())?;
            out.push((group, status, value));
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
                Done::Task(outcome) => lane_task_outcome(py, outcome, self.group_of())?,
                Done::Start(outcome) => lane_start_outcome(py, outcome)?,
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

    /// Asks one worker (every lane of it) to leave after its current task; returns whether it
    /// was live.
    fn retire_worker(&self, worker_id: u64) -> bool {
        let lanes: Vec<u64> = lock(&self.groups).iter().filter(|(_, g)| **g == worker_id).map(|(l, _)| *l).collect();
        // Every lane must be asked, so no short-circuiting `any`.
        let mut retired = false;
        for lane in lanes {
            retired |= self.supervisor.retire_worker(lane);
        }
        retired
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

    /// Tasks waiting in the queue.
    #[getter]
    fn queued(&self) -> usize {
        self.supervisor.queued()
    }

    /// Ids of workers starting or serving.
    fn live_worker_ids(&self) -> Vec<u64> {
        self.live_groups().into_iter().map(|(group, _)| group).collect()
    }

    /// One dict per worker: id, state, pid, restarts, tasks_done, tasks_failed, last_error.
    fn workers<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let group_of = self.group_of();
        let mut merged: Vec<WorkerInfo> = Vec::new();
        for lane in self.supervisor.workers() {
            let group = group_of(lane.id);
            match merged.iter_mut().find(|w| w.id == group) {
                Some(entry) => merge(entry, &lane),
                None => merged.push(WorkerInfo { id: group, ..lane }),
            }
        }
        worker_dicts(py, merged.into_iter().collect())
    }
}
