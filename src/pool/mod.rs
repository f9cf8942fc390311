//! The pool a user holds: the [`Supervisor`](crate::Supervisor) handle, its builder and
//! configuration, the state it shares with every worker's serve loop, and how it shuts down.

pub(crate) mod config;
pub(crate) mod metrics;
pub(crate) mod shared;
pub(crate) mod shutdown;
pub(crate) mod supervisor;
