//! Large receive buffers, kept for the next message of a similar size. A fresh 64 MiB buffer
//! costs a page fault, and the kernel zeroing a page, for every page the copy into it touches:
//! about as long again as the copy itself.

use std::sync::{Mutex, PoisonError};

/// Smaller buffers are not kept: malloc serves them from warm memory anyway.
const KEEP_FROM: usize = 1 << 20;
/// Buffers kept at most, per process.
const KEEP_AT_MOST: usize = 2;
/// Bytes kept at most, per process: larger messages always get fresh memory.
const KEEP_BYTES_AT_MOST: usize = 256 << 20;

static SPARE: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// A buffer of `len` initialised bytes to read a message into: a kept one of a similar size
/// when there is one (its old contents are to be overwritten), else a fresh one, backed by
/// huge pages when large.
#[must_use]
pub(crate) fn buffer(len: usize) -> Vec<u8> {
    if len >= KEEP_FROM {
        let mut spare = SPARE.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(i) = spare.iter().position(|b| b.len() >= len && b.len() / 2 <= len) {
            let mut kept = spare.swap_remove(i);
            kept.truncate(len);
            return kept;
        }
    }
    let mut fresh = vec![0u8; len];
    crate::shm::advise_huge_pages(&mut fresh);
    fresh
}

/// Takes back a buffer that nothing refers to any more, keeping it if it is large and there is
/// room (the newest are kept: the next message is most likely the size of the last).
#[allow(dead_code, reason = "its caller is the Python bindings, which give reply buffers back")]
pub(crate) fn recycle(buffer: Vec<u8>) {
    if !(KEEP_FROM..=KEEP_BYTES_AT_MOST).contains(&buffer.len()) {
        return;
    }
    let mut spare = SPARE.lock().unwrap_or_else(PoisonError::into_inner);
    while spare.len() >= KEEP_AT_MOST || spare.iter().map(Vec::len).sum::<usize>() + buffer.len() > KEEP_BYTES_AT_MOST {
        spare.remove(0);
    }
    spare.push(buffer);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_buffers_come_back_for_similar_sizes_only() {
        let first = buffer(3 << 20);
        let kept_at = first.as_ptr();
        recycle(first);
        let too_small = buffer(1 << 20);
        assert_ne!(too_small.as_ptr(), kept_at, "not for a message under half its size");
        let again = buffer(2 << 20);
        assert_eq!(again.as_ptr(), kept_at, "a kept buffer serves a message of a similar size");
        assert_eq!(again.len(), 2 << 20);
        let small = buffer(1000);
        assert_eq!(small.len(), 1000);
        recycle(buffer(KEEP_BYTES_AT_MOST + 1));
        let kept = SPARE.lock().unwrap().iter().map(Vec::len).collect::<Vec<_>>();
        assert!(!kept.contains(&(KEEP_BYTES_AT_MOST + 1)), "past the byte budget nothing is kept: {kept:?}");
    }
}
