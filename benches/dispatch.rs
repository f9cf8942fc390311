//! Dispatch through the supervisor: submit-to-reply latency and throughput with in-process
//! workers, by worker count; and the balancers' pick.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use worker_pool::{Balancer, Candidate, LoadBalancing, Response, Supervisor, Workable};

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

fn balancer_pick(c: &mut Criterion) {
    let mut group = c.benchmark_group("balancer/pick");
    let candidates: Vec<Candidate> = (0..16).map(|id| Candidate { id, active: id % 3, total: id * 7 % 11 }).collect();
    for kind in
        [LoadBalancing::RoundRobin, LoadBalancing::LeastActive, LoadBalancing::LeastTotal, LoadBalancing::Random]
    {
        let mut balancer = Balancer::new(kind, 42);
        group.bench_function(kind.as_str(), |b| b.iter(|| balancer.pick(black_box(&candidates))));
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

criterion_group!(benches, round_trip, throughput, balancer_pick, limit_acquire);
criterion_main!(benches);
