//! The pool's task queue: tasks in priority order (see [`crate::sched::line`]: FIFO within a
//! priority, and none starves), bounded or not, with two tokio doorbells so async workers await
//! it and a condition variable so synchronous callers block on a full queue with a timeout.
//!
//! Workers pull from the one shared queue when they are idle (late binding), so a task never
//! waits behind a running task while another worker sits idle. Tasks that wait for one worker
//! in particular (a keyed task whose worker is busy, see `sched::dispatch`) are parked in that
//! worker's own line here, so they still count as queued, keep their priority order, and are
//! drained with the rest on shutdown. The lock is held for a few pointer moves only.

use std::collections::{HashMap, VecDeque};
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::sched::line::PriorityLine;
pub(crate) use crate::sched::line::Ranked;

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
    /// Items for any consumer; the only ones that count against the capacity.
    shared: PriorityLine<T>,
    /// Items for one consumer, by its id.
    parked: HashMap<u64, PriorityLine<T>>,
}

impl<T: Ranked> Waiting<T> {
    fn pop_if(&mut self, accept: impl FnOnce(&T) -> bool) -> Option<T> {
        if let Some(item) = self.returned.front() {
            return if accept(item) { self.returned.pop_front() } else { None };
        }
        self.shared.pop_if(accept)
    }

    /// Items any consumer may take.
    fn unparked(&self) -> usize {
        self.returned.len() + self.shared.len()
    }
}

pub(crate) struct TaskQueue<T> {
    waiting: Mutex<Waiting<T>>,
    capacity: Option<usize>,
    /// At most this many pushed items unanswered (see [`TaskQueue::answered`]), if set.
    unanswered_cap: Option<usize>,
    /// Pushed items not answered yet; counted only with `unanswered_cap`.
    unanswered: AtomicUsize,
    /// Items waiting, returned and parked ones included (read without the lock).
    len: AtomicUsize,
    /// Parked items (read without the lock: the dispatcher's fast path).
    parked: AtomicUsize,
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
                shared: PriorityLine::default(),
                parked: HashMap::new(),
            }),
            capacity,
            unanswered_cap: None,
            unanswered: AtomicUsize::new(0),
            len: AtomicUsize::new(0),
            parked: AtomicUsize::new(0),
            items: Notify::new(),
            space: Notify::new(),
            space_blocking: Condvar::new(),
            closed: AtomicBool::new(false),
        }
    }

    /// Also refuses a push while `cap` pushed items are unanswered: each push counts until
    /// [`TaskQueue::answered`] is called for it.
    pub(crate) fn bounding_unanswered(mut self, cap: Option<usize>) -> Self {
        self.unanswered_cap = cap;
        self
    }

    /// One pushed item was answered: room for another push, if unanswered items are bounded.
    pub(crate) fn answered(&self) {
        // Under the lock, so a producer between its check and its wait does not miss it.
        let waiting = self.lock();
        self.unanswered.fetch_sub(1, Ordering::AcqRel);
        drop(waiting);
        self.space.notify_one();
        self.space_blocking.notify_one();
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
        if self.capacity.is_some_and(|cap| waiting.shared.len() >= cap) {
            return Err(PushError::Full(item));
        }
        if let Some(cap) = self.unanswered_cap {
            if self.unanswered.load(Ordering::Acquire) >= cap {
                return Err(PushError::Full(item));
            }
            self.unanswered.fetch_add(1, Ordering::AcqRel);
        }
        waiting.shared.push(item);
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
        // The counts change under the lock, so a concurrent `drain` cannot leave them off.
        let mut waiting = self.lock();
        waiting.returned.push_back(item);
        self.len.fetch_add(1, Ordering::AcqRel);
        drop(waiting);
        self.items.notify_one();
    }

    /// Takes the next item without waiting.
    pub(crate) fn try_pop(&self) -> Option<T> {
        self.try_pop_if(|_| true)
    }

    /// Takes the next item without waiting, if `accept` takes it (the order is not changed:
    /// when the next item is refused, nothing is taken). Parked items are not offered.
    pub(crate) fn try_pop_if(&self, accept: impl FnOnce(&T) -> bool) -> Option<T> {
        let mut waiting = self.lock();
        let item = waiting.pop_if(accept)?;
        self.len.fetch_sub(1, Ordering::AcqRel);
        let more = waiting.unparked() > 0;
        drop(waiting);
        self.space.notify_one();
        self.space_blocking.notify_one();
        if more {
            // Pass the wake-up on: two pushes may have left a single stored permit.
            self.items.notify_one();
        }
        Some(item)
    }

    /// Sets an already accepted item aside for consumer `owner` alone (it took it from the
    /// queue, but that consumer is busy); it keeps its priority order among `owner`'s items.
    pub(crate) fn park(&self, owner: u64, item: T) {
        let mut waiting = self.lock();
        waiting.parked.entry(owner).or_default().push(item);
        self.parked.fetch_add(1, Ordering::AcqRel);
        self.len.fetch_add(1, Ordering::AcqRel);
    }

    /// Takes the next item parked for `owner`.
    pub(crate) fn take_parked(&self, owner: u64) -> Option<T> {
        let mut waiting = self.lock();
        let line = waiting.parked.get_mut(&owner)?;
        let item = line.pop();
        if line.is_empty() {
            waiting.parked.remove(&owner);
        }
        if item.is_some() {
            self.parked.fetch_sub(1, Ordering::AcqRel);
            self.len.fetch_sub(1, Ordering::AcqRel);
        }
        item
    }

    /// The consumers with items parked for them.
    pub(crate) fn parked_owners(&self) -> Vec<u64> {
        if self.parked.load(Ordering::Acquire) == 0 {
            return Vec::new();
        }
        self.lock().parked.keys().copied().collect()
    }

    /// Puts every item parked for `owner` back in front of the queue, in their order (for any
    /// consumer again); returns whether there were any.
    pub(crate) fn unpark(&self, owner: u64) -> bool {
        let mut waiting = self.lock();
        let Some(mut line) = waiting.parked.remove(&owner) else { return false };
        self.parked.fetch_sub(line.len(), Ordering::AcqRel);
        waiting.returned.extend(std::iter::from_fn(|| line.pop()));
        drop(waiting);
        self.items.notify_one();
        true
    }

    /// Waits for an item; `None` once the queue is closed and empty (parked items count: they
    /// still wait for their consumer). Cancel-safe: an item is only taken in the same poll
    /// that returns it.
    pub(crate) async fn pop(&self) -> Option<T> {
        loop {
            let mut rung = pin!(self.items.notified());
            rung.as_mut().enable();
            if let Some(item) = self.try_pop() {
                return Some(item);
            }
            if self.is_closed() && self.len() == 0 {
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
            for mut line in std::mem::take(&mut waiting.parked).into_values() {
                items.extend(std::iter::from_fn(|| line.pop()));
            }
            self.parked.store(0, Ordering::Release);
            self.len.store(0, Ordering::Release);
        }
        if !items.is_empty() {
            self.space.notify_waiters();
            self.space_blocking.notify_all();
        }
        items
    }

    /// Items waiting, returned and parked ones included.
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

    // `(priority, name)` is `Ranked` by its priority (see `line`'s tests).

    fn names(q: &TaskQueue<(i32, &'static str)>) -> Vec<&'static str> {
        std::iter::from_fn(|| q.try_pop()).map(|(_, name)| name).collect()
    }

    #[test]
    fn priority_order_and_parked_items() {
        let q = TaskQueue::new(Some(3));
        for item in [(0, "low"), (2, "high"), (1, "mid")] {
            q.try_push(item).unwrap();
        }
        assert_eq!(q.try_pop(), Some((2, "high")));
        // Parked for consumer 7: counted, not offered to others, out of the capacity.
        q.park(7, (0, "p-low"));
        q.park(7, (3, "p-high"));
        assert_eq!(q.len(), 4);
        q.try_push((0, "low2")).unwrap();
        assert_eq!(q.parked_owners(), [7]);
        assert_eq!(q.take_parked(7), Some((3, "p-high")), "a parked line is in priority order too");
        assert_eq!(q.take_parked(9), None);
        assert!(q.unpark(7));
        assert!(!q.unpark(7));
        assert_eq!(names(&q), ["p-low", "mid", "low", "low2"], "unparked items go first");
        q.park(1, (0, "left"));
        assert_eq!(q.drain(), [(0, "left")], "drain takes parked items too");
        assert_eq!(q.len(), 0);
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
