"""Ray-mode overhead beside plain Ray actors, in one run on one local Ray.

    python benches/ray_overhead.py [--calls 2000] [--runs 5]

Compares a no-op call (returns its argument) on:
  * a plain Ray actor: ``ray.get(actor.execute.remote(i))``;
  * ``SPool(mode="ray")`` with one worker: ``pool.execute(i)``;
both one call at a time (latency) and pipelined (a block of calls submitted, then all awaited;
the pool with ``max_concurrency=--depth`` calls in flight at the actor). The two take turns, in a
random order, call by call (one at a time) or block by block (pipelined); it prints min / median
/ max over runs of each run's median per call, and the SPool/plain ratios. The SPool path adds
the Rust supervisor (queue, timeouts, stats) and a host thread per worker that forwards to the
actor.
"""

from __future__ import annotations

import argparse
import random
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


def interleaved(runs: int, rounds: int, plain: Any, ours: Any) -> tuple[list[float], list[float]]:
    """Per run, the median seconds of ``plain()`` and of ``ours()`` over ``rounds`` rounds, each
    round running both in a random order: both see the same load on a shared machine (timing
    one after the other in long blocks gave ratios from 0.9x to 1.4x between identical runs)."""
    plain_medians, our_medians = [], []
    for _ in range(runs):
        times: dict[Any, list[float]] = {plain: [], ours: []}
        for _ in range(rounds):
            for fn in random.sample((plain, ours), 2):
                start = time.perf_counter()
                fn()
                times[fn].append(time.perf_counter() - start)
        plain_medians.append(statistics.median(times[plain]))
        our_medians.append(statistics.median(times[ours]))
    return plain_medians, our_medians


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=2000, help="calls one at a time per run, each way")
    parser.add_argument("--block", type=int, default=400, help="calls per pipelined block")
    parser.add_argument("--blocks", type=int, default=20, help="pipelined blocks per run, each way")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--depth", type=int, default=32, help="max_concurrency of the pipelined pool")
    options = parser.parse_args()
    runs, block, depth = options.runs, options.block, options.depth
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        actor = PlainNoop.options(num_cpus=0.1).remote()  # type: ignore[attr-defined]
        ray.get(actor.execute.remote(0))
        with SPool(Noop, mode="ray", actor_options={"num_cpus": 0.1}) as pool:
            pool.spawn()
            pool.execute(0)
            seq = interleaved(runs, options.calls, lambda: ray.get(actor.execute.remote(7)), lambda: pool.execute(7))
        with SPool(Noop, mode="ray", actor_options={"num_cpus": 0.1}, max_concurrency=depth) as pool:
            pool.spawn()
            pool.execute(0)
            pipe = interleaved(
                runs,
                options.blocks,
                lambda: ray.get([actor.execute.remote(i) for i in range(block)]),
                lambda: [f.result() for f in [pool.submit_execute(i) for i in range(block)]],
            )
        ray.kill(actor)
    finally:
        ray.shutdown()

    def spread(samples: list[float], per: int) -> str:
        per_call = sorted(t / per * 1e6 for t in samples)
        return f"{per_call[0]:7.1f} / {statistics.median(per_call):7.1f} / {per_call[-1]:7.1f}"

    def row(name: str, times: tuple[list[float], list[float]], per: int) -> str:
        plain, ours = times
        ratios = sorted(o / p for o, p in zip(ours, plain, strict=True))
        return (
            f"{name:<34} {spread(plain, per)}   {spread(ours, per)}   "
            f"{statistics.median(ratios):5.2f}x ({ratios[0]:.2f} / {ratios[-1]:.2f})"
        )

    print(
        f"{runs} runs, one worker/actor; µs/call, min / median / max over runs of each run's median "
        f"(one at a time: {options.calls} calls each way, interleaved; pipelined: {options.blocks} "
        f"blocks of {block} calls each way, interleaved)"
    )
    print(f"{'':<34} {'plain Ray actor':^25}   {'SPool(mode=ray)':^25}   ratio per run: median (min / max)")
    print(row("one at a time (latency)", seq, 1))
    print(row(f"pipelined, max_concurrency={depth}", pipe, block))


if __name__ == "__main__":
    main()
