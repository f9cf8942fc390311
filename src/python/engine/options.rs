//! [`EngineOptions`]: every option of an engine, read from the one dict `SPool` passes, and
//! turned here into the supervisor's [`Config`] and the worker kind's settings. A new pool
//! option is a field here, the `Config` field it sets, and its parameter in `SPool`.

use std::collections::HashMap;
use std::ffi::OsString;
use std::time::Duration;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::job::{Sticky, TaskOptions};
use crate::process::{Placement, ProcessSpec, StartMethod, Zygote, DEFAULT_MAX_MESSAGE_SIZE};
use crate::python::common::{parse_restart, seconds};
use crate::{Coalesce, Config};

/// Calls in flight per asyncio worker when `max_concurrency` is not given (Ray: 1).
const DEFAULT_MAX_CONCURRENCY: usize = 32;

/// Where an engine's workers run: the `mode` of `SPool`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Mode {
    /// A child process per worker.
    Process,
    /// A thread of this process per worker.
    Thread,
    /// An event loop thread per worker, several calls in flight on it.
    Asyncio,
    /// A Ray actor per worker, driven from a thread of this process.
    Ray,
    /// An instance run inline by the threads that call the pool.
    Sync,
}

impl Mode {
    const ALL: [(&'static str, Mode); 5] = [
        ("process", Mode::Process),
        ("thread", Mode::Thread),
        ("asyncio", Mode::Asyncio),
        ("ray", Mode::Ray),
        ("sync", Mode::Sync),
    ];

    pub(crate) fn parse(name: &str) -> PyResult<Self> {
        Self::ALL.iter().find(|(n, _)| *n == name).map(|(_, mode)| *mode).ok_or_else(|| {
            let names: Vec<String> = Self::ALL.iter().map(|(n, _)| format!("{n:?}")).collect();
            PyValueError::new_err(format!("mode must be one of {}, got {name:?}", names.join(", ")))
        })
    }

    pub(crate) fn as_str(self) -> &'static str {
        Self::ALL.iter().find(|(_, m)| *m == self).map_or("?", |(n, _)| n)
    }
}

/// Declares [`EngineOptions`] and, from the same field list, `EngineOptions::KEYS` (the keys
/// the dict may hold), so that a key no field reads is refused instead of silently dropped.
macro_rules! engine_options {
    ($($(#[$attr:meta])* $field:ident: $ty:ty,)*) => {
        /// The options of one engine, as `SPool` passes them (missing keys take these defaults).
        #[derive(FromPyObject)]
        #[pyo3(from_item_all)]
        pub(crate) struct EngineOptions {
            $($(#[$attr])* $field: $ty,)*
        }

        impl EngineOptions {
            /// Every key the options dict may hold: one per field.
            const KEYS: &'static [&'static str] = &[$(stringify!($field)),*];
        }
    };
}

engine_options! {
    /// Where the workers run.
    mode: String,
    #[pyo3(default)]
    queue_size: Option<usize>,
    #[pyo3(default)]
    max_in_flight: Option<usize>,
    #[pyo3(default)]
    task_timeout: Option<f64>,
    #[pyo3(default = "on-failure".to_owned())]
    restart: String,
    #[pyo3(default = 5)]
    max_restarts: u32,
    #[pyo3(default = 60.0)]
    restart_window: f64,
    #[pyo3(default)]
    max_tasks_per_worker: Option<u64>,
    #[pyo3(default)]
    max_memory_per_worker: Option<u64>,
    #[pyo3(default = 5.0)]
    stop_timeout: f64,
    #[pyo3(default = "round_robin".to_owned())]
    load_balancing: String,
    #[pyo3(default)]
    crash_retries: u32,
    /// Process mode: the interpreter, its arguments, environment and working directory.
    #[pyo3(default)]
    program: Option<String>,
    #[pyo3(default)]
    args: Vec<String>,
    #[pyo3(default)]
    env: Vec<(String, String)>,
    #[pyo3(default)]
    cwd: Option<String>,
    #[pyo3(default)]
    shm_capacity: Option<usize>,
    #[pyo3(default = DEFAULT_MAX_MESSAGE_SIZE)]
    max_message_size: usize,
    /// In-process modes: `launcher(channel, init)` starts one host (see `stateful_pool.modes`).
    #[pyo3(default)]
    launcher: Option<Py<PyAny>>,
    #[pyo3(default)]
    max_concurrency: Option<usize>,
    /// A fresh worker per call, at most this many at once (process, thread and ray modes).
    #[pyo3(default)]
    on_demand: Option<usize>,
    /// Process mode: a task tree's namespace, served to the workers as upcalls.
    #[pyo3(default)]
    namespace: Option<Py<crate::python::namespace::CoreNamespace>>,
    /// Process mode: the template process's `(program, args)` to fork workers from (`None`: a
    /// fresh interpreter per worker).
    #[pyo3(default)]
    zygote: Option<(String, Vec<String>)>,
    /// Process mode: the zygote is shared by this process's pools and outlives them (see
    /// `Zygote::shared`).
    #[pyo3(default)]
    zygote_shared: bool,
    /// The worker class's batched methods: `(name, max_size, max_wait)` each.
    #[pyo3(default)]
    coalesce: Vec<(String, usize, f64)>,
    /// Seconds between health checks of each idle worker (`None`: none).
    #[pyo3(default)]
    health_interval: Option<f64>,
    /// Seconds one health check may run before its worker counts as hung.
    #[pyo3(default = 10.0)]
    health_timeout: f64,
    /// The check: a call payload (as `Engine.call` takes) and the reply meaning healthy (the
    /// encoded `True` in process mode, `True` itself in the others).
    #[pyo3(default)]
    health_call: Option<(Py<PyAny>, Py<PyAny>)>,
}

impl EngineOptions {
    /// Reads the options dict, refusing a key that no option reads (a misspelt or unknown
    /// option would otherwise be ignored without a word).
    pub(crate) fn from_dict(options: &Bound<'_, PyAny>) -> PyResult<Self> {
        let dict = options.cast::<PyDict>()?;
        let mut unknown: Vec<String> = Vec::new();
        for key in dict.keys() {
            let key: String = key.extract()?;
            if !Self::KEYS.contains(&key.as_str()) {
                unknown.push(format!("{key:?}"));
            }
        }
        if !unknown.is_empty() {
            unknown.sort();
            return Err(PyValueError::new_err(format!("unknown engine option(s): {}", unknown.join(", "))));
        }
        options.extract()
    }
}

/// A pool's health check, before it is turned into the worker kind's task and verdict.
pub(crate) struct HealthOptions<'a> {
    pub(crate) payload: &'a Py<PyAny>,
    pub(crate) healthy_reply: &'a Py<PyAny>,
    pub(crate) interval: Duration,
    pub(crate) timeout: Duration,
}

/// How the in-process hosts of an engine are started.
pub(crate) struct HostOptions {
    pub(crate) launcher: std::sync::Arc<Py<PyAny>>,
    /// Calls one host takes at once (its worker's `Workable::concurrency`).
    pub(crate) concurrency: usize,
    pub(crate) stop_timeout: Duration,
}

impl EngineOptions {
    /// How calls to each batched method are gathered, by method name (see `sched/gather.rs`).
    /// Sync and Ray modes gather nothing: each call runs alone, as a batch of one (a sync call
    /// returns with its outcome in, so there is never a second one queued to gather).
    pub(crate) fn coalesce(&self, mode: Mode) -> PyResult<HashMap<String, Coalesce>> {
        if matches!(mode, Mode::Ray | Mode::Sync) {
            return Ok(HashMap::new());
        }
        let mut specs = HashMap::new();
        for (key, (name, max_size, max_wait)) in (0u32..).zip(&self.coalesce) {
            if *max_size == 0 {
                return Err(PyValueError::new_err(format!("batched method {name}(): max_size must be at least 1")));
            }
            let max_wait = seconds("max_wait", Some(*max_wait))?.unwrap_or_default();
            specs.insert(name.clone(), Coalesce { key, max_size: *max_size, max_wait });
        }
        Ok(specs)
    }

    /// The mode the options ask for.
    pub(crate) fn mode(&self) -> PyResult<Mode> {
        Mode::parse(&self.mode)
    }

    /// The supervisor's configuration, after checking the options `mode` cannot honour.
    pub(crate) fn config(&self, mode: Mode) -> PyResult<Config> {
        if self.max_memory_per_worker.is_some() && mode != Mode::Process {
            return Err(PyValueError::new_err(format!(
                "max_memory_per_worker needs mode='process' (a {} worker has no memory of its own)",
                mode.as_str()
            )));
        }
        if self.health_interval.is_some() && mode == Mode::Sync {
            return Err(PyValueError::new_err(
                "health_interval needs workers that run on their own (sync workers run only while called)",
            ));
        }
        if self.max_concurrency.is_some() && !matches!(mode, Mode::Asyncio | Mode::Ray) {
            return Err(PyValueError::new_err("max_concurrency needs mode='asyncio' or mode='ray'"));
        }
        if self.on_demand.is_some() && matches!(mode, Mode::Sync | Mode::Asyncio) {
            let mode = mode.as_str();
            return Err(PyValueError::new_err(format!(
                "on_demand needs mode 'process', 'thread' or 'ray', not {mode:?}"
            )));
        }
        Ok(Config {
            queue_capacity: self.queue_size,
            max_in_flight: self.max_in_flight,
            // One thread: the serve loops' short reply spins measured faster serialised there
            // than spread over two threads competing with the workers for 2 cores.
            runtime_threads: 1,
            thread_name: "stateful-pool".to_owned(),
            task_timeout: seconds("task_timeout", self.task_timeout)?,
            restart_policy: parse_restart(&self.restart)?,
            max_restarts: self.max_restarts,
            restart_window: seconds("restart_window", Some(self.restart_window))?.unwrap_or_default(),
            max_tasks_per_worker: self.max_tasks_per_worker,
            max_memory_per_worker: self.max_memory_per_worker,
            crash_retries: self.crash_retries,
            on_demand: self.on_demand,
            load_balancing: self
                .load_balancing
                .parse()
                .map_err(|e: crate::UnknownBalancer| PyValueError::new_err(e.to_string()))?,
        })
    }

    /// The health check, when the pool asks for one.
    pub(crate) fn health(&self) -> PyResult<Option<HealthOptions<'_>>> {
        let (Some(interval), Some((payload, healthy_reply))) = (self.health_interval, &self.health_call) else {
            return Ok(None);
        };
        Ok(Some(HealthOptions {
            payload,
            healthy_reply,
            interval: seconds("health_interval", Some(interval))?.unwrap_or_default(),
            timeout: seconds("health_timeout", Some(self.health_timeout))?.unwrap_or_default(),
        }))
    }

    fn stop_timeout(&self) -> PyResult<Duration> {
        Ok(seconds("stop_timeout", Some(self.stop_timeout))?.unwrap_or_default())
    }

    /// How process workers are started.
    pub(crate) fn process_spec(&self) -> PyResult<ProcessSpec> {
        let program = self.program.clone().ok_or_else(|| PyValueError::new_err("mode='process' needs a program"))?;
        if let Some(capacity) = self.shm_capacity {
            crate::shm::ring_capacity(capacity).map_err(|e| PyValueError::new_err(e.to_string()))?;
        }
        if self.max_message_size == 0 {
            return Err(PyValueError::new_err("max_message_size must be at least 1 byte"));
        }
        let mut spec = ProcessSpec::new(program, self.args.clone());
        spec.env = self.env.iter().map(|(k, v)| (OsString::from(k), OsString::from(v))).collect();
        spec.cwd = self.cwd.clone().map(Into::into);
        spec.stop_timeout = self.stop_timeout()?;
        spec.shm_capacity = self.shm_capacity;
        spec.max_message_size = self.max_message_size;
        // The workers reach the namespace with upcalls (see `process::upcall`).
        spec.upcalls = self.namespace.as_ref().map(|ns| ns.get().upcalls());
        if let Some((program, args)) = &self.zygote {
            let zygote = if self.zygote_shared {
                Zygote::shared(program, args.clone(), spec.env.clone(), spec.cwd.clone())
                    .map_err(|e| PyValueError::new_err(format!("cannot start the shared zygotes' thread: {e}")))?
            } else {
                std::sync::Arc::new(Zygote::new(program, args.clone()))
            };
            spec.start_method = StartMethod::Zygote(zygote);
        }
        Ok(spec)
    }

    /// How in-process hosts are started in `mode`.
    pub(crate) fn host_options(&self, py: Python<'_>, mode: Mode) -> PyResult<HostOptions> {
        let launcher = self.launcher.as_ref().ok_or_else(|| {
            PyValueError::new_err(format!("mode={:?} needs a launcher (see stateful_pool.modes)", mode.as_str()))
        })?;
        let concurrency = match (mode, self.max_concurrency) {
            (_, Some(0)) => return Err(PyValueError::new_err("max_concurrency must be at least 1, got 0")),
            (Mode::Asyncio, None) => DEFAULT_MAX_CONCURRENCY,
            // A Ray actor runs one call at a time whatever is queued at it: pipelining is opt-in,
            // since calls queued at a busy actor cannot go to an idle one.
            (Mode::Ray, None) => 1,
            // `config` refused max_concurrency in every other mode.
            (_, n) => n.unwrap_or(1),
        };
        Ok(HostOptions {
            launcher: std::sync::Arc::new(launcher.clone_ref(py)),
            concurrency,
            stop_timeout: self.stop_timeout()?,
        })
    }
}

/// One call's options as `SPool.options` sets them (`timeout`, `submit_timeout`, `priority`,
/// `key`, `sticky`), checked and converted once per pool or view, not on every call. A key is
/// any hashable object: its `hash()` places it (equal keys share a worker).
#[pyclass(module = "stateful_pool._core", frozen)]
#[derive(Default)]
pub(crate) struct CallOptions {
    /// The core's options for each call (`coalesce` and `pipelined` are set per call).
    pub(crate) task: TaskOptions,
    /// Seconds a call may wait on a full queue; `None`: for as long as it takes.
    pub(crate) submit_timeout: Option<f64>,
}

#[pymethods]
impl CallOptions {
    #[new]
    #[pyo3(signature = (timeout=None, submit_timeout=None, priority=0, key=None, sticky="wait"))]
    fn new(
        timeout: Option<f64>,
        submit_timeout: Option<f64>,
        priority: i32,
        key: Option<&Bound<'_, PyAny>>,
        sticky: &str,
    ) -> PyResult<Self> {
        let sticky = sticky.parse::<Sticky>().map_err(|e| PyValueError::new_err(e.to_string()))?;
        let key = key.map(|k| k.hash().map(|h| u64::from_ne_bytes(h.to_ne_bytes()))).transpose()?;
        crate::python::wait::deadline(submit_timeout)?; // checked now, not at the first call
        let task =
            TaskOptions { timeout: seconds("timeout", timeout)?, priority, key, sticky, ..TaskOptions::default() };
        Ok(Self { task, submit_timeout })
    }
}

/// One worker's placement as `SPool` passes it to `spawn`: `(env, cpus)`, the environment as
/// `(name, value)` pairs.
#[derive(FromPyObject)]
pub(crate) struct PlacementArg(Vec<(String, String)>, Vec<usize>);

impl PlacementArg {
    /// The placement, its CPUs checked against what the kernel's mask can hold.
    pub(crate) fn placement(self) -> PyResult<Placement> {
        let placement = Placement {
            env: self.0.into_iter().map(|(k, v)| (OsString::from(k), OsString::from(v))).collect(),
            cpus: self.1,
        };
        placement.cpu_set().map_err(|e| PyValueError::new_err(e.to_string()))?;
        Ok(placement)
    }
}
