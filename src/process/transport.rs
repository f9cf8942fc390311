//! Moving frames between the supervisor and one worker process. [`Transport`] is the seam
//! where a shared-memory channel replaces the pipes without touching the worker logic.

use std::future::Future;
use std::io;
use std::os::fd::OwnedFd;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;

use super::frame::{decode_header, encode_header, Frame, FrameKind, HEADER_LEN};

/// A bidirectional, ordered frame channel to one worker process.
pub(crate) trait Transport: Send + 'static {
    /// Sends one frame.
    fn send(&mut self, kind: FrameKind, id: u64, payload: &[u8]) -> impl Future<Output = io::Result<()>> + Send;
    /// Receives the next frame; `UnexpectedEof` once the worker closed its end.
    fn recv(&mut self) -> impl Future<Output = io::Result<Frame>> + Send;
}

/// Frames over two anonymous pipes.
#[derive(Debug)]
pub(crate) struct PipeTransport {
    to_worker: pipe::Sender,
    from_worker: pipe::Receiver,
    scratch: Vec<u8>,
    /// The largest payload accepted from the worker.
    max_message: usize,
}

/// Frames up to this size are written with their header in one `write`.
const COALESCE_LIMIT: usize = 64 * 1024;

impl PipeTransport {
    /// Wraps the supervisor's ends of the two pipes; replies over `max_message` bytes are a
    /// protocol error. Must run inside a tokio runtime.
    ///
    /// # Errors
    /// When the descriptors are not pipes.
    pub(crate) fn new(to_worker: OwnedFd, from_worker: OwnedFd, max_message: usize) -> io::Result<Self> {
        Ok(Self {
            to_worker: pipe::Sender::from_owned_fd(to_worker)?,
            from_worker: pipe::Receiver::from_owned_fd(from_worker)?,
            scratch: Vec::new(),
            max_message,
        })
    }
}

impl Transport for PipeTransport {
    async fn send(&mut self, kind: FrameKind, id: u64, payload: &[u8]) -> io::Result<()> {
        let header = encode_header(kind, id, payload.len());
        if payload.len() <= COALESCE_LIMIT {
            self.scratch.clear();
            self.scratch.extend_from_slice(&header);
            self.scratch.extend_from_slice(payload);
            self.to_worker.write_all(&self.scratch).await
        } else {
            self.to_worker.write_all(&header).await?;
            self.to_worker.write_all(payload).await
        }
    }

    async fn recv(&mut self) -> io::Result<Frame> {
        let mut header = [0u8; HEADER_LEN];
        self.from_worker.read_exact(&mut header).await?;
        let (kind, id, len) = decode_header(&header, self.max_message)?;
        let mut payload = vec![0u8; len];
        self.from_worker.read_exact(&mut payload).await?;
        Ok(Frame { kind, id, payload })
    }
}

/// The transports a [`super::ProcessWorker`] can use.
#[derive(Debug)]
pub(crate) enum AnyTransport {
    /// Frames through the pipes.
    Pipe(PipeTransport),
    /// Frames through shared memory; the pipe carries wake-ups and EOF.
    Shm(super::ShmTransport),
}

impl Transport for AnyTransport {
    async fn send(&mut self, kind: FrameKind, id: u64, payload: &[u8]) -> io::Result<()> {
        match self {
            AnyTransport::Pipe(t) => t.send(kind, id, payload).await,
            AnyTransport::Shm(t) => t.send(kind, id, payload).await,
        }
    }

    async fn recv(&mut self) -> io::Result<Frame> {
        match self {
            AnyTransport::Pipe(t) => t.recv().await,
            AnyTransport::Shm(t) => t.recv().await,
        }
    }
}
