//! Model checks of the rings' park/wake protocol under every interleaving loom explores (and
//! the weak-memory reorderings it simulates):
//!
//! ```text
//! RUSTFLAGS="--cfg loom" cargo test --release --lib loom
//! ```
//!
//! A wait in these models has no timeout (see `futex::model`): if the protocol could lose a
//! wake-up, a side would sleep for ever and loom reports the deadlock. The messages are longer
//! than the rings, so both sides park: the reader on an empty ring, the writer on a full one.
//!
//! The supervisor's side parks on the worker's doorbell pipe, not on a futex; `Doorbell` models
//! the pipe, and the two `supervisor_*` loops follow `ShmTransport::write_all`/`read_exact`
//! step for step, with the same [`Ring`] calls (the transport itself awaits tokio's pipe).

use loom::sync::atomic::AtomicU32;
use loom::sync::{Arc, Condvar, Mutex};
use loom::thread;

use super::ring::{Ring, RingCtl};
use super::Wait;

const CAPACITY: usize = 2;
const MESSAGE: &[u8] = b"abc";
const NO_SPIN: Wait = Wait { spin: std::time::Duration::ZERO, slice: std::time::Duration::from_secs(1) };

/// One ring's shared memory, on the heap.
struct Shared {
    ctl: RingCtl,
    closed: AtomicU32,
    data: std::cell::UnsafeCell<[u8; CAPACITY]>,
    bell: Doorbell,
}

// SAFETY: the data area is only touched through `Ring`, whose head/tail protocol gives each
// byte one owner at a time (what these tests check).
unsafe impl Sync for Shared {}
// SAFETY: as above.
unsafe impl Send for Shared {}

impl Shared {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            ctl: RingCtl::new(),
            closed: AtomicU32::new(0),
            data: std::cell::UnsafeCell::new([0; CAPACITY]),
            bell: Doorbell::default(),
        })
    }

    fn ring(&self) -> Ring<'_> {
        // SAFETY: `data` is CAPACITY bytes that live as long as `self`, used by this ring only.
        unsafe { Ring::new(&self.ctl, &self.closed, self.data.get().cast(), CAPACITY) }
    }
}

/// Runs `side` on a second thread of the model, with its own handle on the ring.
fn spawn_side<T: Send + 'static>(
    shared: &Arc<Shared>,
    side: impl FnOnce(&Shared) -> T + Send + 'static,
) -> thread::JoinHandle<T> {
    let shared = Arc::clone(shared);
    thread::spawn(move || side(&shared))
}

/// The worker's doorbell pipe: bytes pending, and a sleeper on it.
#[derive(Default)]
struct Doorbell {
    pending: Mutex<u32>,
    rung: Condvar,
}

impl Doorbell {
    fn ring(&self) {
        *self.pending.lock().unwrap() += 1;
        self.rung.notify_all();
    }

    /// Sleeps until a byte is there, and drains them all (as `ring_doorbell` does).
    fn wait(&self) {
        let mut pending = self.pending.lock().unwrap();
        while *pending == 0 {
            pending = self.rung.wait(pending).unwrap();
        }
        *pending = 0;
    }
}

/// Explores with at most 3 preemptions per execution (as tokio's CI does), unless
/// `LOOM_MAX_PREEMPTIONS` says otherwise; unbounded, the doorbell-writer model ran for more
/// than 15 minutes without finishing. The limit table's models (`src/limits/loom_tests.rs`) use it too.
pub(crate) fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    if std::env::var_os("LOOM_MAX_PREEMPTIONS").is_none() {
        builder.preemption_bound = Some(3);
    }
    builder.check(f);
}

/// Both sides block on the futex: the worker's own `write_all`/`read_exact`.
#[test]
fn loom_futex_sleepers_are_always_woken() {
    model(|| {
        let shared = Shared::new();
        let writer = spawn_side(&shared, |shared| {
            let ring = shared.ring();
            ring.write_all(&[MESSAGE], NO_SPIN, || ring.wake_reader(), || true).unwrap();
        });
        let ring = shared.ring();
        let mut got = [0u8; 3];
        ring.read_exact(&mut got, NO_SPIN, || ring.wake_writer(), || true).unwrap();
        writer.join().unwrap();
        assert_eq!(&got, MESSAGE);
    });
}

/// The supervisor writes a request larger than the ring and parks on the doorbell while it is
/// full; the worker reads with `read_exact`, ringing the doorbell when it frees room.
#[test]
fn loom_supervisor_writer_parked_on_the_doorbell_is_always_woken() {
    model(|| {
        let shared = Shared::new();
        let worker = spawn_side(&shared, |shared| {
            let mut got = [0u8; 3];
            shared.ring().read_exact(&mut got, NO_SPIN, || shared.bell.ring(), || true).unwrap();
            got
        });
        supervisor_write_all(&shared, MESSAGE);
        assert_eq!(&worker.join().unwrap(), MESSAGE);
    });
}

/// The worker writes a reply larger than the ring with `write_all`, ringing the doorbell for a
/// parked reader; the supervisor reads, parking on the doorbell when the ring is empty and
/// waking the worker's futex when it frees room.
#[test]
fn loom_supervisor_reader_parked_on_the_doorbell_is_always_woken() {
    model(|| {
        let shared = Shared::new();
        let worker = spawn_side(&shared, |shared| {
            shared.ring().write_all(&[MESSAGE], NO_SPIN, || shared.bell.ring(), || true).unwrap();
        });
        let mut got = [0u8; 3];
        supervisor_read_exact(&shared, &mut got);
        worker.join().unwrap();
        assert_eq!(&got, MESSAGE);
    });
}

/// `ShmTransport::write_all` without the spin, the doorbell awaited by sleeping on it.
fn supervisor_write_all(shared: &Shared, mut rest: &[u8]) {
    let ring = shared.ring();
    while !rest.is_empty() {
        let n = ring.write_some(rest).unwrap();
        rest = &rest[n..];
        if ring.reader_needs_wake() {
            ring.wake_reader();
        }
        if rest.is_empty() || n > 0 {
            continue;
        }
        if ring.park_writer().unwrap() {
            ring.unpark_writer();
            continue;
        }
        shared.bell.wait();
        ring.unpark_writer();
    }
}

/// `ShmTransport::read_exact` without the spin, the doorbell awaited by sleeping on it.
fn supervisor_read_exact(shared: &Shared, dst: &mut [u8]) {
    let ring = shared.ring();
    let mut done = 0;
    while done < dst.len() {
        let n = ring.read_some(&mut dst[done..]).unwrap();
        done += n;
        if n > 0 {
            if ring.writer_needs_wake() {
                ring.wake_writer();
            }
            continue;
        }
        if ring.park_reader().unwrap() {
            ring.unpark_reader();
            continue;
        }
        shared.bell.wait();
        ring.unpark_reader();
    }
}
