//! [`ProcessWorker`]: a [`Workable`] whose state lives in a child process that speaks the
//! frame protocol of [`frame`]. The Python bindings run `SWorker`s with it; any program that
//! speaks the protocol can be a worker.
//!
//! (Left out of loom builds: tokio built with `--cfg loom` has no `process` or `net`, and the
//! loom models only check `shm`.)
#![cfg(not(loom))]

mod child;
mod coalesce;
mod endpoint;
pub(crate) mod frame;
mod lane;
// The namespace store is served to Python task trees only; a Rust-only build leaves it unused.
#[cfg_attr(not(feature = "python"), allow(dead_code))]
pub(crate) mod namespace;
pub(crate) mod recycle;
mod shared_zygote;
mod shm_transport;
mod spawn;
pub(crate) mod transport;
mod unix_socket;
#[cfg_attr(not(feature = "python"), allow(dead_code))]
pub(crate) mod upcall;
mod zygote;

use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::Duration;

use self::child::WorkerChild;
#[cfg(feature = "python")] // read by the Python protocol table only
pub(crate) use self::coalesce::COALESCED_MARKER;
pub use self::endpoint::WorkerEndpoint;
pub use self::frame::{FrameKind, ProtocolError, RaisedPayload, DEFAULT_MAX_MESSAGE_SIZE};
pub use self::lane::{LaneError, ShmLane};
pub(crate) use self::shm_transport::ShmTransport;
pub use self::spawn::{Placement, ProcessSpec, StartMethod};
pub(crate) use self::transport::{AnyTransport, PipeTransport, Transport};
pub(crate) use self::upcall::Upcalls;
pub use self::zygote::Zygote;
use crate::error::WorkerFault;
use crate::shm::{Segment, Wait};
use crate::worker::workable::{Coalesced, Response, Workable};

/// Why a worker process could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SpawnFailure {
    /// The program could not be started.
    #[error("cannot start worker process: {0}")]
    Io(#[from] std::io::Error),
    /// Its setup raised; the payload is a [`RaisedPayload`]. The process was stopped.
    #[error("worker setup raised an exception")]
    Raised(Vec<u8>),
    /// It died or broke the protocol during setup.
    #[error("{0}")]
    Crashed(WorkerFault),
}

impl SpawnFailure {
    fn into_fault(self) -> WorkerFault {
        match self {
            SpawnFailure::Io(e) => WorkerFault::new(format!("cannot start worker process: {e}")),
            SpawnFailure::Raised(payload) => {
                let summary = RaisedPayload::parse(&payload).map_or("unknown error", |r| r.summary).to_owned();
                WorkerFault::new(format!("worker setup raised {summary}"))
            }
            SpawnFailure::Crashed(fault) => fault,
        }
    }
}

/// The fault of a worker that broke the protocol: it is alive and lying (corrupt ring indices,
/// a malformed or oversized frame, a reply to the wrong call), so it is killed at once.
pub(crate) fn protocol_fault(error: &std::io::Error, during: &str) -> WorkerFault {
    WorkerFault::protocol(format!(
        "worker broke the protocol {during} (it corrupted its shared memory or sent a malformed frame): {error}; \
         worker killed"
    ))
}

fn fault_from_status(status: ExitStatus, during: &str) -> WorkerFault {
    let mut fault = WorkerFault::new(format!("worker process died {during}"));
    fault.exit_code = status.code();
    fault.signal = status.signal();
    fault
}

/// A worker living in a child process, re-created with the same setup payload on restart.
#[derive(Debug)]
pub struct ProcessWorker {
    spec: Arc<ProcessSpec>,
    init: Arc<Vec<u8>>,
    child: Option<WorkerChild>,
    transport: Option<AnyTransport>,
    /// Our write end of the request pipe, kept open so the worker sees EOF only when we go.
    _keepalive: Option<std::os::fd::OwnedFd>,
    /// Task ids, shared with the lane so both number calls the same way.
    next_id: Arc<std::sync::atomic::AtomicU64>,
    /// The direct lane into the shared-memory rings, when there are rings.
    lane: Option<Arc<ShmLane>>,
    /// Ids of the calls handed over with `try_send` and not answered yet, oldest first.
    pipelined: std::collections::VecDeque<u64>,
}

/// How long to wait for the exit status of a worker that closed its pipe.
const EXIT_GRACE: Duration = Duration::from_secs(2);

impl ProcessWorker {
    /// Starts a worker process and sends it `init`; returns the worker and the payload of its
    /// `Ready` frame. Must run on the supervisor's runtime (see [`crate::Supervisor::start_worker`]).
    ///
    /// # Errors
    /// [`SpawnFailure`]; no process is left behind.
    pub async fn start(spec: Arc<ProcessSpec>, init: Arc<Vec<u8>>) -> Result<(Self, Vec<u8>), SpawnFailure> {
        use std::os::fd::AsRawFd;
        let segment = match spec.shm_capacity {
            Some(capacity) => Some(Arc::new(Segment::create(capacity).map_err(|e| match e {
                crate::shm::SegmentError::Io(e) => SpawnFailure::Io(e),
                other => SpawnFailure::Io(std::io::Error::new(std::io::ErrorKind::InvalidInput, other)),
            })?)),
            None => None,
        };
        let (child, to_worker, from_worker) =
            spawn::start_worker_process(&spec, segment.as_ref().map(|s| s.fd().as_raw_fd())).await?;
        let next_id = Arc::new(std::sync::atomic::AtomicU64::new(1));
        let mut worker = Self {
            spec,
            init,
            child: Some(child),
            transport: None,
            _keepalive: None,
            next_id,
            lane: None,
            pipelined: std::collections::VecDeque::new(),
        };
        let transport = match segment {
            Some(segment) => {
                worker._keepalive = Some(to_worker);
                let wait = Wait::default();
                let max = worker.spec.max_message_size;
                match from_worker.try_clone() {
                    Ok(doorbell) => {
                        let next_id = Arc::clone(&worker.next_id);
                        worker.lane = Some(Arc::new(ShmLane::new(Arc::clone(&segment), doorbell, next_id, wait, max)));
                        ShmTransport::new(segment, from_worker, wait, max).map(AnyTransport::Shm)
                    }
                    Err(e) => Err(e),
                }
            }
            None => PipeTransport::new(to_worker, from_worker, worker.spec.max_message_size).map(AnyTransport::Pipe),
        };
        let transport = match transport {
            Ok(t) => t,
            Err(e) => {
                worker.kill().await;
                return Err(SpawnFailure::Io(e));
            }
        };
        worker.transport = Some(transport);
        match worker.handshake().await {
            Ok(ready) => Ok((worker, ready)),
            Err(failure) => {
                worker.kill().await;
                Err(failure)
            }
        }
    }

    async fn handshake(&mut self) -> Result<Vec<u8>, SpawnFailure> {
        let init = Arc::clone(&self.init);
        let reply = self.round_trip(FrameKind::Init, 0, &init, "during setup").await.map_err(SpawnFailure::Crashed)?;
        match reply.kind {
            FrameKind::Ready => Ok(reply.payload),
            FrameKind::Raised => Err(SpawnFailure::Raised(reply.payload)),
            other => Err(SpawnFailure::Crashed(WorkerFault::new(format!("unexpected {other:?} frame during setup")))),
        }
    }
}

impl ProcessWorker {
    /// Sends one frame and waits for the reply, watching for the process to die meanwhile.
    async fn round_trip(
        &mut self,
        kind: FrameKind,
        id: u64,
        payload: &[u8],
        during: &str,
    ) -> Result<frame::Frame, WorkerFault> {
        let (Some(transport), Some(child)) = (self.transport.as_mut(), self.child.as_mut()) else {
            return Err(WorkerFault::new("worker process is not running"));
        };
        let (upcalls, pid, max) = (self.spec.upcalls.as_ref(), child.id(), self.spec.max_message_size);
        let exchange = async {
            transport.send(kind, id, payload).await?;
            upcall::recv_answering(transport, upcalls, pid, max).await
        };
        Self::watch_exchange(child, exchange, id, during).await
    }

    /// Waits for the reply to call `id` (from `exchange`), watching for the process to die
    /// meanwhile.
    async fn watch_exchange(
        child: &mut WorkerChild,
        exchange: impl std::future::Future<Output = std::io::Result<frame::Frame>>,
        id: u64,
        during: &str,
    ) -> Result<frame::Frame, WorkerFault> {
        use std::io::ErrorKind;
        let broken = tokio::select! {
            biased;
            reply = exchange => match reply {
                Ok(frame) if frame.id == id => return Ok(frame),
                Ok(frame) => std::io::Error::new(
                    ErrorKind::InvalidData,
                    format!("it replied to task {} while running task {id}", frame.id),
                ),
                Err(e) => e,
            },
            status = child.wait() => {
                return Err(match status {
                    Ok(status) => fault_from_status(status, during),
                    Err(e) => WorkerFault::new(format!("cannot wait for worker process: {e}")),
                });
            }
        };
        if !matches!(broken.kind(), ErrorKind::UnexpectedEof | ErrorKind::BrokenPipe) {
            // Alive and lying (or the channel is unusable): no grace, kill it now.
            let _ = child.kill().await;
            return Err(protocol_fault(&broken, during));
        }
        // The pipe broke: the process is dying; get its exit status.
        let status = tokio::time::timeout(EXIT_GRACE, child.wait()).await;
        Err(match status {
            Ok(Ok(status)) => fault_from_status(status, during),
            _ => {
                let _ = child.kill().await;
                WorkerFault::new(format!("worker process closed its channel {during} but did not exit; worker killed"))
            }
        })
    }

    /// The process id, while the process runs.
    #[must_use]
    pub fn process_id(&self) -> Option<u32> {
        self.child.as_ref().and_then(WorkerChild::id)
    }
}

/// What a worker process answered to a call.
pub type CallReply = Vec<u8>;

/// How many calls a worker may be handed at once (see [`Workable::pipeline_depth`]).
const PIPELINE_DEPTH: usize = 32;
/// Larger calls always travel alone. Batching saves wake-ups, which matter for small calls and
/// for a `map`'s chunks (tens of KiB of items each, about a millisecond of work).
const PIPELINE_MAX_TASK_BYTES: usize = 1 << 20;

fn call_response(reply: frame::Frame) -> Response<ProcessWorker> {
    match reply.kind {
        FrameKind::Ok => Response::Complete(Ok(reply.payload)),
        FrameKind::Raised => Response::Complete(Err(reply.payload)),
        other => Response::Fatal(WorkerFault::protocol(format!(
            "worker broke the protocol: unexpected {other:?} frame in reply to a call; worker killed"
        ))),
    }
}

impl ProcessWorker {
    /// Drops the channel, waking anything still waiting on its shared memory.
    fn close_transport(&mut self) {
        self.pipelined.clear();
        if let Some(AnyTransport::Shm(shm)) = &self.transport {
            shm.segment().close();
        }
        self.transport = None;
        self._keepalive = None;
    }
}

impl Workable for ProcessWorker {
    /// A serialized call.
    type Task = Vec<u8>;
    /// The serialized return value.
    type Output = CallReply;
    /// A [`RaisedPayload`]: the call raised.
    type Error = Vec<u8>;

    async fn process(&mut self, task: Vec<u8>) -> Response<Self> {
        if let Some(status) = match self.child.as_mut() {
            Some(child) => child.exited().await,
            None => None,
        } {
            // It exited while idle and the supervisor had not noticed yet: the task never ran.
            return Response::Refused(task, fault_from_status(status, "while idle"));
        }
        if task.len() > self.spec.max_message_size {
            // The worker would refuse it as a protocol violation: fail the task, keep the worker.
            return Response::Complete(Err(RaisedPayload::encode(
                &format!(
                    "ValueError: the call's message of {} bytes is over max_message_size ({} bytes)",
                    task.len(),
                    self.spec.max_message_size
                ),
                &[],
            )));
        }
        let id = self.next_id.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        match self.round_trip(FrameKind::Call, id, &task, "while running a task").await {
            Ok(reply) => call_response(reply),
            Err(fault) => Response::Fatal(fault),
        }
    }

    async fn process_coalesced(&mut self, tasks: Vec<Vec<u8>>) -> Coalesced<Self> {
        self.call_coalesced(tasks).await
    }

    /// Deep enough to carry a burst of tiny calls in one wake-up, shallow enough that a batch
    /// of them holds back little work (see [`crate::Supervisor`]'s batching).
    /// A pool serving upcalls hands one call at a time: an upcall's reply must be the next frame
    /// the worker reads, not one behind queued calls.
    fn pipeline_depth(&self) -> usize {
        match self.transport {
            Some(AnyTransport::Shm(_)) if self.spec.upcalls.is_none() => PIPELINE_DEPTH,
            _ => 1, // pipes could fill up both ways and deadlock
        }
    }

    fn try_send(&mut self, task: Vec<u8>) -> Result<(), Vec<u8>> {
        if task.len() > PIPELINE_MAX_TASK_BYTES {
            return Err(task);
        }
        if self.pipelined.is_empty() && !self.child.as_mut().is_some_and(WorkerChild::is_running) {
            return Err(task); // dead while idle: `process` refuses it properly
        }
        let Some(AnyTransport::Shm(transport)) = self.transport.as_mut() else {
            return Err(task);
        };
        let id = self.next_id.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if !transport.try_send(FrameKind::Call, id, &task) {
            return Err(task);
        }
        self.pipelined.push_back(id);
        Ok(())
    }

    async fn receive(&mut self) -> Response<Self> {
        let Some(id) = self.pipelined.pop_front() else {
            return Response::Fatal(WorkerFault::new("no call is waiting for an answer"));
        };
        let (Some(transport), Some(child)) = (self.transport.as_mut(), self.child.as_mut()) else {
            return Response::Fatal(WorkerFault::new("worker process is not running"));
        };
        let (upcalls, pid, max) = (self.spec.upcalls.as_ref(), child.id(), self.spec.max_message_size);
        let exchange = upcall::recv_answering(transport, upcalls, pid, max);
        match Self::watch_exchange(child, exchange, id, "while running a task").await {
            Ok(reply) => call_response(reply),
            Err(fault) => Response::Fatal(fault),
        }
    }

    async fn restart(&mut self) -> Result<(), WorkerFault> {
        self.kill().await;
        let (fresh, _ready) =
            Self::start(Arc::clone(&self.spec), Arc::clone(&self.init)).await.map_err(SpawnFailure::into_fault)?;
        *self = fresh;
        Ok(())
    }

    async fn terminated(&mut self) -> WorkerFault {
        let fault = match self.child.as_mut() {
            Some(child) => match child.wait().await {
                // Idle as far as the supervisor knows: a direct-lane caller may be running a task.
                Ok(status) => fault_from_status(status, "while idle or running a direct call"),
                Err(e) => WorkerFault::new(format!("cannot wait for worker process: {e}")),
            },
            None => std::future::pending().await,
        };
        if let Some(lane) = &self.lane {
            lane.set_exit(fault.clone());
        }
        fault
    }

    /// No lane in a pool serving upcalls: its calls go through the serve task, which answers them.
    fn lane(&self) -> Option<Arc<dyn std::any::Any + Send + Sync>> {
        if self.spec.upcalls.is_some() {
            return None;
        }
        self.lane.clone().map(|lane| lane as Arc<dyn std::any::Any + Send + Sync>)
    }

    async fn stop(&mut self) {
        // The whole stop, Stop frame included, fits in stop_timeout: a stopped worker with a
        // full request ring cannot hold it up.
        let deadline = tokio::time::Instant::now() + self.spec.stop_timeout;
        if let Some(transport) = self.transport.as_mut() {
            let _ = tokio::time::timeout_at(deadline, transport.send(FrameKind::Stop, 0, &[])).await;
        }
        let stopping = self.child.take();
        if let Some(mut child) = stopping {
            if tokio::time::timeout_at(deadline, child.wait()).await.is_err() {
                let _ = child.kill().await;
            }
        }
        self.close_transport();
    }

    async fn kill(&mut self) {
        if let Some(lane) = &self.lane {
            // A direct-lane caller still waiting on this worker learns at once why it is gone.
            lane.set_exit(WorkerFault::new("worker process was killed by the supervisor"));
        }
        self.close_transport();
        if let Some(mut child) = self.child.take() {
            // `kill` sends SIGKILL and waits until it is gone (and reaps our own children).
            let _ = child.kill().await;
        }
    }

    fn clone_task(task: &Vec<u8>) -> Option<Vec<u8>> {
        Some(task.clone())
    }

    fn successor(&self) -> Option<crate::SuccessorStart<Self>> {
        let (spec, init) = (Arc::clone(&self.spec), Arc::clone(&self.init));
        Some(Box::pin(async move {
            Self::start(spec, init).await.map(|(worker, _)| worker).map_err(SpawnFailure::into_fault)
        }))
    }

    fn pid(&self) -> Option<u32> {
        self.process_id()
    }

    fn memory_bytes(&self) -> Option<u64> {
        let statm = std::fs::read_to_string(format!("/proc/{}/statm", self.process_id()?)).ok()?;
        let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        Some(pages * u64::try_from(page).ok()?)
    }
}
