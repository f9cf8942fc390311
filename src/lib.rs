//! `worker_pool`: a supervisor for pools of stateful workers.
//!
//! A [`Supervisor`] owns a task queue and a set of workers implementing [`Workable`]. Idle
//! workers pull tasks from the queue; each worker moves through the [`WorkerState`] machine;
//! crashed, timed-out and worn-out workers are restarted under a [`RestartPolicy`] and a
//! restart intensity. [`ProcessWorker`] runs a worker in a child process (the Python
//! package `stateful_pool` is built on it). A worker that implements
//! [`Workable::try_send`] and [`Workable::receive`] gets short queued tasks in batches, one
//! wake-up for several; one whose [`Workable::concurrency`] is above 1 (an event loop, an
//! actor) runs that many tasks at once through [`Workable::begin`] and [`Workable::next_done`].
//! See `src/SUPERVISOR.md` for the design.
//!
//! ```
//! use worker_pool::{Response, Supervisor, Workable};
//!
//! struct Counter { seen: u64 }
//!
//! impl Workable for Counter {
//!     type Task = String;
//!     type Output = String;
//!     type Error = String;
//!     async fn process(&mut self, task: String) -> Response<Self> {
//!         self.seen += 1;
//!         Response::Complete(Ok(format!("task {} was {task:?}", self.seen)))
//!     }
//! }
//!
//! let pool = Supervisor::<Counter>::builder().queue_capacity(16).build().unwrap();
//! pool.add_worker(Counter { seen: 0 });
//! let handle = pool.try_submit("hello".to_string()).unwrap();
//! assert_eq!(handle.wait().unwrap(), "task 1 was \"hello\"");
//! ```

mod error;
mod job;
pub mod limits;
mod pool;
mod process;
mod sched;
// Its users are compiled out under loom, where only the loom models use it.
#[cfg_attr(loom, allow(dead_code, unused_imports))]
mod shm;
mod worker;

#[cfg(feature = "python")]
mod python;

pub use crate::error::{BuildError, Departure, NoWorkerReason, StartError, SubmitError, TaskError, WorkerFault};
pub use crate::job::{Outcome, ReplyFn, Sticky, TaskHandle, TaskOptions, Ticket, UnknownSticky};
pub use crate::pool::config::{Config, SupervisorBuilder, WorkerExit};
pub use crate::pool::metrics::{RunTimeHistogram, RUN_TIME_BOUNDS};
pub use crate::pool::shutdown::ShutdownMode;
pub use crate::pool::supervisor::{Backpressure, Claim, Supervisor};
#[cfg(not(loom))] // tokio built with `--cfg loom` has no process module (see src/SUPERVISOR.md)
pub use crate::process::{
    CallReply, FrameKind, LaneError, Placement, ProcessSpec, ProcessWorker, ProtocolError, RaisedPayload, ShmLane,
    SpawnFailure, StartMethod, WorkerEndpoint, Zygote, DEFAULT_MAX_MESSAGE_SIZE,
};
pub use crate::sched::balance::{LoadBalancing, UnknownBalancer};
pub use crate::sched::gather::{Coalesce, CoalesceStats, COALESCE_SIZE_BUCKETS};
pub use crate::sched::on_demand::{OnDemandStats, WorkerStart};
pub use crate::worker::health::{HealthCheck, HealthVerdict};
pub use crate::worker::restart::{
    FailureStage, RestartDecision, RestartIntensity, RestartPacer, RestartPolicy, BACKOFF_FIRST, BACKOFF_MAX,
};
pub use crate::worker::slot::WorkerInfo;
pub use crate::worker::state::{transition, InvalidTransition, WorkerEvent, WorkerState};
pub use crate::worker::workable::{CallToken, Cancellation, Coalesced, Refusal, Response, SuccessorStart, Workable};
