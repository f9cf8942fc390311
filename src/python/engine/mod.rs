//! [`Engine`]: the one engine behind every `SPool`, whatever its mode.
//!
//! The supervisor is generic over its worker kind and a pyclass cannot be, so the engine holds
//! a private enum over the kinds (crossbeam's "flavors"): process workers, or in-process
//! hosts (thread, asyncio, ray, sync). What every kind does alike lives once in
//! [`core::EngineCore`]; a kind adds how its payloads cross ([`kind::Kind`]) and how its
//! workers start. Files: `options` (the pool's options), `core` (the shared engine), `slot`
//! (reply slots and tickets), `process` and `direct` (process workers and their direct
//! lane), `hosted`, `host_worker`, `host`, `channel` (in-process hosts, one worker each, running
//! up to `max_concurrency` calls at once), `inline` (sync mode's caller-run work), `on_demand` (a fresh worker per call).

mod channel;
mod core;
mod direct;
mod host;
mod host_worker;
mod hosted;
mod inline;
mod kind;
mod on_demand;
mod options;
mod process;
mod slot;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use self::hosted::HostedEngine;
use self::kind::PyReply;
pub(crate) use self::options::CallOptions;
use self::options::{EngineOptions, Mode, PlacementArg};
use self::process::ProcessEngine;
pub(crate) use self::slot::CoreTicket;
use crate::job::TaskOptions;
use crate::{Coalesce, COALESCE_SIZE_BUCKETS};
use std::collections::HashMap;

/// The worker kinds an engine can run.
enum Flavor {
    Process(ProcessEngine),
    Hosted(HostedEngine),
}

/// Runs `$body` with `$kind` bound to the flavor's engine; each has a `core`
/// ([`core::EngineCore`]), `task(py, payload)` and `start(init)`.
macro_rules! with_kind {
    ($engine:expr, $kind:ident => $body:expr) => {
        match &$engine.flavor {
            Flavor::Process($kind) => $body,
            Flavor::Hosted($kind) => $body,
        }
    };
}

/// Runs `$body` with `$core` bound to the flavor's [`core::EngineCore`].
macro_rules! with_core {
    ($engine:expr, $core:ident => $body:expr) => {
        with_kind!($engine, kind => {
            let $core = &kind.core;
            $body
        })
    };
}

/// The supervisor of one `SPool` and its workers, in any mode.
#[pyclass(module = "stateful_pool._core", frozen)]
pub(crate) struct Engine {
    mode: Mode,
    flavor: Flavor,
    /// How calls to each batched method are gathered (see `sched/gather.rs`).
    coalesce: HashMap<String, Coalesce>,
}

#[pymethods]
impl Engine {
    /// An engine for the pool `options` (a dict, see `options.rs`): its `mode` ("process",
    /// "thread", "asyncio", "ray" or "sync"), the pool's options, and the worker program
    /// (process) or the host `launcher` (the other modes).
    #[new]
    fn new(py: Python<'_>, options: &Bound<'_, PyAny>) -> PyResult<Self> {
        let options = EngineOptions::from_dict(options)?;
        let mode = options.mode()?;
        let config = options.config(mode)?;
        let coalesce = options.coalesce(mode)?;
        let flavor = match mode {
            Mode::Process => Flavor::Process(ProcessEngine::new(&options, config)?),
            _ => Flavor::Hosted(HostedEngine::new(py, mode, &options, config)?),
        };
        let engine = Self { mode, flavor, coalesce };
        if let Some(health) = options.health()? {
            with_kind!(engine, kind => kind.check_health(py, &health)?);
        }
        Ok(engine)
    }

    /// The mode the engine runs its workers in.
    #[getter]
    fn mode(&self) -> &'static str {
        self.mode.as_str()
    }

    /// Whether callers run the workers' code themselves (sync mode): every call and submit
    /// returns with its outcome in.
    #[getter]
    fn inline(&self) -> bool {
        with_core!(self, core => core.is_inline())
    }

    /// Starts a worker and waits for its setup: `(status, value)`. `init` is the pickled
    /// setup (process mode) or `(args, kwargs)`; `placement`, `(env pairs, cpus)`, gives the
    /// worker an environment and CPUs of its own (process mode); `like`, a worker id, places
    /// it as that worker is (a replacement).
    #[pyo3(signature = (init, placement=None, like=None))]
    fn spawn<'py>(
        &self,
        py: Python<'py>,
        init: &Bound<'py, PyAny>,
        placement: Option<PlacementArg>,
        like: Option<u64>,
    ) -> PyResult<PyReply<'py>> {
        with_kind!(self, kind => kind.core.spawn(py, kind.start(init, placement, like)?))
    }

    /// Starts a worker; its outcome arrives through `take_completions` under `token`.
    #[pyo3(signature = (init, token, placement=None))]
    fn submit_spawn(
        &self,
        py: Python<'_>,
        init: &Bound<'_, PyAny>,
        token: u64,
        placement: Option<PlacementArg>,
    ) -> PyResult<()> {
        with_kind!(self, kind => kind.core.submit_spawn(py, token, kind.start(init, placement, None)?))
    }

    /// Runs one call and waits for it: `(status, value)`. `payload` is the list of buffers of
    /// an encoded call (process mode) or `(method, args, kwargs)`; `options` are those of
    /// `SPool.options` (default: none); `method` names the method called, so calls to a batched
    /// one are gathered into coalesced calls.
    #[pyo3(signature = (payload, options=None, method=None))]
    fn call<'py>(
        &self,
        py: Python<'py>,
        payload: &Bound<'py, PyAny>,
        options: Option<&Bound<'py, CallOptions>>,
        method: Option<&str>,
    ) -> PyResult<PyReply<'py>> {
        let (task, submit_timeout) = self.options(options, method);
        // The direct lanes take any idle worker: not for a keyed call, nor for a call to a
        // batched method (it waits in the queue to be gathered), nor for one with its own
        // timeout (the serve loop enforces it).
        if task.key.is_none() && task.coalesce.is_none() && task.timeout.is_none() {
            let direct = match &self.flavor {
                Flavor::Process(process) if process.direct => process.call_direct(py, payload),
                Flavor::Hosted(hosted) if hosted.direct => hosted.call_direct(py, payload),
                _ => None,
            };
            if let Some(reply) = direct {
                return reply;
            }
        }
        with_kind!(self, kind => kind.core.call(py, kind.task(py, payload)?, task, submit_timeout))
    }

    /// Queues one call; its outcome arrives through `take_completions` under `token` (the rest
    /// as for `call`). `pipelined`: the call is one of a `map`'s chunks (see
    /// [`TaskOptions::pipelined`]).
    #[pyo3(signature = (payload, token, options=None, method=None, pipelined=false))]
    fn submit(
        &self,
        py: Python<'_>,
        payload: &Bound<'_, PyAny>,
        token: u64,
        options: Option<&Bound<'_, CallOptions>>,
        method: Option<&str>,
        pipelined: bool,
    ) -> PyResult<CoreTicket> {
        let (task, submit_timeout) = self.options(options, method);
        let task = TaskOptions { pipelined, ..task };
        with_kind!(self, kind => kind.core.submit(py, kind.task(py, payload)?, token, task, submit_timeout))
    }

    /// How many coalesced calls were made: `{"calls", "tasks", "max_size", "histogram"}`, the
    /// histogram a list of `(largest size in the bucket or None for the last, calls)`.
    fn coalesced<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let stats = with_core!(self, core => core.supervisor.coalesce_stats());
        let d = PyDict::new(py);
        d.set_item("calls", stats.calls)?;
        d.set_item("tasks", stats.tasks)?;
        d.set_item("max_size", stats.max_size)?;
        let bounds = COALESCE_SIZE_BUCKETS.iter().map(|&b| Some(b)).chain([None]);
        d.set_item("histogram", bounds.zip(stats.histogram).collect::<Vec<_>>())?;
        Ok(d)
    }

    /// Runs one call on every live worker: a list of `(worker_id, status, value)`.
    fn broadcast<'py>(
        &self,
        py: Python<'py>,
        payload: &Bound<'py, PyAny>,
    ) -> PyResult<Vec<(u64, u8, Bound<'py, PyAny>)>> {
        with_kind!(self, kind => kind.core.broadcast(py, &kind.task(py, payload)?))
    }

    /// Waits up to `timeout` seconds for finished tasks and starts; returns up to `max_items`
    /// `(token, status, value)` tuples (an empty list on timeout).
    #[pyo3(signature = (timeout, max_items=4096))]
    fn take_completions<'py>(
        &self,
        py: Python<'py>,
        timeout: f64,
        max_items: usize,
    ) -> PyResult<Vec<(u64, u8, Bound<'py, PyAny>)>> {
        with_core!(self, core => core.take_completions(py, timeout, max_items))
    }

    /// Starts shutting down: `mode` is "graceful", "cancel" or "kill". Returns at once.
    fn shutdown(&self, mode: &str) -> PyResult<()> {
        with_core!(self, core => core.shutdown(mode))
    }

    /// Waits up to `timeout` seconds (interruptibly) for every worker to stop.
    fn wait_stopped(&self, py: Python<'_>, timeout: f64) -> PyResult<bool> {
        with_core!(self, core => core.wait_stopped(py, timeout))
    }

    /// Ends the supervisor's threads after the pool has stopped; returns whether it had.
    fn release(&self, py: Python<'_>) -> bool {
        with_core!(self, core => py.detach(|| core.supervisor.release()))
    }

    /// Whether shutdown was requested.
    #[getter]
    fn is_shutdown(&self) -> bool {
        with_core!(self, core => core.supervisor.is_shutdown())
    }

    /// Keyed calls that ran on their key's worker, and those that spilled: `(hits, misses)`.
    #[getter]
    fn sticky(&self) -> (u64, u64) {
        with_core!(self, core => core.supervisor.sticky_counts())
    }

    /// Tasks waiting in the queue.
    #[getter]
    fn queued(&self) -> usize {
        with_core!(self, core => core.supervisor.queued())
    }

    /// Asks one worker to leave after its current task; returns whether it was live.
    fn retire_worker(&self, worker_id: u64) -> bool {
        with_core!(self, core => core.retire_worker(worker_id))
    }

    /// How long completed tasks ran: `(bucket upper bounds in seconds, tasks per bucket with
    /// one more past the bounds, sum of the run times in seconds)`.
    fn run_times(&self) -> (Vec<f64>, Vec<u64>, f64) {
        let histogram = with_core!(self, core => core.supervisor.run_times());
        (crate::RUN_TIME_BOUNDS.to_vec(), histogram.counts, histogram.sum_seconds)
    }

    /// Tasks handed to workers so far.
    #[getter]
    fn dispatched(&self) -> u64 {
        with_core!(self, core => core.supervisor.dispatched())
    }

    /// The load balancer's canonical name.
    #[getter]
    fn load_balancing(&self) -> &'static str {
        with_core!(self, core => core.supervisor.load_balancing().as_str())
    }

    /// Ids of workers starting or serving.
    fn live_worker_ids(&self) -> Vec<u64> {
        with_core!(self, core => core.live_worker_ids())
    }

    /// One dict per worker: id, state, pid, restarts, tasks_done, tasks_failed, last_error,
    /// dispatched, batches, batched_tasks.
    fn workers<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        with_core!(self, core => core.workers(py))
    }
}

impl Engine {
    /// A call's core options and `submit_timeout`: `options` (default: none), gathered with
    /// others if `method` is batched.
    fn options(&self, options: Option<&Bound<'_, CallOptions>>, method: Option<&str>) -> (TaskOptions, Option<f64>) {
        let (task, submit_timeout) = options.map_or((TaskOptions::default(), None), |o| {
            let o = o.get();
            (o.task, o.submit_timeout)
        });
        // Most pools batch no method: skip hashing the name.
        let coalesce = match self.coalesce.is_empty() {
            true => None,
            false => method.and_then(|m| self.coalesce.get(m)).copied(),
        };
        (TaskOptions { coalesce, ..task }, submit_timeout)
    }
}
