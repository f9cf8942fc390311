//! The two futex operations the rings need, on words shared between processes. Under
//! `cfg(all(test, loom))` a model stands in for the kernel (see the end of this file).

#[cfg(not(all(test, loom)))]
use std::sync::atomic::AtomicU32;
use std::time::Duration;

#[cfg(all(test, loom))]
pub(crate) use self::model::{wait, wake_all};

#[cfg(not(all(test, loom)))]
/// Sleeps while `*word == expected`, at most `timeout`. Spurious returns are fine: callers loop.
pub(crate) fn wait(word: &AtomicU32, expected: u32, timeout: Duration) {
    let ts = libc::timespec {
        tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_nsec: libc::c_long::from(timeout.subsec_nanos().min(999_999_999) as i32),
    };
    // SAFETY: `word` is a valid, aligned u32 for the duration of the call (it lives in a mapping
    // that outlives every ring user); FUTEX_WAIT only reads it. Shared (not PRIVATE) on purpose.
    unsafe {
        libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAIT, expected, &raw const ts, 0usize, 0u32);
    }
}

/// Wakes every waiter on `word`.
#[cfg(not(all(test, loom)))]
pub(crate) fn wake_all(word: &AtomicU32) {
    // SAFETY: as in `wait`; FUTEX_WAKE does not touch the memory.
    unsafe {
        libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, i32::MAX, 0usize, 0usize, 0u32);
    }
}

/// The futex as loom sees it: `wait` checks the word and sleeps under one lock that `wake_all`
/// also takes, which is the atomicity the kernel gives (a wake after the word changed cannot
/// slip between the check and the sleep). The timeout is ignored on purpose: a waiter that
/// only its timeout could wake is a lost wake-up, and loom reports it as a deadlock.
#[cfg(all(test, loom))]
mod model {
    use loom::sync::{Condvar, Mutex};

    use super::super::sync::{AtomicU32, Ordering};

    loom::lazy_static! {
        static ref KERNEL: (Mutex<()>, Condvar) = (Mutex::new(()), Condvar::new());
    }

    pub(crate) fn wait(word: &AtomicU32, expected: u32, _timeout: super::Duration) {
        let guard = KERNEL.0.lock().unwrap();
        if word.load(Ordering::SeqCst) == expected {
            drop(KERNEL.1.wait(guard).unwrap());
        }
    }

    pub(crate) fn wake_all(_word: &AtomicU32) {
        let _guard = KERNEL.0.lock().unwrap();
        KERNEL.1.notify_all();
    }
}
