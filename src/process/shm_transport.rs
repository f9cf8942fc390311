//! Frames through a shared-memory [`Segment`]: the supervisor writes requests into one ring and
//! reads replies from the other, spinning cooperatively (yielding to the runtime) for a short
//! while and then parking on the worker's pipe, which carries one doorbell byte per wake-up and
//! reports EOF when the worker dies.

use std::io;
use std::sync::Arc;
use std::time::Instant;

use tokio::net::unix::pipe;

use super::frame::{decode_header, encode_header, Frame, FrameKind, HEADER_LEN};
use super::transport::Transport;
use crate::shm::{Segment, Wait};

/// The supervisor's end of a shared-memory channel to one worker.
#[derive(Debug)]
pub struct ShmTransport {
    segment: Arc<Segment>,
    doorbell: pipe::Receiver,
    wait: Wait,
}

impl ShmTransport {
    /// Wraps a segment and the worker's doorbell pipe. Must run inside a tokio runtime.
    ///
    /// # Errors
    /// When the doorbell descriptor is not a pipe.
    pub fn new(segment: Arc<Segment>, doorbell: std::os::fd::OwnedFd, wait: Wait) -> io::Result<Self> {
        Ok(Self { segment, doorbell: pipe::Receiver::from_owned_fd(doorbell)?, wait })
    }

    /// The segment, shared with the worker.
    #[must_use]
    pub fn segment(&self) -> &Arc<Segment> {
        &self.segment
    }

    async fn read_exact(&mut self, dst: &mut [u8]) -> io::Result<()> {
        let mut done = 0;
        let mut spinning_since: Option<Instant> = None;
        while done < dst.len() {
            let ring = self.segment.replies();
            let n = ring.read_some(&mut dst[done..]);
            done += n;
            if n > 0 {
                spinning_since = None;
                continue;
            }
            if self.segment.is_closed() {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            // A short spin (yielding the OS thread between checks) catches replies to quick
            // calls without a wake-up; the other workers' tasks wait meanwhile, so keep it short.
            if spinning_since.is_none() {
                spinning_since = Some(Instant::now());
                if crate::shm::spin_until(self.wait.spin / 4, || ring.readable() > 0 || self.segment.is_closed()) {
                    continue;
                }
            }
            if ring.park_reader() {
                ring.unpark_reader();
                continue;
            }
            let rung = self.ring_doorbell().await;
            self.segment.replies().unpark_reader();
            spinning_since = None;
            rung?;
        }
        Ok(())
    }

    /// Waits for a doorbell byte (drains them all); EOF means the worker is gone.
    async fn ring_doorbell(&mut self) -> io::Result<()> {
        let mut buf = [0u8; 64];
        loop {
            self.doorbell.readable().await?;
            match self.doorbell.try_read(&mut buf) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
    }
}

impl ShmTransport {
    /// Sends one frame if it fits in the request ring now; never waits.
    pub fn try_send(&mut self, kind: FrameKind, id: u64, payload: &[u8]) -> bool {
        let ring = self.segment.requests();
        if ring.writable() < HEADER_LEN + payload.len() || self.segment.is_closed() {
            return false;
        }
        let header = encode_header(kind, id, payload.len());
        ring.write_all(&[&header, payload], self.wait, || ring.wake_reader(), || true).is_ok()
    }
}

impl Transport for ShmTransport {
    async fn send(&mut self, kind: FrameKind, id: u64, payload: &[u8]) -> io::Result<()> {
        let header = encode_header(kind, id, payload.len());
        let ring = self.segment.requests();
        // Blocks only while the ring is full (a message larger than the ring streams through).
        ring.write_all(&[&header, payload], self.wait, || ring.wake_reader(), || !self.segment.is_closed())
    }

    async fn recv(&mut self) -> io::Result<Frame> {
        let mut header = [0u8; HEADER_LEN];
        self.read_exact(&mut header).await?;
        let (kind, id, len) = decode_header(&header).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        let mut payload = super::recycle::buffer(len);
        self.read_exact(&mut payload).await?;
        Ok(Frame { kind, id, payload })
    }
}
