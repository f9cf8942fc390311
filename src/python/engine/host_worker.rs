//! [`HostWorker`]: one supervisor worker that is one in-process host (a thread, an asyncio
//! event loop, a Ray actor, or sync mode's caller-run instance).
//!
//! A host that takes several calls at once (asyncio's `max_concurrency`; a Ray actor with calls
//! queued at it) is still one worker: its [`Workable::concurrency`] is that many, and the
//! supervisor keeps that many calls in flight on it (see `sched::concurrent`). Giving up on one
//! of them follows the host's [`KillPolicy`].

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Poll;

use pyo3::prelude::*;
use tokio::sync::oneshot;

use super::host::{lock, CallPayload, Host, HostSpec, KillPolicy, Reply, StartFailure};
use super::kind::{Kind, PyReply, StartOutcome};
use crate::error::{StartError, TaskError, WorkerFault};
use crate::job::Outcome;
use crate::process::SpawnFailure;
use crate::python::errors::{start_outcome, task_outcome};
use crate::python::protocol::{STATUS_ERROR, STATUS_OBJECT};
use crate::{CallToken, Cancellation, Coalesced, Refusal, Response, Workable};

/// A call begun beside others, waiting for its reply.
struct InFlight {
    reply: oneshot::Receiver<Reply>,
    /// The payload, to give back if the host ends before it takes the call (shared, cheap).
    spare: Arc<Py<PyAny>>,
}

/// One supervisor worker: one host, and how to start it again.
pub(crate) struct HostWorker {
    spec: HostSpec,
    host: Arc<Host>,
    /// The call `process` has in flight (one call at a time), to cancel it.
    current: Option<u64>,
    /// Calls begun beside others (`begin`), by id: the order the host takes them.
    calls: BTreeMap<u64, InFlight>,
    /// Calls given up on by `kill` while the host goes on: answered as lost by `next_done`.
    abandoned: Vec<u64>,
}

impl HostWorker {
    /// Starts a host for `spec`; returns the worker and what the host's setup returned.
    pub(crate) async fn start(spec: HostSpec) -> Result<(HostWorker, Py<PyAny>), StartFailure> {
        let (host, value) = Host::start(&spec).await?;
        Ok((HostWorker { spec, host, current: None, calls: BTreeMap::new(), abandoned: Vec::new() }, value))
    }

    /// The response to call `id` whose host answered `reply` (`None`: the host ended first).
    fn response(&self, id: u64, reply: Option<Reply>, spare: CallPayload) -> Trip {
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

    /// Sends `payload` to the host: its id and reply, or the payload back with why not.
    fn send(&self, payload: CallPayload) -> Result<(u64, oneshot::Receiver<Reply>), (CallPayload, WorkerFault)> {
        if !self.host.alive() {
            // Its host ended before this worker noticed: the call never started.
            return Err((payload, WorkerFault::new("worker thread had exited")));
        }
        // Kept to give back if the call never starts (cheap: shared handles).
        let spare = payload.share();
        self.host.send_call(payload).map_err(|()| (spare, WorkerFault::new("worker thread is gone")))
    }

    /// Sends `payload` to the host and waits for its answer, raced against the host's end.
    async fn round_trip(&mut self, payload: CallPayload) -> Trip {
        let spare = payload.share();
        let (id, rx) = match self.send(payload) {
            Ok(sent) => sent,
            Err((payload, fault)) => return Trip::Refused(payload, fault),
        };
        self.current = Some(id);
        // Race the reply against the host's end: a host that died before reading the call (its
        // death not yet noticed here) would otherwise leave the call waiting forever.
        let reply = tokio::select! {
            biased;
            reply = rx => reply.ok(),
            () = self.host.exited() => None,
        };
        self.current = None;
        self.host.settled(id);
        self.response(id, reply, spare)
    }

    /// The next begun call with a reply in, or whose reply can no longer come.
    async fn next_reply(&mut self) -> (u64, Option<Reply>) {
        let host = Arc::clone(&self.host);
        let calls = &mut self.calls;
        let replied = std::future::poll_fn(|cx| {
            calls
                .iter_mut()
                .find_map(|(id, call)| match std::pin::Pin::new(&mut call.reply).poll(cx) {
                    Poll::Ready(reply) => Some((*id, reply.ok())),
                    Poll::Pending => None,
                })
                .map_or(Poll::Pending, Poll::Ready)
        });
        tokio::select! {
            biased;
            replied = replied => replied,
            // The host ended: its oldest call unanswered first (a reply may still have come in).
            () = host.exited() => match calls.first_entry() {
                Some(mut call) => (*call.key(), call.get_mut().reply.try_recv().ok()),
                None => std::future::pending().await,
            },
        }
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

impl Trip {
    /// As the response to one call.
    fn into_response(self) -> Response<HostWorker> {
        match self {
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
}

impl Drop for HostWorker {
    fn drop(&mut self) {
        self.host.release();
    }
}

impl Workable for HostWorker {
    /// `(method, args, kwargs)`; shared so a crashed task can be retried without the GIL.
    type Task = Arc<Py<PyAny>>;
    /// The result object.
    type Output = Py<PyAny>;
    /// The raised exception object.
    type Error = Py<PyAny>;

    async fn process(&mut self, task: Arc<Py<PyAny>>) -> Response<Self> {
        self.round_trip(CallPayload::One(task)).await.into_response()
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

    /// `max_concurrency` (1 in thread and sync modes).
    fn concurrency(&self) -> usize {
        self.spec.concurrency
    }

    fn begin(&mut self, task: Arc<Py<PyAny>>) -> Result<CallToken, Refusal<Arc<Py<PyAny>>>> {
        let spare = Arc::clone(&task);
        match self.send(CallPayload::One(task)) {
            Ok((id, reply)) => {
                self.calls.insert(id, InFlight { reply, spare });
                Ok(CallToken(id))
            }
            Err((_, fault)) => Err(Refusal { task: spare, fault }),
        }
    }

    async fn next_done(&mut self) -> (CallToken, Response<Self>) {
        if let Some(id) = self.abandoned.pop() {
            let fault = WorkerFault::new("call cancelled: its worker was given up on");
            return (CallToken(id), Response::Fatal(fault));
        }
        let (id, reply) = self.next_reply().await;
        let call = self.calls.remove(&id).expect("a call in flight");
        self.host.settled(id);
        (CallToken(id), self.response(id, reply, CallPayload::One(call.spare)).into_response())
    }

    async fn cancel(&mut self, call: CallToken) -> Cancellation {
        let CallToken(id) = call;
        match self.spec.kill_policy {
            KillPolicy::Host => return Cancellation::Worker,
            // The call the actor runs now cannot be interrupted: the actor goes.
            KillPolicy::QueuedCallElseHost if self.host.is_oldest(id) => return Cancellation::Worker,
            KillPolicy::QueuedCallElseHost => {
                self.host.settled(id);
                self.host.cancel_confirmed(id, self.spec.stop_timeout).await;
            }
            KillPolicy::Call => self.host.cancel(id),
        }
        self.calls.remove(&id);
        self.host.settled(id);
        Cancellation::Call
    }

    async fn restart(&mut self) -> Result<(), WorkerFault> {
        // Only a killed host is given up on here: after a cancelled call the host goes on, and
        // one that ended or was killed for its running call is already released.
        if self.spec.kill_policy == KillPolicy::Host {
            self.host.release();
        }
        self.calls.clear();
        self.abandoned.clear();
        if self.host.alive() {
            return Ok(());
        }
        let (host, _) = Host::start(&self.spec).await.map_err(|failure| match failure {
            StartFailure::Raised(_, summary) => WorkerFault::new(format!("worker setup raised {summary}")),
            StartFailure::Crashed(message) => WorkerFault::new(message),
        })?;
        self.host = host;
        Ok(())
    }

    async fn terminated(&mut self) -> WorkerFault {
        self.host.died().await
    }

    async fn stop(&mut self) {
        self.host.stop(self.spec.stop_timeout).await;
    }

    /// Gives up on every call in flight: with [`KillPolicy::Call`] each is cancelled and the
    /// host goes on (an asyncio loop); otherwise the host is killed.
    async fn kill(&mut self) {
        let current = self.current.take();
        if self.spec.kill_policy != KillPolicy::Call {
            self.host.kill().await;
            return;
        }
        if !self.host.alive() {
            // Ending already (a fatal call): `next_done` answers its calls as it exits, giving
            // back those it never took.
            return;
        }
        for id in current.into_iter().chain(std::mem::take(&mut self.calls).into_keys()) {
            self.host.cancel(id);
            self.host.settled(id);
            if Some(id) != current {
                self.abandoned.push(id);
            }
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

impl Kind for HostWorker {
    /// What the setup returned; `None` from an on-demand pool's `spawn()`, which starts no host.
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
            Err(StartError::ShutDown) => return start_outcome(py, Err(StartError::ShutDown)),
        };
        start_outcome(py, Err(StartError::Failed(bare)))
    }
}
