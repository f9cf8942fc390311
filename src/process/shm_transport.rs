//! Frames through a shared-memory [`Segment`]: the supervisor writes requests into one ring and
//! reads replies from the other. It never blocks its thread (the runtime's only one) on the
//! worker: when the request ring is full or no reply is there yet, it spins briefly (yielding
//! the OS thread) and then parks on the worker's pipe, which the runtime polls. The worker
//! writes one doorbell byte there when it publishes a reply to a parked reader or frees room
//! for a parked writer, and the pipe reports EOF when the worker dies.
//!
//! Why the pipe and not `spawn_blocking` on the futex: a future awaiting the pipe is dropped
//! at once when a timeout, a kill or the worker's death wins the race, while a blocking-pool
//! thread would stay stuck in its futex slice holding the segment; and the pipe is already
//! there, polled by the reactor, so a wait costs no extra thread hop. The fast path (room in
//! the ring, reply already there) makes no system call at all.

use std::io;
use std::sync::Arc;

use tokio::net::unix::pipe;

use super::frame::{decode_header, encode_header, Frame, FrameKind, HEADER_LEN};
use super::transport::Transport;
use crate::shm::{Segment, Wait};

/// The supervisor's end of a shared-memory channel to one worker.
#[derive(Debug)]
pub(crate) struct ShmTransport {
    segment: Arc<Segment>,
    doorbell: pipe::Receiver,
    wait: Wait,
    /// The largest payload accepted from the worker.
    max_message: usize,
    /// Set while a frame is half written or half read. If the future moving it is dropped
    /// (a timeout, a kill or the worker's death won the race) it stays set: the stream is torn
    /// and every later use fails, so the worker is replaced, never reused.
    mid_frame: bool,
}

impl ShmTransport {
    /// Wraps a segment and the worker's doorbell pipe; replies over `max_message` bytes are a
    /// protocol error. Must run inside a tokio runtime.
    ///
    /// # Errors
    /// When the doorbell descriptor is not a pipe.
    pub(crate) fn new(
        segment: Arc<Segment>,
        doorbell: std::os::fd::OwnedFd,
        wait: Wait,
        max_message: usize,
    ) -> io::Result<Self> {
        Ok(Self { segment, doorbell: pipe::Receiver::from_owned_fd(doorbell)?, wait, max_message, mid_frame: false })
    }

    /// The segment, shared with the worker.
    #[must_use]
    pub(crate) fn segment(&self) -> &Arc<Segment> {
        &self.segment
    }

    /// Starts moving a frame; fails if an earlier one was abandoned half-way.
    fn begin_frame(&mut self) -> io::Result<()> {
        if self.mid_frame {
            return Err(io::Error::other("the channel was torn mid-frame by an abandoned call"));
        }
        self.mid_frame = true;
        Ok(())
    }

    async fn write_all(&mut self, parts: &[&[u8]]) -> io::Result<()> {
        let Self { segment, doorbell, wait, .. } = self;
        let ring = segment.requests();
        for part in parts {
            let mut rest = *part;
            while !rest.is_empty() {
                let n = ring.write_some(rest)?;
                rest = &rest[n..];
                if ring.reader_needs_wake() {
                    ring.wake_reader();
                }
                if rest.is_empty() {
                    break;
                }
                if ring.closed() {
                    return Err(io::ErrorKind::BrokenPipe.into());
                }
                if n > 0 || crate::shm::spin_until(wait.spin / 4, || ring.writable().map_or(true, |w| w > 0)) {
                    continue;
                }
                // Full, and the worker is not draining it right now: park on the doorbell.
                let room = ring.park_writer();
                if !matches!(room, Ok(false)) {
                    ring.unpark_writer();
                    room?;
                    continue;
                }
                let rung = ring_doorbell(doorbell).await;
                ring.unpark_writer();
                rung.map_err(|_| io::Error::from(io::ErrorKind::BrokenPipe))?;
            }
        }
        Ok(())
    }

    async fn read_exact(&mut self, dst: &mut [u8]) -> io::Result<()> {
        let Self { segment, doorbell, wait, .. } = self;
        let ring = segment.replies();
        let mut done = 0;
        let mut spun = false;
        while done < dst.len() {
            let n = ring.read_some(&mut dst[done..])?;
            done += n;
            if n > 0 {
                if ring.writer_needs_wake() {
                    ring.wake_writer();
                }
                spun = false;
                continue;
            }
            if ring.closed() {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            // A short spin (yielding the OS thread between checks) catches replies to quick
            // calls without a wake-up; the other workers' tasks wait meanwhile, so keep it short.
            if !spun {
                spun = true;
                if crate::shm::spin_until(wait.spin / 4, || ring.readable().map_or(true, |r| r > 0) || ring.closed()) {
                    continue;
                }
            }
            let data = ring.park_reader();
            if !matches!(data, Ok(false)) {
                ring.unpark_reader();
                data?;
                continue;
            }
            let rung = ring_doorbell(doorbell).await;
            ring.unpark_reader();
            spun = false;
            rung?;
        }
        Ok(())
    }

    /// Sends one frame if it fits in the request ring now; never waits.
    pub(crate) fn try_send(&mut self, kind: FrameKind, id: u64, payload: &[u8]) -> bool {
        let ring = self.segment.requests();
        if self.mid_frame || ring.closed() || !ring.writable().is_ok_and(|w| w >= HEADER_LEN + payload.len()) {
            return false;
        }
        let header = encode_header(kind, id, payload.len());
        // Both fit (checked above, and only we write): a short write means the worker broke
        // the indices meanwhile, which the next `recv` reports.
        let whole = ring.write_some(&header) == Ok(HEADER_LEN) && ring.write_some(payload) == Ok(payload.len());
        if ring.reader_needs_wake() {
            ring.wake_reader();
        }
        self.mid_frame = !whole;
        true
    }
}

/// Waits for a doorbell byte (drains them all); EOF means the worker is gone.
async fn ring_doorbell(doorbell: &mut pipe::Receiver) -> io::Result<()> {
    let mut buf = [0u8; 64];
    loop {
        doorbell.readable().await?;
        match doorbell.try_read(&mut buf) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
}

impl Transport for ShmTransport {
    async fn send(&mut self, kind: FrameKind, id: u64, payload: &[u8]) -> io::Result<()> {
        self.begin_frame()?;
        let header = encode_header(kind, id, payload.len());
        self.write_all(&[&header, payload]).await?;
        self.mid_frame = false;
        Ok(())
    }

    async fn recv(&mut self) -> io::Result<Frame> {
        self.begin_frame()?;
        let mut header = [0u8; HEADER_LEN];
        self.read_exact(&mut header).await?;
        let (kind, id, len) = decode_header(&header, self.max_message)?;
        let mut payload = super::recycle::buffer(len);
        self.read_exact(&mut payload).await?;
        self.mid_frame = false;
        Ok(Frame { kind, id, payload })
    }
}
