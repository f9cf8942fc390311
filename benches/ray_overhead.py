"""Ray-mode overhead beside plain Ray actors, in one run on one local Ray.

    python benches/ray_overhead.py [--calls 2000]

Compares a no-op call (returns its argument) on:
  * a plain Ray actor: ``ray.get(actor.execute.remote(i))``;
  * ``SPool(mode="ray")`` with one worker: ``pool.execute(i)``;
both one call at a time (latency) and pipelined (all submitted, then all awaited), and prints
the SPool/plain ratios. The SPool path adds the Rust supervisor (queue, timeouts, stats) and a
host thread per worker that forwards to the actor.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import ray
from stateful_pool import SPool, SWorker


class Noop(SWorker):
    def execute(self, x: Any) -> Any:
        return x


@ray.remote
class PlainNoop:
    def execute(self, x: Any) -> Any:
        return x


def best_of(runs: int, fn: Any) -> float:
    """The median of ``runs`` timings of ``fn()``, in seconds."""
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    n = parser.parse_args().calls
    runs = parser.parse_args().runs
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        actor = PlainNoop.options(num_cpus=0.1).remote()  # type: ignore[attr-defined]
        ray.get(actor.execute.remote(0))
        plain_seq = best_of(runs, lambda: [ray.get(actor.execute.remote(i)) for i in range(n)])
        plain_pipe = best_of(runs, lambda: ray.get([actor.execute.remote(i) for i in range(n)]))
        ray.kill(actor)

        with SPool(Noop, mode="ray", actor_options={"num_cpus": 0.1}) as pool:
            pool.spawn()
            pool.execute(0)
            pool_seq = best_of(runs, lambda: [pool.execute(i) for i in range(n)])
            pool_pipe = best_of(runs, lambda: [f.result() for f in [pool.submit_execute(i) for i in range(n)]])
    finally:
        ray.shutdown()

    def row(name: str, plain: float, ours: float) -> str:
        return (
            f"{name:<22} plain actor {plain / n * 1e6:8.1f} µs/call   SPool(mode='ray') {ours / n * 1e6:8.1f} µs/call"
            f"   ratio {ours / plain:5.2f}x"
        )

    print(f"{n} no-op calls, median of {runs} runs, one worker/actor")
    print(row("sequential (latency)", plain_seq, pool_seq))
    print(row("pipelined (throughput)", plain_pipe, pool_pipe))


if __name__ == "__main__":
    main()
