//! In-process workers (thread, asyncio, ray and sync modes) in an engine: each worker is one
//! host (see `host_worker.rs`), running up to `max_concurrency` calls at once; values cross as
//! Python objects.

use std::sync::Arc;

use pyo3::prelude::*;

use super::core::{EngineCore, ReportFn};
use super::host::{lock, Host, HostSpec, KillPolicy};
use super::host_worker::HostWorker;
use super::inline::InlineQueue;
use super::kind::{Kind, PyReply};
use super::options::{EngineOptions, HostOptions, Mode};
use crate::error::{TaskError, WorkerFault};
use crate::python::protocol::{READY_OK, READY_RAISED};
use crate::Supervisor;

/// An engine's in-process workers: how to start their hosts.
pub(crate) struct HostedEngine {
    pub(crate) core: EngineCore<HostWorker>,
    hosts: HostOptions,
    /// What giving up on one call does to its host.
    kill_policy: KillPolicy,
    inline: Option<Arc<InlineQueue>>,
    /// Whether blocking calls may run on the caller's thread (see `call_direct`).
    pub(super) direct: bool,
}

impl HostedEngine {
    pub(crate) fn new(py: Python<'_>, mode: Mode, options: &EngineOptions, config: crate::Config) -> PyResult<Self> {
        let hosts = options.host_options(py, mode)?;
        // Calls the serve loop would not treat differently (no per-task policy, one call at a
        // time, no retry) may skip it.
        let direct = mode == Mode::Ray
            && hosts.concurrency == 1
            && config.task_timeout.is_none()
            && config.max_tasks_per_worker.is_none()
            && config.crash_retries == 0;
        let supervisor = Supervisor::<HostWorker>::builder()
            .config(config)
            .build()
            .map_err(|e| pyo3::exceptions::PyValueError::new_err(e.to_string()))?;
        let kill_policy = match mode {
            Mode::Asyncio => KillPolicy::Call,
            // Several calls queued at one actor: a queued one is cancelled alone.
            Mode::Ray if hosts.concurrency > 1 => KillPolicy::QueuedCallElseHost,
            _ => KillPolicy::Host,
        };
        let inline = (mode == Mode::Sync).then(|| Arc::new(InlineQueue::new()));
        Ok(Self { core: EngineCore::new(supervisor, inline.clone()), hosts, kill_policy, inline, direct })
    }

    /// Starts one host, set up with `init` (the spawn arguments). A host runs
    /// in this process, so it cannot have an environment or CPUs of its own: a `placement` is
    /// refused (a Ray actor's travels in `init`, as actor options); `like` places nothing.
    pub(crate) fn start(
        &self,
        init: &Bound<'_, PyAny>,
        placement: Option<super::options::PlacementArg>,
        _like: Option<u64>,
    ) -> PyResult<impl FnOnce(ReportFn<HostWorker>) + '_> {
        if placement.is_some() {
            return Err(pyo3::exceptions::PyValueError::new_err(
                "env and cpus per worker need mode='process' or 'ray' (in-process workers share one environment)",
            ));
        }
        let init = Arc::new(init.clone().unbind());
        Ok(move |report| self.start_host(init, report))
    }

    /// Checks idle hosts' health: a reply that is the healthy object itself (`True`) is healthy.
    pub(crate) fn check_health(&self, py: Python<'_>, health: &super::options::HealthOptions<'_>) -> PyResult<()> {
        let healthy = health.healthy_reply.clone_ref(py);
        self.core.supervisor.check_health(crate::HealthCheck {
            task: self.task(py, health.payload.bind(py))?,
            interval: health.interval,
            timeout: health.timeout,
            // Identity, compared without the interpreter: the runtime thread must not wait for it.
            healthy: Arc::new(move |reply: &Py<PyAny>| reply.as_ptr() == healthy.as_ptr()),
        });
        Ok(())
    }

    /// A call's payload, `(method, args, kwargs)` or its pickle, as it is.
    #[allow(clippy::unnecessary_wraps)] // the same signature as the process kind's
    pub(crate) fn task(&self, _py: Python<'_>, payload: &Bound<'_, PyAny>) -> PyResult<Arc<Py<PyAny>>> {
        Ok(Arc::new(payload.clone().unbind()))
    }

    /// Runs a blocking call on the calling thread through an idle worker whose host takes
    /// direct calls (a Ray actor: `ray.get` right there), with no hop through the supervisor's
    /// thread or the host's (the caller checks that this engine and the call may). `None`: no
    /// such worker is free; submit the call instead.
    pub(crate) fn call_direct<'py>(
        &self,
        py: Python<'py>,
        payload: &Bound<'py, PyAny>,
    ) -> Option<PyResult<PyReply<'py>>> {
        let claim = self.core.supervisor.claim_idle()?;
        let host = claim.lane::<Host>();
        let direct = host.as_ref().and_then(|h| lock(&h.shared.direct).as_ref().map(|d| d.clone_ref(py)));
        let (Some(host), Some(direct)) = (host, direct) else {
            // The host ended meanwhile: its serve loop finds out.
            claim.finish(None);
            return None;
        };
        let worker = claim.worker_id();
        let answer = direct.call1(py, (payload,)).and_then(|r| r.extract::<(u8, Py<PyAny>)>(py));
        // Interrupted (Ctrl-C) or broken: the claim, dropped unfinished, replaces the worker,
        // whose actor may still run the call.
        let (status, value) = match answer {
            Ok(answer) => answer,
            Err(e) => return Some(Err(e)),
        };
        let outcome = match status {
            READY_OK => Ok(value),
            READY_RAISED => Err(TaskError::Failed(value)),
            _ => {
                let fault = WorkerFault::new(value.bind(py).to_string());
                // Its actor is gone: the restart must not reuse the host.
                host.release();
                claim.finish(Some(fault.clone()));
                return Some(HostWorker::task_reply(py, Err(TaskError::WorkerCrashed { worker, fault })));
            }
        };
        claim.finish(None);
        Some(HostWorker::task_reply(py, outcome))
    }

    fn start_host(&self, init: Arc<Py<PyAny>>, report: ReportFn<HostWorker>) {
        let spec = HostSpec {
            launcher: Arc::clone(&self.hosts.launcher),
            init,
            stop_timeout: self.hosts.stop_timeout,
            kill_policy: self.kill_policy,
            concurrency: self.hosts.concurrency,
            inline: self.inline.clone(),
        };
        if self.core.supervisor.config().on_demand.is_some() {
            return super::on_demand::record_hosted(&self.core.supervisor, spec, report);
        }
        let on_ready = move |outcome: Result<(u64, Py<PyAny>), _>| report(outcome.map(|(id, value)| (id, Some(value))));
        self.core.supervisor.start_worker(HostWorker::start(spec), on_ready);
    }
}
