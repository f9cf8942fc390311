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
pub(crate) mod loom_tests;
mod mapping;
mod ring;
mod segment;
mod sync;
#[cfg(all(test, not(loom)))]
mod tests;

pub(crate) use self::mapping::Mapping;
pub(crate) use self::ring::{spin_until, Corrupted, Ring, Wait};
#[allow(unused_imports, reason = "the Python bindings check `shm_capacity` with `ring_capacity` early")]
pub(crate) use self::segment::ring_capacity;
pub(crate) use self::segment::{Segment, SegmentError};

/// Asks for transparent huge pages on the page-aligned interior of a large buffer about to be
/// filled, so a 64 MiB receive costs 32 page faults instead of 16,384. Best effort; a no-op
/// for buffers under 4 MiB.
pub(crate) fn advise_huge_pages(buf: &mut [u8]) {
    const HUGE: usize = 2 << 20;
    if buf.len() < 2 * HUGE {
        return;
    }
    let base = buf.as_mut_ptr() as usize;
    let start = base.next_multiple_of(HUGE);
    let end = (base + buf.len()) / HUGE * HUGE;
    if end > start {
        // SAFETY: [start, end) lies inside `buf`, which we borrow mutably; MADV_HUGEPAGE only
        // changes how the kernel backs those pages, never their contents.
        unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE) };
    }
}
