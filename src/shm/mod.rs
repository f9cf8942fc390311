//! Shared memory between the supervisor and one worker process: a memfd segment holding two
//! single-producer single-consumer byte rings (requests and replies), with bounded spinning
//! before a waiter parks.
//!
//! Parking: the worker parks on a futex word in the segment (no `FUTEX_PRIVATE_FLAG`, it is
//! shared between processes); the supervisor side never sleeps on a futex, it parks on the
//! worker's pipe (a doorbell the runtime polls, which doubles as the liveness signal: EOF when
//! the worker dies), both for a reply and for room in a full request ring. A side only pays
//! for a wake-up when the other announced it parked, so a busy pair exchanges messages with no
//! system call at all.

mod futex;
#[cfg(all(test, loom))]
mod loom_tests;
mod mapping;
mod ring;
mod segment;
mod sync;
#[cfg(all(test, not(loom)))]
mod tests;

pub(crate) use self::mapping::Mapping;
#[cfg_attr(loom, allow(unused_imports))] // its users are not in loom builds
pub(crate) use self::ring::spin_until;
pub use self::ring::{Corrupted, Ring, Wait};
pub use self::segment::{ring_capacity, Segment, SegmentError, MAX_RING_CAPACITY};

/// Asks for transparent huge pages on the page-aligned interior of a large buffer about to be
/// filled, so a 64 MiB receive costs 32 page faults instead of 16,384. Best effort; a no-op
/// for buffers under 4 MiB.
pub fn advise_huge_pages(buf: &mut [u8]) {
    advise_huge_pages_raw(buf.as_mut_ptr(), buf.len());
}

/// [`advise_huge_pages`] for memory that is not initialised yet (no slice may exist over it).
pub fn advise_huge_pages_raw(ptr: *mut u8, len: usize) {
    const HUGE: usize = 2 << 20;
    if len < 2 * HUGE {
        return;
    }
    let start = (ptr as usize).next_multiple_of(HUGE);
    let end = (ptr as usize + len) / HUGE * HUGE;
    if end > start {
        // SAFETY: [start, end) lies inside the caller's allocation; MADV_HUGEPAGE only changes
        // how the kernel backs those pages, never their contents.
        unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE) };
    }
}
