//! Shared memory between the supervisor and one worker process: a memfd segment holding two
//! single-producer single-consumer byte rings (requests and replies), with bounded spinning
//! before a waiter parks.
//!
//! Parking: the worker parks on a futex word in the segment (no `FUTEX_PRIVATE_FLAG`, it is
//! shared between processes); the supervisor side parks on the worker's pipe, which doubles as
//! its liveness signal (EOF when the worker dies). A writer only pays for a wake-up when the
//! reader announced it parked, so a busy pair exchanges messages with no system call at all.

mod futex;
mod ring;
mod segment;

pub(crate) use self::ring::spin_until;
pub use self::ring::{Ring, Wait};
pub use self::segment::{Segment, SegmentError};
