//! The direct lane: a caller thread runs one call on an idle worker itself, straight through
//! the shared-memory rings, instead of handing it to the runtime and waiting to be woken. It
//! saves two thread wake-ups per call; the supervisor's claim makes the caller the worker's
//! only driver meanwhile (see `Supervisor::claim_idle`).
//!
//! The caller may block its own thread, but never for long: every wait (room in the request
//! ring, the reply, the rest of a reply) sleeps on the worker's doorbell pipe in slices and
//! asks `interrupted()` between them, so Ctrl-C reaches a caller whose worker is stopped, slow
//! or lying. Giving up half-way through a frame tears the stream: the worker must be replaced
//! ([`LaneError::Torn`]).

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

use super::frame::{decode_header, encode_header, Frame, FrameKind, HEADER_LEN};
use super::protocol_fault;
use crate::error::WorkerFault;
use crate::shm::{Ring, Segment, Wait};

/// Why a direct call did not produce a reply.
#[derive(Debug)]
pub enum LaneError {
    /// The worker died or broke the protocol (then it is alive and must be killed: finish the
    /// claim with this fault); with the exit status once the supervisor has collected it.
    Crashed(WorkerFault),
    /// The caller gave up waiting (e.g. Ctrl-C) before any byte of the reply arrived; the
    /// stream is intact: finish the call by waiting again with [`ShmLane::wait_reply`].
    Interrupted {
        /// The call's task id.
        id: u64,
    },
    /// The caller gave up before any byte of the call was written: the worker never saw it.
    NotSent,
    /// The caller gave up half-way through a frame: the stream is torn, and the worker must be
    /// replaced (finish the claim with this fault).
    Torn(WorkerFault),
    /// The call is larger than the lane's largest message; nothing was sent.
    TooLarge {
        /// The call's size in bytes.
        len: usize,
        /// The largest message allowed.
        max: usize,
    },
}

/// A handle that drives one worker process's rings from any thread.
#[derive(Debug)]
pub struct ShmLane {
    segment: Arc<Segment>,
    /// A duplicate of the worker's doorbell pipe (same pipe, own descriptor number).
    doorbell: OwnedFd,
    next_id: Arc<AtomicU64>,
    wait: Wait,
    /// The largest payload sent or accepted.
    max_message: usize,
    exit: Mutex<Option<WorkerFault>>,
    exited: Condvar,
}

/// What a direct call's faults say the worker was doing.
const DURING: &str = "while running a direct call";

/// How long a caller whose worker died waits for the supervisor to collect the exit status.
const EXIT_STATUS_WAIT: Duration = Duration::from_secs(2);

/// How a wait for the ring ended, when it did not end with the bytes.
enum Stall {
    /// The worker is gone, or broke the protocol.
    Crashed(WorkerFault),
    /// `interrupted()` said to give up; `moved`: whether bytes of this frame had moved already.
    GaveUp { moved: bool },
}

impl ShmLane {
    pub(crate) fn new(
        segment: Arc<Segment>,
        doorbell: OwnedFd,
        next_id: Arc<AtomicU64>,
        wait: Wait,
        max_message: usize,
    ) -> Self {
        Self { segment, doorbell, next_id, wait, max_message, exit: Mutex::new(None), exited: Condvar::new() }
    }

    /// The largest call payload this lane sends.
    #[must_use]
    pub fn max_message(&self) -> usize {
        self.max_message
    }

    /// Records why the worker stopped (unless already known) and wakes a caller waiting on it.
    pub(crate) fn set_exit(&self, fault: WorkerFault) {
        self.exit.lock().unwrap_or_else(PoisonError::into_inner).get_or_insert(fault);
        self.segment.close();
        self.exited.notify_all();
    }

    fn crashed(&self) -> WorkerFault {
        let guard = self.exit.lock().unwrap_or_else(PoisonError::into_inner);
        let (guard, _) = self
            .exited
            .wait_timeout_while(guard, EXIT_STATUS_WAIT, |exit| exit.is_none())
            .unwrap_or_else(PoisonError::into_inner);
        guard.clone().unwrap_or_else(|| WorkerFault::new("worker process died while running a task"))
    }

    /// Sends a call whose payload is the concatenation of `parts` and waits for its reply,
    /// spinning briefly and then sleeping on the doorbell in slices; between slices it asks
    /// `interrupted` whether to give up.
    ///
    /// # Errors
    /// [`LaneError`].
    pub fn call(&self, parts: &[&[u8]], mut interrupted: impl FnMut() -> bool) -> Result<Frame, LaneError> {
        let id = self.send_call(parts, &mut interrupted)?;
        self.wait_reply(id, &mut interrupted)
    }

    /// Sends a call; returns its task id, to wait for with [`ShmLane::wait_reply`]. Between
    /// slices of waiting for room in the ring it asks `interrupted` whether to give up.
    ///
    /// # Errors
    /// [`LaneError::Crashed`] when the worker is gone or broke the protocol,
    /// [`LaneError::NotSent`] or [`LaneError::Torn`] when interrupted, [`LaneError::TooLarge`].
    pub fn send_call(&self, parts: &[&[u8]], interrupted: &mut impl FnMut() -> bool) -> Result<u64, LaneError> {
        let len = parts.iter().map(|p| p.len()).sum();
        if len > self.max_message {
            return Err(LaneError::TooLarge { len, max: self.max_message });
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let header = encode_header(FrameKind::Call, id, len);
        let ring = self.segment.requests();
        let mut moved = false;
        for part in std::iter::once(header.as_slice()).chain(parts.iter().copied()) {
            let mut rest = part;
            while !rest.is_empty() {
                let n = ring.write_some(rest).map_err(|e| LaneError::Crashed(protocol_fault(&e.into(), DURING)))?;
                moved |= n > 0;
                rest = &rest[n..];
                if ring.reader_needs_wake() {
                    ring.wake_reader();
                }
                if rest.is_empty() || n > 0 {
                    continue;
                }
                match self.stall(&ring, true, interrupted) {
                    Ok(()) => {}
                    Err(Stall::Crashed(fault)) => return Err(LaneError::Crashed(fault)),
                    Err(Stall::GaveUp { .. }) if !moved => return Err(LaneError::NotSent),
                    Err(Stall::GaveUp { .. }) => {
                        return Err(LaneError::Torn(WorkerFault::new(
                            "the caller gave up half-way through sending a call; worker replaced",
                        )))
                    }
                }
            }
        }
        Ok(id)
    }

    /// Waits for the reply to call `id`; after each slice of sleep with no progress, returns
    /// [`LaneError::Interrupted`] (nothing of the reply read yet: call again to keep waiting)
    /// or [`LaneError::Torn`] (half a reply read) if `interrupted()` says so.
    ///
    /// # Errors
    /// [`LaneError`].
    pub fn wait_reply(&self, id: u64, interrupted: &mut impl FnMut() -> bool) -> Result<Frame, LaneError> {
        let torn = || LaneError::Torn(WorkerFault::new("the caller gave up half-way through a reply; worker replaced"));
        let mut header = [0u8; HEADER_LEN];
        match self.read_exact(&mut header, interrupted) {
            Ok(()) => {}
            Err(Stall::Crashed(fault)) => return Err(LaneError::Crashed(fault)),
            Err(Stall::GaveUp { moved: false }) => return Err(LaneError::Interrupted { id }),
            Err(Stall::GaveUp { moved: true }) => return Err(torn()),
        }
        let broke = |e: io::Error| LaneError::Crashed(protocol_fault(&e, DURING));
        let (kind, reply_id, len) = decode_header(&header, self.max_message).map_err(|e| broke(e.into()))?;
        if reply_id != id {
            return Err(broke(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("worker replied to task {reply_id} instead of {id}"),
            )));
        }
        let mut payload = super::recycle::buffer(len);
        match self.read_exact(&mut payload, interrupted) {
            Ok(()) => Ok(Frame { kind, id, payload }),
            Err(Stall::Crashed(fault)) => Err(LaneError::Crashed(fault)),
            Err(Stall::GaveUp { .. }) => Err(torn()),
        }
    }

    fn read_exact(&self, dst: &mut [u8], interrupted: &mut impl FnMut() -> bool) -> Result<(), Stall> {
        let ring = self.segment.replies();
        let mut done = 0;
        while done < dst.len() {
            let n = ring.read_some(&mut dst[done..]).map_err(|e| Stall::Crashed(protocol_fault(&e.into(), DURING)))?;
            done += n;
            if n > 0 {
                if ring.writer_needs_wake() {
                    ring.wake_writer();
                }
                continue;
            }
            self.stall(&ring, false, interrupted).map_err(|stall| match stall {
                Stall::GaveUp { .. } => Stall::GaveUp { moved: done > 0 },
                crashed => crashed,
            })?;
        }
        Ok(())
    }

    /// Waits for the ring to have room (`writing`) or data: spins, then sleeps one slice on the
    /// doorbell (the worker rings it when it frees room for, or publishes data to, a parked
    /// side); `Ok` means look again.
    fn stall(&self, ring: &Ring<'_>, writing: bool, interrupted: &mut impl FnMut() -> bool) -> Result<(), Stall> {
        let broke = |e: crate::shm::Corrupted| Stall::Crashed(protocol_fault(&e.into(), DURING));
        let ready = |ring: &Ring<'_>| {
            let n = if writing { ring.writable() } else { ring.readable() };
            n.map_or(true, |n| n > 0) || ring.closed()
        };
        if ring.closed() {
            // Nobody reads a closed ring; a reply published before it closed is still read.
            if writing || ring.readable().map_err(broke)? == 0 {
                return Err(Stall::Crashed(self.crashed()));
            }
            return Ok(());
        }
        // The caller is blocked on this call anyway: spinning longer than the worker does lets a
        // call to a parked worker (one wake-up there) come back without a second one.
        if crate::shm::spin_until(self.wait.spin * 4, || ready(ring)) {
            return Ok(());
        }
        let parked = if writing { ring.park_writer() } else { ring.park_reader() };
        if !matches!(parked, Ok(false)) {
            if writing {
                ring.unpark_writer();
            } else {
                ring.unpark_reader();
            }
            return parked.map(drop).map_err(broke);
        }
        let rung = self.sleep_on_doorbell();
        if writing {
            ring.unpark_writer();
        } else {
            ring.unpark_reader();
        }
        if rung.is_err() && !ready(ring) {
            return Err(Stall::Crashed(self.crashed()));
        }
        // Asked after every sleep, progress or not, so a worker trickling bytes cannot keep a
        // caller from its Ctrl-C (callers rate-limit their own check).
        if interrupted() {
            return Err(Stall::GaveUp { moved: false });
        }
        Ok(())
    }

    /// One slice of sleep on the doorbell pipe; `Err` on EOF (the worker is gone).
    fn sleep_on_doorbell(&self) -> Result<(), ()> {
        let mut pfd = libc::pollfd { fd: self.doorbell.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        let slice = i32::try_from(self.wait.slice.as_millis()).unwrap_or(i32::MAX).max(1);
        // SAFETY: one valid pollfd for the duration of the call.
        let ready = unsafe { libc::poll(&raw mut pfd, 1, slice) };
        if ready <= 0 {
            return Ok(());
        }
        let mut buf = [0u8; 64];
        // SAFETY: reading into a local buffer from our descriptor, which is non-blocking (it
        // shares the supervisor's open file description).
        let n = unsafe { libc::read(self.doorbell.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n == 0
            || (n < 0
                && pfd.revents & libc::POLLHUP != 0
                && io::Error::last_os_error().kind() != io::ErrorKind::WouldBlock)
        {
            return Err(());
        }
        Ok(())
    }
}
