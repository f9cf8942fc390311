//! The memfd segment: a header page with both rings' control blocks, then the two data areas.
//! A memfd is passed to the worker as a descriptor, never named in `/dev/shm`, so nothing is
//! left behind when either side dies, even by SIGKILL.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use super::ring::{Ring, RingCtl};

const MAGIC: u64 = 0x7374_6174_6566_756c; // "stateful"
const HEADER: usize = 4096;

#[repr(C)]
struct Header {
    magic: AtomicU64,
    capacity: AtomicU64,
    /// Set when either side is gone; wakes and fails every waiter.
    closed: AtomicU32,
    requests: RingCtl,
    replies: RingCtl,
}

const _: () = assert!(std::mem::size_of::<Header>() <= HEADER);

/// Why a segment could not be created or mapped.
#[derive(Debug, thiserror::Error)]
pub enum SegmentError {
    /// A system call failed.
    #[error("shared memory: {0}")]
    Io(#[from] io::Error),
    /// The descriptor does not hold a segment made by [`Segment::create`].
    #[error("shared memory segment has a bad header")]
    BadHeader,
}

/// One mapped segment with a request ring and a reply ring of `capacity` bytes each.
pub struct Segment {
    fd: OwnedFd,
    base: NonNull<u8>,
    len: usize,
    capacity: usize,
}

// SAFETY: the mapping is plain shared memory; all access to it goes through atomics in the
// header or through the rings' single-producer/single-consumer discipline.
unsafe impl Send for Segment {}
// SAFETY: as above; `&Segment` only hands out `Ring`s, which synchronise through atomics.
unsafe impl Sync for Segment {}

impl std::fmt::Debug for Segment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segment").field("fd", &self.fd.as_raw_fd()).field("capacity", &self.capacity).finish()
    }
}

fn map(fd: &OwnedFd, len: usize) -> Result<NonNull<u8>, SegmentError> {
    // SAFETY: mapping a descriptor we own, shared, read-write; the result is checked.
    let ptr = unsafe {
        libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, fd.as_raw_fd(), 0)
    };
    if ptr == libc::MAP_FAILED {
        return Err(io::Error::last_os_error().into());
    }
    NonNull::new(ptr.cast()).ok_or(SegmentError::BadHeader)
}

impl Segment {
    /// Creates a segment with two rings of `capacity` bytes (rounded up to a page).
    ///
    /// # Errors
    /// When memfd, ftruncate or mmap fail.
    pub fn create(capacity: usize) -> Result<Self, SegmentError> {
        let capacity = capacity.max(4096).next_multiple_of(4096);
        // SAFETY: the name is a valid C string; the flags are valid for memfd_create.
        let raw = unsafe { libc::memfd_create(c"stateful-pool".as_ptr(), libc::MFD_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error().into());
        }
        // SAFETY: memfd_create returned a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let len = HEADER + 2 * capacity;
        // SAFETY: ftruncate on our own memfd.
        if unsafe { libc::ftruncate(fd.as_raw_fd(), len as libc::off_t) } != 0 {
            return Err(io::Error::last_os_error().into());
        }
        let base = map(&fd, len)?;
        let segment = Self { fd, base, len, capacity };
        let header = segment.header();
        header.capacity.store(capacity as u64, Ordering::Relaxed);
        header.magic.store(MAGIC, Ordering::Release);
        Ok(segment)
    }

    /// Maps a segment received as a descriptor (the worker's side).
    ///
    /// # Errors
    /// When the descriptor cannot be mapped or holds no segment.
    pub fn open(fd: OwnedFd) -> Result<Self, SegmentError> {
        // SAFETY: fstat fills a zeroed stat struct for our descriptor.
        let mut stat: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        if unsafe { libc::fstat(fd.as_raw_fd(), &raw mut stat) } != 0 {
            return Err(io::Error::last_os_error().into());
        }
        let len = usize::try_from(stat.st_size).map_err(|_| SegmentError::BadHeader)?;
        if len < HEADER {
            return Err(SegmentError::BadHeader);
        }
        let base = map(&fd, len)?;
        let mut segment = Self { fd, base, len, capacity: 0 };
        let header = segment.header();
        let capacity = usize::try_from(header.capacity.load(Ordering::Relaxed)).map_err(|_| SegmentError::BadHeader)?;
        if header.magic.load(Ordering::Acquire) != MAGIC || HEADER + 2 * capacity != len {
            return Err(SegmentError::BadHeader);
        }
        segment.capacity = capacity;
        Ok(segment)
    }

    fn header(&self) -> &Header {
        // SAFETY: the mapping is at least HEADER bytes, page-aligned, and Header is all atomics
        // (valid for any bit pattern, zero included).
        unsafe { &*self.base.as_ptr().cast::<Header>() }
    }

    /// The descriptor, to hand to the worker process.
    #[must_use]
    pub fn fd(&self) -> &OwnedFd {
        &self.fd
    }

    /// Bytes per ring.
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Supervisor → worker.
    #[must_use]
    pub fn requests(&self) -> Ring<'_> {
        // SAFETY: the request data area is the `capacity` bytes after the header page.
        unsafe {
            Ring::new(&self.header().requests, &self.header().closed, self.base.as_ptr().add(HEADER), self.capacity)
        }
    }

    /// Worker → supervisor.
    #[must_use]
    pub fn replies(&self) -> Ring<'_> {
        // SAFETY: the reply data area follows the request data area.
        unsafe {
            Ring::new(
                &self.header().replies,
                &self.header().closed,
                self.base.as_ptr().add(HEADER + self.capacity),
                self.capacity,
            )
        }
    }

    /// Marks the segment closed and wakes every futex waiter (the other side died or left).
    pub fn close(&self) {
        self.header().closed.store(1, Ordering::SeqCst);
        self.requests().wake_all();
        self.replies().wake_all();
    }

    /// Whether [`Segment::close`] was called by either side.
    #[must_use]
    pub fn is_closed(&self) -> bool {
        self.header().closed.load(Ordering::SeqCst) != 0
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the mapping we made; no `Ring` borrows outlive `self`.
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), self.len);
        }
    }
}
