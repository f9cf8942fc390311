//! Upcalls: requests a worker process makes to its pool while one of its calls runs (the task
//! tree's shared namespace is one), answered by the supervisor over the same channel.
//!
//! The worker writes a [`FrameKind::Upcall`] frame on its reply stream and blocks until the
//! [`FrameKind::UpcallReply`] comes on its request stream. The supervisor's side of the call
//! (the worker's serve task, on the runtime) hands the payload to the pool's [`UpcallHandler`]
//! and writes the answer back, then goes on waiting for the call's reply. The handler never
//! blocks the runtime: an answer that must wait (a lock held by another worker) is a future,
//! awaited by that worker's serve task only, and dropped if the worker dies meanwhile.
//!
//! What a worker sends is untrusted: the handler validates it, and a request it cannot parse is
//! a protocol violation that gets the worker killed and replaced, like any other bad frame.

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;

use super::frame::{Frame, FrameKind, ProtocolError};
use super::transport::{AnyTransport, Transport};

/// An answer that is not ready yet; resolves to the reply's payload.
pub(crate) type PendingAnswer = Pin<Box<dyn Future<Output = Vec<u8>> + Send>>;

/// What an [`UpcallHandler`] answers to one request.
pub(crate) enum UpcallAnswer {
    /// The reply's payload, now.
    Now(Vec<u8>),
    /// The reply comes when this future resolves (it is dropped if the worker dies first).
    Later(PendingAnswer),
}

impl fmt::Debug for UpcallAnswer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Now(bytes) => write!(f, "Now({} bytes)", bytes.len()),
            Self::Later(_) => f.write_str("Later(..)"),
        }
    }
}

/// Serves the upcalls of a pool's workers.
pub(crate) trait UpcallHandler: Send + Sync {
    /// Answers one request from the worker process `pid`. Runs on the supervisor's runtime:
    /// must not block (return [`UpcallAnswer::Later`] to wait).
    ///
    /// # Errors
    /// [`ProtocolError`] when the request is malformed: the worker is killed and replaced.
    fn call(&self, pid: u32, request: &[u8]) -> Result<UpcallAnswer, ProtocolError>;

    /// The worker process `pid` has ended (any way: stopped, crashed, killed): give back what it
    /// held. Called from the supervisor's worker-exit hook.
    fn worker_exited(&self, pid: u32);

    /// The answer that refuses a request for `reason` (used when the answer would be larger
    /// than the worker accepts).
    fn refusal(&self, reason: &str) -> Vec<u8>;
}

/// The upcall handler of a pool, as a [`super::ProcessSpec`] holds it.
#[derive(Clone)]
pub(crate) struct Upcalls(pub Arc<dyn UpcallHandler>);

impl fmt::Debug for Upcalls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Upcalls(..)")
    }
}

fn invalid(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.into())
}

/// Receives the next frame that is not an upcall, answering the upcalls before it with
/// `handler` (`None`: the pool serves none, so an upcall is a protocol violation); an answer
/// over `max_message` bytes, which the worker would refuse, becomes a refusal. Errors of kind
/// `InvalidData` mean the worker broke the protocol.
pub(crate) async fn recv_answering(
    transport: &mut AnyTransport,
    handler: Option<&Upcalls>,
    pid: Option<u32>,
    max_message: usize,
) -> io::Result<Frame> {
    loop {
        let frame = transport.recv().await?;
        if frame.kind != FrameKind::Upcall {
            return Ok(frame);
        }
        let (Some(Upcalls(handler)), Some(pid)) = (handler, pid) else {
            return Err(invalid("it sent an upcall, but this pool serves none"));
        };
        if frame.id != 0 {
            return Err(invalid(format!("it sent an upcall with id {} (upcalls carry id 0)", frame.id)));
        }
        let answer = match handler.call(pid, &frame.payload).map_err(io::Error::from)? {
            UpcallAnswer::Now(bytes) => bytes,
            UpcallAnswer::Later(pending) => pending.await,
        };
        let answer = match answer.len() {
            n if n > max_message => {
                handler.refusal(&format!("the answer of {n} bytes is over max_message_size ({max_message} bytes)"))
            }
            _ => answer,
        };
        transport.send(FrameKind::UpcallReply, 0, &answer).await?;
    }
}
