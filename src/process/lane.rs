//! The direct lane: a caller thread runs one call on an idle worker itself, straight through
//! the shared-memory rings, instead of handing it to the runtime and waiting to be woken. It
//! saves two thread wake-ups per call; the supervisor's claim makes the caller the worker's
//! only driver meanwhile (see `Supervisor::claim_idle`).

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

use super::frame::{decode_header, encode_header, Frame, FrameKind, HEADER_LEN};
use crate::error::WorkerFault;
use crate::shm::{Segment, Wait};

/// Why a direct call did not produce a reply.
#[derive(Debug)]
pub enum LaneError {
    /// The worker died; its fault, with the exit status once the supervisor has collected it.
    Crashed(WorkerFault),
    /// The caller gave up waiting (e.g. Ctrl-C); finish the call by waiting again with [`ShmLane::wait_reply`].
    Interrupted {
        /// The call's task id.
        id: u64,
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
    exit: Mutex<Option<WorkerFault>>,
    exited: Condvar,
}

/// How long a caller whose worker died waits for the supervisor to collect the exit status.
const EXIT_STATUS_WAIT: Duration = Duration::from_secs(2);

impl ShmLane {
    pub(crate) fn new(segment: Arc<Segment>, doorbell: OwnedFd, next_id: Arc<AtomicU64>, wait: Wait) -> Self {
        Self { segment, doorbell, next_id, wait, exit: Mutex::new(None), exited: Condvar::new() }
    }

    /// Records why the worker died and wakes a caller waiting on it.
    pub(crate) fn set_exit(&self, fault: WorkerFault) {
        *self.exit.lock().unwrap_or_else(PoisonError::into_inner) = Some(fault);
        self.segment.close();
        self.exited.notify_all();
    }

    fn crashed(&self) -> LaneError {
        let guard = self.exit.lock().unwrap_or_else(PoisonError::into_inner);
        let (guard, _) = self
            .exited
            .wait_timeout_while(guard, EXIT_STATUS_WAIT, |exit| exit.is_none())
            .unwrap_or_else(PoisonError::into_inner);
        LaneError::Crashed(
            guard.clone().unwrap_or_else(|| WorkerFault::new("worker process died while running a task")),
        )
    }

    /// Sends a call whose payload is the concatenation of `parts` and waits for its reply,
    /// spinning briefly and then sleeping on the doorbell in slices; between slices it asks
    /// `interrupted` whether to give up.
    ///
    /// # Errors
    /// [`LaneError`].
    pub fn call(&self, parts: &[&[u8]], mut interrupted: impl FnMut() -> bool) -> Result<Frame, LaneError> {
        let id = self.send_call(parts)?;
        self.wait_reply(id, &mut interrupted)
    }

    /// Sends a call; returns its task id, to wait for with [`ShmLane::wait_reply`].
    ///
    /// # Errors
    /// [`LaneError::Crashed`] when the worker is gone.
    pub fn send_call(&self, parts: &[&[u8]]) -> Result<u64, LaneError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let len = parts.iter().map(|p| p.len()).sum();
        let header = encode_header(FrameKind::Call, id, len);
        let mut all = Vec::with_capacity(parts.len() + 1);
        all.push(header.as_slice());
        all.extend_from_slice(parts);
        let ring = self.segment.requests();
        let segment = &self.segment;
        ring.write_all(&all, self.wait, || ring.wake_reader(), || !segment.is_closed()).map_err(|_| self.crashed())?;
        Ok(id)
    }

    /// Waits for the reply to call `id`; after each slice of sleep with no reply yet, returns
    /// [`LaneError::Interrupted`] if `interrupted()` says so (call again to keep waiting).
    ///
    /// # Errors
    /// [`LaneError`].
    pub fn wait_reply(&self, id: u64, interrupted: &mut impl FnMut() -> bool) -> Result<Frame, LaneError> {
        let mut header = [0u8; HEADER_LEN];
        self.read_exact(&mut header, id, interrupted)?;
        let (kind, reply_id, len) = decode_header(&header).map_err(|e| LaneError::Crashed(WorkerFault::new(e.0)))?;
        let mut payload = super::recycle::buffer(len);
        // The header is in: the rest follows at once, so no more interruptions.
        self.read_exact(&mut payload, id, &mut || false)?;
        if reply_id != id {
            return Err(LaneError::Crashed(WorkerFault::new(format!(
                "worker replied to task {reply_id} instead of {id}"
            ))));
        }
        Ok(Frame { kind, id, payload })
    }

    fn read_exact(&self, dst: &mut [u8], id: u64, interrupted: &mut impl FnMut() -> bool) -> Result<(), LaneError> {
        let ring = self.segment.replies();
        let mut done = 0;
        while done < dst.len() {
            let n = ring.read_some(&mut dst[done..]);
            done += n;
            if n > 0 {
                continue;
            }
            if self.segment.is_closed() {
                return Err(self.crashed());
            }
            // The caller is blocked on this reply anyway: spinning longer than the worker does
            // lets a call to a parked worker (one wake-up there) come back without a second one.
            if crate::shm::spin_until(self.wait.spin * 4, || ring.readable() > 0 || self.segment.is_closed()) {
                continue;
            }
            if ring.park_reader() {
                ring.unpark_reader();
                continue;
            }
            let rung = self.sleep_on_doorbell();
            ring.unpark_reader();
            match rung {
                Err(()) if ring.readable() == 0 => return Err(self.crashed()),
                _ if done == 0 && ring.readable() == 0 && interrupted() => return Err(LaneError::Interrupted { id }),
                _ => {}
            }
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
