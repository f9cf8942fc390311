//! The memfd segment: a header page with both rings' control blocks, then the two data areas.
//! A memfd is passed to the worker as a descriptor, never named in `/dev/shm`, so nothing is
//! left behind when either side dies, even by SIGKILL.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use super::mapping::Mapping;
use super::ring::{Ring, RingCtl};
use super::sync::{AtomicU32, AtomicU64, Ordering};

const MAGIC: u64 = 0x7374_6174_6566_756c; // "stateful"
const HEADER: usize = 4096;
const PAGE: usize = 4096;

/// The largest ring a segment may have (1 TiB per direction): far above any machine's shared
/// memory, and small enough that the segment's size (`4096 + 2 * capacity`) and every ring
/// position stay far from overflowing.
pub(super) const MAX_RING_CAPACITY: usize = 1 << 40;

#[repr(C)]
struct Header {
    magic: AtomicU64,
    capacity: AtomicU64,
    /// Set when either side is gone; wakes and fails every waiter.
    closed: AtomicU32,
    requests: RingCtl,
    replies: RingCtl,
}

// (loom's atomics are larger, and a loom build never maps a segment.)
#[cfg(not(all(test, loom)))]
const _: () = assert!(std::mem::size_of::<Header>() <= HEADER);

/// Why a segment could not be created or mapped.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SegmentError {
    /// A system call failed.
    #[error("shared memory: {0}")]
    Io(#[from] io::Error),
    /// The descriptor does not hold a segment made by [`Segment::create`].
    #[error("shared memory segment has a bad header")]
    BadHeader,
    /// The requested ring capacity is larger than [`MAX_RING_CAPACITY`].
    #[error("shm_capacity of {0} bytes is too large: at most {MAX_RING_CAPACITY} bytes (1 TiB) per direction")]
    TooLarge(usize),
}

/// The capacity a ring asked to hold `requested` bytes gets: at least a page, rounded up to
/// whole pages.
///
/// # Errors
/// [`SegmentError::TooLarge`] past [`MAX_RING_CAPACITY`] (so nothing downstream can overflow).
pub(crate) fn ring_capacity(requested: usize) -> Result<usize, SegmentError> {
    if requested > MAX_RING_CAPACITY {
        return Err(SegmentError::TooLarge(requested));
    }
    Ok(requested.max(PAGE).next_multiple_of(PAGE))
}

/// One mapped segment with a request ring and a reply ring of `capacity` bytes each.
pub(crate) struct Segment {
    map: Mapping,
    capacity: usize,
}

impl std::fmt::Debug for Segment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segment").field("fd", &self.map.fd().as_raw_fd()).field("capacity", &self.capacity).finish()
    }
}

impl Segment {
    /// Creates a segment with two rings of `capacity` bytes (see [`ring_capacity`]).
    ///
    /// # Errors
    /// [`SegmentError::TooLarge`], or when memfd, ftruncate or mmap fail.
    pub(crate) fn create(capacity: usize) -> Result<Self, SegmentError> {
        let capacity = ring_capacity(capacity)?;
        // Cannot overflow: capacity <= MAX_RING_CAPACITY.
        let map = Mapping::create(c"stateful-pool", HEADER + 2 * capacity)?;
        let segment = Self { map, capacity };
        let header = segment.header();
        header.capacity.store(capacity as u64, Ordering::Relaxed);
        header.magic.store(MAGIC, Ordering::Release);
        Ok(segment)
    }

    /// Maps a segment received as a descriptor (the worker's side).
    ///
    /// # Errors
    /// When the descriptor cannot be mapped or holds no segment.
    pub(crate) fn open(fd: OwnedFd) -> Result<Self, SegmentError> {
        let map = Mapping::open(fd)?;
        let len = map.len();
        if len < HEADER {
            return Err(SegmentError::BadHeader);
        }
        let mut segment = Self { map, capacity: 0 };
        let header = segment.header();
        let capacity = usize::try_from(header.capacity.load(Ordering::Relaxed)).map_err(|_| SegmentError::BadHeader)?;
        let fits = (PAGE..=MAX_RING_CAPACITY).contains(&capacity)
            && capacity % PAGE == 0
            && capacity.checked_mul(2).and_then(|both| both.checked_add(HEADER)) == Some(len);
        if header.magic.load(Ordering::Acquire) != MAGIC || !fits {
            return Err(SegmentError::BadHeader);
        }
        segment.capacity = capacity;
        Ok(segment)
    }

    fn header(&self) -> &Header {
        // SAFETY: the mapping is at least HEADER bytes, page-aligned, and Header is all atomics
        // (valid for any bit pattern, zero included).
        unsafe { &*self.map.base().cast::<Header>() }
    }

    /// The descriptor, to hand to the worker process.
    #[must_use]
    pub(crate) fn fd(&self) -> &OwnedFd {
        self.map.fd()
    }

    /// Bytes per ring.
    #[cfg(all(test, not(loom)))]
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// Supervisor → worker.
    #[must_use]
    pub(crate) fn requests(&self) -> Ring<'_> {
        // SAFETY: the request data area is the `capacity` bytes after the header page.
        unsafe { Ring::new(&self.header().requests, &self.header().closed, self.map.base().add(HEADER), self.capacity) }
    }

    /// Worker → supervisor.
    #[must_use]
    pub(crate) fn replies(&self) -> Ring<'_> {
        // SAFETY: the reply data area follows the request data area.
        unsafe {
            Ring::new(
                &self.header().replies,
                &self.header().closed,
                self.map.base().add(HEADER + self.capacity),
                self.capacity,
            )
        }
    }

    /// Marks the segment closed and wakes every futex waiter (the other side died or left).
    pub(crate) fn close(&self) {
        self.header().closed.store(1, Ordering::SeqCst);
        self.requests().wake_all();
        self.replies().wake_all();
    }

    /// Overwrites the raw indices of the request (`replies == false`) or reply ring, as a
    /// corrupting peer would.
    #[cfg(all(test, not(loom)))]
    pub(crate) fn forge_indices(&self, replies: bool, head: u64, tail: u64) {
        let ctl = if replies { &self.header().replies } else { &self.header().requests };
        ctl.forge(head, tail);
    }
}

#[cfg(all(test, not(loom)))]
mod layout_tests {
    use super::*;

    /// `tests/hostile_workers.py` writes into a worker's segment at these offsets.
    #[test]
    fn segment_layout_is_what_hostile_workers_expect() {
        let seg = Segment::create(8192).unwrap();
        let word = |at: usize| {
            // SAFETY: `at + 8` lies inside the header page; an unaligned read of plain bytes.
            unsafe { seg.map.base().add(at).cast::<u64>().read_unaligned() }
        };
        assert_eq!((word(0), word(8)), (MAGIC, 8192));
        seg.forge_indices(false, 11, 12);
        seg.forge_indices(true, 21, 22);
        assert_eq!([word(64), word(128), word(256), word(320)], [11, 12, 21, 22]);
        assert_eq!(seg.map.len(), HEADER + 2 * 8192);
    }
}
