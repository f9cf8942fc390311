//! In-process workers (thread, asyncio, ray and sync modes) in an engine: each worker is a
//! host with `concurrency` lanes (see `members.rs`), values cross as Python objects.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use pyo3::prelude::*;

use super::core::{EngineCore, ReportFn};
use super::host::{lock, HostSpec, StartFailure};
use super::inline::InlineQueue;
use super::kind::StartOutcome;
use super::lane::{Group, Lane};
use super::members::Members;
use super::options::{EngineOptions, HostOptions, Mode};
use crate::error::StartError;
use crate::Supervisor;

/// An engine's in-process workers: how to start their hosts.
pub(crate) struct HostedEngine {
    pub(crate) core: EngineCore<Lane>,
    hosts: HostOptions,
    members: Members,
    /// Kill means "cancel this lane's call" (asyncio), not "give up on the host".
    cancel_on_kill: bool,
    inline: Option<Arc<InlineQueue>>,
}

impl HostedEngine {
    pub(crate) fn new(py: Python<'_>, mode: Mode, options: &EngineOptions, config: crate::Config) -> PyResult<Self> {
        let hosts = options.host_options(py, mode)?;
        let supervisor = Supervisor::<Lane>::builder()
            .config(config)
            .build()
            .map_err(|e| pyo3::exceptions::PyValueError::new_err(e.to_string()))?;
        let inline = (mode == Mode::Sync).then(|| Arc::new(InlineQueue::new()));
        // Grouping lanes only matters where a host has several.
        let members = Members::default();
        let grouped = (hosts.concurrency > 1).then(|| members.clone());
        Ok(Self {
            core: EngineCore::new(supervisor, grouped, inline.clone()),
            hosts,
            members,
            cancel_on_kill: mode == Mode::Asyncio,
            inline,
        })
    }

    /// Starts one host with its lanes, set up with `init` (the spawn arguments). A host runs
    /// in this process, so it cannot have an environment or CPUs of its own: a `placement` is
    /// refused (a Ray actor's travels in `init`, as actor options); `like` places nothing.
    pub(crate) fn start(
        &self,
        init: &Bound<'_, PyAny>,
        placement: Option<super::options::PlacementArg>,
        _like: Option<u64>,
    ) -> PyResult<impl FnOnce(ReportFn<Lane>) + '_> {
        if placement.is_some() {
            return Err(pyo3::exceptions::PyValueError::new_err(
                "env and cpus per worker need mode='process' or 'ray' (in-process workers share one environment)",
            ));
        }
        let init = Arc::new(init.clone().unbind());
        Ok(move |report| self.start_group(init, report))
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

    fn start_group(&self, init: Arc<Py<PyAny>>, report: ReportFn<Lane>) {
        let group = Arc::new(Group::new(HostSpec {
            launcher: Arc::clone(&self.hosts.launcher),
            init,
            stop_timeout: self.hosts.stop_timeout,
            cancel_on_kill: self.cancel_on_kill,
            inline: self.inline.clone(),
        }));
        let report = Arc::new(StartReport(Mutex::new(Some(report))));
        // Group id = first lane id; ids are handed out in order, so it is known before starting.
        let group_id = Arc::new(AtomicU64::new(u64::MAX));
        for lane in 0..self.hosts.concurrency {
            let (report, gid, members) = (Arc::clone(&report), Arc::clone(&group_id), self.members.clone());
            let on_ready = move |outcome: StartOutcome<Lane>| {
                // `start_group` holds this lock until the group id is known.
                let group = {
                    let _ids = members.lock();
                    gid.load(Ordering::Acquire)
                };
                report.deliver(group, outcome);
            };
            // Register the mapping before the lane can possibly report or serve. A worker of one
            // lane is not recorded: its lane id is its id.
            let mut ids = self.members.lock();
            let id = self.core.supervisor.start_worker(Lane::start(Arc::clone(&group)), on_ready);
            if lane == 0 {
                group_id.store(id, Ordering::Release);
            }
            if self.hosts.concurrency > 1 {
                ids.insert(id, group_id.load(Ordering::Acquire));
            }
        }
    }
}

/// Forwards the one decisive outcome of a group's start (the lane that ran the setup, or a
/// shutdown) to Python; the other lanes' outcomes are dropped.
struct StartReport(Mutex<Option<ReportFn<Lane>>>);

impl StartReport {
    fn deliver(&self, group_id: u64, outcome: StartOutcome<Lane>) {
        let decisive = match &outcome {
            Ok((_, value)) => value.is_some(),
            Err(StartError::Failed(StartFailure::NotStarted)) => false,
            Err(_) => true,
        };
        if decisive {
            if let Some(report) = lock(&self.0).take() {
                report(outcome.map(|(_, v)| (group_id, v)));
            }
        }
    }
}
