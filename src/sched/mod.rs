//! Scheduling: the shared task queue, the dispatcher that binds queued tasks to idle workers
//! (late), the load balancers it picks with, and the batches a worker takes straight from the
//! queue when its tasks are short (transport batching), and the coalesced calls it gathers for
//! batched methods (`gather.rs`).

pub(crate) mod balance;
pub(crate) mod batch;
pub(crate) mod concurrent;
pub(crate) mod dispatch;
pub(crate) mod gather;
pub(crate) mod line;
pub(crate) mod on_demand;
pub(crate) mod queue;
