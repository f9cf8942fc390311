//! The worker's side of the protocol: frames in and out of the descriptors the supervisor
//! passed (pipes on 3 and 4, or the shared-memory segment on 5 with the pipe on 4 as the
//! supervisor's doorbell). Blocking; the worker is a plain single-threaded program.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use super::frame::{decode_header, encode_header, FrameKind, DEFAULT_MAX_MESSAGE_SIZE, HEADER_LEN};
use super::spawn::{MAX_MESSAGE_ENV, TRANSPORT_ENV, WORKER_READ_FD, WORKER_SHM_FD, WORKER_WRITE_FD};
use crate::shm::{Segment, Wait};

/// A worker's connection to its supervisor: the child's end of a [`ProcessWorker`]'s channel.
///
/// [`ProcessWorker`]: super::ProcessWorker
#[derive(Debug)]
pub struct WorkerEndpoint(Channel);

/// The transport under a [`WorkerEndpoint`] (private: the segment and pipes are the crate's).
#[derive(Debug)]
enum Channel {
    /// Frames through the pipes.
    Pipe {
        /// Requests.
        input: File,
        /// Replies.
        output: File,
        /// The largest frame payload sent or accepted.
        max_message: usize,
    },
    /// Frames through shared memory.
    Shm {
        /// The segment.
        segment: Segment,
        /// Doorbell to the supervisor (non-blocking): one byte when it sleeps on a reply.
        doorbell: File,
        /// Requests pipe, kept only so the descriptor is not reused.
        _requests: File,
        /// The supervisor's pid, to notice it is gone between sleeps.
        parent: libc::pid_t,
        /// Spin and sleep budget while waiting for requests.
        wait: Wait,
        /// The largest frame payload sent or accepted.
        max_message: usize,
    },
}

/// One byte to the supervisor's doorbell: it parks there for a reply or for room.
fn ring_doorbell(bell: RawFd) {
    // SAFETY: a one-byte write to our non-blocking doorbell; a full pipe (EAGAIN) already holds
    // a wake-up, so the error is ignored.
    unsafe {
        libc::write(bell, [1u8].as_ptr().cast(), 1);
    }
}

fn take_fd(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: fcntl on a raw number only queries it; failure means it is not open.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the supervisor hands these descriptors to the worker by contract (see
    // `spawn::child_setup`); this is their only owner in the worker.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

impl WorkerEndpoint {
    /// Takes over the descriptors the supervisor passed; call once, at start-up. They are
    /// marked close-on-exec so the worker's own subprocesses do not inherit them.
    ///
    /// # Errors
    /// When the descriptors are missing (not started by a supervisor) or the segment is bad.
    pub fn from_inherited() -> io::Result<Self> {
        let input = File::from(take_fd(WORKER_READ_FD)?);
        let output = File::from(take_fd(WORKER_WRITE_FD)?);
        let max_message = match std::env::var(MAX_MESSAGE_ENV) {
            Ok(v) => {
                v.parse().map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, format!("{MAX_MESSAGE_ENV}={v}")))?
            }
            Err(_) => DEFAULT_MAX_MESSAGE_SIZE,
        };
        if std::env::var_os(TRANSPORT_ENV).is_some_and(|v| v == "shm") {
            let segment = Segment::open(take_fd(WORKER_SHM_FD)?).map_err(io::Error::other)?;
            // SAFETY: setting O_NONBLOCK on our own descriptor.
            unsafe {
                let flags = libc::fcntl(output.as_raw_fd(), libc::F_GETFL);
                libc::fcntl(output.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK);
            }
            // SAFETY: getppid has no preconditions.
            let parent = unsafe { libc::getppid() };
            let wait = Wait { slice: Duration::from_secs(1), ..Wait::default() };
            return Ok(Self(Channel::Shm { segment, doorbell: output, _requests: input, parent, wait, max_message }));
        }
        Ok(Self(Channel::Pipe { input, output, max_message }))
    }

    /// Reads the next frame's header: `None` when the supervisor closed the channel.
    ///
    /// # Errors
    /// I/O errors and malformed headers.
    pub fn recv_header(&mut self) -> io::Result<Option<(FrameKind, u64, usize)>> {
        let mut header = [0u8; HEADER_LEN];
        match self.read_exact(&mut header) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        Ok(Some(decode_header(&header, self.max_message())?))
    }

    /// The largest frame payload this end sends or accepts.
    #[must_use]
    pub fn max_message(&self) -> usize {
        match &self.0 {
            Channel::Pipe { max_message, .. } | Channel::Shm { max_message, .. } => *max_message,
        }
    }

    /// Reads exactly `dst.len()` bytes of the current frame's payload.
    ///
    /// # Errors
    /// `UnexpectedEof` when the supervisor is gone.
    pub fn read_exact(&mut self, dst: &mut [u8]) -> io::Result<()> {
        match &mut self.0 {
            Channel::Pipe { input, .. } => input.read_exact(dst),
            Channel::Shm { segment, doorbell, parent, wait, .. } => {
                let parent = *parent;
                let bell = doorbell.as_raw_fd();
                // The supervisor parks on the doorbell pipe, not on the futex, when its request
                // ring is full: a byte there tells it there is room again.
                // SAFETY: getppid has no preconditions.
                segment.requests().read_exact(
                    dst,
                    *wait,
                    || ring_doorbell(bell),
                    || unsafe { libc::getppid() } == parent,
                )
            }
        }
    }

    /// Sends one frame whose payload is the concatenation of `parts`.
    ///
    /// # Errors
    /// `BrokenPipe` when the supervisor is gone; `InvalidInput` (nothing sent) when the payload
    /// is over the largest message.
    pub fn send(&mut self, kind: FrameKind, id: u64, parts: &[&[u8]]) -> io::Result<()> {
        let len = parts.iter().map(|p| p.len()).sum();
        if len > self.max_message() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("a message of {len} bytes is over max_message_size ({} bytes)", self.max_message()),
            ));
        }
        let header = encode_header(kind, id, len);
        match &mut self.0 {
            Channel::Pipe { output, .. } => {
                output.write_all(&header)?;
                for part in parts {
                    output.write_all(part)?;
                }
                Ok(())
            }
            Channel::Shm { segment, doorbell, parent, wait, .. } => {
                let parent = *parent;
                let ring = segment.replies();
                let bell = doorbell.as_raw_fd();
                let mut all = Vec::with_capacity(parts.len() + 1);
                all.push(header.as_slice());
                all.extend_from_slice(parts);
                ring.write_all(
                    &all,
                    *wait,
                    || ring_doorbell(bell),
                    // SAFETY: getppid has no preconditions.
                    || unsafe { libc::getppid() } == parent,
                )
            }
        }
    }
}
