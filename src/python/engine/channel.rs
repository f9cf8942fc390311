//! The Python side of a [`super::host::Host`]: the channel a host reads its requests from and
//! reports its setup on, and the replier that answers one call.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use pyo3::prelude::*;
use pyo3::types::PyList;
use tokio::sync::oneshot;

use super::host::{lock, CallPayload, HostShared, Reply, Request};
use crate::python::protocol::{READY_OK, READY_RAISED, REQUEST_CALL, REQUEST_CANCEL, REQUEST_COALESCED};

/// A request as the host sees it: `(kind, call id, payload, replier)`.
type HostRequest = (u8, u64, Option<Py<PyAny>>, Option<Replier>);

/// The request taken from the channel, as the host sees it; `None`: the host must end.
fn to_python(py: Python<'_>, shared: &HostShared, request: Request) -> Option<HostRequest> {
    match request {
        Request::Call { id, payload, reply } => {
            shared.taken.fetch_max(id, Ordering::AcqRel);
            let (kind, payload) = match payload {
                CallPayload::One(payload) => (REQUEST_CALL, payload.clone_ref(py)),
                CallPayload::Coalesced(payloads) => {
                    let list = PyList::new(py, payloads.iter().map(|p| p.bind(py))).ok()?;
                    (REQUEST_COALESCED, list.into_any().unbind())
                }
            };
            Some((kind, id, Some(payload), Some(Replier(Mutex::new(Some(reply))))))
        }
        Request::Cancel { id, confirmed } => {
            Some((REQUEST_CANCEL, id, None, confirmed.map(|reply| Replier(Mutex::new(Some(reply))))))
        }
        Request::Stop => None,
    }
}

/// Sync mode: answers the request waiting for a host, on the calling thread, through the
/// server the host registered. A server that returns false ends the host.
pub(crate) fn serve_inline(py: Python<'_>, shared: &Arc<HostShared>) -> PyResult<()> {
    let Ok(request) = shared.rx.try_recv() else { return Ok(()) };
    let Some(request) = to_python(py, shared, request) else { return Ok(()) };
    // A clone: releasing the host (a timeout, a kill) takes the server while it runs.
    let server = lock(&shared.server).as_ref().map(|s| s.clone_ref(py));
    let Some(server) = server else { return Ok(()) }; // released: the call is answered as failed
    if !server.call1(py, (request,))?.is_truthy(py)? {
        shared.exit();
    }
    Ok(())
}

/// The channel a host reads its calls from (Python side of [`super::host::Host`]).
#[pyclass(module = "stateful_pool._core", frozen)]
pub(crate) struct HostChannel(pub(crate) Arc<HostShared>);

#[pymethods]
impl HostChannel {
    /// Waits for the next request: `(REQUEST_CALL, id, payload, replier)` for a call,
    /// `(REQUEST_COALESCED, id, [payload, ...], replier)` for a coalesced call,
    /// `(REQUEST_CANCEL, id, None, replier)` to cancel call `id` (`replier`, when not `None`, is
    /// answered with `ok(None)` once the call will not run), or `None` when the host must end.
    fn recv(&self, py: Python<'_>) -> Option<HostRequest> {
        // Blocks with the GIL released and never wakes unless asked to: a daemon thread parked
        // here is harmless at interpreter exit.
        let request = py.detach(|| self.0.rx.recv()).ok()?;
        to_python(py, &self.0, request)
    }

    /// Waits for the next request and takes those already waiting behind it: `(requests, go_on)`,
    /// the requests as `recv` returns them, and false once the host must end after them.
    fn recv_many(&self, py: Python<'_>) -> (Vec<HostRequest>, bool) {
        let Ok(first) = py.detach(|| self.0.rx.recv()) else { return (Vec::new(), false) };
        let mut requests = Vec::new();
        for request in std::iter::once(first).chain(self.0.rx.try_iter()) {
            match to_python(py, &self.0, request) {
                Some(request) => requests.push(request),
                None => return (requests, false),
            }
        }
        (requests, true)
    }

    /// Reports the setup: `READY_OK` with the value `spawn` returned, `READY_RAISED` with the
    /// exception it raised, `READY_FATAL` with a message. `kill` (optional) interrupts a busy
    /// host; `pid` is the process the instance lives in; `direct` (optional), called as
    /// `direct(payload) -> (READY_OK, result) | (READY_RAISED, exception) | (READY_FATAL, text)`,
    /// runs a blocking call on the caller's thread.
    #[pyo3(signature = (status, value, kill=None, pid=None, direct=None))]
    fn ready(
        &self,
        py: Python<'_>,
        status: u8,
        value: Py<PyAny>,
        kill: Option<Py<PyAny>>,
        pid: Option<u32>,
        direct: Option<Py<PyAny>>,
    ) {
        *lock(&self.0.killer) = kill;
        *lock(&self.0.direct) = direct;
        self.0.pid.store(pid.map_or(0, u64::from), Ordering::Release);
        let reply = match status {
            READY_OK => Reply::Ok(value),
            READY_RAISED => {
                let summary = describe(value.bind(py));
                Reply::Raised(value, summary)
            }
            _ => Reply::Fatal(describe(value.bind(py))),
        };
        self.0.report_ready(reply);
    }

    /// Sync mode: `server(request)` answers each request on a caller thread (returning whether
    /// the host goes on), instead of a thread of the host's own reading `recv`.
    fn serve_inline(&self, server: Py<PyAny>) {
        *lock(&self.0.server) = Some(server);
    }

    /// How many calls the host may be sent before it answers the first (`max_concurrency`).
    #[getter]
    fn concurrency(&self) -> usize {
        self.0.concurrency
    }

    /// Called by the host as its last act.
    fn exited(&self) {
        self.0.exit();
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

    /// A coalesced call ended: `outcomes` holds one `(returned, value)` pair per payload, in
    /// order (`returned` false: `value` is the exception that item raised).
    fn coalesced(&self, outcomes: Vec<(bool, Py<PyAny>)>) {
        let outcomes = outcomes.into_iter().map(|(returned, value)| if returned { Ok(value) } else { Err(value) });
        self.send(Reply::Coalesced(outcomes.collect()));
    }

    /// The host cannot go on: the call fails with `WorkerCrashedError` and the worker restarts.
    fn fatal(&self, message: String) {
        self.send(Reply::Fatal(message));
    }

    /// The host cannot go on and never started this call: the call goes back to the queue
    /// and the worker restarts.
    fn not_run(&self, message: String) {
        self.send(Reply::NotRun(message));
    }
}
