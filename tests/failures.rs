//! How workers fail and come back: restarts that bad input cannot use up, exit codes that are
//! not trusted, the exit hook, and tasks addressed to one worker (broadcasts) reaching it
//! exactly once. In-process fake workers; `test_hostile_supervisor.py` does the same with real
//! processes.

use std::sync::Arc;
use std::time::Duration;

use worker_pool::{Response, ShutdownMode, SubmitError, Supervisor, TaskError, Workable, WorkerState};

/// Polls `cond` until it holds, failing after 10 s: replies go out before the supervisor finishes
/// its bookkeeping (restarts happen after the caller has its answer).
fn eventually(what: &str, cond: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

type Log = Arc<std::sync::Mutex<Vec<String>>>;

/// A worker whose incarnations have pids `base`, `base + 1`, ...; logs each start. Task 999
/// crashes it; other tasks sleep that many milliseconds and answer with the pid. Has a (dummy)
/// direct lane, so calls can claim it.
struct Lives {
    base: u32,
    incarnation: u32,
    log: Log,
}

impl Lives {
    fn new(base: u32, log: &Log) -> Self {
        Self { base, incarnation: 0, log: Arc::clone(log) }
    }
}

impl Workable for Lives {
    type Task = u64;
    type Output = u32;
    type Error = ();
    async fn process(&mut self, task: u64) -> Response<Self> {
        if task == 999 {
            return Response::Fatal(worker_pool::WorkerFault::new("boom"));
        }
        tokio::time::sleep(Duration::from_millis(task)).await;
        Response::Complete(Ok(self.base + self.incarnation))
    }
    async fn restart(&mut self) -> Result<(), worker_pool::WorkerFault> {
        self.incarnation += 1;
        self.log.lock().unwrap().push(format!("start {}", self.base + self.incarnation));
        Ok(())
    }
    fn pid(&self) -> Option<u32> {
        Some(self.base + self.incarnation)
    }
    fn lane(&self) -> Option<Arc<dyn std::any::Any + Send + Sync>> {
        Some(Arc::new(()))
    }
}

fn logged(log: &Log) -> Vec<String> {
    log.lock().unwrap().clone()
}

#[test]
fn the_exit_hook_hears_of_every_process_once_before_its_replacement_starts() {
    let log: Log = Arc::default();
    let hook_log = Arc::clone(&log);
    let pool = Supervisor::<Lives>::builder()
        .max_tasks_per_worker(3)
        .on_worker_exit(move |e| hook_log.lock().unwrap().push(format!("exit {}:{}", e.worker_id, e.pid.unwrap())))
        .build()
        .unwrap();
    pool.add_worker(Lives::new(100, &log));
    // A crash.
    assert!(matches!(pool.try_submit(999).unwrap().wait(), Err(TaskError::WorkerCrashed { .. })));
    eventually("the restart", || logged(&log).len() == 2);
    // A timeout.
    let (tx, rx) = std::sync::mpsc::channel();
    let options = worker_pool::TaskOptions { timeout: Some(Duration::from_millis(10)), ..Default::default() };
    let reply: worker_pool::ReplyFn<Lives> = Box::new(move |outcome| tx.send(outcome).unwrap());
    pool.submit_with(60_000, options, reply, worker_pool::Backpressure::Fail).unwrap();
    assert!(matches!(rx.recv().unwrap(), Err(TaskError::TimedOut(_))));
    eventually("the restart", || logged(&log).len() == 4);
    // A kill to cancel a running task.
    let running = pool.try_submit(60_000).unwrap();
    eventually("the task to start", || running.ticket().started());
    assert!(running.ticket().cancel_or_kill());
    assert!(matches!(running.wait(), Err(TaskError::Cancelled)));
    eventually("the restart", || logged(&log).len() == 6);
    // Recycling after three tasks.
    for _ in 0..3 {
        assert_eq!(pool.try_submit(0).unwrap().wait().unwrap(), 103);
    }
    eventually("the recycle", || logged(&log).len() == 8);
    // Retirement, then a kill of the pool.
    pool.add_worker(Lives::new(200, &log));
    assert!(pool.retire_worker(0));
    eventually("the retirement", || pool.live_worker_ids() == [1]);
    pool.shutdown(ShutdownMode::Kill);
    assert!(pool.wait_stopped(Duration::from_secs(10)));
    let expected = [
        "exit 0:100",
        "start 101",
        "exit 0:101",
        "start 102",
        "exit 0:102",
        "start 103",
        "exit 0:103",
        "start 104",
        "exit 0:104",
        "exit 1:200",
    ];
    assert_eq!(logged(&log), expected, "each process reported once, before its replacement started");
}

#[test]
fn a_broadcast_reaches_a_worker_held_by_a_direct_call_exactly_once() {
    let log: Log = Arc::default();
    let pool = Supervisor::<Lives>::builder().build().unwrap();
    for base in [100, 200, 300] {
        pool.add_worker(Lives::new(base, &log));
    }
    eventually("three idle workers", || pool.workers().iter().all(|w| w.state == WorkerState::Idle));
    for round in 0..20 {
        let claim = pool.claim_idle().expect("an idle worker to claim");
        let held = claim.worker_id();
        let replies = pool.broadcast(&0);
        assert_eq!(replies.len(), 3);
        let (mine, others): (Vec<_>, Vec<_>) = replies.into_iter().partition(|(id, _)| *id == held);
        // The other workers answer while the claim is held, each for itself.
        for (id, handle) in others {
            assert_eq!(handle.wait().unwrap(), 100 * (id as u32 + 1), "round {round}: worker {id} answered");
        }
        if let Some(other) = pool.claim_idle() {
            assert_ne!(other.worker_id(), held, "a direct call cannot take it again first");
            other.finish(None);
        }
        claim.finish(None);
        let (_, handle) = mine.into_iter().next().unwrap();
        assert_eq!(handle.wait().unwrap(), 100 * (held as u32 + 1), "round {round}: the held worker ran its own");
    }
    // A worker that leaves before running what was addressed to it: the task fails naming it.
    let claim = pool.claim_idle().unwrap();
    let held = claim.worker_id();
    let replies = pool.broadcast(&0);
    assert!(pool.retire_worker(held));
    claim.finish(None);
    for (id, handle) in replies {
        match handle.wait() {
            Err(TaskError::NoWorkers(reason)) if id == held => {
                assert_eq!(reason.to_string(), format!("worker {held} retired"));
            }
            Ok(pid) if id != held => assert_eq!(pid, 100 * (id as u32 + 1)),
            other => panic!("worker {id}: {other:?}"),
        }
    }
}

#[test]
fn task_crashes_never_exhaust_the_restart_intensity() {
    // Each crash consumed its task: the pool made progress, so none counts toward giving up
    // (it used to: three crashing tasks ended this pool for good).
    let log: Log = Arc::default();
    let pool = Supervisor::<Lives>::builder().restart_intensity(2, Duration::from_secs(60)).build().unwrap();
    pool.add_worker(Lives::new(100, &log));
    for _ in 0..10 {
        assert!(matches!(pool.try_submit(999).unwrap().wait(), Err(TaskError::WorkerCrashed { .. })));
    }
    assert_eq!(pool.try_submit(0).unwrap().wait().unwrap(), 110, "still serving, on the tenth replacement");
    assert_eq!(pool.workers()[0].restarts, 10);
}

#[test]
fn a_clean_exit_during_a_task_is_a_crash_and_the_worker_comes_back() {
    /// Task 0 "exits with status 0" mid-task, as `sys.exit(0)` inside `execute` does.
    struct ExitsCleanly;
    impl Workable for ExitsCleanly {
        type Task = u8;
        type Output = u8;
        type Error = ();
        async fn process(&mut self, task: u8) -> Response<Self> {
            if task == 0 {
                let mut fault = worker_pool::WorkerFault::new("worker process died while running a task");
                fault.exit_code = Some(0);
                return Response::Fatal(fault);
            }
            Response::Complete(Ok(task))
        }
    }
    let pool = Supervisor::<ExitsCleanly>::builder().build().unwrap();
    pool.add_worker(ExitsCleanly);
    for _ in 0..3 {
        let crashed = pool.try_submit(0).unwrap().wait();
        assert!(
            matches!(crashed, Err(TaskError::WorkerCrashed { worker: 0, ref fault }) if fault.exit_code == Some(0))
        );
        assert_eq!(pool.try_submit(7).unwrap().wait().unwrap(), 7, "a one-worker pool keeps serving");
    }
    assert_eq!(pool.workers()[0].restarts, 3);
}

/// Crashes on task 999; its restarts always fail ("crashed in spawn"). Reports a pid per
/// incarnation.
struct BadRestart {
    incarnation: u32,
}

impl Workable for BadRestart {
    type Task = u64;
    type Output = u64;
    type Error = ();
    async fn process(&mut self, task: u64) -> Response<Self> {
        match task {
            999 => Response::Fatal(worker_pool::WorkerFault::new("boom")),
            _ => Response::Complete(Ok(task)),
        }
    }
    async fn restart(&mut self) -> Result<(), worker_pool::WorkerFault> {
        self.incarnation += 1;
        Err(worker_pool::WorkerFault::new(format!("no gpu (attempt {})", self.incarnation)))
    }
    fn pid(&self) -> Option<u32> {
        Some(100 + self.incarnation)
    }
}

#[test]
fn a_spawn_crash_loop_backs_off_gives_up_and_every_error_names_why() {
    let exits = Arc::new(std::sync::Mutex::new(Vec::new()));
    let hook_exits = Arc::clone(&exits);
    let pool = Supervisor::<BadRestart>::builder()
        .restart_intensity(3, Duration::from_secs(60))
        .on_worker_exit(move |exit| hook_exits.lock().unwrap().push(exit))
        .build()
        .unwrap();
    let started = std::time::Instant::now();
    pool.add_worker(BadRestart { incarnation: 0 });
    let crashing = pool.try_submit(999).unwrap();
    let queued = pool.try_submit(1).unwrap();
    assert!(matches!(crashing.wait(), Err(TaskError::WorkerCrashed { .. })));
    // The restart after the task crash is free; the four failed setups that follow are the
    // crash loop: three restarts within the intensity, the fourth failure gives up.
    let Err(TaskError::NoWorkers(reason)) = queued.wait() else { panic!("the queued task fails with the cause") };
    let text = reason.to_string();
    assert_eq!(text, "worker 0 gave up: crashed in spawn 4 times in 60 s; last error: no gpu (attempt 4)");
    assert!(started.elapsed() >= Duration::from_millis(10 + 20 + 40), "backed off between attempts");
    match pool.try_submit(2) {
        Err(SubmitError::NoWorkers(2, later)) => assert_eq!(later, reason, "later submits say the same"),
        other => panic!("{other:?}"),
    }
    let info = &pool.workers()[0];
    assert_eq!((info.state, info.restarts), (WorkerState::Failed, 4));
    assert!(info.last_error.as_deref().unwrap().contains("crashed in spawn 4 times"));
    // The first process (pid 100) once, then each failed setup once, without a pid.
    let exits = exits.lock().unwrap().clone();
    let pids: Vec<Option<u32>> = exits.iter().map(|e| e.pid).collect();
    assert_eq!(pids, [Some(100), None, None, None, None]);
    assert!(exits.iter().all(|e| e.worker_id == 0));
}

#[test]
fn a_worker_that_keeps_dying_while_idle_backs_off_then_gives_up() {
    /// Starts fine, then dies while idle, every time (restarts succeed).
    struct DiesIdle {
        incarnation: u32,
    }
    impl Workable for DiesIdle {
        type Task = ();
        type Output = ();
        type Error = ();
        async fn process(&mut self, (): ()) -> Response<Self> {
            Response::Complete(Ok(()))
        }
        async fn restart(&mut self) -> Result<(), worker_pool::WorkerFault> {
            self.incarnation += 1;
            Ok(())
        }
        async fn terminated(&mut self) -> worker_pool::WorkerFault {
            worker_pool::WorkerFault::new(format!("died while idle (incarnation {})", self.incarnation))
        }
        fn pid(&self) -> Option<u32> {
            Some(500 + self.incarnation)
        }
    }
    let exits = Arc::new(std::sync::Mutex::new(Vec::new()));
    let hook_exits = Arc::clone(&exits);
    let pool = Supervisor::<DiesIdle>::builder()
        .on_worker_exit(move |exit| hook_exits.lock().unwrap().push(exit.pid))
        .build()
        .unwrap();
    let started = std::time::Instant::now();
    pool.add_worker(DiesIdle { incarnation: 0 });
    // (Between restarts it is `Failed` too, waiting out its backoff.)
    eventually("the worker to give up", || {
        pool.workers()[0].last_error.as_deref().is_some_and(|e| e.starts_with("gave up"))
    });
    // Backoff before each of the five restarts: 10 + 20 + 40 + 80 + 160 ms.
    assert!(started.elapsed() >= Duration::from_millis(310));
    let info = &pool.workers()[0];
    assert_eq!((info.state, info.restarts), (WorkerState::Failed, 5));
    let expected = "gave up: died while idle 6 times in 60 s; last error: died while idle (incarnation 5)";
    assert_eq!(info.last_error.as_deref(), Some(expected));
    // Refused at once, or (if it raced the worker's last steps) failed once it is gone.
    let reason = match pool.try_submit(()) {
        Err(SubmitError::NoWorkers((), reason)) => reason,
        Ok(handle) => match handle.wait() {
            Err(TaskError::NoWorkers(reason)) => reason,
            other => panic!("{other:?}"),
        },
        Err(other) => panic!("{other:?}"),
    };
    assert_eq!(reason.to_string(), format!("worker 0 {expected}"));
    let pids = exits.lock().unwrap().clone();
    assert_eq!(pids, [500, 501, 502, 503, 504, 505].map(Some), "each incarnation reported once");
}
