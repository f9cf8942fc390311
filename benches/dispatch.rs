//! Dispatch through the supervisor: submit-to-reply latency and throughput with in-process
//! workers, by worker count and by load balancer; and a shared rate limit's acquire.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use worker_pool::{LoadBalancing, Response, Supervisor, Workable};

struct Noop;

impl Workable for Noop {
    type Task = u64;
    type Output = u64;
    type Error = ();

    async fn process(&mut self, task: u64) -> Response<Self> {
        Response::Complete(Ok(task))
    }
}

fn round_trip(c: &mut Criterion) {
    let mut group = c.benchmark_group("dispatch/round_trip");
    for workers in [1, 2, 4] {
        let pool = Supervisor::<Noop>::builder().build().unwrap();
        for _ in 0..workers {
            pool.add_worker(Noop);
        }
        group.bench_with_input(BenchmarkId::from_parameter(workers), &workers, |b, _| {
            b.iter(|| pool.try_submit(black_box(1)).unwrap().wait().unwrap());
        });
    }
    group.finish();
}

fn throughput(c: &mut Criterion) {
    const BATCH: u64 = 1000;
    let mut group = c.benchmark_group("dispatch/throughput");
    group.throughput(Throughput::Elements(BATCH));
    for workers in [1, 2, 4] {
        let pool = Supervisor::<Noop>::builder().build().unwrap();
        for _ in 0..workers {
            pool.add_worker(Noop);
        }
        group.bench_with_input(BenchmarkId::from_parameter(workers), &workers, |b, _| {
            b.iter(|| {
                let handles: Vec<_> = (0..BATCH).map(|i| pool.try_submit(i).unwrap()).collect();
                handles.into_iter().map(|h| h.wait().unwrap()).sum::<u64>()
            });
        });
    }
    group.finish();
}

/// A round trip through each balancer with 8 idle workers to choose from (the balancers
/// themselves are internal; this is their cost as a caller sees it).
fn balanced_round_trip(c: &mut Criterion) {
    let mut group = c.benchmark_group("dispatch/balanced_round_trip");
    for kind in
        [LoadBalancing::RoundRobin, LoadBalancing::LeastActive, LoadBalancing::LeastTotal, LoadBalancing::Random]
    {
        let pool = Supervisor::<Noop>::builder().load_balancing(kind).build().unwrap();
        for _ in 0..8 {
            pool.add_worker(Noop);
        }
        group.bench_function(kind.as_str(), |b| b.iter(|| pool.try_submit(black_box(1)).unwrap().wait().unwrap()));
    }
    group.finish();
}

fn limit_acquire(c: &mut Criterion) {
    use worker_pool::limits::{Algorithm, LimitSpec, SharedLimits};
    let mut group = c.benchmark_group("limits/try_acquire");
    for algorithm in [Algorithm::TokenBucket, Algorithm::Gcra, Algorithm::SlidingWindow] {
        // A budget so large it never runs out: this measures the atomic update itself.
        let limits = SharedLimits::create(&[LimitSpec::rate(algorithm, 1_000_000_000, u64::MAX / 4)]).unwrap();
        group.bench_function(algorithm.as_str(), |b| b.iter(|| limits.try_acquire(0, black_box(1)).unwrap()));
    }
    group.finish();
}

criterion_group!(benches, round_trip, throughput, balanced_round_trip, limit_acquire);
criterion_main!(benches);
