//! Supervisor configuration and its builder.

use std::time::Duration;

use crate::balance::LoadBalancing;
use crate::error::BuildError;
use crate::restart::RestartPolicy;
use crate::supervisor::Supervisor;
use crate::workable::Workable;

/// Settings of one pool; build it with [`SupervisorBuilder`].
#[derive(Clone, Debug)]
pub struct Config {
    /// How many tasks may wait in the queue (`None`: no bound). Running tasks do not count.
    pub queue_capacity: Option<usize>,
    /// Threads of the supervisor's tokio runtime.
    pub runtime_threads: usize,
    /// The name of those threads (as `top -H` and debuggers show it).
    pub thread_name: String,
    /// Default deadline of a task (`None`: no deadline).
    pub task_timeout: Option<Duration>,
    /// When a worker that died is restarted.
    pub restart_policy: RestartPolicy,
    /// At most this many restarts of one worker within [`Config::restart_window`].
    pub max_restarts: u32,
    /// The window of [`Config::max_restarts`].
    pub restart_window: Duration,
    /// Replace a worker after it has run this many tasks.
    pub max_tasks_per_worker: Option<u64>,
    /// Replace a worker, between tasks, once its resident memory exceeds this many bytes.
    pub max_memory_per_worker: Option<u64>,
    /// Which idle worker gets the next task.
    pub load_balancing: LoadBalancing,
    /// How many times a task whose worker crashed under it is run again on another worker
    /// (0, the default: its caller gets `WorkerCrashed`). Needs [`crate::Workable::clone_task`].
    pub crash_retries: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            queue_capacity: None,
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
        }
    }
}

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
#[derive(Clone, Debug, Default)]
pub struct SupervisorBuilder {
    config: Config,
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

    /// Allows `max_restarts` restarts of one worker within `window`.
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
        let c = &self.config;
        if c.queue_capacity == Some(0) {
            return Err(BuildError::InvalidOption { option: "queue_capacity", expected: "at least 1" });
        }
        if c.runtime_threads == 0 {
            return Err(BuildError::InvalidOption { option: "runtime_threads", expected: "at least 1" });
        }
        if c.max_tasks_per_worker == Some(0) {
            return Err(BuildError::InvalidOption { option: "max_tasks_per_worker", expected: "at least 1" });
        }
        if c.task_timeout == Some(Duration::ZERO) {
            return Err(BuildError::InvalidOption { option: "task_timeout", expected: "positive" });
        }
        Supervisor::with_config(self.config)
    }
}
