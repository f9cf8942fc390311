"""Dynamic batching: a vectorised numpy "model" served one item per call vs gathered into
batched calls (``@batched``), in one run, on the same machine.

    python benches/batching.py [--items 512] [--repeats 5] [--dim 1024] [--max-size 32]

The model is three dense layers (``dim x dim`` float32 weights, tanh): one item is a vector,
so alone it is three matrix-vector products that read every weight from memory (1-6 ms
each item here); a batch is three matrix-matrix products that read the weights once for the
whole batch. Both pools have one worker process with one BLAS thread; every round submits all
items at once and waits for them. Prints min/median/max seconds per round, items per second,
and the ratio of the medians.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # inherited by the workers: one core each
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np
from stateful_pool import SPool, SWorker, batched


class Model(SWorker):
    def spawn(self, dim: int, max_size: int) -> None:
        rng = np.random.default_rng(0)
        self.layers = [rng.standard_normal((dim, dim), dtype=np.float32) / np.sqrt(dim) for _ in range(3)]

    def _forward(self, x: Any) -> Any:
        for w in self.layers:
            x = np.tanh(x @ w)
        return x

    def predict_one(self, x: Any) -> float:
        """One item per call: matrix-vector products."""
        return float(self._forward(x).sum())

    @batched(max_size=32, max_wait=0.002)
    def predict(self, items: list[Any]) -> list[float]:
        """Many items per call: one matrix-matrix product per layer for the whole batch."""
        return [float(v) for v in self._forward(np.stack(items)).sum(axis=1)]


def rounds(pool: SPool[Model], method: str, inputs: list[Any], repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        futures = [pool.submit_call(method, x) for x in inputs]
        for f in futures:
            f.result()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--max-size", type=int, default=32)
    a = parser.parse_args()
    if a.max_size != 32:
        Model.predict.max_size = a.max_size
    rng = np.random.default_rng(1)
    inputs = [rng.standard_normal(a.dim, dtype=np.float32) for _ in range(a.items)]
    results = {}
    with SPool(Model) as pool:
        pool.spawn(a.dim, a.max_size)
        # Same answers either way (float32 sums of the same products, up to rounding).
        one = [pool.call("predict_one", x) for x in inputs[:8]]
        many = [f.result() for f in [pool.submit_call("predict", x) for x in inputs[:8]]]
        assert np.allclose(one, many, rtol=1e-3, atol=1e-3), (one, many)
        results["one by one"] = rounds(pool, "predict_one", inputs, a.repeats)
        results["batched"] = rounds(pool, "predict", inputs, a.repeats)
        coalesced = pool.stats()["coalesced"]
    print(f"{a.items} items per round, dim {a.dim}, 3 layers, 1 worker, {a.repeats} rounds")
    for name, times in results.items():
        med = statistics.median(times)
        print(
            f"  {name:>10}: min {min(times):.3f} s  median {med:.3f} s  max {max(times):.3f} s"
            f"  ({a.items / med:,.0f} items/s, {1e3 * med / a.items:.3f} ms/item)"
        )
    ratio = statistics.median(results["one by one"]) / statistics.median(results["batched"])
    mean = coalesced["tasks"] / max(1, coalesced["calls"])
    print(f"  batched is {ratio:.1f}x faster (median); {coalesced['calls']} batched calls, mean size {mean:.1f}")


if __name__ == "__main__":
    main()
