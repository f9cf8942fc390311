//! Workers that run several tasks at once (`Workable::concurrency` above 1): the supervisor keeps
//! that many in flight on one worker, starts a task that arrives while seats are free at once,
//! gives up on one call alone where the worker can, and fails or requeues every call in flight
//! when the worker dies. Concurrency is proven with gates that only open once enough tasks are
//! inside, never with timing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc as tokio_mpsc, watch};
use tokio::task::JoinHandle;
use worker_pool::{
    Backpressure, CallToken, Cancellation, Outcome, Refusal, Response, ShutdownMode, Supervisor, TaskError,
    TaskOptions, Workable, WorkerFault, WorkerState,
};

/// What a task does.
#[derive(Clone, Debug)]
enum Task {
    /// Waits until `n` gate tasks are inside at once, then returns.
    Gate(usize),
    /// Returns at once.
    Probe,
    /// Waits until the test opens the hold (see [`Shared::release`]).
    Hold,
    /// Waits forever (until cancelled).
    Forever,
    /// Like `Hold`, but stands for a call still queued at the worker: if the worker dies, it
    /// is given back as never started.
    Queued,
    /// Kills the worker (a fatal answer).
    Crash,
    /// Kills the worker the first time any such task runs; returns afterwards.
    CrashOnce,
    /// Sleeps this many microseconds.
    Sleep(u64),
}

/// What the test sees of its workers.
#[derive(Default)]
struct Shared {
    /// Gate tasks inside now, and the gate (opened once enough are inside).
    gate_inside: Mutex<usize>,
    gate: Mutex<Option<watch::Sender<bool>>>,
    /// Tasks running now on any worker, and the most at once per worker.
    running: Mutex<HashMap<usize, usize>>,
    most_at_once: Mutex<HashMap<usize, usize>>,
    /// Tasks that started (any kind).
    started: AtomicUsize,
    /// Worker (re)starts.
    restarts: AtomicUsize,
    /// Tasks begun since the last (re)start, and the most of them any incarnation took.
    since_restart: AtomicUsize,
    most_per_incarnation: AtomicUsize,
    /// Whether a `CrashOnce` task crashed already.
    crashed_once: std::sync::atomic::AtomicBool,
    /// Opened to let `Hold` tasks return.
    hold: Mutex<Option<watch::Sender<bool>>>,
}

impl Shared {
    fn new() -> Arc<Self> {
        let shared = Arc::new(Self::default());
        *shared.gate.lock().unwrap() = Some(watch::Sender::new(false));
        *shared.hold.lock().unwrap() = Some(watch::Sender::new(false));
        shared
    }

    /// A call on worker `id` ended (returned, or was cancelled or killed).
    fn left(&self, id: usize) {
        let mut running = self.running.lock().unwrap();
        let now = running.entry(id).or_default();
        *now = now.saturating_sub(1);
    }

    fn release(&self) {
        self.hold.lock().unwrap().as_ref().unwrap().send_replace(true);
    }
}

/// A worker of concurrency `seats`: each call runs as a tokio task of its own.
struct Seats {
    id: usize,
    seats: usize,
    shared: Arc<Shared>,
    /// Whether a call can be cancelled alone (else the worker must die).
    cancel_alone: bool,
    next: u64,
    /// Calls in flight, with the task of a `Queued` one (given back if the worker dies).
    calls: HashMap<CallToken, (JoinHandle<()>, Option<Task>)>,
    done_tx: tokio_mpsc::UnboundedSender<(CallToken, Response<Seats>)>,
    done_rx: tokio_mpsc::UnboundedReceiver<(CallToken, Response<Seats>)>,
    dead: bool,
}

impl Seats {
    fn new(id: usize, seats: usize, shared: &Arc<Shared>, cancel_alone: bool) -> Self {
        let (done_tx, done_rx) = tokio_mpsc::unbounded_channel();
        let shared = Arc::clone(shared);
        Self { id, seats, shared, cancel_alone, next: 0, calls: HashMap::new(), done_tx, done_rx, dead: false }
    }
}

async fn run_task(task: Task, shared: &Shared) -> Response<Seats> {
    match task {
        Task::Gate(n) => {
            let mut open = shared.gate.lock().unwrap().as_ref().unwrap().subscribe();
            {
                let mut inside = shared.gate_inside.lock().unwrap();
                *inside += 1;
                if *inside == n {
                    shared.gate.lock().unwrap().as_ref().unwrap().send_replace(true);
                }
            }
            let _ = open.wait_for(|o| *o).await;
            Response::Complete(Ok("through".into()))
        }
        Task::Probe => Response::Complete(Ok("probed".into())),
        Task::Hold | Task::Queued => {
            let mut hold = shared.hold.lock().unwrap().as_ref().unwrap().subscribe();
            let _ = hold.wait_for(|o| *o).await;
            Response::Complete(Ok("held".into()))
        }
        Task::Forever => std::future::pending().await,
        Task::Crash => Response::Fatal(WorkerFault::new("crashed on purpose")),
        Task::CrashOnce if !shared.crashed_once.swap(true, Ordering::SeqCst) => {
            Response::Fatal(WorkerFault::new("crashed on purpose, once"))
        }
        Task::CrashOnce => Response::Complete(Ok("survived".into())),
        Task::Sleep(us) => {
            tokio::time::sleep(Duration::from_micros(us)).await;
            Response::Complete(Ok("slept".into()))
        }
    }
}

impl Workable for Seats {
    type Task = Task;
    type Output = String;
    type Error = String;

    async fn process(&mut self, task: Task) -> Response<Self> {
        run_task(task, &self.shared).await
    }

    fn concurrency(&self) -> usize {
        self.seats
    }

    fn begin(&mut self, task: Task) -> Result<CallToken, Refusal<Task>> {
        if self.dead {
            return Err(Refusal { task, fault: WorkerFault::new("dead") });
        }
        assert!(self.calls.len() < self.seats, "more calls begun than seats");
        self.next += 1;
        let call = CallToken(self.next);
        let queued = matches!(task, Task::Queued).then(|| task.clone());
        let (shared, done, id) = (Arc::clone(&self.shared), self.done_tx.clone(), self.id);
        shared.started.fetch_add(1, Ordering::SeqCst);
        let taken = shared.since_restart.fetch_add(1, Ordering::SeqCst) + 1;
        shared.most_per_incarnation.fetch_max(taken, Ordering::SeqCst);
        {
            let mut running = shared.running.lock().unwrap();
            let now = running.entry(id).or_default();
            *now += 1;
            let mut most = shared.most_at_once.lock().unwrap();
            let top = most.entry(id).or_default();
            *top = (*top).max(*now);
        }
        let handle = tokio::spawn(async move {
            let response = run_task(task, &shared).await;
            shared.left(id);
            let _ = done.send((call, response));
        });
        self.calls.insert(call, (handle, queued));
        Ok(call)
    }

    async fn next_done(&mut self) -> (CallToken, Response<Self>) {
        loop {
            let (call, response) = self.done_rx.recv().await.expect("the worker holds a sender");
            // A call cancelled or killed meanwhile is not answered.
            if self.calls.remove(&call).is_some() {
                if matches!(response, Response::Fatal(_)) {
                    self.dead = true;
                }
                return (call, response);
            }
        }
    }

    async fn cancel(&mut self, call: CallToken) -> Cancellation {
        if !self.cancel_alone {
            return Cancellation::Worker;
        }
        if let Some((handle, _)) = self.calls.remove(&call) {
            handle.abort();
            self.shared.left(self.id);
        }
        Cancellation::Call
    }

    async fn kill(&mut self) {
        // Every call still in flight is lost with the worker: answered as such.
        self.dead = true;
        for (call, (handle, queued)) in &self.calls {
            handle.abort();
            self.shared.left(self.id);
            let response = match queued {
                Some(task) => Response::Refused(task.clone(), WorkerFault::new("died before it started")),
                None => Response::Fatal(WorkerFault::new("killed")),
            };
            let _ = self.done_tx.send((*call, response));
        }
    }

    fn clone_task(task: &Task) -> Option<Task> {
        Some(task.clone())
    }

    async fn restart(&mut self) -> Result<(), WorkerFault> {
        self.shared.restarts.fetch_add(1, Ordering::SeqCst);
        self.shared.since_restart.store(0, Ordering::SeqCst);
        self.calls.clear();
        self.dead = false;
        Ok(())
    }
}

type Reply = mpsc::Receiver<Outcome<Seats>>;

fn submit(pool: &Supervisor<Seats>, task: Task, options: TaskOptions) -> Reply {
    let (tx, rx) = mpsc::channel();
    pool.submit_with(
        task,
        options,
        Box::new(move |outcome| {
            let _ = tx.send(outcome);
        }),
        Backpressure::Fail,
    )
    .unwrap();
    rx
}

/// The task's outcome, failing the test if it does not come within 10 s (a task that never
/// started because its seat never opened).
fn outcome(reply: &Reply) -> Outcome<Seats> {
    reply.recv_timeout(Duration::from_secs(10)).expect("every task is answered")
}

fn eventually(what: &str, cond: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn pool_of(workers: usize, seats: usize, cancel_alone: bool) -> (Supervisor<Seats>, Arc<Shared>) {
    let pool = Supervisor::<Seats>::builder().queue_capacity(1000).build().unwrap();
    let shared = Shared::new();
    for id in 0..workers {
        pool.add_worker(Seats::new(id, seats, &shared, cancel_alone));
    }
    (pool, shared)
}

#[test]
fn one_worker_runs_as_many_tasks_at_once_as_its_concurrency() {
    let (pool, shared) = pool_of(1, 4, true);
    // The gate opens only when all four are inside: one at a time, none would return.
    let replies: Vec<Reply> = (0..4).map(|_| submit(&pool, Task::Gate(4), TaskOptions::default())).collect();
    for reply in &replies {
        assert_eq!(outcome(reply).unwrap(), "through");
    }
    let workers = pool.workers();
    assert_eq!(workers.len(), 1, "one worker, not a lane per seat");
    assert_eq!((workers[0].tasks_done, workers[0].dispatched, workers[0].tasks_failed), (4, 4, 0));
    eventually("the worker idles", || pool.workers()[0].state == WorkerState::Idle);
    assert_eq!(*shared.most_at_once.lock().unwrap().get(&0).unwrap(), 4);
}

#[test]
fn a_task_arriving_while_other_calls_run_starts_at_once() {
    let (pool, shared) = pool_of(1, 4, true);
    let held = submit(&pool, Task::Hold, TaskOptions::default());
    eventually("the held task started", || shared.started.load(Ordering::SeqCst) == 1);
    assert_eq!(pool.workers()[0].state, WorkerState::Busy);
    // 1 of 4 seats is busy: these start now, while the held call still runs (it is released
    // only once they are answered).
    let probe = submit(&pool, Task::Probe, TaskOptions::default());
    assert_eq!(outcome(&probe).unwrap(), "probed");
    // A task addressed to the worker (a broadcast) takes a free seat too.
    let (tx, rx) = mpsc::channel();
    pool.submit_to(
        pool.workers()[0].id,
        Task::Probe,
        TaskOptions::default(),
        Box::new(move |o| {
            let _ = tx.send(o);
        }),
    )
    .unwrap();
    assert_eq!(outcome(&rx).unwrap(), "probed");
    shared.release();
    assert_eq!(outcome(&held).unwrap(), "held");
    assert_eq!(pool.workers()[0].tasks_done, 3);
}

#[test]
fn a_timeout_cancels_only_its_call_when_the_worker_can() {
    let (pool, shared) = pool_of(1, 2, true);
    let held = submit(&pool, Task::Hold, TaskOptions::default());
    eventually("the held task started", || shared.started.load(Ordering::SeqCst) == 1);
    let options = TaskOptions { timeout: Some(Duration::from_millis(50)), ..TaskOptions::default() };
    let forever = submit(&pool, Task::Forever, options);
    assert!(matches!(outcome(&forever), Err(TaskError::TimedOut(_))));
    // The other call goes on, on the same worker, never restarted.
    shared.release();
    assert_eq!(outcome(&held).unwrap(), "held");
    let w = &pool.workers()[0];
    assert_eq!((w.tasks_done, w.tasks_failed, w.restarts), (1, 1, 0));
    assert_eq!(shared.restarts.load(Ordering::SeqCst), 0);
    // The freed seat takes work again.
    let replies: Vec<Reply> = (0..2).map(|_| submit(&pool, Task::Gate(2), TaskOptions::default())).collect();
    for reply in &replies {
        assert_eq!(outcome(reply).unwrap(), "through");
    }
}

#[test]
fn a_call_that_cannot_be_cancelled_alone_takes_its_worker_and_the_other_calls_down() {
    let (pool, shared) = pool_of(1, 3, false);
    let held: Vec<Reply> = (0..2).map(|_| submit(&pool, Task::Hold, TaskOptions::default())).collect();
    eventually("both held tasks started", || shared.started.load(Ordering::SeqCst) == 2);
    let options = TaskOptions { timeout: Some(Duration::from_millis(50)), ..TaskOptions::default() };
    let forever = submit(&pool, Task::Forever, options);
    assert!(matches!(outcome(&forever), Err(TaskError::TimedOut(_))));
    for reply in &held {
        assert!(matches!(outcome(reply), Err(TaskError::WorkerCrashed { .. })));
    }
    eventually("the worker restarted", || shared.restarts.load(Ordering::SeqCst) == 1);
    assert_eq!(outcome(&submit(&pool, Task::Probe, TaskOptions::default())).unwrap(), "probed");
    assert_eq!(pool.workers()[0].tasks_failed, 3);
}

#[test]
fn a_crash_fails_every_call_in_flight_and_the_worker_restarts() {
    let (pool, shared) = pool_of(1, 3, true);
    let held: Vec<Reply> = (0..2).map(|_| submit(&pool, Task::Hold, TaskOptions::default())).collect();
    eventually("both held tasks started", || shared.started.load(Ordering::SeqCst) == 2);
    let crash = submit(&pool, Task::Crash, TaskOptions::default());
    for reply in held.iter().chain([&crash]) {
        match outcome(reply) {
            Err(TaskError::WorkerCrashed { worker, .. }) => assert_eq!(worker, pool.workers()[0].id),
            other => panic!("expected a crash, got {other:?}"),
        }
    }
    eventually("the worker restarted", || shared.restarts.load(Ordering::SeqCst) == 1);
    let replies: Vec<Reply> = (0..3).map(|_| submit(&pool, Task::Gate(3), TaskOptions::default())).collect();
    for reply in &replies {
        assert_eq!(outcome(reply).unwrap(), "through");
    }
    let w = &pool.workers()[0];
    assert_eq!((w.tasks_failed, w.tasks_done, w.restarts), (3, 3, 1));
}

#[test]
fn a_crash_with_retries_runs_the_other_calls_again() {
    let pool = Supervisor::<Seats>::builder().queue_capacity(100).crash_retries(1).build().unwrap();
    let shared = Shared::new();
    pool.add_worker(Seats::new(0, 3, &shared, true));
    let held: Vec<Reply> = (0..2).map(|_| submit(&pool, Task::Hold, TaskOptions::default())).collect();
    eventually("both held tasks started", || shared.started.load(Ordering::SeqCst) == 2);
    let crash = submit(&pool, Task::CrashOnce, TaskOptions::default());
    eventually("the worker restarted", || shared.restarts.load(Ordering::SeqCst) == 1);
    shared.release();
    // Every call in flight ran again on the restarted worker (each had a retry left).
    for reply in &held {
        assert_eq!(outcome(reply).unwrap(), "held");
    }
    assert_eq!(outcome(&crash).unwrap(), "survived");
    assert_eq!(shared.started.load(Ordering::SeqCst), 6);
}

#[test]
fn a_pool_kill_fails_every_call_in_flight_with_shutdown() {
    let (pool, shared) = pool_of(1, 3, true);
    let held: Vec<Reply> = (0..3).map(|_| submit(&pool, Task::Hold, TaskOptions::default())).collect();
    eventually("all held tasks started", || shared.started.load(Ordering::SeqCst) == 3);
    let queued = submit(&pool, Task::Hold, TaskOptions::default());
    pool.shutdown(ShutdownMode::Kill);
    for reply in &held {
        assert!(matches!(outcome(reply), Err(TaskError::ShutDown)));
    }
    assert!(matches!(outcome(&queued), Err(TaskError::Cancelled | TaskError::ShutDown)));
    assert!(pool.wait_stopped(Duration::from_secs(10)));
}

#[test]
fn a_kill_request_cancels_only_its_call() {
    let (pool, shared) = pool_of(1, 2, true);
    let held = submit(&pool, Task::Hold, TaskOptions::default());
    let (tx, rx) = mpsc::channel();
    let ticket = pool
        .submit_with(
            Task::Forever,
            TaskOptions::default(),
            Box::new(move |o| {
                let _ = tx.send(o);
            }),
            Backpressure::Fail,
        )
        .unwrap();
    eventually("both tasks started", || shared.started.load(Ordering::SeqCst) == 2);
    assert!(ticket.cancel_or_kill());
    assert!(matches!(outcome(&rx), Err(TaskError::Cancelled)));
    shared.release();
    assert_eq!(outcome(&held).unwrap(), "held");
    assert_eq!(shared.restarts.load(Ordering::SeqCst), 0);
}

#[test]
fn every_task_is_answered_and_no_worker_runs_more_than_its_seats() {
    let (pool, shared) = pool_of(2, 4, true);
    let replies: Vec<Reply> =
        (0..400u64).map(|i| submit(&pool, Task::Sleep(i % 7 * 100), TaskOptions::default())).collect();
    for reply in &replies {
        assert_eq!(outcome(reply).unwrap(), "slept");
    }
    let workers = pool.workers();
    assert_eq!(workers.iter().map(|w| w.tasks_done).sum::<u64>(), 400);
    assert_eq!(pool.dispatched(), 400);
    let most = shared.most_at_once.lock().unwrap();
    assert!(most.values().all(|&m| m <= 4), "{most:?}");
    pool.shutdown(ShutdownMode::Graceful);
    assert!(pool.wait_stopped(Duration::from_secs(10)));
}

#[test]
fn a_worker_due_for_recycling_takes_no_more_and_is_renewed_once_its_calls_end() {
    let pool = Supervisor::<Seats>::builder().queue_capacity(100).max_tasks_per_worker(4).build().unwrap();
    let shared = Shared::new();
    pool.add_worker(Seats::new(0, 3, &shared, true));
    let replies: Vec<Reply> = (0..12).map(|i| submit(&pool, Task::Sleep(i * 50), TaskOptions::default())).collect();
    for reply in &replies {
        assert_eq!(outcome(reply).unwrap(), "slept");
    }
    // Each incarnation took at most its 4 tasks, however many ran at once.
    assert!(shared.most_per_incarnation.load(Ordering::SeqCst) <= 4);
    eventually("the third renewal", || pool.workers()[0].restarts == 3);
    assert_eq!(pool.workers()[0].tasks_done, 12);
}

#[test]
fn a_retiring_worker_finishes_its_calls_and_takes_no_more() {
    let (pool, shared) = pool_of(1, 3, true);
    let first = pool.workers()[0].id;
    let held = submit(&pool, Task::Hold, TaskOptions::default());
    eventually("the held task started", || shared.started.load(Ordering::SeqCst) == 1);
    let second = pool.add_worker(Seats::new(1, 3, &shared, true));
    assert!(pool.retire_worker(first));
    // Its two free seats are not filled any more: these run on the other worker.
    let probes: Vec<Reply> = (0..3).map(|_| submit(&pool, Task::Probe, TaskOptions::default())).collect();
    for reply in &probes {
        assert_eq!(outcome(reply).unwrap(), "probed");
    }
    shared.release();
    assert_eq!(outcome(&held).unwrap(), "held");
    // The retired worker leaves once its call ended; the other one ran every probe.
    let done = |id: u64| pool.workers().iter().find(|w| w.id == id).map(|w| w.tasks_done);
    eventually("the retired worker left", || done(first).is_none());
    assert_eq!((pool.live_worker_ids(), done(second)), (vec![second], Some(3)));
}

#[test]
fn a_call_the_dead_worker_never_started_runs_again_on_its_successor() {
    let (pool, shared) = pool_of(1, 3, true);
    let queued = submit(&pool, Task::Queued, TaskOptions::default());
    eventually("the queued call was handed over", || shared.started.load(Ordering::SeqCst) == 1);
    let crash = submit(&pool, Task::Crash, TaskOptions::default());
    assert!(matches!(outcome(&crash), Err(TaskError::WorkerCrashed { .. })));
    // Given back, not failed: it runs again once the worker is restarted.
    eventually("the queued call ran again", || shared.started.load(Ordering::SeqCst) == 3);
    shared.release();
    assert_eq!(outcome(&queued).unwrap(), "held");
    let w = &pool.workers()[0];
    assert_eq!((w.tasks_failed, w.tasks_done, w.restarts), (1, 1, 1));
}
