//! [`ProcessWorker`]: a [`Workable`] whose state lives in a child process that speaks the
//! frame protocol of [`frame`]. The Python bindings run `SWorker`s with it; any program that
//! speaks the protocol can be a worker.

pub mod frame;
mod spawn;
pub mod transport;

use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::Duration;

use tokio::process::Child;

pub use self::frame::{FrameKind, ProtocolError, RaisedPayload};
pub use self::spawn::{ProcessSpec, WORKER_READ_FD, WORKER_WRITE_FD};
pub use self::transport::{PipeTransport, Transport};
use crate::error::WorkerFault;
use crate::workable::{Response, Workable};

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
                let summary = RaisedPayload::parse(&payload)
                    .map_or("unknown error", |r| r.summary)
                    .to_owned();
                WorkerFault::new(format!("worker setup raised {summary}"))
            }
            SpawnFailure::Crashed(fault) => fault,
        }
    }
}

fn fault_from_status(status: ExitStatus, during: &str) -> WorkerFault {
    let mut fault = WorkerFault::new(format!("worker process died {during}"));
    fault.exit_code = status.code();
    fault.signal = status.signal();
    fault
}

/// A worker living in a child process, re-created with the same setup payload on restart.
#[derive(Debug)]
pub struct ProcessWorker<T: Transport = PipeTransport> {
    spec: Arc<ProcessSpec>,
    init: Arc<Vec<u8>>,
    child: Option<Child>,
    transport: Option<T>,
    next_id: u64,
}

/// How long to wait for the exit status of a worker that closed its pipe.
const EXIT_GRACE: Duration = Duration::from_secs(2);

impl ProcessWorker<PipeTransport> {
    /// Starts a worker process and sends it `init`; returns the worker and the payload of its
    /// `Ready` frame. Must run on the supervisor's runtime (see [`crate::Supervisor::start_worker`]).
    ///
    /// # Errors
    /// [`SpawnFailure`]; no process is left behind.
    pub async fn start(spec: Arc<ProcessSpec>, init: Arc<Vec<u8>>) -> Result<(Self, Vec<u8>), SpawnFailure> {
        let (child, to_worker, from_worker) = spawn::spawn_child(&spec)?;
        let mut worker = Self {
            spec,
            init,
            child: Some(child),
            transport: None,
            next_id: 1,
        };
        let transport = match PipeTransport::new(to_worker, from_worker) {
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
        let reply = self
            .round_trip(FrameKind::Init, 0, &init, "during setup")
            .await
            .map_err(SpawnFailure::Crashed)?;
        match reply.kind {
            FrameKind::Ready => Ok(reply.payload),
            FrameKind::Raised => Err(SpawnFailure::Raised(reply.payload)),
            other => Err(SpawnFailure::Crashed(WorkerFault::new(format!(
                "unexpected {other:?} frame during setup"
            )))),
        }
    }
}

impl<T: Transport> ProcessWorker<T> {
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
        let exchange = async {
            transport.send(kind, id, payload).await?;
            transport.recv().await
        };
        let broken = tokio::select! {
            biased;
            reply = exchange => match reply {
                Ok(frame) if frame.id == id => return Ok(frame),
                Ok(frame) => format!("worker replied to task {} while running task {id}", frame.id),
                Err(e) => e.to_string(),
            },
            status = child.wait() => {
                return Err(match status {
                    Ok(status) => fault_from_status(status, during),
                    Err(e) => WorkerFault::new(format!("cannot wait for worker process: {e}")),
                });
            }
        };
        // The pipe broke: the process is dying or broke the protocol; get its exit status.
        let status = tokio::time::timeout(EXIT_GRACE, child.wait()).await;
        Err(match status {
            Ok(Ok(status)) => fault_from_status(status, during),
            _ => WorkerFault::new(format!("worker process broke the protocol {during}: {broken}")),
        })
    }

    /// The process id, while the process runs.
    #[must_use]
    pub fn process_id(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }
}

/// What a worker process answered to a call.
pub type CallReply = Vec<u8>;

impl Workable for ProcessWorker<PipeTransport> {
    /// A serialized call.
    type Task = Vec<u8>;
    /// The serialized return value.
    type Output = CallReply;
    /// A [`RaisedPayload`]: the call raised.
    type Error = Vec<u8>;

    async fn process(&mut self, task: Vec<u8>) -> Response<Self> {
        let id = self.next_id;
        self.next_id += 1;
        match self
            .round_trip(FrameKind::Call, id, &task, "while running a task")
            .await
        {
            Ok(reply) => match reply.kind {
                FrameKind::Ok => Response::Complete(Ok(reply.payload)),
                FrameKind::Raised => Response::Complete(Err(reply.payload)),
                other => Response::Fatal(WorkerFault::new(format!(
                    "unexpected {other:?} frame in reply to a call"
                ))),
            },
            Err(fault) => Response::Fatal(fault),
        }
    }

    async fn restart(&mut self) -> Result<(), WorkerFault> {
        self.kill().await;
        let (fresh, _ready) = Self::start(Arc::clone(&self.spec), Arc::clone(&self.init))
            .await
            .map_err(SpawnFailure::into_fault)?;
        *self = fresh;
        Ok(())
    }

    async fn terminated(&mut self) -> WorkerFault {
        match self.child.as_mut() {
            Some(child) => match child.wait().await {
                Ok(status) => fault_from_status(status, "while idle"),
                Err(e) => WorkerFault::new(format!("cannot wait for worker process: {e}")),
            },
            None => std::future::pending().await,
        }
    }

    async fn stop(&mut self) {
        if let Some(transport) = self.transport.as_mut() {
            let _ = transport.send(FrameKind::Stop, 0, &[]).await;
        }
        self.transport = None;
        if let Some(mut child) = self.child.take() {
            if tokio::time::timeout(self.spec.stop_timeout, child.wait())
                .await
                .is_err()
            {
                let _ = child.kill().await;
            }
        }
    }

    async fn kill(&mut self) {
        self.transport = None;
        if let Some(mut child) = self.child.take() {
            // `Child::kill` sends SIGKILL and reaps, so no zombie is left.
            let _ = child.kill().await;
        }
    }

    fn clone_task(task: &Vec<u8>) -> Option<Vec<u8>> {
        Some(task.clone())
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
