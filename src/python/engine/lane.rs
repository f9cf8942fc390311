//! [`Lane`]: a supervisor worker that is one lane into an in-process host, and how the hosts
//! of one worker (a *group* of lanes, see `members.rs`) are started and restarted.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use pyo3::prelude::*;

use super::host::{lock, CallPayload, Host, HostSpec, KillPolicy, Reply, StartFailure};
use super::kind::{Kind, PyReply, StartOutcome};
use crate::error::{StartError, TaskError, WorkerFault};
use crate::job::Outcome;
use crate::process::SpawnFailure;
use crate::python::errors::{start_outcome, task_outcome};
use crate::python::protocol::{STATUS_ERROR, STATUS_OBJECT};
use crate::{Coalesced, Response, Workable};

enum GroupHost {
    Empty,
    Running(Arc<Host>),
    /// The first setup failed: lanes still starting must not run it again.
    Failed,
}

/// The lanes sharing one host, and how to start that host again.
pub(crate) struct Group {
    spec: HostSpec,
    host: tokio::sync::Mutex<GroupHost>,
    /// Lanes that hold the host; the last to let go stops it.
    holders: AtomicUsize,
}

impl Group {
    pub(crate) fn new(spec: HostSpec) -> Self {
        Self { spec, host: tokio::sync::Mutex::new(GroupHost::Empty), holders: AtomicUsize::new(0) }
    }

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
    /// Starts a lane of `group`; the lane that runs the group's setup gets its value.
    pub(crate) async fn start(group: Arc<Group>) -> Result<(Lane, Option<Py<PyAny>>), StartFailure> {
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

/// How a call's trip to the host ended.
enum Trip {
    /// The host answered (a fatal answer has already marked the host as ending).
    Replied(Reply),
    /// The host was gone before it took the call: nothing ran.
    Refused(CallPayload, WorkerFault),
    /// The host ended while running the call.
    Lost(WorkerFault),
}

impl Lane {
    /// Sends `payload` to the host and waits for its answer, raced against the host's end.
    async fn round_trip(&mut self, payload: CallPayload) -> Trip {
        if !self.host.alive() {
            // Its host ended before this lane noticed: the call never started.
            return Trip::Refused(payload, WorkerFault::new("worker thread had exited"));
        }
        // Kept to give back if the call never starts (cheap: shared handles).
        let spare = match &payload {
            CallPayload::One(task) => CallPayload::One(Arc::clone(task)),
            CallPayload::Coalesced(tasks) => CallPayload::Coalesced(tasks.clone()),
        };
        let Ok((id, rx)) = self.host.send_call(payload) else {
            return Trip::Refused(spare, WorkerFault::new("worker thread is gone"));
        };
        self.current = Some(id);
        // Race the reply against the host's end: a host that died before reading the call (its
        // death not yet noticed by this lane) would otherwise leave the call waiting forever.
        let reply = tokio::select! {
            biased;
            reply = rx => reply.ok(),
            () = self.host.exited() => None,
        };
        self.current = None;
        self.host.settled(id);
        match reply {
            Some(Reply::NotRun(message)) => {
                // Its Ray actor was found dead before the call reached it: the call goes back.
                self.host.release();
                Trip::Refused(spare, WorkerFault::new(message))
            }
            Some(reply) => {
                if matches!(reply, Reply::Fatal(_)) {
                    // The host is ending: mark it so, lest a restart reuse it before its thread exits.
                    self.host.release();
                }
                Trip::Replied(reply)
            }
            None if self.host.shared.taken.load(Ordering::Acquire) < id => {
                Trip::Refused(spare, WorkerFault::new("worker thread exited before taking the task"))
            }
            None => Trip::Lost(WorkerFault::new("worker thread exited while running the task")),
        }
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

    async fn process(&mut self, task: Arc<Py<PyAny>>) -> Response<Self> {
        match self.round_trip(CallPayload::One(task)).await {
            Trip::Replied(Reply::Ok(value)) => Response::Complete(Ok(value)),
            Trip::Replied(Reply::Raised(exc, _)) => Response::Complete(Err(exc)),
            Trip::Replied(Reply::Coalesced(_)) => {
                Response::Fatal(WorkerFault::protocol("worker answered a call with a coalesced reply"))
            }
            Trip::Replied(Reply::Fatal(message) | Reply::NotRun(message)) => Response::Fatal(WorkerFault::new(message)),
            Trip::Refused(CallPayload::One(task), fault) => Response::Refused(task, fault),
            Trip::Refused(CallPayload::Coalesced(_), fault) | Trip::Lost(fault) => Response::Fatal(fault),
        }
    }

    async fn process_coalesced(&mut self, tasks: Vec<Arc<Py<PyAny>>>) -> Coalesced<Self> {
        match self.round_trip(CallPayload::Coalesced(tasks)).await {
            Trip::Replied(Reply::Coalesced(outcomes)) => Coalesced::Complete(outcomes),
            Trip::Replied(Reply::Fatal(message) | Reply::NotRun(message)) => {
                Coalesced::Fatal(WorkerFault::new(message))
            }
            Trip::Replied(Reply::Ok(_) | Reply::Raised(..)) => {
                Coalesced::Fatal(WorkerFault::protocol("worker answered a coalesced call with a single reply"))
            }
            Trip::Refused(CallPayload::Coalesced(tasks), fault) => Coalesced::Refused(tasks, fault),
            Trip::Refused(CallPayload::One(_), fault) | Trip::Lost(fault) => Coalesced::Fatal(fault),
        }
    }

    async fn restart(&mut self) -> Result<(), WorkerFault> {
        // Only a killed host is given up on here: after a cancelled call the host goes on, and
        // one that ended or was killed for its running call is already released.
        if self.group.spec.kill_policy == KillPolicy::Host {
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
        let current = self.current.take();
        match (self.group.spec.kill_policy, current) {
            (KillPolicy::Host, _) => self.host.kill().await,
            (KillPolicy::Call, Some(id)) => self.host.cancel(id),
            (KillPolicy::QueuedCallElseHost, Some(id)) if !self.host.is_oldest(id) => {
                self.host.settled(id);
                self.host.cancel_confirmed(id, self.group.spec.stop_timeout).await;
            }
            (KillPolicy::QueuedCallElseHost, Some(_)) => self.host.kill().await,
            // No call of this lane runs: nothing to cancel, and the host serves other lanes.
            (KillPolicy::Call | KillPolicy::QueuedCallElseHost, None) => {}
        }
    }

    fn clone_task(task: &Arc<Py<PyAny>>) -> Option<Arc<Py<PyAny>>> {
        Some(Arc::clone(task))
    }

    fn pid(&self) -> Option<u32> {
        self.host.pid()
    }

    /// The host itself, when it takes calls on the caller's thread (see `HostedEngine::call_direct`).
    fn lane(&self) -> Option<Arc<dyn std::any::Any + Send + Sync>> {
        let direct = lock(&self.host.shared.direct).is_some();
        direct.then(|| Arc::clone(&self.host) as Arc<dyn std::any::Any + Send + Sync>)
    }
}

impl Kind for Lane {
    type Ready = Option<Py<PyAny>>;
    type Failure = StartFailure;

    /// The result object itself, the exception to raise, or a pool error (shared bridge).
    fn task_reply(py: Python<'_>, outcome: Outcome<Self>) -> PyResult<PyReply<'_>> {
        let bare: TaskError<Vec<u8>> = match outcome {
            Ok(value) => return Ok((STATUS_OBJECT, value.into_bound(py))),
            Err(TaskError::Failed(exc)) => return Ok((STATUS_ERROR, exc.into_bound(py))),
            Err(TaskError::WorkerCrashed { worker, fault }) => TaskError::WorkerCrashed { worker, fault },
            Err(TaskError::TimedOut(d)) => TaskError::TimedOut(d),
            Err(TaskError::Cancelled) => TaskError::Cancelled,
            Err(TaskError::ShutDown) => TaskError::ShutDown,
            Err(TaskError::NoWorkers(reason)) => TaskError::NoWorkers(reason),
        };
        task_outcome(py, Err(bare))
    }

    fn start_reply(py: Python<'_>, outcome: StartOutcome<Self>) -> PyResult<PyReply<'_>> {
        let bare = match outcome {
            Ok((_, value)) => {
                return Ok((STATUS_OBJECT, value.map_or_else(|| py.None().into_bound(py), |v| v.into_bound(py))));
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
}
