//! The pool's task queue: a lock-free crossbeam channel (bounded or not) with two tokio
//! doorbells, so synchronous callers block on it with a timeout and async workers await it.
//!
//! Workers pull from the one shared queue when they are idle (late binding), so a task never
//! waits behind a running task while another worker sits idle.

use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crossbeam_channel::{Receiver, SendTimeoutError, Sender, TrySendError};
use tokio::sync::Notify;

/// Why an item could not be pushed; the item comes back.
#[derive(Debug)]
pub(crate) enum PushError<T> {
    Full(T),
    Closed(T),
}

pub(crate) struct TaskQueue<T> {
    tx: Sender<T>,
    rx: Receiver<T>,
    /// Items handed back by a worker that left (retired or gave up): served before the rest,
    /// never refused, so nothing is lost to capacity or shutdown.
    returned_tx: Sender<T>,
    returned_rx: Receiver<T>,
    /// Rung after every push and on close; idle workers wait on it.
    items: Notify,
    /// Rung after every pop; async producers wait on it when the queue is full.
    space: Notify,
    closed: AtomicBool,
}

impl<T> TaskQueue<T> {
    /// A queue holding at most `capacity` waiting items (`None`: unbounded).
    pub(crate) fn new(capacity: Option<usize>) -> Self {
        let (tx, rx) = match capacity {
            Some(cap) => crossbeam_channel::bounded(cap),
            None => crossbeam_channel::unbounded(),
        };
        let (returned_tx, returned_rx) = crossbeam_channel::unbounded();
        Self {
            tx,
            rx,
            returned_tx,
            returned_rx,
            items: Notify::new(),
            space: Notify::new(),
            closed: AtomicBool::new(false),
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Pushes without blocking.
    pub(crate) fn try_push(&self, item: T) -> Result<(), PushError<T>> {
        if self.is_closed() {
            return Err(PushError::Closed(item));
        }
        match self.tx.try_send(item) {
            Ok(()) => {
                self.items.notify_one();
                Ok(())
            }
            Err(TrySendError::Full(item)) => Err(PushError::Full(item)),
            Err(TrySendError::Disconnected(item)) => Err(PushError::Closed(item)),
        }
    }

    /// Pushes, blocking the calling thread up to `timeout` while the queue is full.
    /// Never call this from the runtime's threads.
    pub(crate) fn push_blocking(&self, item: T, timeout: Duration) -> Result<(), PushError<T>> {
        let item = match self.try_push(item) {
            Err(PushError::Full(item)) => item,
            other => return other,
        };
        match self.tx.send_timeout(item, timeout) {
            Ok(()) => {
                self.items.notify_one();
                if self.is_closed() {
                    // Closed while we waited: the item may be stranded; the caller's recheck
                    // (see `Supervisor::submit_with`) drains it.
                }
                Ok(())
            }
            Err(SendTimeoutError::Timeout(item)) => {
                if self.is_closed() {
                    Err(PushError::Closed(item))
                } else {
                    Err(PushError::Full(item))
                }
            }
            Err(SendTimeoutError::Disconnected(item)) => Err(PushError::Closed(item)),
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
        let _ = self.returned_tx.send(item);
        self.items.notify_one();
    }

    /// Takes an item without waiting.
    pub(crate) fn try_pop(&self) -> Option<T> {
        if let Ok(item) = self.returned_rx.try_recv() {
            return Some(item);
        }
        let item = self.rx.try_recv().ok()?;
        self.space.notify_one();
        if !self.rx.is_empty() {
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
        self.items.notify_waiters();
        self.space.notify_waiters();
    }

    /// Takes every queued item.
    pub(crate) fn drain(&self) -> Vec<T> {
        let items: Vec<T> = self.returned_rx.try_iter().chain(self.rx.try_iter()).collect();
        if !items.is_empty() {
            self.space.notify_waiters();
        }
        items
    }

    pub(crate) fn len(&self) -> usize {
        self.rx.len() + self.returned_rx.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

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
