//! Parking on a limit table: a process refused by its limits sleeps on the table's generation
//! word (a futex shared between processes) until a holder gives units back, instead of polling.
//!
//! # Protocol
//! Two words of the table header: `generation`, bumped by every change that can let a refused
//! request through (a lease released, units refunded, a dead holder's units reclaimed), and
//! `waiters`, how many processes are parked or about to park.
//!
//! ```text
//! waiter                                   giver
//! W1 seen = generation.load()              G1 give the units back (an RMW on the limit)
//! W2 try every limit (reads the limits)    G2 generation.fetch_add(1)
//! W3 refused: waiters.fetch_add(1)         G3 if waiters.load() > 0: futex_wake(generation)
//! W4 futex_wait(generation, seen, slice)
//! W5 waiters.fetch_sub(1); back to W1
//! ```
//!
//! An attempt refused after taking units (all or nothing: it gives them back) is a giver too,
//! and its own bump must not wake itself: it parks on `seen + 1` when its bump was the only
//! one since W1, and tries again at once otherwise ([`Parking::after_own_give`]).
//!
//! Every access is SeqCst, and a SeqCst fence separates W3 from W4 and G2 from G3. Why no
//! wake-up is lost (a waiter parked at W4 while the units it waits for are free, with nobody
//! left to wake it): take the give G1 that the attempt W2 did not see.
//!
//! 1. `seen` predates the bump G2. Had W1 read G2's value, G2 (a release) would happen before
//!    W2 (after an acquire), and so would G1, sequenced before G2: W2 would see G1.
//! 2. W3/W4 against G2/G3 is the store-buffering (Dekker) pattern, which the two fences settle:
//!    of the two fences one comes first in their total order. If the giver's does, W4's compare
//!    sees G2 (or later), differs from `seen`, and the waiter does not sleep. If the waiter's
//!    does, G3 sees W3: `waiters > 0`, so the giver wakes the word. The kernel compares the
//!    word and queues the waiter atomically with respect to `futex_wake` (both under the
//!    futex's hash-bucket lock), so that wake finds the waiter queued, or the compare comes
//!    after G2 and fails.
//!
//! Either way the waiter runs W1..W2 again after G1, and sees the units.
//! `src/limits/loom_tests.rs` checks this under every interleaving loom explores, with a model
//! futex whose waits have no timeout (a lost wake-up is a deadlock there).
//!
//! The futex compares 32 bits: the low half of the generation word. A waiter could miss a bump
//! only if exactly 2^32 bumps landed between W1 and W4 (and its slice still ends the wait).
//! Time refills rate limits without any give, so a waiter refused by one never parks longer
//! than the refusal said; and every wait is cut in slices (at most [`SLICE`]) so the caller can
//! check for signals, a deadline, or dead holders whose units were never given back. A waiter
//! killed between W3 and W5 leaves `waiters` one too high for ever: then every give costs a
//! needless (harmless) wake system call.

use std::time::Duration;

/// The longest one park lasts before the waiter looks around (signals, deadline, dead holders).
pub(super) const SLICE: Duration = Duration::from_millis(50);

/// A word of the table that processes can park on: the standard atomic with the kernel's futex,
/// or loom's with a model of it.
pub(super) trait ParkWord {
    /// Loads the word (SeqCst).
    fn get(&self) -> u64;
    /// Adds `delta` (wrapping, SeqCst); returns the value before.
    fn add(&self, delta: u64) -> u64;
    /// Subtracts one (SeqCst).
    fn sub_one(&self);
    /// Sleeps while the low 32 bits of the word are `seen`, at most `timeout`; spurious
    /// returns are fine (callers loop).
    fn park(&self, seen: u32, timeout: Duration);
    /// Wakes every process parked on the word.
    fn wake_all(&self);
    /// A sequentially consistent fence of the same world (standard or loom).
    fn fence();
}

/// The generation and waiter words of one table.
pub(super) struct Parking<'a, W: ParkWord> {
    /// Bumped by every give (G2).
    pub(super) generation: &'a W,
    /// Processes parked or about to park.
    pub(super) waiters: &'a W,
}

impl<W: ParkWord> Parking<'_, W> {
    /// W1: the generation to park on if the attempt that follows is refused.
    pub(super) fn observe(&self) -> u32 {
        // Truncation on purpose: the futex compares the low 32 bits.
        self.generation.get() as u32
    }

    /// W3..W5: sleeps until a give after `seen` (or at most `timeout`).
    pub(super) fn park(&self, seen: u32, timeout: Duration) {
        self.waiters.add(1);
        W::fence(); // W3 before the compare in W4 (store-load: see the proof)
        self.generation.park(seen, timeout);
        self.waiters.sub_one();
    }

    /// G2..G3: tells parked processes that units came back (after giving them back). Returns
    /// the generation before the bump, for a waiter that gave back units itself (see
    /// [`Parking::after_own_give`]).
    pub(super) fn notify(&self) -> u32 {
        let before = self.generation.add(1) as u32;
        W::fence(); // G2 before G3 (store-load: see the proof)
        if self.waiters.get() > 0 {
            self.generation.wake_all();
        }
        before
    }

    /// The generation a waiter that observed `seen`, then gave back units itself (a refused
    /// attempt undoing what it took; its notify found the generation at `before`), should park
    /// on: `seen + 1` (its own bump) if nobody else gave in between, or `None` if somebody
    /// did: then it tries again at once. Parking on `seen` would return at once, every time,
    /// and spin for as long as its limits refuse.
    pub(super) fn after_own_give(seen: u32, before: u32) -> Option<u32> {
        (before == seen).then(|| seen.wrapping_add(1))
    }
}

/// The [`ParkWord`] methods that are plain SeqCst atomics, the same for the standard atomic
/// and loom's (each expansion resolves `SeqCst` and `fence` to its own world's).
macro_rules! seq_cst_word_ops {
    () => {
        fn get(&self) -> u64 {
            self.load(SeqCst)
        }

        fn add(&self, delta: u64) -> u64 {
            self.fetch_add(delta, SeqCst)
        }

        fn fence() {
            fence(SeqCst);
        }
    };
}

/// The kernel's futex, on the words of a mapped table (in loom builds too: the table's words
/// are standard atomics there as well).
mod futex {
    use std::sync::atomic::{fence, AtomicU64, Ordering::SeqCst};
    use std::time::Duration;

    /// The address of the word's low 32 bits, which the futex compares.
    fn low_half(word: &AtomicU64) -> *mut u32 {
        let base = word.as_ptr().cast::<u32>();
        if cfg!(target_endian = "big") {
            base.wrapping_add(1)
        } else {
            base
        }
    }

    impl super::ParkWord for AtomicU64 {
        seq_cst_word_ops!();

        fn sub_one(&self) {
            // Never below zero, whatever another process wrote there.
            let _ = self.fetch_update(SeqCst, SeqCst, |n| Some(n.saturating_sub(1)));
        }

        fn park(&self, seen: u32, timeout: Duration) {
            let ts = libc::timespec {
                tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(libc::time_t::MAX),
                tv_nsec: libc::c_long::from(timeout.subsec_nanos().min(999_999_999) as i32),
            };
            // SAFETY: the word lives in a mapping that outlives this call, 8-aligned, so its low
            // half is an aligned u32; FUTEX_WAIT only reads it. Not PRIVATE: other processes
            // map the same memory.
            unsafe {
                libc::syscall(libc::SYS_futex, low_half(self), libc::FUTEX_WAIT, seen, &raw const ts, 0usize, 0u32);
            }
        }

        fn wake_all(&self) {
            // SAFETY: as in `park`; FUTEX_WAKE does not touch the memory.
            unsafe {
                libc::syscall(libc::SYS_futex, low_half(self), libc::FUTEX_WAKE, i32::MAX, 0usize, 0usize, 0u32);
            }
        }
    }
}

/// The futex as loom sees it: `park` checks the word and sleeps under one lock that `wake_all`
/// also takes (the atomicity the kernel gives). The timeout is ignored on purpose: a waiter
/// only its timeout could wake is a lost wake-up, which loom then reports as a deadlock.
#[cfg(all(test, loom))]
pub(super) mod model {
    use loom::sync::atomic::{fence, AtomicU64, Ordering::SeqCst};
    use loom::sync::{Condvar, Mutex};

    loom::lazy_static! {
        static ref KERNEL: (Mutex<()>, Condvar) = (Mutex::new(()), Condvar::new());
    }

    impl super::ParkWord for AtomicU64 {
        seq_cst_word_ops!();

        fn sub_one(&self) {
            self.fetch_sub(1, SeqCst);
        }

        fn park(&self, seen: u32, _timeout: super::Duration) {
            let guard = KERNEL.0.lock().unwrap();
            if self.load(SeqCst) as u32 == seen {
                drop(KERNEL.1.wait(guard).unwrap());
            }
        }

        fn wake_all(&self) {
            let _guard = KERNEL.0.lock().unwrap();
            KERNEL.1.notify_all();
        }
    }
}
