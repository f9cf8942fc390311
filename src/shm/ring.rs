//! A single-producer single-consumer byte ring in shared memory, a stream like a pipe: a
//! message larger than the ring flows through it in pieces.

use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::futex;

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

/// How a blocked side waits: spin this long first, then sleep in slices of `slice`.
#[derive(Clone, Copy, Debug)]
pub struct Wait {
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
pub struct Ring<'a> {
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
    /// `data` must point to `capacity` bytes that stay mapped for `'a`, used by this ring only.
    pub(crate) unsafe fn new(ctl: &'a RingCtl, closed: &'a AtomicU32, data: *mut u8, capacity: usize) -> Self {
        Self { ctl, closed, data, capacity }
    }

    fn closed(&self) -> bool {
        self.closed.load(Ordering::Acquire) != 0
    }

    /// Bytes waiting to be read.
    #[must_use]
    pub fn readable(&self) -> usize {
        (self.ctl.head.load(Ordering::Acquire) - self.ctl.tail.load(Ordering::Relaxed)) as usize
    }

    /// Bytes that can be written now without waiting.
    #[must_use]
    pub fn writable(&self) -> usize {
        self.capacity - (self.ctl.head.load(Ordering::Relaxed) - self.ctl.tail.load(Ordering::Acquire)) as usize
    }

    /// Copies as much of `src` as fits; returns how much. Publishes, but wakes nobody.
    pub fn write_some(&self, src: &[u8]) -> usize {
        let n = src.len().min(self.writable());
        if n == 0 {
            return 0;
        }
        let head = self.ctl.head.load(Ordering::Relaxed);
        let at = (head % self.capacity as u64) as usize;
        let first = n.min(self.capacity - at);
        // SAFETY: [at, at+first) and [0, n-first) lie inside the data area, and the reader does
        // not touch bytes between tail and head+n until head is published below.
        unsafe {
            std::ptr::copy_nonoverlapping(src.as_ptr(), self.data.add(at), first);
            std::ptr::copy_nonoverlapping(src.as_ptr().add(first), self.data, n - first);
        }
        self.ctl.head.store(head + n as u64, Ordering::Release);
        n
    }

    /// Copies up to `dst.len()` waiting bytes into `dst`; returns how many. Wakes a writer
    /// parked on a full ring.
    pub fn read_some(&self, dst: &mut [u8]) -> usize {
        let n = dst.len().min(self.readable());
        if n == 0 {
            return 0;
        }
        let tail = self.ctl.tail.load(Ordering::Relaxed);
        let at = (tail % self.capacity as u64) as usize;
        let first = n.min(self.capacity - at);
        // SAFETY: [tail, tail+n) was published by the writer (Acquire in `readable`) and is not
        // overwritten until tail moves past it below.
        unsafe {
            std::ptr::copy_nonoverlapping(self.data.add(at), dst.as_mut_ptr(), first);
            std::ptr::copy_nonoverlapping(self.data, dst.as_mut_ptr().add(first), n - first);
        }
        self.ctl.tail.store(tail + n as u64, Ordering::Release);
        fence(Ordering::SeqCst);
        if self.ctl.writer_parked.load(Ordering::Relaxed) != 0 {
            self.ctl.space_seq.fetch_add(1, Ordering::Release);
            futex::wake_all(&self.ctl.space_seq);
        }
        n
    }

    /// After publishing: whether the reader is parked and must be woken (the caller picks the
    /// means: [`Ring::wake_reader`] for a futex sleeper, a doorbell byte for a pipe sleeper).
    #[must_use]
    pub fn reader_needs_wake(&self) -> bool {
        fence(Ordering::SeqCst);
        if self.ctl.reader_parked.load(Ordering::Relaxed) != 0 {
            self.ctl.data_seq.fetch_add(1, Ordering::Release);
            return true;
        }
        false
    }

    /// Wakes a reader sleeping in [`Ring::wait_readable`].
    pub fn wake_reader(&self) {
        futex::wake_all(&self.ctl.data_seq);
    }

    /// Announces that the reader is about to sleep on something else (a pipe); returns whether
    /// data arrived meanwhile, in which case it must not sleep. Undo with [`Ring::unpark_reader`].
    #[must_use]
    pub fn park_reader(&self) -> bool {
        self.ctl.reader_parked.store(1, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        self.readable() > 0 || self.closed()
    }

    /// The reader is awake again.
    pub fn unpark_reader(&self) {
        self.ctl.reader_parked.store(0, Ordering::Relaxed);
    }

    /// Waits until bytes are readable or the segment closes: spins, then sleeps on the futex.
    /// Returns false when it timed out after one `wait.slice` of sleep, so the caller can check
    /// liveness and call again.
    pub fn wait_readable(&self, wait: Wait) -> bool {
        if spin_until(wait.spin, || self.readable() > 0 || self.closed()) {
            return true;
        }
        let seq = self.ctl.data_seq.load(Ordering::Acquire);
        if self.park_reader() {
            self.unpark_reader();
            return true;
        }
        futex::wait(&self.ctl.data_seq, seq, wait.slice);
        self.unpark_reader();
        self.readable() > 0 || self.closed()
    }

    fn wait_writable(&self, wait: Wait) -> bool {
        if spin_until(wait.spin, || self.writable() > 0 || self.closed()) {
            return true;
        }
        let seq = self.ctl.space_seq.load(Ordering::Acquire);
        self.ctl.writer_parked.store(1, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        if self.writable() == 0 && !self.closed() {
            futex::wait(&self.ctl.space_seq, seq, wait.slice);
        }
        self.ctl.writer_parked.store(0, Ordering::Relaxed);
        self.writable() > 0 || self.closed()
    }

    /// Writes every part in order, waiting for space as needed; `wake` is called when the
    /// reader must be woken (each time a piece is published to a parked reader).
    ///
    /// # Errors
    /// `BrokenPipe` when the segment closes, or `alive` says the reader is gone.
    pub fn write_all(
        &self,
        parts: &[&[u8]],
        wait: Wait,
        mut wake: impl FnMut(),
        alive: impl Fn() -> bool,
    ) -> std::io::Result<()> {
        for part in parts {
            let mut rest = *part;
            while !rest.is_empty() {
                let n = self.write_some(rest);
                rest = &rest[n..];
                if self.reader_needs_wake() {
                    wake();
                }
                if !rest.is_empty() && !self.wait_writable(wait) && !alive() {
                    return Err(std::io::ErrorKind::BrokenPipe.into());
                }
                if self.closed() {
                    return Err(std::io::ErrorKind::BrokenPipe.into());
                }
            }
        }
        Ok(())
    }

    /// Fills `dst`, waiting for the writer as needed (futex sleeps; see [`Ring::wait_readable`]).
    ///
    /// # Errors
    /// `UnexpectedEof` when the segment closes, or `alive` says the writer is gone.
    pub fn read_exact(&self, dst: &mut [u8], wait: Wait, alive: impl Fn() -> bool) -> std::io::Result<()> {
        let mut done = 0;
        while done < dst.len() {
            let n = self.read_some(&mut dst[done..]);
            done += n;
            if n == 0 {
                if self.closed() && self.readable() == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                if !self.wait_readable(wait) && !alive() {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
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

#[cfg(test)]
mod tests {
    use super::super::Segment;
    use super::*;

    #[test]
    fn bytes_flow_in_order_through_a_small_ring_with_wraparound() {
        let seg = Segment::create(4096).unwrap();
        let wait = Wait { spin: Duration::from_micros(20), slice: Duration::from_millis(20) };
        let message: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
        std::thread::scope(|s| {
            s.spawn(|| {
                let ring = seg.requests();
                for chunk in message.chunks(777) {
                    ring.write_all(&[chunk], wait, || ring.wake_reader(), || true).unwrap();
                }
            });
            let mut got = vec![0u8; message.len()];
            seg.requests().read_exact(&mut got, wait, || true).unwrap();
            assert_eq!(got, message);
        });
    }

    #[test]
    fn a_parked_reader_is_woken_and_close_fails_waiters() {
        let seg = Segment::create(4096).unwrap();
        let wait = Wait { spin: Duration::ZERO, slice: Duration::from_secs(5) };
        std::thread::scope(|s| {
            let reader = s.spawn(|| {
                let mut b = [0u8; 3];
                seg.replies().read_exact(&mut b, wait, || true).map(|()| b)
            });
            std::thread::sleep(Duration::from_millis(20));
            let ring = seg.replies();
            ring.write_all(&[b"abc"], wait, || ring.wake_reader(), || true).unwrap();
            assert_eq!(&reader.join().unwrap().unwrap(), b"abc");
            let reader = s.spawn(|| seg.replies().read_exact(&mut [0u8; 1], wait, || true));
            std::thread::sleep(Duration::from_millis(20));
            seg.close();
            assert_eq!(reader.join().unwrap().unwrap_err().kind(), std::io::ErrorKind::UnexpectedEof);
        });
    }

    #[test]
    fn segments_reopen_from_their_descriptor() {
        let seg = Segment::create(10_000).unwrap();
        assert_eq!(seg.capacity(), 12_288);
        let dup = seg.fd().try_clone().unwrap();
        let other = Segment::open(dup).unwrap();
        assert_eq!(other.capacity(), seg.capacity());
        assert_eq!(seg.requests().write_some(b"hello"), 5);
        let mut b = [0u8; 5];
        assert_eq!(other.requests().read_some(&mut b), 5);
        assert_eq!(&b, b"hello");
        let junk = Segment::create(4096).unwrap();
        let fd = junk.fd().try_clone().unwrap();
        // SAFETY: truncating our own memfd to break its layout.
        unsafe { libc::ftruncate(std::os::fd::AsRawFd::as_raw_fd(&fd), 100) };
        assert!(Segment::open(fd).is_err());
    }
}
