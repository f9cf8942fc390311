//! One worker: the [`Workable`](crate::Workable) trait it implements, its state machine, the
//! slot the supervisor reads it through, the serve loop that drives it, and the restart pacer
//! that decides what happens after it fails.

pub(crate) mod restart;
pub(crate) mod serve;
pub(crate) mod slot;
pub(crate) mod state;
pub(crate) mod workable;
