//! Ring and segment tests, and property tests that play a corrupting peer: whatever indices it
//! writes into the control block, the ring returns valid bytes or [`Corrupted`], never panics
//! and never copies outside its data area.

use std::time::Duration;

use proptest::prelude::*;

use super::segment::MAX_RING_CAPACITY;
use super::{Corrupted, Segment, SegmentError, Wait};

#[test]
fn bytes_flow_in_order_through_a_small_ring_with_wraparound() {
    let seg = Segment::create(4096).unwrap();
    let wait = Wait { spin: Duration::from_micros(20), slice: Duration::from_millis(20) };
    let message: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    std::thread::scope(|s| {
        s.spawn(|| {
            let ring = seg.requests();
            for chunk in message.chunks(777) {
                ring.write_all(&[chunk], wait, || ring.wake_reader(), || true).unwrap();
            }
        });
        let mut got = vec![0u8; message.len()];
        let ring = seg.requests();
        ring.read_exact(&mut got, wait, || ring.wake_writer(), || true).unwrap();
        assert_eq!(got, message);
    });
}

#[test]
fn a_parked_reader_is_woken_and_close_fails_waiters() {
    let seg = Segment::create(4096).unwrap();
    let wait = Wait { spin: Duration::ZERO, slice: Duration::from_secs(5) };
    std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let mut b = [0u8; 3];
            seg.replies().read_exact(&mut b, wait, || {}, || true).map(|()| b)
        });
        std::thread::sleep(Duration::from_millis(20));
        let ring = seg.replies();
        ring.write_all(&[b"abc"], wait, || ring.wake_reader(), || true).unwrap();
        assert_eq!(&reader.join().unwrap().unwrap(), b"abc");
        let reader = s.spawn(|| seg.replies().read_exact(&mut [0u8; 1], wait, || {}, || true));
        std::thread::sleep(Duration::from_millis(20));
        seg.close();
        assert_eq!(reader.join().unwrap().unwrap_err().kind(), std::io::ErrorKind::UnexpectedEof);
    });
}

#[test]
fn segments_reopen_from_their_descriptor() {
    let seg = Segment::create(10_000).unwrap();
    assert_eq!(seg.capacity(), 12_288);
    let dup = seg.fd().try_clone().unwrap();
    let other = Segment::open(dup).unwrap();
    assert_eq!(other.capacity(), seg.capacity());
    assert_eq!(seg.requests().write_some(b"hello"), Ok(5));
    let mut b = [0u8; 5];
    assert_eq!(other.requests().read_some(&mut b), Ok(5));
    assert_eq!(&b, b"hello");
    let junk = Segment::create(4096).unwrap();
    let fd = junk.fd().try_clone().unwrap();
    // SAFETY: truncating our own memfd to break its layout.
    unsafe { libc::ftruncate(std::os::fd::AsRawFd::as_raw_fd(&fd), 100) };
    assert!(Segment::open(fd).is_err());
}

#[test]
fn capacities_that_would_overflow_are_refused() {
    for huge in [MAX_RING_CAPACITY + 1, 1 << 62, 1 << 63, usize::MAX] {
        assert!(matches!(Segment::create(huge), Err(SegmentError::TooLarge(n)) if n == huge), "{huge}");
    }
    assert_eq!(super::ring_capacity(0).unwrap(), 4096);
    assert_eq!(super::ring_capacity(MAX_RING_CAPACITY).unwrap(), MAX_RING_CAPACITY);
}

#[test]
fn a_head_pushed_far_ahead_is_reported_not_copied() {
    let seg = Segment::create(4096).unwrap();
    seg.forge_indices(true, 1 << 40, 0);
    let mut buf = vec![0u8; 1 << 16];
    let err = seg.replies().read_some(&mut buf).unwrap_err();
    assert_eq!(err, Corrupted { head: 1 << 40, tail: 0, capacity: 4096 });
    seg.forge_indices(false, 10, 11);
    assert!(seg.requests().write_some(b"x").is_err(), "a tail past the head");
    assert!(seg.requests().writable().is_err());
    // Indices near the top of u64 that are consistent, but would overflow when advanced.
    seg.forge_indices(false, u64::MAX - 1, u64::MAX - 1);
    assert!(seg.requests().write_some(b"xyz").is_err());
}

/// One step of a session between an honest side and a peer that may forge indices.
#[derive(Clone, Debug)]
enum Step {
    Write(usize),
    Read(usize),
    Forge { replies: bool, head: u64, tail: u64 },
}

fn index() -> impl Strategy<Value = u64> {
    prop_oneof![0..20_000u64, any::<u64>(), (u64::MAX - 20_000)..=u64::MAX, Just(1 << 40), Just(1 << 63)]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0..10_000usize).prop_map(Step::Write),
        4 => (0..10_000usize).prop_map(Step::Read),
        1 => (any::<bool>(), index(), index()).prop_map(|(replies, head, tail)| Step::Forge { replies, head, tail }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Honest writes and reads (the ring is read back in order) interleaved with forged
    /// indices: an operation either fails with `Corrupted` (then the indices really are
    /// inconsistent) or moves at most the bytes that fit; honest streams stay intact.
    #[test]
    fn adversarial_indices_never_escape_the_ring(steps in proptest::collection::vec(step(), 1..60)) {
        let seg = Segment::create(4096).unwrap();
        let mut forged = false;
        let mut sent: std::collections::VecDeque<u8> = std::collections::VecDeque::new();
        let mut counter = 0u8;
        for step in steps {
            let ring = seg.requests();
            match step {
                Step::Write(n) => {
                    let src: Vec<u8> = (0..n).map(|_| { counter = counter.wrapping_add(1); counter }).collect();
                    match ring.write_some(&src) {
                        Ok(k) => {
                            prop_assert!(k <= n && k <= 4096);
                            sent.extend(&src[..k]);
                        }
                        Err(Corrupted { head, tail, capacity }) => {
                            prop_assert!(forged);
                            prop_assert!(tail > head || head - tail > capacity as u64 || head.checked_add(n as u64).is_none());
                        }
                    }
                }
                Step::Read(n) => {
                    let mut dst = vec![0u8; n];
                    match ring.read_some(&mut dst) {
                        Ok(k) => {
                            prop_assert!(k <= n && k <= 4096);
                            if !forged {
                                let expected: Vec<u8> = sent.drain(..k).collect();
                                prop_assert_eq!(&dst[..k], &expected[..]);
                            }
                        }
                        Err(Corrupted { head, tail, capacity }) => {
                            prop_assert!(forged);
                            prop_assert!(tail > head || head - tail > capacity as u64 || tail.checked_add(n as u64).is_none());
                        }
                    }
                }
                Step::Forge { replies, head, tail } => {
                    seg.forge_indices(replies, head, tail);
                    forged |= !replies;
                    if replies {
                        // The other ring's garbage must not affect this one, and reads from it
                        // fail or stay inside it.
                        let mut dst = vec![0u8; 8192];
                        if let Ok(k) = seg.replies().read_some(&mut dst) {
                            prop_assert!(k <= 4096);
                        }
                        prop_assert!(seg.replies().writable().map_or(true, |w| w <= 4096));
                    }
                }
            }
            prop_assert!(ring.readable().map_or(true, |r| r <= 4096));
            prop_assert!(ring.writable().map_or(true, |w| w <= 4096));
        }
    }
}
