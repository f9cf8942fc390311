//! On-demand engines (`SPool(on_demand=n)`, see [`crate::Config::on_demand`]): `spawn()`
//! starts no worker; it records the spawn arguments as the supervisor's worker factory, and
//! each call then runs on a fresh worker started with them, retired after it.

use std::sync::Arc;

use pyo3::prelude::*;

use super::core::ReportFn;
use super::host::{HostSpec, StartFailure};
use super::host_worker::HostWorker;
use crate::error::TaskError;
use crate::process::{ProcessSpec, ProcessWorker, SpawnFailure};
use crate::{Supervisor, WorkerFault};

/// `None` as a process reply payload (no out-of-band buffers, a 2-byte pickle): what `spawn()`
/// returns, since no worker starts until a call comes.
const PICKLED_NONE: [u8; 14] = [0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, b'N', b'.'];

/// Records `init` (the pickled spawn arguments) as the factory of a process engine's workers.
pub(crate) fn record_process(
    supervisor: &Supervisor<ProcessWorker>,
    spec: &Arc<ProcessSpec>,
    init: Arc<Vec<u8>>,
    report: ReportFn<ProcessWorker>,
) {
    let spec = Arc::clone(spec);
    supervisor.set_worker_factory(move |id| process_worker(Arc::clone(&spec), Arc::clone(&init), id));
    report(Ok((0, PICKLED_NONE.to_vec())));
}

/// Records `spec` (with the spawn arguments) as the factory of an in-process engine's workers.
pub(crate) fn record_hosted(supervisor: &Supervisor<HostWorker>, spec: HostSpec, report: ReportFn<HostWorker>) {
    supervisor.set_worker_factory(move |id| hosted_worker(spec.clone(), id));
    report(Ok((0, None)));
}

/// The fault of a worker `id` that could not start: its call fails with `WorkerCrashedError`.
fn not_started<E>(id: u64, why: impl std::fmt::Display) -> TaskError<E> {
    TaskError::WorkerCrashed { worker: id, fault: WorkerFault::new(format!("on-demand worker could not start: {why}")) }
}

/// Worker `id`, a fresh process for one call; a setup that raised fails the call with that
/// exception.
async fn process_worker(
    spec: Arc<ProcessSpec>,
    init: Arc<Vec<u8>>,
    id: u64,
) -> Result<ProcessWorker, TaskError<Vec<u8>>> {
    match ProcessWorker::start(spec, init).await {
        Ok((worker, _)) => Ok(worker),
        Err(SpawnFailure::Raised(raised)) => Err(TaskError::Failed(raised)),
        Err(failure) => Err(not_started(id, failure)),
    }
}

/// Worker `id`, a fresh host for one call; a setup that raised fails the call with that
/// exception.
async fn hosted_worker(spec: HostSpec, id: u64) -> Result<HostWorker, TaskError<Py<PyAny>>> {
    match HostWorker::start(spec).await {
        Ok((worker, _)) => Ok(worker),
        Err(StartFailure::Raised(exc, _)) => Err(TaskError::Failed(exc)),
        Err(StartFailure::Crashed(message)) => Err(not_started(id, message)),
    }
}
