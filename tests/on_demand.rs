//! On-demand pools: a fresh worker per queued task from the pool's factory, at most
//! `max_workers` live, each retired after its task, none while idle. Every wait is on a
//! condition (a gate the test opens, or a counter), never on time.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use worker_pool::{Response, ShutdownMode, SubmitError, Supervisor, TaskError, Workable, WorkerFault};

/// What the test sees of every worker the factory made.
struct Census {
    /// Factory calls.
    made: AtomicUsize,
    /// Workers not dropped yet, and the most there ever were at once.
    alive: AtomicUsize,
    most_alive: AtomicUsize,
    /// `restart()` calls: an on-demand worker is never restarted.
    restarts: AtomicUsize,
    /// Tasks wait here for a permit when `gated`.
    gate: Semaphore,
    gated: AtomicBool,
}

impl Default for Census {
    fn default() -> Self {
        Self {
            made: AtomicUsize::new(0),
            alive: AtomicUsize::new(0),
            most_alive: AtomicUsize::new(0),
            restarts: AtomicUsize::new(0),
            gate: Semaphore::new(0),
            gated: AtomicBool::new(false),
        }
    }
}

/// Answers its id; task 999 crashes it, 997 crashes worker 0 only, 998 is the task's own error.
struct Fresh {
    id: u64,
    census: Arc<Census>,
}

impl Fresh {
    fn new(id: u64, census: &Arc<Census>) -> Self {
        let alive = census.alive.fetch_add(1, Ordering::SeqCst) + 1;
        census.most_alive.fetch_max(alive, Ordering::SeqCst);
        Self { id, census: Arc::clone(census) }
    }
}

impl Drop for Fresh {
    fn drop(&mut self) {
        self.census.alive.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Workable for Fresh {
    type Task = u64;
    type Output = u64;
    type Error = String;

    async fn process(&mut self, task: u64) -> Response<Self> {
        if self.census.gated.load(Ordering::SeqCst) {
            self.census.gate.acquire().await.expect("gate open").forget();
        }
        match task {
            999 => Response::Fatal(WorkerFault::new("boom")),
            997 if self.id == 0 => Response::Fatal(WorkerFault::new("boom on worker 0")),
            998 => Response::Complete(Err("task failed".into())),
            _ => Response::Complete(Ok(self.id)),
        }
    }

    async fn restart(&mut self) -> Result<(), WorkerFault> {
        self.census.restarts.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn clone_task(task: &u64) -> Option<u64> {
        Some(*task)
    }
}

fn eventually(what: &str, cond: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// An on-demand pool of at most `cap` workers whose factory makes a [`Fresh`] per call.
fn pool(cap: usize, gated: bool) -> (Supervisor<Fresh>, Arc<Census>) {
    let census = Arc::new(Census::default());
    census.gated.store(gated, Ordering::SeqCst);
    let pool = Supervisor::<Fresh>::builder().on_demand(cap).build().unwrap();
    let seen = Arc::clone(&census);
    pool.set_worker_factory(move |id| {
        seen.made.fetch_add(1, Ordering::SeqCst);
        let worker = Fresh::new(id, &seen);
        async move { Ok(worker) }
    });
    (pool, census)
}

#[test]
fn no_worker_runs_while_idle_and_each_task_gets_a_fresh_one() {
    let (pool, census) = pool(2, false);
    assert!(pool.live_worker_ids().is_empty() && pool.workers().is_empty());
    assert_eq!(census.made.load(Ordering::SeqCst), 0, "nothing queued, nothing started");
    let handles: Vec<_> = (0..6).map(|i| pool.try_submit(i).unwrap()).collect();
    let mut ids: Vec<u64> = handles.into_iter().map(|h| h.wait().unwrap()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 6, "every task ran on a worker of its own: {ids:?}");
    eventually("every worker to retire", || pool.on_demand_stats().unwrap().retired == 6);
    let stats = pool.on_demand_stats().unwrap();
    assert_eq!((stats.max_workers, stats.live, stats.spawned, stats.failed_to_start), (2, 0, 6, 0));
    assert!(pool.workers().is_empty(), "retired workers leave the registry");
    assert_eq!(census.alive.load(Ordering::SeqCst), 0);
    assert_eq!(census.restarts.load(Ordering::SeqCst), 0);
    // Idle again, then a new burst: fresh workers again.
    assert_eq!(pool.try_submit(7).unwrap().wait().unwrap(), 6);
    assert_eq!(pool.config().max_tasks_per_worker, Some(1));
}

#[test]
fn the_cap_bounds_live_workers_and_queued_tasks_wait_for_capacity() {
    let (pool, census) = pool(3, true);
    let handles: Vec<_> = (0..20).map(|i| pool.try_submit(i).unwrap()).collect();
    // A launched slot counts as live before its factory runs, so wait for the factory calls too.
    eventually("three workers to hold three tasks", || {
        pool.live_worker_ids().len() == 3 && pool.queued() == 17 && census.made.load(Ordering::SeqCst) >= 3
    });
    assert_eq!(census.made.load(Ordering::SeqCst), 3, "no worker beyond the cap");
    // One task at a time: each finished task makes room for exactly one fresh worker.
    for done in 1..=17 {
        census.gate.add_permits(1);
        eventually("the next worker to start", || pool.queued() == 17 - done);
        assert!(pool.live_worker_ids().len() <= 3);
    }
    census.gate.add_permits(3);
    let mut ids: Vec<u64> = handles.into_iter().map(|h| h.wait().unwrap()).collect();
    ids.sort_unstable();
    assert_eq!(ids, (0..20).collect::<Vec<_>>(), "20 tasks, 20 fresh workers");
    assert_eq!(census.most_alive.load(Ordering::SeqCst), 3, "never more than the cap alive at once");
    eventually("the last workers to retire", || pool.on_demand_stats().unwrap().live == 0);
}

#[test]
fn a_spawn_failure_fails_its_task_once_and_the_pool_goes_on() {
    let census = Arc::new(Census::default());
    let pool: Supervisor<Fresh> = Supervisor::<Fresh>::builder().on_demand(2).build().unwrap();
    let seen = Arc::clone(&census);
    pool.set_worker_factory(move |id| {
        let first = seen.made.fetch_add(1, Ordering::SeqCst) == 0;
        let worker = (!first).then(|| Fresh::new(id, &seen));
        async move { worker.ok_or(TaskError::Failed("setup raised ValueError".to_owned())) }
    });
    let failed = pool.try_submit(1).unwrap().wait();
    assert!(matches!(failed, Err(TaskError::Failed(ref e)) if e == "setup raised ValueError"), "{failed:?}");
    assert_eq!(census.made.load(Ordering::SeqCst), 1, "the failed start was not retried");
    let stats = pool.on_demand_stats().unwrap();
    assert_eq!((stats.spawned, stats.failed_to_start), (0, 1));
    assert_eq!(pool.try_submit(2).unwrap().wait().unwrap(), 1, "the next task gets a worker");
}

#[test]
fn a_crash_fails_only_its_task_and_no_worker_is_restarted() {
    let (pool, census) = pool(2, false);
    let handles: Vec<_> = [0, 999, 1, 998, 2].into_iter().map(|t| pool.try_submit(t).unwrap()).collect();
    let outcomes: Vec<_> = handles.into_iter().map(worker_pool::TaskHandle::wait).collect();
    assert!(matches!(outcomes[1], Err(TaskError::WorkerCrashed { ref fault, .. }) if fault.message == "boom"));
    assert!(matches!(outcomes[3], Err(TaskError::Failed(ref e)) if e == "task failed"));
    assert!([0, 2, 4].iter().all(|&i| outcomes[i].is_ok()), "{outcomes:?}");
    eventually("every worker to retire", || pool.on_demand_stats().unwrap().retired == 5);
    assert_eq!(census.restarts.load(Ordering::SeqCst), 0, "a crashed on-demand worker is not restarted");
    assert!(pool.workers().is_empty());
}

#[test]
fn crash_retries_run_the_task_again_on_a_fresh_worker() {
    let census = Arc::new(Census::default());
    let pool: Supervisor<Fresh> = Supervisor::<Fresh>::builder().on_demand(1).crash_retries(1).build().unwrap();
    let seen = Arc::clone(&census);
    pool.set_worker_factory(move |id| {
        seen.made.fetch_add(1, Ordering::SeqCst);
        let worker = Fresh::new(id, &seen);
        async move { Ok(worker) }
    });
    // Worker 0 crashes under the task; the task runs again on worker 1, a fresh one.
    assert_eq!(pool.try_submit(997).unwrap().wait().unwrap(), 1);
    assert_eq!(census.made.load(Ordering::SeqCst), 2);
    assert_eq!(census.restarts.load(Ordering::SeqCst), 0, "retried on a fresh worker, not a restarted one");
    // A task that crashes every worker uses its one retry, then fails: two more workers, no loop.
    assert!(matches!(pool.try_submit(999).unwrap().wait(), Err(TaskError::WorkerCrashed { .. })));
    assert_eq!(census.made.load(Ordering::SeqCst), 4);
}

#[test]
fn a_graceful_shutdown_runs_what_is_queued_then_stops() {
    let (pool, census) = pool(1, true);
    let handles: Vec<_> = (0..3).map(|i| pool.try_submit(i).unwrap()).collect();
    eventually("the first worker to start", || pool.live_worker_ids().len() == 1);
    pool.shutdown(ShutdownMode::Graceful);
    assert!(matches!(pool.try_submit(9), Err(SubmitError::ShutDown(9))));
    census.gate.add_permits(3);
    let ids: Vec<u64> = handles.into_iter().map(|h| h.wait().unwrap()).collect();
    assert_eq!(ids, vec![0, 1, 2], "queued tasks got fresh workers while the pool drained");
    assert!(pool.wait_stopped(Duration::from_secs(10)));
    assert_eq!(census.alive.load(Ordering::SeqCst), 0);
}

#[test]
fn a_kill_fails_running_and_queued_tasks_and_stops() {
    let (pool, census) = pool(2, true);
    let handles: Vec<_> = (0..5).map(|i| pool.try_submit(i).unwrap()).collect();
    // Made, not only launched: a slot counts as live before its factory has run.
    eventually("two workers to hold two tasks", || {
        pool.live_worker_ids().len() == 2 && census.made.load(Ordering::SeqCst) == 2 && pool.queued() == 3
    });
    pool.shutdown(ShutdownMode::Kill);
    let outcomes: Vec<_> = handles.into_iter().map(worker_pool::TaskHandle::wait).collect();
    // The running ones fail with ShutDown, the queued ones are cancelled.
    assert!(outcomes[..2].iter().all(|o| matches!(o, Err(TaskError::ShutDown))), "{outcomes:?}");
    assert!(outcomes[2..].iter().all(|o| matches!(o, Err(TaskError::Cancelled))), "{outcomes:?}");
    assert!(pool.wait_stopped(Duration::from_secs(10)));
    assert_eq!(census.made.load(Ordering::SeqCst), 2, "no worker started after the kill");
    assert_eq!(census.alive.load(Ordering::SeqCst), 0);
    assert!(pool.is_shutdown());
}

#[test]
fn submitting_before_a_factory_is_set_says_so_and_options_are_checked() {
    let pool: Supervisor<Fresh> = Supervisor::<Fresh>::builder().on_demand(2).build().unwrap();
    match pool.try_submit(1) {
        Err(SubmitError::NoWorkers(1, reason)) => assert!(reason.none_started()),
        other => panic!("{other:?}"),
    }
    assert!(Supervisor::<Fresh>::builder().on_demand(0).build::<Fresh>().is_err());
    let err = Supervisor::<Fresh>::builder().on_demand(2).max_tasks_per_worker(3).build::<Fresh>().err().unwrap();
    assert!(err.to_string().contains("on-demand"), "{err}");
    assert_eq!(Supervisor::<Fresh>::builder().build::<Fresh>().unwrap().on_demand_stats(), None);
}
