//! The supervisor with in-process workers and with real worker processes (this test binary
//! re-executes itself as an echo worker, so no Python is needed).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use worker_pool::{
    FrameKind, LoadBalancing, ProcessSpec, ProcessWorker, Response, RestartPolicy, ShutdownMode, SpawnFailure,
    StartError, SubmitError, Supervisor, TaskError, Workable, WorkerEndpoint, WorkerState,
};

/// Sleeps `task` milliseconds, counts its tasks; task 999 crashes it (a fatal response).
struct Sleeper {
    id: usize,
    done: usize,
    starts: Arc<AtomicUsize>,
}

impl Workable for Sleeper {
    type Task = u64;
    type Output = (usize, usize);
    type Error = String;

    async fn process(&mut self, task: u64) -> Response<Self> {
        match task {
            999 => Response::Fatal(worker_pool::WorkerFault::new("boom")),
            998 => Response::Complete(Err("task failed".into())),
            ms => {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                self.done += 1;
                Response::Complete(Ok((self.id, self.done)))
            }
        }
    }

    async fn restart(&mut self) -> Result<(), worker_pool::WorkerFault> {
        self.done = 0;
        self.starts.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// Polls `cond` until it holds, failing after 10 s: replies go out before the supervisor finishes
/// its bookkeeping (restarts happen after the caller has its answer).
fn eventually(what: &str, cond: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn sleepers(pool: &Supervisor<Sleeper>, n: usize) -> Arc<AtomicUsize> {
    let starts = Arc::new(AtomicUsize::new(0));
    for id in 0..n {
        pool.add_worker(Sleeper { id, done: 0, starts: Arc::clone(&starts) });
    }
    starts
}

#[test]
fn runs_every_task_exactly_once_across_workers() {
    let pool = Supervisor::<Sleeper>::builder().queue_capacity(1000).build().unwrap();
    sleepers(&pool, 3);
    let handles: Vec<_> = (0..300).map(|_| pool.try_submit(0).unwrap()).collect();
    let mut per_worker: HashMap<usize, usize> = HashMap::new();
    for h in handles {
        let (id, _) = h.wait().unwrap();
        *per_worker.entry(id).or_default() += 1;
    }
    assert_eq!(per_worker.values().sum::<usize>(), 300);
    let done: u64 = pool.workers().iter().map(|w| w.tasks_done).sum();
    assert_eq!(done, 300);
    assert_eq!(pool.dispatched(), 300);
}

#[test]
fn a_fast_task_never_waits_behind_a_slow_one_while_a_worker_is_idle() {
    for balancing in
        [LoadBalancing::RoundRobin, LoadBalancing::LeastActive, LoadBalancing::LeastTotal, LoadBalancing::Random]
    {
        let pool = Supervisor::<Sleeper>::builder().load_balancing(balancing).build().unwrap();
        sleepers(&pool, 2);
        let slow = pool.try_submit(2_000).unwrap();
        // Each fast task must finish while the slow one still runs, whichever worker is picked.
        for _ in 0..5 {
            let (id, _) = pool.try_submit(1).unwrap().wait().unwrap();
            assert!(!slow.ticket().cancelled());
            let busy = pool.workers().iter().filter(|w| w.state == WorkerState::Busy).count();
            assert_eq!(busy, 1, "{balancing}: the slow task is still running");
            let _ = id;
        }
        pool.shutdown(ShutdownMode::Kill);
        assert!(matches!(slow.wait(), Err(TaskError::ShutDown)));
    }
}

#[test]
fn task_errors_and_fatal_responses() {
    let pool = Supervisor::<Sleeper>::builder().build().unwrap();
    let starts = sleepers(&pool, 1);
    assert!(matches!(pool.try_submit(998).unwrap().wait(), Err(TaskError::Failed(e)) if e == "task failed"));
    assert!(matches!(pool.try_submit(999).unwrap().wait(), Err(TaskError::WorkerCrashed { worker: 0, .. })));
    assert_eq!(pool.try_submit(0).unwrap().wait().unwrap(), (0, 1), "restarted with fresh state");
    eventually("the restart", || starts.load(Ordering::SeqCst) == 1);
    let info = &pool.workers()[0];
    assert_eq!(info.restarts, 1);
    assert!(info.last_error.as_deref().unwrap().contains("boom"));
}

#[test]
fn restart_policy_never_retires_a_crashed_worker() {
    let pool = Supervisor::<Sleeper>::builder().restart_policy(RestartPolicy::Never).build().unwrap();
    sleepers(&pool, 2);
    assert!(matches!(pool.try_submit(999).unwrap().wait(), Err(TaskError::WorkerCrashed { .. })));
    eventually("the crashed worker to retire", || pool.live_worker_ids().len() == 1);
    assert!(pool.try_submit(0).unwrap().wait().is_ok());
}

#[test]
fn timeouts_cancellation_and_kill() {
    let pool = Supervisor::<Sleeper>::builder().task_timeout(Duration::from_millis(100)).build().unwrap();
    let starts = sleepers(&pool, 1);
    assert!(matches!(pool.try_submit(5_000).unwrap().wait(), Err(TaskError::TimedOut(_))));
    eventually("the timed-out worker to be replaced", || starts.load(Ordering::SeqCst) == 1);
    let pool = Supervisor::<Sleeper>::builder().build().unwrap();
    sleepers(&pool, 1);
    let running = pool.try_submit(5_000).unwrap();
    while !running.ticket().started() {
        std::thread::yield_now();
    }
    let queued = pool.try_submit(0).unwrap();
    assert!(queued.ticket().cancel());
    assert!(!running.ticket().cancel(), "a running task cannot be plainly cancelled");
    assert!(running.ticket().cancel_or_kill());
    assert!(matches!(running.wait(), Err(TaskError::Cancelled)));
    assert!(matches!(queued.wait(), Err(TaskError::Cancelled)));
    assert!(pool.try_submit(0).unwrap().wait().is_ok());
}

#[test]
fn backpressure_hands_the_task_back() {
    let pool = Supervisor::<Sleeper>::builder().queue_capacity(1).build().unwrap();
    sleepers(&pool, 1);
    let running = pool.try_submit(300).unwrap();
    while !running.ticket().started() {
        std::thread::yield_now();
    }
    let queued = pool.try_submit(0).unwrap();
    assert!(matches!(pool.try_submit(7), Err(SubmitError::Full(7))));
    assert!(matches!(pool.submit_timeout(8, Duration::from_millis(20)), Err(SubmitError::Full(8))));
    // Blocks until the running task ends and the queued one is taken.
    let late = pool.submit_timeout(9, Duration::from_secs(10)).unwrap();
    for h in [running, queued, late] {
        h.wait().unwrap();
    }
}

#[test]
fn graceful_shutdown_finishes_queued_tasks_and_refuses_new_ones() {
    let pool = Supervisor::<Sleeper>::builder().build().unwrap();
    sleepers(&pool, 2);
    let handles: Vec<_> = (0..20).map(|_| pool.try_submit(5).unwrap()).collect();
    pool.shutdown(ShutdownMode::Graceful);
    assert!(matches!(pool.try_submit(0), Err(SubmitError::ShutDown(0))));
    assert!(pool.wait_stopped(Duration::from_secs(10)));
    assert!(handles.into_iter().all(|h| h.wait().is_ok()));
    assert!(pool.workers().iter().all(|w| w.state == WorkerState::Stopped));
}

#[test]
fn cancel_pending_shutdown_cancels_only_queued_tasks() {
    let pool = Supervisor::<Sleeper>::builder().build().unwrap();
    sleepers(&pool, 1);
    let running = pool.try_submit(200).unwrap();
    while !running.ticket().started() {
        std::thread::yield_now();
    }
    let queued: Vec<_> = (0..5).map(|_| pool.try_submit(0).unwrap()).collect();
    pool.shutdown(ShutdownMode::CancelPending);
    assert!(pool.wait_stopped(Duration::from_secs(10)));
    assert!(running.wait().is_ok());
    assert!(queued.into_iter().all(|h| matches!(h.wait(), Err(TaskError::Cancelled))));
}

#[test]
fn broadcast_reaches_every_worker_and_retire_shrinks_the_pool() {
    let pool = Supervisor::<Sleeper>::builder().build().unwrap();
    sleepers(&pool, 3);
    let replies = pool.broadcast(&0);
    let mut ids: Vec<usize> = replies.into_iter().map(|(_, h)| h.wait().unwrap().0).collect();
    ids.sort_unstable();
    assert_eq!(ids, [0, 1, 2]);
    let queued: Vec<_> = (0..30).map(|_| pool.try_submit(2).unwrap()).collect();
    assert!(pool.retire_worker(0));
    assert!(pool.retire_worker(1));
    assert!(queued.into_iter().all(|h| h.wait().is_ok()), "retiring loses no task");
    eventually("two workers to retire", || pool.live_worker_ids().len() == 1);
    assert_eq!(pool.live_worker_ids(), vec![2]);
}

#[test]
fn start_worker_reports_setup_failure_and_shutdown() {
    let pool = Supervisor::<Sleeper>::builder().build().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    pool.start_worker(async { Err::<(Sleeper, ()), _>("no gpu") }, move |r| tx.send(r.map(|_| ())).unwrap());
    assert!(matches!(rx.recv().unwrap(), Err(StartError::Failed("no gpu"))));
    assert!(pool.workers().is_empty(), "a failed start leaves no worker behind");
    pool.shutdown(ShutdownMode::Graceful);
    let (tx, rx) = std::sync::mpsc::channel();
    pool.start_worker(async { Ok::<_, ()>((Sleeper { id: 0, done: 0, starts: Arc::default() }, ())) }, move |r| {
        tx.send(r.is_err()).unwrap();
    });
    assert!(rx.recv().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_enqueue_and_await_from_another_runtime() {
    let pool = Supervisor::<Sleeper>::builder().queue_capacity(2).build().unwrap();
    sleepers(&pool, 2);
    let mut handles = Vec::new();
    for _ in 0..50 {
        handles.push(pool.enqueue(1).await.unwrap());
    }
    for h in handles {
        h.await.unwrap();
    }
    pool.shutdown(ShutdownMode::Graceful);
    pool.stopped().await;
    drop(pool); // dropping inside a runtime must not panic
}

#[test]
fn a_panicking_worker_is_marked_failed_not_lost() {
    struct Panicky;
    impl Workable for Panicky {
        type Task = ();
        type Output = ();
        type Error = ();
        async fn process(&mut self, (): ()) -> Response<Self> {
            panic!("bug in worker");
        }
    }
    let pool = Supervisor::<Panicky>::builder().build().unwrap();
    pool.add_worker(Panicky);
    assert!(pool.try_submit(()).unwrap().wait().is_err());
    eventually("the worker to be marked failed", || pool.workers()[0].state == WorkerState::Failed);
    // Refused at once, or (if it raced the worker's last steps) failed once it is gone.
    let reason = match pool.try_submit(()) {
        Err(SubmitError::NoWorkers((), reason)) => reason,
        Ok(handle) => match handle.wait() {
            Err(TaskError::NoWorkers(reason)) => reason,
            other => panic!("{other:?}"),
        },
        Err(other) => panic!("{other:?}"),
    };
    assert!(reason.to_string().starts_with("worker 0 ended abnormally"), "{reason}");
}

// ---- real processes --------------------------------------------------------------------

const ECHO_ENV: &str = "WORKER_POOL_TEST_ECHO_WORKER";

/// Not a test: the body of the echo worker process, selected by an environment variable.
#[test]
fn echo_worker_main() {
    if std::env::var_os(ECHO_ENV).is_none() {
        return;
    }
    let mut endpoint = WorkerEndpoint::from_inherited().unwrap();
    while let Some((kind, id, len)) = endpoint.recv_header().unwrap() {
        let mut payload = vec![0u8; len];
        endpoint.read_exact(&mut payload).unwrap();
        let (reply_kind, reply) = match (kind, payload.as_slice()) {
            (FrameKind::Stop, _) => std::process::exit(0),
            (FrameKind::Init, b"fail") => (FrameKind::Raised, [4u32.to_le_bytes().as_slice(), b"nope"].concat()),
            (FrameKind::Init, _) => (FrameKind::Ready, std::process::id().to_string().into_bytes()),
            (_, b"exit") => std::process::exit(3),
            (_, p) => (FrameKind::Ok, p.to_vec()),
        };
        endpoint.send(reply_kind, id, &[&reply]).unwrap();
    }
    std::process::exit(0);
}

fn echo_spec_with(shm_capacity: Option<usize>) -> Arc<ProcessSpec> {
    let mut spec =
        ProcessSpec::new(std::env::current_exe().unwrap(), ["--exact", "echo_worker_main", "--nocapture", "--quiet"]);
    spec.env.push((ECHO_ENV.into(), "1".into()));
    spec.shm_capacity = shm_capacity;
    Arc::new(spec)
}

fn echo_spec() -> Arc<ProcessSpec> {
    echo_spec_with(None)
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| !s.rsplit(')').next().unwrap().trim_start().starts_with('Z'))
}

#[test]
fn process_workers_round_trip_crash_restart_and_stop_over_pipes() {
    round_trip_crash_restart_and_stop(None);
}

#[test]
fn process_workers_round_trip_crash_restart_and_stop_over_shared_memory() {
    // A 64 KiB ring: the 3 MiB frame below streams through it in pieces.
    round_trip_crash_restart_and_stop(Some(64 << 10));
}

fn round_trip_crash_restart_and_stop(shm_capacity: Option<usize>) {
    let pool = Supervisor::<ProcessWorker>::builder().build().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    pool.start_worker(ProcessWorker::start(echo_spec_with(shm_capacity), Arc::new(b"hello".to_vec())), move |r| {
        tx.send(r).unwrap()
    });
    let (_, ready) = rx.recv().unwrap().unwrap();
    let first_pid: u32 = String::from_utf8(ready).unwrap().parse().unwrap();
    assert!(alive(first_pid));
    let big = vec![7u8; 3 << 20];
    assert_eq!(pool.try_submit(big.clone()).unwrap().wait().unwrap(), big, "a 3 MiB frame round-trips");
    let crash = pool.try_submit(b"exit".to_vec()).unwrap().wait();
    match crash {
        Err(TaskError::WorkerCrashed { fault, .. }) => assert_eq!(fault.exit_code, Some(3)),
        other => panic!("expected a crash, got {other:?}"),
    }
    assert_eq!(pool.try_submit(b"again".to_vec()).unwrap().wait().unwrap(), b"again");
    eventually("the restart", || pool.workers()[0].restarts == 1);
    let second_pid = pool.workers()[0].pid.unwrap();
    assert_ne!(second_pid, first_pid);
    assert!(!alive(first_pid));
    pool.shutdown(ShutdownMode::Graceful);
    assert!(pool.wait_stopped(Duration::from_secs(10)));
    assert!(!alive(second_pid), "no worker process outlives shutdown");
}

#[test]
fn process_worker_setup_failure_leaves_no_process() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let failure = rt.block_on(ProcessWorker::start(echo_spec(), Arc::new(b"fail".to_vec()))).unwrap_err();
    match failure {
        SpawnFailure::Raised(payload) => {
            assert_eq!(worker_pool::RaisedPayload::parse(&payload).unwrap().summary, "nope");
        }
        other => panic!("expected Raised, got {other:?}"),
    }
    let missing = ProcessSpec::new("/nonexistent/worker", Vec::<String>::new());
    assert!(matches!(rt.block_on(ProcessWorker::start(Arc::new(missing), Arc::default())), Err(SpawnFailure::Io(_))));
}

#[test]
fn crash_retries_run_the_task_again_on_another_worker() {
    /// Crashes on task 1 the first time each worker sees it.
    struct Flaky {
        id: usize,
        crashed: bool,
    }
    impl Workable for Flaky {
        type Task = u64;
        type Output = usize;
        type Error = ();
        async fn process(&mut self, task: u64) -> Response<Self> {
            if task == 1 && !self.crashed {
                self.crashed = true;
                return Response::Fatal(worker_pool::WorkerFault::new("flaky"));
            }
            Response::Complete(Ok(self.id))
        }
        fn clone_task(task: &u64) -> Option<u64> {
            Some(*task)
        }
    }
    let pool = Supervisor::<Flaky>::builder().crash_retries(1).build().unwrap();
    pool.add_worker(Flaky { id: 0, crashed: false });
    assert_eq!(pool.try_submit(1).unwrap().wait().unwrap(), 0, "ran again after the restart");
    let pool = Supervisor::<Flaky>::builder().build().unwrap();
    pool.add_worker(Flaky { id: 0, crashed: false });
    assert!(matches!(pool.try_submit(1).unwrap().wait(), Err(TaskError::WorkerCrashed { .. })), "off by default");
}

#[test]
fn release_ends_the_runtime_threads_of_a_stopped_pool() {
    fn runtime_threads() -> usize {
        std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter(|t| {
                let comm = t.as_ref().unwrap().path().join("comm");
                std::fs::read_to_string(comm).is_ok_and(|c| c.trim() == "release-test")
            })
            .count()
    }
    let pool = Supervisor::<Sleeper>::builder().thread_name("release-test").build().unwrap();
    sleepers(&pool, 1);
    assert!(!pool.release(), "a running pool keeps its runtime");
    eventually("the runtime thread to start", || runtime_threads() == 1);
    pool.shutdown(ShutdownMode::Graceful);
    assert!(pool.wait_stopped(Duration::from_secs(10)));
    assert!(pool.release());
    assert_eq!(runtime_threads(), 0);
}

#[test]
fn a_refused_task_goes_back_to_the_queue_and_runs_after_the_restart() {
    /// Refuses its first task (found "dead"), then works.
    struct DeadOnArrival {
        refused: bool,
        restarts: Arc<AtomicUsize>,
    }
    impl Workable for DeadOnArrival {
        type Task = u64;
        type Output = u64;
        type Error = ();
        async fn process(&mut self, task: u64) -> Response<Self> {
            if !self.refused {
                self.refused = true;
                return Response::Refused(task, worker_pool::WorkerFault::new("dead before the task"));
            }
            Response::Complete(Ok(task))
        }
        async fn restart(&mut self) -> Result<(), worker_pool::WorkerFault> {
            self.restarts.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }
    let pool = Supervisor::<DeadOnArrival>::builder().build().unwrap();
    let restarts = Arc::new(AtomicUsize::new(0));
    pool.add_worker(DeadOnArrival { refused: false, restarts: Arc::clone(&restarts) });
    assert_eq!(pool.try_submit(7).unwrap().wait().unwrap(), 7, "the task ran, once, after the restart");
    assert_eq!(restarts.load(Ordering::SeqCst), 1);
    assert_eq!(pool.workers()[0].tasks_failed, 0, "a refused task is not a failed one");
}

/// Takes up to 8 tasks at once and answers them in order (a pipelining worker). Task 1000
/// sleeps 50 ms and task 1001 5 ms (gates that let the queue fill); task `crash_at` crashes it,
/// the first time only.
struct Pipelined {
    crash_at: u64,
    handed: std::collections::VecDeque<u64>,
    ran: Arc<std::sync::Mutex<Vec<u64>>>,
    crashed: Arc<std::sync::atomic::AtomicBool>,
    most_in_flight: Arc<AtomicUsize>,
}

impl Pipelined {
    /// A worker that never crashes, recording its most tasks in flight in `most_in_flight`.
    fn never_crashing(most_in_flight: &Arc<AtomicUsize>) -> Self {
        Self {
            crash_at: u64::MAX,
            handed: std::collections::VecDeque::new(),
            ran: Arc::default(),
            crashed: Arc::default(),
            most_in_flight: Arc::clone(most_in_flight),
        }
    }

    async fn run(&mut self, task: u64) -> Response<Self> {
        if task == 1000 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if task == 1001 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if task == self.crash_at && !self.crashed.swap(true, Ordering::SeqCst) {
            // Dies slowly: meanwhile the other workers run out of work.
            tokio::time::sleep(Duration::from_millis(20)).await;
            return Response::Fatal(worker_pool::WorkerFault::new("crashed"));
        }
        self.ran.lock().unwrap().push(task);
        Response::Complete(Ok(task))
    }
}

impl Workable for Pipelined {
    type Task = u64;
    type Output = u64;
    type Error = ();

    async fn process(&mut self, task: u64) -> Response<Self> {
        self.run(task).await
    }

    fn pipeline_depth(&self) -> usize {
        8
    }

    fn try_send(&mut self, task: u64) -> Result<(), u64> {
        self.handed.push_back(task);
        self.most_in_flight.fetch_max(self.handed.len(), Ordering::SeqCst);
        Ok(())
    }

    async fn receive(&mut self) -> Response<Self> {
        let task = self.handed.pop_front().expect("receive follows try_send");
        self.run(task).await
    }

    fn clone_task(task: &u64) -> Option<u64> {
        Some(*task)
    }

    async fn restart(&mut self) -> Result<(), worker_pool::WorkerFault> {
        self.handed.clear(); // what a dead process had been handed is gone with it
        Ok(())
    }
}

#[test]
fn queued_short_tasks_go_in_batches_and_a_crash_mid_batch_loses_none() {
    let pool = Supervisor::<Pipelined>::builder().build().unwrap();
    let ran = Arc::new(std::sync::Mutex::new(Vec::new()));
    let most_in_flight = Arc::new(AtomicUsize::new(0));
    pool.add_worker(Pipelined {
        crash_at: 150,
        handed: std::collections::VecDeque::new(),
        ran: Arc::clone(&ran),
        crashed: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        most_in_flight: Arc::clone(&most_in_flight),
    });
    let gate = pool.try_submit(1000).unwrap();
    let handles: Vec<_> = (0..300).map(|i| pool.try_submit(i).unwrap()).collect();
    assert_eq!(gate.wait().unwrap(), 1000);
    for (i, h) in (0..300).zip(handles) {
        match h.wait() {
            Ok(got) => assert_eq!(got, i),
            Err(TaskError::WorkerCrashed { .. }) => assert_eq!(i, 150, "only the task that crashed fails"),
            Err(e) => panic!("task {i} failed: {e:?}"),
        }
    }
    let mut ran = ran.lock().unwrap().clone();
    ran.sort_unstable();
    let expected: Vec<u64> = (0..300).filter(|&i| i != 150).chain([1000]).collect();
    assert_eq!(ran, expected, "every other task ran exactly once, the ones behind the crash after the restart");
    assert!(most_in_flight.load(Ordering::SeqCst) > 1, "short queued tasks were batched");
    let info = &pool.workers()[0];
    assert!(info.batches > 0 && info.batched_tasks > info.batches);
    assert_eq!(info.restarts, 1);
    pool.shutdown(ShutdownMode::Graceful);
    assert!(pool.wait_stopped(Duration::from_secs(10)));
}

#[test]
fn a_crash_mid_batch_during_a_graceful_shutdown_still_runs_the_rest() {
    // A late batch crashes while the other worker is idle and the queue empty, so the dispatcher
    // may be done: the tasks behind the crash have only the serve loop to run them. Where each
    // batch ends depends on timing, so several crash points are tried.
    for crash_at in 285..300 {
        let pool = Supervisor::<Pipelined>::builder().build().unwrap();
        let crashed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        for _ in 0..2 {
            pool.add_worker(Pipelined {
                crash_at,
                handed: std::collections::VecDeque::new(),
                ran: Arc::default(),
                crashed: Arc::clone(&crashed),
                most_in_flight: Arc::default(),
            });
        }
        // A short gate: the other worker is back (idle, the queue empty) before the crash lands.
        let gate = pool.try_submit(1001).unwrap();
        let handles: Vec<_> = (0..300).map(|i| pool.try_submit(i).unwrap()).collect();
        pool.shutdown(ShutdownMode::Graceful);
        assert_eq!(gate.wait().unwrap(), 1001);
        let failed: Vec<u64> = (0..300).zip(handles).filter_map(|(i, h)| h.wait().is_err().then_some(i)).collect();
        assert_eq!(failed, vec![crash_at], "a graceful shutdown runs every queued task but the one that crashed");
        assert!(pool.wait_stopped(Duration::from_secs(10)));
    }
}

#[test]
fn slow_tasks_are_never_batched() {
    let pool = Supervisor::<Pipelined>::builder().build().unwrap();
    let most_in_flight = Arc::new(AtomicUsize::new(0));
    for _ in 0..2 {
        pool.add_worker(Pipelined::never_crashing(&most_in_flight));
    }
    let handles: Vec<_> = (0..6).map(|_| pool.try_submit(1000).unwrap()).collect();
    for h in handles {
        assert_eq!(h.wait().unwrap(), 1000);
    }
    assert_eq!(most_in_flight.load(Ordering::SeqCst), 0, "50 ms tasks each wait for a free worker");
    let workers = pool.workers();
    assert!(workers.iter().all(|w| w.batches == 0 && w.tasks_done >= 2), "both workers took turns: {workers:?}");
}

#[test]
fn slow_pipelined_tasks_are_batched_but_not_the_plain_tasks_behind_them() {
    // A map's chunks (`TaskOptions::pipelined`) are handed to a worker behind the one it runs
    // though its recent tasks were slow; a slow worker still takes no plain task that way.
    let pool = Supervisor::<Pipelined>::builder().build().unwrap();
    let most_in_flight = Arc::new(AtomicUsize::new(0));
    pool.add_worker(Pipelined::never_crashing(&most_in_flight));
    let gate = pool.try_submit(1000).unwrap(); // 50 ms: a slow pace, and the queue fills meanwhile
    let (tx, rx) = std::sync::mpsc::channel();
    let pipelined = worker_pool::TaskOptions { pipelined: true, ..Default::default() };
    for task in 0..4 {
        let tx = tx.clone();
        let reply: worker_pool::ReplyFn<Pipelined> = Box::new(move |outcome| {
            let _ = tx.send(outcome);
        });
        pool.submit_with(task, pipelined, reply, worker_pool::Backpressure::Fail).unwrap();
    }
    let plain: Vec<_> = (10..13).map(|i| pool.try_submit(i).unwrap()).collect();
    assert_eq!(gate.wait().unwrap(), 1000);
    let mut chunks: Vec<u64> = (0..4).map(|_| rx.recv_timeout(Duration::from_secs(10)).unwrap().unwrap()).collect();
    chunks.sort_unstable();
    assert_eq!(chunks, vec![0, 1, 2, 3]);
    for (i, h) in (10..13).zip(plain) {
        assert_eq!(h.wait().unwrap(), i);
    }
    let info = &pool.workers()[0];
    assert_eq!(most_in_flight.load(Ordering::SeqCst), 4, "the four pipelined tasks went in one batch");
    assert_eq!((info.batches, info.batched_tasks), (1, 4), "the plain tasks went alone: {info:?}");
    pool.shutdown(ShutdownMode::Graceful);
    assert!(pool.wait_stopped(Duration::from_secs(10)));
}
