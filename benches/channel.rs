//! Channel round trip between two processes: this bench binary re-executes itself as an echo
//! worker, then times a small call through the supervisor over pipes, over shared memory, and
//! over shared memory on the direct lane (the calling thread drives the rings itself); then a
//! burst of small calls queued at once, which over shared memory go to the worker in batches.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput};
use worker_pool::{FrameKind, ProcessSpec, ProcessWorker, ShmLane, ShutdownMode, Supervisor, WorkerEndpoint};

const ECHO_ENV: &str = "WORKER_POOL_BENCH_ECHO";

fn echo_worker() {
    let mut endpoint = WorkerEndpoint::from_inherited().expect("started by the bench");
    while let Some((kind, id, len)) = endpoint.recv_header().expect("frame header") {
        let mut payload = vec![0u8; len];
        endpoint.read_exact(&mut payload).expect("frame payload");
        let reply = match kind {
            FrameKind::Stop => return,
            FrameKind::Init => FrameKind::Ready,
            _ => FrameKind::Ok,
        };
        endpoint.send(reply, id, &[&payload]).expect("reply");
    }
}

fn pool(shm_capacity: Option<usize>) -> Supervisor<ProcessWorker> {
    pool_with(shm_capacity, Supervisor::<ProcessWorker>::builder())
}

fn pool_with(shm_capacity: Option<usize>, builder: worker_pool::SupervisorBuilder) -> Supervisor<ProcessWorker> {
    let mut spec = ProcessSpec::new(std::env::current_exe().expect("bench binary"), Vec::<String>::new());
    spec.env.push((ECHO_ENV.into(), "1".into()));
    spec.shm_capacity = shm_capacity;
    let pool = builder.build().expect("supervisor");
    let (tx, rx) = std::sync::mpsc::channel();
    pool.start_worker(ProcessWorker::start(Arc::new(spec), Arc::new(Vec::new())), move |r| {
        tx.send(r.is_ok()).expect("bench thread");
    });
    assert!(rx.recv().expect("worker start"), "echo worker did not start");
    pool
}

fn round_trip(c: &mut Criterion) {
    let payload = vec![7u8; 64];
    let mut group = c.benchmark_group("channel/round_trip_64B");
    group.measurement_time(Duration::from_secs(3));
    for (name, capacity) in [("pipe", None), ("shm", Some(1 << 20))] {
        let pool = pool(capacity);
        group.bench_function(BenchmarkId::new("supervisor", name), |b| {
            b.iter(|| pool.try_submit(black_box(payload.clone())).expect("submit").wait().expect("reply"));
        });
        pool.shutdown(ShutdownMode::Graceful);
        pool.wait_stopped(Duration::from_secs(10));
    }
    let pool = pool(Some(1 << 20));
    group.bench_function(BenchmarkId::new("direct_lane", "shm"), |b| {
        b.iter(|| {
            let claim = pool.claim_idle().expect("an idle worker");
            let lane = claim.lane::<ShmLane>().expect("a shared-memory lane");
            let reply = lane.call(&[black_box(&payload)], || false).expect("reply");
            claim.finish(None);
            reply
        });
    });
    pool.shutdown(ShutdownMode::Graceful);
    pool.wait_stopped(Duration::from_secs(10));
    group.finish();
}

/// 1,000 small calls queued at once, then waited for: over pipes each is its own round trip;
/// over shared memory the worker takes them in batches (one wake-up for up to 32).
fn burst(c: &mut Criterion) {
    const CALLS: usize = 1000;
    let payload = vec![7u8; 64];
    let mut group = c.benchmark_group("channel/burst_1000x64B");
    group.measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Elements(CALLS as u64));
    // A task timeout makes every task travel alone (it needs its own deadline): the baseline.
    let one_at_a_time = || Supervisor::<ProcessWorker>::builder().task_timeout(Duration::from_secs(60));
    let variants = [
        ("pipe", None, one_at_a_time()),
        ("shm_one_at_a_time", Some(1 << 20), one_at_a_time()),
        ("shm_batched", Some(1 << 20), Supervisor::<ProcessWorker>::builder()),
    ];
    for (name, capacity, builder) in variants {
        let pool = pool_with(capacity, builder);
        group.bench_function(BenchmarkId::new("supervisor", name), |b| {
            b.iter(|| {
                let handles: Vec<_> =
                    (0..CALLS).map(|_| pool.try_submit(black_box(payload.clone())).expect("submit")).collect();
                handles.into_iter().map(|h| h.wait().expect("reply").len()).sum::<usize>()
            });
        });
        pool.shutdown(ShutdownMode::Graceful);
        pool.wait_stopped(Duration::from_secs(10));
    }
    group.finish();
}

fn main() {
    if std::env::var_os(ECHO_ENV).is_some() {
        echo_worker();
        return;
    }
    let mut criterion = Criterion::default().configure_from_args();
    round_trip(&mut criterion);
    burst(&mut criterion);
    criterion.final_summary();
}
