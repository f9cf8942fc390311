//! [`Host`]: one in-process worker instance and the requests it answers.
//!
//! A host runs on a Python daemon thread its mode's `launcher` starts (thread, asyncio, ray
//! modes), or, in sync mode, on whichever caller thread pumps the engine's
//! [`InlineQueue`]. Either way the supervisor talks to it the same way:
//!
//! ```text
//!  Supervisor (queue, timeouts, restarts, stats)     one tokio thread, no GIL
//!      │  HostWorker::process / begin: Request::Call over a channel
//!      ▼
//!  host (daemon thread; or a caller thread, sync)
//!      │  recv() ─▶ instance.method(*args) ─▶ Replier.ok/raised/fatal
//!      ▼
//!  oneshot reply ─▶ serve loop ─▶ the caller's reply
//! ```
//!
//! Values cross as Python objects, never pickled. The tokio thread never takes the GIL on the
//! hot path: only starting a host and killing a busy one attach, on a blocking-pool thread.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use pyo3::prelude::*;
use tokio::sync::{oneshot, watch};

use super::channel::{serve_inline, HostChannel};
use super::inline::InlineQueue;
use crate::error::WorkerFault;

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What a host answered to a call or to its setup.
pub(crate) enum Reply {
    Ok(Py<PyAny>),
    /// The exception object, its `__cause__` already set to the worker-side traceback, and a
    /// one-line summary (setup failures only: a restart that fails reports it as its fault).
    Raised(Py<PyAny>, String),
    /// The host cannot go on (its thread ends); the text says why.
    Fatal(String),
    /// The host cannot go on and never started this call (its Ray actor was found dead
    /// before the call reached it): the call goes back to the queue.
    NotRun(String),
    /// A coalesced call's outcomes, one per payload: `Ok` the result, `Err` the exception.
    Coalesced(Vec<Result<Py<PyAny>, Py<PyAny>>>),
}

/// What a call carries to its host.
pub(crate) enum CallPayload {
    /// One call: `(method, args, kwargs)` or its encoding.
    One(Arc<Py<PyAny>>),
    /// Several calls of one batched method, run as one coalesced call.
    Coalesced(Vec<Arc<Py<PyAny>>>),
}

impl CallPayload {
    /// Another handle on the same payload (to give back if the call never starts).
    pub(crate) fn share(&self) -> Self {
        match self {
            CallPayload::One(task) => CallPayload::One(Arc::clone(task)),
            CallPayload::Coalesced(tasks) => CallPayload::Coalesced(tasks.clone()),
        }
    }
}

/// A message to a host.
pub(crate) enum Request {
    Call {
        id: u64,
        payload: CallPayload,
        reply: oneshot::Sender<Reply>,
    },
    /// Cancel call `id`; `confirmed` (if any) is answered once the cancel took effect.
    Cancel {
        id: u64,
        confirmed: Option<oneshot::Sender<Reply>>,
    },
    Stop,
}

/// What giving up on one call (a timeout, `future.kill()`) does to the host running it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum KillPolicy {
    /// The host is killed with its call (thread mode; a Ray actor with one call in flight).
    Host,
    /// Only the call is cancelled (asyncio: its task on the event loop).
    Call,
    /// A call still queued behind others is cancelled alone; the call running now, the oldest
    /// one unanswered (a Ray actor runs the calls of one submitter in order), cannot be
    /// interrupted, so its host is killed and every call in flight on it fails.
    QueuedCallElseHost,
}

/// Why a host could not be started.
pub(crate) enum StartFailure {
    /// The setup raised this exception (with a one-line summary).
    Raised(Py<PyAny>, String),
    /// The host ended during its setup; the text says why.
    Crashed(String),
}

/// The state a host and the supervisor share.
pub(crate) struct HostShared {
    pub(crate) rx: Receiver<Request>,
    pub(crate) ready: Mutex<Option<oneshot::Sender<Reply>>>,
    /// Interrupts a busy host (raises in its thread, or kills its Ray actor); set by the host.
    pub(crate) killer: Mutex<Option<Py<PyAny>>>,
    /// Sync mode: answers one request (`serve_one` of `modes/_host.py`); set by the host.
    pub(crate) server: Mutex<Option<Py<PyAny>>>,
    /// Runs one call on the calling thread, `direct(payload) -> (status, value)`, bypassing the
    /// host's thread (a Ray actor's blocking calls); set by the host, if it can.
    pub(crate) direct: Mutex<Option<Py<PyAny>>>,
    /// Calls the host may be sent at once (`max_concurrency`).
    pub(crate) concurrency: usize,
    /// Process id behind the host (this process, or a Ray actor's).
    pub(crate) pid: AtomicU64,
    /// Set by the host as its last act.
    exited: watch::Sender<bool>,
    /// Set when the supervisor gave up on the host (killed or stopped it).
    abandoned: AtomicBool,
    next_call: AtomicU64,
    /// The highest call id the host has taken from its channel: a call above it never started.
    pub(crate) taken: AtomicU64,
    /// Calls sent and not answered yet, in the order sent (`KillPolicy::QueuedCallElseHost`).
    in_flight: Option<Mutex<BTreeSet<u64>>>,
}

impl HostShared {
    /// Reports the setup's outcome (the first report wins).
    pub(crate) fn report_ready(&self, reply: Reply) {
        if let Some(tx) = lock(&self.ready).take() {
            let _ = tx.send(reply);
        }
    }

    /// The host's last act: nothing it registered is kept.
    pub(crate) fn exit(&self) {
        drop(lock(&self.ready).take());
        drop(lock(&self.killer).take());
        drop(lock(&self.server).take());
        drop(lock(&self.direct).take());
        self.exited.send_replace(true);
    }
}

/// How a worker's host is started (and started again) and stopped.
#[derive(Clone)]
pub(crate) struct HostSpec {
    pub(crate) launcher: Arc<Py<PyAny>>,
    pub(crate) init: Arc<Py<PyAny>>,
    pub(crate) stop_timeout: Duration,
    /// What giving up on one call does to the host.
    pub(crate) kill_policy: KillPolicy,
    /// Calls the host may be sent at once (`max_concurrency`): its worker's
    /// [`crate::Workable::concurrency`].
    pub(crate) concurrency: usize,
    /// Sync mode: where the host's setup and calls wait for a caller thread to run them.
    pub(crate) inline: Option<Arc<InlineQueue>>,
}

/// The supervisor's handle on one host.
pub(crate) struct Host {
    tx: Sender<Request>,
    pub(crate) shared: Arc<HostShared>,
    inline: Option<Arc<InlineQueue>>,
}

impl Host {
    /// Starts a host through the Python `launcher` and waits for its setup.
    pub(crate) async fn start(spec: &HostSpec) -> Result<(Arc<Host>, Py<PyAny>), StartFailure> {
        let (tx, rx) = crossbeam_channel::unbounded();
        let (ready_tx, ready_rx) = oneshot::channel();
        let shared = Arc::new(HostShared {
            rx,
            ready: Mutex::new(Some(ready_tx)),
            killer: Mutex::new(None),
            server: Mutex::new(None),
            direct: Mutex::new(None),
            concurrency: spec.concurrency,
            pid: AtomicU64::new(0),
            exited: watch::Sender::new(false),
            abandoned: AtomicBool::new(false),
            next_call: AtomicU64::new(1),
            taken: AtomicU64::new(0),
            in_flight: (spec.kill_policy == KillPolicy::QueuedCallElseHost).then(Mutex::default),
        });
        let host = Arc::new(Host { tx, shared: Arc::clone(&shared), inline: spec.inline.clone() });
        let (launcher, init) = (Arc::clone(&spec.launcher), Arc::clone(&spec.init));
        let launch = move |py: Python<'_>| {
            let launched = Py::new(py, HostChannel(Arc::clone(&shared)))
                .and_then(|channel| launcher.call1(py, (channel, init.bind(py))));
            if let Err(e) = &launched {
                shared.report_ready(Reply::Fatal(format!("cannot start worker thread: {e}")));
            }
            launched.map(drop)
        };
        match &spec.inline {
            // The setup runs on the next caller thread that waits on the engine.
            Some(inline) => inline.push(Box::new(launch)),
            // Attaching to the interpreter may wait for the GIL: do it off the supervisor's thread.
            None => {
                let failed = Arc::clone(&host.shared);
                if let Err(e) = tokio::task::spawn_blocking(move || Python::attach(|py| drop(launch(py)))).await {
                    failed.report_ready(Reply::Fatal(format!("cannot start worker thread: {e}")));
                }
            }
        }
        match ready_rx.await {
            Ok(Reply::Ok(value)) => Ok((host, value)),
            Ok(Reply::Raised(exc, summary)) => Err(StartFailure::Raised(exc, summary)),
            Ok(Reply::Fatal(message) | Reply::NotRun(message)) => Err(StartFailure::Crashed(message)),
            Ok(Reply::Coalesced(_)) | Err(_) => {
                Err(StartFailure::Crashed("worker thread exited during setup".to_owned()))
            }
        }
    }

    pub(crate) fn alive(&self) -> bool {
        !self.shared.abandoned.load(Ordering::Acquire) && !*self.shared.exited.borrow()
    }

    pub(crate) fn pid(&self) -> Option<u32> {
        u32::try_from(self.shared.pid.load(Ordering::Acquire)).ok().filter(|&p| p != 0)
    }

    /// Sends call `id`; `Err` gives the payload back when the host is gone.
    pub(crate) fn send_call(&self, payload: CallPayload) -> Result<(u64, oneshot::Receiver<Reply>), ()> {
        // Held while the call is numbered and sent, so ids are in the order the host takes them.
        let mut in_flight = self.shared.in_flight.as_ref().map(lock);
        let id = self.shared.next_call.fetch_add(1, Ordering::Relaxed);
        let (reply, rx) = oneshot::channel();
        self.tx.send(Request::Call { id, payload, reply }).map_err(drop)?;
        if let Some(in_flight) = &mut in_flight {
            in_flight.insert(id);
        }
        drop(in_flight);
        if let Some(inline) = &self.inline {
            let shared = Arc::clone(&self.shared);
            inline.push(Box::new(move |py| serve_inline(py, &shared)));
        }
        Ok((id, rx))
    }

    /// Call `id` was answered (or given up on): it is no longer in flight.
    pub(crate) fn settled(&self, id: u64) {
        if let Some(in_flight) = &self.shared.in_flight {
            lock(in_flight).remove(&id);
        }
    }

    /// Whether call `id` is the oldest one unanswered: the one the host runs now.
    pub(crate) fn is_oldest(&self, id: u64) -> bool {
        self.shared.in_flight.as_ref().is_none_or(|in_flight| lock(in_flight).first() == Some(&id))
    }

    /// Asks the host to cancel call `id` (asyncio; a call queued at a Ray actor).
    pub(crate) fn cancel(&self, id: u64) {
        let _ = self.tx.send(Request::Cancel { id, confirmed: None });
    }

    /// Asks the host to cancel call `id` and waits (up to `timeout`) until it says the call
    /// will not run, so that the call fails only once that holds (a call queued at a Ray actor).
    pub(crate) async fn cancel_confirmed(&self, id: u64, timeout: Duration) {
        let (confirmed, rx) = oneshot::channel();
        if self.tx.send(Request::Cancel { id, confirmed: Some(confirmed) }).is_ok() {
            // A host that ends drops the sender: nothing is left to run the call.
            let _ = tokio::time::timeout(timeout, rx).await;
        }
    }

    /// Asks the host to end after its current call, without waiting. A sync host has no
    /// thread to end: it is gone at once (a call it runs now finishes unheard).
    pub(crate) fn release(&self) {
        self.shared.abandoned.store(true, Ordering::Release);
        let _ = self.tx.send(Request::Stop);
        if self.inline.is_some() {
            self.shared.exit();
        }
    }

    /// Gives up on the host now: it ends after its current call, which is interrupted if the
    /// host registered a way to (a thread cannot be killed; a Ray actor can).
    pub(crate) async fn kill(&self) {
        // The killer first: releasing a sync host drops it.
        let killer = lock(&self.shared.killer).take();
        self.release();
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
    pub(crate) async fn stop(&self, timeout: Duration) {
        self.release();
        let mut exited = self.shared.exited.subscribe();
        if tokio::time::timeout(timeout, exited.wait_for(|e| *e)).await.is_err() {
            self.kill().await;
        }
    }

    /// Resolves when the host ends (asked to or not).
    pub(crate) async fn exited(&self) {
        let mut exited = self.shared.exited.subscribe();
        let _ = exited.wait_for(|e| *e).await;
    }

    /// Resolves when the host ends without being asked to.
    pub(crate) async fn died(&self) -> WorkerFault {
        self.exited().await;
        if self.shared.abandoned.load(Ordering::Acquire) {
            std::future::pending::<()>().await;
        }
        WorkerFault::new("worker thread exited while idle")
    }
}
