"""The main job: stateful workers with a costly setup serving a few thousand tasks.

Each worker "loads a model" once in spawn() (a 0.5 s setup building a lookup table), then
serves many execute() calls that use it. A progress bar tracks the work; a summary reports
tasks/s and how the tasks spread over the workers.
"""

from __future__ import annotations

import collections
import hashlib
import os
import time

from stateful_pool import SPool, SWorker


class EmbeddingModel(SWorker):
    """Stands in for a model loaded onto a device: expensive to build, cheap to query."""

    def spawn(self, device: str, dim: int = 64) -> str:
        started = time.perf_counter()
        time.sleep(0.5)  # the costly part of a real load (weights from disk, CUDA context, ...)
        self.device = device
        self.dim = dim
        self.table = [hashlib.blake2b(str(i).encode(), digest_size=dim // 8).digest() for i in range(50_000)]
        return f"{device}: model ready in {time.perf_counter() - started:.2f}s (pid {os.getpid()})"

    def execute(self, text: str) -> tuple[str, int, list[int]]:
        # Real work per task: hash the words into the table and pool the vectors.
        vector = [0] * (self.dim // 8)
        for word in text.split():
            row = self.table[hash(word) % len(self.table)]
            vector = [v + b for v, b in zip(vector, row, strict=False)]
        return self.device, os.getpid(), vector


def main(workers: int = 2, tasks: int = 5000) -> None:
    corpus = [f"document {i} about stateful workers and warm caches number {i % 97}" for i in range(tasks)]
    with SPool(EmbeddingModel, queue_size=256) as pool:
        started = time.perf_counter()
        for line in [f.result() for f in [pool.submit_spawn(device=f"cpu:{i}") for i in range(workers)]]:
            print(line)
        print(f"{workers} workers spawned in parallel in {time.perf_counter() - started:.2f}s")

        started = time.perf_counter()
        per_worker: collections.Counter[str] = collections.Counter()
        for device, _pid, _vector in pool.map(corpus, progress="embedding"):
            per_worker[device] += 1
        elapsed = time.perf_counter() - started

        print(f"{tasks} tasks in {elapsed:.2f}s: {tasks / elapsed:,.0f} tasks/s")
        for device, count in sorted(per_worker.items()):
            print(f"  {device}: {count} tasks")
        for w in pool.stats()["workers"]:
            print(f"  worker {w['id']} pid {w['pid']}: {w['state']}, {w['tasks_done']} done, {w['restarts']} restarts")


if __name__ == "__main__":
    main()
