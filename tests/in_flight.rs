//! `Config::max_in_flight`: at most that many submitted tasks unanswered, queued or running; a
//! submission beyond it waits (or fails) as one to a full queue does, until a task is answered.
//! Waits are on a gate the test opens, never on time.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use worker_pool::{BuildError, Response, ShutdownMode, SubmitError, Supervisor, TaskError, Workable};

/// Returns its task once the test hands it a permit.
struct Gated(Arc<Semaphore>);

impl Workable for Gated {
    type Task = u64;
    type Output = u64;
    type Error = ();

    async fn process(&mut self, task: u64) -> Response<Self> {
        self.0.acquire().await.expect("gate open").forget();
        Response::Complete(Ok(task))
    }
}

fn pool(max_in_flight: usize) -> (Supervisor<Gated>, Arc<Semaphore>) {
    let gate = Arc::new(Semaphore::new(0));
    let pool = Supervisor::<Gated>::builder().max_in_flight(max_in_flight).build().unwrap();
    pool.add_worker(Gated(Arc::clone(&gate)));
    (pool, gate)
}

#[test]
fn submissions_beyond_the_bound_wait_until_a_task_is_answered() {
    let (pool, gate) = pool(2);
    // One runs, one waits in the queue: two unanswered, the bound.
    let first = pool.try_submit(1).unwrap();
    let second = pool.try_submit(2).unwrap();
    assert!(matches!(pool.try_submit(3), Err(SubmitError::Full(3))), "running tasks count too");
    assert!(matches!(pool.submit_timeout(3, Duration::from_millis(20)), Err(SubmitError::Full(3))));
    // A blocked submitter gets in as soon as a task is answered.
    let submitter = std::thread::scope(|s| {
        let waiting = s.spawn(|| pool.submit_timeout(3, Duration::from_secs(30)));
        gate.add_permits(1);
        assert_eq!(first.wait().unwrap(), 1);
        waiting.join().unwrap()
    });
    let third = submitter.expect("room after an answer");
    gate.add_permits(2);
    assert_eq!((second.wait().unwrap(), third.wait().unwrap()), (2, 3));
    // A cancelled task frees its place once it is answered (when its turn comes).
    let running = pool.try_submit(10).unwrap();
    let cancelled = pool.try_submit(11).unwrap();
    assert!(cancelled.ticket().cancel(), "the queued one is cancelled");
    gate.add_permits(1);
    assert_eq!(running.wait().unwrap(), 10);
    assert!(matches!(cancelled.wait(), Err(TaskError::Cancelled)));
    let after = [pool.try_submit(12).unwrap(), pool.try_submit(13).unwrap()];
    gate.add_permits(2);
    assert_eq!(after.map(|h| h.wait().unwrap()), [12, 13]);
}

#[test]
fn broadcasts_do_not_count_and_a_shutdown_wakes_a_blocked_submitter() {
    let (pool, gate) = pool(1);
    let running = pool.try_submit(1).unwrap();
    let broadcast = pool.broadcast(&7);
    assert_eq!(broadcast.len(), 1, "past the bound: broadcasts go to every worker");
    let blocked = std::thread::scope(|s| {
        let waiting = s.spawn(|| pool.submit_timeout(2, Duration::from_secs(30)));
        // Most likely blocked on the bound by now (if not, it finds the pool shut down, which
        // the assertion accepts as well); a kill must wake it, not leave it for 30 s.
        std::thread::sleep(Duration::from_millis(50));
        pool.shutdown(ShutdownMode::Kill);
        waiting.join().unwrap()
    });
    assert!(matches!(blocked, Err(SubmitError::ShutDown(2))), "{:?}", blocked.map(|_| ()));
    let running = running.wait();
    assert!(matches!(running, Err(TaskError::ShutDown | TaskError::Cancelled)), "{running:?}");
    drop(gate);
}

#[test]
fn a_zero_bound_is_refused() {
    let built = Supervisor::<Gated>::builder().max_in_flight(0).build::<Gated>();
    assert!(matches!(built, Err(BuildError::InvalidOption { option: "max_in_flight", .. })));
}
