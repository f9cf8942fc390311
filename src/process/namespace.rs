//! [`NamespaceStore`]: a task tree's shared namespace, held by the parent and served to its
//! worker processes as upcalls (see [`super::upcall`]): named values (opaque bytes, pickles in
//! practice) and one lock recorded with the process holding it.
//!
//! The lock belongs to a worker process (by pid) or to the parent. A worker that dies holding it
//! gives it back at once, from the supervisor's worker-exit hook ([`NamespaceStore::worker_exited`]).
//! Waiting for the lock never blocks a thread of the supervisor: a worker's `LOCK` is answered
//! later, by a future its serve task awaits, and the parent waits on a condition variable.
//!
//! Requests (the upcall's payload; everything is little-endian):
//!
//! | op | body | answer body |
//! |----|------|-------------|
//! | `GET` | key | the value |
//! | `SET` | key length `u32`, key, value | - |
//! | `DELETE` | key | - |
//! | `KEYS` | - | per key: length `u32`, key |
//! | `SNAPSHOT` | - | per key: length `u32`, key, value length `u64`, value |
//! | `LOCK` | timeout seconds `f64` (negative or too large for a `Duration`: none) | - |
//! | `UNLOCK` | - | - |
//!
//! An answer is a status byte ([`OK`], [`MISSING`], [`TIMED_OUT`], [`REFUSED`] with a UTF-8
//! reason), then the body. Keys are UTF-8, 1 to [`MAX_KEY_LEN`] bytes, not starting with `_`. A
//! request that breaks these rules is a [`ProtocolError`].

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::frame::ProtocolError;
use super::upcall::{UpcallAnswer, UpcallHandler};

/// Op: read one value.
pub(crate) const GET: u8 = 1;
/// Op: set one value.
pub(crate) const SET: u8 = 2;
/// Op: delete one value.
pub(crate) const DELETE: u8 = 3;
/// Op: list the keys.
pub(crate) const KEYS: u8 = 4;
/// Op: read every value.
pub(crate) const SNAPSHOT: u8 = 5;
/// Op: take the lock (waits up to the timeout).
pub(crate) const LOCK: u8 = 6;
/// Op: give the lock back.
pub(crate) const UNLOCK: u8 = 7;

/// Status: done; the body follows.
pub(crate) const OK: u8 = 0;
/// Status: no value under that key.
pub(crate) const MISSING: u8 = 1;
/// Status: the lock was not free within the timeout.
pub(crate) const TIMED_OUT: u8 = 2;
/// Status: a well-formed request the store refuses; a UTF-8 reason follows.
pub(crate) const REFUSED: u8 = 3;

/// The longest key, in bytes.
pub(crate) const MAX_KEY_LEN: usize = 1024;
/// The most keys a namespace holds: a worker cannot grow the parent without bound.
pub(crate) const MAX_KEYS: usize = 1 << 16;

/// Who holds the lock, or waits for it: a worker process, or the parent (`pid` `None`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Holder {
    /// Tells apart two waits of the same holder (a timed-out one and the next).
    ticket: u64,
    pid: Option<u32>,
}

#[derive(Debug)]
struct Waiter {
    holder: Holder,
    /// How a worker's parked `LOCK` learns it got the lock (the parent's waits on the condvar).
    grant: Option<oneshot::Sender<()>>,
}

#[derive(Debug, Default)]
struct State {
    /// Shared, so that reading a large value copies it outside the lock.
    values: HashMap<String, Arc<Vec<u8>>>,
    owner: Option<Holder>,
    waiters: VecDeque<Waiter>,
    next_ticket: u64,
}

impl State {
    fn ticket(&mut self, pid: Option<u32>) -> Holder {
        self.next_ticket += 1;
        Holder { ticket: self.next_ticket, pid }
    }

    /// Gives the free lock to the first waiter still waiting (a worker whose wait was dropped is
    /// skipped). Returns whether the parent got it, to wake its waiting thread.
    fn hand_on(&mut self) -> bool {
        self.owner = None;
        while let Some(waiter) = self.waiters.pop_front() {
            if waiter.grant.is_some_and(|grant| grant.send(()).is_err()) {
                continue;
            }
            self.owner = Some(waiter.holder);
            return waiter.holder.pid.is_none();
        }
        false
    }

    /// Takes the lock for `holder` if it is free and nobody queues for it.
    fn try_take(&mut self, holder: Holder) -> bool {
        if self.owner.is_none() && self.waiters.is_empty() {
            self.owner = Some(holder);
            return true;
        }
        false
    }
}

/// A task tree's namespace: values and a lock, shared by the parent and the tree's workers.
#[derive(Debug, Default)]
pub(crate) struct NamespaceStore {
    state: Mutex<State>,
    /// Rung when the lock passes to the parent.
    parent_turn: Condvar,
}

fn bad(message: impl Into<String>) -> ProtocolError {
    ProtocolError(format!("malformed namespace request: {}", message.into()))
}

/// Checks a key a worker sent.
fn parse_key(raw: &[u8]) -> Result<&str, ProtocolError> {
    let key = std::str::from_utf8(raw).map_err(|_| bad("key is not UTF-8"))?;
    check_key(key).map_err(bad)?;
    Ok(key)
}

/// Whether `key` may name a value: 1 to [`MAX_KEY_LEN`] bytes, not starting with `_`.
///
/// # Errors
/// Why it may not.
pub(crate) fn check_key(key: &str) -> Result<(), String> {
    match key.len() {
        0 => Err("empty key".to_owned()),
        n if n > MAX_KEY_LEN => Err(format!("key of {n} bytes is over {MAX_KEY_LEN}")),
        _ if key.starts_with('_') => Err(format!("key {key:?} starts with '_'")),
        _ => Ok(()),
    }
}

fn answer(status: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + body.len());
    out.push(status);
    out.extend_from_slice(body);
    out
}

fn put_key(out: &mut Vec<u8>, key: &str) {
    out.extend_from_slice(&u32::try_from(key.len()).expect("keys are short").to_le_bytes());
    out.extend_from_slice(key.as_bytes());
}

impl NamespaceStore {
    /// An empty namespace with a free lock.
    #[must_use]
    pub(crate) fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The value under `key`.
    #[must_use]
    pub(crate) fn get(&self, key: &str) -> Option<Arc<Vec<u8>>> {
        self.state().values.get(key).map(Arc::clone)
    }

    /// Sets the value under `key`.
    ///
    /// # Errors
    /// A bad key, or a full namespace.
    pub(crate) fn set(&self, key: &str, value: Vec<u8>) -> Result<(), String> {
        check_key(key)?;
        let mut state = self.state();
        if state.values.len() >= MAX_KEYS && !state.values.contains_key(key) {
            return Err(format!("the namespace is full ({MAX_KEYS} keys)"));
        }
        state.values.insert(key.to_owned(), Arc::new(value));
        Ok(())
    }

    /// Deletes the value under `key`; whether there was one.
    pub(crate) fn delete(&self, key: &str) -> bool {
        self.state().values.remove(key).is_some()
    }

    /// Every key, sorted.
    #[must_use]
    pub(crate) fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.state().values.keys().cloned().collect();
        keys.sort_unstable();
        keys
    }

    /// Every key and value, sorted by key.
    #[must_use]
    pub(crate) fn snapshot(&self) -> Vec<(String, Arc<Vec<u8>>)> {
        let mut items: Vec<_> = self.state().values.iter().map(|(k, v)| (k.clone(), Arc::clone(v))).collect();
        items.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        items
    }

    /// The pid of the worker process holding the lock (`Some(None)`: the parent holds it).
    #[must_use]
    pub(crate) fn holder(&self) -> Option<Option<u32>> {
        self.state().owner.map(|h| h.pid)
    }

    /// Takes the lock for the parent, waiting up to `timeout` (`None`: no limit) in slices of
    /// at most `slice`; between slices `interrupted()` may give up. Blocks this thread: call it
    /// off the supervisor's runtime, without the interpreter attached.
    ///
    /// # Errors
    /// Whatever `interrupted` returned; the lock is not held then.
    pub(crate) fn lock_parent<E>(
        &self,
        timeout: Option<Duration>,
        slice: Duration,
        mut interrupted: impl FnMut() -> Result<(), E>,
    ) -> Result<bool, E> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut state = self.state();
        let me = state.ticket(None);
        if state.try_take(me) {
            return Ok(true);
        }
        state.waiters.push_back(Waiter { holder: me, grant: None });
        loop {
            let left = deadline.map_or(slice, |d| d.saturating_duration_since(Instant::now()).min(slice));
            state = self
                .parent_turn
                .wait_timeout_while(state, left, |s| s.owner != Some(me))
                .unwrap_or_else(PoisonError::into_inner)
                .0;
            if state.owner == Some(me) {
                return Ok(true);
            }
            let expired = deadline.is_some_and(|d| Instant::now() >= d);
            let stop = if expired {
                Ok(())
            } else {
                drop(state);
                let stop = interrupted();
                state = self.state();
                stop
            };
            if expired || stop.is_err() {
                // Granted while we looked away: give it on, since the caller will not hold it.
                if state.owner == Some(me) {
                    self.release(&mut state);
                } else {
                    state.waiters.retain(|w| w.holder != me);
                }
                return stop.map(|()| false);
            }
        }
    }

    /// Gives the lock back from the parent; `false` if the parent does not hold it.
    pub(crate) fn unlock_parent(&self) -> bool {
        let mut state = self.state();
        if state.owner.is_none_or(|h| h.pid.is_some()) {
            return false;
        }
        self.release(&mut state);
        true
    }

    fn release(&self, state: &mut State) {
        if state.hand_on() {
            self.parent_turn.notify_all();
        }
    }

    /// A worker's `LOCK`: granted now, refused, or parked until the lock is free or `timeout`
    /// passes (the answer future then takes itself off the queue).
    fn lock_worker(self: &Arc<Self>, pid: u32, timeout: Option<Duration>) -> UpcallAnswer {
        let mut state = self.state();
        if state.owner.is_some_and(|h| h.pid == Some(pid)) {
            return UpcallAnswer::Now(answer(REFUSED, b"this process holds the namespace lock already"));
        }
        let me = state.ticket(Some(pid));
        if state.try_take(me) {
            return UpcallAnswer::Now(answer(OK, &[]));
        }
        let (grant, granted) = oneshot::channel();
        state.waiters.push_back(Waiter { holder: me, grant: Some(grant) });
        drop(state);
        let store = Arc::clone(self);
        UpcallAnswer::Later(Box::pin(async move {
            let got = match timeout {
                Some(timeout) => tokio::time::timeout(timeout, granted).await.is_ok_and(|r| r.is_ok()),
                None => granted.await.is_ok(),
            };
            if got {
                return answer(OK, &[]);
            }
            let mut state = store.state();
            if state.owner == Some(me) {
                return answer(OK, &[]); // granted as the timeout fired
            }
            state.waiters.retain(|w| w.holder != me);
            answer(TIMED_OUT, &[])
        }))
    }

    fn unlock_worker(&self, pid: u32) -> Vec<u8> {
        let mut state = self.state();
        if state.owner.is_none_or(|h| h.pid != Some(pid)) {
            return answer(REFUSED, b"this process does not hold the namespace lock");
        }
        self.release(&mut state);
        answer(OK, &[])
    }

    /// Answers one request from worker `pid` (see the module docs for the format).
    fn serve(self: &Arc<Self>, pid: u32, request: &[u8]) -> Result<UpcallAnswer, ProtocolError> {
        let (&op, body) = request.split_first().ok_or_else(|| bad("empty request"))?;
        let now = |bytes: Vec<u8>| Ok(UpcallAnswer::Now(bytes));
        match op {
            GET => match self.get(parse_key(body)?) {
                Some(value) => now(answer(OK, &value)),
                None => now(answer(MISSING, &[])),
            },
            SET => {
                let len = body.get(..4).ok_or_else(|| bad("SET without a key length"))?;
                let len = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
                let key = body.get(4..4usize.saturating_add(len)).ok_or_else(|| bad("SET key runs past the end"))?;
                let key = parse_key(key)?;
                match self.set(key, body[4 + len..].to_vec()) {
                    Ok(()) => now(answer(OK, &[])),
                    Err(why) => now(answer(REFUSED, why.as_bytes())),
                }
            }
            DELETE => match self.delete(parse_key(body)?) {
                true => now(answer(OK, &[])),
                false => now(answer(MISSING, &[])),
            },
            KEYS | SNAPSHOT | UNLOCK if !body.is_empty() => Err(bad(format!("op {op} takes no body"))),
            KEYS => {
                let mut out = vec![OK];
                self.keys().iter().for_each(|key| put_key(&mut out, key));
                now(out)
            }
            SNAPSHOT => {
                let mut out = vec![OK];
                for (key, value) in self.snapshot() {
                    put_key(&mut out, &key);
                    out.extend_from_slice(&(value.len() as u64).to_le_bytes());
                    out.extend_from_slice(&value);
                }
                now(out)
            }
            LOCK => {
                let raw: [u8; 8] = body.try_into().map_err(|_| bad("LOCK takes an 8-byte timeout"))?;
                let seconds = f64::from_le_bytes(raw);
                if seconds.is_nan() {
                    return Err(bad("LOCK timeout is NaN"));
                }
                // Negative: no limit; so is one too large for a Duration (+inf included).
                let timeout = Duration::try_from_secs_f64(seconds).ok().filter(|_| seconds >= 0.0);
                Ok(self.lock_worker(pid, timeout))
            }
            UNLOCK => now(self.unlock_worker(pid)),
            other => Err(bad(format!("unknown op {other}"))),
        }
    }
}

/// The handler a pool's [`super::ProcessSpec::upcalls`] holds for a namespace.
#[derive(Debug, Clone)]
pub(crate) struct NamespaceUpcalls(pub Arc<NamespaceStore>);

impl UpcallHandler for NamespaceUpcalls {
    fn call(&self, pid: u32, request: &[u8]) -> Result<UpcallAnswer, ProtocolError> {
        self.0.serve(pid, request)
    }

    /// A dead worker's lock goes to the next waiter, and its parked waits leave the queue.
    fn worker_exited(&self, pid: u32) {
        let mut state = self.0.state();
        state.waiters.retain(|w| w.holder.pid != Some(pid));
        if state.owner.is_some_and(|h| h.pid == Some(pid)) {
            self.0.release(&mut state);
        }
    }

    fn refusal(&self, reason: &str) -> Vec<u8> {
        answer(REFUSED, reason.as_bytes())
    }
}

#[cfg(test)]
#[path = "namespace_tests.rs"]
mod tests;
