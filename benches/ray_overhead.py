"""Ray-mode overhead beside plain Ray actors, in one run on one local Ray.

    python benches/ray_overhead.py [--calls 2000]

Compares a no-op call (returns its argument) on:
  * a plain Ray actor: ``ray.get(actor.execute.remote(i))``;
  * ``SPool(mode="ray")`` with one worker: ``pool.execute(i)``;
both one call at a time (latency) and pipelined (all submitted, then all awaited; the pool with
``max_concurrency=--depth`` calls in flight at the actor), and prints min / median / max per call
and the SPool/plain ratios. The SPool path adds the Rust supervisor (queue, timeouts, stats) and
a host thread per worker that forwards to the actor.
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


def paired(runs: int, plain: Any, ours: Any) -> tuple[list[float], list[float]]:
    """``runs`` timings (seconds) of ``plain()`` and ``ours()``, alternated so that both see
    the same load on a shared machine."""
    plain_times, our_times = [], []
    for _ in range(runs):
        for fn, times in ((plain, plain_times), (ours, our_times)):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    return plain_times, our_times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--depth", type=int, default=32, help="max_concurrency of the pipelined pool")
    options = parser.parse_args()
    n, runs, depth = options.calls, options.runs, options.depth
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        actor = PlainNoop.options(num_cpus=0.1).remote()  # type: ignore[attr-defined]
        ray.get(actor.execute.remote(0))
        with SPool(Noop, mode="ray", actor_options={"num_cpus": 0.1}) as pool:
            pool.spawn()
            pool.execute(0)
            seq = paired(
                runs,
                lambda: [ray.get(actor.execute.remote(i)) for i in range(n)],
                lambda: [pool.execute(i) for i in range(n)],
            )
        with SPool(Noop, mode="ray", actor_options={"num_cpus": 0.1}, max_concurrency=depth) as pool:
            pool.spawn()
            pool.execute(0)
            pipe = paired(
                runs,
                lambda: ray.get([actor.execute.remote(i) for i in range(n)]),
                lambda: [f.result() for f in [pool.submit_execute(i) for i in range(n)]],
            )
        ray.kill(actor)
    finally:
        ray.shutdown()

    def spread(samples: list[float]) -> str:
        per_call = sorted(t / n * 1e6 for t in samples)
        return f"{per_call[0]:7.1f} / {statistics.median(per_call):7.1f} / {per_call[-1]:7.1f}"

    def row(name: str, times: tuple[list[float], list[float]]) -> str:
        plain, ours = times
        ratios = sorted(o / p for o, p in zip(ours, plain, strict=True))
        return (
            f"{name:<34} {spread(plain)}   {spread(ours)}   "
            f"{statistics.median(ratios):5.2f}x ({ratios[0]:.2f} / {ratios[-1]:.2f})"
        )

    print(f"{n} no-op calls, {runs} runs, one worker/actor; µs/call min / median / max")
    print(f"{'':<34} {'plain Ray actor':^25}   {'SPool(mode=ray)':^25}   ratio per run: median (min / max)")
    print(row("one at a time (latency)", seq))
    print(row(f"pipelined, max_concurrency={depth}", pipe))


if __name__ == "__main__":
    main()
