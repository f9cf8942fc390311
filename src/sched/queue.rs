//! The pool's task queue: tasks ordered by priority (FIFO within a priority), bounded or not,
//! with two tokio doorbells so async workers await it and a condition variable so synchronous
//! callers block on a full queue with a timeout.
//!
//! Workers pull from the one shared queue when they are idle (late binding), so a task never
//! waits behind a running task while another worker sits idle.
//!
//! # Order
//! The next task is the oldest one of the highest priority, except that no task waits forever:
//! when [`OVERTAKE_LIMIT`] tasks in a row were taken past the oldest waiting task (because
//! they had a higher priority), the next pop takes the oldest task whatever its priority. So a
//! task is overtaken at most `OVERTAKE_LIMIT` times per task older than it, and with one
//! priority in use the queue is plain FIFO. The lock is held for a few pointer moves only.

use std::cmp::Reverse;
use std::collections::{BTreeMap, VecDeque};
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// How many pops in a row may pass over the oldest waiting task before it is served.
pub(crate) const OVERTAKE_LIMIT: u32 = 8;

/// An item with a priority: higher is served first.
pub(crate) trait Ranked {
    fn priority(&self) -> i32;
}

/// Why an item could not be pushed; the item comes back.
#[derive(Debug)]
pub(crate) enum PushError<T> {
    Full(T),
    Closed(T),
}

/// The items under the lock.
struct Waiting<T> {
    /// Items handed back by a worker that left (retired or gave up): served before the rest,
    /// never refused, so nothing is lost to capacity or shutdown.
    returned: VecDeque<T>,
    /// Per priority, highest first: `(arrival number, item)` in arrival order.
    by_priority: BTreeMap<Reverse<i32>, VecDeque<(u64, T)>>,
    /// Items in `by_priority` (the ones that count against the capacity).
    accepted: usize,
    next_arrival: u64,
    /// Pops in a row that passed over the oldest item.
    overtakes: u32,
}

impl<T: Ranked> Waiting<T> {
    fn insert(&mut self, item: T) {
        let arrival = self.next_arrival;
        self.next_arrival += 1;
        self.by_priority.entry(Reverse(item.priority())).or_default().push_back((arrival, item));
        self.accepted += 1;
    }

    /// The priority class whose front item goes next (see the module doc).
    fn next_class(&self) -> Option<Reverse<i32>> {
        let (&top, _) = self.by_priority.first_key_value()?;
        if self.overtakes < OVERTAKE_LIMIT {
            return Some(top);
        }
        self.by_priority.iter().min_by_key(|(_, items)| items.front().map_or(u64::MAX, |(n, _)| *n)).map(|(&k, _)| k)
    }

    /// The next item if `accept` takes it.
    fn pop_if(&mut self, accept: impl FnOnce(&T) -> bool) -> Option<T> {
        if let Some(item) = self.returned.front() {
            return if accept(item) { self.returned.pop_front() } else { None };
        }
        let class = self.next_class()?;
        let items = self.by_priority.get_mut(&class)?;
        let (arrival, item) = items.front()?;
        if !accept(item) {
            return None;
        }
        let arrival = *arrival;
        let (_, item) = items.pop_front()?;
        if items.is_empty() {
            self.by_priority.remove(&class);
        }
        self.accepted -= 1;
        let oldest = self.by_priority.values().filter_map(|items| items.front()).all(|(n, _)| *n > arrival);
        self.overtakes = if oldest { 0 } else { self.overtakes + 1 };
        Some(item)
    }
}

pub(crate) struct TaskQueue<T> {
    waiting: Mutex<Waiting<T>>,
    capacity: Option<usize>,
    /// Items waiting, returned ones included (read without the lock).
    len: AtomicUsize,
    /// Rung after every push and on close; idle workers wait on it.
    items: Notify,
    /// Rung after every pop; async producers wait on it when the queue is full.
    space: Notify,
    /// Signalled after every pop and on close; blocked synchronous producers wait on it.
    space_blocking: Condvar,
    closed: AtomicBool,
}

impl<T: Ranked> TaskQueue<T> {
    /// A queue holding at most `capacity` waiting items (`None`: unbounded).
    pub(crate) fn new(capacity: Option<usize>) -> Self {
        Self {
            waiting: Mutex::new(Waiting {
                returned: VecDeque::new(),
                by_priority: BTreeMap::new(),
                accepted: 0,
                next_arrival: 0,
                overtakes: 0,
            }),
            capacity,
            len: AtomicUsize::new(0),
            items: Notify::new(),
            space: Notify::new(),
            space_blocking: Condvar::new(),
            closed: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Waiting<T>> {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Inserts `item` if there is room, under the lock; the item comes back if not.
    fn insert(&self, waiting: &mut Waiting<T>, item: T) -> Result<(), PushError<T>> {
        if self.is_closed() {
            return Err(PushError::Closed(item));
        }
        if self.capacity.is_some_and(|cap| waiting.accepted >= cap) {
            return Err(PushError::Full(item));
        }
        waiting.insert(item);
        self.len.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    /// Pushes without blocking.
    pub(crate) fn try_push(&self, item: T) -> Result<(), PushError<T>> {
        let pushed = self.insert(&mut self.lock(), item);
        if pushed.is_ok() {
            self.items.notify_one();
        }
        pushed
    }

    /// Pushes, blocking the calling thread up to `timeout` while the queue is full.
    /// Never call this from the runtime's threads.
    pub(crate) fn push_blocking(&self, item: T, timeout: Duration) -> Result<(), PushError<T>> {
        let until = Instant::now() + timeout;
        let mut waiting = self.lock();
        let mut item = item;
        loop {
            match self.insert(&mut waiting, item) {
                Err(PushError::Full(back)) => item = back,
                other => {
                    drop(waiting);
                    if other.is_ok() {
                        self.items.notify_one();
                    }
                    return other;
                }
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(PushError::Full(item));
            }
            waiting = self.space_blocking.wait_timeout(waiting, left).unwrap_or_else(PoisonError::into_inner).0;
        }
    }

    /// Pushes, awaiting free space while the queue is full.
    pub(crate) async fn push(&self, mut item: T) -> Result<(), PushError<T>> {
        loop {
            let mut space = pin!(self.space.notified());
            space.as_mut().enable();
            match self.try_push(item) {
                Err(PushError::Full(back)) => item = back,
                other => return other,
            }
            space.await;
        }
    }

    /// Puts back an item that was already accepted once; it is served first.
    pub(crate) fn give_back(&self, item: T) {
        self.lock().returned.push_back(item);
        self.len.fetch_add(1, Ordering::AcqRel);
        self.items.notify_one();
    }

    /// Takes the next item without waiting.
    pub(crate) fn try_pop(&self) -> Option<T> {
        self.try_pop_if(|_| true)
    }

    /// Takes the next item without waiting, if `accept` takes it (the order is not changed:
    /// when the next item is refused, nothing is taken).
    pub(crate) fn try_pop_if(&self, accept: impl FnOnce(&T) -> bool) -> Option<T> {
        let mut waiting = self.lock();
        let item = waiting.pop_if(accept)?;
        let left = self.len.fetch_sub(1, Ordering::AcqRel) - 1;
        drop(waiting);
        self.space.notify_one();
        self.space_blocking.notify_one();
        if left > 0 {
            // Pass the wake-up on: two pushes may have left a single stored permit.
            self.items.notify_one();
        }
        Some(item)
    }

    /// Waits for an item; `None` once the queue is closed and empty. Cancel-safe: an item is
    /// only taken in the same poll that returns it.
    pub(crate) async fn pop(&self) -> Option<T> {
        loop {
            let mut rung = pin!(self.items.notified());
            rung.as_mut().enable();
            if let Some(item) = self.try_pop() {
                return Some(item);
            }
            if self.is_closed() {
                return None;
            }
            rung.await;
        }
    }

    /// Resolves at the next push (or close), consuming its wake-up; for the single consumer.
    pub(crate) async fn pushed(&self) {
        self.items.notified().await;
    }

    /// Refuses new items and wakes every waiting worker; items already queued stay.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        // Through the lock, so a producer between its check and its wait cannot miss this.
        drop(self.lock());
        self.space_blocking.notify_all();
        self.items.notify_waiters();
        self.space.notify_waiters();
    }

    /// Takes every queued item.
    pub(crate) fn drain(&self) -> Vec<T> {
        let mut items = Vec::with_capacity(self.len());
        {
            let mut waiting = self.lock();
            while let Some(item) = waiting.pop_if(|_| true) {
                items.push(item);
            }
            self.len.store(0, Ordering::Release);
        }
        if !items.is_empty() {
            self.space.notify_waiters();
            self.space_blocking.notify_all();
        }
        items
    }

    /// Items waiting, returned ones included.
    pub(crate) fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    impl Ranked for i32 {
        fn priority(&self) -> i32 {
            0
        }
    }

    /// `(priority, name)`.
    impl Ranked for (i32, &'static str) {
        fn priority(&self) -> i32 {
            self.0
        }
    }

    fn names(q: &TaskQueue<(i32, &'static str)>) -> Vec<&'static str> {
        std::iter::from_fn(|| q.try_pop()).map(|(_, name)| name).collect()
    }

    #[test]
    fn higher_priority_first_fifo_within_a_priority() {
        let q = TaskQueue::new(None);
        for item in [(0, "low1"), (0, "low2"), (5, "high1"), (-3, "neg"), (5, "high2"), (1, "mid")] {
            q.try_push(item).unwrap();
        }
        assert_eq!(names(&q), ["high1", "high2", "mid", "low1", "low2", "neg"]);
        assert_eq!(q.len(), 0);
    }

    #[test]
    fn the_oldest_task_is_overtaken_at_most_the_limit_in_a_row() {
        let q = TaskQueue::new(None);
        q.try_push((0, "old")).unwrap();
        let limit = OVERTAKE_LIMIT as usize;
        let high = ["h"; 3 * OVERTAKE_LIMIT as usize];
        for name in high {
            q.try_push((1, name)).unwrap();
        }
        let order = names(&q);
        assert_eq!(order.iter().position(|n| *n == "old"), Some(limit), "{order:?}");
        // Two starved classes: each oldest in turn gets its place after `limit` overtakes.
        let q = TaskQueue::new(None);
        q.try_push((0, "a")).unwrap();
        q.try_push((1, "b")).unwrap();
        for name in high {
            q.try_push((2, name)).unwrap();
        }
        let order = names(&q);
        let a = order.iter().position(|n| *n == "a").unwrap();
        let b = order.iter().position(|n| *n == "b").unwrap();
        assert_eq!((a, b), (limit, 2 * limit + 1), "{order:?}");
    }

    #[test]
    fn taking_the_oldest_resets_the_count() {
        let q = TaskQueue::new(None);
        // Overtake 'old' limit-1 times, then serve it at its turn: no forced pick carries over.
        q.try_push((1, "old")).unwrap();
        q.try_push((0, "low")).unwrap();
        for _ in 0..OVERTAKE_LIMIT - 1 {
            q.try_push((2, "h")).unwrap();
        }
        let order = names(&q);
        assert_eq!(&order[OVERTAKE_LIMIT as usize - 1..], ["old", "low"]);
    }

    #[test]
    fn pop_if_leaves_a_refused_item_in_place() {
        let q = TaskQueue::new(None);
        q.try_push((1, "keyed")).unwrap();
        q.try_push((0, "plain")).unwrap();
        assert_eq!(q.try_pop_if(|(_, n)| *n != "keyed"), None, "the next item is refused: nothing taken");
        assert_eq!(names(&q), ["keyed", "plain"]);
    }

    #[test]
    fn a_blocked_producer_wakes_on_pop_and_on_close() {
        let q = Arc::new(TaskQueue::new(Some(1)));
        q.try_push(1).unwrap();
        let q2 = Arc::clone(&q);
        let producer = std::thread::spawn(move || q2.push_blocking(2, Duration::from_secs(30)).is_ok());
        while q.try_pop().is_none() {}
        assert!(producer.join().unwrap());
        assert_eq!(q.try_pop(), Some(2));
        q.try_push(3).unwrap();
        let q2 = Arc::clone(&q);
        let started = Instant::now();
        let producer = std::thread::spawn(move || {
            matches!(q2.push_blocking(4, Duration::from_secs(30)), Err(PushError::Closed(4)))
        });
        std::thread::sleep(Duration::from_millis(20));
        q.close();
        assert!(producer.join().unwrap());
        assert!(started.elapsed() < Duration::from_secs(10), "close woke the producer");
    }

    #[test]
    fn fifo_and_capacity() {
        let q = TaskQueue::new(Some(2));
        assert!(q.try_push(1).is_ok());
        assert!(q.try_push(2).is_ok());
        assert!(matches!(q.try_push(3), Err(PushError::Full(3))));
        assert!(matches!(q.push_blocking(3, Duration::from_millis(10)), Err(PushError::Full(3))));
        assert_eq!(q.try_pop(), Some(1));
        assert!(q.try_push(3).is_ok());
        q.give_back(9);
        assert_eq!(q.len(), 3, "given-back items ignore the capacity");
        assert_eq!(q.try_pop(), Some(9), "and are served first");
        assert_eq!(q.drain(), vec![2, 3]);
    }

    #[test]
    fn closed_queue_refuses_and_hands_back() {
        let q = TaskQueue::new(None);
        q.try_push(7).unwrap();
        q.close();
        assert!(matches!(q.try_push(8), Err(PushError::Closed(8))));
        assert_eq!(q.len(), 1, "items queued before close stay");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pop_wakes_on_push_and_ends_on_close() {
        let q = Arc::new(TaskQueue::new(Some(4)));
        let mut consumers = Vec::new();
        for _ in 0..3 {
            let q = Arc::clone(&q);
            consumers.push(tokio::spawn(async move {
                let mut got = Vec::new();
                while let Some(x) = q.pop().await {
                    got.push(x);
                }
                got
            }));
        }
        for i in 0..1000 {
            q.push(i).await.unwrap();
        }
        q.close();
        let mut all = Vec::new();
        for c in consumers {
            all.extend(c.await.unwrap());
        }
        all.sort_unstable();
        assert_eq!(all, (0..1000).collect::<Vec<_>>(), "every item exactly once");
    }

    #[tokio::test]
    async fn async_push_waits_for_space() {
        let q = Arc::new(TaskQueue::new(Some(1)));
        q.push(1).await.unwrap();
        let q2 = Arc::clone(&q);
        let producer = tokio::spawn(async move { q2.push(2).await.is_ok() });
        tokio::task::yield_now().await;
        assert_eq!(q.pop().await, Some(1));
        assert!(producer.await.unwrap());
        assert_eq!(q.pop().await, Some(2));
    }
}
