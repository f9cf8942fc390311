//! Scheduling: the shared task queue, the dispatcher that binds queued tasks to idle workers
//! (late), the load balancers it picks with, and the batches a worker takes straight from the
//! queue when its tasks are short.

pub(crate) mod balance;
pub(crate) mod batch;
pub(crate) mod dispatch;
pub(crate) mod line;
pub(crate) mod on_demand;
pub(crate) mod queue;
