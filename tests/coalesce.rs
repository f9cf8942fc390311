//! Coalesced calls (dynamic batching) in the core, with an in-process worker: tasks with the
//! same `Coalesce` key are gathered into one `process_coalesced` call, up to `max_size`,
//! waiting at most `max_wait`, and each task gets its own outcome back.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use worker_pool::{
    Backpressure, Coalesce, Coalesced, Outcome, ReplyFn, Response, Supervisor, TaskError, TaskOptions, Workable,
};

/// Doubles numbers; records the size of every coalesced call. A call holding 666 answers one
/// outcome too few (a broken protocol); 777 fails alone.
struct Doubler {
    sizes: Arc<Mutex<Vec<usize>>>,
}

impl Workable for Doubler {
    type Task = u64;
    type Output = u64;
    type Error = String;

    async fn process(&mut self, task: u64) -> Response<Self> {
        self.sizes.lock().unwrap().push(0); // 0: a task run alone
        Response::Complete(Ok(task * 2))
    }

    async fn process_coalesced(&mut self, tasks: Vec<u64>) -> Coalesced<Self> {
        self.sizes.lock().unwrap().push(tasks.len());
        let mut outcomes: Vec<Result<u64, String>> =
            tasks.iter().map(|&t| if t == 777 { Err("777 failed".to_owned()) } else { Ok(t * 2) }).collect();
        if tasks.contains(&666) {
            outcomes.pop();
        }
        Coalesced::Complete(outcomes)
    }
}

fn pool() -> (Supervisor<Doubler>, Arc<Mutex<Vec<usize>>>) {
    let sizes = Arc::new(Mutex::new(Vec::new()));
    let pool = Supervisor::<Doubler>::builder().build().unwrap();
    pool.add_worker(Doubler { sizes: Arc::clone(&sizes) });
    (pool, sizes)
}

fn submit(
    pool: &Supervisor<Doubler>,
    task: u64,
    coalesce: Option<Coalesce>,
) -> std::sync::mpsc::Receiver<Outcome<Doubler>> {
    let (tx, rx) = std::sync::mpsc::channel();
    let reply: ReplyFn<Doubler> = Box::new(move |outcome| {
        let _ = tx.send(outcome);
    });
    let options = TaskOptions { coalesce, ..TaskOptions::default() };
    pool.submit_with(task, options, reply, Backpressure::Fail).unwrap();
    rx
}

const WAIT: Duration = Duration::from_secs(30);

fn key(key: u32, max_size: usize, max_wait: Duration) -> Option<Coalesce> {
    Some(Coalesce { key, max_size, max_wait })
}

#[test]
fn tasks_are_gathered_up_to_max_size_and_answered_in_order() {
    let (pool, sizes) = pool();
    // max_wait is long: the calls fill to max_size, whatever the timing, and the last waits.
    let spec = key(1, 8, Duration::from_secs(1));
    let replies: Vec<_> = (0..20).map(|i| submit(&pool, i, spec)).collect();
    for (i, rx) in replies.into_iter().enumerate() {
        assert_eq!(rx.recv_timeout(WAIT).unwrap().unwrap(), 2 * i as u64);
    }
    assert_eq!(*sizes.lock().unwrap(), vec![8, 8, 4]);
    let stats = pool.coalesce_stats();
    assert_eq!((stats.calls, stats.tasks, stats.max_size), (3, 20, 8));
    assert_eq!(stats.histogram.iter().sum::<u64>(), 3);
}

#[test]
fn another_key_ends_the_gathering() {
    let (pool, sizes) = pool();
    let (a, b) = (key(1, 8, Duration::from_secs(5)), key(2, 8, Duration::from_secs(5)));
    let first: Vec<_> = (0..3).map(|i| submit(&pool, i, a)).collect();
    let other = submit(&pool, 10, b);
    let plain = submit(&pool, 11, None);
    for (i, rx) in first.into_iter().enumerate() {
        assert_eq!(rx.recv_timeout(WAIT).unwrap().unwrap(), 2 * i as u64);
    }
    assert_eq!(other.recv_timeout(WAIT).unwrap().unwrap(), 20);
    assert_eq!(plain.recv_timeout(WAIT).unwrap().unwrap(), 22);
    assert_eq!(*sizes.lock().unwrap(), vec![3, 1, 0]);
}

#[test]
fn per_task_errors_and_a_miscounted_reply() {
    let (pool, _) = pool();
    let spec = key(1, 3, Duration::from_secs(5));
    let replies: Vec<_> = [1, 777, 3].into_iter().map(|t| submit(&pool, t, spec)).collect();
    let outcomes: Vec<_> = replies.into_iter().map(|rx| rx.recv_timeout(WAIT).unwrap()).collect();
    assert!(matches!(outcomes[0], Ok(2)));
    assert!(matches!(&outcomes[1], Err(TaskError::Failed(e)) if e == "777 failed"));
    assert!(matches!(outcomes[2], Ok(6)));
    // One outcome too few: the worker broke the protocol, every task of the call fails.
    let replies: Vec<_> = [1, 666, 3].into_iter().map(|t| submit(&pool, t, spec)).collect();
    for rx in replies {
        match rx.recv_timeout(WAIT).unwrap() {
            Err(TaskError::WorkerCrashed { fault, .. }) => assert!(fault.to_string().contains("2 outcomes"), "{fault}"),
            other => panic!("expected WorkerCrashed, got {other:?}"),
        }
    }
}
