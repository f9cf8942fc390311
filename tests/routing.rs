//! Priorities and sticky routing through the supervisor, with in-process workers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use worker_pool::{
    Backpressure, Outcome, Response, ShutdownMode, Sticky, Supervisor, TaskOptions, Ticket, Workable, WorkerState,
};

/// A task: a tag to record, and whether to hold the worker until the gate opens.
type Task = (u32, bool);

/// Records the tags it runs (in one list shared by all workers); answers its id.
struct Recorder {
    id: u64,
    ran: Arc<Mutex<Vec<u32>>>,
    gate: Arc<AtomicBool>,
}

impl Workable for Recorder {
    type Task = Task;
    type Output = u64;
    type Error = String;

    async fn process(&mut self, (tag, hold): Task) -> Response<Self> {
        while hold && !self.gate.load(Ordering::Acquire) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        self.ran.lock().unwrap().push(tag);
        Response::Complete(Ok(self.id))
    }
}

struct Fixture {
    pool: Supervisor<Recorder>,
    ran: Arc<Mutex<Vec<u32>>>,
    gate: Arc<AtomicBool>,
}

fn fixture(workers: u64) -> Fixture {
    let pool = Supervisor::<Recorder>::new();
    let ran = Arc::new(Mutex::new(Vec::new()));
    let gate = Arc::new(AtomicBool::new(false));
    for id in 0..workers {
        pool.add_worker(Recorder { id, ran: Arc::clone(&ran), gate: Arc::clone(&gate) });
    }
    // Keys are placed over the serving workers: wait for all of them, so none joins later.
    eventually("every worker to serve", || pool.workers().iter().all(|w| w.state == WorkerState::Idle));
    Fixture { pool, ran, gate }
}

/// Submits with `options`; the receiver gets the outcome.
fn submit(
    pool: &Supervisor<Recorder>,
    task: Task,
    options: TaskOptions,
) -> (Ticket, mpsc::Receiver<Outcome<Recorder>>) {
    let (tx, rx) = mpsc::channel();
    let reply = Box::new(move |outcome| {
        let _ = tx.send(outcome);
    });
    (pool.submit_with(task, options, reply, Backpressure::Fail).unwrap(), rx)
}

fn wait(rx: &mpsc::Receiver<Outcome<Recorder>>) -> u64 {
    rx.recv_timeout(Duration::from_secs(10)).expect("an outcome").expect("success")
}

fn eventually(what: &str, cond: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Finds key 7's worker and holds it with a keyed task: `(its id, the held task's outcome)`.
fn hold_owner_of_7(f: &Fixture) -> (u64, mpsc::Receiver<Outcome<Recorder>>) {
    let owner = wait(&submit(&f.pool, (0, false), keyed(7, Sticky::Wait)).1);
    let (held, held_rx) = submit(&f.pool, (1, true), keyed(7, Sticky::Wait));
    eventually("the owner to take the held task", || held.started());
    (owner, held_rx)
}

fn with_priority(priority: i32) -> TaskOptions {
    TaskOptions { priority, ..TaskOptions::default() }
}

fn keyed(key: u64, sticky: Sticky) -> TaskOptions {
    TaskOptions { key: Some(key), sticky, ..TaskOptions::default() }
}

#[test]
fn a_held_workers_backlog_runs_by_priority_then_fifo() {
    let f = fixture(1);
    let (held, held_rx) = submit(&f.pool, (0, true), TaskOptions::default());
    eventually("the worker to take the held task", || held.started());
    let plan = [(1, 0), (2, 0), (3, 5), (4, -1), (5, 5), (6, 1)];
    let replies: Vec<_> = plan.iter().map(|&(tag, p)| submit(&f.pool, (tag, false), with_priority(p)).1).collect();
    assert_eq!(f.pool.queued(), plan.len());
    f.gate.store(true, Ordering::Release);
    wait(&held_rx);
    replies.iter().for_each(|rx| {
        wait(rx);
    });
    assert_eq!(*f.ran.lock().unwrap(), [0, 3, 5, 6, 1, 2, 4]);
}

#[test]
fn keys_stay_on_their_worker_and_a_retired_worker_moves_only_its_keys() {
    let f = fixture(4);
    let place = |pool: &Supervisor<Recorder>| -> HashMap<u64, u64> {
        let replies: Vec<_> = (0..64u64)
            .flat_map(|key| (0..5).map(move |_| key))
            .map(|key| (key, submit(pool, (0, false), keyed(key, Sticky::Wait)).1))
            .collect();
        let mut owner = HashMap::new();
        for (key, rx) in replies {
            let worker = wait(&rx);
            assert_eq!(*owner.entry(key).or_insert(worker), worker, "key {key} changed worker");
        }
        owner
    };
    let before = place(&f.pool);
    assert!(before.values().collect::<std::collections::HashSet<_>>().len() > 1, "keys spread");
    assert_eq!(f.pool.sticky_counts(), (64 * 5, 0));
    let gone = before[&0];
    assert!(f.pool.retire_worker(gone));
    eventually("the worker to retire", || !f.pool.live_worker_ids().contains(&gone));
    let after = place(&f.pool);
    for key in 0..64 {
        if before[&key] == gone {
            assert_ne!(after[&key], gone);
        } else {
            assert_eq!(after[&key], before[&key], "key {key} moved off a worker that stayed");
        }
    }
}

#[test]
fn a_busy_owner_makes_wait_queue_and_spill_go_elsewhere() {
    let f = fixture(2);
    let (owner, held_rx) = hold_owner_of_7(&f);
    let spilled = wait(&submit(&f.pool, (2, false), keyed(7, Sticky::Spill)).1);
    assert_ne!(spilled, owner);
    let (_, waiting) = submit(&f.pool, (3, false), keyed(7, Sticky::Wait));
    let urgent = TaskOptions { priority: 5, ..keyed(7, Sticky::Wait) };
    let (_, waiting_urgent) = submit(&f.pool, (4, false), urgent);
    for tag in 10..30 {
        assert_ne!(wait(&submit(&f.pool, (tag, false), TaskOptions::default()).1), owner);
    }
    assert!(waiting.try_recv().is_err(), "still waiting for its owner");
    assert_eq!(f.pool.queued(), 2, "parked tasks count as queued");
    f.gate.store(true, Ordering::Release);
    assert_eq!(wait(&held_rx), owner);
    assert_eq!(wait(&waiting), owner);
    assert_eq!(wait(&waiting_urgent), owner);
    let ran = f.ran.lock().unwrap().clone();
    assert_eq!(ran[ran.len() - 3..], [1, 4, 3], "the owner ran the urgent waiting task first");
    assert_eq!(f.pool.sticky_counts(), (4, 1));
}

#[test]
fn tasks_waiting_for_a_worker_that_retires_go_to_the_keys_next_owner() {
    let f = fixture(2);
    let (owner, held_rx) = hold_owner_of_7(&f);
    let (_, waiting) = submit(&f.pool, (2, false), keyed(7, Sticky::Wait));
    eventually("the keyed task to wait for its owner", || f.pool.queued() == 1);
    assert!(f.pool.retire_worker(owner));
    f.gate.store(true, Ordering::Release);
    assert_eq!(wait(&held_rx), owner, "a retiring worker finishes its task");
    assert_ne!(wait(&waiting), owner, "the waiting task moved to the key's new owner");
}

#[test]
fn a_graceful_shutdown_runs_the_tasks_waiting_for_a_busy_worker_and_a_kill_fails_them() {
    for mode in [ShutdownMode::Graceful, ShutdownMode::Kill] {
        let f = fixture(2);
        let (owner, held_rx) = hold_owner_of_7(&f);
        let (_, waiting) = submit(&f.pool, (2, false), keyed(7, Sticky::Wait));
        eventually("the keyed task to wait for its owner", || f.pool.queued() == 1);
        f.pool.shutdown(mode);
        f.gate.store(true, Ordering::Release);
        let outcome = waiting.recv_timeout(Duration::from_secs(10)).expect("an outcome");
        if mode == ShutdownMode::Graceful {
            assert_eq!(wait(&held_rx), owner);
            assert_eq!(outcome.unwrap(), owner);
        } else {
            assert!(outcome.is_err(), "{outcome:?}");
        }
        assert!(f.pool.wait_stopped(Duration::from_secs(10)));
    }
}
