//! Process workers ([`ProcessWorker`]) in an engine: pickled bytes in, pickled bytes out, and
//! the direct lane for blocking calls (see `direct.rs`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use pyo3::prelude::*;

use super::core::{EngineCore, ReportFn};
use super::direct::{call_direct, too_large};
use super::kind::{Kind, PyReply, StartOutcome};
use super::options::{EngineOptions, HealthOptions, PlacementArg};
use crate::job::Outcome;
use crate::process::{ProcessSpec, ProcessWorker, ShmLane, SpawnFailure, StartMethod};
use crate::python::buffers::gather;
use crate::python::errors::{start_outcome, task_outcome};
use crate::Supervisor;

impl Kind for ProcessWorker {
    type Ready = Vec<u8>;
    type Failure = SpawnFailure;

    fn task_reply(py: Python<'_>, outcome: Outcome<Self>) -> PyResult<PyReply<'_>> {
        task_outcome(py, outcome)
    }

    fn start_reply(py: Python<'_>, outcome: StartOutcome<Self>) -> PyResult<PyReply<'_>> {
        start_outcome(py, outcome)
    }
}

/// An engine's process workers: how to start them, and whether calls may take the direct lane.
pub(crate) struct ProcessEngine {
    pub(crate) core: EngineCore<ProcessWorker>,
    spec: Arc<ProcessSpec>,
    /// Whether blocking calls may take the direct lane: not when per-task policies (timeouts,
    /// recycling, crash retries) need the serve loop to watch each task.
    pub(super) direct: bool,
    /// The specs of workers started with a placement of their own, by worker id, so that a
    /// replacement can be placed like the worker it replaces.
    placed: Mutex<HashMap<u64, Arc<ProcessSpec>>>,
}

impl ProcessEngine {
    pub(crate) fn new(options: &EngineOptions, config: crate::Config) -> PyResult<Self> {
        let spec = options.process_spec()?;
        let direct = config.task_timeout.is_none()
            && config.max_tasks_per_worker.is_none()
            && config.max_memory_per_worker.is_none()
            && config.crash_retries == 0;
        let upcalls = spec.upcalls.clone();
        let supervisor = Supervisor::<ProcessWorker>::builder()
            .config(config)
            // Permits and locks a dead worker held go back at once; waiters would find them too,
            // but only when they next look.
            .on_worker_exit(move |exit| {
                if let Some(pid) = exit.pid {
                    let _ = crate::limits::reclaim_dead_process(pid);
                    if let Some(upcalls) = &upcalls {
                        upcalls.0.worker_exited(pid);
                    }
                }
            })
            .build()
            .map_err(|e| pyo3::exceptions::PyValueError::new_err(e.to_string()))?;
        let spec = Arc::new(spec);
        // The zygote starts now, off this thread, so a new pool's first workers need not wait
        // for it (it dies with the runtime, like the workers).
        if let (StartMethod::Zygote(zygote), Some(runtime)) = (&spec.start_method, supervisor.runtime()) {
            zygote.warm_up(Arc::clone(&spec), &runtime);
        }
        Ok(Self { core: EngineCore::new(supervisor, None), spec, direct, placed: Mutex::default() })
    }

    /// Starts one worker process whose setup payload is `init` (pickled bytes), with
    /// `placement` of its own, or else placed like worker `like` (a replacement), or else with
    /// none. A placement lives in the worker's spec, so its restarts keep it.
    pub(crate) fn start(
        &self,
        init: &Bound<'_, PyAny>,
        placement: Option<PlacementArg>,
        like: Option<u64>,
    ) -> PyResult<impl FnOnce(ReportFn<ProcessWorker>) + '_> {
        let init = Arc::new(init.extract::<Vec<u8>>()?);
        let placed = |id| self.placed.lock().unwrap_or_else(PoisonError::into_inner).get(&id).cloned();
        let spec = match (placement, like) {
            (Some(placement), _) => Arc::new(ProcessSpec { placement: placement.placement()?, ..(*self.spec).clone() }),
            (None, Some(like)) => placed(like).unwrap_or_else(|| Arc::clone(&self.spec)),
            (None, None) => Arc::clone(&self.spec),
        };
        Ok(move |report: ReportFn<ProcessWorker>| {
            if self.core.supervisor.config().on_demand.is_some() {
                return super::on_demand::record_process(&self.core.supervisor, &spec, init, report);
            }
            let id = self.core.supervisor.start_worker(ProcessWorker::start(Arc::clone(&spec), init), report);
            if spec.placement != crate::process::Placement::default() {
                self.placed.lock().unwrap_or_else(PoisonError::into_inner).insert(id, spec);
            }
        })
    }

    /// Checks idle workers' health: a reply equal to the encoded `True` is healthy.
    pub(crate) fn check_health(&self, py: Python<'_>, health: &HealthOptions<'_>) -> PyResult<()> {
        let healthy = health.healthy_reply.extract::<Vec<u8>>(py)?;
        self.core.supervisor.check_health(crate::HealthCheck {
            task: self.task(py, health.payload.bind(py))?,
            interval: health.interval,
            timeout: health.timeout,
            healthy: Arc::new(move |reply: &Vec<u8>| *reply == healthy),
        });
        Ok(())
    }

    /// A call's buffers (a list), copied into one message no larger than `max_message_size`.
    pub(crate) fn task(&self, py: Python<'_>, payload: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
        let task = gather(py, &payload.extract::<Vec<Bound<'_, PyAny>>>()?)?;
        match task.len() > self.spec.max_message_size {
            true => Err(too_large(task.len(), self.spec.max_message_size)),
            false => Ok(task),
        }
    }

    /// Runs a blocking call through an idle worker's direct lane, if one is free (the caller
    /// checks that this engine and the call may take it); `None`: submit it instead.
    pub(crate) fn call_direct<'py>(
        &self,
        py: Python<'py>,
        payload: &Bound<'py, PyAny>,
    ) -> Option<PyResult<PyReply<'py>>> {
        // Before claiming a worker: a claim given up on replaces its worker.
        let parts = match payload.extract::<Vec<Bound<'py, PyAny>>>() {
            Ok(parts) => parts,
            Err(e) => return Some(Err(e)),
        };
        let claim = self.core.supervisor.claim_idle()?;
        let lane = claim.lane::<ShmLane>()?;
        Some(call_direct(py, claim, lane, &parts))
    }
}
