//! A single-producer single-consumer byte ring in shared memory, a stream like a pipe: a
//! message larger than the ring flows through it in pieces.
//!
//! The other process can write anything into the control block at any time, so nothing read
//! from it is trusted: every operation takes one snapshot of `head` and `tail`, checks
//! `tail <= head <= tail + capacity`, computes positions from that snapshot only, and fails with
//! [`Corrupted`] otherwise. Whatever the indices say, no copy leaves the data area.
//!
//! Parking (proof sketch in `src/SUPERVISOR.md`, model-checked by `loom_tests.rs`): a side that
//! must wait announces it (`*_parked = 1`), issues a SeqCst fence, then re-checks the ring
//! before it sleeps; the other side changes the ring, issues a SeqCst fence, then reads the
//! flag and wakes it if set. The two fences order the flag against the index, so at least one
//! of them sees the other: the sleeper finds the change, or the changer finds the sleeper.

use std::io;
use std::time::{Duration, Instant};

use super::futex;
use super::sync::{fence, AtomicU32, AtomicU64, Ordering};

/// The control block of one ring, in the segment header. Head and tail live on their own
/// cache lines so the two processes do not false-share.
#[repr(C, align(64))]
pub(crate) struct RingCtl {
    /// Bytes ever written (only the writer stores it).
    head: AtomicU64,
    _pad_head: [u64; 7],
    /// Bytes ever read (only the reader stores it).
    tail: AtomicU64,
    _pad_tail: [u64; 7],
    /// Futex word the reader sleeps on; bumped by the writer when the reader is parked.
    data_seq: AtomicU32,
    reader_parked: AtomicU32,
    /// Futex word the writer sleeps on when the ring is full.
    space_seq: AtomicU32,
    writer_parked: AtomicU32,
}

#[cfg(all(test, loom))]
impl RingCtl {
    /// A zeroed control block on the heap (loom's atomics cannot live in a mapping).
    pub(crate) fn new() -> Self {
        Self {
            head: AtomicU64::new(0),
            _pad_head: [0; 7],
            tail: AtomicU64::new(0),
            _pad_tail: [0; 7],
            data_seq: AtomicU32::new(0),
            reader_parked: AtomicU32::new(0),
            space_seq: AtomicU32::new(0),
            writer_parked: AtomicU32::new(0),
        }
    }
}

#[cfg(all(test, not(loom)))]
impl RingCtl {
    /// Writes `head` and `tail` as they are, as a corrupting peer would.
    pub(crate) fn forge(&self, head: u64, tail: u64) {
        self.head.store(head, Ordering::SeqCst);
        self.tail.store(tail, Ordering::SeqCst);
    }
}

/// The ring's indices break its invariant: the other process wrote garbage into the control
/// block (or is not speaking this protocol). The channel is unusable from then on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("shared memory ring corrupted (head {head}, tail {tail}, capacity {capacity})")]
pub struct Corrupted {
    /// The head that was read.
    pub head: u64,
    /// The tail that was read.
    pub tail: u64,
    /// The ring's real capacity.
    pub capacity: usize,
}

impl From<Corrupted> for io::Error {
    fn from(e: Corrupted) -> Self {
        io::Error::new(io::ErrorKind::InvalidData, e)
    }
}

/// How a blocked side waits: spin this long first, then sleep in slices of `slice`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Wait {
    /// Busy-wait budget before parking (keep it short on machines with few cores).
    pub spin: Duration,
    /// Longest single sleep; the caller re-checks liveness between sleeps.
    pub slice: Duration,
}

impl Default for Wait {
    fn default() -> Self {
        Self { spin: Duration::from_micros(50), slice: Duration::from_millis(100) }
    }
}

/// One direction of a [`super::Segment`]. Exactly one thread may write and one may read at a
/// time; the supervisor guarantees it (a worker is driven by one party at a time).
#[derive(Clone, Copy)]
pub(crate) struct Ring<'a> {
    ctl: &'a RingCtl,
    closed: &'a AtomicU32,
    data: *mut u8,
    capacity: usize,
}

// SAFETY: a Ring is a view into shared memory whose concurrent use is synchronised by the
// head/tail atomics (Release on publish, Acquire on observe).
unsafe impl Send for Ring<'_> {}

/// Spins up to `budget`, checking `ready` between short pause runs. Each run ends with a
/// `sched_yield`, so on an oversubscribed machine the spinner hands its core to whoever is
/// runnable (often the very process it waits for) instead of burning the budget.
pub(crate) fn spin_until(budget: Duration, mut ready: impl FnMut() -> bool) -> bool {
    if budget.is_zero() {
        return ready();
    }
    let start = Instant::now();
    loop {
        for _ in 0..32 {
            if ready() {
                return true;
            }
            std::hint::spin_loop();
        }
        if start.elapsed() >= budget {
            return ready();
        }
        std::thread::yield_now();
    }
}

impl<'a> Ring<'a> {
    /// # Safety
    /// `data` must point to `capacity > 0` bytes that stay mapped for `'a`, used by this ring
    /// only (the other process may write them at any time; they are only ever copied).
    pub(crate) unsafe fn new(ctl: &'a RingCtl, closed: &'a AtomicU32, data: *mut u8, capacity: usize) -> Self {
        debug_assert!(capacity > 0);
        Self { ctl, closed, data, capacity }
    }

    /// Whether either side closed the segment.
    #[must_use]
    pub(crate) fn closed(&self) -> bool {
        self.closed.load(Ordering::Acquire) != 0
    }

    /// One consistent reading of `(head, tail)`: `tail <= head <= tail + capacity`.
    fn snapshot(&self) -> Result<(u64, u64), Corrupted> {
        let head = self.ctl.head.load(Ordering::Acquire);
        let tail = self.ctl.tail.load(Ordering::Acquire);
        match head.checked_sub(tail) {
            Some(used) if used <= self.capacity as u64 => Ok((head, tail)),
            _ => Err(Corrupted { head, tail, capacity: self.capacity }),
        }
    }

    /// Bytes waiting to be read.
    ///
    /// # Errors
    /// [`Corrupted`] when the indices are inconsistent.
    pub(crate) fn readable(&self) -> Result<usize, Corrupted> {
        let (head, tail) = self.snapshot()?;
        Ok((head - tail) as usize)
    }

    /// Bytes that can be written now without waiting.
    ///
    /// # Errors
    /// [`Corrupted`] when the indices are inconsistent.
    pub(crate) fn writable(&self) -> Result<usize, Corrupted> {
        let (head, tail) = self.snapshot()?;
        Ok(self.capacity - (head - tail) as usize)
    }

    /// The data area's range `[at, at + n)` split at the end of the ring: `(at, first)` and the
    /// wrapped rest `n - first` from 0. Both lie inside the area for any `index` and
    /// `n <= capacity`.
    fn span(&self, index: u64, n: usize) -> (usize, usize) {
        let at = (index % self.capacity as u64) as usize;
        (at, n.min(self.capacity - at))
    }

    /// Copies as much of `src` as fits; returns how much. Publishes, but wakes nobody.
    ///
    /// # Errors
    /// [`Corrupted`]; nothing is written then.
    pub(crate) fn write_some(&self, src: &[u8]) -> Result<usize, Corrupted> {
        let (head, tail) = self.snapshot()?;
        let n = src.len().min(self.capacity - (head - tail) as usize);
        if n == 0 {
            return Ok(0);
        }
        let next = head.checked_add(n as u64).ok_or(Corrupted { head, tail, capacity: self.capacity })?;
        let (at, first) = self.span(head, n);
        // SAFETY: `span` keeps [at, at+first) and [0, n-first) inside the data area (n is at
        // most the capacity); the reader does not read past the published head.
        unsafe {
            std::ptr::copy_nonoverlapping(src.as_ptr(), self.data.add(at), first);
            std::ptr::copy_nonoverlapping(src.as_ptr().add(first), self.data, n - first);
        }
        self.ctl.head.store(next, Ordering::Release);
        Ok(n)
    }

    /// Copies up to `dst.len()` waiting bytes into `dst`; returns how many. Publishes the new
    /// tail, but wakes nobody: see [`Ring::writer_needs_wake`].
    ///
    /// # Errors
    /// [`Corrupted`]; nothing is read then.
    pub(crate) fn read_some(&self, dst: &mut [u8]) -> Result<usize, Corrupted> {
        let (head, tail) = self.snapshot()?;
        let n = dst.len().min((head - tail) as usize);
        if n == 0 {
            return Ok(0);
        }
        let next = tail.checked_add(n as u64).ok_or(Corrupted { head, tail, capacity: self.capacity })?;
        let (at, first) = self.span(tail, n);
        // SAFETY: as in `write_some`; [tail, tail+n) was published by the writer (Acquire in
        // `snapshot`) and is not overwritten until the tail moves past it.
        unsafe {
            std::ptr::copy_nonoverlapping(self.data.add(at), dst.as_mut_ptr(), first);
            std::ptr::copy_nonoverlapping(self.data, dst.as_mut_ptr().add(first), n - first);
        }
        self.ctl.tail.store(next, Ordering::Release);
        Ok(n)
    }

    /// After publishing data: whether the reader is parked and must be woken (the caller picks
    /// the means: [`Ring::wake_reader`] for a futex sleeper, a doorbell byte for a pipe sleeper).
    #[must_use]
    pub(crate) fn reader_needs_wake(&self) -> bool {
        self.needs_wake(&self.ctl.reader_parked, &self.ctl.data_seq)
    }

    /// After consuming data: whether the writer is parked on a full ring and must be woken
    /// ([`Ring::wake_writer`] for a futex sleeper, a doorbell byte for the supervisor).
    #[must_use]
    pub(crate) fn writer_needs_wake(&self) -> bool {
        self.needs_wake(&self.ctl.writer_parked, &self.ctl.space_seq)
    }

    /// The waker's half of the park/wake protocol (`src/SUPERVISOR.md`), after it stored the
    /// index it moved: SeqCst fence, then load the sleeper's flag; if it is set, bump the
    /// sleeper's futex word so a sleep that has not started yet returns at once.
    fn needs_wake(&self, parked: &AtomicU32, seq: &AtomicU32) -> bool {
        fence(Ordering::SeqCst);
        if parked.load(Ordering::Relaxed) != 0 {
            seq.fetch_add(1, Ordering::Release);
            return true;
        }
        false
    }

    /// Wakes a reader sleeping in [`Ring::wait_readable`].
    pub(crate) fn wake_reader(&self) {
        futex::wake_all(&self.ctl.data_seq);
    }

    /// Wakes a writer sleeping on the futex in [`Ring::write_all`].
    pub(crate) fn wake_writer(&self) {
        futex::wake_all(&self.ctl.space_seq);
    }

    /// Announces that the reader is about to sleep; returns whether data arrived (or the
    /// segment closed) meanwhile, in which case it must not sleep. Undo with
    /// [`Ring::unpark_reader`] either way.
    ///
    /// # Errors
    /// [`Corrupted`].
    pub(crate) fn park_reader(&self) -> Result<bool, Corrupted> {
        self.park(&self.ctl.reader_parked, Self::readable)
    }

    /// The reader is awake again.
    pub(crate) fn unpark_reader(&self) {
        self.ctl.reader_parked.store(0, Ordering::Relaxed);
    }

    /// Announces that the writer is about to sleep on a full ring; returns whether space
    /// appeared (or the segment closed) meanwhile. Undo with [`Ring::unpark_writer`].
    ///
    /// # Errors
    /// [`Corrupted`].
    pub(crate) fn park_writer(&self) -> Result<bool, Corrupted> {
        self.park(&self.ctl.writer_parked, Self::writable)
    }

    /// The writer is awake again.
    pub(crate) fn unpark_writer(&self) {
        self.ctl.writer_parked.store(0, Ordering::Relaxed);
    }

    /// The sleeper's half of the park/wake protocol (`src/SUPERVISOR.md`): store its flag,
    /// SeqCst fence, then load the index the other side moves (`available`).
    fn park(&self, parked: &AtomicU32, available: fn(&Self) -> Result<usize, Corrupted>) -> Result<bool, Corrupted> {
        parked.store(1, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        Ok(available(self)? > 0 || self.closed())
    }

    /// Waits until bytes are readable or the segment closes: spins, then sleeps on the futex.
    /// Returns false when it timed out after one `wait.slice` of sleep, so the caller can check
    /// liveness and call again.
    ///
    /// # Errors
    /// [`Corrupted`].
    pub(crate) fn wait_readable(&self, wait: Wait) -> Result<bool, Corrupted> {
        self.wait_for(wait, Self::readable, &self.ctl.data_seq, Self::park_reader, Self::unpark_reader)
    }

    fn wait_writable(&self, wait: Wait) -> Result<bool, Corrupted> {
        self.wait_for(wait, Self::writable, &self.ctl.space_seq, Self::park_writer, Self::unpark_writer)
    }

    /// [`Ring::wait_readable`] or its writer's twin: spins until `available` bytes (or the
    /// segment closes), then parks with `park`/`unpark` and sleeps on the futex word `seq`,
    /// which the other side bumps when it publishes.
    fn wait_for(
        &self,
        wait: Wait,
        available: fn(&Self) -> Result<usize, Corrupted>,
        seq: &AtomicU32,
        park: fn(&Self) -> Result<bool, Corrupted>,
        unpark: fn(&Self),
    ) -> Result<bool, Corrupted> {
        // A corrupt ring ends the spin too: the check after it reports the corruption.
        if spin_until(wait.spin, || available(self).map_or(true, |n| n > 0) || self.closed()) {
            return Ok(available(self)? > 0 || self.closed());
        }
        let seen = seq.load(Ordering::Acquire);
        let ready = park(self);
        if let Ok(false) = ready {
            futex::wait(seq, seen, wait.slice);
        }
        unpark(self);
        ready?;
        Ok(available(self)? > 0 || self.closed())
    }

    /// Writes every part in order, sleeping on the futex for space as needed; `wake` is called
    /// when the reader must be woken (each time a piece is published to a parked reader). For
    /// a side that may block its thread: the worker, and tests.
    ///
    /// # Errors
    /// `BrokenPipe` when the segment closes, or `alive` says the reader is gone; `InvalidData`
    /// when the ring is [`Corrupted`].
    pub(crate) fn write_all(
        &self,
        parts: &[&[u8]],
        wait: Wait,
        mut wake: impl FnMut(),
        alive: impl Fn() -> bool,
    ) -> io::Result<()> {
        for part in parts {
            let mut rest = *part;
            while !rest.is_empty() {
                let n = self.write_some(rest)?;
                rest = &rest[n..];
                if self.reader_needs_wake() {
                    wake();
                }
                if self.closed() {
                    return Err(io::ErrorKind::BrokenPipe.into());
                }
                if !rest.is_empty() && !self.wait_writable(wait)? && !alive() {
                    return Err(io::ErrorKind::BrokenPipe.into());
                }
            }
        }
        Ok(())
    }

    /// Fills `dst`, sleeping on the futex for the writer as needed (see
    /// [`Ring::wait_readable`]); `wake` is called when a writer parked on the full ring must be
    /// woken.
    ///
    /// # Errors
    /// `UnexpectedEof` when the segment closes, or `alive` says the writer is gone;
    /// `InvalidData` when the ring is [`Corrupted`].
    pub(crate) fn read_exact(
        &self,
        dst: &mut [u8],
        wait: Wait,
        mut wake: impl FnMut(),
        alive: impl Fn() -> bool,
    ) -> io::Result<()> {
        let mut done = 0;
        while done < dst.len() {
            let n = self.read_some(&mut dst[done..])?;
            done += n;
            if n > 0 {
                if self.writer_needs_wake() {
                    wake();
                }
                continue;
            }
            if self.closed() && self.readable()? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            if !self.wait_readable(wait)? && !alive() {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
        Ok(())
    }

    /// Wakes both sleepers (used when closing).
    pub(crate) fn wake_all(&self) {
        self.ctl.data_seq.fetch_add(1, Ordering::Release);
        futex::wake_all(&self.ctl.data_seq);
        self.ctl.space_seq.fetch_add(1, Ordering::Release);
        futex::wake_all(&self.ctl.space_seq);
    }
}
