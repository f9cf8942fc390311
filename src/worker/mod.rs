//! One worker: the [`Workable`](crate::Workable) trait it implements, its state machine, the
//! slot the supervisor reads it through, the serve loop that drives it, and the restart pacer
//! that decides what happens after it fails, and the health checks that replace a worker gone
//! bad between tasks.

pub(crate) mod health;
pub(crate) mod renew;
pub(crate) mod restart;
pub(crate) mod serve;
pub(crate) mod slot;
pub(crate) mod state;
pub(crate) mod workable;
