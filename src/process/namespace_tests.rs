//! The namespace store's wire format and lock, without processes.

use std::sync::Arc;
use std::time::Duration;

use super::*;

fn store() -> (Arc<NamespaceStore>, NamespaceUpcalls) {
    let store = Arc::new(NamespaceStore::new());
    (Arc::clone(&store), NamespaceUpcalls(store))
}

fn now(answer: Result<UpcallAnswer, ProtocolError>) -> Vec<u8> {
    match answer.expect("well-formed") {
        UpcallAnswer::Now(bytes) => bytes,
        UpcallAnswer::Later(_) => panic!("expected an answer now"),
    }
}

fn set_request(key: &str, value: &[u8]) -> Vec<u8> {
    let mut request = vec![SET];
    put_key(&mut request, key);
    request.extend_from_slice(value);
    request
}

fn lock_request(timeout: f64) -> Vec<u8> {
    let mut request = vec![LOCK];
    request.extend_from_slice(&timeout.to_le_bytes());
    request
}

#[test]
fn values_round_trip_through_requests() {
    let (store, upcalls) = store();
    assert_eq!(now(upcalls.call(7, &set_request("count", b"41"))), [OK]);
    assert_eq!(now(upcalls.call(7, b"\x01count")), b"\x0041");
    assert_eq!(now(upcalls.call(7, b"\x01other")), [MISSING]);
    store.set("b", b"x".to_vec()).unwrap();
    assert_eq!(now(upcalls.call(7, &[KEYS])), b"\x00\x01\0\0\0b\x05\0\0\0count");
    let snapshot = now(upcalls.call(7, &[SNAPSHOT]));
    assert_eq!(snapshot, b"\x00\x01\0\0\0b\x01\0\0\0\0\0\0\0x\x05\0\0\0count\x02\0\0\0\0\0\0\x0041");
    assert_eq!(now(upcalls.call(7, b"\x03count")), [OK]);
    assert_eq!(now(upcalls.call(7, b"\x03count")), [MISSING]);
    assert_eq!(store.keys(), ["b"]);
}

#[test]
fn garbage_requests_are_protocol_errors() {
    let (_, upcalls) = store();
    let mut too_long_key = vec![GET];
    too_long_key.resize(MAX_KEY_LEN + 2, b'k');
    let mut past_end = vec![SET];
    past_end.extend_from_slice(&100u32.to_le_bytes());
    past_end.extend_from_slice(b"key");
    for request in [
        &[][..],
        &[99],
        &[GET],
        b"\x01_private",
        b"\x01\xff\xfe",
        &too_long_key,
        &[SET, 1, 0],
        &past_end,
        &[KEYS, 1],
        &[LOCK, 0, 0],
        &lock_request(f64::NAN),
        &[UNLOCK, 0],
    ] {
        assert!(upcalls.call(1, request).is_err(), "{request:?} was accepted");
    }
}

#[test]
fn lock_is_recorded_per_process_and_refuses_misuse() {
    let (store, upcalls) = store();
    assert_eq!(now(upcalls.call(5, &lock_request(-1.0))), [OK]);
    assert_eq!(store.holder(), Some(Some(5)));
    assert_eq!(now(upcalls.call(5, &lock_request(-1.0)))[0], REFUSED);
    assert_eq!(now(upcalls.call(6, &[UNLOCK]))[0], REFUSED);
    assert!(!store.unlock_parent());
    assert_eq!(now(upcalls.call(5, &[UNLOCK])), [OK]);
    assert_eq!(store.holder(), None);
}

#[tokio::test]
async fn huge_timeouts_mean_no_limit() {
    let (_, upcalls) = store();
    assert_eq!(now(upcalls.call(1, &lock_request(-1.0))), [OK]);
    for timeout in [f64::INFINITY, 1e300, -f64::INFINITY] {
        let UpcallAnswer::Later(waiting) = upcalls.call(2, &lock_request(timeout)).unwrap() else { panic!("parked") };
        assert!(tokio::time::timeout(Duration::from_millis(20), waiting).await.is_err(), "{timeout} timed out");
    }
}

#[tokio::test]
async fn a_parked_lock_is_granted_on_unlock_or_times_out() {
    let (store, upcalls) = store();
    assert_eq!(now(upcalls.call(1, &lock_request(-1.0))), [OK]);
    let UpcallAnswer::Later(timing_out) = upcalls.call(2, &lock_request(0.05)).unwrap() else { panic!("parked") };
    assert_eq!(timing_out.await, [TIMED_OUT]);
    let UpcallAnswer::Later(waiting) = upcalls.call(3, &lock_request(-1.0)).unwrap() else { panic!("parked") };
    let waiting = tokio::spawn(waiting);
    assert_eq!(now(upcalls.call(1, &[UNLOCK])), [OK]);
    assert_eq!(waiting.await.unwrap(), [OK]);
    assert_eq!(store.holder(), Some(Some(3)));
}

#[tokio::test]
async fn a_dead_holder_gives_the_lock_to_the_next_waiter_at_once() {
    let (store, upcalls) = store();
    assert_eq!(now(upcalls.call(1, &lock_request(-1.0))), [OK]);
    let UpcallAnswer::Later(dropped) = upcalls.call(2, &lock_request(-1.0)).unwrap() else { panic!("parked") };
    drop(dropped); // worker 2 died while waiting: its wait is skipped
    let UpcallAnswer::Later(waiting) = upcalls.call(3, &lock_request(-1.0)).unwrap() else { panic!("parked") };
    upcalls.worker_exited(1);
    let granted = tokio::time::timeout(Duration::from_secs(5), waiting).await.expect("granted at once");
    assert_eq!(granted, [OK]);
    assert_eq!(store.holder(), Some(Some(3)));
    upcalls.worker_exited(3);
    assert_eq!(store.holder(), None);
}

#[test]
fn parent_waits_for_a_worker_and_times_out_or_gives_up() {
    let (store, upcalls) = store();
    let slice = Duration::from_millis(10);
    assert_eq!(now(upcalls.call(1, &lock_request(-1.0))), [OK]);
    let never = || Ok::<(), ()>(());
    assert_eq!(store.lock_parent(Some(Duration::from_millis(30)), slice, never), Ok(false));
    assert_eq!(store.lock_parent(None, slice, || Err("interrupted")), Err("interrupted"));
    let releaser = {
        let upcalls = upcalls.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            upcalls.worker_exited(1);
        })
    };
    assert_eq!(store.lock_parent(Some(Duration::from_secs(10)), slice, never), Ok(true));
    releaser.join().unwrap();
    assert_eq!(store.holder(), Some(None));
    assert!(store.unlock_parent());
    assert_eq!(store.holder(), None);
}
