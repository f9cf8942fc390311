//! A counting semaphore (`ResourceLimit`): at most `capacity` units held at once; units come back
//! on release, not with time. Its count word is only changed through leases (`lease.rs`), which
//! record who holds what so that a dead holder's units can be given back.

use std::sync::atomic::{AtomicU64, Ordering};

use super::Params;

pub(super) fn available(word: &AtomicU64, p: Params) -> u64 {
    p.capacity.saturating_sub(word.load(Ordering::Acquire))
}
