//! Supervisor configuration and its builder.

use std::sync::Arc;
use std::time::Duration;

use crate::error::BuildError;
use crate::pool::supervisor::Supervisor;
use crate::sched::balance::LoadBalancing;
use crate::worker::restart::RestartPolicy;
use crate::worker::workable::Workable;

/// Settings of one pool; build it with [`SupervisorBuilder`].
#[derive(Clone, Debug)]
pub struct Config {
    /// How many tasks may wait in the queue (`None`: no bound). Running tasks do not count.
    pub queue_capacity: Option<usize>,
    /// How many submitted tasks may be unanswered at once, queued or running (`None`: no
    /// bound). A submission beyond it waits (or fails) as one to a full queue does, until a
    /// task is answered; broadcasts and direct calls do not count. concurry's
    /// `max_queued_tasks` backpressure.
    pub max_in_flight: Option<usize>,
    /// Threads of the supervisor's tokio runtime.
    pub runtime_threads: usize,
    /// The name of those threads (as `top -H` and debuggers show it).
    pub thread_name: String,
    /// Default deadline of a task (`None`: no deadline).
    pub task_timeout: Option<Duration>,
    /// When a worker that died is restarted. A worker that a task crashed (whatever its exit
    /// code) comes back under any policy but [`RestartPolicy::Never`]; the clean-exit rule of
    /// [`RestartPolicy::OnFailure`] applies only to exits while no task runs.
    pub restart_policy: RestartPolicy,
    /// A worker that fails without serving (its setup crashes, or it dies while idle) more than
    /// this many times within [`Config::restart_window`] gives up (see [`crate::RestartPacer`]).
    /// Crashes during a task never count: they consumed their task, so bad input cannot use
    /// the restarts up.
    pub max_restarts: u32,
    /// The window of [`Config::max_restarts`].
    pub restart_window: Duration,
    /// Replace a worker after it has run this many tasks. A kind with successors
    /// ([`crate::Workable::successor`], e.g. process workers) starts the replacement then and
    /// keeps serving until it is ready; one worker of the pool renews at a time.
    pub max_tasks_per_worker: Option<u64>,
    /// Replace a worker, between tasks, once its resident memory exceeds this many bytes (as
    /// [`Config::max_tasks_per_worker`] does).
    pub max_memory_per_worker: Option<u64>,
    /// Which idle worker gets the next task.
    pub load_balancing: LoadBalancing,
    /// How many times a task whose worker crashed under it is run again on another worker
    /// (0, the default: its caller gets `WorkerCrashed`). Needs [`crate::Workable::clone_task`].
    pub crash_retries: u32,
    /// On-demand mode, capped at this many live workers (`None`: workers are added by hand).
    /// No worker runs while nothing is queued: each queued task that finds no idle worker gets
    /// a fresh one from the pool's worker factory ([`crate::Supervisor::set_worker_factory`]),
    /// tasks beyond the cap wait for a worker to end, and every worker retires after its one
    /// task ([`Config::max_tasks_per_worker`] is 1: `None` is taken as 1, others are refused). A worker that fails is not
    /// restarted: its task fails, or runs again on a fresh worker as
    /// [`Config::crash_retries`] allows. Set it with [`SupervisorBuilder::on_demand`].
    pub on_demand: Option<usize>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            queue_capacity: None,
            max_in_flight: None,
            runtime_threads: 1,
            thread_name: "worker-pool".to_owned(),
            task_timeout: None,
            restart_policy: RestartPolicy::OnFailure,
            max_restarts: 5,
            restart_window: Duration::from_secs(60),
            max_tasks_per_worker: None,
            max_memory_per_worker: None,
            load_balancing: LoadBalancing::RoundRobin,
            crash_retries: 0,
            on_demand: None,
        }
    }
}

/// A worker process that ended, handed to the [`SupervisorBuilder::on_worker_exit`] hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WorkerExit {
    /// The worker's id (it keeps its id across restarts).
    pub worker_id: u64,
    /// The process that ended; `None` when the worker has no process, or the process never
    /// finished its setup (the supervisor never learnt its pid).
    pub pid: Option<u32>,
}

/// The callback of [`SupervisorBuilder::on_worker_exit`].
pub(crate) type WorkerExitHook = Arc<dyn Fn(WorkerExit) + Send + Sync>;

/// Builds a [`Supervisor`], checking the configuration first.
///
/// ```
/// use worker_pool::{Response, Supervisor, Workable};
/// struct Doubler;
/// impl Workable for Doubler {
///     type Task = u64;
///     type Output = u64;
///     type Error = String;
///     async fn process(&mut self, task: u64) -> Response<Self> {
///         Response::Complete(Ok(task * 2))
///     }
/// }
/// let pool = Supervisor::<Doubler>::builder().queue_capacity(100).build().unwrap();
/// pool.add_worker(Doubler);
/// assert_eq!(pool.try_submit(21).unwrap().wait().unwrap(), 42);
/// ```
#[derive(Clone, Default)]
pub struct SupervisorBuilder {
    config: Config,
    on_worker_exit: Option<WorkerExitHook>,
}

impl std::fmt::Debug for SupervisorBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SupervisorBuilder")
            .field("config", &self.config)
            .field("on_worker_exit", &self.on_worker_exit.is_some())
            .finish()
    }
}

impl SupervisorBuilder {
    /// A builder with the default configuration.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Bounds the task queue (must be at least 1).
    #[must_use]
    pub fn queue_capacity(mut self, capacity: usize) -> Self {
        self.config.queue_capacity = Some(capacity);
        self
    }

    /// Bounds the submitted tasks not answered yet (must be at least 1; see
    /// [`Config::max_in_flight`]).
    #[must_use]
    pub fn max_in_flight(mut self, max: usize) -> Self {
        self.config.max_in_flight = Some(max);
        self
    }

    /// Sets the number of runtime threads (must be at least 1).
    #[must_use]
    pub fn runtime_threads(mut self, threads: usize) -> Self {
        self.config.runtime_threads = threads;
        self
    }

    /// Names the runtime's threads.
    #[must_use]
    pub fn thread_name(mut self, name: impl Into<String>) -> Self {
        self.config.thread_name = name.into();
        self
    }

    /// Sets the default task deadline.
    #[must_use]
    pub fn task_timeout(mut self, timeout: Duration) -> Self {
        self.config.task_timeout = Some(timeout);
        self
    }

    /// Sets the restart policy.
    #[must_use]
    pub fn restart_policy(mut self, policy: RestartPolicy) -> Self {
        self.config.restart_policy = policy;
        self
    }

    /// Lets a worker that keeps failing without serving (setup or idle crashes) restart
    /// `max_restarts` times within `window`, with backoff, before it gives up; crashes during
    /// a task do not count.
    #[must_use]
    pub fn restart_intensity(mut self, max_restarts: u32, window: Duration) -> Self {
        self.config.max_restarts = max_restarts;
        self.config.restart_window = window;
        self
    }

    /// Replaces a worker after `tasks` tasks (must be at least 1).
    #[must_use]
    pub fn max_tasks_per_worker(mut self, tasks: u64) -> Self {
        self.config.max_tasks_per_worker = Some(tasks);
        self
    }

    /// Replaces a worker whose resident memory exceeds `bytes`.
    #[must_use]
    pub fn max_memory_per_worker(mut self, bytes: u64) -> Self {
        self.config.max_memory_per_worker = Some(bytes);
        self
    }

    /// Sets the load balancer.
    #[must_use]
    pub fn load_balancing(mut self, balancing: LoadBalancing) -> Self {
        self.config.load_balancing = balancing;
        self
    }

    /// Runs a task again, up to `retries` times, when its worker crashes under it.
    #[must_use]
    pub fn crash_retries(mut self, retries: u32) -> Self {
        self.config.crash_retries = retries;
        self
    }

    /// Runs the pool on demand (see [`Config::on_demand`]): a fresh worker per task from the
    /// factory given to [`crate::Supervisor::set_worker_factory`], at most `max_workers` (at
    /// least 1) live at once, each retired after its task.
    #[must_use]
    pub fn on_demand(mut self, max_workers: usize) -> Self {
        self.config.on_demand = Some(max_workers);
        self
    }

    /// Calls `hook` once for every worker process that ended, whatever the reason: a crash, a
    /// task timeout or kill, recycling, retirement, shutdown, giving up, or a setup (first
    /// start or restart) that failed. It runs on the supervisor's runtime after the process is
    /// known to be dead (killed and reaped) and before its replacement starts, so whatever the
    /// process held (e.g. rate-limit permits) can be given back before a new one asks; the
    /// exception is recycling with a successor ([`crate::Workable::successor`]), which starts
    /// while the old process still serves: that one is reported once it is dead. It must
    /// return quickly and not block; a panic in it is caught and ignored.
    #[must_use]
    pub fn on_worker_exit(mut self, hook: impl Fn(WorkerExit) + Send + Sync + 'static) -> Self {
        self.on_worker_exit = Some(Arc::new(hook));
        self
    }

    /// Replaces the whole configuration.
    #[must_use]
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// Checks the configuration and starts the supervisor's runtime.
    ///
    /// # Errors
    /// [`BuildError`] for an out-of-range option or a runtime that cannot start.
    pub fn build<W: Workable>(self) -> Result<Supervisor<W>, BuildError> {
        let mut config = self.config;
        if config.on_demand.is_some() {
            // Each on-demand worker runs one task.
            config.max_tasks_per_worker.get_or_insert(1);
        }
        let c = &config;
        if c.queue_capacity == Some(0) {
            return Err(BuildError::InvalidOption { option: "queue_capacity", expected: "at least 1" });
        }
        if c.max_in_flight == Some(0) {
            return Err(BuildError::InvalidOption { option: "max_in_flight", expected: "at least 1" });
        }
        if c.runtime_threads == 0 {
            return Err(BuildError::InvalidOption { option: "runtime_threads", expected: "at least 1" });
        }
        if c.max_tasks_per_worker == Some(0) {
            return Err(BuildError::InvalidOption { option: "max_tasks_per_worker", expected: "at least 1" });
        }
        if c.on_demand == Some(0) {
            return Err(BuildError::InvalidOption { option: "on_demand", expected: "at least 1 worker" });
        }
        if c.on_demand.is_some() && c.max_tasks_per_worker != Some(1) {
            return Err(BuildError::InvalidOption {
                option: "max_tasks_per_worker",
                expected: "1 in on-demand mode (each worker runs one task)",
            });
        }
        if c.task_timeout == Some(Duration::ZERO) {
            return Err(BuildError::InvalidOption { option: "task_timeout", expected: "positive" });
        }
        Supervisor::with_config(config, self.on_worker_exit)
    }
}
